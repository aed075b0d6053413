"""Typed schema of the ``eval`` config group (closed-loop evaluation in the simulator or in LIBERO)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from vla_lab.config.errors import ConfigError
from vla_lab.eval.safety import SafetyConfig
from vla_lab.sim.config import RandomizationConfig

BACKENDS = ("sim", "libero")


@dataclass
class ExecutionConfig:
    """How a policy's predicted chunks are executed (``eval.execution``, ``policy.execution`` of
    collection, the client side of a served policy)."""

    #: actions executed open-loop from each predicted chunk (null = the whole chunk)
    n_action_steps: int | None = None
    #: re-plan every step and blend overlapping chunks with weights exp(-coeff * i); null = off
    temporal_ensemble_coeff: float | None = None


@dataclass
class LiberoEvalConfig:
    """The LIBERO benchmark protocol (``backend: libero``); see docs/libero.md."""

    suite: str = "libero_spatial"
    #: task indices within the suite; null = all of them
    task_ids: list[int] | None = None
    #: no-op steps (gripper open) before the policy acts, not counted in the step budget
    settle_steps: int = 10
    #: send the gripper as -1/+1 (open below/above the midpoint), as the reference evaluations do
    binarize_gripper: bool = True
    #: rebuild the MuJoCo model at every reset (slower; the fixed init state is set either way)
    hard_reset: bool = False


@dataclass
class EvalConfig:
    enabled: bool = True
    #: sim = the Three.js simulator (tasks x environments); libero = a LIBERO suite (``libero:``)
    backend: str = "sim"
    tasks: list[str] = field(default_factory=lambda: ["reach_target"])
    environments: list[str] = field(default_factory=lambda: ["studio"])
    episodes_per_task: int = 10
    #: base seed of the fixed episode plan (the same for every checkpoint evaluated)
    seed: int = 1000
    #: evaluate every N training epochs (0 = only at the end)
    every_n_epochs: int = 1
    #: also evaluate every N optimizer steps (0 = off); for long epochs or step-budgeted runs
    every_n_steps: int = 0
    #: step budget; null = each task's own budget
    max_steps: int | None = None
    #: rendered camera resolution; null = the resolution the policy's training images had (its own
    #: transform then crops and resizes exactly as in training)
    render_size: int | None = None
    #: simulators run side by side
    num_envs: int = 1
    #: with num_envs > 1: step them together (VectorSimEnv: up to two renderer processes, every
    #: running episode in one exchange, one batched policy forward per step; ``vectorized``) or one
    #: browser and one thread each, a forward per simulator (false)
    vectorized: bool = True
    #: simulator randomization knobs for the evaluated scenes (on top of the simulator's defaults);
    #: evaluate on the scene distribution the demonstrations came from, or on a harder one
    randomization: RandomizationConfig = field(default_factory=RandomizationConfig)
    #: GIFs of the first N episodes per task, in figures/
    videos_per_task: int = 1
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    #: used when backend is libero: ``episodes_per_task`` is then the trials per task (one fixed init
    #: state each), ``max_steps`` null is the suite's own budget
    libero: LiberoEvalConfig = field(default_factory=LiberoEvalConfig)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ConfigError(f"eval.backend: unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.episodes_per_task < 1:
            raise ConfigError(f"eval.episodes_per_task: must be >= 1, got {self.episodes_per_task}")
        if self.num_envs < 1:
            raise ConfigError(f"eval.num_envs: must be >= 1, got {self.num_envs}")
        if self.backend == "libero" and self.num_envs != 1:
            raise ConfigError("eval.num_envs: LIBERO runs one environment (num_envs: 1)")
        if self.every_n_epochs < 0 or self.every_n_steps < 0:
            raise ConfigError("eval.every_n_epochs and eval.every_n_steps must be >= 0 (0 = off)")
        if not self.tasks or not self.environments:
            raise ConfigError("eval.tasks and eval.environments need at least one entry each")

    def randomization_knobs(self) -> dict[str, Any]:
        return dataclasses.asdict(self.randomization)

    def check_randomization(self) -> None:
        from vla_lab.sim.manifest import check_randomization

        try:
            check_randomization(self.randomization_knobs())
        except ValueError as e:
            raise ConfigError(f"eval.randomization: {e}") from e

    def render_size_for(self, spec: dict[str, Any]) -> int:
        return int(self.render_size or spec.get("camera_size", 224))

    def check_names(self) -> None:
        """Unknown task/environment names fail before any training starts, listing the valid ones
        (for LIBERO: the suite, the task ids, and that the optional extra is installed)."""
        if self.backend == "libero":
            self._check_libero()
            return
        from vla_lab.sim.manifest import environment_names, task_names

        self.check_randomization()
        for name in self.tasks:
            if name not in task_names():
                raise ConfigError(f"eval.tasks: unknown task {name!r}; valid: {', '.join(task_names())}")
        for name in self.environments:
            if name not in environment_names():
                raise ConfigError(
                    f"eval.environments: unknown environment {name!r}; "
                    f"valid: {', '.join(environment_names())}"
                )

    def _check_libero(self) -> None:
        from vla_lab.data.libero import SUITES
        from vla_lab.eval.libero_env import require_libero

        suite = self.libero.suite
        if suite not in SUITES:
            raise ConfigError(f"eval.libero.suite: unknown suite {suite!r}; valid: {', '.join(SUITES)}")
        n = SUITES[suite][0]
        bad = [i for i in self.libero.task_ids or [] if not 0 <= i < n]
        if bad:
            raise ConfigError(f"eval.libero.task_ids: {suite} has tasks 0..{n - 1}; got {bad}")
        if self.libero.settle_steps < 0:
            raise ConfigError("eval.libero.settle_steps must be >= 0")
        require_libero()


def register_configs() -> None:
    ConfigStore.instance().store(group="eval", name="_schema", node=EvalConfig)
