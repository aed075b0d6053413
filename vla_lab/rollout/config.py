"""Typed Hydra schema of ``vla-collect`` (``conf/collect.yaml``): the scenes, the expert's
perturbation and labels, and the trained policy whose rollouts are recorded instead.

Registered in Hydra's ConfigStore as ``_collect_schema`` (with the simulator's ``sim/_schema``);
``conf/collect.yaml`` lists it first in its defaults, so a wrong type or an unknown key fails at
composition, naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from vla_lab.eval.config import ExecutionConfig
from vla_lab.sim.config import SimConfig
from vla_lab.sim.config import register_configs as register_sim


@dataclass
class ExpertConfig:
    #: std of Gaussian noise added to the expert's motion dims (0-5), in action units
    noise_std: float = 0.0
    #: probability per step of replacing the expert's action with a random motion (gripper kept)
    random_action_prob: float = 0.0
    #: which action the file records: "clean" = the expert's own action at each visited state while the
    #: perturbed one is executed (DART: recovery data without noisy labels), "executed" = what ran
    label: str = "clean"


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
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
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
    #: continue an interrupted collection of ``out`` from its journal (same settings required)
    resume: bool = False
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
    register_sim()
    ConfigStore.instance().store(name="_collect_schema", node=CollectConfig)
