"""SmolVLA configuration (typed; Hydra presets and saved checkpoints share it).

Defaults are lerobot's ``smolvla_base``: SmolVLM2-500M-Video-Instruct with its first 16 text layers,
an action expert 0.75× as wide with cross-attention on every other layer, flow matching with 10
Euler steps, chunk 50, state/action padded to 32. ``config.json`` uses lerobot's field names where
they exist (``type: smolvla``, ``chunk_size``, ``num_vlm_layers`` …) plus the VLM dimensions, which
lerobot reads from the VLM's own config instead.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OFFICIAL_VLM = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"


@dataclass
class SmolVLMTextSpec:
    hidden_size: int = 960
    intermediate_size: int = 2560
    num_hidden_layers: int = 32
    num_attention_heads: int = 15
    num_key_value_heads: int = 5
    head_dim: int = 64
    vocab_size: int = 49280
    rope_theta: float = 100000.0
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 8192


@dataclass
class SmolVLMVisionSpec:
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 512
    patch_size: int = 16


@dataclass
class SmolVLAConfig:
    family: str = "smolvla"
    vlm_model_name: str = OFFICIAL_VLM
    text: SmolVLMTextSpec = field(default_factory=SmolVLMTextSpec)
    vision: SmolVLMVisionSpec = field(default_factory=SmolVLMVisionSpec)
    scale_factor: int = 4
    num_vlm_layers: int = 16
    num_expert_layers: int = -1
    self_attn_every_n_layers: int = 2
    expert_width_multiplier: float = 0.75
    attention_mode: str = "cross_attn"
    chunk_size: int = 50
    n_action_steps: int | None = 50
    temporal_ensemble_coeff: float | None = None
    max_state_dim: int = 32
    max_action_dim: int = 32
    action_dim: int = 7
    num_steps: int = 10
    min_period: float = 4e-3
    max_period: float = 4.0
    tokenizer_max_length: int = 48
    cameras: list[str] = field(default_factory=lambda: ["agentview"])
    train_expert_only: bool = True
    freeze_vision_encoder: bool = True
    train_state_proj: bool = True
    #: "train": byte-level BPE fitted on the instructions (small configs); else a tokenizer directory.
    tokenizer: str = "train"
    gradient_checkpointing: bool = False
    pretrained: str | None = None

    def __post_init__(self) -> None:
        if self.attention_mode not in ("cross_attn", "self_attn"):
            raise ValueError(
                f"attention_mode must be 'cross_attn' or 'self_attn', got {self.attention_mode!r}"
            )
        if self.action_dim > self.max_action_dim:
            raise ValueError(f"action_dim {self.action_dim} exceeds max_action_dim {self.max_action_dim}")
        if self.num_vlm_layers > self.text.num_hidden_layers:
            raise ValueError(
                f"num_vlm_layers {self.num_vlm_layers} > the VLM's {self.text.num_hidden_layers} layers"
            )
        grid = self.vision.image_size // self.vision.patch_size
        if grid % self.scale_factor:
            raise ValueError(
                f"patch grid {grid} is not divisible by the pixel-shuffle scale {self.scale_factor}"
            )

    @property
    def expert_hidden(self) -> int:
        return int(self.text.hidden_size * self.expert_width_multiplier)

    @property
    def expert_intermediate(self) -> int:
        """lerobot's rule: 4 × (2/3 of the width), rounded up to a multiple of 256."""
        h = int(4 * int(2 * self.expert_hidden / 3))
        return 256 * ((h + 255) // 256)

    def to_json_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("pretrained")
        d["type"] = "smolvla"
        return d

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> SmolVLAConfig:
        """Reads vla_lab's config.json or lerobot's (whose VLM dimensions live in the VLM's own
        config: official SmolVLM2 defaults, or ``vlm_model_name`` as a local directory)."""
        if d.get("type") != "smolvla":
            raise ValueError(f"config.json describes type={d.get('type')!r}, not a SmolVLA policy")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        if "text" not in kwargs:
            kwargs.update(_vlm_dims(kwargs.get("vlm_model_name", OFFICIAL_VLM)))
        if isinstance(kwargs.get("text"), dict):
            kwargs["text"] = SmolVLMTextSpec(**kwargs["text"])
        if isinstance(kwargs.get("vision"), dict):
            kwargs["vision"] = SmolVLMVisionSpec(**kwargs["vision"])
        features = d.get("input_features") or {}
        cams = [
            k.removeprefix("observation.images.") for k, v in features.items() if v.get("type") == "VISUAL"
        ]
        if cams and "cameras" not in kwargs:
            kwargs["cameras"] = cams
        if "output_features" in d and "action" in d["output_features"]:
            kwargs.setdefault("action_dim", d["output_features"]["action"]["shape"][0])
        return cls(**kwargs)


def _vlm_dims(vlm_model_name: str) -> dict[str, Any]:
    path = Path(vlm_model_name) / "config.json"
    if path.exists():
        vlm = json.loads(path.read_text())
        t, v = vlm["text_config"], vlm["vision_config"]
        rope = (t.get("rope_parameters") or {}).get("rope_theta", t.get("rope_theta", 100000.0))
        text = {f.name: t[f.name] for f in dataclasses.fields(SmolVLMTextSpec) if f.name in t}
        text["rope_theta"] = float(rope)
        vision = {f.name: v[f.name] for f in dataclasses.fields(SmolVLMVisionSpec) if f.name in v}
        return {"text": text, "vision": vision, "scale_factor": vlm.get("scale_factor", 4)}
    if vlm_model_name == OFFICIAL_VLM:
        return {}
    raise ValueError(
        f"vlm_model_name {vlm_model_name!r} is neither {OFFICIAL_VLM} nor a local directory "
        f"with a config.json: the VLM's dimensions are unknown"
    )
