"""Typed Hydra schemas of the simulator (``conf/sim/``) and of ``vla-collect`` (``conf/collect.yaml``).

Registered in Hydra's ConfigStore as ``sim/_schema`` and ``_collect_schema``; config files list them
first in their defaults, so a wrong type or an unknown key fails at composition, naming the field.
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


@dataclass
class ExpertConfig:
    #: std of Gaussian noise added to the expert's motion dims (0-5), in action units
    noise_std: float = 0.0
    #: probability per step of replacing the expert's action with a random motion (gripper kept)
    random_action_prob: float = 0.0
    #: which action the file records: "clean" = the expert's own action at each visited state while the
    #: perturbed one is executed (DART: recovery data without noisy labels), "executed" = what ran
    label: str = "clean"


@dataclass
class PolicyExecutionConfig:
    """How the policy's predictions are executed (as ``eval.execution``)."""

    #: actions executed open-loop from each predicted chunk (null = the whole chunk)
    n_action_steps: int | None = None
    #: re-plan every step and blend overlapping chunks with weights exp(-coeff * i); null = off
    temporal_ensemble_coeff: float | None = None


#: what a policy rollout records as the action label
POLICY_LABELS = ("expert", "executed")
#: which policy rollouts are written
POLICY_KEEP = ("successes", "all")


@dataclass
class PolicyCollectConfig:
    """Policy rollouts instead of expert demonstrations (``vla-collect policy.checkpoint=<dir>``)."""

    #: a training checkpoint directory (``<run>/best``, ``<run>/final``, ...); null = the expert acts
    checkpoint: str | None = None
    #: "expert" = the scripted expert's action at every visited state (DAgger), "executed" = the
    #: action that ran (self-imitation; usually with keep=successes)
    label: str = "expert"
    #: "successes" or "all"; null = "successes" for label=executed, "all" for label=expert
    keep: str | None = None
    #: probability per step that the expert's action runs instead of the policy's (DAgger's mixing;
    #: 0 = the policy alone, 1 = the expert alone)
    beta: float = 0.0
    execution: PolicyExecutionConfig = field(default_factory=PolicyExecutionConfig)
    #: statistics key inside the checkpoint; null = the one it was trained with
    unnorm_key: str | None = None
    device: str = "cpu"

    def check(self) -> None:
        if self.label not in POLICY_LABELS:
            raise ValueError(f"policy.label must be one of {POLICY_LABELS}, got {self.label!r}")
        if self.keep is not None and self.keep not in POLICY_KEEP:
            raise ValueError(f"policy.keep must be one of {POLICY_KEEP} or null, got {self.keep!r}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"policy.beta must be in [0, 1], got {self.beta}")
        n = self.execution.n_action_steps
        if n is not None and n < 1:
            raise ValueError(f"policy.execution.n_action_steps must be >= 1 or null, got {n}")

    def resolved_keep(self) -> str:
        if self.keep is not None:
            return self.keep
        return "successes" if self.label == "executed" else "all"


@dataclass
class CollectConfig:
    sim: SimConfig = field(default_factory=SimConfig)
    tasks: list[str] = field(default_factory=lambda: ["pick_block"])
    environment: str = "studio"
    episodes_per_task: int = 10
    out: str = "outputs/demos/sim_demos.hdf5"
    seed: int = 0
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    #: also write failed episodes (flagged success=False)
    keep_failures: bool = False
    #: give up on a task after episodes_per_task * max_attempts_factor attempts
    max_attempts_factor: float = 2.0
    #: append to an existing file instead of replacing it
    append: bool = False
    progress: bool = True
    #: step budget of every episode; null = each task's own
    max_steps: int | None = None
    #: also write obs/object_pos, the simulator's position of the object the instruction names (the
    #: target sphere of reach tasks, the block to move otherwise): privileged state a policy never gets
    #: as input, for auxiliary losses and probes
    record_object_pos: bool = False
    #: the space actions are recorded in (vla_lab.sim.control): delta_ee (the robot's delta commands,
    #: LIBERO's convention) or target_ee (the pose each step heads for: position control)
    action_space: str = "delta_ee"
    #: record rollouts of a trained policy (policy.checkpoint) instead of expert demonstrations
    policy: PolicyCollectConfig = field(default_factory=PolicyCollectConfig)
    #: the shared `paths` group (data and output roots)
    paths: dict[str, Any] = field(default_factory=dict)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(group="sim", name="_schema", node=SimConfig)
    cs.store(name="_collect_schema", node=CollectConfig)


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
