"""Typed Hydra schema of the simulator (``conf/sim/``).

Registered in Hydra's ConfigStore as ``sim/_schema``; config files list it first in their defaults,
so a wrong type or an unknown key fails at composition, naming the field.
The randomization fields mirror the simulator's knobs (``vla_lab.sim.load_manifest()["randomization"]``);
a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf


@dataclass
class RandomizationConfig:
    """Domain randomization knobs; the defaults give canonical scenes (layout still seed-dependent)."""

    position_jitter: float = 1.0
    shuffle_layout: bool = True
    yaw_range: float = 0.785
    size_variation: float = 1.0
    color_jitter: float = 0.0
    num_distractors: int = 1
    background_jitter: float = 0.0
    table_color_jitter: float = 0.0
    texture_shuffle: bool = False
    light_intensity_jitter: float = 0.0
    light_direction_jitter: float = 0.0
    camera_position_jitter: float = 0.0
    camera_rotation_jitter: float = 0.0
    paraphrase: bool = True
    start_jitter: float = 0.0
    grid_targets: bool = False
    object_scale: float = 1.0


@dataclass
class SimConfig:
    cameras: list[str] = field(default_factory=lambda: ["agentview"])
    image_size: int = 224
    randomization: RandomizationConfig = field(default_factory=RandomizationConfig)
    #: seconds to wait for one reply before the browser counts as hung
    timeout: float = 10.0
    #: seconds to wait for the browser and page to come up
    startup_timeout: float = 20.0
    #: Chromium executable; null = $VLA_LAB_CHROMIUM or /usr/lib/chromium/chromium
    chromium: str | None = None


def register_configs() -> None:
    ConfigStore.instance().store(group="sim", name="_schema", node=SimConfig)


def to_container(cfg: DictConfig | Any) -> Any:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def env_kwargs(sim: SimConfig | DictConfig | dict) -> dict[str, Any]:
    """Keyword arguments for :class:`vla_lab.sim.SimEnv` from a ``sim`` config node."""
    d = asdict(sim) if isinstance(sim, SimConfig) else to_container(sim)
    return {
        "cameras": tuple(d["cameras"]),
        "image_size": int(d["image_size"]),
        "randomization": dict(d["randomization"]),
        "timeout": float(d["timeout"]),
        "startup_timeout": float(d["startup_timeout"]),
        "chromium": d.get("chromium"),
    }
