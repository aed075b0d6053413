"""Vectorised simulator: batched steps across pages, same-step auto-reset, same results as SimEnv."""

from __future__ import annotations

import numpy as np
import pytest

from tests.sim.conftest import needs_browser
from vla_lab.sim import SimEnv, SimStateError
from vla_lab.sim.vector import VectorSimEnv

pytestmark = [pytest.mark.sim, needs_browser, pytest.mark.timeout(180)]


def test_vector_env_matches_single_envs_and_autoresets():
    tasks = ["reach_target", "pick_block", "stack_blocks"]
    with VectorSimEnv(3, tasks, ["studio", "workshop", "studio"], pages=2) as venv:
        with pytest.raises(SimStateError):
            venv.step(np.zeros((3, 7)))
        obs, infos = venv.reset(seed=[5, 6, 7])
        assert obs["agentview"].shape == (3, 224, 224, 3) and obs["ee_pos"].shape == (3, 3)
        assert venv.observation_space.contains(obs)
        assert [i["task"] for i in infos] == tasks
        actions = np.stack([i["expert_action"] for i in infos])
        first_obs = obs
        for _ in range(3):
            obs, rew, term, trunc, infos = venv.step(actions)
            actions = np.stack([i["expert_action"] for i in infos])
        with pytest.raises(ValueError, match=r"shape \(3, 7\)"):
            venv.step(np.zeros((2, 7)))
        # The reach expert finishes within a few more steps; its env then restarts by itself.
        done_seen = False
        for _ in range(20):
            obs, rew, term, trunc, infos = venv.step(actions)
            actions = np.stack([i["expert_action"] for i in infos])
            if term[0]:
                done_seen = True
                assert rew[0] == 1.0 and infos[0]["final_info"]["success"]
                assert infos[0]["step"] == 0 and "final_obs" in infos[0]
                break
        assert done_seen
    env = SimEnv("pick_block", "workshop")
    try:
        single, _ = env.reset(seed=6)
    finally:
        env.close()
    assert np.array_equal(single["agentview"], first_obs["agentview"][1])
