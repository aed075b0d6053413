"""LIBERO evaluation backend: protocol conventions, presets, the missing-extra error, and (with the
optional extra installed) real LIBERO episodes driven by a tiny trained checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from vla_lab.config.compose import compose, compose_run
from vla_lab.config.errors import ConfigError
from vla_lab.config.schemas import to_schema
from vla_lab.data.libero import SUITES
from vla_lab.eval import libero_env
from vla_lab.eval.config import EvalConfig
from vla_lab.eval.libero_env import (
    LiberoUnavailableError,
    convert_observation,
    missing_libero_modules,
    quat_to_axis_angle,
    require_libero,
    to_libero_action,
)
from vla_lab.sim.errors import SimActionError

HAVE_LIBERO = not missing_libero_modules()
needs_libero = pytest.mark.skipif(
    not HAVE_LIBERO,
    reason=f"the optional LIBERO extra is not installed (missing {missing_libero_modules()}); "
    "install it with `make libero`",
)


# ------------------------------------------------------------------------------------ conventions
def test_gripper_maps_framework_open_to_libero_minus_one():
    open_, closed = to_libero_action([0.1, -0.2, 0.3, 0, 0, 0, 1.0]), to_libero_action([0] * 6 + [0.0])
    assert open_[6] == -1.0 and closed[6] == 1.0
    np.testing.assert_allclose(open_[:6], [0.1, -0.2, 0.3, 0, 0, 0])
    # binarized around the midpoint; continuous when asked
    assert to_libero_action([0] * 6 + [0.6])[6] == -1.0 and to_libero_action([0] * 6 + [0.4])[6] == 1.0
    assert to_libero_action([0] * 6 + [0.25], binarize_gripper=False)[6] == pytest.approx(0.5)
    # motion is clipped to the controller's range
    np.testing.assert_allclose(to_libero_action([3, -3, 0, 0, 0, 0, 1])[:2], [1, -1])


def test_bad_actions_are_rejected():
    with pytest.raises(SimActionError, match="7 dims"):
        to_libero_action(np.zeros(6))
    with pytest.raises(SimActionError, match="non-finite"):
        to_libero_action([0, 0, np.nan, 0, 0, 0, 1])


def test_quaternion_to_axis_angle():
    angle, axis = 0.7, np.array([0.0, 0.6, 0.8])
    q = np.r_[axis * np.sin(angle / 2), np.cos(angle / 2)]  # (x, y, z, w)
    np.testing.assert_allclose(quat_to_axis_angle(q), axis * angle, atol=1e-9)
    np.testing.assert_allclose(quat_to_axis_angle([0, 0, 0, 1.0]), 0.0)
    # the gripper pointing down (180 deg about x), as in LIBERO's start poses
    np.testing.assert_allclose(quat_to_axis_angle([1.0, 0, 0, 0]), [np.pi, 0, 0], atol=1e-9)


def test_observation_is_rotated_upright_with_libero_proprio_keys():
    img = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    raw = {
        "agentview_image": img,
        "robot0_eye_in_hand_image": img + 1,
        "robot0_eef_pos": np.array([0.1, 0.2, 0.3]),
        "robot0_eef_quat": np.array([1.0, 0, 0, 0]),
        "robot0_gripper_qpos": np.array([0.04, -0.04]),
        "robot0_joint_pos": np.arange(7.0),
    }
    obs = convert_observation(raw, ["agentview", "wrist", "eye_in_hand"])
    np.testing.assert_array_equal(obs["agentview"], img[::-1, ::-1])
    np.testing.assert_array_equal(obs["wrist"], (img + 1)[::-1, ::-1])
    np.testing.assert_array_equal(obs["eye_in_hand"], obs["wrist"])
    assert obs["agentview"].dtype == np.uint8 and obs["agentview"].flags.c_contiguous
    np.testing.assert_allclose(obs["ee_states"], [0.1, 0.2, 0.3, np.pi, 0, 0], rtol=1e-6)
    assert obs["gripper_states"].shape == (2,) and obs["joint_states"].shape == (7,)


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("suite", list(SUITES))
def test_presets_compose_to_the_benchmark_protocol(suite):
    cfg = compose("eval", ["checkpoint=x", f"eval={suite}"])
    ec = to_schema(EvalConfig, cfg.eval, where="eval")
    assert ec.backend == "libero" and ec.libero.suite == suite and ec.libero.task_ids is None
    assert ec.episodes_per_task == 50 and ec.max_steps is None and ec.render_size == 256
    assert ec.libero.settle_steps == 10 and libero_env.suite_max_steps(suite) == SUITES[suite][1]


def test_preset_overrides_select_tasks():
    cfg = compose("eval", ["checkpoint=x", "eval=libero_goal", "eval.libero.task_ids=[0,3]"])
    assert to_schema(EvalConfig, cfg.eval, where="eval").libero.task_ids == [0, 3]


def test_libero_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="eval.backend: unknown backend 'isaac'"):
        EvalConfig(backend="isaac")
    with pytest.raises(ConfigError, match="eval.num_envs"):
        EvalConfig(backend="libero", num_envs=2)
    cfg = EvalConfig(backend="libero")
    cfg.libero.suite = "libero_100"
    with pytest.raises(ConfigError, match="eval.libero.suite: unknown suite 'libero_100'"):
        cfg.check_names()
    cfg.libero.suite, cfg.libero.task_ids = "libero_spatial", [2, 10]
    with pytest.raises(ConfigError, match=r"eval.libero.task_ids: libero_spatial has tasks 0..9; got \[10\]"):
        cfg.check_names()


def test_sim_backend_is_the_default_and_unchanged():
    cfg = compose("eval", ["checkpoint=x"])
    ec = to_schema(EvalConfig, cfg.eval, where="eval")
    assert ec.backend == "sim" and ec.tasks == ["reach_target"]


# ------------------------------------------------------------------------------------ missing extra
def test_missing_extra_error_names_the_install_command():
    with pytest.raises(LiberoUnavailableError) as err:
        require_libero(("vla_lab_absent_module_for_test",))
    msg = str(err.value)
    assert (
        "make libero" in msg and "pip install '.[libero]'" in msg and "vla_lab_absent_module_for_test" in msg
    )
    assert isinstance(err.value, ImportError)


def test_missing_extra_fails_the_cli_before_loading_anything(tmp_path):
    """A real ``vla-eval`` process in which ``libero`` cannot be imported: a package of that name that
    raises ImportError comes first on PYTHONPATH and hides any installed one."""
    shadow = tmp_path / "shadow"
    (shadow / "libero").mkdir(parents=True)
    (shadow / "libero" / "__init__.py").write_text("raise ImportError('libero hidden for this test')\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vla_lab.cli.eval",
            "checkpoint=/nonexistent",
            "eval=libero_spatial",
            f"paths.root_dir={tmp_path}",
            f"hydra.run.dir={tmp_path}/run",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": str(shadow), "HYDRA_FULL_ERROR": "1"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "LiberoUnavailableError" in out and "make libero" in out and "missing: libero" in out, out[-2000:]
    assert "no such directory" not in out  # failed on the extra, before reading the checkpoint


# ------------------------------------------------------------------------------------ end to end
def _compose(tmp_path, name, overrides, out_dir):
    return compose_run(name, [f"paths.root_dir={tmp_path}", *overrides], out_dir)


@pytest.mark.slow
@pytest.mark.libero
@needs_libero
@pytest.mark.timeout(1800)
def test_tiny_checkpoint_runs_libero_episodes_in_training_and_standalone(tmp_path):
    """A tiny OpenVLA trained on LIBERO-layout data (agentview + eye_in_hand, 7-D actions, LIBERO
    proprio) is evaluated in real LIBERO episodes: by the training callback, then by ``vla-eval``."""
    from vla_lab.data.synthetic import make_libero_suite
    from vla_lab.rollout.evaluate import evaluate_checkpoint
    from vla_lab.training.train import train

    root = tmp_path / "libero_data"
    make_libero_suite(root, "libero_spatial", variant="raw", num_tasks=2, num_demos=2, image_size=64)
    run = tmp_path / "outputs" / "train" / "run"
    cfg = _compose(
        tmp_path,
        "train",
        [
            "data=libero",
            f"data.root={root}",
            "data.suite=libero_spatial",
            "data.cameras=[agentview,eye_in_hand]",
            "data.num_workers=0",
            "data.batch_size=4",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=1",
            "trainer.precision=32-true",
            "callbacks.progress_bar=false",
            "eval=libero_spatial",
            "eval.libero.task_ids=[1]",
            "eval.episodes_per_task=1",
            "eval.max_steps=4",
            "eval.render_size=128",
            "run_name=run",
        ],
        run,
    )
    started = time.perf_counter()
    train(cfg)
    train_s = time.perf_counter() - started
    processor = json.loads((run / "final" / "data_processor.json").read_text())
    assert processor["cameras"] == ["agentview", "eye_in_hand"]
    rows = (run / "eval_log.csv").read_text().splitlines()
    assert len(rows) == 2, rows  # one evaluation, at the end of training
    assert ",libero_spatial,1," in rows[1] and rows[1].split(",")[1].startswith("pick_up_the_black_bowl")
    summary = json.loads((run / "summary.json").read_text())
    assert not summary.get("eval_errors"), summary.get("eval_errors")

    out = tmp_path / "eval_out"
    ecfg = _compose(
        tmp_path,
        "eval",
        [
            f"checkpoint={run / 'final'}",
            "eval=libero_spatial",
            "eval.libero.task_ids=[0]",
            "eval.episodes_per_task=2",
            "eval.max_steps=20",
        ],
        out,
    )
    started = time.perf_counter()
    result = evaluate_checkpoint(ecfg)
    eval_s = time.perf_counter() - started
    episodes = result["episodes"]
    assert [e["seed"] for e in episodes] == [0, 1]  # trial k = the task's init state k
    assert {e["environment"] for e in episodes} == {"libero_spatial"}
    assert {e["task"] for e in episodes} == {
        "pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it_on_the_plate"
    }
    # an untrained policy does not solve the task: every episode runs the whole budget
    assert all(e["steps"] == 20 and e["failure"] == "timeout" for e in episodes), episodes
    assert result["overall"]["episodes"] == 2
    suite = result["environments"]["libero_spatial"]
    assert suite["episodes"] == 2 and 0.0 <= suite["ci_low"] <= suite["success_rate"] <= suite["ci_high"]
    (task,) = result["tasks"]
    assert task["episodes"] == 2 and task["ci_high"] > 0.5  # Wilson interval of 0/2 is wide
    assert (out / "eval_table.md").read_text().startswith("| task |")
    gifs = list((out / "figures").glob("episode_pick_up_the_black_bowl_*_libero_spatial_seed0_*.gif"))
    assert len(gifs) == 1
    from PIL import Image

    with Image.open(gifs[0]) as gif:
        assert gif.size == (256, 256) and gif.n_frames == 20
    print(f"\ntrain + callback eval: {train_s:.0f} s; standalone 2 x 20 steps: {eval_s:.0f} s")
