"""Side-by-side comparison of run directories: config differences, metrics, figures."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from vla_lab.fileio import atomic_write_text
from vla_lab.training import figures as fig

#: config keys that differ between any two runs without making them different experiments
IGNORED_PREFIXES = ("paths.", "run_name", "resume", "data.sources", "logger.")
METRICS = (
    "final_train_loss",
    "best_val_loss",
    "val_direction_accuracy",
    "val_position_l1",
    "success_rate",
    "ci_low",
    "ci_high",
    "wall_time_s",
    "train_samples_per_s",
    "trainable_params",
)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(d) if isinstance(d, list) else d}


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def load_run(run: Path) -> dict[str, Any]:
    run = Path(run)
    if not (run / "config.json").exists():
        raise FileNotFoundError(f"{run} is not a run directory (no config.json)")
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    train = _rows(run / "training_log.csv")
    val = _rows(run / "validation_log.csv")
    evals = _rows(run / "eval_log.csv")
    last_eval = [r for r in evals if evals and r["step"] == evals[-1]["step"]]
    k = sum(int(r["successes"]) for r in last_eval)
    n = sum(int(r["episodes"]) for r in last_eval)
    from vla_lab.eval.metrics import wilson_interval

    lo, hi = wilson_interval(k, n) if n else (float("nan"), float("nan"))
    metrics = {
        "final_train_loss": float(train[-1]["loss"]) if train else float("nan"),
        "best_val_loss": min((float(r["val_loss"]) for r in val if r["val_loss"]), default=float("nan")),
        "val_direction_accuracy": _last_float(val, "direction_accuracy"),
        "val_position_l1": _last_float(val, "position_l1"),
        "success_rate": (
            np.mean([float(r["success_rate"]) for r in last_eval]) if last_eval else float("nan")
        ),
        "ci_low": lo,
        "ci_high": hi,
        "wall_time_s": summary.get("wall_time_s", float("nan")),
        "train_samples_per_s": summary.get("train_samples_per_s") or float("nan"),
        "trainable_params": summary.get("trainable_params", float("nan")),
    }
    return {
        "name": run.name,
        "path": run,
        "config": flatten(json.loads((run / "config.json").read_text())),
        "metrics": metrics,
        "train": train,
        "tasks": {r["task"]: float(r["success_rate"]) for r in last_eval},
        "cells": {f"{r['task']}@{r['environment']}": _cell_result(r) for r in last_eval},
    }


def _last_float(rows: list[dict[str, str]], key: str) -> float:
    values = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
    return values[-1] if values else float("nan")


def _cell_result(row: dict[str, str]) -> dict[str, Any]:
    """One task in one environment at the last evaluation: successes out of episodes, and how far
    from its goal the episodes ended (m), the closed-loop signal that still ranks runs at 0 %."""
    return {
        "k": int(row["successes"]),
        "n": int(row["episodes"]),
        "final_error": float(row["final_position_error"])
        if row.get("final_position_error")
        else float("nan"),
    }


def config_differences(runs: list[dict[str, Any]]) -> list[str]:
    keys = sorted(set().union(*(r["config"] for r in runs)))
    return [
        k
        for k in keys
        if not k.startswith(IGNORED_PREFIXES)
        and len({json.dumps(r["config"].get(k), default=str) for r in runs}) > 1
    ]


def compare(run_dirs: list[Path], out: Path) -> dict[str, Any]:
    runs = [load_run(Path(r)) for r in run_dirs]
    diff = config_differences(runs)
    cells = sorted(set().union(*(r["cells"] for r in runs)))
    per_cell = [c for cell in cells for c in (f"success {cell}", f"final_error_m {cell}")]
    header = ["run", *diff, *METRICS, *per_cell]
    table = [
        [
            r["name"],
            *(r["config"].get(k, "") for k in diff),
            *(r["metrics"][m] for m in METRICS),
            *(v for cell in cells for v in _cell_columns(r["cells"].get(cell))),
        ]
        for r in runs
    ]
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *table])
    atomic_write_text(out / "comparison.csv", buf.getvalue())
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table]
    atomic_write_text(out / "comparison.md", "\n".join(md) + "\n")
    _loss_figure(runs, out / "loss_comparison.png")
    _success_figure(runs, out / "success_rates.png")
    return {"header": header, "rows": table, "markdown": "\n".join(md), "differences": diff}


def _cell_columns(result: dict[str, Any] | None) -> tuple[str, float]:
    if result is None:
        return "", float("nan")
    return f"{result['k']}/{result['n']}", result["final_error"]


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "-" if np.isnan(v) else f"{v:.4g}"
    return str(v)


def _loss_figure(runs, path: Path) -> None:
    f, ax = fig.plt.subplots(figsize=(6.5, 3.8))
    for r in runs:
        if r["train"]:
            ax.plot(
                [float(x["step"]) for x in r["train"]],
                [float(x["loss"]) for x in r["train"]],
                label=r["name"],
            )
    ax.set(xlabel="step", ylabel="training loss", title="loss comparison")
    if any(r["train"] for r in runs):
        ax.legend(fontsize=7)
    fig._save(f, path)


def _success_figure(runs, path: Path) -> None:
    tasks = sorted(set().union(*(r["tasks"] for r in runs)))
    f, ax = fig.plt.subplots(figsize=(max(5, 1.5 * len(tasks) * max(1, len(runs)) / 2), 3.8))
    width = 0.8 / max(1, len(runs))
    for i, r in enumerate(runs):
        ax.bar(
            np.arange(len(tasks)) + i * width, [r["tasks"].get(t, 0.0) for t in tasks], width, label=r["name"]
        )
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks, fontsize=8)
    ax.set(ylim=(0, 1.05), ylabel="closed-loop success", title="success rate per task")
    ax.legend(fontsize=7)
    fig._save(f, path)
