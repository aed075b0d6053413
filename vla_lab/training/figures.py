"""Figures of a run, drawn from its CSV logs (so they can be redrawn for any finished run)."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _col(rows, name) -> np.ndarray:
    return np.array([float(r[name]) if r.get(name) not in (None, "") else np.nan for r in rows])


def training_loss(run: Path, out: Path) -> Path | None:
    rows = _rows(run / "training_log.csv")
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    step, loss = _col(rows, "step"), _col(rows, "loss")
    ax.plot(step, loss, lw=0.8, alpha=0.5, label="loss")
    if len(loss) >= 10:
        k = max(5, len(loss) // 20)
        ax.plot(step[k - 1 :], np.convolve(loss, np.ones(k) / k, mode="valid"), lw=1.6, label=f"mean of {k}")
    ax.set(xlabel="step", ylabel="training loss", title=run.name)
    ax.legend()
    return _save(fig, out / "training_loss.png")


def validation_metrics(run: Path, out: Path) -> Path | None:
    rows = _rows(run / "validation_log.csv")
    if not rows:
        return None
    names = [
        n
        for n in ("val_loss", "l1_error", "direction_accuracy", "gripper_accuracy")
        if not np.all(np.isnan(_col(rows, n)))
    ]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    step = _col(rows, "step")
    for ax, name in zip(axes[0], names, strict=True):
        ax.plot(step, _col(rows, name), marker="o", ms=3)
        ax.set(xlabel="step", title=name)
    return _save(fig, out / "validation_metrics.png")


def success_rates(run: Path, out: Path) -> Path | None:
    rows = _rows(run / "eval_log.csv")
    if not rows:
        return None
    last = max(int(float(r["step"])) for r in rows)
    rows = [r for r in rows if int(float(r["step"])) == last]
    labels = [f"{r['task']}\n{r['environment']}" for r in rows]
    rate, lo, hi = _col(rows, "success_rate"), _col(rows, "ci_low"), _col(rows, "ci_high")
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(rows)), 3.5))
    ax.bar(range(len(rows)), rate, yerr=[rate - lo, hi - rate], capsize=4, color="tab:green")
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set(ylim=(0, 1.05), ylabel="success rate (95% CI)", title=f"closed-loop success at step {last}")
    return _save(fig, out / "success_rates.png")


def draw_all(run: Path) -> list[Path]:
    out = run / "figures"
    out.mkdir(exist_ok=True)
    return [p for p in (training_loss(run, out), validation_metrics(run, out), success_rates(run, out)) if p]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
