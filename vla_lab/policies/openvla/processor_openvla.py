"""OpenVLA pre/post-processing as explicit ordered steps, saved next to the weights.

Steps: ``check_image`` (camera, size) → ``normalize_image`` (one mean/std per backbone, channels
stacked to (B, 3·n, H, W)) → ``prompt`` (template, lowercased instruction, ``<s>`` first, the lone
space token last, truncation) → ``action_bins`` (or ``fast_tokens`` for the FAST head: its fitted
tokenizer lives in ``fast_tokenizer/`` beside the step list) → ``unnormalize`` (``norm_stats[unnorm_key]``).
Evaluation rebuilds exactly these steps from ``processor_config.json``; nothing is recomputed or refitted.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from vla_lab.policies.fast_tokenizer import FastActionTokenizer
from vla_lab.policies.openvla.configuration_openvla import OpenVLAConfig
from vla_lab.policies.processor import PROCESSOR_FILE, StepProcessor

#: Sub-directory of a checkpoint holding the FAST tokenizer (tokenizer.json + fast_config.json).
FAST_DIR = "fast_tokenizer"
ACTION_STEPS = ("action_bins", "fast_tokens")


class OpenVLAProcessor(StepProcessor):
    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        steps: list[dict[str, Any]],
        norm_stats: dict[str, Any] | None = None,
        fast_tokenizer: FastActionTokenizer | None = None,
    ) -> None:
        super().__init__(tokenizer, steps, norm_stats)
        #: the FAST head's tokenizer; None for the other heads (and until a pretrained base gets one)
        self.fast_tokenizer = fast_tokenizer
        by_name = {s["step"]: s for s in steps}
        self._image = by_name["check_image"]
        self._norm_image = by_name["normalize_image"]
        self._prompt = by_name["prompt"]
        self._mean = torch.tensor(self._norm_image["mean"], dtype=torch.float32).reshape(1, -1, 1, 1)
        self._std = torch.tensor(self._norm_image["std"], dtype=torch.float32).reshape(1, -1, 1, 1)
        # (x - mean) / std as one multiply-add over (B, backbones, 3, H, W): the broadcast
        # subtract-then-divide over repeated channels cost ~7x more, a tenth of a tiny model's step
        per_backbone = (1, -1, 3, 1, 1)
        self._scale = (1 / self._std).reshape(per_backbone)
        self._shift = (-self._mean / self._std).reshape(per_backbone)

    @classmethod
    def from_config(
        cls,
        config: OpenVLAConfig,
        tokenizer: PreTrainedTokenizerBase,
        norm_stats: dict[str, Any] | None = None,
        fast_tokenizer: FastActionTokenizer | None = None,
    ) -> OpenVLAProcessor:
        # Upstream's action ids reuse the last 256 text ids; only ids past the embedding table are fatal.
        if len(tokenizer) > config.text.vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} entries but the language model embeds only "
                f"{config.text.vocab_size}"
            )
        steps = [
            {"step": "check_image", "cameras": list(config.cameras), "size": config.image_size},
            {
                "step": "normalize_image",
                "mean": [m for v in config.vision for m in v.mean],
                "std": [s for v in config.vision for s in v.std],
                "backbones": [v.timm_id for v in config.vision],
            },
            {
                "step": "prompt",
                "template": config.prompt_template,
                "lowercase": True,
                "bos_token_id": config.text.bos_token_id,
                "space_token_id": config.space_token_id,
                "max_prompt_tokens": config.max_prompt_tokens,
            },
            action_step(config),
            {"step": "unnormalize", "mode": "norm_stats[unnorm_key]"},
        ]
        processor = cls(tokenizer, steps, norm_stats)
        if fast_tokenizer is not None:
            processor.attach_fast_tokenizer(fast_tokenizer, config)
        return processor

    # ---- the FAST tokenizer ----
    def fast_step(self) -> dict[str, Any] | None:
        return next((s for s in self.steps if s["step"] == "fast_tokens"), None)

    def attach_fast_tokenizer(self, fast: FastActionTokenizer, config: OpenVLAConfig) -> None:
        """Uses ``fast`` for actions: the action step becomes ``fast_tokens`` (a pretrained
        ``tokens``-head processor switches here when fine-tuned with the FAST head)."""
        step = action_step(config)
        check_fast_matches(fast, step, "the fitted FAST tokenizer")
        self.steps = [step if s["step"] in ACTION_STEPS else s for s in self.steps]
        self.fast_tokenizer = fast

    def save_pretrained(self, directory: str | Path) -> None:
        super().save_pretrained(directory)
        step = self.fast_step()
        if step is not None:
            if self.fast_tokenizer is None:
                raise ValueError("processor has a fast_tokens step but no FAST tokenizer to save")
            self.fast_tokenizer.save(Path(directory) / step["path"])

    @classmethod
    def from_pretrained(cls, directory: str | Path, config, norm_stats: dict[str, Any] | None = None):
        processor = super().from_pretrained(directory, config, norm_stats)
        step = processor.fast_step()
        # Steps derived from the config (official layouts ship none) promise no saved tokenizer.
        if step is not None and (Path(directory) / PROCESSOR_FILE).exists():
            fast = FastActionTokenizer.load(Path(directory) / step["path"])
            check_fast_matches(fast, step, f"{Path(directory) / step['path']}")
            processor.fast_tokenizer = fast
        return processor

    # ---- pre-processing ----
    def pixel_values(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], or one such tensor per camera → (B, 3·n_backbones·n_cameras, H, W):
        each image normalized per backbone, the cameras' channels stacked in ``check_image`` order."""
        if isinstance(images, torch.Tensor):
            images = [images]
        scale, shift = self._scale.to(images[0].device), self._shift.to(images[0].device)
        normalized = [torch.addcmul(shift, image.float()[:, None], scale).flatten(1, 2) for image in images]
        return normalized[0] if len(normalized) == 1 else torch.cat(normalized, dim=1)

    def prompt_ids(self, tasks: list[str]) -> list[list[int]]:
        return [self._one_prompt(t) for t in tasks]

    def _one_prompt(self, task: str) -> list[int]:
        p = self._prompt
        instruction = task.strip().lower() if p["lowercase"] else task.strip()
        ids = self._encode(instruction)
        limit = p["max_prompt_tokens"]
        if len(ids) > limit:
            warnings.warn(
                f"instruction {task[:60]!r}… gives a {len(ids)}-token prompt, more than "
                f"max_prompt_tokens={limit}: the instruction is truncated",
                stacklevel=3,
            )
            words = instruction.split()
            while len(ids) > limit and words:
                words = words[:-1]
                ids = self._encode(" ".join(words))
            if len(ids) > limit:
                raise ValueError(
                    f"max_prompt_tokens={limit} is shorter than the prompt template alone ({len(ids)} tokens)"
                )
        return ids

    def _encode(self, instruction: str) -> list[int]:
        p = self._prompt
        text = p["template"].format(instruction=instruction)
        ids = [p["bos_token_id"], *self.tokenizer.encode(text, add_special_tokens=False)]
        # Training saw the lone space token after "Out:"; add it unless the tokenizer already did.
        if ids[-1] != p["space_token_id"]:
            ids.append(p["space_token_id"])
        return ids

    # ---- post-processing ----


