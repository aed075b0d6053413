"""Who acts in an episode: the scripted expert, a trained policy, or a per-step mixture of both.

One episode loop (:func:`vla_lab.rollout.episode.run_episode`) drives any :class:`Actor`, for
evaluation and collection alike. In collection, what the file records as the action label is chosen
separately (the expert's clean action at the visited state, or the action that was executed). That
separation gives, with the same code:

* expert demonstrations (``ExpertActor``; DART when the expert is perturbed and labels are clean),
* self-imitation / filtered behaviour cloning (``PolicyActor``, executed labels, successes kept),
* DAgger (``PolicyActor`` or ``MixtureActor``, expert labels, every episode kept).

A policy served by ``vla-serve`` acts through :class:`vla_lab.serve.remote.RemotePolicyActor`, which
follows the same protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vla_lab.eval.config import ExecutionConfig
from vla_lab.rollout.runtime import PolicyRuntime
from vla_lab.sim.expert import ScriptedExpert

#: values of ``Actor.last_source``: which controller produced the action just returned
EXPERT, POLICY = "expert", "policy"


class Actor(Protocol):
    """Anything that turns an observation into a 7-D simulator command. ``info`` carries the
    instruction; its privileged state is for scripted experts only (policies read the observation
    and ``info["instruction"]``)."""

    #: who acts, as recorded in the episode's metadata: "expert", "policy" or "mixture"
    name: str
    #: EXPERT or POLICY: who produced the action returned by the last ``act`` call
    last_source: str

    def reset(self, seed: int) -> None: ...

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


class ExpertActor:
    """The simulator's scripted expert (``info["expert_action"]``), perturbed as its config says."""

    name = EXPERT
    last_source = EXPERT

    def __init__(self, expert: ScriptedExpert):
        self.expert = expert

    def reset(self, seed: int) -> None:
        self.expert.reset(seed)

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        return self.expert.act(info)

    def describe(self) -> dict[str, Any]:
        return {
            "actor": self.name,
            "noise_std": self.expert.noise_std,
            "random_action_prob": self.expert.random_action_prob,
        }


class PolicyActor:
    """A trained policy acting through its :class:`PolicyRuntime` (the checkpoint's own image
    transform, cameras, proprio keys and normalization statistics)."""

    name = POLICY
    last_source = POLICY

    def __init__(self, runtime: PolicyRuntime):
        self.runtime = runtime

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        *,
        execution: ExecutionConfig | None = None,
        unnorm_key: str | None = None,
        device: str = "cpu",
        field: str = "policy.checkpoint",
    ) -> PolicyActor:
        runtime = PolicyRuntime.from_checkpoint(
            checkpoint,
            unnorm_key=unnorm_key,
            execution=execution or ExecutionConfig(),
            device=device,
            field=field,
        )
        return cls(runtime)

    @property
    def checkpoint(self) -> str | None:
        return self.runtime.checkpoint

    @property
    def cameras(self) -> list[str]:
        return list(self.runtime.cameras)

    @property
    def camera_size(self) -> int:
        return self.runtime.camera_size

    def reset(self, seed: int) -> None:
        self.runtime.reset()

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        return self.runtime.act(observation, str(info["instruction"]))

    def describe(self) -> dict[str, Any]:
        execution = self.runtime.execution or ExecutionConfig()
        return {
            "actor": self.name,
            "checkpoint": self.checkpoint,
            "n_action_steps": execution.n_action_steps,
            "temporal_ensemble_coeff": execution.temporal_ensemble_coeff,
        }


class MixtureActor:
    """DAgger's mixture policy: at every step the expert's action is executed with probability
    ``beta``, the policy's otherwise. The coin is seeded per episode, so episodes are reproducible.

    The policy is queried at every step (unless ``beta == 1``) so that a chunked or temporally
    ensembled policy keeps its own timeline even on the steps the expert takes over.
    """

    name = "mixture"

    def __init__(self, policy: Actor, expert: Actor, beta: float):
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"policy.beta must be in [0, 1], got {beta}")
        self.policy, self.expert, self.beta = policy, expert, float(beta)
        self.rng = np.random.default_rng(0)
        self.last_source = POLICY

    def reset(self, seed: int) -> None:
        self.policy.reset(seed)
        self.expert.reset(seed)
        # a stream of its own: the expert's noise and the policy never shift the coin flips
        self.rng = np.random.default_rng([seed, 0xDA66E4])

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        if self.beta >= 1.0:
            self.last_source = EXPERT
            return self.expert.act(observation, info)
        action = self.policy.act(observation, info)
        if self.beta > 0.0 and self.rng.random() < self.beta:
            self.last_source = EXPERT
            return self.expert.act(observation, info)
        self.last_source = POLICY
        return action

    def describe(self) -> dict[str, Any]:
        return {
            "actor": self.name,
            "beta": self.beta,
            "policy": self.policy.describe(),
            "expert": self.expert.describe(),
        }
