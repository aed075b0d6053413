"""A real tiny `vla-train` killed with SIGKILL at seeded random moments after a checkpoint was written
(often mid-save: checkpoints are written every epoch of about half a second), then checked:

- every checkpoint directory under a final name (``checkpoints/checkpoint-<step>``, ``best``,
  ``final``) verifies against its manifest, loads, and has a readable trainer state;
- every file under a final name in the run directory parses (configs, summary, CSV logs);
- the run resumes from it (``resume=<run dir>``) to the end, with a step count equal to an
  uninterrupted run's, a training log without repeated steps and no temporary files left behind.

Each kill is one probe: accepted when all of that holds, data lost when a damaged or unreadable
artifact sits under a final name (or nothing loadable is left), a crash when the resume fails, a hang
when it does not finish in time. The long run kills the same run several times, resuming in between.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import train_cfg
from tests.robustness.fuzz import SIZES, FuzzRun, seed
from vla_lab.data.synthetic import make_demo_file
from vla_lab.policies.checkpoint import verify_manifest
from vla_lab.training.callbacks import CHECKPOINT_RE

#: kills per run, and epochs enough for all of them (a checkpoint is written every epoch)
KILLS = {"short": 1, "long": 6}
EPOCHS = {"short": 3, "long": 10}
#: a tiny model at 128 px on 4 short demos: about half a second per epoch on 2 cores
OVERRIDES = [
    "model=openvla_tiny_128",
    "data.image_size=128",
    "eval=none",
    "data.num_workers=0",
    "data.batch_size=4",
    "trainer.precision=32-true",
    "callbacks.progress_bar=false",
    "callbacks.log_every_n_steps=1",
]
START_S = 120  # a subprocess imports torch and builds the model: seconds on a busy machine


def _start(tmp_path: Path, data: Path, run: Path, epochs: int, resume: bool) -> subprocess.Popen:
    args = [f"data.sources=[{{path: '{data}'}}]", f"paths.root_dir={tmp_path}", f"run_name={run.name}"]
    args += [*OVERRIDES, f"trainer.max_epochs={epochs}", *([f"resume={run}"] if resume else [])]
    log = open(tmp_path / f"train-{time.monotonic_ns()}.log", "w")  # noqa: SIM115  (the child owns it)
    return subprocess.Popen(
        [sys.executable, "-m", "vla_lab.cli.train", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _checkpoint_steps(run: Path) -> set[int]:
    d = run / "checkpoints"
    return {int(m[1]) for p in d.iterdir() if (m := CHECKPOINT_RE.match(p.name))} if d.is_dir() else set()


def _kill_after_a_new_checkpoint(proc: subprocess.Popen, run: Path, delay: float) -> bool:
    """Waits for a checkpoint newer than those there now, then ``delay`` s, then SIGKILL.
    False when the run finished first (nothing left to interrupt)."""
    seen = _checkpoint_steps(run)
    deadline = time.monotonic() + START_S
    while not _checkpoint_steps(run) - seen:
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "no new checkpoint within the time limit"
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is not None:
        return False  # it finished during the delay
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return True


# ----------------------------------------------------------------------------------- checks
def _checkpoint_problem(directory: Path, load: bool = False) -> str | None:
    """Why a checkpoint directory under a final name is not whole, or None. The manifest holds
    every policy file's size and sha256, so a directory that verifies holds what was saved; ``load``
    also builds the policy from it."""
    from vla_lab.policies.factory import load_policy

    try:
        verify_manifest(directory)
        if load:
            load_policy(directory)
        json.loads((directory / "data_processor.json").read_text())
        info = json.loads((directory / "checkpoint_info.json").read_text())
        state = torch.load(directory / "trainer_state.ckpt", map_location="cpu", weights_only=False)
    except Exception as e:  # any failure to read it back is the finding
        return f"{directory.name}: {type(e).__name__}: {e}"[:300]
    if state["global_step"] != info["step"]:
        return f"{directory.name}: trainer state at step {state['global_step']}, info says {info['step']}"
    return None


def _final_file_problem(run: Path) -> str | None:
    """Why a file under a final name in the run directory does not parse, or None."""
    for name in ("config.json", "summary.json"):
        if (run / name).exists():
            try:
                json.loads((run / name).read_text())
            except ValueError as e:
                return f"{name}: {e}"
    for name in ("training_log.csv", "validation_log.csv"):
        if (run / name).exists():
            with open(run / name, newline="") as fh:
                rows = list(csv.reader(fh))
            if any(len(r) != len(rows[0]) for r in rows):
                return f"{name}: a row with a wrong number of fields (half-written)"
    return None


def after_kill(run: Path) -> str | None:
    """Why the run directory a SIGKILL left is not safe to resume from, or None."""
    steps = sorted(_checkpoint_steps(run))
    if not steps:  # the kill came after one had been written: pruning must never leave none
        return "no checkpoint left although one had been written"
    ckpts = [run / "checkpoints" / f"checkpoint-{s}" for s in steps]
    for d in [*ckpts, *(run / n for n in ("best", "final") if (run / n).exists())]:
        # the newest, which a resume continues from, is also loaded
        if problem := _checkpoint_problem(d, load=d == ckpts[-1]):
            return problem
    return _final_file_problem(run)


def after_resume(run: Path, steps: int) -> str | None:
    """Why the finished, resumed run is not what an uninterrupted one (of ``steps``) leaves, or None."""
    summary = json.loads((run / "summary.json").read_text())
    if summary["global_step"] != steps:
        return f"ended at step {summary['global_step']}, an uninterrupted run ends at {steps}"
    with open(run / "training_log.csv", newline="") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh)]
    if steps != sorted(set(steps)):
        return "training_log.csv repeats steps"
    leftovers = [
        p.name
        for p in [*run.iterdir(), *(run / "checkpoints").iterdir()]
        if p.name.startswith(".") and p.name != ".hydra"
    ]
    if leftovers:
        return f"temporary files left: {leftovers}"
    return _checkpoint_problem(run / "final", load=True)


# -------------------------------------------------------------------------------------- run
@pytest.mark.timeout(900)
@pytest.mark.parametrize("size", SIZES)
def test_training_killed_at_random_moments_resumes_from_whole_checkpoints(tmp_path, size):
    run_ = FuzzRun("train-sigkill", size, seed(20260306))
    rng = np.random.default_rng(run_.seed)
    data = make_demo_file(tmp_path / "demos.hdf5", num_demos=4, length=(4, 6), image_size=32, seed=0)
    run = tmp_path / "outputs" / "train" / "killed"
    for kill in range(KILLS[size]):
        delay = float(rng.uniform(0.0, 0.6))  # up to about an epoch: sometimes mid-save
        proc = _start(tmp_path, data, run, EPOCHS[size], resume=kill > 0)
        if not _kill_after_a_new_checkpoint(proc, run, delay):
            break  # the run finished before this kill: the final resume below still checks it
        problem = after_kill(run)
        run_.add(
            "data_lost" if problem else "accepted", f"SIGKILL {delay:.2f} s after checkpoint", problem or ""
        )
    run_.add(*_resume_to_the_end(tmp_path, data, run, EPOCHS[size]))
    run_.finish(min_tried=2 if size == "short" else 3)


def _train_in_process(tmp_path: Path, data: Path, run: Path, epochs: int) -> str | None:
    """Resumes in this process (the same `train` the command runs, without another start-up);
    why it failed, or None."""
    from vla_lab.training.train import train

    overrides = [*OVERRIDES, f"trainer.max_epochs={epochs}", f"resume={run}"]
    cfg, out = train_cfg(tmp_path, data, *overrides, run_name=run.name)
    assert out == run
    try:
        train(cfg)
    except Exception as e:  # a resume that fails is the finding
        return f"{type(e).__name__}: {e}"[:300]
    return None


def _resume_to_the_end(tmp_path: Path, data: Path, run: Path, epochs: int) -> tuple[str, str, str]:
    """The last probe: the run resumed to its end, then checked against an uninterrupted one."""
    if not (run / "summary.json").exists():  # a run that finished before a kill needs no resume
        problem = _train_in_process(tmp_path, data, run, epochs)
        if problem:
            return "crash", "resume to the end", problem
    first = min(_checkpoint_steps(run))
    info = json.loads((run / "checkpoints" / f"checkpoint-{first}" / "checkpoint_info.json").read_text())
    steps_per_epoch = info["step"] // (info["epoch"] + 1)
    problem = after_resume(run, steps_per_epoch * epochs)
    return ("data_lost" if problem else "accepted"), "resume to the end", problem or ""
