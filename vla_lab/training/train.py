"""``train(cfg)``: compose → instantiate → fit → closed-loop evaluate → summary; returns the metric a
sweeper optimises. Every stage logs what it instantiates; loggers are closed whatever happens.

``train_job(cfg)`` is what ``vla-train`` runs: ``train`` itself, except that inside a multirun a job
that fails is logged, marked failed in its run directory (``failed.json``) and reported to the
sweeper as NaN, so the other jobs of the sweep still run.

Under DDP every process runs ``train``; global rank 0 owns the run directory (creates it, writes the
config, logs, checkpoints and summary) and pins it for the processes it starts
(``vla_lab.training.distributed``). Each process of a multi-process run also writes
``ranks/rank<k>.json`` (steps, samples, a weight checksum).
"""

from __future__ import annotations

import logging
import math
import traceback
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vla_lab.config.errors import ConfigError
from vla_lab.config.schemas import to_schema
from vla_lab.eval.config import EvalConfig
from vla_lab.rollout.processor import processor_spec
from vla_lab.training.callbacks import PolicyCheckpoint, RunFiles, StepSeed, latest_trainer_state
from vla_lab.training.closed_loop import ClosedLoopEval
from vla_lab.training.config import CallbacksConfig
from vla_lab.training.distributed import (
    is_global_zero_process,
    job_overrides,
    pinned_run_dir,
    rank_report,
)
from vla_lab.training.module import OptimConfig, VLAModule
from vla_lab.training.run_dir import FAILED_MARKER, atomic_write_text, prepare_run_dir, write_json
from vla_lab.training.vision_pretrain import VisionPretrainConfig, check_applicable, pretrain_vision

log = logging.getLogger(__name__)


def _instantiate(node: DictConfig, **kwargs: Any):
    log.info("Instantiating <%s>", node._target_)
    return instantiate(node, **kwargs)


def save_config(cfg: DictConfig, run_dir: Path) -> None:
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_json(run_dir / "config.json", OmegaConf.to_container(cfg, resolve=True))


def build_policy(cfg: DictConfig, dm) -> Any:
    from vla_lab.policies.factory import make_policy

    log.info("Building policy <%s> with peft <%s>", cfg.model.family, cfg.peft.method)
    norm_stats = {cfg.unnorm_key: dm.normalizer.to_dict()}
    # Only the FAST head needs them (to fit its tokenizer); a checkpoint saves what was fitted.
    chunks = dm.action_chunks() if cfg.model.get("action_head") == "fast" else None
    policy = make_policy(
        cfg.model, cfg.peft, corpus=dm.instructions, norm_stats=norm_stats, action_chunks=chunks
    )
    missing = [c for c in policy.config.cameras if c not in dm.cfg.cameras]
    if missing:
        raise ConfigError(
            f"the policy reads cameras {list(policy.config.cameras)} but data.cameras is "
            f"{list(dm.cfg.cameras)} (missing {missing}): set both to the same list"
        )
    return policy


def _write_vision_pretrain(run_dir: Path, report: dict[str, Any], zero: bool) -> None:
    last = report["history"][-1]
    log.info(
        "vision pretraining: %d steps in %.0f s, held-out error %s",
        report["steps"],
        report["seconds"],
        last.get("val_error"),
    )
    if zero:
        write_json(run_dir / "vision_pretrain.json", report)


def build_loggers(cfg: DictConfig) -> list:
    return [_instantiate(node) for node in (cfg.get("logger") or {}).values() if node and "_target_" in node]


#: what ``optimized_metric`` may name: metrics the module and the closed-loop callback log
METRIC_PREFIXES = ("train/", "val/", "eval/")


def check_optimized_metric(name: str | None, eval_enabled: bool) -> None:
    """Fail before training when ``optimized_metric`` cannot exist at the end of the run."""
    if not name:
        return
    if not name.startswith(METRIC_PREFIXES):
        raise ConfigError(
            f"optimized_metric: {name!r} is not a logged metric; names start with "
            f"{', '.join(METRIC_PREFIXES)} (e.g. val/loss, eval/success_rate)"
        )
    if name.startswith("eval/") and not eval_enabled:
        raise ConfigError(
            f"optimized_metric: {name!r} needs closed-loop evaluation, but eval.enabled is false"
        )


