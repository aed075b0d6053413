"""PolicyRuntime: what a checkpoint's actions mean decides what the simulator is sent; a checkpoint
directory (policy + data_processor.json) loads into the same runtime as the live policy."""

import json

import numpy as np
import pytest
import torch

from tests.policies.conftest import INSTRUCTIONS, norm_entry, tiny_cfg
from vla_lab.eval.config import ExecutionConfig
from vla_lab.policies.factory import make_policy
from vla_lab.rollout.actors import PolicyActor
from vla_lab.rollout.processor import (
    DATA_PROCESSOR,
    processor_spec,
    read_processor_spec,
    write_data_processor,
)
from vla_lab.rollout.runtime import PolicyRuntime
from vla_lab.sim import control


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    cfg = tiny_cfg("model.action_head=l1_chunk", "model.chunk_size=2", img=56)
    return make_policy(cfg, corpus=INSTRUCTIONS, norm_stats={"demo": norm_entry()})


def processor(kind: str = control.DELTA) -> dict:
    return {
        "cameras": ["agentview"],
        "image_size": 56,
        "eval_crop_area": 1.0,
        "proprio_keys": [],
        "action_space": control.action_space(kind).to_json(),
        "unnorm_key": "demo",
        "camera_size": 64,
    }


def observation() -> dict:
    return {
        "agentview": np.random.default_rng(0).integers(0, 255, (56, 56, 3), dtype=np.uint8),
        "ee_pos": np.array([0.05, -0.1, 0.2], np.float32),
        "ee_ori": np.array([0.0, 0.1, 0.3], np.float32),
    }


def test_target_pose_policies_are_turned_into_delta_commands_against_the_current_pose(policy):
    obs, instruction = observation(), INSTRUCTIONS[0]
    delta = PolicyRuntime(policy, processor_spec(processor(control.DELTA)))
    target = PolicyRuntime(policy, processor_spec(processor(control.TARGET)))
    assert target.action_kind == "target_ee" and delta.action_kind == "delta_ee"
    with torch.no_grad():
        raw = delta.normalizer.unnormalize_action(
            policy.eval().predict_action_chunk(delta.batch(obs, instruction))[0, 0].numpy()
        )
    target.reset()  # both share the policy and its queue of chunk steps
    np.testing.assert_allclose(
        target.act(obs, instruction), control.target_to_delta(raw, obs["ee_pos"], obs["ee_ori"]), atol=1e-5
    )
    expected = raw.copy()
    expected[:6], expected[6] = np.clip(raw[:6], -1, 1), np.clip(raw[6], 0, 1)
    delta.reset()
    np.testing.assert_allclose(delta.act(obs, instruction), expected, atol=1e-5)
    # a batched chunk prediction (the server's) starts with the action act() executes
    np.testing.assert_allclose(
        delta.predict_chunks([delta.batch(obs, instruction)])[0, 0], expected, atol=1e-5
    )


def test_checkpoints_without_a_recorded_kind_act_in_deltas():
    spec = processor_spec(
        {"cameras": ["agentview"], "image_size": 56, "eval_crop_area": 1.0, "proprio_keys": []}
    )
    assert spec["action_kind"] == "delta_ee" and spec["camera_size"] == 224
    assert json.loads(control.action_space().to_json())["kind"] == spec["action_kind"]


def test_a_checkpoint_loads_into_the_runtime_of_the_live_policy(policy, tmp_path):
    """The written data_processor.json reads back as the spec, and the loaded policy acts exactly
    like the one it was saved from, with the execution settings asked for."""
    directory = tmp_path / "best"
    policy.save_pretrained(directory)
    written = write_data_processor(directory, processor())
    assert written == directory / DATA_PROCESSOR
    assert read_processor_spec(directory) == processor_spec(processor())
    execution = ExecutionConfig(n_action_steps=1)
    live = PolicyRuntime(policy, processor_spec(processor()), execution=execution)
    actor = PolicyActor.from_checkpoint(directory, execution=execution)
    assert actor.checkpoint == str(directory.resolve()) and actor.camera_size == 64
    assert actor.describe()["n_action_steps"] == 1 and actor.runtime.policy.n_action_steps == 1
    obs = observation()
    live.reset()
    actor.reset(0)
    for _ in range(3):
        np.testing.assert_array_equal(
            live.act(obs, INSTRUCTIONS[1]), actor.act(obs, {"instruction": INSTRUCTIONS[1]})
        )


def test_checkpoint_errors_name_the_field(tmp_path, policy):
    with pytest.raises(ValueError, match=r"checkpoint=\S+: no such directory"):
        PolicyRuntime.from_checkpoint(tmp_path / "nowhere")
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(FileNotFoundError, match=f"serve.checkpoint={bare} has no {DATA_PROCESSOR}"):
        PolicyRuntime.from_checkpoint(bare, field="serve.checkpoint")
    write_data_processor(bare, processor())
    with pytest.raises(ValueError, match=f"checkpoint={bare}: cannot load the policy"):
        PolicyRuntime.from_checkpoint(bare)
