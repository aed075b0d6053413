"""Continuous learning: rounds of collect → fine-tune → closed-loop evaluate (``vla-iterate``).

Round 0 collects scripted-expert demonstrations; every later round rolls out the previous round's
checkpoint in the simulator with the expert labelling each visited state (DAgger, optionally mixing
the expert in with probability ``beta``) and appends those episodes to one aggregate dataset. Each
round then trains on the aggregate (from the previous round's checkpoint, or from scratch) and
evaluates the result closed-loop on a fixed episode plan, the same for every round.

The options are ``conf/iterate.yaml`` (schema :class:`IterateConfig`); a round's stages and their
overrides are ``conf/pipeline/iterate.yaml``. Each stage is the command a user would type
(``vla-collect``, ``vla-train``, ``vla-eval``), run as a subprocess by the pipelines' stage runner;
its output goes to ``round_<k>/<stage>.log``. The output directory::

    <out>/
      data/aggregate.hdf5        all rounds' episodes (per-episode meta says who acted and labelled)
      round_<k>/collect.log      train/ (a vla-train run directory), train.log, eval/ (vla-eval), eval.log
      iterate_results.json       per round: data, collection outcome, training, success per task (Wilson CI)
      iterate_results.md         the same as a table
      commands.txt               every command run, in order
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from vla_lab.config.errors import ConfigError
from vla_lab.workflows.iterate_report import (
    collect_summary,
    dataset_report,
    eval_report,
    markdown_table,
    train_report,
    write_results,
)
from vla_lab.workflows.pipeline import set_context, stage_of
from vla_lab.workflows.stages import Stage, StageFailed, StageResult, StageRunner

INITS = ("previous", "scratch")
CHECKPOINTS = ("final", "best")
DATASET = "data/aggregate.hdf5"


@dataclass
class IterateCollectConfig:
    #: scripted-expert demonstrations per task in round 0
    expert_episodes: int = 20
    #: policy rollouts (DAgger) per task in every later round
    episodes: int = 10
    #: DAgger mixing: probability per step that the expert's action runs instead of the policy's
    beta: float = 0.0
    #: round k >= 1 mixes with beta * beta_decay ** (k - 1) (classic DAgger decays it)
    beta_decay: float = 1.0
    #: extra vla-collect overrides for every round, e.g. [sim=randomized, expert.noise_std=0.1]
    overrides: list[str] = field(default_factory=list)


@dataclass
class IterateTrainConfig:
    #: previous = fine-tune the previous round's checkpoint; scratch = train anew every round
    init: str = "previous"
    #: where round 0 (and every round, with init=scratch) starts; null = a fresh model
    base_checkpoint: str | None = None
    #: trainer.max_epochs of each round
    epochs: int = 4
    #: which checkpoint of a round is evaluated and rolled out next: final or best
    checkpoint: str = "final"
    #: extra vla-train overrides, e.g. [experiment=demo_pretrain, data.batch_size=32]
    overrides: list[str] = field(default_factory=list)


@dataclass
class IterateEvalConfig:
    #: closed-loop episodes per task after every round
    episodes: int = 10
    #: the eval preset (conf/eval/); tasks, environment and episodes are set from this config
    preset: str = "quick"
    #: base seed of the evaluation plan: the same episodes for every round
    seed: int = 1000
    #: GIFs of the first N episodes per task
    videos_per_task: int = 0
    #: extra vla-eval overrides, e.g. [eval.execution.n_action_steps=4]
    overrides: list[str] = field(default_factory=list)


@dataclass
class IterateConfig:
    #: output directory (must not hold a previous iterate run)
    out: str = "outputs/iterate"
    rounds: int = 3
    tasks: list[str] = field(default_factory=lambda: ["reach_target"])
    environment: str = "studio"
    #: rendered camera resolution of collected episodes (sim.image_size); evaluation renders at the
    #: resolution the checkpoint was trained on, i.e. this one
    image_size: int = 224
    #: step budget of collected and evaluated episodes; null = each task's own
    max_steps: int | None = None
    seed: int = 0
    collect: IterateCollectConfig = field(default_factory=IterateCollectConfig)
    train: IterateTrainConfig = field(default_factory=IterateTrainConfig)
    eval: IterateEvalConfig = field(default_factory=IterateEvalConfig)
    #: seconds one stage may run before the run is stopped; null = no limit
    stage_timeout_s: float | None = None
    #: print every round's commands and stop (the paths are known in advance)
    dry_run: bool = False
    #: the stages of one round (conf/pipeline/iterate.yaml), resolved per round by the driver
    pipeline: Any = None

    def __post_init__(self):
        def need(ok: bool, name: str, msg: str) -> None:
            if not ok:
                raise ConfigError(f"{name}: {msg}")

        need(self.rounds >= 1, "rounds", f"must be >= 1, got {self.rounds}")
        need(bool(self.tasks), "tasks", "must name at least one task")
        need(self.image_size >= 16, "image_size", f"must be >= 16, got {self.image_size}")
        need(
            self.max_steps is None or self.max_steps >= 1, "max_steps", f"must be >= 1, got {self.max_steps}"
        )
        c, t, e = self.collect, self.train, self.eval
        need(c.expert_episodes >= 1, "collect.expert_episodes", f"must be >= 1, got {c.expert_episodes}")
        need(c.episodes >= 1, "collect.episodes", f"must be >= 1, got {c.episodes}")
        need(0.0 <= c.beta <= 1.0, "collect.beta", f"must be in [0, 1], got {c.beta}")
        need(0.0 <= c.beta_decay <= 1.0, "collect.beta_decay", f"must be in [0, 1], got {c.beta_decay}")
        need(t.init in INITS, "train.init", f"must be one of {INITS}, got {t.init!r}")
        need(
            t.checkpoint in CHECKPOINTS,
            "train.checkpoint",
            f"must be one of {CHECKPOINTS}, got {t.checkpoint!r}",
        )
        need(t.epochs >= 1, "train.epochs", f"must be >= 1, got {t.epochs}")
        need(e.episodes >= 1, "eval.episodes", f"must be >= 1, got {e.episodes}")

    def check_names(self) -> None:
        from vla_lab.sim.manifest import environment_names, task_names

        for name in self.tasks:
            if name not in task_names():
                raise ConfigError(f"tasks: unknown task {name!r}; valid: {', '.join(task_names())}")
        if self.environment not in environment_names():
            raise ConfigError(
                f"environment: unknown environment {self.environment!r}; valid: {', '.join(environment_names())}"
            )
        base = self.train.base_checkpoint
        if base is not None and not (Path(base) / "data_processor.json").is_file():
            raise ConfigError(
                f"train.base_checkpoint={base}: not a training checkpoint (no data_processor.json)"
            )

    def beta_of(self, k: int) -> float:
        return self.collect.beta * self.collect.beta_decay ** (k - 1) if k >= 1 else 1.0


def register_configs() -> None:
    ConfigStore.instance().store(name="_iterate_schema", node=IterateConfig)


class RoundLayout:
    """Where a round's stages write; known before anything runs."""

    def __init__(self, out: Path, cfg: IterateConfig):
        self.out, self.cfg = out, cfg
        self.dataset = out / DATASET

    def dir(self, k: int) -> Path:
        return self.out / f"round_{k}"

    def train_dir(self, k: int) -> Path:
        return self.dir(k) / "train"

    def eval_dir(self, k: int) -> Path:
        return self.dir(k) / "eval"

    def checkpoint(self, k: int) -> Path:
        return self.train_dir(k) / self.cfg.train.checkpoint

    def init_from(self, k: int) -> Path | None:
        t = self.cfg.train
        if t.init == "previous" and k >= 1:
            return self.checkpoint(k - 1)
        return Path(t.base_checkpoint).resolve() if t.base_checkpoint else None

    def context(self, k: int) -> dict[str, Any]:
        """``pipeline.round``: what round ``k``'s stages refer to (conf/pipeline/iterate.yaml)."""
        init = self.init_from(k)
        return {
            "index": k,
            "seed": self.cfg.seed + k,
            "dir": str(self.dir(k)),
            "dataset": str(self.dataset),
            "train_dir": str(self.train_dir(k)),
            "eval_dir": str(self.eval_dir(k)),
            "checkpoint": str(self.checkpoint(k)),
            "previous": str(self.checkpoint(k - 1)) if k >= 1 else None,
            "init_from": str(init) if init is not None else None,
            "beta": self.cfg.beta_of(k) if k >= 1 else None,
        }


