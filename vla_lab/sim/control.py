"""The two action spaces of the simulated robot.

The simulator itself takes **delta** commands (``delta_ee``): ``[dx, dy, dz, droll, dpitch, dyaw,
gripper]``, each motion component in [-1, 1] scaled to at most 2 cm / 0.1 rad per step. A **target
pose** (``target_ee``, ``[x, y, z, roll, pitch, yaw, gripper]`` in metres and radians, base frame) is
position control on top of it: every step moves towards the pose as fast as the robot allows,
``clip((target - current) / max_step, -1, 1)`` — the very rule the scripted experts follow, so both
spaces describe the same demonstrations.

Why two: a delta label is a sharp function of *where the goal is relative to the gripper* (it
saturates 2 cm away), which a policy must learn to the centimetre; a target label is the goal itself,
a smooth function of what the camera shows. With chunks, targets are also re-read against the
current pose at every executed step, so an open-loop chunk still corrects its own drift
(Diffusion Policy reports the same advantage of position over velocity control).
"""

from __future__ import annotations

import numpy as np

from vla_lab.data.format import ActionSpace
from vla_lab.sim import manifest as mf

DELTA, TARGET = "delta_ee", "target_ee"
KINDS = (DELTA, TARGET)


def _steps() -> tuple[float, float]:
    r = mf.robot()
    return float(r["max_translation_per_step"]), float(r["max_rotation_per_step"])


def _wrap(a: np.ndarray) -> np.ndarray:
    return np.arctan2(np.sin(a), np.cos(a))


def action_space(kind: str = DELTA) -> ActionSpace:
    """The dataset description of the robot's actions in ``kind``."""
    check_kind(kind, "action_space")
    r = mf.robot()
    grip = f"x{r['max_width']} m opening"
    if kind == DELTA:
        t, rot = r["max_translation_per_step"], r["max_rotation_per_step"]
        return ActionSpace(units=[f"x{t} m"] * 3 + [f"x{rot} rad"] * 3 + [grip])
    return ActionSpace(
        names=["x", "y", "z", "roll", "pitch", "yaw", "gripper"],
        kind=TARGET,
        units=["m"] * 3 + ["rad"] * 3 + [grip],
    )


def target_to_delta(target, ee_pos, ee_ori) -> np.ndarray:
    """The delta command one step takes from the current pose towards ``target``."""
    target = np.asarray(target, np.float64)
    if target.shape != (7,) or not np.isfinite(target).all():
        raise ValueError(
            f"a target pose is 7 finite numbers [x, y, z, roll, pitch, yaw, gripper], got {target}"
        )
    t, r = _steps()
    delta = np.empty(7, np.float32)
    delta[:3] = np.clip((target[:3] - np.asarray(ee_pos, np.float64)) / t, -1, 1)
    delta[3:6] = np.clip(_wrap(target[3:6] - np.asarray(ee_ori, np.float64)) / r, -1, 1)
    delta[6] = np.clip(target[6], 0, 1)
    return delta


def delta_to_target(delta, ee_pos, ee_ori) -> np.ndarray:
    """The target pose whose step is ``delta`` (exact for deltas in [-1, 1]): how an executed
    delta is recorded in a ``target_ee`` dataset."""
    delta = np.clip(np.asarray(delta, np.float64), [-1] * 6 + [0], 1)
    t, r = _steps()
    target = np.empty(7, np.float32)
    target[:3] = np.asarray(ee_pos, np.float64) + delta[:3] * t
    target[3:6] = _wrap(np.asarray(ee_ori, np.float64) + delta[3:6] * r)
    target[6] = delta[6]
    return target


def check_kind(kind: str, where: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"{where}={kind!r}: must be one of {KINDS}")
    return kind


__all__ = ["DELTA", "TARGET", "KINDS", "action_space", "target_to_delta", "delta_to_target", "check_kind"]
