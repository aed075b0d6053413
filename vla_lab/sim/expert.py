"""Scripted experts. The per-task expert logic lives with the task registry in the simulator
(``web/src/tasks.js``): it reads privileged object state and publishes its next action as
``info["expert_action"]`` after every reset and step. This module adds optional noise injection."""

from __future__ import annotations

from typing import Any

import numpy as np


class ScriptedExpert:
    """Acts from ``info["expert_action"]``, optionally perturbed.

    ``noise_std`` adds Gaussian noise (action units) to the motion dims; ``random_action_prob`` replaces
    the motion with a uniform random one for a step. The expert is closed-loop, so it recovers from
    both, which makes noisy demonstrations diverse yet successful. The gripper command is never
    perturbed (a dropped object would just cost time).
    """

    def __init__(self, noise_std: float = 0.0, random_action_prob: float = 0.0, seed: int = 0):
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        if not 0 <= random_action_prob <= 1:
            raise ValueError(f"random_action_prob must be in [0, 1], got {random_action_prob}")
        self.noise_std = float(noise_std)
        self.random_action_prob = float(random_action_prob)
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def clean_action(info: dict[str, Any]) -> np.ndarray:
        """The expert's own action for the current state, unperturbed (what DART-style labels record)."""
        a = _expert_vector(info, "expert_action")
        a[:6] = np.clip(a[:6], -1, 1)
        return a

    @staticmethod
    def clean_target(info: dict[str, Any]) -> np.ndarray:
        """The pose the expert's clean action heads for (``target_ee`` labels, ``vla_lab.sim.control``)."""
        a = _expert_vector(info, "expert_target")
        a[6] = np.clip(a[6], 0, 1)
        return a

    def act(self, info: dict[str, Any]) -> np.ndarray:
        """The action to execute: the clean action, perturbed as configured."""
        a = self.clean_action(info)
        if self.random_action_prob > 0 and self.rng.random() < self.random_action_prob:
            a[:6] = self.rng.uniform(-1, 1, 6)
        if self.noise_std > 0:
            a[:6] += self.rng.normal(0, self.noise_std, 6).astype(np.float32)
        a[:6] = np.clip(a[:6], -1, 1)
        return a


def _expert_vector(info: dict[str, Any], key: str) -> np.ndarray:
    """A 7-vector the simulator publishes in ``info`` (a fresh float32 copy)."""
    try:
        a = np.array(info[key], dtype=np.float32)
    except KeyError as e:
        raise KeyError(f"info has no {key!r}; it comes from SimEnv.reset/step") from e
    if a.shape != (7,):
        raise ValueError(f"{key} must have 7 values, got shape {a.shape}")
    return a