def train(cfg: DictConfig) -> float | None:
    zero = is_global_zero_process()
    L.seed_everything(cfg.seed, workers=True)
    eval_cfg: EvalConfig = to_schema(EvalConfig, cfg.eval, where="eval")
    metric = cfg.get("optimized_metric")
    check_optimized_metric(metric, eval_cfg.enabled)
    if zero:
        run_dir = prepare_run_dir(cfg.paths.output_dir, resume=bool(cfg.get("resume")))
        if not cfg.get("resume"):
            save_config(cfg, run_dir)
    else:  # another rank of a run whose directory rank 0 created and pinned
        run_dir = Path(cfg.paths.output_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    if eval_cfg.enabled:
        eval_cfg.check_names()
    cb_cfg: CallbacksConfig = to_schema(CallbacksConfig, cfg.callbacks, where="callbacks")

    warmup = to_schema(VisionPretrainConfig, cfg.get("vision_pretrain"), where="vision_pretrain")
    if cfg.trainer.get("fast_dev_run"):  # Lightning's meaning: one batch of every stage
        warmup.steps = min(warmup.steps, 1)
    check_applicable(warmup, cfg.model, list(cfg.data.get("aux_keys") or []))
    dm = _instantiate(cfg.data)
    dm.setup("fit")
    log.info(
        "data: %s; %d train / %d val frames",
        dm.filter_report.summary(),
        len(dm.train_set),
        len(dm.val_set) if dm.val_set else 0,
    )
    policy = build_policy(cfg, dm)
    if warmup.steps and not cfg.get("resume"):  # a resumed run restores trained towers
        _write_vision_pretrain(
            run_dir, pretrain_vision(policy, dm.train_dataloader(), dm.val_dataloader(), warmup), zero
        )
    module = VLAModule(policy, to_schema(OptimConfig, cfg.optim, where="optim"))

    # The statistics are saved once, inside the policy (norm_stats[unnorm_key]); this file says which.
    data_processor = {k: v for k, v in dm.processor_config().items() if k != "normalizer"}
    data_processor["unnorm_key"] = cfg.unnorm_key
    spec = processor_spec(data_processor)
    monitor, mode = cb_cfg.checkpoint.resolved(eval_cfg.enabled)
    callbacks: list[L.Callback] = []
    closed_loop = ClosedLoopEval(eval_cfg, run_dir, spec) if eval_cfg.enabled else None
    if closed_loop:
        callbacks.append(closed_loop)  # first: the checkpoint callback reads its metric in the same hook
    checkpoint = PolicyCheckpoint(
        run_dir,
        data_processor,
        every_n_epochs=cb_cfg.checkpoint.every_n_epochs,
        monitor=monitor,
        mode=mode,
        keep_last=cb_cfg.checkpoint.keep_last,
    )
    run_files = RunFiles(run_dir, cb_cfg.log_every_n_steps)
    callbacks += [checkpoint, run_files, StepSeed(cfg.seed)]

    loggers = build_loggers(cfg)
    ckpt_path = latest_trainer_state(run_dir) if cfg.get("resume") else None
    if cfg.get("resume") and ckpt_path is None:
        log.warning("resume=%s: no checkpoint with trainer state yet, starting from scratch", run_dir)
    # Processes the strategy starts (DDP) inherit the run directory and this job's overrides.
    with pinned_run_dir(run_dir, job_overrides()):
        trainer: L.Trainer = _instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=loggers or False,
            default_root_dir=str(run_dir),
            enable_checkpointing=False,
            enable_progress_bar=cb_cfg.progress_bar,
        )
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None)
            if trainer.is_global_zero:
                _log_checkpoint_artifacts(loggers, run_dir)
        finally:
            _close_loggers(loggers)
            dm.teardown("fit")
        if trainer.world_size > 1:
            report = rank_report(trainer, module, run_files.local_samples)
            write_json(run_dir / "ranks" / f"rank{trainer.global_rank}.json", report)
    if not trainer.is_global_zero:
        value = trainer.callback_metrics.get(metric) if metric else None
        return float(value) if value is not None else None
    extra = {
        "best": checkpoint.best,
        "closed_loop": closed_loop.history if closed_loop else [],
        "eval_errors": closed_loop.errors if closed_loop else [],
        "filter": dm.filter_report.summary(),
    }
    summary = run_files.summary(trainer, module, extra)
    value = summary["final"].get(metric) if metric else None
    summary["optimized_metric"] = {"name": metric, "value": value}
    write_json(run_dir / "summary.json", summary)
    log.info("run directory: %s", run_dir)
    if metric and value is None:
        logged = ", ".join(sorted(summary["final"])) or "nothing"
        raise ConfigError(f"optimized_metric: {metric!r} was not logged by this run; logged: {logged}")
    return float(value) if value is not None else None


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def train_job(cfg: DictConfig) -> float | None:
    """``train(cfg)``; in a multirun a failure is recorded in the job's directory and returned as NaN."""
    if not in_multirun():
        return train(cfg)
    from hydra.core.hydra_config import HydraConfig

    try:
        return train(cfg)
    except Exception as err:
        job = HydraConfig.get().job
        out = Path(HydraConfig.get().runtime.output_dir)
        log.exception("job %s (%s) failed; the sweep goes on", job.num, job.override_dirname)
        write_json(
            out / FAILED_MARKER,
            {
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc(),
                "job_num": job.num,
                "overrides": list(HydraConfig.get().overrides.task),
            },
        )
        return math.nan


def _log_checkpoint_artifacts(loggers: list, run_dir: Path) -> None:
    from lightning.pytorch.loggers import WandbLogger

    for lg in loggers:
        if not isinstance(lg, WandbLogger):
            continue
        import wandb

        for name in ("best", "final"):
            if (run_dir / name).is_dir():
                artifact = wandb.Artifact(f"{run_dir.name}-{name}", type="model")
                artifact.add_dir(str(run_dir / name))
                lg.experiment.log_artifact(artifact)


def _close_loggers(loggers: list) -> None:
    from lightning.pytorch.loggers import WandbLogger

    for lg in loggers:
        if isinstance(lg, WandbLogger):
            import wandb

            wandb.finish()
        else:
            lg.finalize("success")


__all__ = ["train", "train_job"]
