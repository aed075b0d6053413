"""`vla-iterate` (python -m vla_lab.cli.iterate): rounds of collect → train → evaluate, each stage the real
CLI in a subprocess; the full two-round DAgger run on tiny settings is the slow test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from tests.sim.conftest import needs_browser
from vla_lab.eval.metrics import wilson_interval
from vla_lab.workflows.iterate import RoundLayout, options, round_stages
from vla_lab.workflows.pipeline import compose_pipeline

#: a tiny model on 64 px renders (56 px model input), a few batches per round
TINY_TRAIN = (
    "data.num_workers=0",
    "data.batch_size=4",
    "data.image_size=56",
    "model.vision.0.img_size=56",
    "model.vision.1.img_size=56",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=1",
)


def tiny(*train_overrides: str) -> list[str]:
    quoted = ",".join(f'"{o}"' for o in (*TINY_TRAIN, *train_overrides))
    return [
        "image_size=64",
        "max_steps=10",
        "tasks=[reach_target]",
        "environment=studio",
        "train.epochs=1",
        f"train.overrides=[{quoted}]",
    ]


TINY = tiny()


def iterate_cli(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "VLA_LAB_ROOT": str(cwd)}
    return subprocess.run(
        [sys.executable, "-m", "vla_lab.cli.iterate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _stage_args(stdout: str, round_: int, stage: str) -> str:
    prefix = f"[round {round_} {stage}] "
    lines = [line[len(prefix) :] for line in stdout.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, stdout
    return lines[0]


@pytest.mark.timeout(120)
def test_dry_run_prints_every_rounds_commands(tmp_path):
    out = tmp_path / "it"
    res = iterate_cli(
        ["rounds=3", f"out={out}", "collect.beta=0.5", "collect.beta_decay=0.5", "dry_run=true", *TINY],
        tmp_path,
        120,
    )
    assert res.returncode == 0, res.stderr
    agg, final = out / "data" / "aggregate.hdf5", "train/final"
    r0 = _stage_args(res.stdout, 0, "collect")
    assert f"out={agg}" in r0 and "append=false" in r0 and "policy." not in r0
    assert "sim.image_size=64" in r0 and "max_steps=10" in r0
    for k, beta in ((1, 0.5), (2, 0.25)):
        c = _stage_args(res.stdout, k, "collect")
        assert f"policy.checkpoint={out / f'round_{k - 1}' / final}" in c
        assert "policy.label=expert" in c and "append=true" in c and f"policy.beta={beta}" in c
        t = _stage_args(res.stdout, k, "train")
        assert f"model.pretrained={out / f'round_{k - 1}' / final}" in t
        assert "data.filter.require_success=false" in t and "+trainer.limit_train_batches=3" in t
        e = _stage_args(res.stdout, k, "eval")
        assert f"checkpoint={out / f'round_{k}' / final}" in e and "eval.seed=1000" in e
    assert "model.pretrained" not in _stage_args(res.stdout, 0, "train")
    assert not out.exists()


def test_scratch_rounds_never_start_from_the_previous_checkpoint(tmp_path):
    cfg = compose_pipeline("iterate", [f"out={tmp_path}", "rounds=3", "train.init=scratch"])
    layout = RoundLayout(tmp_path, options(cfg))
    for k in range(3):
        train = next(s for s in round_stages(cfg, layout, k) if s.command == "train")
        assert train.name == f"round {k} train"
        assert not any(a.startswith("model.pretrained=") for a in train.overrides)


@pytest.mark.timeout(120)
def test_bad_configuration_exits_2_naming_the_field(tmp_path):
    for args, message in (
        (["rounds=0"], "rounds: must be >= 1"),
        (["train.init=warm"], "train.init: must be one of"),
        (["tasks=[juggle]", "dry_run=true"], "tasks: unknown task 'juggle'"),
        ([f"train.base_checkpoint={tmp_path}", "dry_run=true"], "train.base_checkpoint="),
    ):
        res = iterate_cli([f"out={tmp_path / 'x'}", *args], tmp_path, 60)
        assert res.returncode == 2 and message in res.stderr, (args, res.stderr)
    assert not (tmp_path / "x").exists()


@pytest.mark.sim
@needs_browser
@pytest.mark.timeout(300)
def test_a_failing_stage_stops_the_run_and_is_recorded(tmp_path):
    out = tmp_path / "it"
    args = [f"out={out}", "rounds=2", "collect.expert_episodes=2", *tiny("model=no_such_model")]
    res = iterate_cli(args, tmp_path, 300)
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    log = out / "round_0" / "train.log"
    assert "round 0 train failed" in res.stderr and str(log) in res.stderr
    assert "no_such_model" in log.read_text()
    results = json.loads((out / "iterate_results.json").read_text())
    assert len(results["rounds"]) == 1
    r0 = results["rounds"][0]
    assert r0["failed"]["stage"] == "train" and r0["collect"]["added"] == 2 and "eval" not in r0
    assert not (out / "round_1").exists()
    # an existing run is never overwritten
    again = iterate_cli(args, tmp_path, 60)
    assert again.returncode == 2 and "already holds an iterate run" in again.stderr


@pytest.mark.slow
@pytest.mark.sim
@needs_browser
@pytest.mark.timeout(900)
def test_two_rounds_of_dagger_produce_the_per_round_table(tmp_path):
    out = tmp_path / "it"
    args = [
        f"out={out}",
        "rounds=2",
        "collect.expert_episodes=4",
        "collect.episodes=2",
        "eval.episodes=2",
        *TINY,
    ]
    res = iterate_cli(args, tmp_path, 900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    results = json.loads((out / "iterate_results.json").read_text())
    r0, r1 = results["rounds"]
    assert r0["collect"]["mode"] == "expert" and r0["collect"]["acted_by"] == ["expert"]
    assert r0["collect"]["added"] == r0["collect"]["added_successes"] == 4
    c1 = r1["collect"]
    assert c1["mode"] == "dagger" and c1["acted_by"] == ["policy"] and c1["labelled_by"] == ["expert"]
    assert c1["added"] == 2 and c1["num_demos"] == 6 and c1["added_expert_steps"] == 0
    assert c1["checkpoint"] == str(out / "round_0" / "train" / "final")
    assert r0["train"]["init_from"] is None
    assert r1["train"]["init_from"] == str(out / "round_0" / "train" / "final")
    saved = json.loads((out / "round_1" / "train" / "config.json").read_text())
    assert saved["model"]["pretrained"] == str(out / "round_0" / "train" / "final")
    assert saved["data"]["sources"][0]["path"] == str(out / "data" / "aggregate.hdf5")
    seeds = []
    for r in (r0, r1):
        for task, t in r["eval"]["tasks"].items():
            assert task == "reach_target" and t["episodes"] == 2
            assert (t["ci_low"], t["ci_high"]) == pytest.approx(wilson_interval(t["successes"], 2))
        ev = json.loads((Path(r["eval"]["dir"]) / "eval_results.json").read_text())
        seeds.append([e["seed"] for e in ev["episodes"]])
    assert seeds[0] == seeds[1]  # every round is evaluated on the same episodes
    md = (out / "iterate_results.md").read_text()
    assert "| round |" in md and "reach_target" in md and "round_0/train/final" in md
    assert len([line for line in md.splitlines() if line.startswith("| 0 ") or line.startswith("| 1 ")]) == 2
    # the aggregate dataset is valid and its episodes say who acted
    val = subprocess.run(
        [sys.executable, "-m", "vla_lab.cli.data", "validate", str(out / "data" / "aggregate.hdf5")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert val.returncode == 0, val.stdout + val.stderr
    with h5py.File(out / "data" / "aggregate.hdf5") as f:
        acted = [json.loads(f["data"][f"demo_{i}"].attrs["meta"])["acted_by"] for i in range(6)]
    assert acted == ["expert"] * 4 + ["policy"] * 2
    assert (out / "commands.txt").read_text().count("vla-") == 6


def test_a_rounds_stages_log_to_its_directory_within_the_time_limit(tmp_path):
    cfg = compose_pipeline("iterate", [f"out={tmp_path}", "rounds=2", "stage_timeout_s=30"])
    collect, train, evaluate = round_stages(cfg, RoundLayout(tmp_path, options(cfg)), 1)
    assert [s.command for s in (collect, train, evaluate)] == ["collect", "train", "eval"]
    for stage in (collect, train, evaluate):
        assert stage.log == tmp_path / "round_1" / f"{stage.command}.log" and stage.timeout_s == 30
    # vla-collect exits 1 when a task fell short; the episodes it kept still count
    assert collect.ok_exit_codes == (0, 1) and train.ok_exit_codes == evaluate.ok_exit_codes == (0,)
