"""``make demo`` (``vla-demo``): the whole loop on this machine, one command per stage, as a user would
run them: collect in A and B, pretrain on A, LoRA fine-tune on B, evaluate the base zero-shot, print
the table. The stages and their overrides are ``conf/pipeline/demo.yaml``; each flag below sets one of
its values, and trailing overrides set any (``vla-demo seed=1 pipeline.eval_episodes=5``).

    vla-demo --dry-run             print every command, run nothing
    vla-demo --seed 1              another seed for collection, training and evaluation
"""

from __future__ import annotations

import argparse
import sys

from vla_lab.cli.pipeline import exit_status
from vla_lab.workflows.demo import run_demo
from vla_lab.workflows.pipeline import compose_pipeline, render_value

#: flag -> the conf/pipeline/demo.yaml value it sets (defaults are the config's)
FLAGS = {
    "out": "pipeline.out",
    "source_episodes": "pipeline.source.episodes_per_task",
    "target_episodes": "pipeline.target.episodes_per_task",
    "eval_episodes": "pipeline.eval_episodes",
    "pretrain_epochs": "pipeline.pretrain_epochs",
    "finetune_epochs": "pipeline.finetune_epochs",
    "collect_jobs": "pipeline.collect_jobs",
    "seed": "seed",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vla-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", help="where data, runs and results.json go (default outputs/demo)")
    p.add_argument("--source-episodes", type=int, help="demos per task in environment A (default 700)")
    p.add_argument("--target-episodes", type=int, help="demos per task in environment B (default 250)")
    p.add_argument("--eval-episodes", type=int, help="closed-loop episodes per target task (default 20)")
    p.add_argument("--pretrain-epochs", type=int, help="default 3")
    p.add_argument("--finetune-epochs", type=int, help="default 8")
    p.add_argument(
        "--collect-jobs", type=int, help="simulators collecting side by side, about one core each (default 2)"
    )
    p.add_argument("--seed", type=int, help="seeds collection, training and evaluation (default 0)")
    p.add_argument("--dry-run", action="store_true", help="print every command, run nothing")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. pipeline.eval_episodes=5")
    return p


def overrides_of(args: argparse.Namespace) -> list[str]:
    given = {key: getattr(args, name) for name, key in FLAGS.items() if getattr(args, name) is not None}
    flags = [f"{key}={render_value(value)}" for key, value in given.items()]
    return [*flags, *(["dry_run=true"] if args.dry_run else []), *args.overrides]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return exit_status("vla-demo", lambda: run_demo(compose_pipeline("demo", overrides_of(args))))


if __name__ == "__main__":
    sys.exit(main())
