"""Same seed + same actions → byte-identical images and identical states, across browser launches."""

from __future__ import annotations

import numpy as np
import pytest

from tests.sim.conftest import needs_browser
from vla_lab.sim import SimEnv

pytestmark = [pytest.mark.sim, needs_browser, pytest.mark.timeout(120)]


def rollout(task: str, seed: int, steps: int):
    env = SimEnv(
        task,
        "workshop",
        cameras=("agentview", "wrist"),
        randomization={"color_jitter": 0.2, "light_direction_jitter": 0.3},
    )
    try:
        obs, info = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        frames, states = [obs], [info["objects"]]
        for t in range(steps):
            # Expert actions with random perturbations: contacts, grasps and releases all happen.
            a = np.asarray(info["expert_action"]) + (rng.normal(0, 0.3, 7) if t % 3 == 0 else 0)
            obs, _, term, trunc, info = env.step(a)
            frames.append(obs)
            states.append(info["objects"])
            if term or trunc:
                break
        return frames, states, env.backend.browser.pid
    finally:
        env.close()


def test_two_launches_give_identical_episodes():
    f1, s1, pid1 = rollout("stack_blocks", 21, 45)
    f2, s2, pid2 = rollout("stack_blocks", 21, 45)
    assert pid1 != pid2 and len(f1) == len(f2) > 20
    for a, b in zip(f1, f2, strict=True):
        for key in a:
            assert a[key].tobytes() == b[key].tobytes(), key
    assert s1 == s2
