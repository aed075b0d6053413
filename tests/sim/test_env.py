"""SimEnv against the real simulator in headless Chromium (one browser shared by the module)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.sim.conftest import needs_browser
from vla_lab.sim import SimActionError, SimEnv, SimRequestError, SimStateError

pytestmark = [pytest.mark.sim, needs_browser, pytest.mark.timeout(120)]

ZERO = [0, 0, 0, 0, 0, 0, 1]


def test_reset_observation_matches_the_spaces(sim_env):
    obs, info = sim_env.reset(seed=3)
    assert sim_env.observation_space.contains(obs)
    img = obs["agentview"]
    assert img.shape == (224, 224, 3) and img.dtype == np.uint8
    for key, n in (("ee_pos", 3), ("ee_ori", 3), ("gripper_width", 1)):
        assert obs[key].shape == (n,) and obs[key].dtype == np.float32
    assert info["instruction"] and info["task"] == "pick_block"
    assert info["success"] is False and info["distance_to_goal"] > 0
    assert "object" in info["objects"]  # privileged state only in info
    assert set(obs) == {"agentview", "ee_pos", "ee_ori", "gripper_width"}
    np.testing.assert_allclose(obs["ee_pos"], [0, 0, 0.2], atol=1e-6)


def test_image_is_upright_and_shows_the_scene(sim_env):
    obs, _ = sim_env.reset(seed=0)
    img = obs["agentview"].astype(int)
    # The studio backdrop (pale grey-blue) fills the top rows; the oak table (orange-brown) the bottom.
    top, bottom = img[:5].reshape(-1, 3).mean(0), img[-5:].reshape(-1, 3).mean(0)
    assert top[2] > top[0] - 10, f"top rows should be the bluish backdrop, got {top}"
    assert bottom[0] > bottom[2] + 40, f"bottom rows should be the brown table, got {bottom}"
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200


def test_action_scaling_and_gripper_convention(sim_env):
    obs0, _ = sim_env.reset(seed=1)
    obs, *_ = sim_env.step([1, 0, -1, 0, 0, 0.5, 1])
    d = obs["ee_pos"] - obs0["ee_pos"]
    np.testing.assert_allclose(d, [0.02, 0, -0.02], atol=1e-6)  # 1.0 = 2 cm per step
    np.testing.assert_allclose(obs["ee_ori"], [0, 0, 0.05], atol=1e-6)  # 1.0 = 0.1 rad per step
    assert obs["gripper_width"][0] == pytest.approx(0.085, abs=1e-6)  # 1 = open
    for _ in range(8):
        obs, *_ = sim_env.step([0, 0, 0, 0, 0, 0, 0])  # 0 = closed
    assert obs["gripper_width"][0] == pytest.approx(0.0, abs=1e-6)
    obs, *_ = sim_env.step([0, 0, 0, 0, 0, 0, 1])
    assert obs["gripper_width"][0] == pytest.approx(0.015, abs=1e-6)  # jaws move 1.5 cm per step


def test_out_of_range_actions_are_clipped_and_flagged(sim_env):
    obs0, _ = sim_env.reset(seed=2)
    obs, _, _, _, info = sim_env.step([5, 0, 0, 0, 0, 0, 1.7])
    assert info["clipped"] is True and info["clipped_dims"] == [0, 6]
    assert obs["ee_pos"][0] - obs0["ee_pos"][0] == pytest.approx(0.02, abs=1e-6)
    _, _, _, _, info = sim_env.step(ZERO)
    assert info["clipped"] is False


def test_workspace_limits_hold(sim_env):
    sim_env.reset(seed=4)
    for _ in range(30):
        obs, _, _, _, info = sim_env.step([0, 0, -1, 0, 0, 0, 1])
    assert obs["ee_pos"][2] == pytest.approx(0.021, abs=1e-6) and info["workspace_limited"]


@pytest.mark.parametrize(
    ("action", "match"),
    [
        ([0, 0, 0], r"shape \(7,\)"),
        ([0] * 8, r"shape \(7,\)"),
        ([0, 0, np.nan, 0, 0, 0, 1], r"non-finite values at dims \[2\]"),
        ([0, 0, 0, np.inf, 0, 0, 1], r"non-finite values at dims \[3\]"),
        ("left", "sequence of 7 numbers|shape"),
    ],
)
def test_bad_actions_raise_clear_errors(sim_env, action, match):
    sim_env.reset(seed=5)
    with pytest.raises(SimActionError, match=match):
        sim_env.step(action)
    sim_env.step(ZERO)  # the episode goes on


def test_unknown_task_or_environment_lists_valid_ones(sim_env):
    with pytest.raises(ValueError, match="unknown task 'juggle'; valid tasks: .*stack_blocks"):
        sim_env.reset(seed=0, options={"task": "juggle"})
    with pytest.raises(ValueError, match="unknown environment 'mars'; valid environments: .*workshop"):
        sim_env.reset(seed=0, options={"environment": "mars"})
    with pytest.raises(ValueError, match="unknown reset options"):
        sim_env.reset(seed=0, options={"colour": "red"})
    with pytest.raises(ValueError, match="unknown task"):
        SimEnv("juggle")


def test_the_page_validates_too(sim_env):
    sim_env.reset(seed=0)
    backend = sim_env.backend
    with pytest.raises(SimRequestError, match="unknown task 'juggle'; valid: reach_target") as e:
        backend.request(0, {"type": "reset", "task": "juggle", "environment": "studio", "seed": 0}, "obs")
    assert e.value.code == "unknown_task"
    with pytest.raises(SimRequestError, match=r"action must have 7 numbers"):
        backend.request(0, {"type": "step", "action": [0, 0]}, "obs")
    with pytest.raises(SimRequestError, match=r"randomization.num_distractors=7 is outside"):
        backend.request(
            0,
            {
                "type": "reset",
                "task": "pick_block",
                "environment": "studio",
                "seed": 0,
                "options": {"randomization": {"num_distractors": 7}},
            },
            "obs",
        )


def test_step_before_reset_and_after_close():
    env = SimEnv("reach_target")
    with pytest.raises(SimStateError, match="before reset"):
        env.step(ZERO)
    env.close()
    with pytest.raises(SimStateError, match="closed"):
        env.reset(seed=0)


def test_same_seed_same_episode_within_a_launch(sim_env):
    runs = []
    for _ in range(2):
        obs, info = sim_env.reset(seed=11, options={"task": "stack_blocks"})
        frames = [obs["agentview"]]
        for t in range(12):
            obs, *_ = sim_env.step(info["expert_action"] if t else [0.3, -0.2, -0.5, 0, 0, 0.2, 0.5])
            frames.append(obs["agentview"])
        runs.append((np.stack(frames), info["instruction"]))
    assert runs[0][1] == runs[1][1]
    assert np.array_equal(runs[0][0], runs[1][0])
    other, _ = sim_env.reset(seed=12, options={"task": "stack_blocks"})
    assert not np.array_equal(other["agentview"], runs[0][0][0])


def test_environments_look_different(sim_env):
    imgs = [
        sim_env.reset(seed=0, options={"environment": e})[0]["agentview"].astype(float)
        for e in ("studio", "workshop", "kitchen")
    ]
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(imgs[i] - imgs[j]).mean() > 20


def test_randomization_knobs_change_the_scene(sim_env):
    base, _ = sim_env.reset(seed=7)
    rnd, info = sim_env.reset(
        seed=7,
        options={
            "randomization": {
                "background_jitter": 1.0,
                "light_intensity_jitter": 1.0,
                "camera_position_jitter": 0.05,
                "num_distractors": 3,
            }
        },
    )
    assert np.abs(base["agentview"].astype(float) - rnd["agentview"].astype(float)).mean() > 3
    assert sum(o["role"] == "distractor" for o in info["objects"].values()) == 3


def test_start_jitter_moves_the_gripper_start_but_not_the_layout(sim_env):
    home = [0.0, 0.0, 0.2]
    obs, info = sim_env.reset(seed=7)
    np.testing.assert_allclose(obs["ee_pos"], home, atol=1e-6)
    starts = []
    for seed in (7, 8):
        o, i = sim_env.reset(seed=seed, options={"randomization": {"start_jitter": 1.0}})
        starts.append(o["ee_pos"])
        if seed == 7:  # same seed, same scene: only the gripper moved
            assert i["objects"]["object"]["pos"] == info["objects"]["object"]["pos"]
    assert all(np.abs(s - home).max() > 1e-3 for s in starts)
    assert np.abs(starts[0] - starts[1]).max() > 1e-3
    np.testing.assert_array_less(np.abs(starts[0] - home), [0.15 + 1e-6, 0.2 + 1e-6, 0.06 + 1e-6])
    again, _ = sim_env.reset(seed=7, options={"randomization": {"start_jitter": 1.0}})
    np.testing.assert_array_equal(again["ee_pos"], starts[0])


def test_wrist_camera_and_render():
    env = SimEnv("pick_block", cameras=("agentview", "wrist"), image_size=96)
    try:
        obs, _ = env.reset(seed=0)
        assert obs["wrist"].shape == (96, 96, 3) and obs["agentview"].shape == (96, 96, 3)
        assert not np.array_equal(obs["wrist"], obs["agentview"])
        assert np.array_equal(env.render(), obs["agentview"])
        assert env.backend.startup_seconds < 6.0  # well under 3 s on an idle machine; CI cores are shared
    finally:
        env.close()


def test_gymnasium_make_and_env_checker():
    import warnings

    import gymnasium
    from gymnasium.utils.env_checker import check_env

    from vla_lab.sim import GYM_ID

    env = gymnasium.make(GYM_ID, task="reach_target", environment="kitchen")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any checker warning fails the test
            check_env(env.unwrapped)
        obs, info = env.reset(seed=1)
        assert info["environment"] == "kitchen" and obs["agentview"].shape == (224, 224, 3)
    finally:
        env.close()


def test_resets_do_not_accumulate_resources(sim_env):
    sim_env.reset(seed=0)
    link = sim_env.backend.links[0]
    tasks = [
        "reach_target",
        "pick_block",
        "place_in_container",
        "push_to_zone",
        "stack_blocks",
        "put_in_order",
    ]

    def resources():
        return link.request({"type": "ping"}, "pong", 10)[0]["resources"]

    for i, t in enumerate(tasks * 2):  # every kind of scene exists once before the baseline
        sim_env.reset(seed=i, options={"task": t, "environment": ("studio", "workshop", "kitchen")[i % 3]})
        sim_env.step(ZERO)
    base = resources()
    for i in range(60):
        sim_env.reset(
            seed=100 + i,
            options={"task": tasks[i % 6], "environment": ("studio", "workshop", "kitchen")[i % 3]},
        )
        sim_env.step(ZERO)
    after = resources()
    assert after["geometries"] <= base["geometries"] + 40  # one scene's worth at most
    assert after["textures"] <= base["textures"] + 2
    assert after["programs"] == base["programs"]
    assert after["sims"] == 1
