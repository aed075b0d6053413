"""``vla-train``: Hydra app composing conf/train.yaml (see ``vla_lab.training.train``)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from vla_lab.cli.hydra_app import HydraApp, register_all
from vla_lab.config import CONF_DIR
from vla_lab.training.distributed import pin_child_argv

register_all()
APP = HydraApp("vla-train")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
@APP.task
def _main(cfg: DictConfig) -> float | None:
    from vla_lab.training.train import train_job

    return train_job(cfg)


def main() -> None:
    # A DDP child rank started by Lightning replays its job's overrides in the pinned run directory.
    sys.argv = pin_child_argv(sys.argv)
    APP.run(_main)


if __name__ == "__main__":
    main()
