"""``make demo``: the whole loop on this machine, one command per stage, as a user would run them.

1. ``vla-collect``  scripted-expert demonstrations in environment A (studio) and, fewer, in B (workshop),
   in shards collected side by side (one simulator each)
2. ``vla-train experiment=demo_pretrain``  full training of a tiny OpenVLA on A
3. ``vla-train experiment=demo_finetune``  LoRA fine-tuning of that base on B's few demonstrations; its
   closed-loop evaluation callback scores the fine-tuned policy on B's tasks at the end
4. ``vla-eval``  the base (zero-shot), closed-loop on the same episodes of B's tasks
5. the comparison table with Wilson 95 % intervals, also written to ``outputs/demo/results.json``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from vla_lab.eval.metrics import wilson_interval

TASKS = ["reach_target", "pick_block"]
SOURCE_ENV, TARGET_ENV = "studio", "workshop"


def shown(module: str, args: list[str]) -> str:
    return " ".join(["vla-" + module.rsplit(".", 1)[-1], *args])


def run(stage: str, module: str, *args: str) -> None:
    print(f"\n=== {stage} ===\n$ {shown(module, list(args))}", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", module, *args], check=True)
    print(f"--- {stage}: {time.perf_counter() - started:.0f}s", flush=True)


def run_side_by_side(stage: str, module: str, jobs: list[list[str]]) -> None:
    """Several runs of one command at once; each one's output is printed whole when it ends. A
    simulator keeps about one core busy, so two shards on two cores collect in about half the time."""
    print(f"\n=== {stage} ===", flush=True)
    started = time.perf_counter()
    procs = []
    for args in jobs:
        print(f"$ {shown(module, args)} &", flush=True)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", module, *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    failed = None
    for args, proc in zip(jobs, procs, strict=True):
        output, _ = proc.communicate()
        print(output, end="", flush=True)
        if proc.returncode and failed is None:
            failed = subprocess.CalledProcessError(proc.returncode, [module, *args])
    if failed is not None:
        raise failed
    print(f"--- {stage}: {time.perf_counter() - started:.0f}s", flush=True)


def shard_sizes(total: int, shards: int) -> list[int]:
    """``total`` episodes per task split over at most ``shards`` collections (none of them empty)."""
    shards = max(1, min(shards, total))
    return [total // shards + (i < total % shards) for i in range(shards)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vla-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--source-episodes", type=int, default=700, help="demos per task in environment A")
    parser.add_argument("--target-episodes", type=int, default=250, help="demos per task in environment B")
    parser.add_argument("--eval-episodes", type=int, default=20, help="closed-loop episodes per target task")
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument(
        "--collect-jobs", type=int, default=2, help="simulators collecting side by side (about one core each)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = args.out.resolve()
    stamp = time.strftime("%Y%m%d_%H%M%S")
    data = out / "data"
    source_data, target_data = data / SOURCE_ENV, data / TARGET_ENV
    tasks = "[" + ",".join(TASKS) + "]"
    common = [f"paths.log_dir={out.parent}", "task_name=" + out.name, "callbacks.progress_bar=false"]
    # DART-style demonstrations: perturbed actions run, the expert's clean actions are recorded, so the
    # data holds the recoveries a closed-loop policy needs (experiments/demo_learnability).
    # The instructed object's position is recorded for the towers' localization warm-up and the
    # auxiliary readout (training targets only, never policy inputs).
    collection = [
        "sim=demo",
        "expert.noise_std=0.3",
        "expert.random_action_prob=0.05",
        "record_object_pos=true",
        # absolute end-effector targets, converted to deltas at execution (vla_lab.sim.control):
        # a target does not depend on where the gripper is, so the image alone says it
        "action_space=target_ee",
    ]

    # Each environment's demonstrations are shards in one directory (data.sources takes directories).
    # Shard seeds: A's are even, B's odd, so no two shards share an episode seed.
    jobs = []
    for env, total, first_seed in (
        (SOURCE_ENV, args.source_episodes, 0),
        (TARGET_ENV, args.target_episodes, 1),
    ):
        # a rerun into the same --out rewrites every shard; one left from more jobs would join the data
        for stale in sorted((data / env).glob("part-*.hdf5")):
            stale.unlink()
        for i, n in enumerate(shard_sizes(total, args.collect_jobs)):
            jobs.append(
                [
                    f"tasks={tasks}",
                    f"environment={env}",
                    f"episodes_per_task={n}",
                    f"out={data / env / f'part-{i}.hdf5'}",
                    *collection,
                    f"seed={first_seed + 2 * i}",
                    "progress=false",
                ]
            )
    run_side_by_side(
        f"1. demonstrations in A ({SOURCE_ENV}) and B ({TARGET_ENV})", "vla_lab.cli.collect", jobs
    )

    base_run = out / f"pretrain_{SOURCE_ENV}_{stamp}"
    run(
        "2. pretrain the base on A",
        "vla_lab.cli.train",
        "experiment=demo_pretrain",
        f"run_name={base_run.name}",
        f"data.sources=[{{path: '{source_data}'}}]",
        f"trainer.max_epochs={args.pretrain_epochs}",
        *common,
    )
    ft_run = out / f"finetune_{TARGET_ENV}_{stamp}"
    run(
        "3. LoRA fine-tune on B",
        "vla_lab.cli.train",
        "experiment=demo_finetune",
        f"run_name={ft_run.name}",
        f"model.pretrained={base_run / 'best'}",
        f"data.sources=[{{path: '{target_data}'}}]",
        f"trainer.max_epochs={args.finetune_epochs}",
        f"eval.episodes_per_task={args.eval_episodes}",
        *common,
    )

    eval_dir = out / f"eval_zero_shot_{stamp}"
    run(
        "4. closed-loop evaluation of the base (zero-shot)",
        "vla_lab.cli.eval",
        f"checkpoint={base_run / 'best'}",
        "eval=demo_target",
        f"eval.episodes_per_task={args.eval_episodes}",
        f"hydra.run.dir={eval_dir}",
    )
    evals = {
        "zero_shot": json.loads((eval_dir / "eval_results.json").read_text())["tasks"],
        # the same preset, seed and episodes, run by the fine-tuning's evaluation callback at its end
        # on the policy its best/ holds
        "fine_tuned": final_closed_loop(ft_run),
    }
    results = table(evals, args.eval_episodes)
    results["base_in_source"] = {t["task"]: t["success_rate"] for t in final_closed_loop(base_run)}
    results["wall_time_s"] = round(time.perf_counter() - started)
    results["runs"] = {"pretrain": str(base_run), "finetune": str(ft_run), "zero_shot_eval": str(eval_dir)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out / 'results.json'}  (wall time {results['wall_time_s']}s)")
    return 0


def final_closed_loop(run_dir: Path) -> list[dict]:
    """Per-task rows of a training run's last closed-loop evaluation (its summary.json)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    if not summary.get("closed_loop"):
        raise RuntimeError(f"{run_dir / 'summary.json'}: the run has no closed-loop evaluation")
    return summary["closed_loop"][-1]["table"]


def table(evals: dict[str, list[dict]], episodes: int) -> dict:
    """Print the zero-shot / fine-tuned comparison; ``evals`` maps each to its per-task rows."""
    rates = {name: {t["task"]: t["success_rate"] for t in rows} for name, rows in evals.items()}
    counts = {
        name: {t["task"]: (t["successes"], t["episodes"]) for t in rows} for name, rows in evals.items()
    }
    print(f"\n=== 5. closed-loop success in {TARGET_ENV} ({episodes} episodes per task, 95% Wilson CI) ===")
    print(f"| task | zero-shot (base from {SOURCE_ENV}) | fine-tuned (LoRA on {TARGET_ENV}) |\n|---|---|---|")
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


if __name__ == "__main__":
    sys.exit(main())
