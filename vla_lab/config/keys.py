"""Batch and observation keys: the one place every layer takes them from.

A training batch (and an observation handed to a policy) is a flat dict. Shapes use B = batch,
K = action chunk length, A = action dims, P = proprio dims, H/W = image size.
"""

#: Per-camera image, ``float32 (B, 3, H, W)`` in [0, 1]; e.g. ``observation.images.agentview``.
IMAGE_PREFIX = "observation.images."
#: Concatenated proprioception, ``float32 (B, P)``, normalized like the actions.
STATE = "observation.state"
#: Action chunk, ``float32 (B, K, A)``, normalized (see ``vla_lab.data.normalize``).
ACTION = "action"
#: ``bool (B, K)``: True where the chunk ran past the episode end and the action is padding.
ACTION_IS_PAD = "action_is_pad"
#: Natural-language instruction, ``list[str]`` of length B.
TASK = "task"
#: ``int64 (B,)`` index of the episode within the DataModule's episode table.
EPISODE_INDEX = "episode_index"
#: ``int64 (B,)`` index of the frame within its episode.
FRAME_INDEX = "frame_index"
#: ``int64 (B,)`` index of the source (file or dataset) in a mixture.
SOURCE_INDEX = "source_index"
#: Privileged training targets (``data.aux_keys``), ``float32 (B, D)`` raw: ``aux.<obs key>``. Never a
#: policy input; only auxiliary losses read them.
AUX_PREFIX = "aux."


def image_key(camera: str) -> str:
    return f"{IMAGE_PREFIX}{camera}"


def aux_key(name: str) -> str:
    return f"{AUX_PREFIX}{name}"
