"""Continuous learning: rounds of collect → fine-tune → closed-loop evaluate (``vla-iterate``).

Round 0 collects scripted-expert demonstrations; every later round rolls out the previous round's
checkpoint in the simulator with the expert labelling each visited state (DAgger, optionally mixing
the expert in with probability ``beta``) and appends those episodes to one aggregate dataset. Each
round then trains on the aggregate (from the previous round's checkpoint, or from scratch) and
evaluates the result closed-loop on a fixed episode plan, the same for every round.

Every stage runs the command a user would type (``vla-collect``, ``vla-train``, ``vla-eval``) as a
subprocess; its output goes to ``round_<k>/<stage>.log``. The output directory::

    <out>/
      data/aggregate.hdf5        all rounds' episodes (per-episode meta says who acted and labelled)
      round_<k>/collect.log      train/ (a vla-train run directory), train.log, eval/ (vla-eval), eval.log
      iterate_results.json       per round: data, collection outcome, training, success per task (Wilson CI)
      iterate_results.md         the same as a table
      commands.txt               every command run, in order
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore

from vla_lab.config.errors import ConfigError
from vla_lab.eval.metrics import wilson_interval

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


class StageFailed(RuntimeError):
    pass


def _q(value: Any) -> str:
    """A path as a Hydra override value: bare when plain, else quoted so every character is literal."""
    text = str(value)
    if re.fullmatch(r"[\w./+-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _list(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


@dataclass
class Stage:
    round: int
    name: str
    module: str
    args: list[str]
    log: Path

    @property
    def display(self) -> str:
        return shlex.join(["vla-" + self.module.rsplit(".", 1)[-1], *self.args])


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


def round_stages(cfg: IterateConfig, layout: RoundLayout, k: int) -> list[Stage]:
    """The three commands of round ``k``."""
    d = layout.dir(k)
    collect = [
        f"tasks={_list(cfg.tasks)}",
        f"environment={cfg.environment}",
        f"out={_q(layout.dataset)}",
        f"seed={cfg.seed + k}",
        f"sim.image_size={cfg.image_size}",
        "progress=false",
    ]
    if cfg.max_steps is not None:
        collect.append(f"max_steps={cfg.max_steps}")
    if k == 0:
        collect += [f"episodes_per_task={cfg.collect.expert_episodes}", "append=false"]
    else:
        collect += [
            f"episodes_per_task={cfg.collect.episodes}",
            "append=true",
            f"policy.checkpoint={_q(layout.checkpoint(k - 1))}",
            "policy.label=expert",
            "policy.keep=all",
            f"policy.beta={cfg.beta_of(k)}",
        ]
    collect += list(cfg.collect.overrides)

    train = [
        f"hydra.run.dir={_q(layout.train_dir(k))}",
        f"run_name=round_{k}",
        f"data.sources=[{{path: {_q(layout.dataset)}}}]",
        # DAgger episodes are labelled by the expert whether the policy succeeded or not
        "data.filter.require_success=false",
        f"trainer.max_epochs={cfg.train.epochs}",
        f"seed={cfg.seed + k}",
        "eval=none",
        "callbacks.progress_bar=false",
    ]
    init = layout.init_from(k)
    if init is not None:
        train.append(f"model.pretrained={_q(init)}")
    train += list(cfg.train.overrides)

    evaluate = [
        f"checkpoint={_q(layout.checkpoint(k))}",
        f"eval={cfg.eval.preset}",
        f"eval.tasks={_list(cfg.tasks)}",
        f"eval.environments=[{cfg.environment}]",
        f"eval.episodes_per_task={cfg.eval.episodes}",
        f"eval.seed={cfg.eval.seed}",
        f"eval.videos_per_task={cfg.eval.videos_per_task}",
        f"hydra.run.dir={_q(layout.eval_dir(k))}",
    ]
    if cfg.max_steps is not None:
        evaluate.append(f"eval.max_steps={cfg.max_steps}")
    evaluate += list(cfg.eval.overrides)
    return [
        Stage(k, "collect", "vla_lab.cli.collect", collect, d / "collect.log"),
        Stage(k, "train", "vla_lab.cli.train", train, d / "train.log"),
        Stage(k, "eval", "vla_lab.cli.eval", evaluate, d / "eval.log"),
    ]


def run_stage(stage: Stage, timeout: float | None) -> tuple[int, float]:
    """Run one stage's command, output to its log; returns (exit code, seconds)."""
    stage.log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", stage.module, *stage.args]
    print(f"\n=== round {stage.round}: {stage.name} ===\n$ {stage.display}", flush=True)
    started = time.perf_counter()
    with stage.log.open("w") as log:
        log.write(f"$ {stage.display}\n")
        log.flush()
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired as e:
            raise StageFailed(
                f"round {stage.round} {stage.name}: no result within stage_timeout_s={timeout}; log: {stage.log}"
            ) from e
    seconds = time.perf_counter() - started
    print(f"--- round {stage.round} {stage.name}: exit {rc}, {seconds:.0f}s (log: {stage.log})", flush=True)
    return rc, seconds


