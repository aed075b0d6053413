"""Run directories: ``outputs/<task_name>/<run_name>/`` with the results layout users know.

```
config.yaml  config.json           resolved config
training_log.csv                   step, epoch, loss, lr, timestamp
validation_log.csv                 step, epoch, val_loss, l1_error, direction_accuracy, ...
eval_log.csv                       step, task, environment, episodes, successes, success_rate, ...
summary.json                       final and best metrics, wall time, samples/s, peak memory, closed-loop table
checkpoints/checkpoint-<step>/     policy (HF style) + data processor + trainer state
best/  final/                      copies of the best (by the monitored metric) and the last checkpoint
figures/                           training_loss.png, validation_metrics.png, success_rates.png
```
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vla_lab.fileio import atomic_write_text

TRAIN_COLUMNS = ["step", "epoch", "loss", "lr", "timestamp"]
VAL_COLUMNS = [
    "step",
    "epoch",
    "val_loss",
    "l1_error",
    "direction_accuracy",
    "gripper_accuracy",
    "position_l1",
    "rotation_l1",
    "timestamp",
]
EVAL_COLUMNS = [
    "step",
    "task",
    "environment",
    "episodes",
    "successes",
    "success_rate",
    "ci_low",
    "ci_high",
    "avg_steps_success",
    "final_position_error",
    "interventions",
    "faults",
]
RUN_MARKER = "config.yaml"
#: written by a multirun job that failed: {"error", "traceback", "job_num", "overrides"}
FAILED_MARKER = "failed.json"


class RunDirExistsError(FileExistsError):
    pass


def prepare_run_dir(path: str | os.PathLike, *, resume: bool = False) -> Path:
    """Create the run directory; refuse to reuse one that already holds a run unless resuming."""
    path = Path(path)
    if (path / RUN_MARKER).exists() and not resume:
        raise RunDirExistsError(
            f"{path} already holds a run (it has {RUN_MARKER}); pick another run_name "
            f"or continue it with resume={path}"
        )
    if resume and not (path / RUN_MARKER).exists():
        raise FileNotFoundError(f"resume={path}: no run there (no {RUN_MARKER})")
    for sub in ("checkpoints", "figures"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=_jsonable))


def _jsonable(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


class CsvLog:
    """Append-only CSV with a fixed header; flushed on every write so a crash keeps what was logged."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        if not path.exists() or path.stat().st_size == 0:
            with open(path, "w", newline="") as fh:
                csv.writer(fh).writerow(columns)

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        with open(self.path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, self.columns, extrasaction="ignore")
            for row in rows:
                writer.writerow({k: _fmt(row.get(k, "")) for k in self.columns})

    def read(self) -> list[dict[str, str]]:
        with open(self.path, newline="") as fh:
            return list(csv.DictReader(fh))

    def truncate_after(self, step: int) -> None:
        """On resume: drop rows logged after the checkpoint being resumed from. The kept rows are
        written beside the log and renamed over it, so a crash here loses nothing."""
        rows = [r for r in self.read() if r.get("step", "") == "" or int(float(r["step"])) <= step]
        atomic_write_text(self.path, csv_text(self.columns, rows))


def csv_text(columns: list[str], rows: Iterable[dict[str, Any]]) -> str:
    """A whole CSV file (header and ``rows``) as text, for an atomic write."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _fmt(v):
    if hasattr(v, "item"):
        v = v.item()
    return f"{v:.10g}" if isinstance(v, float) else v


def replace_dir(src: Path, dst: Path) -> None:
    """Atomically make ``dst`` a copy of ``src`` (copy beside it, then swap)."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    old = dst.with_name(f".{dst.name}.old")
    if dst.exists():
        os.replace(dst, old)
    os.replace(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)
