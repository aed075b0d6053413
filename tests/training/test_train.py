"""`train(cfg)` on the real config tree, with outputs in tmp dirs."""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import train_cfg as _cfg
from vla_lab.config.compose import compose_run
from vla_lab.data.synthetic import make_demo_file
from vla_lab.training.run_dir import RunDirExistsError
from vla_lab.training.train import train
from vla_lab.workflows.demo import final_closed_loop


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return make_demo_file(
        tmp_path_factory.mktemp("data") / "demos.hdf5", num_demos=6, length=(6, 10), image_size=64, seed=0
    )


def test_fast_dev_run_writes_the_run_directory(tmp_path, data_file):
    cfg, run = _cfg(tmp_path, data_file, "debug=fast")
    train(cfg)
    for name in ("config.yaml", "config.json", "training_log.csv", "summary.json"):
        assert (run / name).is_file(), name
    final = run / "final"
    assert (final / "data_processor.json").is_file() and (final / "config.json").is_file()
    processor = json.loads((final / "data_processor.json").read_text())
    assert processor["image_size"] == 224 and processor["eval_crop_area"] == pytest.approx(0.9)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 1 and summary["trainable_params"] > 0
    assert "train/loss" in summary["final"]
    assert json.loads((run / "config.json").read_text())["data"]["batch_size"] == 2


def test_fast_head_fits_its_tokenizer_on_the_data_and_saves_it(tmp_path, data_file):
    import torch

    from vla_lab.policies.factory import load_policy

    cfg, run = _cfg(tmp_path, data_file, "debug=fast", "model.action_head=fast", "model.chunk_size=4")
    train(cfg)
    final = run / "final"
    assert (final / "fast_tokenizer" / "tokenizer.json").is_file()
    steps = json.loads((final / "processor_config.json").read_text())["steps"]
    assert any(s["step"] == "fast_tokens" and s["chunk_size"] == 4 for s in steps)
    policy = load_policy(final).eval()
    obs = {"observation.images.agentview": torch.rand(2, 3, 224, 224), "task": ["reach the red target"] * 2}
    assert policy.predict_action_chunk(obs).shape == (2, 4, 7)
    assert "train/token_accuracy" in json.loads((run / "summary.json").read_text())["final"]


def test_an_existing_run_directory_is_never_overwritten(tmp_path, data_file):
    cfg, run = _cfg(tmp_path, data_file, "debug=fast")
    train(cfg)
    before = (run / "config.yaml").read_text()
    cfg2, _ = _cfg(tmp_path, data_file, "debug=fast", "data.batch_size=3")
    with pytest.raises(RunDirExistsError, match="already holds a run"):
        train(cfg2)
    assert (run / "config.yaml").read_text() == before


def test_unknown_eval_task_fails_before_training(tmp_path, data_file):
    from vla_lab.config.errors import ConfigError

    cfg, run = _cfg(tmp_path, data_file, "debug=fast", "eval=quick", "eval.tasks=[fly_to_moon]")
    with pytest.raises(ConfigError, match="eval.tasks: unknown task 'fly_to_moon'; valid: reach_target"):
        train(cfg)
    assert not (run / "final").exists()


def test_compare_two_runs(tmp_path, data_file):
    from vla_lab.cli.compare import main as compare_main

    runs = []
    for name, lr in (("lr_small", "1e-4"), ("lr_big", "1e-3")):
        cfg, run = _cfg(tmp_path, data_file, "debug=fast", f"optim.lr={lr}", run_name=name)
        train(cfg)
        runs.append(run)
    out = tmp_path / "cmp"
    assert compare_main([*map(str, runs), "--out", str(out)]) == 0
    md = (out / "comparison.md").read_text()
    assert "optim.lr" in md and "lr_small" in md and "lr_big" in md
    assert "data.batch_size" not in md  # equal in both runs: not a difference
    assert (out / "loss_comparison.png").stat().st_size > 0 and (out / "success_rates.png").exists()
    assert compare_main([str(tmp_path / "nowhere"), "--out", str(out)]) == 2


@pytest.mark.sim
def test_checkpoint_evaluates_standalone(tmp_path, data_file):
    from vla_lab.rollout.evaluate import evaluate_checkpoint

    cfg, run = _cfg(tmp_path, data_file, "debug=fast")
    train(cfg)
    ecfg = compose_run(
        "eval",
        [
            f"checkpoint={run / 'final'}",
            "eval.episodes_per_task=2",
            "eval.max_steps=5",
            "eval.render_size=64",
        ],
        tmp_path / "eval_out",
    )
    result = evaluate_checkpoint(ecfg)
    assert result["overall"]["episodes"] == 2
    assert all(e["steps"] <= 5 for e in result["episodes"])
    assert (tmp_path / "eval_out" / "eval_table.md").read_text().startswith("| task |")
    assert list((tmp_path / "eval_out" / "figures").glob("episode_reach_target_*.gif"))
    _parallel_environments_match_sequential(run / "final", tmp_path)