def options(cfg: DictConfig) -> IterateConfig:
    """The typed options of a composed conf/iterate.yaml (bad values raise ConfigError)."""
    return OmegaConf.to_object(cfg)


def round_stages(cfg: DictConfig, layout: RoundLayout, k: int) -> list[Stage]:
    """The three commands of round ``k``: round 0 collects expert demonstrations, later rounds DAgger
    rollouts of the previous round's checkpoint."""
    set_context(cfg, "round", layout.context(k))
    collect = ("overrides", "expert" if k == 0 else "dagger")
    return [stage_of(cfg, "collect", collect), stage_of(cfg, "train"), stage_of(cfg, "eval")]


def _record(
    entry: dict[str, Any], role: str, result: StageResult, layout: RoundLayout, k: int, before: int
) -> None:
    """What round ``k``'s stage ``role`` did, into the round's ``entry`` of the results."""
    cfg, seconds = layout.cfg, round(result.seconds, 1)
    if role == "collect":
        entry["collect"] = {
            "mode": "expert" if k == 0 else "dagger",
            "checkpoint": str(layout.checkpoint(k - 1)) if k > 0 else None,
            "beta": cfg.beta_of(k) if k > 0 else None,
            "exit_code": result.exit_code,
            "seconds": seconds,
            "summary": collect_summary(result.stage.log) if result.stage.log else None,
            **dataset_report(layout.dataset, before),
        }
    elif role == "train":
        entry["train"] = {
            **train_report(layout.train_dir(k), layout.checkpoint(k), layout.init_from(k)),
            "seconds": seconds,
        }
    else:
        entry["eval"] = {**eval_report(layout.eval_dir(k)), "seconds": seconds}


