"""The one normalizer used by training (DataModule) and evaluation (policy processors) alike.

Modes:
- ``bounds_q99`` (OpenVLA): x' = clip(2 (x - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)
- ``bounds``: the same with min/max
- ``mean_std``: (x - mean) / (std + 1e-8)
- ``identity``
Masked-out dims (the gripper, by default) pass through unchanged; dims whose bounds coincide map
to 0 and back to that constant, so the inverse is exact inside the bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vla_lab.config.schemas import NORMALIZATION_MODES
from vla_lab.data.stats import ArrayStats

MODES = NORMALIZATION_MODES
_EPS = 1e-8


class _Affine:
    """x' = (x - shift) * scale on masked dims, optional clip to [-1, 1]."""

    def __init__(self, stats: ArrayStats, mode: str, mask: Sequence[bool] | None):
        dim = stats.dim
        mask = np.ones(dim, bool) if mask is None else np.asarray(mask, bool)
        if mask.shape != (dim,):
            raise ValueError(f"normalization mask has {mask.shape[0]} entries, stats have {dim} dims")
        if mode in ("bounds_q99", "bounds"):
            lo, hi = (
                (stats.array("q01"), stats.array("q99"))
                if mode == "bounds_q99"
                else (stats.array("min"), stats.array("max"))
            )
            flat = hi == lo
            scale = np.where(flat, 0.0, 2.0 / (hi - lo + _EPS))
            shift = lo + np.where(flat, 0.0, (hi - lo + _EPS) / 2.0)
            self.clip = True
        elif mode == "mean_std":
            scale, shift, self.clip = 1.0 / (stats.array("std") + _EPS), stats.array("mean"), False
        else:
            scale, shift, self.clip = np.ones(dim), np.zeros(dim), False
        self.scale = np.where(mask, scale, 1.0).astype(np.float32)
        self.shift = np.where(mask, shift, 0.0).astype(np.float32)
        # Dims with zero range decode to their constant; elsewhere the inverse divides by scale.
        self.inv_scale = np.where(
            self.scale == 0, 0.0, 1.0 / np.where(self.scale == 0, 1.0, self.scale)
        ).astype(np.float32)
        self.mask = mask

    def forward(self, x):
        shift, scale, mask = _like(x, self.shift), _like(x, self.scale), _like(x, self.mask)
        y = (x - shift) * scale
        if self.clip:
            y = y.clamp(-1, 1) if isinstance(x, torch.Tensor) else np.clip(y, -1, 1)
        return _where(mask, y, x)

    def inverse(self, y):
        return y * _like(y, self.inv_scale) + _like(y, self.shift)


def _like(x, arr: np.ndarray):
    if isinstance(x, torch.Tensor):
        dtype = torch.bool if arr.dtype == bool else x.dtype
        return torch.as_tensor(arr, dtype=dtype, device=x.device)
    return arr if arr.dtype == bool else arr.astype(np.asarray(x).dtype, copy=False)


def _where(mask, a, b):
    return torch.where(mask, a, b) if isinstance(a, torch.Tensor) else np.where(mask, a, b)


class Normalizer:
    def __init__(
        self,
        action: ArrayStats,
        state: ArrayStats | None = None,
        mode: str = "bounds_q99",
        action_mask: Sequence[bool] | None = None,
        state_mask: Sequence[bool] | None = None,
        state_mode: str | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"normalization mode {mode!r} is not one of {MODES}")
        self.action_stats, self.state_stats = action, state
        self.mode, self.state_mode = mode, state_mode or mode
        self.action_mask = list(action_mask) if action_mask is not None else None
        self.state_mask = list(state_mask) if state_mask is not None else None
        self._action = _Affine(action, mode, action_mask)
        self._state = _Affine(state, self.state_mode, state_mask) if state is not None else None

    @classmethod
    def from_dataset_stats(
        cls,
        stats,
        mode: str = "bounds_q99",
        gripper_dims: Sequence[int] = (6,),
        state_mode: str | None = None,
    ) -> Normalizer:
        mask = [i not in set(gripper_dims) for i in range(stats.action.dim)]
        return cls(stats.action, stats.proprio, mode, mask, None, state_mode)

    def normalize_action(self, x):
        return self._action.forward(x)

    def unnormalize_action(self, x):
        return self._action.inverse(x)

    def normalize_state(self, x):
        if self._state is None:
            raise ValueError("this normalizer has no proprio statistics")
        return self._state.forward(x)

    def unnormalize_state(self, x):
        if self._state is None:
            raise ValueError("this normalizer has no proprio statistics")
        return self._state.inverse(x)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "mode": self.mode,
            "state_mode": self.state_mode,
            "action": asdict(self.action_stats),
            "action_mask": self.action_mask,
            "state": asdict(self.state_stats) if self.state_stats else None,
            "state_mask": self.state_mask,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        state = ArrayStats(**d["state"]) if d.get("state") else None
        return cls(
            ArrayStats(**d["action"]),
            state,
            d["mode"],
            d.get("action_mask"),
            d.get("state_mask"),
            d.get("state_mode"),
        )
