"""``data_processor.json``: the data side of a training checkpoint, written next to the policy.

It holds the DataModule's ``processor_config()`` (image size and evaluation crop, cameras, the size
they were rendered at, proprio keys, the action space, the statistics key) so that whoever runs the
checkpoint prepares observations exactly as training did. Training writes it
(:func:`write_data_processor`); :class:`vla_lab.rollout.runtime.PolicyRuntime` reads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vla_lab.fileio import atomic_write_text
from vla_lab.sim.control import DELTA

#: file in a checkpoint directory holding the DataModule's processor config
DATA_PROCESSOR = "data_processor.json"


class CheckpointDirError(FileNotFoundError, ValueError):
    """A directory that is not a training checkpoint. Both a missing file and a bad value, so
    callers catching either keep working."""


def processor_spec(data_processor: dict[str, Any], unnorm_key: str | None = None) -> dict[str, Any]:
    """The part of a DataModule's ``processor_config()`` a rollout must reproduce. The statistics
    themselves travel inside the policy (``norm_stats``); ``unnorm_key`` says which of them it was
    trained with, so a policy fine-tuned from another (carrying both) is still unambiguous."""
    spec = {k: data_processor[k] for k in ("cameras", "image_size", "eval_crop_area", "proprio_keys")}
    # checkpoints from before the recorded camera size was saved trained on 224 px renders
    spec["camera_size"] = int(data_processor.get("camera_size", 224))
    spec["unnorm_key"] = unnorm_key if unnorm_key is not None else data_processor.get("unnorm_key")
    # what the policy's actions mean: delta commands, or target poses turned into them when executed
    raw_space = data_processor.get("action_space")
    spec["action_kind"] = json.loads(raw_space).get("kind", DELTA) if raw_space else DELTA
    return spec


def write_data_processor(directory: str | Path, processor_config: dict[str, Any]) -> Path:
    """Write ``processor_config`` as the checkpoint directory's ``data_processor.json``."""
    path = Path(directory) / DATA_PROCESSOR
    atomic_write_text(path, json.dumps(processor_config, indent=2, default=_jsonable))
    return path


def read_processor_spec(checkpoint: str | Path, *, field: str = "checkpoint") -> dict[str, Any]:
    """The processor spec saved with a training checkpoint; errors name ``field``."""
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


def _jsonable(obj: Any) -> Any:
    # numpy scalars and arrays from the DataModule's statistics
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
