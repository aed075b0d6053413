"""Policy rollouts recorded by `vla-collect`: DAgger (expert labels at the policy's states), success-only
self-imitation, DAgger mixing (beta), appending. Real simulator, real HDF5 files and a real (tiny,
barely trained) checkpoint; 64 px renders and short episodes keep it quick."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from tests.conftest import cli, run
from tests.rollout.conftest import needs_browser
from vla_lab.rollout.actors import ExpertActor, MixtureActor, PolicyActor
from vla_lab.rollout.collect import collect
from vla_lab.rollout.config import PolicyCollectConfig
from vla_lab.rollout.recording import record_episode
from vla_lab.sim.env import PROPRIO_KEYS
from vla_lab.sim.expert import ScriptedExpert

SIZE = 64
ENV64 = {"image_size": SIZE, "cameras": ("agentview",)}

pytestmark = [pytest.mark.sim, needs_browser]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real training checkpoint: a fast-dev-run tiny OpenVLA on 4 simulator demos at 64 px."""
    from tests.conftest import train_cfg as _cfg
    from vla_lab.training.train import train

    root = tmp_path_factory.mktemp("ckpt")
    data = root / "demos.hdf5"
    collect(
        tasks=["reach_target"],
        environment="studio",
        episodes_per_task=4,
        out=data,
        seed=0,
        env_kwargs=ENV64,
        progress=False,
    )
    cfg, run_dir = _cfg(
        root,
        data,
        "debug=fast",
        "data.image_size=56",
        "model.vision.0.img_size=56",
        "model.vision.1.img_size=56",
    )
    train(cfg)
    return run_dir / "final"


@pytest.fixture(scope="module")
def env64():
    from vla_lab.sim import SimEnv

    env = SimEnv("reach_target", "studio", image_size=SIZE, timeout=20.0)
    yield env
    env.close()


@pytest.fixture(scope="module")
def policy_actor(checkpoint):
    return PolicyActor.from_checkpoint(checkpoint)


def demos(path):
    with h5py.File(path) as f:
        data = f["data"]
        out = []
        for i in range(int(data.attrs["num_demos"])):
            d = data[f"demo_{i}"]
            out.append(
                {
                    "actions": d["actions"][()],
                    "frames": d["obs/agentview_rgb"][()],
                    "proprio": {k: d[f"obs/{k}"][()] for k in PROPRIO_KEYS},
                    "success": bool(d.attrs["success"]),
                    "seed": int(d.attrs["seed"]),
                    "instruction": str(d.attrs["language_instruction"]),
                    "meta": json.loads(d.attrs["meta"]),
                }
            )
        return out


@pytest.mark.timeout(240)
def test_dagger_labels_are_expert_actions_at_the_policys_states(env64, policy_actor):
    """Replaying the executed actions reproduces every recorded frame, and at each of those states
    the recorded label is exactly the expert's action; the policy's own actions differ from it."""
    seed = 123
    ep = record_episode(env64, policy_actor, "reach_target", seed, label="expert", max_steps=10)
    assert ep.steps == 10 and not ep.success  # a barely trained policy does not reach the sphere
    assert ep.expert_steps == 0
    assert np.abs(ep.actions - ep.executed).mean() > 0.05
    obs, info = env64.reset(seed=seed, options={"task": "reach_target", "max_steps": 10})
    policy_actor.reset(seed)
    for t in range(ep.steps):
        np.testing.assert_array_equal(obs["agentview"], ep.images["agentview"][t])
        np.testing.assert_array_equal(ScriptedExpert.clean_action(info), ep.actions[t])
        # what ran is what the policy outputs for the recorded observation
        np.testing.assert_array_equal(policy_actor.act(obs, info), ep.executed[t])
        obs, _, _, _, info = env64.step(ep.executed[t])


