"""``make demo``'s driver: runs the stages of ``conf/pipeline/demo.yaml`` and prints the comparison.

1. ``vla-collect collection=demo_dart``  demonstrations in environment A and, fewer, in B, in shards
   collected side by side (one simulator each)
2. ``vla-train experiment=demo_pretrain``  full training of a tiny OpenVLA on A
3. ``vla-train experiment=demo_finetune``  LoRA fine-tuning of that base on B's few demonstrations; its
   closed-loop evaluation callback scores the fine-tuned policy on B's tasks at the end
4. ``vla-eval``  the base (zero-shot), closed-loop on the same episodes of B's tasks
5. the comparison table with Wilson 95 % intervals, also written to ``<out>/results.json``

The stages and their overrides are the config's; this module splits the collection into shards,
runs the stages and reads their results.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from vla_lab.eval.metrics import wilson_interval
from vla_lab.fileio import atomic_write_text
from vla_lab.workflows.pipeline import set_context, stage_of
from vla_lab.workflows.stages import Stage, StageRunner


def shard_sizes(total: int, shards: int) -> list[int]:
    """``total`` episodes per task split over at most ``shards`` collections (none of them empty)."""
    shards = max(1, min(shards, total))
    return [total // shards + (i < total % shards) for i in range(shards)]


def pin(cfg: DictConfig) -> None:
    """Fix the values that must not change while the demo runs: ``out`` (made absolute, as the
    working directory says now) and the run stamp (resolved once)."""
    p = cfg.pipeline
    with open_dict(cfg):
        p.out = str(Path(p.out).resolve())
        p.stamp = str(p.stamp)


def collection_stages(cfg: DictConfig) -> list[Stage]:
    """One collection per shard: each environment's episodes split over ``collect_jobs`` shards,
    ``<data_dir>/<environment>/part-<i>.hdf5``, seeds as conf/pipeline/demo.yaml says."""
    p = cfg.pipeline
    stages = []
    for env in (p.source, p.target):
        for i, n in enumerate(shard_sizes(env.episodes_per_task, p.collect_jobs)):
            shard = {
                "environment": env.environment,
                "episodes_per_task": n,
                "out": str(Path(p.data_dir) / env.environment / f"part-{i}.hdf5"),
                "seed": env.first_seed + 2 * (cfg.seed * p.collect_jobs + i),
            }
            set_context(cfg, "shard", shard)
            stages.append(stage_of(cfg, "collect"))
    return stages


def remove_stale_shards(cfg: DictConfig) -> None:
    """A rerun into the same ``out`` rewrites every shard; one left from more jobs would join the data."""
    p = cfg.pipeline
    for env in (p.source, p.target):
        for stale in sorted((Path(p.data_dir) / env.environment).glob("part-*.hdf5")):
            stale.unlink()


def run_demo(cfg: DictConfig) -> dict[str, Any] | None:
    """Run the demo of a composed ``pipeline=demo`` config; returns the results (None in a dry run)."""
    started = time.perf_counter()
    pin(cfg)
    p = cfg.pipeline
    runner = StageRunner(dry_run=bool(cfg.dry_run))
    collect = collection_stages(cfg)
    title = collect[0].name
    if not runner.dry_run:
        remove_stale_shards(cfg)
    runner.run_side_by_side(title, collect)
    for key in ("pretrain", "finetune", "zero_shot_eval"):
        runner.run(stage_of(cfg, key))
    if runner.dry_run:
        return None

    out = Path(p.out)
    base_run, ft_run, eval_dir = (out / p.runs[k] for k in ("pretrain", "finetune", "zero_shot_eval"))
    evals = {
        "zero_shot": json.loads((eval_dir / "eval_results.json").read_text())["tasks"],
        # the same preset, seed and episodes, run by the fine-tuning's evaluation callback at its end
        # on the policy its best/ holds
        "fine_tuned": final_closed_loop(ft_run),
    }
    results = table(evals, p.eval_episodes, p.source.environment, p.target.environment)
    results["base_in_source"] = {t["task"]: t["success_rate"] for t in final_closed_loop(base_run)}
    results["wall_time_s"] = round(time.perf_counter() - started)
    results["runs"] = {"pretrain": str(base_run), "finetune": str(ft_run), "zero_shot_eval": str(eval_dir)}
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    print(f"\nresults: {out / 'results.json'}  (wall time {results['wall_time_s']}s)")
    return results


def final_closed_loop(run_dir: Path) -> list[dict]:
    """Per-task rows of a training run's last closed-loop evaluation (its summary.json)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    if not summary.get("closed_loop"):
        raise RuntimeError(f"{run_dir / 'summary.json'}: the run has no closed-loop evaluation")
    return summary["closed_loop"][-1]["table"]


def table(
    evals: dict[str, list[dict]], episodes: int, source: str = "studio", target: str = "workshop"
) -> dict:
    """Print the zero-shot / fine-tuned comparison; ``evals`` maps each to its per-task rows."""
    rates = {name: {t["task"]: t["success_rate"] for t in rows} for name, rows in evals.items()}
    counts = {
        name: {t["task"]: (t["successes"], t["episodes"]) for t in rows} for name, rows in evals.items()
    }
    print(f"\n=== 5. closed-loop success in {target} ({episodes} episodes per task, 95% Wilson CI) ===")
    print(f"| task | zero-shot (base from {source}) | fine-tuned (LoRA on {target}) |\n|---|---|---|")
    for task in rates["fine_tuned"]:
        cells = []
        for name in ("zero_shot", "fine_tuned"):
            k, n = counts[name].get(task, (0, 0))
            lo, hi = wilson_interval(k, n)
            cells.append(f"{k}/{n} = {k / max(n, 1):.0%} [{lo:.2f}, {hi:.2f}]")
        print(f"| {task} | {cells[0]} | {cells[1]} |")
    avg = {name: sum(r.values()) / max(len(r), 1) for name, r in rates.items()}
    print(f"| **average** | {avg['zero_shot']:.0%} | {avg['fine_tuned']:.0%} |")
    return {
        "episodes_per_task": episodes,
        "zero_shot": rates["zero_shot"],
        "fine_tuned": rates["fine_tuned"],
        "average": avg,
    }


__all__ = ["collection_stages", "final_closed_loop", "run_demo", "shard_sizes", "table"]
