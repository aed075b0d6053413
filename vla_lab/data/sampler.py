"""Training sampler whose draws are a function of (seed, epoch) only.

It yields ``(index, sample_seed)`` pairs: the dataset seeds that sample's augmentation with
``sample_seed``, so the order *and* the augmentations of an epoch depend on nothing else — not on
the number of workers, not on what consumed random numbers before. Lightning calls ``set_epoch`` at
every epoch start, so a run resumed from an epoch-end checkpoint draws exactly what the
uninterrupted run would have drawn.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[tuple[int, int]]):
    def __init__(
        self, size: int, *, num_samples: int | None = None, weights: np.ndarray | None = None, seed: int = 0
    ):
        self.size, self.seed, self.epoch = size, seed, 0
        self.num_samples = num_samples or size
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        # Sampling with replacement when asked for a fixed epoch length or weights; a plain shuffle otherwise.
        self.replacement = weights is not None or num_samples is not None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is not None:
            idx = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=gen)
        elif self.replacement:
            idx = torch.randint(self.size, (self.num_samples,), generator=gen)
        else:
            idx = torch.randperm(self.size, generator=gen)
        seeds = torch.randint(0, 2**62, (len(idx),), generator=gen)
        return iter(zip(idx.tolist(), seeds.tolist(), strict=True))

    def __len__(self) -> int:
        return self.num_samples
