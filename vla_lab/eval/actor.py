"""Wrap a policy into an actor: simulator observation -> policy batch -> action in simulator units.

Everything the wrapping needs comes from the checkpoint, never from the evaluation's own config:
the image transform (size and center-crop area of training), cameras and proprio keys
(``processor_spec``), and the normalization statistics the policy carries (``norm_stats``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_lab.config import keys
from vla_lab.data.normalize import Normalizer
from vla_lab.data.transforms import eval_image_transform
from vla_lab.sim.control import DELTA, TARGET, target_to_delta

#: file in a checkpoint directory holding the DataModule's processor config (transform, cameras, keys)
DATA_PROCESSOR = "data_processor.json"


@dataclass
class ExecutionConfig:
    #: actions executed open-loop from each predicted chunk (null = the whole chunk)
    n_action_steps: int | None = None
    #: re-plan every step and blend overlapping chunks with weights exp(-coeff * i); null = off
    temporal_ensemble_coeff: float | None = None


def processor_spec(data_processor: dict[str, Any], unnorm_key: str | None = None) -> dict[str, Any]:
    """The part of a DataModule's ``processor_config()`` evaluation must reproduce. The statistics
    themselves travel inside the policy (``norm_stats``); ``unnorm_key`` says which of them it was
    trained with, so a policy fine-tuned from another (carrying both) is still unambiguous."""
    spec = {k: data_processor[k] for k in ("cameras", "image_size", "eval_crop_area", "proprio_keys")}
    # checkpoints from before the recorded camera size was saved trained on 224 px renders
    spec["camera_size"] = int(data_processor.get("camera_size", 224))
    spec["unnorm_key"] = unnorm_key if unnorm_key is not None else data_processor.get("unnorm_key")
    # what the policy's actions mean: delta commands, or target poses the actor turns into them
    raw_space = data_processor.get("action_space")
    spec["action_kind"] = json.loads(raw_space).get("kind", DELTA) if raw_space else DELTA
    return spec


class CheckpointDirError(FileNotFoundError, ValueError):
    """A directory that is not a training checkpoint. Both a missing file and a bad value, so
    callers catching either keep working."""


def read_processor_spec(checkpoint: str | Path, *, field: str = "checkpoint") -> dict[str, Any]:
    """The data-side processor spec saved with a training checkpoint; errors name ``field``."""
    directory = Path(checkpoint)
    if not directory.is_dir():
        raise CheckpointDirError(f"{field}={directory}: no such directory")
    spec_file = directory / DATA_PROCESSOR
    if not spec_file.is_file():
        raise CheckpointDirError(
            f"{field}={directory} has no {DATA_PROCESSOR}: not a vla_lab training checkpoint "
            "(use a run's best/, final/ or checkpoints/checkpoint-<step>/)"
        )
    try:
        return processor_spec(json.loads(spec_file.read_text()))
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointDirError(f"{field}={directory}: unreadable {DATA_PROCESSOR} ({e})") from e


class PolicyActor:
    def __init__(
        self,
        policy,
        spec: dict[str, Any],
        normalizer: Normalizer,
        *,
        execution: ExecutionConfig | None = None,
        device: str | torch.device = "cpu",
    ):
        self.policy, self.spec, self.normalizer, self.device = policy, spec, normalizer, torch.device(device)
        self.transform = eval_image_transform(int(spec["image_size"]), float(spec["eval_crop_area"]))
        self.cameras, self.proprio_keys = list(spec["cameras"]), list(spec.get("proprio_keys") or [])
        if execution is not None:
            policy.configure_execution(execution.n_action_steps, execution.temporal_ensemble_coeff)

    def reset(self) -> None:
        self.policy.reset()

    def batch(self, obs: dict[str, np.ndarray], instruction: str) -> dict[str, Any]:
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
    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        was_training = self.policy.training
        self.policy.eval()
        try:
            action = self.policy.select_action(self.batch(obs, str(info["instruction"])))
        finally:
            self.policy.train(was_training)
        raw = self.normalizer.unnormalize_action(action[0].float().cpu().numpy())
        if self.spec.get("action_kind", DELTA) == TARGET:
            # position control: each executed action, queued chunk steps too, is read against the
            # pose the robot is at now
            return target_to_delta(raw, obs["ee_pos"], obs["ee_ori"])
        raw[:6] = np.clip(raw[:6], -1.0, 1.0)
        raw[6] = np.clip(raw[6], 0.0, 1.0)
        return raw.astype(np.float32)
