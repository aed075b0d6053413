"""``vla-eval checkpoint=<dir> eval=<preset>``: closed-loop evaluation of a checkpoint."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vla_lab.cli.hydra_app import HydraApp, register_all
from vla_lab.config import CONF_DIR

register_all()
APP = HydraApp("vla-eval")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
@APP.task
def _main(cfg: DictConfig) -> float:
    from vla_lab.rollout.evaluate import evaluate_checkpoint

    return float(evaluate_checkpoint(cfg)["overall"]["success_rate"])


def main() -> None:
    APP.run(_main)


if __name__ == "__main__":
    main()
