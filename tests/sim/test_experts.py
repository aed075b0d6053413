"""Scripted experts (privileged state) solve every task; the slow test checks >= 98 % over 50 seeds."""

from __future__ import annotations

import numpy as np
import pytest

from tests.sim.conftest import needs_browser
from vla_lab.sim import SimEnv, list_tasks
from vla_lab.sim.expert import ScriptedExpert

pytestmark = [pytest.mark.sim, needs_browser]

TASKS = [t["name"] for t in list_tasks()]


def success_rate(env: SimEnv, task: str, seeds, expert: ScriptedExpert) -> tuple[float, list[int]]:
    failures = []
    for seed in seeds:
        obs, info = env.reset(seed=seed, options={"task": task})
        expert.reset(seed)
        while True:
            obs, _, term, trunc, info = env.step(expert.act(info))
            if term or trunc:
                break
        if not info["success"]:
            failures.append(seed)
    return 1 - len(failures) / len(seeds), failures


@pytest.mark.timeout(240)
def test_every_expert_solves_its_task(sim_env):
    for task in TASKS:
        rate, failures = success_rate(sim_env, task, range(1000, 1003), ScriptedExpert())
        assert rate == 1.0, f"{task} expert failed on seeds {failures}"


@pytest.mark.timeout(240)
def test_noisy_expert_recovers(sim_env):
    expert = ScriptedExpert(noise_std=0.2, random_action_prob=0.05)
    rate, failures = success_rate(sim_env, "place_in_container", range(2000, 2004), expert)
    assert rate == 1.0, failures


def test_expert_noise_is_bounded_and_keeps_the_gripper():
    expert = ScriptedExpert(noise_std=5.0, seed=1)
    a = expert.act({"expert_action": [0, 0, 0, 0, 0, 0, 0.3]})
    assert np.all(np.abs(a[:6]) <= 1) and a[6] == np.float32(0.3)
    with pytest.raises(ValueError, match="noise_std"):
        ScriptedExpert(noise_std=-1)


@pytest.mark.slow
@pytest.mark.timeout(3000)
@pytest.mark.parametrize("task", TASKS)
def test_expert_success_rate_over_50_seeds(task):
    env = SimEnv(task, "studio")
    try:
        rate, failures = success_rate(env, task, range(50), ScriptedExpert())
    finally:
        env.close()
    assert rate >= 0.98, f"{task}: {rate:.0%} (failed seeds {failures})"
