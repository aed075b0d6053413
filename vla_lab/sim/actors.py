"""Who acts in a recorded episode: the scripted expert, a trained policy, or a per-step mixture.

One episode runner (:func:`vla_lab.sim.collect.run_episode`) drives any :class:`Actor`; what the
file records as the action label is chosen separately (the expert's clean action at the visited
state, or the action that was executed). That separation gives, with the same code:

* expert demonstrations (``ExpertActor``; DART when the expert is perturbed and labels are clean),
* self-imitation / filtered behaviour cloning (``CheckpointActor``, executed labels, successes kept),
* DAgger (``CheckpointActor`` or ``MixtureActor``, expert labels, every episode kept).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vla_lab.sim.expert import ScriptedExpert

#: values of ``Actor.last_source``: which controller produced the action just returned
EXPERT, POLICY = "expert", "policy"


class Actor(Protocol):
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


class CheckpointActor:
    """A trained policy acting through :class:`vla_lab.eval.actor.PolicyActor` with the checkpoint's
    own processor (image transform, cameras, proprio keys, normalization statistics)."""

    name = POLICY
    last_source = POLICY

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        n_action_steps: int | None = None,
        temporal_ensemble_coeff: float | None = None,
        unnorm_key: str | None = None,
        device: str = "cpu",
    ):
        from vla_lab.eval.actor import ExecutionConfig, PolicyActor, read_processor_spec
        from vla_lab.eval.evaluate import policy_normalizer
        from vla_lab.policies.factory import load_policy

        self.checkpoint = str(Path(checkpoint).resolve())
        self.spec = read_processor_spec(checkpoint, field="policy.checkpoint")
        self.execution = ExecutionConfig(n_action_steps, temporal_ensemble_coeff)
        try:
            policy = load_policy(checkpoint)
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"policy.checkpoint={checkpoint}: cannot load the policy ({e})") from e
        policy.eval()
        key = unnorm_key if unnorm_key is not None else self.spec.get("unnorm_key")
        normalizer = policy_normalizer(policy, key)
        self.actor = PolicyActor(policy, self.spec, normalizer, execution=self.execution, device=device)
        self.policy = policy

    @property
    def cameras(self) -> list[str]:
        return list(self.spec["cameras"])

    @property
    def camera_size(self) -> int:
        return int(self.spec["camera_size"])

    def reset(self, seed: int) -> None:
        self.actor.reset()

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        return self.actor.act(observation, info)

    def describe(self) -> dict[str, Any]:
        return {
            "actor": self.name,
            "checkpoint": self.checkpoint,
            "n_action_steps": self.execution.n_action_steps,
            "temporal_ensemble_coeff": self.execution.temporal_ensemble_coeff,
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
