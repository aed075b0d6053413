"""LoRA / QLoRA through peft, with sub-model targeting and explicit errors for unknown targets.

``apply_peft(policy, spec)`` freezes the base model, optionally quantizes the adapted sub-models'
linear layers (QLoRA) and wraps ``policy.model`` in a ``peft.PeftModel`` whose adapters cover the
chosen sub-models only. ``all-linear`` means every linear layer there except the LM's output head.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from vla_lab.policies.config import PeftSpec
from vla_lab.policies.quantization import disable_cpu_inference_repack, quantize_linears

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _is_linear(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    try:
        import bitsandbytes as bnb
    except ImportError:
        return False
    return isinstance(module, bnb.nn.Linear4bit | bnb.nn.Linear8bitLt)


def submodel_prefixes(policy: Any, names: list[str]) -> list[str]:
    table: dict[str, str] = policy.submodels()
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown sub-model(s) {unknown} for {policy.name}; choose from {sorted(table)}")
    return [table[n] for n in names if _has(policy.model, table[n])]


def _has(root: nn.Module, name: str) -> bool:
    try:
        root.get_submodule(name)
    except AttributeError:
        return False
    return True


def resolve_targets(
    root: nn.Module, prefixes: list[str], target_modules: list[str], exclude: tuple[str, ...] = ("lm_head",)
) -> list[str]:
    """Full names of the linear layers to adapt; a target name that matches nothing is an error."""
    linears = [
        name
        for name, m in root.named_modules()
        if _is_linear(m)
        and any(name.startswith(p + ".") for p in prefixes)
        and name.split(".")[-1] not in exclude
    ]
    if target_modules == ["all-linear"]:
        chosen = linears
    else:
        suffixes = {n.split(".")[-1] for n in linears}
        unknown = [t for t in target_modules if t not in suffixes]
        if unknown:
            raise ValueError(
                f"peft target module(s) {unknown} not found among the linear layers of "
                f"{prefixes}; available names: {sorted(suffixes)}"
            )
        chosen = [n for n in linears if n.split(".")[-1] in target_modules]
    if not chosen:
        raise ValueError(f"no linear layer to adapt under {prefixes}")
    return chosen


def apply_peft(policy: Any, spec: PeftSpec) -> Any:
    if spec.gradient_checkpointing:
        policy.set_gradient_checkpointing(True)
    if spec.method == "none":
        policy.model.requires_grad_(True)
        return policy
    model = policy.model
    prefixes = submodel_prefixes(policy, spec.adapt)
    train_full = submodel_prefixes(policy, [*spec.train_full, *policy.fresh_submodels()])
    if spec.method == "qlora":
        quantize_linears(model, prefixes, spec.quantization, DTYPES[spec.compute_dtype])
        disable_cpu_inference_repack(model)
    overlap = sorted(set(prefixes) & set(train_full))
    if overlap:
        raise ValueError(f"sub-model(s) {overlap} cannot be both LoRA-adapted and trained in full")
    targets = resolve_targets(model, prefixes, list(spec.target_modules))
    config = LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets, bias="none"
    )
    policy.model = get_peft_model(model, config)
    # Fully trained sub-models stay in place (peft's modules_to_save would keep a second frozen copy).
    for prefix in train_full:
        model.get_submodule(prefix).requires_grad_(True)
    policy.trained_full = train_full
    return policy


def merge_adapters(policy: Any) -> Any:
    """Folds the adapters into the base weights (unquantized bases only) and unwraps the model."""
    if not isinstance(policy.model, PeftModel):
        raise ValueError("policy has no adapters to merge")
    policy.model = policy.model.merge_and_unload()
    return policy


def count_params(module: nn.Module) -> tuple[int, int]:
    """(total, trainable); 4-bit packed weights count their logical number of parameters."""
    total = trainable = 0
    for p in module.parameters():
        n = p.numel()
        if hasattr(p, "quant_state") and p.quant_state is not None:
            n = int(torch.Size(p.quant_state.shape).numel())
        total += n
        trainable += n if p.requires_grad else 0
    return total, trainable


# ---- adapter checkpoints ----
ADAPTER_CONFIG = "adapter_config.json"


def base_fingerprint(model: nn.Module) -> str:
    """Hash of every base tensor's name, shape and a strided sample of its values: tells apart two
    bases of the same architecture, cheaply even at 7B."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}".encode())
        if t.device.type == "meta" or not t.is_floating_point():
            continue
        flat = t.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 1024)].float().cpu().numpy().round(5)
        h.update(sample.tobytes())
    return h.hexdigest()[:32]


def is_adapted(policy: Any) -> bool:
    return isinstance(policy.model, PeftModel)


TRAINED_FULL = "trained_modules.safetensors"


def save_adapters(policy: Any, directory) -> None:
    """Adapter weights in peft's format (``adapter_config.json`` + ``adapter_model.safetensors``) and
    the fully trained sub-models next to them."""
    from pathlib import Path

    from safetensors.torch import save_file

    policy.model.save_pretrained(str(directory))
    base = policy.model.get_base_model()
    full = {
        f"{p}.{k}": v.detach().contiguous().cpu()
        for p in getattr(policy, "trained_full", [])
        for k, v in base.get_submodule(p).state_dict().items()
    }
    if full:
        import json

        save_file(
            full,
            str(Path(directory) / TRAINED_FULL),
            metadata={"prefixes": json.dumps(list(policy.trained_full))},
        )


def load_adapters(policy: Any, directory, spec: PeftSpec, expected_fingerprint: str | None) -> Any:
    actual = base_fingerprint(policy.model)
    if expected_fingerprint is not None and actual != expected_fingerprint:
        raise ValueError(
            f"the adapter in {directory} was trained on a different base model "
            f"(fingerprint {expected_fingerprint}, this base {actual})"
        )
    if spec.method == "qlora":
        quantize_linears(
            policy.model, submodel_prefixes(policy, spec.adapt), spec.quantization, DTYPES[spec.compute_dtype]
        )
        disable_cpu_inference_repack(policy.model)
    policy.model = PeftModel.from_pretrained(policy.model, str(directory), is_trainable=False)
    _load_trained_full(policy, directory)
    return policy


def _load_trained_full(policy: Any, directory) -> None:
    import json
    from pathlib import Path

    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(directory) / TRAINED_FULL
    if not path.exists():
        return
    with safe_open(str(path), framework="pt") as f:
        prefixes = json.loads(f.metadata()["prefixes"])
    state = load_file(str(path))
    base = policy.model.get_base_model()
    expected = {f"{p}.{k}" for p in prefixes for k in base.get_submodule(p).state_dict()}
    if set(state) != expected:
        raise ValueError(
            f"{path} does not match the model: missing {sorted(expected - set(state))[:8]}, "
            f"unexpected {sorted(set(state) - expected)[:8]}"
        )
    for p in prefixes:
        sub = base.get_submodule(p)
        sub.load_state_dict(
            {k[len(p) + 1 :]: v for k, v in state.items() if k.startswith(p + ".")}, strict=True
        )
    policy.trained_full = prefixes
