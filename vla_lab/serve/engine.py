"""The served policy: a checkpoint loaded once as a :class:`~vla_lab.rollout.runtime.PolicyRuntime`,
requests prepared exactly as closed-loop evaluation prepares observations, and one batched forward
pass for several requests. Actions come back in the simulator's units, limited as evaluation limits
them.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from vla_lab.serve.protocol import Limits, Request


class PolicyEngine:
    def __init__(self, checkpoint: str | Path, *, unnorm_key: str | None = None, device: str = "cpu"):
        from vla_lab.rollout.runtime import PolicyRuntime

        self.checkpoint = str(checkpoint)
        # The runtime owns the checkpoint's image transform and state normalization: sharing it
        # with evaluation keeps served predictions identical to what evaluation would execute.
        self.runtime = PolicyRuntime.from_checkpoint(checkpoint, unnorm_key=unnorm_key, device=device)
        self.policy, self.spec = self.runtime.policy, self.runtime.spec
        self._lock = threading.Lock()  # one forward pass at a time, whoever calls
        state = self.runtime.normalizer.state_stats
        proprio_keys = self.runtime.proprio_keys
        self.limits_base = {
            "cameras": tuple(self.runtime.cameras),
            "proprio_keys": tuple(proprio_keys),
            "state_dim": len(state.mean) if (state is not None and proprio_keys) else 0,
        }

    def limits(self, max_image_side: int, max_instruction_chars: int) -> Limits:
        return Limits(
            **self.limits_base, max_image_side=max_image_side, max_instruction_chars=max_instruction_chars
        )

    def info(self) -> dict[str, Any]:
        cfg = self.policy.config
        return {
            "checkpoint": self.checkpoint,
            "model_family": getattr(self.policy, "name", type(self.policy).__name__),
            "action_dim": int(cfg.action_dim),
            "chunk_size": int(cfg.chunk_size),
            "action_head": getattr(cfg, "action_head", None),
            "cameras": list(self.runtime.cameras),
            "image_size": int(self.spec["image_size"]),
            "eval_crop_area": float(self.spec["eval_crop_area"]),
            "proprio_keys": list(self.runtime.proprio_keys),
            "proprio_dim": self.limits_base["state_dim"],
            "unnorm_key": self.spec["unnorm_key"],
            # delta_ee: delta commands; target_ee: target poses (vla_lab.sim.control.target_to_delta)
            "action_kind": self.runtime.action_kind,
        }

    def prepare(self, req: Request) -> dict[str, Any]:
        """One request as a batch of one, built by the runtime evaluation uses."""
        # binary requests are views of the received bytes (read-only): torch wants its own copy
        obs: dict[str, np.ndarray] = {
            cam: im if im.flags.writeable else im.copy() for cam, im in req.images.items()
        }
        if self.runtime.proprio_keys:
            # The runtime concatenates the proprio keys in order; the request already carries that
            # concatenation, so the first key holds it all and the others are empty.
            first, *rest = self.runtime.proprio_keys
            obs[first] = req.proprio
            obs.update({k: np.zeros(0, np.float32) for k in rest})
        return self.runtime.batch(obs, req.instruction)

    def predict(self, batches: list[dict[str, Any]]) -> np.ndarray:
        """(B, K, A) actions in the simulator's units for B prepared requests."""
        with self._lock:
            return self.runtime.predict_chunks(batches)