def _run_round(
    runner: StageRunner, cfg: DictConfig, layout: RoundLayout, k: int, entry: dict[str, Any]
) -> None:
    before = dataset_report(layout.dataset, 0)["num_demos"] if k > 0 else 0
    for role, stage in zip(("collect", "train", "eval"), round_stages(cfg, layout, k), strict=True):
        try:
            result = runner.run(stage)
            # vla-collect exits 1 when a task fell short of its episode count; what it has is kept
            if role == "collect" and result.exit_code != 0 and not layout.dataset.exists():
                raise StageFailed(stage, f"exit {result.exit_code}, nothing written", "", result.exit_code)
        except StageFailed as failed:
            entry["failed"] = {"stage": role, "exit_code": failed.exit_code, "log": str(stage.log)}
            raise
        _record(entry, role, result, layout, k, before)


def iterate(cfg: DictConfig) -> dict[str, Any]:
    """Run every round of a composed conf/iterate.yaml; returns (and writes, after each round) the
    results. Raises ConfigError for bad options, StageFailed when a stage fails."""
    opts = options(cfg)
    opts.check_names()
    out = Path(opts.out).resolve()
    layout = RoundLayout(out, opts)
    if opts.dry_run:
        runner = StageRunner(dry_run=True)
        for k in range(opts.rounds):
            for stage in round_stages(cfg, layout, k):
                runner.run(stage)
        return {"dry_run": True}
    if (out / "iterate_results.json").exists() or layout.dir(0).exists():
        raise ConfigError(f"out={out} already holds an iterate run; choose another directory")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    settings = asdict(opts)
    settings.pop("pipeline")
    results: dict[str, Any] = {
        "out": str(out),
        "tasks": list(opts.tasks),
        "environment": opts.environment,
        "eval_episodes": opts.eval.episodes,
        "dataset": str(layout.dataset),
        "config": settings,
        "rounds": [],
    }
    runner = StageRunner(commands=out / "commands.txt")
    for k in range(opts.rounds):
        entry: dict[str, Any] = {"round": k}
        results["rounds"].append(entry)
        try:
            _run_round(runner, cfg, layout, k, entry)
        finally:
            results["wall_time_s"] = round(time.perf_counter() - started)
            write_results(out, results)
    print("\n" + markdown_table(results))
    print(f"results: {out / 'iterate_results.json'}  (wall time {results['wall_time_s']}s)")
    return results


__all__ = [
    "IterateConfig",
    "RoundLayout",
    "StageFailed",
    "iterate",
    "markdown_table",
    "options",
    "register_configs",
    "round_stages",
]
