"""Closed-loop evaluation during training: episodes in the simulator (or a LIBERO suite, with
``eval.backend: libero``) with the policy being trained.

Runs every ``eval.every_n_epochs`` epochs and/or ``eval.every_n_steps`` steps, and at the end of training, writes ``eval_log.csv`` rows
and GIFs, and exposes ``eval/success_rate`` (mean over tasks) for checkpoint selection. An
evaluation that fails as a whole (the simulator cannot start, ...) is logged and recorded in the
summary; training goes on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch

from vla_lab.eval.config import EvalConfig
from vla_lab.eval.metrics import format_table
from vla_lab.rollout.evaluate import evaluate_policy, make_env
from vla_lab.rollout.runtime import PolicyRuntime
from vla_lab.training.run_dir import EVAL_COLUMNS, CsvLog

log = logging.getLogger(__name__)


class ClosedLoopEval(L.Callback):
    def __init__(self, cfg: EvalConfig, run_dir: str | Path, spec: dict[str, Any]):
        self.cfg, self.run_dir, self.spec = cfg, Path(run_dir), spec
        self.log_file = CsvLog(self.run_dir / "eval_log.csv", EVAL_COLUMNS)
        self.history: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._env = None
        self._last_step = -1

    def _run(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if step == self._last_step or trainer.sanity_checking or not trainer.is_global_zero:
            return  # under DDP rank 0 evaluates; checkpoint selection broadcasts its result
        self._last_step = step
        started = time.perf_counter()
        try:
            if self._env is None:
                self._env = make_env(self.cfg, self.spec)
            runtime = PolicyRuntime(pl_module.policy, self.spec)
            out = evaluate_policy(runtime, self.cfg, env=self._env, run_dir=self.run_dir, step=step)
        except Exception as err:  # an evaluation fault must never end training: record it and go on
            log.exception("closed-loop evaluation at step %d failed", step)
            self.errors.append(f"step {step}: {type(err).__name__}: {err}")
            return
        rows = [{"step": step, **asdict(s)} for s in out["summaries"]]
        self.log_file.write(rows)
        rate = out["overall"]["success_rate"]
        trainer.callback_metrics["eval/success_rate"] = torch.tensor(rate)
        metrics = {
            "eval/success_rate": rate,
            **{f"eval/{s.task}/{s.environment}/success_rate": s.success_rate for s in out["summaries"]},
        }
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=step)
            _log_media(lg, out, step)
        self.history.append(
            {
                "step": step,
                "overall": out["overall"],
                "table": rows,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        log.info(
            "closed-loop evaluation at step %d: %.0f%% success\n%s",
            step,
            100 * rate,
            format_table(out["summaries"]),
        )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        every = self.cfg.every_n_epochs
        if every > 0 and (trainer.current_epoch + 1) % every == 0 and not trainer.fast_dev_run:
            self._run(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = self.cfg.every_n_steps
        step = trainer.global_step
        if every > 0 and step > 0 and step % every == 0 and not trainer.fast_dev_run:
            self._run(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._run(trainer, pl_module)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def _log_media(logger, out: dict[str, Any], step: int) -> None:
    from lightning.pytorch.loggers import WandbLogger

    if not isinstance(logger, WandbLogger):
        return
    import wandb

    rows = [asdict(s) for s in out["summaries"]]
    if rows:
        logger.experiment.log(
            {
                "eval/table": wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows]),
                **{f"eval/video/{Path(v).stem}": wandb.Video(str(v), format="gif") for v in out["videos"]},
            },
            step=step,
        )
