"""``vla-train``: Hydra app composing conf/train.yaml (see ``vla_lab.training.train``)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vla_lab.cli.hydra_app import register_all
from vla_lab.config import CONF_DIR

register_all()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    from vla_lab.training.train import train

    return train(cfg)


if __name__ == "__main__":
    main()
