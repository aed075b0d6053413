"""Typed schemas of the training-side groups: ``callbacks`` and the root ``optim`` node."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from vla_lab.config.errors import ConfigError
from vla_lab.training.module import OptimConfig


@dataclass
class CheckpointConfig:
    every_n_epochs: int = 1
    #: metric that picks best/; ``auto`` = eval/success_rate when closed-loop evaluation runs, else val/loss
    monitor: str = "auto"
    #: min | max | auto (max for success rates and accuracies, min otherwise)
    mode: str = "auto"
    keep_last: int = 2

    def resolved(self, eval_enabled: bool) -> tuple[str, str]:
        monitor = (
            self.monitor if self.monitor != "auto" else ("eval/success_rate" if eval_enabled else "val/loss")
        )
        mode = self.mode
        if mode == "auto":
            mode = "max" if any(w in monitor for w in ("success", "accuracy")) else "min"
        if mode not in ("min", "max"):
            raise ConfigError(f"callbacks.checkpoint.mode: min, max or auto, got {self.mode!r}")
        return monitor, mode


@dataclass
class CallbacksConfig:
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    #: training_log.csv gets a row every N optimizer steps
    log_every_n_steps: int = 10
    progress_bar: bool = True


def register_configs() -> None:
    """Every schema ``train.yaml`` composes: its own groups and those of data, model, peft and eval."""
    from vla_lab.config.schemas import register_configs as register_data
    from vla_lab.eval.config import register_configs as register_eval
    from vla_lab.policies.config import register_configs as register_policies

    register_data()
    register_policies()
    register_eval()
    cs = ConfigStore.instance()
    cs.store(group="callbacks", name="_schema", node=CallbacksConfig)
    cs.store(group="optim", name="_schema", node=OptimConfig)