def _tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _collect_summary(log: Path) -> dict[str, Any] | None:
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
    (out / "iterate_results.json").write_text(json.dumps(results, indent=2))
    (out / "iterate_results.md").write_text(markdown_table(results))


def iterate(cfg: IterateConfig) -> dict[str, Any]:
    """Run every round; returns (and writes, after each round) the results."""
    cfg.check_names()
    out = Path(cfg.out).resolve()
    layout = RoundLayout(out, cfg)
    if cfg.dry_run:
        for k in range(cfg.rounds):
            for stage in round_stages(cfg, layout, k):
                print(f"[round {k} {stage.name}] {stage.display}")
        return {"dry_run": True}
    if (out / "iterate_results.json").exists() or layout.dir(0).exists():
        raise ConfigError(f"out={out} already holds an iterate run; choose another directory")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "out": str(out),
        "tasks": list(cfg.tasks),
        "environment": cfg.environment,
        "eval_episodes": cfg.eval.episodes,
        "dataset": str(layout.dataset),
        "config": asdict(cfg),
        "rounds": [],
    }
    commands = out / "commands.txt"
    for k in range(cfg.rounds):
        entry: dict[str, Any] = {"round": k}
        results["rounds"].append(entry)
        before = dataset_report(layout.dataset, 0)["num_demos"] if k > 0 else 0
        for stage in round_stages(cfg, layout, k):
            with commands.open("a") as fh:
                fh.write(f"# round {k} {stage.name}\n{stage.display}\n")
            rc, seconds = run_stage(stage, cfg.stage_timeout_s)
            # vla-collect exits 1 when a task fell short of its episode count (kept what it had)
            ok = rc == 0 or (stage.name == "collect" and rc == 1 and layout.dataset.exists())
            if not ok:
                entry["failed"] = {"stage": stage.name, "exit_code": rc, "log": str(stage.log)}
                results["wall_time_s"] = round(time.perf_counter() - started)
                write_results(out, results)
                raise StageFailed(
                    f"round {k} {stage.name} failed (exit {rc}); log {stage.log}:\n{_tail(stage.log)}"
                )
            if stage.name == "collect":
                entry["collect"] = {
                    "mode": "expert" if k == 0 else "dagger",
                    "checkpoint": str(layout.checkpoint(k - 1)) if k > 0 else None,
                    "beta": cfg.beta_of(k) if k > 0 else None,
                    "exit_code": rc,
                    "seconds": round(seconds, 1),
                    "summary": _collect_summary(stage.log),
                    **dataset_report(layout.dataset, before),
                }
            elif stage.name == "train":
                entry["train"] = {
                    **train_report(layout.train_dir(k), layout.checkpoint(k), layout.init_from(k)),
                    "seconds": round(seconds, 1),
                }
            else:
                entry["eval"] = {**eval_report(layout.eval_dir(k)), "seconds": round(seconds, 1)}
        results["wall_time_s"] = round(time.perf_counter() - started)
        write_results(out, results)
    table = markdown_table(results)
    print("\n" + table)
    print(f"results: {out / 'iterate_results.json'}  (wall time {results['wall_time_s']}s)")
    return results


__all__ = ["IterateConfig", "iterate", "markdown_table", "round_stages", "RoundLayout", "StageFailed"]
