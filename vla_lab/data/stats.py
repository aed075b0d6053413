"""Normalization statistics computed in one streaming pass over the low-dimensional arrays.

Mean/std use Chan's parallel update (exact), min/max are exact, q01/q99 are exact up to
``RESERVOIR_ROWS`` transitions and come from a seeded reservoir sample beyond that, so memory stays
bounded whatever the dataset size. Images are never read. Results are cached beside the data,
keyed by a hash of exactly the bytes they depend on.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vla_lab.data import format as fmt
from vla_lab.data.errors import DataError
from vla_lab.data.reader import DemoSource, EpisodeRef
from vla_lab.fileio import atomic_write_text

STATS_VERSION = 1
RESERVOIR_ROWS = 1 << 20
QUANTILES = (0.01, 0.99)


@dataclass
class ArrayStats:
    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]
    q01: list[float]
    q99: list[float]

    def array(self, name: str) -> np.ndarray:
        return np.asarray(getattr(self, name), dtype=np.float32)

    @property
    def dim(self) -> int:
        return len(self.mean)


@dataclass
class DatasetStats:
    num_demos: int
    num_transitions: int
    action: ArrayStats
    proprio: ArrayStats | None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DatasetStats:
        proprio = ArrayStats(**d["proprio"]) if d.get("proprio") else None
        return cls(int(d["num_demos"]), int(d["num_transitions"]), ArrayStats(**d["action"]), proprio)


class RunningStats:
    """Streaming per-dimension statistics over rows of a (N, D) stream."""

    def __init__(self, dim: int, reservoir_rows: int = RESERVOIR_ROWS, seed: int = 0):
        self.dim, self.n = dim, 0
        self.mean = np.zeros(dim)
        self.m2 = np.zeros(dim)
        self.lo = np.full(dim, np.inf)
        self.hi = np.full(dim, -np.inf)
        self._cap = reservoir_rows
        self._reservoir = np.empty((0, dim))
        self._rng = np.random.default_rng(seed)

    def update(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, self.dim)
        if not len(rows):
            return
        n_b, mean_b = len(rows), rows.mean(0)
        m2_b = ((rows - mean_b) ** 2).sum(0)
        delta, total = mean_b - self.mean, self.n + n_b
        self.mean = self.mean + delta * n_b / total
        self.m2 = self.m2 + m2_b + delta**2 * self.n * n_b / total
        self.lo, self.hi = np.minimum(self.lo, rows.min(0)), np.maximum(self.hi, rows.max(0))
        self._sample(rows)
        self.n = total

    def _sample(self, rows: np.ndarray) -> None:
        room = self._cap - len(self._reservoir)
        if room > 0:
            self._reservoir = np.concatenate([self._reservoir, rows[:room]])
            rows = rows[room:]
        if not len(rows):
            return
        seen = self.n + max(room, 0) + np.arange(len(rows))  # global index of each remaining row
        slots = self._rng.integers(0, seen + 1)
        keep = slots < self._cap
        self._reservoir[slots[keep]] = rows[keep]

    def finalize(self) -> ArrayStats:
        if self.n == 0:
            raise ValueError("no rows seen")
        q = np.quantile(self._reservoir, QUANTILES, axis=0)
        std = np.sqrt(self.m2 / self.n)
        return ArrayStats(*(v.astype(float).tolist() for v in (self.mean, std, self.lo, self.hi, q[0], q[1])))


def compute_stats(
    sources: dict[str, DemoSource], episodes: Sequence[EpisodeRef], proprio_keys: Sequence[str] | None
) -> DatasetStats:
    """Stats over ``episodes`` (actions in framework convention; proprio concatenated in key order).

    Arrays that would poison the statistics (NaN or inf, a wrong action width, proprio whose length
    differs from the actions') raise a ``DataError`` naming the file, demo and key."""
    action_stats = proprio_stats = None
    by_file: dict[str, list[EpisodeRef]] = {}
    for ep in episodes:
        by_file.setdefault(ep.file, []).append(ep)
    for path, eps in by_file.items():
        src = sources[path]
        with src.open() as f:
            for ep in eps:
                a = src.read_actions(f, ep.demo)
                _check_rows(a, src.action_space.dim, path, ep.demo, fmt.ACTIONS)
                action_stats = action_stats or RunningStats(a.shape[1])
                action_stats.update(a)
                if proprio_keys:
                    p = src.read_proprio(f, ep.demo, list(proprio_keys), steps=len(a))
                    where = "obs/" + "+".join(proprio_keys)
                    _check_rows(p, proprio_stats.dim if proprio_stats else None, path, ep.demo, where)
                    proprio_stats = proprio_stats or RunningStats(p.shape[1])
                    proprio_stats.update(p)
    if action_stats is None:
        raise ValueError("compute_stats needs at least one episode")
    return DatasetStats(
        len(episodes),
        action_stats.n,
        action_stats.finalize(),
        proprio_stats.finalize() if proprio_stats else None,
    )


def _check_rows(rows: np.ndarray, width: int | None, file: str, demo: str, key: str) -> None:
    """A (T, width) array of finite numbers, or a ``DataError`` at ``file:demo:key``."""
    if rows.ndim != 2 or (width is not None and rows.shape[1] != width):
        expected = f"(T, {width})" if width is not None else "(T, D)"
        raise DataError(f"shape {rows.shape}, expected {expected}", file=file, demo=demo, key=key)
    bad = np.unique(np.argwhere(~np.isfinite(rows))[:, 0])
    if len(bad):
        more = "..." if len(bad) > 5 else ""
        raise DataError(f"NaN or inf at steps {bad[:5].tolist()}{more}", file=file, demo=demo, key=key)


def content_hash(
    sources: dict[str, DemoSource], episodes: Sequence[EpisodeRef], proprio_keys: Sequence[str] | None
) -> str:
    """Hash of the bytes the statistics depend on: the selected demos' actions and proprio."""
    h = hashlib.sha256(f"v{STATS_VERSION}|{list(proprio_keys or [])}".encode())
    for path in dict.fromkeys(ep.file for ep in episodes):
        src = sources[path]
        with src.open() as f:
            for ep in (e for e in episodes if e.file == path):
                h.update(src.read_actions(f, ep.demo).tobytes())
                if proprio_keys:
                    h.update(src.read_proprio(f, ep.demo, list(proprio_keys)).tobytes())
    return h.hexdigest()


def _cache_dirs(first_file: str) -> list[Path]:
    # Beside the data when writable; a read-only dataset (shared LIBERO copy) falls back to the home cache.
    home = Path(os.environ.get("VLA_LAB_CACHE", Path.home() / ".cache" / "vla_lab")) / "stats"
    return [Path(first_file).parent / ".vla_stats", home]


def load_or_compute_stats(
    sources: dict[str, DemoSource],
    episodes: Sequence[EpisodeRef],
    proprio_keys: Sequence[str] | None,
    use_cache: bool = True,
) -> DatasetStats:
    if not use_cache:
        return compute_stats(sources, episodes, proprio_keys)
    digest = content_hash(sources, episodes, proprio_keys)
    dirs = _cache_dirs(episodes[0].file)
    for d in dirs:
        cached = d / f"{digest}.json"
        if cached.is_file():
            try:
                return DatasetStats.from_dict(json.loads(cached.read_text()))
            except (json.JSONDecodeError, KeyError, TypeError):
                cached.unlink(missing_ok=True)  # a damaged cache entry is recomputed, not trusted
    stats = compute_stats(sources, episodes, proprio_keys)
    for d in dirs:
        try:
            write_json_atomic(d / f"{digest}.json", stats.to_dict())
            break
        except OSError:
            continue
    return stats


def write_json_atomic(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=1))
