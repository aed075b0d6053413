"""`vla-train -m`: one run directory per job, a crashed job does not stop the sweep, the sweep index,
Optuna searches, the SLURM launcher config, and the run directory pinned for child ranks."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from vla_lab.config.compose import compose
from vla_lab.data.synthetic import make_demo_file
from vla_lab.training import distributed
from vla_lab.training.sweep import write_sweep_index


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return make_demo_file(
        tmp_path_factory.mktemp("data") / "demos.hdf5", num_demos=6, length=(6, 10), image_size=32, seed=0
    )


def _vla_train(tmp_path, *args, timeout=280):
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "VLA_LAB_CACHE": str(tmp_path / "cache"),
        "HYDRA_FULL_ERROR": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "vla_lab.cli.train", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


def _index(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "sweep_index.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_multirun_gives_each_job_a_run_dir_and_a_crash_does_not_stop_the_sweep(tmp_path, data_file):
    sweep = tmp_path / "sweep"
    proc = _vla_train(
        tmp_path,
        "-m",
        f"data.sources=[{{path: '{data_file}'}}]",
        f"paths.root_dir={tmp_path}",
        f"hydra.sweep.dir={sweep}",
        "debug=fast",
        # job 1 fails inside train() (invalid learning rate); job 2 must still run
        "optim.lr=1e-3,-1,2e-3",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2"]
    for job in jobs:  # each job its own run directory, with its own resolved config
        assert (job / "config.json").is_file() and (job / "job.json").is_file()
    assert json.loads((jobs[2] / "config.json").read_text())["optim"]["lr"] == pytest.approx(2e-3)
    assert (jobs[0] / "final").is_dir() and (jobs[2] / "final").is_dir() and not (jobs[1] / "final").exists()
    failed = json.loads((jobs[1] / "failed.json").read_text())
    assert (
        failed["error"] == "ConfigError: optim.lr: must be > 0, got -1.0"
        and "Traceback" in failed["traceback"]
    )

    rows = _index(sweep)
    assert [(r["job"], r["status"]) for r in rows] == [("0", "ok"), ("1", "failed"), ("2", "ok")]
    assert "optim.lr=-1" in rows[1]["overrides"] and "optim.lr: must be > 0" in rows[1]["error"]
    for r in (rows[0], rows[2]):
        summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        assert r["metric"] == "val/loss"
        assert float(r["metric_value"]) == pytest.approx(summary["final"]["val/loss"])
        assert float(r["val_loss"]) == pytest.approx(summary["final"]["val/loss"])
        assert float(r["wall_time_s"]) == pytest.approx(summary["wall_time_s"])
        assert math.isnan(float(r["success_rate"]))  # not evaluated closed-loop
    assert math.isnan(float(rows[1]["metric_value"]))
    md = (sweep / "sweep_index.md").read_text()
    assert "3 jobs: 2 ok, 1 failed" in md and "| 1 | failed | `optim.lr=-1` |" in md
    best = min((rows[0], rows[2]), key=lambda r: float(r["metric_value"]))
    assert f"Best: job {best['job']} " in md
    assert (sweep / "loss_comparison.png").stat().st_size > 1000 and (sweep / "success_rates.png").exists()
    assert "optim.lr" in (sweep / "comparison.md").read_text()  # vla-compare over the finished jobs


def test_a_single_run_still_fails_loudly(tmp_path, data_file):
    proc = _vla_train(
        tmp_path,
        f"data.sources=[{{path: '{data_file}'}}]",
        f"paths.root_dir={tmp_path}",
        "debug=fast",
        "optim.lr=-1",
    )
    assert proc.returncode != 0 and "optim.lr: must be > 0" in proc.stderr


@pytest.mark.slow  # several trials of real training; the multirun test above keeps the index in `make test`
def test_optuna_lora_search_runs_trials_and_indexes_them(tmp_path, data_file):
    sweep = tmp_path / "optuna"
    db = tmp_path / "optuna.db"
    proc = _vla_train(
        tmp_path,
        "hparams_search=lora_search",
        f"data.sources=[{{path: '{data_file}'}}]",
        f"paths.root_dir={tmp_path}",
        f"hydra.sweep.dir={sweep}",
        "debug=fast",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=3",
        f"hydra.sweeper.storage=sqlite:///{db}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _index(sweep)
    assert [r["status"] for r in rows] == ["ok"] * 3
    for r in rows:
        cfg = json.loads((Path(r["run_dir"]) / "config.json").read_text())
        assert cfg["peft"]["method"] == "lora" and cfg["peft"]["r"] in (4, 8, 16, 32)
        assert cfg["peft"]["alpha"] in (8, 16, 32, 64) and 1e-4 <= cfg["optim"]["lr"] <= 3e-3
        assert f"peft.r={cfg['peft']['r']}" in r["overrides"]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    values = [float(r["metric_value"]) for r in rows]
    assert results["best_value"] == pytest.approx(min(values))

    import optuna

    study = optuna.load_study(study_name="lora_search", storage=f"sqlite:///{db}")
    assert sorted(t.value for t in study.trials) == pytest.approx(sorted(values))
    assert "Optimised metric: `val/loss` (minimize)" in (sweep / "sweep_index.md").read_text()


def test_success_search_maximises_closed_loop_success():
    cfg = compose("train", ["hparams_search=success_search"], return_hydra_config=True)
    assert cfg.optimized_metric == "eval/success_rate" and cfg.eval.enabled
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.hydra.mode.name == "MULTIRUN"
    assert {"optim.lr", "peft.r", "peft.alpha"} <= set(cfg.hydra.sweeper.params)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optimized_metric=eval/success_rate", "eval=none"], "needs closed-loop evaluation"),
        (["optimized_metric=loss"], "optimized_metric: 'loss' is not a logged metric"),
    ],
)
def test_an_optimized_metric_that_cannot_exist_fails_before_training(tmp_path, data_file, overrides, message):
    from vla_lab.config.errors import ConfigError
    from vla_lab.training.train import train

    from .test_train import _cfg

    cfg, run = _cfg(tmp_path, data_file, "debug=fast", *overrides)
    with pytest.raises(ConfigError, match=message):
        train(cfg)
    assert not run.exists()


def test_index_rebuilt_from_a_sweep_dir_marks_unfinished_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "0" / ".hydra" / "overrides.yaml").write_text("- peft.r=4\n")
    index = write_sweep_index(sweep, metric="val/loss")
    assert index["rows"][0]["status"] == "failed" and "did not finish" in index["rows"][0]["error"]
    assert index["best"] is None and (sweep / "sweep_index.md").exists()


def test_submitit_slurm_launcher_composes_and_instantiates():
    cfg = compose(
        "train",
        ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4"],
        return_hydra_config=True,
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 4
    raw = OmegaConf.to_container(cfg.hydra, resolve=False)
    assert raw["launcher"]["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"
    assert raw["sweep"]["subdir"] == "${hydra.job.num}"  # one run directory per job
    obj = instantiate(launcher)  # builds the launcher; submitting needs a SLURM cluster
    assert type(obj).__name__ == "SlurmLauncher" and obj.params["partition"] == "gpu"
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="hydra.launcher.partion"):
        compose(
            "train", ["hydra/launcher=submitit_slurm", "hydra.launcher.partion=gpu"], return_hydra_config=True
        )


def test_child_ranks_replay_the_job_overrides_in_the_pinned_run_dir(tmp_path, monkeypatch):
    for key in ("LOCAL_RANK", "RANK", distributed.RUN_DIR_ENV, distributed.OVERRIDES_ENV):
        monkeypatch.delenv(key, raising=False)
    argv = ["vla-train", "-m", "optim.lr=1e-3,2e-3"]
    assert distributed.pin_child_argv(argv) == argv  # not a child: untouched
    run_dir = tmp_path / "sweep it's" / "3"
    with distributed.pinned_run_dir(run_dir, ["optim.lr=0.002", "peft=lora_light"]):
        assert os.environ[distributed.RUN_DIR_ENV] == str(run_dir)
        monkeypatch.setenv("LOCAL_RANK", "1")
        child = distributed.pin_child_argv(argv)
        assert not distributed.is_global_zero_process()
        monkeypatch.setenv("LOCAL_RANK", "0")
    assert distributed.RUN_DIR_ENV not in os.environ  # restored for the next job of a sweep
    assert child[1:3] == ["optim.lr=0.002", "peft=lora_light"] and "-m" not in child
    cfg = compose("train", child[1:], return_hydra_config=True)
    assert cfg.hydra.run.dir == str(run_dir) and cfg.optim.lr == pytest.approx(2e-3)
    assert cfg.hydra.output_subdir is None and cfg.hydra.job.name == "train_rank1"