def _parallel_environments_match_sequential(checkpoint, tmp_path):
    """Simulators side by side (shared weights, one action queue each), stepped together with one
    batched forward (vectorized, three slots for four episodes: a slot takes the next episode when
    its own ends) or a thread each, give the sequential run's episodes exactly, in plan order, with
    the same recorded videos."""
    from vla_lab.eval.config import EvalConfig
    from vla_lab.rollout.evaluate import evaluate_policy
    from vla_lab.rollout.runtime import PolicyRuntime

    runtime = PolicyRuntime.from_checkpoint(checkpoint)
    runtime.policy.train()  # evaluation switches to eval mode and back
    episodes = {}
    for n, vectorized in ((1, True), (3, True), (2, False)):
        cfg = EvalConfig(
            tasks=["reach_target", "pick_block"],
            environments=["studio"],
            episodes_per_task=2,
            max_steps=5,
            render_size=64,
            num_envs=n,
            vectorized=vectorized,
            videos_per_task=1,
        )
        out = evaluate_policy(runtime, cfg, run_dir=tmp_path / f"parallel_{n}")
        episodes[n] = [(r.task, r.seed, r.success, r.steps, r.final_distance) for r in out["results"]]
        assert len(out["videos"]) == 2  # the first episode of each task
    assert len(episodes[1]) == 4 and episodes[1] == episodes[3] == episodes[2]
    assert runtime.policy.training  # evaluation ran in eval mode and restored the caller's mode


@pytest.mark.sim
def test_tiny_train_closed_loop_eval_and_wandb_offline(tmp_path, data_file, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg, run = _cfg(
        tmp_path,
        data_file,
        "logger=wandb",
        "logger.wandb.mode=offline",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=4",
        "+trainer.limit_val_batches=2",
        "data.num_workers=0",
        "data.batch_size=4",
        "eval.episodes_per_task=2",
        "eval.max_steps=6",
        "eval.render_size=64",
        "eval.every_n_steps=2",
        "callbacks.progress_bar=false",
        "trainer.precision=bf16-mixed",
    )
    train(cfg)
    rows = (run / "eval_log.csv").read_text().splitlines()
    assert rows[0].startswith("step,task,environment,episodes,successes,success_rate,ci_low,ci_high")
    # every 2 steps (2, 4); the epoch-end and final evaluations at step 4 are not repeated
    assert [r.split(",")[0] for r in rows[1:]] == ["2", "4"]
    assert all(",reach_target,studio,2," in r for r in rows[1:])
    # a broken simulator fails every episode with a fault: the run must show none
    with open(run / "eval_log.csv", newline="") as fh:
        assert [int(r["faults"]) for r in csv.DictReader(fh)] == [0, 0]
    summary = json.loads((run / "summary.json").read_text())
    assert [e["step"] for e in summary["closed_loop"]] == [2, 4]
    assert summary["closed_loop"][-1]["overall"]["episodes"] == 2
    assert summary["best"]["metric"] == "eval/success_rate" and summary["eval_errors"] == []
    # what `make demo` reports for the fine-tuned policy: the run's last closed-loop table
    (last,) = final_closed_loop(run)
    assert (last["task"], last["episodes"], last["step"], last["faults"]) == ("reach_target", 2, 4, 0)
    for name in ("training_loss.png", "validation_metrics.png", "success_rates.png"):
        assert (run / "figures" / name).stat().st_size > 1000, name
    assert list((run / "figures").glob("episode_reach_target_studio_*.gif"))
    assert (run / "best" / "data_processor.json").exists() and (run / "final" / "model.safetensors").exists()
    offline = list(run.rglob("offline-run-*"))
    assert offline, "W&B offline run directory missing"
    assert list(offline[0].glob("*.wandb"))


def test_missing_dataset_names_the_path(tmp_path, data_file):
    from vla_lab.data.errors import DataError

    missing = tmp_path / "nowhere" / "demos.hdf5"
    cfg, run = _cfg(tmp_path, missing, "debug=fast")
    with pytest.raises(DataError, match=f"{missing}: no such file"):
        train(cfg)


def test_auxiliary_target_trains_end_to_end(tmp_path, data_file):
    """data.aux_keys delivers a privileged obs key, model.aux_target reads it out; logged per step."""
    cfg, run = _cfg(
        tmp_path, data_file, "debug=fast", "model.action_head=l1_chunk", "model.chunk_size=2",
        "data.aux_keys=[ee_pos]", "model.aux_target=ee_pos",
    )  # fmt: skip
    train(cfg)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final"]["train/aux_l1"] > 0 and "val/aux_l1" in summary["final"]
    saved = json.loads((run / "final" / "config.json").read_text())["vla_lab"]
    assert saved["aux_target"] == "ee_pos"
