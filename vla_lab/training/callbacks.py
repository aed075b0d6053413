"""Callbacks that produce the run directory: CSV logs, checkpoints (every N, best, final), summary,
figures, and closed-loop evaluation in the simulator."""

from __future__ import annotations

import logging
import math
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from vla_lab.rollout.processor import write_data_processor
from vla_lab.seeding import seed_torch
from vla_lab.training import figures
from vla_lab.training.module import peak_memory_mb
from vla_lab.training.run_dir import (
    TRAIN_COLUMNS,
    VAL_COLUMNS,
    CsvLog,
    replace_dir,
    write_json,
)

log = logging.getLogger(__name__)
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.ckpt"


def _metric(trainer: L.Trainer, name: str) -> float | None:
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(value)


class RunFiles(L.Callback):
    """training_log.csv, validation_log.csv, summary.json and figures/ of one run directory."""

    def __init__(self, run_dir: str | Path, every_n_steps: int = 10):
        self.run_dir = Path(run_dir)
        self.every = max(1, every_n_steps)
        self.train_log = CsvLog(self.run_dir / "training_log.csv", TRAIN_COLUMNS)
        self.val_log = CsvLog(self.run_dir / "validation_log.csv", VAL_COLUMNS)
        self._start = time.time()
        self._samples = 0
        self.local_samples = 0  # this process's share (= _samples on one device)
        self._train_time = 0.0
        self._t_batch: float | None = None
        self._prev_step = 0

    def on_train_start(self, trainer, pl_module) -> None:
        step = trainer.global_step  # restored by now when resuming
        self._prev_step = step
        if step and trainer.is_global_zero:  # resumed: forget rows written after the checkpoint
            self.train_log.truncate_after(step)
            self.val_log.truncate_after(step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t_batch = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        from vla_lab.config import keys

        self.local_samples += len(batch[keys.TASK])
        self._samples += len(batch[keys.TASK]) * trainer.world_size  # every rank draws a batch
        if self._t_batch is not None:
            self._train_time += time.perf_counter() - self._t_batch
        step = trainer.global_step
        # one row per optimizer step (with gradient accumulation several batches share a step)
        stepped, self._prev_step = step != self._prev_step, step
        if trainer.is_global_zero and stepped and (step % self.every == 0 or step == 1):
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.train_log.write(
                [
                    {
                        "step": step,
                        "epoch": trainer.current_epoch,
                        "loss": float(loss),
                        "lr": trainer.optimizers[0].param_groups[0]["lr"],
                        "timestamp": time.time(),
                    }
                ]
            )

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row = {
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "timestamp": time.time(),
            "val_loss": _metric(trainer, "val/loss"),
        }
        for name in VAL_COLUMNS[3:-1]:
            row[name] = _metric(trainer, f"val/{name}")
        self.val_log.write([row])

    def summary(self, trainer, pl_module, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        params = list(pl_module.parameters())
        return {
            "run_dir": str(self.run_dir),
            "global_step": trainer.global_step,
            "epochs": trainer.current_epoch,
            "wall_time_s": round(time.time() - self._start, 1),
            "world_size": trainer.world_size,
            "samples_seen": self._samples,
            "train_samples_per_s": round(self._samples / self._train_time, 2) if self._train_time else None,
            "peak_memory_mb": round(peak_memory_mb(), 1),
            "total_params": sum(p.numel() for p in params),
            "trainable_params": sum(p.numel() for p in params if p.requires_grad),
            "final": metrics,
            **(extra or {}),
        }

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            figures.draw_all(self.run_dir)


class PolicyCheckpoint(L.Callback):
    """``checkpoints/checkpoint-<step>/`` every N epochs, ``best/`` by a metric, ``final/`` at the end.

    A checkpoint directory holds the policy (``save_pretrained``: weights or adapters, processor,
    config), ``data_processor.json`` (image transform, cameras, proprio keys) and the trainer state
    for resuming. Each is written beside its final name and renamed into place: a crash never leaves
    a half-written checkpoint under a valid name.
    """

    def __init__(
        self,
        run_dir: str | Path,
        data_processor: dict[str, Any],
        *,
        every_n_epochs: int = 1,
        monitor: str = "val/loss",
        mode: str = "min",
        keep_last: int = 2,
        save_trainer_state: bool = True,
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"checkpoint mode must be min or max, got {mode!r}")
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "checkpoints"
        self.data_processor = data_processor
        self.every = max(1, every_n_epochs)
        self.monitor, self.mode, self.keep_last = monitor, mode, keep_last
        self.save_trainer_state = save_trainer_state
        self.best: dict[str, Any] = {"metric": monitor, "value": None, "step": None}

    # -- saving ---------------------------------------------------------------------------------
    def save(self, trainer, pl_module) -> Path:
        # Every rank takes the same branches (decisions come from rank 0): saving the trainer state
        # is collective under DDP/FSDP; only rank 0 writes files.
        step = trainer.global_step
        final = self.dir / f"checkpoint-{step}"
        if trainer.strategy.broadcast(final.exists()):
            return final
        zero = trainer.is_global_zero
        tmp = self.dir / f".checkpoint-{step}.tmp"
        if zero:
            shutil.rmtree(tmp, ignore_errors=True)
            pl_module.policy.save_pretrained(tmp)
            write_data_processor(tmp, self.data_processor)
        if self.save_trainer_state:
            trainer.save_checkpoint(tmp / TRAINER_STATE)
        if zero:
            write_json(
                tmp / "checkpoint_info.json",
                {
                    "step": step,
                    "epoch": trainer.current_epoch,
                    "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1},
                },
            )
            tmp.rename(final)
            self._prune()
        trainer.strategy.barrier("PolicyCheckpoint.save")
        return final

    def _prune(self) -> None:
        ckpts = sorted(checkpoints(self.dir), key=lambda p: int(CHECKPOINT_RE.match(p.name)[1]))
        for old in ckpts[: max(0, len(ckpts) - self.keep_last)]:
            shutil.rmtree(old)

    def _improved(self, value: float | None) -> bool:
        if value is None or math.isnan(value):
            return False
        best = self.best["value"]
        return best is None or (value < best if self.mode == "min" else value > best)

    def update_best(self, trainer, pl_module) -> None:
        value = trainer.strategy.broadcast(_metric(trainer, self.monitor))
        if not self._improved(value):
            return
        path = self.save(trainer, pl_module)
        if trainer.is_global_zero:
            replace_dir(path, self.run_dir / "best")
        self.best = {"metric": self.monitor, "value": value, "step": trainer.global_step}
        log.info("best %s = %.4f at step %d", self.monitor, value, trainer.global_step)

    # -- hooks ----------------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # After validation and closed-loop evaluation of this epoch, so both can pick the best.
        if trainer.fast_dev_run:
            return
        if (trainer.current_epoch + 1) % self.every == 0:
            self.save(trainer, pl_module)
        self.update_best(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        path = self.save(trainer, pl_module)
        zero = trainer.is_global_zero
        if zero:
            replace_dir(path, self.run_dir / "final")
        # nothing monitored: the final model is the best we know
        if not trainer.strategy.broadcast((self.run_dir / "best").exists()):
            if zero:
                replace_dir(path, self.run_dir / "best")
            self.best = {
                "metric": self.monitor,
                "value": trainer.strategy.broadcast(_metric(trainer, self.monitor)),
                "step": trainer.global_step,
            }
        trainer.strategy.barrier("PolicyCheckpoint.final")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best", self.best)


class StepSeed(L.Callback):
    """Reseed the main process's random streams before every training step from (seed, step).

    Dropout masks and any other randomness of a step then depend on its index alone (augmentation
    is seeded per sample by the data sampler), so a run resumed from a checkpoint continues exactly
    as the uninterrupted run would have.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # each rank its own stream (rank 0's is the single-process one)
        s = (self.seed * 1_000_003 + trainer.global_step + 7_919 * trainer.global_rank) % 2**32
        seed_torch(s)
        np.random.seed(s)
        random.seed(s)


def checkpoints(directory: Path) -> list[Path]:
    return [p for p in Path(directory).glob("checkpoint-*") if CHECKPOINT_RE.match(p.name) and p.is_dir()]


def latest_trainer_state(run_dir: Path) -> Path | None:
    ckpts = sorted(
        checkpoints(Path(run_dir) / "checkpoints"), key=lambda p: int(CHECKPOINT_RE.match(p.name)[1])
    )
    for ckpt in reversed(ckpts):
        if (ckpt / TRAINER_STATE).exists():
            return ckpt / TRAINER_STATE
    return None
