"""A policy ready to act: simulator observation -> policy batch -> action in the simulator's units.

Everything the wrapping needs comes from the checkpoint, never from the caller's own config: the
image transform (size and center-crop area of training), cameras and proprio keys (its
``data_processor.json``), and the normalization statistics the policy carries (``norm_stats``).
:meth:`PolicyRuntime.from_checkpoint` is the one place a checkpoint directory becomes all of that;
evaluation, collection and the policy server share it, so they prepare observations identically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_lab.config import keys
from vla_lab.data.normalize import Normalizer
from vla_lab.data.transforms import eval_image_transform
from vla_lab.eval.config import ExecutionConfig
from vla_lab.rollout.processor import read_processor_spec
from vla_lab.sim.control import DELTA, TARGET, target_to_delta


def policy_normalizer(policy, unnorm_key: str | None = None) -> Normalizer:
    """The normalizer of the statistics ``unnorm_key`` names among those the policy carries."""
    from vla_lab.policies.normalization import check_unnorm_key, normalizer_from_entry

    stats = policy.processor.norm_stats
    return normalizer_from_entry(stats[check_unnorm_key(stats, unnorm_key)])


class PolicyRuntime:
    """``policy`` with the processor ``spec`` it was trained with (:func:`processor_spec`).

    ``unnorm_key`` overrides the spec's statistics key; ``execution`` (when given) sets how
    ``act`` executes predicted chunks. Build one around a live policy (closed-loop evaluation during
    training) or from a checkpoint directory (:meth:`from_checkpoint`).
    """

    def __init__(
        self,
        policy,
        spec: dict[str, Any],
        *,
        unnorm_key: str | None = None,
        execution: ExecutionConfig | None = None,
        device: str | torch.device = "cpu",
        normalizer: Normalizer | None = None,
        checkpoint: str | None = None,
    ):
        key = unnorm_key if unnorm_key is not None else spec.get("unnorm_key")
        self.policy, self.device, self.execution = policy, torch.device(device), execution
        self.spec = {**spec, "unnorm_key": key}
        self.normalizer = normalizer if normalizer is not None else policy_normalizer(policy, key)
        self.transform = eval_image_transform(int(spec["image_size"]), float(spec["eval_crop_area"]))
        self.cameras, self.proprio_keys = list(spec["cameras"]), list(spec.get("proprio_keys") or [])
        #: the checkpoint directory it was loaded from (resolved); None for a live policy
        self.checkpoint = checkpoint
        if execution is not None:
            self.configure(execution)

    @classmethod
    def from_checkpoint(
        cls,
        directory: str | Path,
        *,
        unnorm_key: str | None = None,
        execution: ExecutionConfig | None = None,
        device: str = "cpu",
        field: str = "checkpoint",
    ) -> PolicyRuntime:
        """Load a training checkpoint (``<run>/best``, ``<run>/final``, ...); errors name ``field``."""
        from vla_lab.policies.factory import load_policy

        spec = read_processor_spec(directory, field=field)
        try:
            policy = load_policy(Path(directory))
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"{field}={directory}: cannot load the policy ({e})") from e
        policy.to(device)
        policy.eval()
        return cls(
            policy,
            spec,
            unnorm_key=unnorm_key,
            execution=execution,
            device=device,
            checkpoint=str(Path(directory).resolve()),
        )

    @property
    def action_kind(self) -> str:
        """``delta_ee`` (delta commands) or ``target_ee`` (target poses, turned into commands)."""
        return self.spec.get("action_kind", DELTA)

    @property
    def camera_size(self) -> int:
        """The resolution the training images were rendered at."""
        return int(self.spec["camera_size"])

    def configure(self, execution: ExecutionConfig) -> None:
        """Execute predicted chunks as ``execution`` says from now on (clears the action queue)."""
        self.execution = execution
        self.policy.configure_execution(execution.n_action_steps, execution.temporal_ensemble_coeff)

    def view(self) -> PolicyRuntime:
        """The same policy (shared weights) with its own action queue, for one of several
        simulators running side by side."""
        return PolicyRuntime(
            self.policy.execution_view(),
            self.spec,
            execution=self.execution,
            device=self.device,
            normalizer=self.normalizer,
            checkpoint=self.checkpoint,
        )

    def reset(self) -> None:
        """Forget queued chunk steps: a new episode starts."""
        self.policy.reset()

    def batch(self, obs: dict[str, np.ndarray], instruction: str) -> dict[str, Any]:
        """A batch of one, prepared as in training (image transform, normalized proprio)."""
        missing = [c for c in self.cameras if c not in obs]
        if missing:
            raise KeyError(
                f"observation lacks camera(s) {missing} the policy was trained on; it has {sorted(obs)}"
            )
        batch: dict[str, Any] = {
            keys.image_key(cam): self.transform(
                torch.from_numpy(np.ascontiguousarray(obs[cam])).permute(2, 0, 1)
            )[None].to(self.device)
            for cam in self.cameras
        }
        if self.proprio_keys:
            state = np.concatenate([np.asarray(obs[k], np.float32).reshape(-1) for k in self.proprio_keys])
            batch[keys.STATE] = torch.from_numpy(self.normalizer.normalize_state(state))[None].to(self.device)
        batch[keys.TASK] = [instruction]
        return batch

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], instruction: str) -> np.ndarray:
        """The next action to execute (one step of the current chunk) as a simulator command."""
        was_training = self.policy.training
        self.policy.eval()
        try:
            action = self.policy.select_action(self.batch(obs, instruction))
        finally:
            self.policy.train(was_training)
        return self._command(action[0], obs)

    def _command(self, action: torch.Tensor, obs: dict[str, np.ndarray]) -> np.ndarray:
        """A normalized (A,) policy action as the simulator command to execute."""
        raw = self.normalizer.unnormalize_action(action.float().cpu().numpy())
        if self.action_kind == TARGET:
            # position control: each executed action, queued chunk steps too, is read against the
            # pose the robot is at now
            return target_to_delta(raw, obs["ee_pos"], obs["ee_ori"])
        raw[:6] = np.clip(raw[:6], -1.0, 1.0)
        raw[6] = np.clip(raw[6], 0.0, 1.0)
        return raw.astype(np.float32)

    @torch.no_grad()
    def act_many(
        self, views: list[PolicyRuntime], observations: list[dict[str, np.ndarray]], instructions: list[str]
    ) -> list[np.ndarray]:
        """:meth:`act` for several episodes at once, each with its own view (:meth:`view`) of this
        policy: the views whose chunk ran out (or that re-plan every step) get their next chunks
        from one batched forward pass; the others take theirs from their queues."""
        needing = [i for i, v in enumerate(views) if v.policy.needs_chunk()]
        chunks: dict[int, torch.Tensor] = {}
        if needing:
            was_training = self.policy.training
            self.policy.eval()
            try:
                batch = self._stack([self.batch(observations[i], instructions[i]) for i in needing])
                predicted = self.policy.predict_action_chunk(batch)
            finally:
                self.policy.train(was_training)
            chunks = {i: predicted[j : j + 1] for j, i in enumerate(needing)}
        return [
            self._command(v.policy.next_action(chunks.get(i))[0], observations[i])
            for i, v in enumerate(views)
        ]

    @staticmethod
    def _stack(batches: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {keys.TASK: [t for b in batches for t in b[keys.TASK]]}
        for key in batches[0]:
            if key != keys.TASK:
                batch[key] = torch.cat([b[key] for b in batches])
        return batch

    @torch.no_grad()
    def predict_chunks(self, batches: list[dict[str, Any]]) -> np.ndarray:
        """(B, K, A) actions for B prepared batches (:meth:`batch`) in one forward pass, un-normalized
        and limited as :meth:`act` limits them: motion in [-1, 1] for delta commands (target poses
        are limited when turned into commands), gripper in [0, 1]."""
        self.policy.eval()
        chunk = self.policy.predict_action_chunk(self._stack(batches))
        raw = self.normalizer.unnormalize_action(chunk.float().cpu().numpy())
        if self.action_kind == DELTA:
            raw[..., :6] = np.clip(raw[..., :6], -1.0, 1.0)
        raw[..., 6] = np.clip(raw[..., 6], 0.0, 1.0)
        return raw.astype(np.float32)
