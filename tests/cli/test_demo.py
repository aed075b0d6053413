"""`vla-demo` (make demo): the commands its pipeline runs (conf/pipeline/demo.yaml, shown by a dry
run), its flags, the shards and the comparison table (the stages themselves are the CLIs tested
elsewhere; the runner is tested in tests/workflows)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.sim.conftest import needs_browser
from vla_lab.cli.demo import main
from vla_lab.workflows.demo import final_closed_loop, shard_sizes, table


def dry_run(capsys, *args: str) -> list[tuple[str, str, dict[str, str]]]:
    """(stage name, command, {key: value}) of every command a dry run prints, in order."""
    assert main(["--dry-run", *args]) == 0
    rows = []
    for line in capsys.readouterr().out.splitlines():
        name, command = re.fullmatch(r"\[(.+?)\] (.+)", line).groups()
        words = shlex.split(command.removesuffix(" &"))
        rows.append((name, words[0], dict(w.split("=", 1) for w in words[1:])))
    return rows


def test_the_dry_run_lists_every_stage_in_order(capsys, tmp_path):
    out = tmp_path / "demo"
    rows = dry_run(capsys, "--out", str(out))
    assert [cmd for _, cmd, _ in rows] == ["vla-collect"] * 4 + ["vla-train", "vla-train", "vla-eval"]
    collects = [args for _, _, args in rows[:4]]
    assert [(a["environment"], a["episodes_per_task"], a["out"]) for a in collects] == [
        ("studio", "350", f"{out}/data/studio/part-0.hdf5"),
        ("studio", "350", f"{out}/data/studio/part-1.hdf5"),
        ("workshop", "125", f"{out}/data/workshop/part-0.hdf5"),
        ("workshop", "125", f"{out}/data/workshop/part-1.hdf5"),
    ]
    assert [a["seed"] for a in collects] == ["0", "2", "1", "3"]  # every shard its own episodes
    for a in collects:
        assert a["collection"] == "demo_dart" and a["tasks"] == "[reach_target,pick_block]"
        assert a["progress"] == "false"

    pretrain, finetune, zero_shot = (args for _, _, args in rows[4:])
    base = pretrain["run_name"]
    assert re.fullmatch(r"pretrain_studio_\d{8}_\d{6}", base)
    assert pretrain["experiment"] == "demo_pretrain" and pretrain["trainer.max_epochs"] == "3"
    assert pretrain["data.sources"] == f"[{{path: {out}/data/studio}}]"
    assert finetune["experiment"] == "demo_finetune" and finetune["trainer.max_epochs"] == "8"
    assert finetune["model.pretrained"] == zero_shot["checkpoint"] == f"{out}/{base}/best"
    assert finetune["data.sources"] == f"[{{path: {out}/data/workshop}}]"
    assert finetune["run_name"] == base.replace("pretrain_studio", "finetune_workshop")
    for train in (pretrain, finetune):
        assert train["paths.log_dir"] == str(tmp_path) and train["task_name"] == "demo"
        assert train["seed"] == "42" and train["callbacks.progress_bar"] == "false"
    # the fine-tuned score (the run's own callback) and the zero-shot one share episodes and seeds
    for evaluated in (finetune, zero_shot):
        assert evaluated["eval.episodes_per_task"] == "20" and evaluated["eval.seed"] == "2000"
    assert zero_shot["eval"] == "demo_target"
    assert zero_shot["hydra.run.dir"] == f"{out}/{base.replace('pretrain_studio', 'eval_zero_shot')}"
    assert not out.exists()


def test_the_seed_moves_collection_training_and_evaluation(capsys, tmp_path):
    args = ["--out", str(tmp_path / "demo")]
    seed0, seed1 = dry_run(capsys, *args), dry_run(capsys, *args, "--seed", "1")
    assert [a["seed"] for _, _, a in seed1[:4]] == ["4", "6", "5", "7"]
    assert seed1[4][2]["seed"] == seed1[5][2]["seed"] == "43"
    assert seed1[5][2]["eval.seed"] == seed1[6][2]["eval.seed"] == "2001"
    changed = {"seed", "eval.seed", "run_name", "model.pretrained", "checkpoint", "hydra.run.dir"}
    for (_, _, a), (_, _, b) in zip(seed0, seed1, strict=True):
        assert {k: v for k, v in a.items() if k not in changed} == {
            k: v for k, v in b.items() if k not in changed
        }


def test_flags_and_overrides_set_the_pipelines_values(capsys, tmp_path):
    out = str(tmp_path / "d")
    flags = dry_run(
        capsys, "--out", out, "--source-episodes", "7", "--target-episodes", "2", "--eval-episodes", "5",
        "--pretrain-epochs", "1", "--finetune-epochs", "2", "--collect-jobs", "3",
    )  # fmt: skip
    sizes = [(a["environment"], a["episodes_per_task"], a["seed"]) for _, _, a in flags[:-3]]
    assert sizes == [
        ("studio", "3", "0"), ("studio", "2", "2"), ("studio", "2", "4"), ("workshop", "1", "1"), ("workshop", "1", "3"),
    ]  # fmt: skip
    assert flags[-3][2]["trainer.max_epochs"] == "1" and flags[-2][2]["trainer.max_epochs"] == "2"
    assert flags[-1][2]["eval.episodes_per_task"] == "5"
    overrides = dry_run(
        capsys, "--out", out, "pipeline.source.episodes_per_task=7", "pipeline.target.episodes_per_task=2",
        "pipeline.eval_episodes=5", "pipeline.pretrain_epochs=1", "pipeline.finetune_epochs=2",
        "pipeline.collect_jobs=3",
    )  # fmt: skip
    stamp = re.compile(r"\d{8}_\d{6}")
    assert [(n, c, {k: stamp.sub("T", v) for k, v in a.items()}) for n, c, a in overrides] == [
        (n, c, {k: stamp.sub("T", v) for k, v in a.items()}) for n, c, a in flags
    ]


def test_a_bad_override_exits_2_naming_it(capsys):
    assert main(["--dry-run", "pipeline.eval_episodez=5"]) == 2
    assert "eval_episodez" in capsys.readouterr().err


@pytest.mark.parametrize(("total", "shards"), [(700, 2), (151, 2), (5, 3), (1, 4), (9, 1)])
def test_shards_split_every_episode_and_none_is_empty(total, shards):
    sizes = shard_sizes(total, shards)
    assert sum(sizes) == total
    assert len(sizes) == min(total, shards) and min(sizes) >= 1
    assert max(sizes) - min(sizes) <= 1


def _rows(successes: dict[str, int], episodes: int) -> list[dict]:
    return [
        {"task": t, "successes": k, "episodes": episodes, "success_rate": k / episodes}
        for t, k in successes.items()
    ]


def test_table_reports_rates_averages_and_intervals(capsys):
    evals = {
        "zero_shot": _rows({"pick_block": 0, "reach_target": 2}, 20),
        "fine_tuned": _rows({"pick_block": 17, "reach_target": 20}, 20),
    }
    results = table(evals, 20)
    assert results["episodes_per_task"] == 20
    assert results["fine_tuned"] == {"pick_block": 0.85, "reach_target": 1.0}
    assert results["average"] == pytest.approx({"zero_shot": 0.05, "fine_tuned": 0.925})
    out = capsys.readouterr().out
    assert "| pick_block | 0/20 = 0% [0.00, 0.16] | 17/20 = 85% [0.64, 0.95] |" in out


def test_a_run_without_closed_loop_evaluation_is_named(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"closed_loop": []}))
    with pytest.raises(RuntimeError, match="summary.json.*no closed-loop evaluation"):
        final_closed_loop(tmp_path)


@pytest.mark.slow
@pytest.mark.sim
@needs_browser
@pytest.mark.timeout(900)
def test_a_tiny_demo_runs_every_stage_and_writes_the_results(tmp_path, capsys):
    tiny = '["vision_pretrain.steps=0","data.samples_per_epoch=16","data.batch_size=4","eval.max_steps=10",'
    tiny += (
        '"eval.episodes_per_task=1","trainer.check_val_every_n_epoch=1","data.filter.require_success=false"]'
    )
    out = tmp_path / "demo"
    code = main(
        ["--out", str(out), "--source-episodes", "4", "--target-episodes", "3", "--eval-episodes", "1",
         "--pretrain-epochs", "1", "--finetune-epochs", "1",
         'pipeline.stages.collect.extra=["max_steps=12","keep_failures=true"]',
         f"pipeline.stages.pretrain.extra={tiny}", f"pipeline.stages.finetune.extra={tiny}",
         'pipeline.stages.zero_shot_eval.extra=["eval.max_steps=10"]']
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {
        "episodes_per_task", "zero_shot", "fine_tuned", "average", "base_in_source", "wall_time_s", "runs",
    }  # fmt: skip
    for column in ("zero_shot", "fine_tuned", "base_in_source"):
        assert set(results[column]) == {"reach_target", "pick_block"}
    assert sorted(p.name for p in (out / "data" / "studio").glob("*.hdf5")) == ["part-0.hdf5", "part-1.hdf5"]
    assert (out / Path(results["runs"]["zero_shot_eval"]).name / "eval_results.json").is_file()
    assert "=== 5. closed-loop success in workshop (1 episodes per task" in capsys.readouterr().out
