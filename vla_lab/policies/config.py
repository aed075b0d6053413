"""Typed Hydra schemas of the ``model`` and ``peft`` groups, registered in Hydra's ConfigStore.

Every preset in ``conf/model/`` starts from ``<family>_schema`` and every preset in ``conf/peft/``
from ``peft_schema``, so an unknown key or a wrongly typed value fails at compose time and the error
names the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from vla_lab.policies import registry

PEFT_METHODS = ("none", "lora", "qlora")
QUANTIZATIONS = ("nf4", "int8")


@dataclass
class PeftSpec:
    """LoRA / QLoRA settings. ``adapt`` names sub-models (``vision``, ``projector``, ``llm``,
    ``action_head`` for OpenVLA; ``vision``, ``connector``, ``llm``, ``expert`` for SmolVLA);
    ``target_modules`` is ``["all-linear"]`` or module-name suffixes such as ``q_proj``."""

    method: str = "none"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    adapt: list[str] = field(default_factory=lambda: ["llm"])
    #: Sub-models trained in full next to the adapters (e.g. a fresh action head).
    train_full: list[str] = field(default_factory=list)
    quantization: str | None = None
    compute_dtype: str = "bfloat16"
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.method not in PEFT_METHODS:
            raise ValueError(f"peft.method must be one of {PEFT_METHODS}, got {self.method!r}")
        if self.method == "qlora" and self.quantization not in QUANTIZATIONS:
            raise ValueError(
                f"peft.quantization must be one of {QUANTIZATIONS} for qlora, got {self.quantization!r}"
            )
        if self.method != "qlora" and self.quantization is not None:
            raise ValueError("peft.quantization is only used with method=qlora")


@dataclass
class PlannerSpec:
    """Assumptions of the memory estimate printed by ``vla-model``."""

    batch_size: int = 8
    seq_len: int | None = None  # None: image patches + a typical prompt + the action tokens
    optimizer: str = "adamw"
    gradient_checkpointing: bool = True
    precisions: list[str] = field(default_factory=lambda: ["bf16", "int8", "nf4"])


@dataclass
class ModelCLIConfig:
    model: Any = None
    peft: PeftSpec = field(default_factory=PeftSpec)
    planner: PlannerSpec = field(default_factory=PlannerSpec)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(group="peft", name="peft_schema", node=PeftSpec)
    for family in registry.families():
        cs.store(group="model", name=f"{family.name}_schema", node=family.config_class)
    cs.store(name="model_cli_schema", node=ModelCLIConfig)


def model_config_from(node: DictConfig | dict | Any):
    """Resolved ``model`` node → the family's config dataclass."""
    if not isinstance(node, DictConfig | dict):
        return node
    node = OmegaConf.create(node) if isinstance(node, dict) else node
    schema = registry.get_family(node.get("family")).config_class
    # Merge a plain copy: keys forced in with Hydra's "+" escape the struct flag and must fail here.
    merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.to_container(node, resolve=True))
    return OmegaConf.to_object(merged)


def peft_spec_from(node: DictConfig | dict | PeftSpec | None) -> PeftSpec:
    if node is None:
        return PeftSpec()
    if isinstance(node, PeftSpec):
        return node
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PeftSpec), plain))
