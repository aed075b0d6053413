"""``VLAModule``: any policy that honours the policy contract, trained by Lightning.

The module adds only what training needs around ``policy.forward(batch) -> (loss, logs)``: the
optimizer (AdamW, fused where the device has it) and learning-rate schedule (linear warm-up, then
cosine or constant), and logging (``train/*``, ``val/*``, gradient norm, samples/s, peak memory).
Gradient clipping, accumulation and precision come from the Trainer config.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning as L
import torch

from vla_lab.config import keys


@dataclass
class OptimConfig:
    lr: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    eps: float = 1e-8
    #: linear warm-up steps (optimizer steps), then the schedule
    warmup_steps: int = 0
    #: cosine | constant
    schedule: str = "constant"
    #: cosine floor as a fraction of lr
    min_lr_ratio: float = 0.0

    def __post_init__(self):
        from vla_lab.config.errors import ConfigError

        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"optim.schedule: must be cosine or constant, got {self.schedule!r}")
        if self.lr <= 0:
            raise ConfigError(f"optim.lr: must be > 0, got {self.lr}")
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas: needs two values, got {self.betas}")


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


class VLAModule(L.LightningModule):
    def __init__(self, policy: torch.nn.Module, optim: OptimConfig | dict | None = None):
        super().__init__()
        self.policy = policy
        self.optim = optim if isinstance(optim, OptimConfig) else OptimConfig(**(optim or {}))
        self.save_hyperparameters({"optim": asdict(self.optim)})
        self._t_last: float | None = None

    # -- steps ------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, logs = self.policy(batch)
        n = len(batch[keys.TASK])
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=n)
        for name, value in logs.items():
            if name != "loss":
                self.log(f"train/{name}", value, batch_size=n)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=n)
        now = time.perf_counter()
        if self._t_last is not None:
            self.log("train/samples_per_s", n / max(now - self._t_last, 1e-9), batch_size=n)
        self._t_last = now
        return loss

    def on_train_epoch_start(self) -> None:
        self._t_last = None  # the gap between epochs (validation, checkpoints) is not throughput

    def on_before_optimizer_step(self, optimizer) -> None:
        grads = [p.grad for p in self.policy.parameters() if p.grad is not None]
        if grads:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
            self.log("train/grad_norm", norm)
        self.log("train/peak_memory_mb", peak_memory_mb())

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, logs = self.policy(batch)
        n = len(batch[keys.TASK])
        # epoch-level means over every rank's share of the validation set (a no-op on one device)
        self.log("val/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        for name, value in logs.items():
            if name != "loss":
                self.log(f"val/{name}", value, batch_size=n, sync_dist=True)
        return loss

    # -- optimization -----------------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.policy.parameters() if p.requires_grad]

    def configure_optimizers(self):
        params = self.trainable_parameters()
        if not params:
            raise ValueError("the policy has no trainable parameters (everything frozen?)")
        o = self.optim
        fused = all(p.device.type == "cuda" for p in params)
        opt = torch.optim.AdamW(
            params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay, fused=fused or None
        )
        from transformers.optimization import (
            get_constant_schedule_with_warmup,
            get_cosine_with_min_lr_schedule_with_warmup,
        )

        if o.schedule == "cosine":
            total = int(self.trainer.estimated_stepping_batches)
            sched = get_cosine_with_min_lr_schedule_with_warmup(
                opt, o.warmup_steps, max(total, o.warmup_steps + 1), min_lr_rate=o.min_lr_ratio
            )
        else:
            sched = get_constant_schedule_with_warmup(opt, o.warmup_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
