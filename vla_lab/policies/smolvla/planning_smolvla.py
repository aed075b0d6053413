"""SmolVLA on the meta device for ``vla-model``: counts and memory estimate, no weights."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from vla_lab.policies import lora
from vla_lab.policies.memory import Stack, plan
from vla_lab.policies.smolvla.configuration_smolvla import SmolVLAConfig
from vla_lab.policies.smolvla.modeling_smolvla import SmolVLAPolicy


def plan_smolvla(config: SmolVLAConfig, spec: Any, planner: Any) -> dict[str, Any]:
    with torch.device("meta"):
        policy = SmolVLAPolicy(config, processor=None)
        meta_spec = dataclasses.replace(
            spec,
            method="lora" if spec.method == "qlora" else spec.method,
            quantization=None,
            gradient_checkpointing=False,
        )
        if meta_spec.method == "none":
            policy.apply_default_freezing()
        else:
            policy.model.requires_grad_(False)
            lora.apply_peft(policy, meta_spec)
    trained = set(spec.adapt) | set(spec.train_full) if spec.method != "none" else set()
    vlm_trained = (
        spec.method == "none"
        and not config.train_expert_only
        or bool(trained & {"vision", "connector", "llm"})
    )
    v, t = config.vision, config.text
    image_tokens = (v.image_size // v.patch_size) ** 2
    prefix = len(config.cameras) * image_tokens // config.scale_factor**2 + config.tokenizer_max_length + 1
    seq = planner.seq_len or prefix
    stacks = [
        Stack(
            "vision",
            v.num_hidden_layers,
            v.hidden_size,
            v.num_attention_heads,
            v.hidden_size,
            image_tokens * len(config.cameras),
            vlm_trained and not config.freeze_vision_encoder,
        ),
        Stack(
            "llm",
            config.num_vlm_layers,
            t.hidden_size,
            t.num_attention_heads,
            t.num_key_value_heads * t.head_dim,
            seq,
            vlm_trained,
        ),
        Stack(
            "expert",
            len(policy.model.vlm_with_expert.lm_expert.layers),
            config.expert_hidden,
            t.num_attention_heads,
            t.num_key_value_heads * t.head_dim,
            config.chunk_size,
            True,
        ),
    ]
    return plan(
        policy,
        stacks,
        [stacks[1]],
        ["vlm_with_expert.vlm.model.text_model"],
        planner,
        {"family": "smolvla", "peft_method": spec.method, "flow_steps": config.num_steps},
    )
