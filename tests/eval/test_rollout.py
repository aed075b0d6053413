"""Closed-loop episodes in the real simulator (headless Chromium)."""

import os
import signal

import numpy as np
import pytest

from vla_lab.config.errors import ConfigError
from vla_lab.eval.config import EvalConfig
from vla_lab.eval.evaluate import make_env
from vla_lab.eval.metrics import summarize
from vla_lab.eval.rollout import episode_plan, run_episodes
from vla_lab.eval.safety import SafetyConfig, SafetyWrapper
from vla_lab.sim import SimEnv
from vla_lab.sim.config import RandomizationConfig
from vla_lab.sim.expert import ScriptedExpert

pytestmark = pytest.mark.sim


class ExpertActor:
    def __init__(self):
        self.expert = ScriptedExpert()

    def reset(self):
        pass

    def act(self, obs, info):
        return self.expert.act(info)


class StillActor:
    def reset(self):
        pass

    def act(self, obs, info):
        return np.array([0, 0, 0, 0, 0, 0, 1], np.float32)


@pytest.fixture(scope="module")
def env():
    env = SimEnv("reach_target", "studio", image_size=64)
    yield env
    env.close()


def test_expert_succeeds_and_idle_actor_times_out(env):
    plan = episode_plan(["reach_target"], ["studio"], 2, seed=0)
    expert = summarize(run_episodes(env, ExpertActor(), plan, record_first=1))
    assert expert[0].successes == 2 and expert[0].avg_steps_success < 60
    idle = run_episodes(env, StillActor(), plan[:1], max_steps=15)
    assert not idle[0].success and idle[0].steps == 15 and idle[0].failure == "timeout"
    assert idle[0].final_distance > 0.02


def test_recording_and_safety_interventions(env):
    safety = SafetyWrapper(SafetyConfig(enabled=True, max_delta=0.3))
    results = run_episodes(
        env,
        ExpertActor(),
        episode_plan(["reach_target"], ["studio"], 1, seed=1),
        safety=safety,
        record_first=1,
    )
    assert results[0].frames and results[0].frames[0].shape == (64, 64, 3)
    assert results[0].interventions > 0  # the expert moves at full speed; the wrapper slowed it down


def test_a_crashed_browser_fails_one_episode_and_the_next_one_runs(env):
    class Crasher(ExpertActor):
        calls = 0

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


def test_bad_eval_randomization_names_the_field():
    cfg = EvalConfig(randomization=RandomizationConfig(num_distractors=9))
    with pytest.raises(ConfigError, match=r"eval.randomization: randomization.num_distractors=9"):
        cfg.check_names()
