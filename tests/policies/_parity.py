"""Deterministic weights from state-dict keys, shared by the parity tests and the script that made
their reference tensors (so no weights need to be stored): each tensor is drawn from a generator
seeded with the CRC32 of its key. Imports only torch, so the reference environment can use it."""

from __future__ import annotations

import math
import zlib

import torch

ACTION_VOCAB_END = 32000  # action tokens are the 256 ids below this
NON_ACTION_LOGIT_SCALE = 0.05
ACTION_LOGIT_SCALE = 10.0


def value_for(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    x = torch.randn(shape, generator=g, dtype=torch.float32)
    if len(shape) == 1:
        if key.endswith("scale_factor"):  # LayerScale: small, as in DINOv2
            return 0.1 * (1 + 0.1 * x)
        if key.endswith("weight"):  # norm gains
            return 1 + 0.1 * x
        return 0.02 * x  # biases
    if key.endswith("embed_tokens.weight"):
        return x  # unit-scale embeddings: each fed-back token moves the next prediction
    fan_in = math.prod(shape[1:])
    out = x * (1 / math.sqrt(fan_in) if fan_in > 1 else 0.02)
    if key.endswith("lm_head.weight"):
        # Action rows amplified, the rest damped: greedy decoding picks action tokens by clear margins.
        out[ACTION_VOCAB_END - 256 : ACTION_VOCAB_END] *= ACTION_LOGIT_SCALE
        out[: ACTION_VOCAB_END - 256] *= NON_ACTION_LOGIT_SCALE
        out[ACTION_VOCAB_END:] *= NON_ACTION_LOGIT_SCALE
    return out


def fill_(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for key, t in module.state_dict().items():
            if t.is_floating_point():
                t.copy_(value_for(key, tuple(t.shape)))


def image(seed: int = 1234, size: int = 224) -> torch.Tensor:
    """The test image, (1, 3, size, size) in [0, 1]."""
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
