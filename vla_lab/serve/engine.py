"""The served policy: a checkpoint loaded once, requests prepared exactly as closed-loop evaluation
prepares observations (:class:`~vla_lab.eval.actor.PolicyActor`), and one batched forward pass for
several requests. Actions come back in the simulator's units, post-processed like ``PolicyActor.act``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_lab.config import keys
from vla_lab.serve.protocol import Limits, Request
from vla_lab.sim.control import DELTA


class PolicyEngine:
    def __init__(self, checkpoint: str | Path, *, unnorm_key: str | None = None, device: str = "cpu"):
        from vla_lab.eval.actor import PolicyActor
        from vla_lab.eval.evaluate import policy_normalizer
        from vla_lab.eval.standalone import load_checkpoint

        self.checkpoint = str(checkpoint)
        policy, spec = load_checkpoint(checkpoint)
        policy.to(device)
        key = unnorm_key if unnorm_key is not None else spec.get("unnorm_key")
        self.normalizer = policy_normalizer(policy, key)
        self.spec = {**spec, "unnorm_key": key}
        # The actor owns the checkpoint's image transform and state normalization: reusing it keeps
        # served predictions identical to what evaluation would execute.
        self.actor = PolicyActor(policy, self.spec, self.normalizer, device=device)
        self.policy = policy
        self._lock = threading.Lock()  # one forward pass at a time, whoever calls
        state = self.normalizer.state_stats
        self.limits_base = {
            "cameras": tuple(self.actor.cameras),
            "proprio_keys": tuple(self.actor.proprio_keys),
            "state_dim": len(state.mean) if (state is not None and self.actor.proprio_keys) else 0,
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
            "cameras": list(self.actor.cameras),
            "image_size": int(self.spec["image_size"]),
            "eval_crop_area": float(self.spec["eval_crop_area"]),
            "proprio_keys": list(self.actor.proprio_keys),
            "proprio_dim": self.limits_base["state_dim"],
            "unnorm_key": self.spec["unnorm_key"],
            # delta_ee: delta commands; target_ee: target poses (vla_lab.sim.control.target_to_delta)
            "action_kind": self.spec.get("action_kind", DELTA),
        }

    def prepare(self, req: Request) -> dict[str, Any]:
        """One request as a batch of one, built by the evaluation actor itself."""
        # binary requests are views of the received bytes (read-only): torch wants its own copy
        obs: dict[str, np.ndarray] = {
            cam: im if im.flags.writeable else im.copy() for cam, im in req.images.items()
        }
        if self.actor.proprio_keys:
            # The actor concatenates the proprio keys in order; the request already carries that
            # concatenation, so the first key holds it all and the others are empty.
            first, *rest = self.actor.proprio_keys
            obs[first] = req.proprio
            obs.update({k: np.zeros(0, np.float32) for k in rest})
        return self.actor.batch(obs, req.instruction)

    @torch.no_grad()
    def predict(self, batches: list[dict[str, Any]]) -> np.ndarray:
        """(B, K, A) actions in the simulator's units for B prepared requests."""
        batch: dict[str, Any] = {keys.TASK: [t for b in batches for t in b[keys.TASK]]}
        for key in batches[0]:
            if key != keys.TASK:
                batch[key] = torch.cat([b[key] for b in batches])
        with self._lock:
            self.policy.eval()
            chunk = self.policy.predict_action_chunk(batch)
        raw = self.normalizer.unnormalize_action(chunk.float().cpu().numpy())
        # the same limits PolicyActor.act applies: motion in [-1, 1] (delta commands; target poses
        # are limited when turned into commands), gripper in [0, 1]
        if self.spec.get("action_kind", DELTA) == DELTA:
            raw[..., :6] = np.clip(raw[..., :6], -1.0, 1.0)
        raw[..., 6] = np.clip(raw[..., 6], 0.0, 1.0)
        return raw.astype(np.float32)
