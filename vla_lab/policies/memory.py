"""Meta-device model planner: parameter counts and estimated memory per precision.

Nothing is allocated: the policy is built on the meta device (adapters included, through peft) and
memory follows from counts and shapes. Estimates, with the assumptions printed next to them:
- frozen base weights: bf16 = 2 B/param; int8 = 1 B + one fp32 scale per row; nf4 = 0.5 B + one
  fp32 absmax per 64-value block. The precision applies to the linear layers of the language
  model(s) (what QLoRA / 8-bit loading quantize); everything else stays bf16.
- trainable parameters: fp32 weight + fp32 gradient + two fp32 AdamW moments = 16 B/param.
- activations per transformer layer and sequence (bf16, Korthikanti et al. 2022):
  ``s·h·(34 + 5·a·s/h)`` bytes without checkpointing; with checkpointing each layer keeps its
  input (``2·s·h`` bytes) and one layer is recomputed at a time. Only stacks at or after the first
  trainable sub-model store activations.
- inference: weights + KV cache (bf16) + one layer's transient activations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

GIB = 2**30
QUANT_BYTES = {
    "bf16": lambda n, rows: 2 * n,
    "int8": lambda n, rows: n + 4 * rows,
    "nf4": lambda n, rows: 0.5 * n + 4 * n / 64,
}


@dataclass
class Stack:
    """One transformer stack as the memory model sees it."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_dim: int
    tokens: int
    stores_activations: bool


def linear_split(model: nn.Module, prefixes: list[str]) -> tuple[int, int, int]:
    """(params in linear weights under ``prefixes``, their rows, all other params)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    lin = rows = 0
    seen: set[int] = set()
    for name, m in base.named_modules():
        if "lora_" in name or name.endswith("lm_head") or not isinstance(m, nn.Linear):
            continue
        if any(name.startswith(p + ".") for p in prefixes):
            lin += m.weight.numel()
            rows += m.weight.shape[0]
            seen.add(id(m.weight))
    other = sum(p.numel() for p in base.parameters() if id(p) not in seen)
    return lin, rows, other


def activation_bytes(stack: Stack, batch: int, checkpointing: bool) -> float:
    s, h, a = stack.tokens, stack.hidden, stack.heads
    per_layer_full = batch * s * h * (34 + 5 * a * s / h)
    if not stack.stores_activations:
        return 0.0
    if checkpointing:
        return stack.layers * 2 * batch * s * h + per_layer_full
    return stack.layers * per_layer_full


def estimate(
    model: nn.Module,
    trainable: int,
    stacks: list[Stack],
    quant_prefixes: list[str],
    batch: int,
    checkpointing: bool,
    precisions: list[str],
    kv_stacks: list[Stack],
) -> dict[str, Any]:
    lin, rows, other = linear_split(model, quant_prefixes)
    out = {}
    for precision in precisions:
        if precision not in QUANT_BYTES:
            raise ValueError(f"precision must be one of {sorted(QUANT_BYTES)}, got {precision!r}")
        weights = QUANT_BYTES[precision](lin, rows) + 2 * other
        train_state = 16 * trainable
        acts = sum(activation_bytes(s, batch, checkpointing) for s in stacks)
        kv = sum(2 * s.layers * s.tokens * s.kv_dim * 2 * batch for s in kv_stacks)
        transient = max(
            batch * s.tokens * s.hidden * (34 + 5 * s.heads * s.tokens / s.hidden) for s in stacks
        )
        out[precision] = {
            "weights_gib": round(weights / GIB, 6),
            "trainable_state_gib": round(train_state / GIB, 6),
            "activations_gib": round(acts / GIB, 6),
            "training_gib": round((weights + train_state + acts) / GIB, 6),
            "inference_gib": round((weights + kv + transient) / GIB, 6),
        }
    return out


def plan(
    policy: Any,
    stacks: list[Stack],
    kv_stacks: list[Stack],
    quant_prefixes: list[str],
    planner: Any,
    extra: dict[str, Any],
) -> dict[str, Any]:
    from vla_lab.policies.lora import count_params

    total, trainable = count_params(policy.model)
    by_sub = {}
    for short, path in policy.submodels().items():
        base = policy.model.get_base_model() if hasattr(policy.model, "get_base_model") else policy.model
        try:
            sub = base.get_submodule(path)
        except AttributeError:
            continue
        by_sub[short] = dict(zip(("total", "trainable"), count_params(sub), strict=True))
    memory = estimate(
        policy.model,
        trainable,
        stacks,
        quant_prefixes,
        planner.batch_size,
        planner.gradient_checkpointing,
        list(planner.precisions),
        kv_stacks,
    )
    assumptions = {
        "batch_size": planner.batch_size,
        "sequence_tokens": {s.name: s.tokens for s in stacks},
        "optimizer": f"{planner.optimizer}: fp32 weight + grad + 2 moments = 16 B per trainable param",
        "gradient_checkpointing": planner.gradient_checkpointing,
        "quantized": f"linear layers of {quant_prefixes} at the given precision; other weights bf16",
        "activations": "bf16, s*h*(34+5*a*s/h) B per layer (checkpointing keeps 2*s*h per layer + one layer)",
        "stacks": [asdict(s) for s in stacks],
    }
    return {
        "total_params": total,
        "trainable_params": trainable,
        "trainable_percent": round(100 * trainable / max(total, 1), 4),
        "params_by_submodel": by_sub,
        "memory": memory,
        "assumptions": assumptions,
        **extra,
    }


def on_meta(fn, *args, **kwargs):
    with torch.device("meta"):
        return fn(*args, **kwargs)
