"""``make demo``: the whole loop on this machine, one command per stage, as a user would run them.

1. ``vla-collect``  scripted-expert demonstrations in environment A (studio) and, fewer, in B (workshop)
2. ``vla-train experiment=demo_pretrain``  full training of a tiny OpenVLA on A
3. ``vla-train experiment=demo_finetune``  LoRA fine-tuning of that base on B's few demonstrations
4. ``vla-eval``  the base (zero-shot) and the fine-tuned policy, closed-loop on B's tasks
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


def run(stage: str, module: str, *args: str) -> None:
    cmd = [sys.executable, "-m", module, *args]
    print(f"\n=== {stage} ===\n$ {' '.join(['vla-' + module.rsplit('.', 1)[-1], *args])}", flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"--- {stage}: {time.perf_counter() - started:.0f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vla-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--source-episodes", type=int, default=700, help="demos per task in environment A")
    parser.add_argument("--target-episodes", type=int, default=150, help="demos per task in environment B")
    parser.add_argument("--eval-episodes", type=int, default=20, help="closed-loop episodes per target task")
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=8)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = args.out.resolve()
    stamp = time.strftime("%Y%m%d_%H%M%S")
    data = out / "data"
    source_file, target_file = data / f"{SOURCE_ENV}.hdf5", data / f"{TARGET_ENV}.hdf5"
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

    run(
        "1a. demonstrations in A",
        "vla_lab.cli.collect",
        f"tasks={tasks}",
        f"environment={SOURCE_ENV}",
        f"episodes_per_task={args.source_episodes}",
        f"out={source_file}",
        *collection,
        "seed=0",
        "progress=false",
    )
    run(
        "1b. demonstrations in B",
        "vla_lab.cli.collect",
        f"tasks={tasks}",
        f"environment={TARGET_ENV}",
        f"episodes_per_task={args.target_episodes}",
        f"out={target_file}",
        *collection,
        "seed=1",
        "progress=false",
    )

    base_run = out / f"pretrain_{SOURCE_ENV}_{stamp}"
    run(
        "2. pretrain the base on A",
        "vla_lab.cli.train",
        "experiment=demo_pretrain",
        f"run_name={base_run.name}",
        f"data.sources=[{{path: '{source_file}'}}]",
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
        f"data.sources=[{{path: '{target_file}'}}]",
        f"trainer.max_epochs={args.finetune_epochs}",
        *common,
    )

    evals = {}
    for name, ckpt in (("zero_shot", base_run / "best"), ("fine_tuned", ft_run / "best")):
        eval_dir = out / f"eval_{name}_{stamp}"
        run(
            f"4. closed-loop evaluation: {name.replace('_', ' ')}",
            "vla_lab.cli.eval",
            f"checkpoint={ckpt}",
            "eval=demo_target",
            f"eval.episodes_per_task={args.eval_episodes}",
            f"hydra.run.dir={eval_dir}",
        )
        evals[name] = json.loads((eval_dir / "eval_results.json").read_text())

    results = table(evals, args.eval_episodes)
    results["wall_time_s"] = round(time.perf_counter() - started)
    results["runs"] = {"pretrain": str(base_run), "finetune": str(ft_run)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out / 'results.json'}  (wall time {results['wall_time_s']}s)")
    return 0


def table(evals: dict[str, dict], episodes: int) -> dict:
    rates = {name: {t["task"]: t["success_rate"] for t in ev["tasks"]} for name, ev in evals.items()}
    counts = {
        name: {t["task"]: (t["successes"], t["episodes"]) for t in ev["tasks"]} for name, ev in evals.items()
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
