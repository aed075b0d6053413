"""A run killed with SIGKILL mid-training and resumed ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from vla_lab.data.synthetic import make_demo_file

EPOCHS = 4


def _train_cmd(tmp_path, data_file, run_name, *extra):
    return [
        sys.executable,
        "-m",
        "vla_lab.cli.train",
        f"data.sources=[{{path: '{data_file}'}}]",
        f"paths.root_dir={tmp_path}",
        f"run_name={run_name}",
        "eval=none",
        "data.num_workers=0",
        "data.batch_size=4",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.precision=32-true",
        "callbacks.progress_bar=false",
        "callbacks.log_every_n_steps=1",
        "callbacks.checkpoint.keep_last=10",
        "trainer.deterministic=true",
        *extra,
    ]


@pytest.mark.slow
def test_sigkill_then_resume_matches_the_uninterrupted_run(tmp_path):
    data_file = make_demo_file(tmp_path / "demos.hdf5", num_demos=5, length=(6, 8), image_size=32, seed=0)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(
        _train_cmd(tmp_path, data_file, "straight"), check=True, timeout=900, env=env, capture_output=True
    )
    straight = json.loads((tmp_path / "outputs/train/straight/summary.json").read_text())

    run = tmp_path / "outputs/train/killed"
    proc = subprocess.Popen(
        _train_cmd(tmp_path, data_file, "killed"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and len(list((run / "checkpoints").glob("checkpoint-*"))) < 2:
        assert proc.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (run / "final").exists() and not (run / "summary.json").exists()

    subprocess.run(
        _train_cmd(tmp_path, data_file, "ignored_on_resume", f"resume={run}"),
        check=True,
        timeout=900,
        env=env,
        capture_output=True,
    )
    resumed = json.loads((run / "summary.json").read_text())
    assert resumed["global_step"] == straight["global_step"]
    for key in ("train/loss", "val/loss"):
        assert resumed["final"][key] == pytest.approx(straight["final"][key], rel=1e-3, abs=1e-4), key
    steps = [int(r.split(",")[0]) for r in (run / "training_log.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)), "training_log.csv has duplicated steps after the resume"
