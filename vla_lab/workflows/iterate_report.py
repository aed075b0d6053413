"""What ``vla-iterate`` records per round: the aggregate dataset, training and closed-loop success
(Wilson 95 % intervals), written as ``iterate_results.json`` and ``iterate_results.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vla_lab.eval.metrics import wilson_interval
from vla_lab.fileio import atomic_write_text


def collect_summary(log: Path) -> dict[str, Any] | None:
    """The JSON summary vla-collect prints as its last line."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith('{"out"'):
            return json.loads(line)
    return None


def dataset_report(path: Path, start: int) -> dict[str, Any]:
    """Demos in the aggregate file, and who acted in / how well went those from index ``start`` on."""
    import h5py

    with h5py.File(path, "r") as f:
        data = f["data"]
        n = int(data.attrs["num_demos"])
        added = [data[f"demo_{i}"] for i in range(start, n)]
        metas = [json.loads(d.attrs["meta"]) for d in added]
        return {
            "num_demos": n,
            "num_transitions": int(data.attrs["total"]),
            "added": len(added),
            "added_successes": sum(bool(d.attrs["success"]) for d in added),
            "added_steps": sum(int(d.attrs["num_samples"]) for d in added),
            "added_expert_steps": sum(int(m.get("expert_steps", 0)) for m in metas),
            "acted_by": sorted({m.get("acted_by", "expert") for m in metas}),
            "labelled_by": sorted({m.get("labelled_by", "expert") for m in metas}),
        }


def eval_report(eval_dir: Path) -> dict[str, Any]:
    """Per-task and pooled success with Wilson 95 % intervals, from vla-eval's eval_results.json."""
    result = json.loads((eval_dir / "eval_results.json").read_text())
    tasks: dict[str, dict[str, Any]] = {}
    for t in result["tasks"]:
        k, n = int(t["successes"]), int(t["episodes"])
        lo, hi = wilson_interval(k, n)
        tasks[t["task"]] = {
            "successes": k,
            "episodes": n,
            "success_rate": k / n if n else 0.0,
            "ci_low": lo,
            "ci_high": hi,
        }
    k = sum(t["successes"] for t in tasks.values())
    n = sum(t["episodes"] for t in tasks.values())
    lo, hi = wilson_interval(k, n)
    overall = {
        "successes": k,
        "episodes": n,
        "success_rate": k / n if n else 0.0,
        "ci_low": lo,
        "ci_high": hi,
    }
    return {"dir": str(eval_dir), "tasks": tasks, "overall": overall}


def train_report(train_dir: Path, checkpoint: Path, init: Path | None) -> dict[str, Any]:
    summary = json.loads((train_dir / "summary.json").read_text())
    final = summary.get("final", {})
    return {
        "run_dir": str(train_dir),
        "init_from": str(init) if init else None,
        "checkpoint": str(checkpoint),
        "global_step": summary.get("global_step"),
        "val_loss": final.get("val/loss"),
        "train_loss": final.get("train/loss"),
        "wall_time_s": summary.get("wall_time_s"),
        "filter": summary.get("filter"),
    }


def _cell(r: dict[str, Any]) -> str:
    k, n = r["successes"], r["episodes"]
    return f"{k}/{n} = {r['success_rate']:.0%} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"


def _init_label(train: dict[str, Any], out: Path) -> str:
    init = train.get("init_from")
    if not init:
        return "scratch"
    path = Path(init)
    return str(path.relative_to(out)) if path.is_relative_to(out) else str(path)


def markdown_table(results: dict[str, Any]) -> str:
    tasks = results["tasks"]
    head = [
        "round",
        "collected (acted by: kept, successes)",
        "dataset demos",
        "trained from",
        *tasks,
        "overall",
    ]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results["rounds"]:
        c, t, e = r["collect"], r.get("train"), r.get("eval")
        acted = "+".join(c["acted_by"]) + (f" (beta {c['beta']:g})" if c.get("beta") is not None else "")
        cells = [
            str(r["round"]),
            f"{acted}: {c['added']}, {c['added_successes']} ok",
            str(c["num_demos"]),
            _init_label(t, Path(results["out"])) if t else "-",
        ]
        cells += [_cell(e["tasks"][task]) if e and task in e["tasks"] else "-" for task in tasks]
        cells.append(_cell(e["overall"]) if e else "-")
        rows.append("| " + " | ".join(cells) + " |")
    env = results["environment"]
    return (
        f"Closed-loop success per round in {env} ({results['eval_episodes']} episodes per task, "
        "the same seeds every round; 95 % Wilson intervals)\n\n" + "\n".join(rows) + "\n"
    )


def write_results(out: Path, results: dict[str, Any]) -> None:
    atomic_write_text(out / "iterate_results.json", json.dumps(results, indent=2))
    atomic_write_text(out / "iterate_results.md", markdown_table(results))
