"""A safety layer between a policy and the robot: bounded steps, a workspace fence, stuck recovery.

Every change it makes to an action is an *intervention* and is counted, so an evaluation reports how
much of a policy's success it owes to the wrapper.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class SafetyConfig:
    enabled: bool = False
    #: largest |action| on the 6 motion dims (1.0 = the simulator's full step)
    max_delta: float = 1.0
    #: keep this margin (m) inside the workspace: motion pushing further out is zeroed
    workspace_margin: float = 0.0
    #: end effector moving less than stuck_distance (m) over stuck_window steps counts as stuck
    stuck_window: int = 0
    stuck_distance: float = 0.002
    #: the recovery move: lift for this many steps with the gripper open
    recovery_steps: int = 5


class SafetyWrapper:
    def __init__(
        self,
        cfg: SafetyConfig,
        workspace: dict[str, list[float]] | None = None,
        max_translation: float = 0.02,
    ):
        self.cfg = cfg
        self.low = np.array([workspace[a][0] for a in "xyz"]) if workspace else None
        self.high = np.array([workspace[a][1] for a in "xyz"]) if workspace else None
        self.max_translation = max_translation
        self.reset()

    def reset(self) -> None:
        self.interventions = 0
        self._recent: deque[np.ndarray] = deque(maxlen=max(1, self.cfg.stuck_window))
        self._recovery_left = 0

    def __call__(self, action: np.ndarray, obs: dict) -> np.ndarray:
        if not self.cfg.enabled:
            return action
        out = np.asarray(action, dtype=np.float32).copy()
        changed = False
        if self._recovery_left > 0:
            self._recovery_left -= 1
            out[:6] = 0.0
            out[2], out[6] = 1.0, 1.0  # straight up, gripper open
            self.interventions += 1
            return out
        clipped = np.clip(out[:6], -self.cfg.max_delta, self.cfg.max_delta)
        changed |= bool(np.any(clipped != out[:6]))
        out[:6] = clipped
        if self.low is not None and "ee_pos" in obs:
            target = np.asarray(obs["ee_pos"], np.float64) + out[:3] * self.max_translation
            m = self.cfg.workspace_margin
            outside = ((target < self.low + m) & (out[:3] < 0)) | ((target > self.high - m) & (out[:3] > 0))
            if outside.any():
                out[:3][outside] = 0.0
                changed = True
        if self._stuck(obs):
            self._recovery_left = self.cfg.recovery_steps
            self._recent.clear()
            return self(action, obs)
        self.interventions += int(changed)
        return out

    def _stuck(self, obs: dict) -> bool:
        if self.cfg.stuck_window <= 0 or "ee_pos" not in obs:
            return False
        self._recent.append(np.asarray(obs["ee_pos"], np.float64))
        if len(self._recent) < self.cfg.stuck_window:
            return False
        return float(np.linalg.norm(self._recent[-1] - self._recent[0])) < self.cfg.stuck_distance
