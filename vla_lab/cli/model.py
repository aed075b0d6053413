"""``vla-model model=<name> peft=<name> [overrides]``: plan a policy on the meta device, print JSON."""

from __future__ import annotations

import json
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from vla_lab.cli.hydra_app import HydraApp, register_all
from vla_lab.config import CONF_DIR
from vla_lab.policies import registry
from vla_lab.policies.config import model_config_from, peft_spec_from


def plan_from_cfg(cfg: DictConfig) -> dict[str, Any]:
    config = model_config_from(cfg.model)
    spec = peft_spec_from(cfg.peft)
    planner = OmegaConf.to_object(cfg.planner)
    return registry.get_family(config.family).plan(config, spec, planner)


register_all()
APP = HydraApp("vla-model")


@hydra.main(config_path=str(CONF_DIR), config_name="model", version_base=None)
@APP.task
def _main(cfg: DictConfig) -> None:
    choices = hydra.core.hydra_config.HydraConfig.get().runtime.choices
    result = {"model": choices.get("model"), "peft": choices.get("peft"), **plan_from_cfg(cfg)}
    print(json.dumps(result, indent=2))


def main() -> None:
    # The planner writes nothing: keep Hydra from creating run directories and log files.
    import sys

    sys.argv += [
        "hydra.run.dir=.",
        "hydra.output_subdir=null",
        "hydra/job_logging=disabled",
        "hydra/hydra_logging=disabled",
    ]
    APP.run(_main)


if __name__ == "__main__":
    main()
