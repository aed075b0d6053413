"""`vla-collect` writes demonstrations that `vla-data validate` accepts; its config is validated."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import cli, run
from tests.rollout.conftest import needs_browser

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.sim
@needs_browser
@pytest.mark.timeout(300)
def test_collect_writes_valid_demos(tmp_path):
    out = tmp_path / "demos.hdf5"
    res = run(
        [
            cli("vla-collect"),
            "tasks=[pick_block,push_to_zone]",
            "environment=workshop",
            "episodes_per_task=2",
            f"out={out}",
            "seed=3",
            "progress=false",
            "expert.noise_std=0.1",
        ],
        tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert "pick_block" in res.stdout and "push_to_zone" in res.stdout
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["tasks"]["pick_block"]["kept"] == 2 and summary["tasks"]["push_to_zone"]["kept"] == 2
    val = run([cli("vla-data"), "validate", str(out)], tmp_path)
    assert val.returncode == 0, val.stdout + val.stderr
    with h5py.File(out) as f:
        data = f["data"]
        assert data.attrs["num_demos"] == 4 and data.attrs["env_name"] == "tabletop"
        assert json.loads(data.attrs["action_space"])["gripper_convention"] == "0_closed_1_open"
        demo = data["demo_0"]
        t = demo.attrs["num_samples"]
        assert demo["obs/agentview_rgb"].shape == (t, 224, 224, 3)
        assert demo["actions"].shape == (t, 7) and demo["obs/ee_pos"].shape == (t, 3)
        assert (
            bool(demo.attrs["success"])
            and demo.attrs["task"] == "pick_block"
            and demo.attrs["environment"] == "workshop"
        )
        assert "block" in demo.attrs["language_instruction"]
        assert np.all(demo["actions"][:, 6] >= 0) and np.all(demo["actions"][:, 6] <= 1)
        assert "object_pos" not in demo["obs"]  # privileged state only when asked


@pytest.mark.sim
@needs_browser
@pytest.mark.timeout(300)
def test_collect_records_the_instructed_objects_position_when_asked(tmp_path):
    out = tmp_path / "demos.hdf5"
    res = run(
        [
            cli("vla-collect"), "tasks=[reach_target,pick_block]", "episodes_per_task=1", f"out={out}",
            "seed=5", "progress=false", "sim.image_size=64", "record_object_pos=true",
        ],
        tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    with h5py.File(out) as f:
        meta = json.loads(f["data"].attrs["env_meta"])
        assert "object_pos" in meta["privileged_obs"]
        # not a declared proprio key, so never a default policy input
        assert json.loads(f["data"].attrs["proprio_keys"]) == ["ee_pos", "ee_ori", "gripper_width"]
        reach, pick = (f["data"][k] for k in ("demo_0", "demo_1"))
        assert reach.attrs["task"] == "reach_target" and pick.attrs["task"] == "pick_block"
        sphere, ee = reach["obs/object_pos"][:], reach["obs/ee_pos"][:]
        assert sphere.shape == (len(reach["actions"]), 3)
        assert np.ptp(sphere, axis=0).max() < 1e-6  # the target sphere does not move
        # the recorded observations precede each action: the last one is one step short of success
        assert np.linalg.norm(ee[-1] - sphere[-1]) < np.linalg.norm(ee[0] - sphere[0])
        np.testing.assert_allclose(reach["obs/object_offset"][:], sphere - ee, atol=1e-6)
        assert "object_offset" in meta["privileged_obs"]
        block = pick["obs/object_pos"][:]
        assert block[0, 2] < 0.03  # resting on the table (half-height ~2 cm)
        assert block[-1, 2] - block[0, 2] > 0.03  # and lifted with the gripper by the end


def test_collect_rejects_bad_config(tmp_path):
    res = run([cli("vla-collect"), "episodes_per_task=many"], tmp_path, timeout=60)
    assert res.returncode != 0 and "episodes_per_task" in res.stderr
    res = run([cli("vla-collect"), "sim.randomization.fog=1"], tmp_path, timeout=60)
    assert res.returncode != 0 and "fog" in res.stderr
    res = run([cli("vla-collect"), "tasks=[juggle]", f"out={tmp_path / 'x.hdf5'}"], tmp_path, timeout=60)
    assert res.returncode == 2 and "unknown task 'juggle'" in res.stderr and "pick_block" in res.stderr
    assert not (tmp_path / "x.hdf5").exists()


def test_collect_config_composes_with_the_sim_group():
    from hydra import compose, initialize_config_dir

    from vla_lab.config import CONF_DIR
    from vla_lab.rollout.config import register_configs

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("collect", overrides=["sim=randomized", "tasks=[stack_blocks,put_in_order]"])
    assert list(cfg.tasks) == ["stack_blocks", "put_in_order"]
    assert cfg.sim.randomization.num_distractors == 2 and cfg.sim.image_size == 224
