"""Fixtures for policy tests: tiny configs composed from conf/, synthetic batches, statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vla_lab.config.compose import compose
from vla_lab.data.normalize import Normalizer
from vla_lab.data.stats import ArrayStats
from vla_lab.policies.config import model_config_from, peft_spec_from

INSTRUCTIONS = ["pick up the red block", "open the top drawer", "push the blue cube to the left"]


def model_cfg(name: str = "openvla_tiny", *overrides: str):
    cfg = compose("model", [f"model={name}", *overrides])
    return model_config_from(cfg.model)


def tiny_cfg(*overrides: str, img: int = 112):
    """openvla_tiny at a smaller image (64 patches instead of 256) to keep CPU tests fast."""
    cfg = model_cfg("openvla_tiny", *overrides)
    for v in cfg.vision:
        v.img_size = img
    return cfg


def peft_cfg(name: str, *overrides: str):
    return peft_spec_from(compose("model", [f"peft={name}", *overrides]).peft)


def make_batch(
    batch_size: int = 2,
    chunk: int = 1,
    action_dim: int = 7,
    size: int = 224,
    seed: int = 0,
    camera: str = "agentview",
    state_dim: int | None = None,
) -> dict:
    g = torch.Generator().manual_seed(seed)
    action = torch.rand(batch_size, chunk, action_dim, generator=g) * 2 - 1
    action[..., -1] = (action[..., -1] > 0).float()  # gripper: 0 closed / 1 open, not normalized
    batch = {
        f"observation.images.{camera}": torch.rand(batch_size, 3, size, size, generator=g),
        "task": [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(batch_size)],
        "action": action,
        "action_is_pad": torch.zeros(batch_size, chunk, dtype=torch.bool),
    }
    if state_dim is not None:
        batch["observation.state"] = torch.rand(batch_size, state_dim, generator=g) * 2 - 1
    return batch


def norm_entry(action_dim: int = 7, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-2.0, -0.5, action_dim)
    hi = rng.uniform(0.5, 2.0, action_dim)
    stats = ArrayStats(
        mean=((lo + hi) / 2).tolist(),
        std=((hi - lo) / 4).tolist(),
        min=(lo - 0.1).tolist(),
        max=(hi + 0.1).tolist(),
        q01=lo.tolist(),
        q99=hi.tolist(),
    )
    return Normalizer(stats, mode="bounds_q99", action_mask=[True] * (action_dim - 1) + [False]).to_dict()


@pytest.fixture(autouse=True)
def _seed_and_threads():
    # One intra-op thread: on a 2-core machine shared with other jobs, two threads stall each other
    # far more than they help these small models.
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
