"""PolicyActor: what a checkpoint's actions mean decides what the simulator is sent."""

import json

import numpy as np
import pytest
import torch

from tests.policies.conftest import INSTRUCTIONS, norm_entry, tiny_cfg
from vla_lab.eval.actor import PolicyActor, processor_spec
from vla_lab.eval.evaluate import policy_normalizer
from vla_lab.policies.factory import make_policy
from vla_lab.sim import control


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    cfg = tiny_cfg("model.action_head=l1_chunk", "model.chunk_size=2", img=56)
    return make_policy(cfg, corpus=INSTRUCTIONS, norm_stats={"demo": norm_entry()})


def spec_for(kind: str) -> dict:
    return processor_spec(
        {
            "cameras": ["agentview"],
            "image_size": 56,
            "eval_crop_area": 1.0,
            "proprio_keys": [],
            "action_space": control.action_space(kind).to_json(),
            "unnorm_key": "demo",
        }
    )


def test_target_pose_policies_are_turned_into_delta_commands_against_the_current_pose(policy):
    obs = {
        "agentview": np.random.default_rng(0).integers(0, 255, (56, 56, 3), dtype=np.uint8),
        "ee_pos": np.array([0.05, -0.1, 0.2], np.float32),
        "ee_ori": np.array([0.0, 0.1, 0.3], np.float32),
    }
    info = {"instruction": INSTRUCTIONS[0]}
    normalizer = policy_normalizer(policy, "demo")
    delta_actor = PolicyActor(policy, spec_for(control.DELTA), normalizer)
    target_actor = PolicyActor(policy, spec_for(control.TARGET), normalizer)
    assert target_actor.spec["action_kind"] == "target_ee" and delta_actor.spec["action_kind"] == "delta_ee"
    with torch.no_grad():
        raw = normalizer.unnormalize_action(
            policy.eval().predict_action_chunk(delta_actor.batch(obs, info["instruction"]))[0, 0].numpy()
        )
    target_actor.reset()  # both share the policy and its queue of chunk steps
    np.testing.assert_allclose(
        target_actor.act(obs, info), control.target_to_delta(raw, obs["ee_pos"], obs["ee_ori"]), atol=1e-5
    )
    expected = raw.copy()
    expected[:6], expected[6] = np.clip(raw[:6], -1, 1), np.clip(raw[6], 0, 1)
    delta_actor.reset()
    np.testing.assert_allclose(delta_actor.act(obs, info), expected, atol=1e-5)


def test_checkpoints_without_a_recorded_kind_act_in_deltas():
    spec = processor_spec(
        {"cameras": ["agentview"], "image_size": 56, "eval_crop_area": 1.0, "proprio_keys": []}
    )
    assert spec["action_kind"] == "delta_ee"
    assert json.loads(control.action_space().to_json())["kind"] == spec["action_kind"]
