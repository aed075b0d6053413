"""Discretize normalized continuous actions into language-model token ids and back.

The rules are OpenVLA's, so a checkpoint trained elsewhere decodes identically here:
``bins = linspace(-1, 1, n_bins)``; an action is clipped to [-1, 1] and digitized (giving 1..n_bins),
and its token id is ``vocab_size - bin`` — the last ``n_bins`` ids of the text vocabulary. Decoding
takes ``clip(vocab_size - id - 1, 0, n_bins - 2)`` as an index into the ``n_bins - 1`` bin centres.
"""

from __future__ import annotations

import numpy as np
import torch


class BinActionTokenizer:
    def __init__(self, vocab_size: int, n_bins: int = 256, low: float = -1.0, high: float = 1.0) -> None:
        if n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {n_bins}")
        if vocab_size <= n_bins:
            raise ValueError(
                f"vocab_size ({vocab_size}) must exceed n_bins ({n_bins}) to hold the action tokens"
            )
        self.vocab_size = int(vocab_size)
        self.n_bins = int(n_bins)
        self.low, self.high = float(low), float(high)
        self.bins = np.linspace(low, high, n_bins)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0

    @property
    def first_action_id(self) -> int:
        """Smallest id an encoded action can take (the bin ``n_bins`` maps to it)."""
        return self.vocab_size - self.n_bins

    def encode(self, actions: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Normalized actions (any shape) → int64 token ids of the same shape."""
        as_torch = isinstance(actions, torch.Tensor)
        x = actions.detach().float().cpu().numpy() if as_torch else np.asarray(actions, dtype=np.float64)
        binned = np.digitize(np.clip(x, self.low, self.high), self.bins)
        ids = (self.vocab_size - binned).astype(np.int64)
        return torch.from_numpy(ids).to(actions.device) if as_torch else ids

    def decode(self, token_ids: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Token ids (any shape) → normalized actions at the bin centres (float32)."""
        as_torch = isinstance(token_ids, torch.Tensor)
        ids = token_ids.detach().cpu().numpy() if as_torch else np.asarray(token_ids)
        index = np.clip(self.vocab_size - ids.astype(np.int64) - 1, 0, self.bin_centers.shape[0] - 1)
        out = self.bin_centers[index].astype(np.float32)
        return torch.from_numpy(out).to(token_ids.device) if as_torch else out

    def is_action_token(self, token_ids: torch.Tensor) -> torch.Tensor:
        return (token_ids >= self.first_action_id) & (token_ids < self.vocab_size)