def action_step(config: OpenVLAConfig) -> dict[str, Any]:
    """How actions become ids: OpenVLA's bins, or the FAST tokenizer saved in ``FAST_DIR``."""
    if config.action_head == "fast":
        return {
            "step": "fast_tokens",
            "path": FAST_DIR,
            "vocab_size": config.fast_vocab_size,
            "scale": config.fast_scale,
            "text_vocab_size": config.vocab_size,
            "id_rule": "llm_id = text_vocab_size - 1 - fast_id",
            "chunk_size": config.chunk_size,
            "action_dim": config.action_dim,
            "head": config.action_head,
        }
    return {
        "step": "action_bins",
        "n_bins": config.n_action_bins,
        "vocab_size": config.vocab_size,
        "chunk_size": config.chunk_size,
        "action_dim": config.action_dim,
        "head": config.action_head,
    }


def check_fast_matches(fast: FastActionTokenizer, step: dict[str, Any], where: str) -> None:
    """A FAST tokenizer fitted for another chunk, scale or vocabulary would decode garbage: refuse it."""
    spec = fast.spec
    pairs = {
        "chunk_size": (spec.chunk_size, step["chunk_size"]),
        "action_dim": (spec.action_dim, step["action_dim"]),
        "fast_scale": (spec.scale, float(step["scale"])),
        "fast_vocab_size": (spec.vocab_size, step["vocab_size"]),
    }
    wrong = {k: v for k, v in pairs.items() if v[0] != v[1]}
    if wrong:
        detail = ", ".join(f"model.{k}={b} but the tokenizer has {a}" for k, (a, b) in wrong.items())
        raise ValueError(f"{where} does not match the model config: {detail}")
