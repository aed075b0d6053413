"""Checkpoints and adapters, written once for every policy family.

A checkpoint directory holds ``config.json`` (the family's config in its own layout, plus
``norm_stats``), the weights (``model.safetensors``, or shards and their index) and the processor's
files (``processor_config.json``, tokenizer files, a family's extras such as OpenVLA's
``fast_tokenizer/``). An adapter checkpoint holds peft's ``adapter_config.json`` and
``adapter_model.safetensors`` (plus ``trained_modules.safetensors`` for sub-models trained in full)
instead of the weights; its ``config.json`` adds ``peft``, ``base_model`` (the full checkpoint under
the adapters: an absolute path, or ``base`` when that base existed only in memory and was saved
beside them) and ``base_fingerprint``.

Loading follows one path: config.json → config → network on the meta device → base weights →
adapters → processor. A family overrides only the hooks where it differs from the defaults below.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from vla_lab.policies import lora
from vla_lab.policies.checkpoint import (
    load_state_dict_files,
    load_strict,
    read_json,
    save_state_dict,
    verify_manifest,
    write_manifest,
)
from vla_lab.policies.config import PeftSpec, peft_spec_from
from vla_lab.policies.contract import VLAPolicy
from vla_lab.policies.processor import StepProcessor
from vla_lab.policies.quantization import disable_cpu_inference_repack, quantize_linears

CONFIG_FILE = "config.json"
#: Where a base that existed only in memory is saved, inside its adapters' directory.
BASE_DIR = "base"


def read_config(directory: Path) -> dict[str, Any]:
    if not (directory / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{directory} has no {CONFIG_FILE}: not a checkpoint directory")
    return read_json(directory / CONFIG_FILE)


def model_type_of(raw: dict[str, Any]) -> str | None:
    """The family tag of a config.json: ``model_type`` (Hugging Face layout) or ``type`` (lerobot's)."""
    return raw.get("model_type") or raw.get("type")


def is_adapter_checkpoint(directory: Path) -> bool:
    return (directory / lora.ADAPTER_CONFIG).exists()


def base_of(directory: Path, raw: dict[str, Any]) -> Path:
    """The full checkpoint the adapters in ``directory`` were trained on."""
    base_dir = Path(raw["base_model"])
    base_dir = base_dir if base_dir.is_absolute() else directory / base_dir
    if not (base_dir / CONFIG_FILE).exists():
        raise FileNotFoundError(f"base model {base_dir} of the adapters in {directory} has no {CONFIG_FILE}")
    if is_adapter_checkpoint(base_dir):
        raise ValueError(
            f"base model {base_dir} of the adapters in {directory} holds adapters itself: load it, "
            "merge_adapters() and save the merged policy as the base"
        )
    return base_dir


def check_materialized(model: nn.Module) -> None:
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if left:
        raise RuntimeError(f"tensors left uninitialised after loading: {left[:10]}")


class PretrainedPolicy(VLAPolicy):
    """A policy with a config dataclass, a network in ``self.model`` and a ``StepProcessor``."""

    #: The family's config dataclass and processor class.
    config_class: type
    processor_class: type[StepProcessor]
    #: Prefix of every weight name in the checkpoint (lerobot's layout keeps the network under ``model.``).
    weights_prefix: str = ""

    #: The full checkpoint the base weights came from; None while they exist only in memory.
    base_path: str | None = None
    peft_spec: PeftSpec | None = None
    base_fingerprint: str | None = None

    def __init__(self, config: Any, processor: StepProcessor | None) -> None:
        super().__init__(config.chunk_size, config.n_action_steps, config.temporal_ensemble_coeff)
        self.config = config
        self.processor = processor

    # ---- family hooks ----
    def submodels(self) -> dict[str, str]:
        """Sub-model names accepted by PEFT specs → module paths inside ``self.model``."""
        return {}

    def fresh_submodels(self) -> list[str]:
        """Sub-models no pretrained checkpoint provides: trained in full even under LoRA."""
        return []

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        if enabled:
            raise NotImplementedError(f"{type(self).__name__} has no gradient checkpointing")

    def apply_default_freezing(self) -> None:
        """The family's frozen parts when nothing is adapted (after loading and under ``peft=none``)."""

    @classmethod
    def config_to_dict(cls, config: Any) -> dict[str, Any]:
        """``config.json``'s content, ``norm_stats`` aside."""
        fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "pretrained"}
        return {"model_type": cls.name, **fields}

    @classmethod
    def config_from_dict(cls, raw: dict[str, Any]) -> Any:
        known = {f.name for f in dataclasses.fields(cls.config_class)}
        fields = {k: v for k, v in raw.items() if k in known}
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls.config_class), fields))

    @classmethod
    def new_processor(
        cls, config: Any, corpus: list[str] | None, norm_stats: dict[str, Any] | None, action_chunks: Any
    ) -> StepProcessor:
        """The processor of a fresh policy: ``corpus`` (the dataset's instructions) trains small
        configs' tokenizers, ``action_chunks`` (normalized, (N, K, A)) fits action tokenizers."""
        raise NotImplementedError(f"{cls.__name__} must define new_processor")

    @classmethod
    def skeleton(cls, config: Any) -> PretrainedPolicy:
        """The policy on the meta device, without processor, ready to receive a checkpoint's weights."""
        with torch.device("meta"):
            return cls(config, None)

    @classmethod
    def checkpoint_config(
        cls, raw: dict[str, Any], adapter_raw: dict[str, Any] | None, overrides: Any, directory: Path
    ) -> Any:
        """The config a full checkpoint (``raw``, in ``directory``) loads with; ``adapter_raw`` is the
        config of the adapters going on top, ``overrides`` the caller's config (``make_policy`` from
        ``pretrained``). By default the checkpoint's own, unchanged."""
        return cls.config_from_dict(raw)

    def restore_buffers(self) -> None:
        """Rebuilds off the meta device what checkpoints do not hold (non-persistent buffers)."""

    def adopt_overrides(self, overrides: Any) -> None:
        """Adapts freshly loaded base weights to the caller's config (``make_policy`` from ``pretrained``)."""

    def check_adapters(
        self, adapter_raw: dict[str, Any], base_raw: dict[str, Any], directory: Path, base_dir: Path
    ) -> None:
        """Before the adapters in ``directory`` go onto the base from ``base_dir``: refuse a mismatch
        or adopt the adapters' training-time changes. The base fingerprint is checked anyway."""

    def finish_loading(self, directory: Path, action_chunks: Any) -> None:
        """Last step of ``from_pretrained``, with the processor in place."""

    # ---- construction ----
    @classmethod
    def build(
        cls,
        config: Any,
        corpus: list[str] | None = None,
        norm_stats: dict[str, Any] | None = None,
        action_chunks: Any = None,
    ) -> PretrainedPolicy:
        """A fresh policy, or ``config.pretrained``'s checkpoint loaded with ``config`` as overrides."""
        if config.pretrained:
            return cls.from_pretrained(
                config.pretrained, overrides=config, norm_stats=norm_stats, action_chunks=action_chunks
            )
        return cls(config, cls.new_processor(config, corpus, norm_stats, action_chunks))

    # ---- persistence ----
    def save_pretrained(self, directory: str | Path) -> None:
        """Full weights, or — for an adapted policy — the adapters plus a reference to their base."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cfg = self.config_to_dict(self.config)
        cfg["norm_stats"] = self.processor.norm_stats
        if lora.is_adapted(self):
            lora.save_adapters(self, directory)
            cfg["peft"] = dataclasses.asdict(self.peft_spec)
            cfg["base_model"] = self._base_reference(directory)
            cfg["base_fingerprint"] = self.base_fingerprint
        else:
            save_state_dict(self._checkpoint_names(self.model.state_dict()), directory)
        (directory / CONFIG_FILE).write_text(json.dumps(cfg, indent=2))
        self.processor.save_pretrained(directory)
        write_manifest(directory)

    def _base_reference(self, directory: Path) -> str:
        if self.base_path is not None:
            return str(Path(self.base_path).resolve())
        # A randomly initialised base exists nowhere else: keep it next to the adapters.
        base_dir = directory / BASE_DIR
        base_dir.mkdir(exist_ok=True)
        save_state_dict(self._checkpoint_names(self.base_state), base_dir)
        (base_dir / CONFIG_FILE).write_text(json.dumps(self.config_to_dict(self.config), indent=2))
        self.processor.save_pretrained(base_dir)
        return BASE_DIR

    def _checkpoint_names(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {f"{self.weights_prefix}{k}": v for k, v in state.items()}

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        overrides: Any = None,
        norm_stats: dict[str, Any] | None = None,
        dtype: torch.dtype | None = None,
        quantization: str | None = None,
        tokenizer: str | None = None,
        action_chunks: Any = None,
        verify: bool = True,
    ) -> PretrainedPolicy:
        """Loads a checkpoint directory written by ``save_pretrained`` or by the family's upstream.

        ``norm_stats`` join the saved statistics (a new dataset when fine-tuning); ``dtype`` and
        ``quantization`` ("nf4" / "int8": the LLM's linear layers, for inference) apply to full
        checkpoints (an adapter checkpoint's PEFT spec decides its own); ``tokenizer`` is a directory
        holding the tokenizer when the checkpoint ships none; ``overrides`` and ``action_chunks``
        are what ``build`` passes on (see the family's ``checkpoint_config`` / ``finish_loading``);
        ``verify=False`` skips the manifest check a caller has already made."""
        directory = Path(directory)
        if verify:
            verify_manifest(directory)  # covers base/ too when the base lives beside the adapters
        raw = read_config(directory)
        adapted = is_adapter_checkpoint(directory)
        base_dir = base_of(directory, raw) if adapted else directory
        if adapted and not base_dir.is_relative_to(directory):
            verify_manifest(base_dir)
        base_raw = read_config(base_dir) if adapted else raw
        config = cls.checkpoint_config(base_raw, raw if adapted else None, overrides, base_dir)
        policy = cls.skeleton(config)
        policy._load_weights(base_dir)
        policy.adopt_overrides(overrides)
        policy.base_path = str(base_dir)
        policy.apply_default_freezing()
        if adapted:
            policy._load_adapters(directory, raw, base_raw, base_dir)
        else:
            policy._convert(dtype, quantization)
        stats = {**(base_raw.get("norm_stats") or {}), **(raw.get("norm_stats") or {}), **(norm_stats or {})}
        policy.processor = cls.processor_class.from_pretrained(tokenizer or directory, policy.config, stats)
        policy.finish_loading(directory, action_chunks)
        return policy

    def _load_weights(self, directory: Path) -> None:
        state = load_state_dict_files(directory)
        prefix = self.weights_prefix
        if prefix:
            outside = [k for k in state if not k.startswith(prefix)]
            if outside:
                raise ValueError(f"checkpoint {directory} has keys outside {prefix!r}: {outside[:10]}")
            state = {k[len(prefix) :]: v for k, v in state.items()}
        load_strict(self.model, state, f"checkpoint {directory}")
        self.restore_buffers()
        check_materialized(self.model)

    def _convert(self, dtype: torch.dtype | None, quantization: str | None) -> None:
        if dtype is not None:
            self.to(dtype)
        if quantization is not None:
            quantize_linears(self.model, [self.submodels()["llm"]], quantization)
            disable_cpu_inference_repack(self.model)

    def _load_adapters(
        self, directory: Path, raw: dict[str, Any], base_raw: dict[str, Any], base_dir: Path
    ) -> None:
        spec = peft_spec_from(raw["peft"])
        self.check_adapters(raw, base_raw, directory, base_dir)
        lora.load_adapters(self, directory, spec, raw.get("base_fingerprint"))
        self.peft_spec = spec

    # ---- adapters ----
    def apply_peft(self, spec: PeftSpec) -> PretrainedPolicy:
        """Trains in full (``method=none``, minus the family's default frozen parts) or wraps
        ``self.model`` in LoRA / QLoRA adapters (``vla_lab.policies.lora``)."""
        self.base_fingerprint = lora.base_fingerprint(self.model)
        if self.base_path is None and spec.method != "none":
            self.base_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.peft_spec = spec
        lora.apply_peft(self, spec)
        if spec.method == "none":
            self.apply_default_freezing()
        return self

    def merge_adapters(self) -> PretrainedPolicy:
        """Folds the adapters into the base weights; the result saves as a full checkpoint."""
        lora.merge_adapters(self)
        self.peft_spec, self.base_path = None, None
        return self
