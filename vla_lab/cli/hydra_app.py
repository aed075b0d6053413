"""Shared plumbing of the Hydra entry points: schema registration and config composition."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from vla_lab.config import CONF_DIR


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    # ${vla.or:a,b}: a unless it is null (oc.select treats an existing null as a value)
    if not OmegaConf.has_resolver("vla.or"):
        OmegaConf.register_new_resolver("vla.or", lambda a, b: b if a is None else a)


def register_all() -> None:
    """Register every layer's typed schemas in Hydra's ConfigStore and the resolvers (idempotent)."""
    register_resolvers()
    from vla_lab.config.schemas import register_configs as register_data
    from vla_lab.eval.config import register_configs as register_eval
    from vla_lab.policies.config import register_configs as register_policies
    from vla_lab.serve.config import register_configs as register_serve
    from vla_lab.sim.config import register_configs as register_sim
    from vla_lab.training.config import register_configs as register_training
    from vla_lab.training.iterate import register_configs as register_iterate

    register_data()
    register_policies()
    register_sim()
    register_eval()
    register_training()
    register_iterate()
    register_serve()


def compose(
    config_name: str, overrides: Sequence[str] = (), *, return_hydra_config: bool = False
) -> DictConfig:
    """Compose a root config the way the console scripts do (for tests, notebooks and tools)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_all()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def compose_run(config_name: str, overrides: Sequence[str], output_dir: str | Path) -> DictConfig:
    """A job's config as a Hydra app sees it: composed, with Hydra's runtime config registered
    (``${hydra:...}`` interpolations resolve) and its output directory at ``output_dir``."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    cfg = compose(config_name, overrides, return_hydra_config=True)
    with open_dict(cfg), read_write(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg
