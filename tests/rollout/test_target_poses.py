"""Collection in target poses (position control): labels are the expert's goals, files declare the
space they hold and refuse appending the other."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from tests.rollout.conftest import needs_browser
from vla_lab.data.errors import DataFormatError
from vla_lab.data.writer import DemoWriter
from vla_lab.rollout.actors import ExpertActor
from vla_lab.rollout.collect import collect
from vla_lab.rollout.recording import record_episode
from vla_lab.sim import control
from vla_lab.sim.expert import ScriptedExpert


@pytest.mark.sim
@needs_browser
@pytest.mark.timeout(120)
def test_target_labels_are_the_experts_goals_and_drive_the_same_episode(sim_env):
    """Recorded in target poses, a clean expert episode replays exactly through target_to_delta."""
    actor = ExpertActor(ScriptedExpert())
    delta = record_episode(sim_env, actor, "pick_block", seed=21)
    target = record_episode(sim_env, actor, "pick_block", seed=21, action_kind=control.TARGET)
    assert target.success and len(target.actions) == len(delta.actions)
    ee, ori = target.proprio["ee_pos"], target.proprio["ee_ori"]
    for recorded in (target.actions, target.executed):  # the goal, and the pose one step reached
        replayed = np.stack(
            [control.target_to_delta(a, p, o) for a, p, o in zip(recorded, ee, ori, strict=True)]
        )
        np.testing.assert_allclose(replayed, delta.actions, atol=1e-4)
    # the approach heads for the hover point above the block (which settles by micrometres)
    assert np.ptp(target.actions[:3, :2], axis=0).max() < 1e-3 and target.actions[0, 2] == pytest.approx(0.11)


@pytest.mark.sim
@needs_browser
@pytest.mark.timeout(180)
def test_collect_in_target_poses_declares_them_and_refuses_mixing(tmp_path):
    out = tmp_path / "t.hdf5"
    common = dict(tasks=["reach_target"], environment="studio", episodes_per_task=1, out=out, progress=False)
    common["env_kwargs"] = {"image_size": 32}
    collect(**common, noise_std=0.3, action_kind=control.TARGET)
    with h5py.File(out) as f:
        space = json.loads(f["data"].attrs["action_space"])
        assert space["kind"] == "target_ee" and space["units"][0] == "m"
        demo = f["data"]["demo_0"]
        labels = demo["actions"][:]
    # DART: noise ran, and every label is the sphere's centre
    assert np.ptp(labels[:, :3], axis=0).max() < 1e-6
    with pytest.raises(ValueError, match="holds target_ee actions; append with action_space=target_ee"):
        collect(**common, append=True)
    with pytest.raises(DataFormatError, match="cannot append delta_ee actions"):
        DemoWriter(out, mode="a", action_space=control.action_space(control.DELTA))
    with pytest.raises(ValueError, match="action_space='joint'"):
        collect(**common, action_kind="joint")
