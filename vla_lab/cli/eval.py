"""``vla-eval checkpoint=<dir> eval=<preset>``: closed-loop evaluation of a checkpoint."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vla_lab.cli.hydra_app import register_all
from vla_lab.config import CONF_DIR

register_all()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> float:
    from vla_lab.rollout.evaluate import evaluate_checkpoint

    return float(evaluate_checkpoint(cfg)["overall"]["success_rate"])


if __name__ == "__main__":
    main()
