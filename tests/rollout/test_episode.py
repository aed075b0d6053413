"""The episode loop in the real simulator (headless Chromium): scoring, frames, safety, faults, and
the same episode whether evaluation scores it or collection records it."""

import os
import signal

import numpy as np
import pytest

from tests.rollout.conftest import needs_browser
from vla_lab.eval.config import EvalConfig
from vla_lab.eval.metrics import summarize
from vla_lab.eval.safety import SafetyConfig, SafetyWrapper
from vla_lab.rollout.actors import POLICY, ExpertActor
from vla_lab.rollout.episode import episode_plan, run_episodes
from vla_lab.rollout.evaluate import make_env
from vla_lab.rollout.recording import record_episode
from vla_lab.sim import SimEnv
from vla_lab.sim.config import RandomizationConfig
from vla_lab.sim.expert import ScriptedExpert

pytestmark = [pytest.mark.sim, needs_browser]


def expert_actor() -> ExpertActor:
    return ExpertActor(ScriptedExpert())


class StillActor:
    name = last_source = POLICY

    def reset(self, seed):
        pass

    def act(self, obs, info):
        return np.array([0, 0, 0, 0, 0, 0, 1], np.float32)

    def describe(self):
        return {"actor": self.name}


@pytest.fixture(scope="module")
def env():
    env = SimEnv("reach_target", "studio", image_size=64)
    yield env
    env.close()


def test_expert_succeeds_and_idle_actor_times_out(env):
    plan = episode_plan(["reach_target"], ["studio"], 2, seed=0)
    expert = summarize(run_episodes(env, expert_actor(), plan, record_first=1))
    assert expert[0].successes == 2 and expert[0].avg_steps_success < 60
    idle = run_episodes(env, StillActor(), plan[:1], max_steps=15)
    assert not idle[0].success and idle[0].steps == 15 and idle[0].failure == "timeout"
    assert idle[0].final_distance > 0.02


def test_recording_and_safety_interventions(env):
    safety = SafetyWrapper(SafetyConfig(enabled=True, max_delta=0.3))
    results = run_episodes(
        env,
        expert_actor(),
        episode_plan(["reach_target"], ["studio"], 1, seed=1),
        safety=safety,
        record_first=1,
    )
    assert results[0].frames and results[0].frames[0].shape == (64, 64, 3)
    assert results[0].interventions > 0  # the expert moves at full speed; the wrapper slowed it down


def test_a_crashed_browser_fails_one_episode_and_the_next_one_runs(env):
    class Crasher(ExpertActor):
        calls = 0

        def __init__(self):
            super().__init__(ScriptedExpert())

        def act(self, obs, info):
            Crasher.calls += 1
            if Crasher.calls == 3:
                os.killpg(env.backend.browser.pgid, signal.SIGKILL)
            return super().act(obs, info)

    plan = episode_plan(["reach_target"], ["studio"], 2, seed=2)
    first, second = run_episodes(env, Crasher(), plan)
    assert not first.success and first.failure.startswith("Sim") and first.steps <= 3
    assert second.success


def test_eval_randomization_reaches_the_simulator():
    cfg = EvalConfig(
        tasks=["pick_block"], randomization=RandomizationConfig(num_distractors=3, yaw_range=0.0)
    )
    cfg.check_names()
    env = make_env(cfg, {"cameras": ["agentview"], "camera_size": 64})
    try:
        _, info = env.reset(seed=3)
    finally:
        env.close()
    assert len(info["objects"]) == 4 and all(o["yaw"] == 0 for o in info["objects"].values())


def test_evaluation_and_collection_run_the_same_episode(env):
    """An expert episode scored by evaluation's runner and recorded by collection: same seed, same
    outcome, step for step (the recorded frames are the ones evaluation keeps for its video)."""
    expert = ExpertActor(ScriptedExpert(noise_std=0.2, seed=5))
    plan = episode_plan(["reach_target"], ["studio"], 2, seed=4)
    scored = run_episodes(env, expert, plan, record_first=2)
    for result, (task, _, seed) in zip(scored, plan, strict=True):
        recorded = record_episode(env, expert, task, seed, label="executed")
        assert (result.success, result.steps, result.final_distance) == (
            recorded.success,
            recorded.steps,
            recorded.final_distance,
        )
        np.testing.assert_array_equal(np.stack(result.frames), recorded.images["agentview"])
