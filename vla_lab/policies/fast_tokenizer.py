"""FAST action tokenization (Pertsch et al., 2025): DCT over time, quantize, byte-pair encode.

A normalized chunk ``x`` of shape (K, A) becomes a variable-length list of token ids:

1. ``c = DCT-II(x)`` along time, per action dimension, orthonormal: the transform preserves the L2
   norm, so a coefficient error becomes the same-sized error on the actions, and smooth motion packs
   into the first few coefficients.
2. ``q = round(scale · c)``: integers, mostly 0 at high frequency for smooth chunks.
3. Flattened low frequency first (every dimension's coefficient 0, then every coefficient 1, …), so
   the zeros line up in long runs that BPE merges, and a sequence cut short loses only fine detail.
4. Each integer ``v`` becomes the character ``chr(CHAR_BASE + v - min_coeff)``; a BPE fitted on the
   dataset's chunks merges frequent runs into tokens. A FAST id is the BPE id.

Decoding inverts every step. Round trip: each coefficient is off by at most ``0.5 / scale``, so by
orthonormality a dimension's L2 error over the K steps, and hence any single value's error, is at most
``0.5 · sqrt(K) / scale`` (0.14 for K=8 at scale 10; typical errors are ~10x smaller).

Malformed sequences (what an imperfect model generates) never raise: ids the BPE does not know are
dropped, and a sequence that does not spell exactly K·A coefficients is truncated or zero-padded at
the high-frequency end (a zero coefficient adds no motion). Both are counted in ``counts``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.fft import dct, idct
from tokenizers import Tokenizer, models, trainers

log = logging.getLogger(__name__)

#: First code point of the coefficient alphabet: the CJK block has ~21k consecutive printable
#: characters with no whitespace or normalization behaviour that could split or merge symbols.
CHAR_BASE = 0x4E00
MAX_ALPHABET = 20_000
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "fast_config.json"
FORMAT = "vla_lab-fast-v1"


@dataclass(frozen=True)
class FastSpec:
    """Everything besides the BPE merges that decoding needs; saved as ``fast_config.json``."""

    chunk_size: int
    action_dim: int
    scale: float
    #: configured BPE vocabulary; the trained one can be smaller when the data has few repeated runs
    vocab_size: int
    #: integer coefficient mapped to CHAR_BASE: the alphabet covers [min_coeff, max_coeff]
    min_coeff: int
    max_coeff: int

    @property
    def n_coeffs(self) -> int:
        return self.chunk_size * self.action_dim

    @property
    def alphabet_size(self) -> int:
        return self.max_coeff - self.min_coeff + 1


def coefficient_bound(scale: float, chunk_size: int) -> int:
    """Largest |q| a chunk with every value in [-1, 1] can give: |c_k| <= ||x||_2 <= sqrt(K)."""
    return math.ceil(scale * math.sqrt(chunk_size))


def alphabet_size_for(scale: float, chunk_size: int) -> int:
    """Symbols needed to encode any chunk within [-1, 1] (the minimum FAST vocabulary)."""
    return 2 * coefficient_bound(scale, chunk_size) + 1


class FastActionTokenizer:
    def __init__(self, spec: FastSpec, bpe: Tokenizer) -> None:
        self.spec = spec
        self.bpe = bpe
        #: decode/encode repairs since construction, for logs and tests
        self.counts = {"decoded": 0, "malformed": 0, "unknown_ids": 0, "clipped": 0}

    @property
    def n_tokens(self) -> int:
        """Ids the BPE can emit: 0 .. n_tokens - 1 (at most ``spec.vocab_size``)."""
        return self.bpe.get_vocab_size()

    # ---- fitting ----
    @classmethod
    def fit(cls, chunks: np.ndarray, scale: float = 10.0, vocab_size: int = 256) -> FastActionTokenizer:
        """Fits the BPE on normalized chunks (N, K, A). The alphabet spans the data's coefficients and
        at least every chunk within [-1, 1], so unseen chunks in the usual range still encode exactly."""
        chunks = _as_chunks(chunks)
        _, k, a = chunks.shape
        q = quantize(chunks, scale)
        bound = coefficient_bound(scale, k)
        lo, hi = min(int(q.min(initial=0)), -bound), max(int(q.max(initial=0)), bound)
        spec = FastSpec(k, a, float(scale), int(vocab_size), lo, hi)
        if spec.alphabet_size > min(vocab_size, MAX_ALPHABET):
            raise ValueError(
                f"FAST needs {spec.alphabet_size} coefficient symbols (coefficients {lo}..{hi} at "
                f"fast_scale={scale}, chunk_size={k}) but fast_vocab_size is {vocab_size}: raise "
                "model.fast_vocab_size or lower model.fast_scale"
            )
        bpe = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=int(vocab_size),
            show_progress=False,
            initial_alphabet=[_char(spec, v) for v in range(lo, hi + 1)],
            special_tokens=[],
        )
        bpe.train_from_iterator([_to_text(spec, row) for row in q], trainer=trainer)
        return cls(spec, bpe)

    # ---- encoding ----
    def encode(self, chunks: np.ndarray) -> list[list[int]]:
        """Normalized chunks (N, K, A) or one chunk (K, A) → one list of FAST ids per chunk."""
        chunks = _as_chunks(chunks)
        if chunks.shape[1:] != (self.spec.chunk_size, self.spec.action_dim):
            raise ValueError(
                f"FAST tokenizer was fitted on (K={self.spec.chunk_size}, A={self.spec.action_dim}) "
                f"chunks, got {chunks.shape[1:]}"
            )
        q = quantize(chunks, self.spec.scale)
        clipped = np.clip(q, self.spec.min_coeff, self.spec.max_coeff)
        # Outside the fitted range (e.g. mean_std-normalized outliers): the nearest symbol, counted.
        self.counts["clipped"] += int((clipped != q).sum())
        texts = [_to_text(self.spec, row) for row in clipped]
        return [enc.ids for enc in self.bpe.encode_batch(texts, add_special_tokens=False)]

    # ---- decoding ----
    def decode(self, rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """FAST id lists → (chunks (N, K, A) float32, malformed (N,) bool). Never raises on content."""
        out = np.zeros((len(rows), self.spec.chunk_size, self.spec.action_dim), np.float32)
        bad = np.zeros(len(rows), bool)
        for i, ids in enumerate(rows):
            q, bad[i] = self._coefficients(ids)
            out[i] = dequantize(q.reshape(self.spec.chunk_size, self.spec.action_dim), self.spec.scale)
        self.counts["decoded"] += len(rows)
        self.counts["malformed"] += int(bad.sum())
        return out, bad

    def _coefficients(self, ids: Sequence[int]) -> tuple[np.ndarray, bool]:
        """Integer coefficients (K·A,) of one id list, repaired when needed (see module docstring)."""
        pieces = [self.bpe.id_to_token(int(i)) if 0 <= int(i) < self.n_tokens else None for i in ids]
        unknown = sum(p is None for p in pieces)
        self.counts["unknown_ids"] += unknown
        text = "".join(p for p in pieces if p is not None)
        values = np.array([ord(ch) - CHAR_BASE + self.spec.min_coeff for ch in text], dtype=np.int64)
        n = self.spec.n_coeffs
        q = np.zeros(n, np.int64)
        q[: min(n, len(values))] = values[:n]
        return q, bool(unknown) or len(values) != n

    # ---- persistence ----
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.bpe.save(str(directory / TOKENIZER_FILE))
        payload = {"format": FORMAT, "char_base": CHAR_BASE, "n_tokens": self.n_tokens, **asdict(self.spec)}
        (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> FastActionTokenizer:
        directory = Path(directory)
        for name in (TOKENIZER_FILE, CONFIG_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"FAST tokenizer file {directory / name} is missing")
        raw = json.loads((directory / CONFIG_FILE).read_text())
        if raw.get("format") != FORMAT or raw.get("char_base") != CHAR_BASE:
            raise ValueError(
                f"{directory / CONFIG_FILE}: format {raw.get('format')!r} / char_base "
                f"{raw.get('char_base')!r}, expected {FORMAT!r} / {CHAR_BASE}"
            )
        spec = FastSpec(**{k: raw[k] for k in FastSpec.__dataclass_fields__})
        tok = cls(spec, Tokenizer.from_file(str(directory / TOKENIZER_FILE)))
        if tok.n_tokens != raw.get("n_tokens"):
            raise ValueError(
                f"{directory / TOKENIZER_FILE} has {tok.n_tokens} tokens, {CONFIG_FILE} says {raw.get('n_tokens')}"
            )
        return tok


def quantize(chunks: np.ndarray, scale: float) -> np.ndarray:
    """(N, K, A) → (N, K·A) int64: orthonormal DCT-II over time, scaled, rounded, low frequency first."""
    coeffs = dct(np.asarray(chunks, np.float64), type=2, norm="ortho", axis=1)
    # Row-major flatten of (K, A) is already "all dims' coefficient 0, then coefficient 1, …".
    return np.rint(coeffs * scale).astype(np.int64).reshape(len(chunks), -1)


def dequantize(q: np.ndarray, scale: float) -> np.ndarray:
    """(K, A) integer coefficients → (K, A) float32 actions."""
    return idct(q.astype(np.float64) / scale, type=2, norm="ortho", axis=0).astype(np.float32)


def _as_chunks(chunks) -> np.ndarray:
    arr = np.asarray(chunks, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise ValueError(f"action chunks must be (N, K, A) with N >= 1, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("action chunks hold NaN or infinite values")
    return arr


def _char(spec: FastSpec, value: int) -> str:
    return chr(CHAR_BASE + value - spec.min_coeff)


def _to_text(spec: FastSpec, row: np.ndarray) -> str:
    return "".join(chr(CHAR_BASE + int(v) - spec.min_coeff) for v in row)


def to_llm_ids(fast_ids: np.ndarray | list[int], text_vocab_size: int) -> np.ndarray:
    """FAST id f ↦ language-model id ``text_vocab_size - 1 - f``: the last ids of the text vocabulary,
    counted down from its end, as OpenVLA's bins."""
    return text_vocab_size - 1 - np.asarray(fast_ids, dtype=np.int64)


def from_llm_ids(llm_ids: Sequence[int], text_vocab_size: int) -> list[int]:
    """The inverse of ``to_llm_ids``. Ids outside the FAST block map below 0 or past the BPE vocabulary,
    where ``decode`` drops them."""
    return [text_vocab_size - 1 - int(i) for i in llm_ids]
