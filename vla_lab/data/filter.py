"""Quality filter: drop demos that are too short, too long, unsuccessful, or in which nothing moved."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vla_lab.data.reader import DemoSource, EpisodeRef

#: Proprio keys whose first three dims are the end-effector position, in order of preference.
POSITION_KEYS = ("ee_pos", "ee_states", "ee_pos_xyz")


@dataclass
class FilterReport:
    kept: list[EpisodeRef] = field(default_factory=list)
    dropped: list[tuple[EpisodeRef, str]] = field(default_factory=list)

    @property
    def reasons(self) -> Counter:
        return Counter(reason for _, reason in self.dropped)

    def summary(self) -> str:
        total = len(self.kept) + len(self.dropped)
        text = f"kept {len(self.kept)}/{total} demos"
        if self.dropped:
            text += " (dropped: " + ", ".join(f"{n} {r}" for r, n in sorted(self.reasons.items())) + ")"
        return text


def motion_std(source: DemoSource, f, ep: EpisodeRef) -> float:
    """How much the end effector moved: the largest per-axis std of its position over the episode.

    Falls back to the std of the non-gripper action dims when no position is recorded.
    """
    obs = f["data"][ep.demo].get("obs", {})
    for key in POSITION_KEYS:
        if key in obs:
            pos = np.asarray(obs[key], dtype=np.float64).reshape(ep.length, -1)[:, :3]
            return float(pos.std(0).max())
    actions = source.read_actions(f, ep.demo)
    arm = [d for d in range(actions.shape[1]) if d not in set(source.action_space.gripper_dims)]
    return float(actions[:, arm].std(0).max())


def filter_episodes(
    sources: dict[str, DemoSource],
    episodes: Sequence[EpisodeRef],
    *,
    min_length: int = 1,
    max_length: int | None = None,
    require_success: bool = True,
    min_motion_std: float = 0.0,
) -> FilterReport:
    report = FilterReport()
    handles: dict[str, object] = {}
    try:
        for ep in episodes:
            reason = None
            if ep.length < min_length:
                reason = f"shorter than {min_length} steps"
            elif max_length is not None and ep.length > max_length:
                reason = f"longer than {max_length} steps"
            elif require_success and not ep.success:
                reason = "not successful"
            elif min_motion_std > 0:
                src = sources[ep.file]
                f = handles.get(ep.file) or handles.setdefault(ep.file, src.open())
                if motion_std(src, f, ep) < min_motion_std:
                    reason = f"barely moved (position std < {min_motion_std:g})"
            if reason:
                report.dropped.append((ep, reason))
            else:
                report.kept.append(ep)
    finally:
        for f in handles.values():
            f.close()
    return report
