"""OpenVLA on the meta device for ``vla-model``: counts and memory estimate, no weights."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from vla_lab.policies import lora
from vla_lab.policies.memory import Stack, plan
from vla_lab.policies.openvla.configuration_openvla import OpenVLAConfig
from vla_lab.policies.openvla.modeling_openvla import OpenVLAPolicy

TYPICAL_PROMPT_TOKENS = 32
ORDER = ["vision", "projector", "action_queries", "llm", "action_head"]


def plan_openvla(config: OpenVLAConfig, spec: Any, planner: Any) -> dict[str, Any]:
    with torch.device("meta"):
        policy = OpenVLAPolicy(config, processor=None, init_weights=False)
        # Quantization needs real weights; LoRA on the unquantized layers has the same parameter count.
        meta_spec = dataclasses.replace(
            spec,
            method="lora" if spec.method == "qlora" else spec.method,
            quantization=None,
            gradient_checkpointing=False,
        )
        lora.apply_peft(policy, meta_spec)
    trained = _trained_submodels(spec, policy)
    first = min((ORDER.index(t) for t in trained), default=len(ORDER))
    vit_stacks = []
    n_images = len(config.cameras)
    for i, (vit_spec, vit) in enumerate(zip(config.vision, _vits(policy), strict=True)):
        n_patches = (vit_spec.img_size // vit.patch_embed.patch_size[0]) ** 2
        # every camera's image passes the towers (counted as one longer sequence: an upper bound)
        vit_stacks.append(
            Stack(
                f"vision.{i}",
                len(vit.blocks) - 1,
                vit.embed_dim,
                vit.blocks[0].attn.num_heads,
                vit.embed_dim,
                n_images * (n_patches + vit.num_prefix_tokens),
                first <= 0,
            )
        )
    t = config.text
    vit = _vits(policy)[0]
    n_patches = n_images * (config.image_size // vit.patch_embed.patch_size[0]) ** 2
    # K·A action ids and </s>; for the fast head an upper bound (a FAST token spells >= 1 coefficient).
    seq = planner.seq_len or 1 + n_patches + TYPICAL_PROMPT_TOKENS + config.chunk_size * config.action_dim + 1
    llm = Stack(
        "llm",
        t.num_hidden_layers,
        t.hidden_size,
        t.num_attention_heads,
        t.hidden_size // t.num_attention_heads * t.num_key_value_heads,
        seq,
        first <= 3,
    )
    return plan(
        policy,
        [*vit_stacks, llm],
        [llm],
        ["language_model"],
        planner,
        {"family": "openvla", "action_head": config.action_head, "peft_method": spec.method},
    )


def _trained_submodels(spec: Any, policy: OpenVLAPolicy) -> list[str]:
    if spec.method == "none":
        return list(ORDER)
    return [*spec.adapt, *spec.train_full, *policy.fresh_submodels()]


def _vits(policy: OpenVLAPolicy) -> list[Any]:
    vb = policy.model.vision_backbone
    return [vb.featurizer, vb.fused_featurizer] if vb.use_fused_vision_backbone else [vb.featurizer]