@pytest.mark.timeout(300)
def test_vla_collect_appends_dagger_rollouts_to_expert_demos(tmp_path, checkpoint, policy_actor):
    out = tmp_path / "agg.hdf5"
    collect(
        tasks=["reach_target"],
        environment="studio",
        episodes_per_task=2,
        out=out,
        seed=1,
        env_kwargs=ENV64,
        progress=False,
    )
    res = run(
        [
            cli("vla-collect"),
            "tasks=[reach_target]",
            f"out={out}",
            "append=true",
            "episodes_per_task=2",
            "seed=2",
            "max_steps=8",
            f"sim.image_size={SIZE}",
            "progress=false",
            f"policy.checkpoint={checkpoint}",
            "policy.label=expert",
        ],
        tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["actor"] == "policy" and summary["tasks"]["reach_target"]["kept"] == 2
    val = run([cli("vla-data"), "validate", str(out)], tmp_path)
    assert val.returncode == 0, val.stdout + val.stderr
    ds = demos(out)
    assert len(ds) == 4
    for d in ds[:2]:
        assert d["meta"]["acted_by"] == "expert" and d["meta"]["labelled_by"] == "expert" and d["success"]
        assert "checkpoint" not in d["meta"]
    from vla_lab.sim import SimEnv

    env = SimEnv("reach_target", "studio", image_size=SIZE)
    try:
        for d in ds[2:]:
            m = d["meta"]
            assert m["acted_by"] == "policy" and m["labelled_by"] == "expert" and m["label"] == "expert"
            assert m["checkpoint"] == str(checkpoint.resolve()) and m["expert_steps"] == 0
            # failures are kept and flagged honestly
            assert m["success"] == d["success"] is False and len(d["actions"]) == 8
            assert m["label_executed_l1"] > 0.05
            # the first label is the expert's action at the episode's first state
            _, info = env.reset(seed=d["seed"], options={"task": "reach_target", "max_steps": 8})
            np.testing.assert_array_equal(ScriptedExpert.clean_action(info), d["actions"][0])
            # and the labels are not what the policy does at the recorded states
            policy_actor.reset(0)
            predicted = np.stack(
                [
                    policy_actor.act(
                        {"agentview": d["frames"][t], **{k: v[t] for k, v in d["proprio"].items()}},
                        {"instruction": d["instruction"]},
                    )
                    for t in range(len(d["actions"]))
                ]
            )
            assert np.abs(predicted - d["actions"]).mean() > 0.05
    finally:
        env.close()


@pytest.mark.timeout(300)
def test_success_only_recording_keeps_the_successes(tmp_path, checkpoint):
    """label=executed + keep=successes writes exactly the successful episodes of the same seeds,
    with the executed actions as labels. The policy is mixed with the expert (beta) so that some
    episodes succeed and some fail."""
    common = dict(
        tasks=["reach_target"],
        environment="studio",
        seed=7,
        env_kwargs=ENV64,
        progress=False,
        max_steps=10,
    )
    every = tmp_path / "all.hdf5"
    mixed = PolicyCollectConfig(checkpoint=str(checkpoint), label="executed", keep="all", beta=0.6)
    collect(**common, episodes_per_task=6, out=every, policy=mixed)
    outcomes = [(d["seed"], d["success"]) for d in demos(every)]
    assert any(ok for _, ok in outcomes) and not all(ok for _, ok in outcomes), outcomes

    wins = tmp_path / "wins.hdf5"
    wanted = sum(ok for _, ok in outcomes)
    only = PolicyCollectConfig(checkpoint=str(checkpoint), label="executed", keep="successes", beta=0.6)
    summary = collect(
        **common,
        episodes_per_task=wanted,
        out=wins,
        policy=only,
        max_attempts_factor=len(outcomes) / wanted,
    )
    kept = demos(wins)
    assert [d["seed"] for d in kept] == [s for s, ok in outcomes if ok]
    assert all(d["success"] and d["meta"]["acted_by"] == "mixture" for d in kept)
    assert all(d["meta"]["labelled_by"] == "mixture" and d["meta"]["label_executed_l1"] == 0 for d in kept)
    assert summary.per_task["reach_target"].attempts == len(outcomes)
    assert summary.per_task["reach_target"].kept == wanted


@pytest.mark.timeout(240)
def test_beta_one_is_the_expert(tmp_path, checkpoint):
    """DAgger with beta=1 executes the expert at every step: the same file as expert collection."""
    common = dict(
        tasks=["reach_target"],
        environment="studio",
        episodes_per_task=2,
        seed=4,
        env_kwargs=ENV64,
        progress=False,
    )
    collect(**common, out=tmp_path / "expert.hdf5")
    policy = PolicyCollectConfig(checkpoint=str(checkpoint), label="expert", beta=1.0)
    collect(**common, out=tmp_path / "beta1.hdf5", policy=policy)
    expert, mixed = demos(tmp_path / "expert.hdf5"), demos(tmp_path / "beta1.hdf5")
    assert len(expert) == len(mixed) == 2
    for e, m in zip(expert, mixed, strict=True):
        np.testing.assert_array_equal(e["actions"], m["actions"])
        np.testing.assert_array_equal(e["frames"], m["frames"])
        assert e["seed"] == m["seed"] and e["success"] and m["success"]
        assert m["meta"]["acted_by"] == "mixture" and m["meta"]["beta"] == 1.0
        assert m["meta"]["expert_steps"] == m["meta"]["steps"] == len(m["actions"])


@pytest.mark.timeout(120)
def test_mixture_coin_is_seeded_per_episode(env64, policy_actor):
    mix = MixtureActor(policy_actor, ExpertActor(ScriptedExpert()), 0.5)
    a = record_episode(env64, mix, "reach_target", 9, label="expert", max_steps=10)
    b = record_episode(env64, mix, "reach_target", 9, label="expert", max_steps=10)
    np.testing.assert_array_equal(a.executed, b.executed)
    assert 0 < a.expert_steps < a.steps


def test_checkpoint_errors_name_the_field_and_path(tmp_path, checkpoint):
    bad = tmp_path / "not_a_checkpoint"
    bad.mkdir()
    with pytest.raises(ValueError, match=f"policy.checkpoint={bad} has no data_processor.json"):
        PolicyActor.from_checkpoint(bad)
    with pytest.raises(ValueError, match="no such directory"):
        PolicyActor.from_checkpoint(tmp_path / "nowhere")
    # data_processor.json present but no policy next to it
    shutil.copy(checkpoint / "data_processor.json", bad / "data_processor.json")
    with pytest.raises(ValueError, match=f"policy.checkpoint={bad}: cannot load the policy"):
        PolicyActor.from_checkpoint(bad)
    common = dict(tasks=["reach_target"], environment="studio", episodes_per_task=1, progress=False)
    out = tmp_path / "x.hdf5"
    with pytest.raises(ValueError, match="sim.image_size=224; collect with sim.image_size=64"):
        collect(**common, out=out, policy=PolicyCollectConfig(checkpoint=str(checkpoint)))
    for field, value, message in (
        ("label", "noisy", "policy.label must be one of"),
        ("keep", "some", "policy.keep must be one of"),
        ("beta", 1.5, r"policy.beta must be in \[0, 1\]"),
    ):
        cfg = PolicyCollectConfig(checkpoint=str(checkpoint), **{field: value})
        with pytest.raises(ValueError, match=message):
            collect(**common, out=out, env_kwargs=ENV64, policy=cfg)
    with pytest.raises(ValueError, match="keep_failures=true contradicts policy.keep=successes"):
        cfg = PolicyCollectConfig(checkpoint=str(checkpoint), label="executed")
        collect(**common, out=out, env_kwargs=ENV64, policy=cfg, keep_failures=True)
    assert not out.exists()
    res = run(
        [cli("vla-collect"), f"policy.checkpoint={bad.parent / 'nowhere'}", f"out={out}"], tmp_path, 120
    )
    assert res.returncode == 2 and "policy.checkpoint=" in res.stderr and "no such directory" in res.stderr
