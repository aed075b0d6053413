"""The cheap reseeding helpers draw exactly what ``torch.manual_seed`` would, and leave the caller's
stream where it was."""

from __future__ import annotations

import pytest
import torch

from vla_lab.seeding import cpu_rng_seeded, seed_torch


def test_seeded_block_draws_what_manual_seed_draws_and_restores_the_stream():
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(7)
    before = torch.get_rng_state()
    with cpu_rng_seeded(123):
        inside = torch.rand(5)
    assert torch.equal(inside, expected)
    assert torch.equal(torch.get_rng_state(), before)


def test_seeded_block_restores_the_stream_when_it_raises():
    before = torch.get_rng_state()
    with pytest.raises(KeyError), cpu_rng_seeded(1):
        torch.rand(3)
        raise KeyError("sample")
    assert torch.equal(torch.get_rng_state(), before)


def test_seed_torch_matches_manual_seed_on_the_cpu():
    torch.manual_seed(99)
    expected = torch.randn(4)
    seed_torch(99)
    assert torch.equal(torch.randn(4), expected)
