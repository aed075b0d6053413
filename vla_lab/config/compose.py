"""Composing the Hydra config tree (``conf/``) from Python, the way the console scripts do, for
tests, notebooks and tools.

Typed schemas are put into Hydra's ConfigStore by the layer that owns them (each ``register_configs``;
``vla_lab.training.config.register_configs`` registers everything ``train.yaml`` and ``model.yaml``
use, the console scripts register every layer's). This module stays below all of them, so it
registers only the resolvers: register the schemas of the config you compose first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from vla_lab.config import CONF_DIR


def register_resolvers() -> None:
    """The project's OmegaConf resolvers (idempotent)."""
    from omegaconf import OmegaConf

    # ${vla.or:a,b}: a unless it is null (oc.select treats an existing null as a value)
    if not OmegaConf.has_resolver("vla.or"):
        OmegaConf.register_new_resolver("vla.or", lambda a, b: b if a is None else a)


def compose(
    config_name: str, overrides: Sequence[str] = (), *, return_hydra_config: bool = False
) -> DictConfig:
    """Compose a root config of ``conf/`` with ``overrides``, as its console script would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_resolvers()
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
