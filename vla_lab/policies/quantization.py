"""Base-weight quantization for QLoRA: ``nn.Linear`` → bitsandbytes ``Linear4bit`` (NF4) or
``Linear8bitLt`` (LLM.int8), frozen, with LoRA adapters added on top by ``vla_lab.policies.lora``.

On CPU, bitsandbytes 0.50.2 repacks a ``Linear4bit`` weight for an inference-only kernel during the
first forward pass without gradients; afterwards gradients through the layer silently vanish. Every
``Linear4bit`` therefore gets ``support_avx512bf16_for_cpu = False`` before its first forward.
4-bit CPU kernels also need ``out_features`` divisible by 32: other layers stay in full precision.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)
NF4_MULTIPLE = 32


def _bnb():
    import bitsandbytes as bnb  # imported lazily: it prints hardware notices at import time

    return bnb


def quantizable(module: nn.Module, quantization: str) -> bool:
    return type(module) is nn.Linear and (quantization != "nf4" or module.out_features % NF4_MULTIPLE == 0)


def _to_nf4(lin: nn.Linear, compute_dtype: torch.dtype) -> nn.Module:
    bnb = _bnb()
    q = bnb.nn.Linear4bit(
        lin.in_features,
        lin.out_features,
        bias=lin.bias is not None,
        compute_dtype=compute_dtype,
        quant_type="nf4",
        device="meta",
    )
    q.weight = bnb.nn.Params4bit(lin.weight.data.float().cpu(), requires_grad=False, quant_type="nf4")
    if lin.bias is not None:
        q.bias = nn.Parameter(lin.bias.data.to(compute_dtype).cpu(), requires_grad=False)
    q = q.to(lin.weight.device if lin.weight.device.type != "meta" else "cpu")
    q.support_avx512bf16_for_cpu = False
    return q


def _to_int8(lin: nn.Linear, compute_dtype: torch.dtype) -> nn.Module:
    bnb = _bnb()
    q = bnb.nn.Linear8bitLt(
        lin.in_features,
        lin.out_features,
        bias=lin.bias is not None,
        has_fp16_weights=False,
        threshold=6.0,
        device="meta",
    )
    q.weight = bnb.nn.Int8Params(lin.weight.data.float().cpu(), requires_grad=False, has_fp16_weights=False)
    if lin.bias is not None:
        q.bias = nn.Parameter(lin.bias.data.to(compute_dtype).cpu(), requires_grad=False)
    return q.to(lin.weight.device if lin.weight.device.type != "meta" else "cpu")


def quantize_linears(
    root: nn.Module,
    prefixes: list[str],
    quantization: str,
    compute_dtype: torch.dtype = torch.bfloat16,
    skip: tuple[str, ...] = ("lm_head",),
) -> list[str]:
    """Replaces the quantizable ``nn.Linear`` layers under ``prefixes``; returns their names."""
    convert = {"nf4": _to_nf4, "int8": _to_int8}.get(quantization)
    if convert is None:
        raise ValueError(f"quantization must be 'nf4' or 'int8', got {quantization!r}")
    done, kept = [], []
    for name, module in list(root.named_modules()):
        if not any(name == p or name.startswith(p + ".") for p in prefixes) or name.split(".")[-1] in skip:
            continue
        if type(module) is not nn.Linear:
            continue
        if not quantizable(module, quantization):
            kept.append(name)
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(root.get_submodule(parent_name), child, convert(module, compute_dtype))
        done.append(name)
    if kept:
        log.info(
            "kept %d linear layers in full precision (out_features not a multiple of %d): %s",
            len(kept),
            NF4_MULTIPLE,
            kept[:5],
        )
    return done


def disable_cpu_inference_repack(root: nn.Module) -> int:
    """Sets the repack switch off on every ``Linear4bit`` (also after loading); returns how many."""
    bnb = _bnb()
    n = 0
    for m in root.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
            n += 1
    return n
