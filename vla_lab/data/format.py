"""The vla_lab demonstration format: names, metadata schema and the framework's action convention.

The layout follows LIBERO/robomimic (``/data/demo_<i>/{actions, obs/..., rewards, dones}``) so a single
reader serves our files and LIBERO's. ``docs/data_format.md`` is the human-readable spec.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT_NAME = "vla_lab-demo"
FORMAT_VERSION = 1

DATA_GROUP = "data"
DEMO_PREFIX = "demo_"
OBS_GROUP = "obs"
ACTIONS = "actions"
REWARDS = "rewards"
DONES = "dones"
RGB_SUFFIX = "_rgb"

#: Framework gripper convention for actions: a value in [0, 1], 1 = open, 0 = closed (OpenVLA's
#: convention, so fine-tuned OpenVLA checkpoints keep the meaning they were pretrained with).
GRIPPER_CONVENTION = "0_closed_1_open"


def demo_key(index: int) -> str:
    return f"{DEMO_PREFIX}{index}"


def demo_sort_key(name: str) -> int:
    """``demo_10`` sorts after ``demo_9`` (lexicographic order would not)."""
    try:
        return int(name[len(DEMO_PREFIX) :])
    except ValueError:
        return 1 << 62


def camera_dataset(camera: str) -> str:
    return f"{camera}{RGB_SUFFIX}"


@dataclass
class ActionSpace:
    """Describes what each action dimension means; stored as JSON in ``/data`` attr ``action_space``.

    ``mirror_negate`` lists the dims whose sign flips when the camera image is mirrored left-right; it
    is ``None`` when the camera/action frames do not allow a flip augmentation. Likewise
    ``planar_dims``/``yaw_dim`` enable image-rotation augmentation only for cameras whose image plane is
    parallel to the table (a rotation of the image is then a rotation of the world about the z axis).
    """

    names: list[str] = field(default_factory=lambda: ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"])
    frame: str = "base"
    kind: str = "delta_ee"
    gripper_dims: list[int] = field(default_factory=lambda: [6])
    gripper_convention: str = GRIPPER_CONVENTION
    units: list[str] | None = None
    mirror_negate: list[int] | None = None
    planar_dims: list[int] | None = None
    yaw_dim: int | None = None

    @property
    def dim(self) -> int:
        return len(self.names)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> ActionSpace:
        raw: dict[str, Any] = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"action_space has unknown fields {sorted(unknown)}")
        return cls(**raw)


#: OpenVLA/LIBERO 7-D delta end-effector space.
DEFAULT_ACTION_SPACE = ActionSpace()
