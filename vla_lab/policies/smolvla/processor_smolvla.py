"""SmolVLA pre/post-processing as ordered steps saved with the checkpoint.

``check_image`` (cameras, 3 channels) → ``resize_with_pad`` (to the vision tower's size, aspect kept,
padding at top/left with black) → ``scale`` to [-1, 1] (SigLIP) → ``pad_state`` (to
``max_state_dim``) → ``tokenize`` (instruction + newline, right padding to the longest, at most
``tokenizer_max_length`` tokens) → ``unnormalize`` (``norm_stats[unnorm_key]``).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from vla_lab.config import keys
from vla_lab.policies.processor import StepProcessor
from vla_lab.policies.smolvla.configuration_smolvla import SmolVLAConfig


def resize_with_pad(img: torch.Tensor, size: int, pad_value: float = 0.0) -> torch.Tensor:
    h, w = img.shape[-2:]
    ratio = max(w / size, h / size)
    rh, rw = int(h / ratio), int(w / ratio)
    out = F.interpolate(img, size=(rh, rw), mode="bilinear", align_corners=False)
    return F.pad(out, (size - rw, 0, size - rh, 0), value=pad_value)


class SmolVLAProcessor(StepProcessor):
    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        steps: list[dict[str, Any]],
        norm_stats: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(tokenizer, steps, norm_stats)
        self._by_name = {s["step"]: s for s in steps}
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.unk_token or self.tokenizer.eos_token

    @classmethod
    def from_config(cls, config: SmolVLAConfig, tokenizer, norm_stats=None) -> SmolVLAProcessor:
        steps = [
            {"step": "check_image", "cameras": list(config.cameras)},
            {"step": "resize_with_pad", "size": config.vision.image_size, "pad_value": 0.0},
            {"step": "scale", "from": [0, 1], "to": [-1, 1]},
            {"step": "pad_state", "dim": config.max_state_dim},
            {
                "step": "tokenize",
                "suffix": "\n",
                "padding": "longest",
                "side": "right",
                "max_length": config.tokenizer_max_length,
            },
            {"step": "unnormalize", "mode": "norm_stats[unnorm_key]"},
        ]
        return cls(tokenizer, steps, norm_stats)

    def images(self, observation) -> list[torch.Tensor]:
        out = []
        size = self._by_name["resize_with_pad"]["size"]
        for cam in self._by_name["check_image"]["cameras"]:
            key = keys.image_key(cam)
            if key not in observation:
                present = sorted(k for k in observation if k.startswith(keys.IMAGE_PREFIX))
                raise KeyError(f"missing image {key!r}; the observation has {present}")
            img = observation[key]
            if not torch.is_tensor(img) or img.ndim != 4 or img.shape[1] != 3 or not img.is_floating_point():
                raise ValueError(
                    f"{key} must be float (B, 3, H, W) in [0, 1], got "
                    f"{getattr(img, 'dtype', type(img))} {tuple(getattr(img, 'shape', ()))}"
                )
            if tuple(img.shape[-2:]) != (size, size):
                img = resize_with_pad(img.float(), size, self._by_name["resize_with_pad"]["pad_value"])
            out.append(img * 2.0 - 1.0)
        return out

    def state(self, observation, dim: int) -> torch.Tensor:
        if keys.STATE not in observation:
            raise KeyError(f"SmolVLA needs the proprioceptive state {keys.STATE!r}")
        s = observation[keys.STATE].float()
        if s.ndim != 2 or s.shape[1] > dim:
            raise ValueError(f"{keys.STATE} must be (B, P) with P <= {dim}, got {tuple(s.shape)}")
        return F.pad(s, (0, dim - s.shape[1]))

    def language(self, tasks: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
        step = self._by_name["tokenize"]
        texts = [t if t.endswith("\n") else t + "\n" for t in tasks]
        enc = self.tokenizer(
            texts, padding="longest", padding_side="right", truncation=False, return_tensors="pt"
        )
        ids, mask = enc["input_ids"], enc["attention_mask"].bool()
        if ids.shape[1] > step["max_length"]:
            warnings.warn(
                f"instruction longer than tokenizer_max_length={step['max_length']} tokens: truncated",
                stacklevel=3,
            )
            ids, mask = ids[:, : step["max_length"]], mask[:, : step["max_length"]]
        return ids.to(device), mask.to(device)
