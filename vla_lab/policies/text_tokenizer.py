"""Tokenizers for small configs, trained offline on the instruction corpus.

A byte-level BPE (any text encodes, no unknown characters) with Llama's special ids
(``<unk>``=0, ``<s>``=1, ``</s>``=2) and ``n_action`` reserved tokens appended at the end of the
vocabulary, so the action tokenizer's "last ``n_action`` ids" never collide with text.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]
# A few words every prompt contains, so a tokenizer is usable even before any dataset is seen.
SEED_CORPUS = [
    "In: What action should the robot take to pick up the block and place it in the bowl?\nOut: ",
    "push the cube to the left, open the drawer, close the gripper, stack the red block on the blue one",
]


def train_bpe_tokenizer(corpus: Iterable[str], n_text: int, n_action: int) -> PreTrainedTokenizerFast:
    """Fits a byte-level BPE with ``n_text`` entries, then appends ``n_action`` action tokens."""
    if n_text < len(SPECIAL_TOKENS) + 256:
        raise ValueError(
            f"n_text={n_text} cannot hold the 256 byte symbols and {len(SPECIAL_TOKENS)} specials"
        )
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=n_text,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([*SEED_CORPUS, *(t.lower() for t in corpus)], trainer=trainer)
    # A short corpus can stop merging early: pad with inert tokens so ids stay where the config says.
    filler = [f"<unused_{i}>" for i in range(n_text - tok.get_vocab_size())]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.add_special_tokens({"additional_special_tokens": filler + [f"<act_{i}>" for i in range(n_action)]})
    if len(fast) != n_text + n_action:
        raise RuntimeError(f"tokenizer has {len(fast)} entries, expected {n_text + n_action}")
    return fast


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory {path} does not exist")
    if (path / "tokenizer.json").exists():
        # Direct load: AutoTokenizer would consult config.json, whose model_type transformers lacks.
        return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def space_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """Id of the lone-space token the trained tokenizers append after ``Out:`` (Llama's is 29871)."""
    ids = tokenizer.encode(" ", add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"tokenizer encodes ' ' as {ids}, expected exactly one token")
    return ids[0]
