"""OpenVLA configuration: one typed dataclass used by Hydra presets and by saved checkpoints.

``config.json`` is written in the layout of the official ``openvla/openvla-7b`` checkpoint
(``timm_model_ids``, ``image_sizes``, ``text_config``, ``n_action_bins``, ``pad_to_multiple_of``,
``norm_stats`` …) plus vla_lab's own fields, so the same reader loads both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

DINOV2_MEAN, DINOV2_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SIGLIP_MEAN, SIGLIP_STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
DINOV2_ID = "vit_large_patch14_reg4_dinov2.lvd142m"
SIGLIP_ID = "vit_so400m_patch14_siglip_224"
PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
ACTION_HEADS = ("tokens", "l1_chunk", "fast")
#: What a byte-level BPE trained on instructions needs besides merges: 256 bytes and <unk> <s> </s>.
MIN_TRAINED_TEXT_VOCAB = 259
PROPRIO_INJECTIONS = ("token", "queries")
AUX_READOUTS = ("actions", "prompt")
POS_EMBED_INITS = (None, "sincos")
VIT_WEIGHT_INITS = ("", "jax")


@dataclass
class ViTSpec:
    """One timm ViT of the fused backbone; the size overrides shrink it for CPU configs."""

    timm_id: str = DINOV2_ID
    img_size: int = 224
    act_layer: str | None = None
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None
    #: patch side in pixels; null = the model's own (14). Larger patches mean fewer image tokens,
    #: the lever that makes a from-scratch CPU model cheap and quick to localize objects
    patch_size: int | None = None
    #: LayerScale init (timm ``init_values``); null = the model's own (1e-5 for DINOv2). Small models
    #: trained from scratch need ~1: at 1e-5 every block starts as the identity and barely trains
    init_values: float | None = None
    #: position-embedding init: null = the model's own (timm: N(0, 0.02), about 30x weaker than the
    #: patch features, so a from-scratch tower has no usable sense of *where* for hundreds of steps);
    #: "sincos" = fixed-frequency 2-D sine-cosine codes of the patch grid (MAE), still trained
    pos_embed_init: str | None = None
    #: timm's ``weight_init`` scheme: "" (its default: N(0, 0.02) linears) or "jax" (Xavier-uniform
    #: linears, LeCun-normal patch embedding): the latter keeps unit-scale signals at tiny widths
    weight_init: str = ""
    mean: list[float] = field(default_factory=lambda: list(DINOV2_MEAN))
    std: list[float] = field(default_factory=lambda: list(DINOV2_STD))

    def timm_kwargs(self) -> dict[str, Any]:
        sizes = {
            k: getattr(self, k)
            for k in ("embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size", "init_values")
        }
        return {k: v for k, v in sizes.items() if v is not None}


@dataclass
class LlamaSpec:
    """LlamaConfig fields; defaults are Llama-2-7B as released inside OpenVLA (vocab padded to 32064)."""

    vocab_size: int = 32064
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 32000
    #: std of the normal init of every linear layer and embedding. Llama's 0.02 suits widths in the
    #: thousands; at width 128 it leaves attention uniform and its output tiny for hundreds of steps
    initializer_range: float = 0.02


@dataclass
class L1HeadSpec:
    """OFT-style continuous head: MLP over the hidden states of one chunk step's A placeholders."""

    hidden_dim: int | None = None  # None: the LLM width
    num_blocks: int = 2
    #: Also feed the head the prompt's last state (as the last layer reads it: image and text, no
    #: state). From scratch, the placeholders were seen to keep the gripper state but not import
    #: where the object is, although the prompt's end held it (experiments/demo_learnability, §9).
    read_prompt_end: bool = False


@dataclass
class OpenVLAConfig:
    family: str = "openvla"
    vision: list[ViTSpec] = field(
        default_factory=lambda: [
            ViTSpec(DINOV2_ID, mean=list(DINOV2_MEAN), std=list(DINOV2_STD)),
            ViTSpec(SIGLIP_ID, mean=list(SIGLIP_MEAN), std=list(SIGLIP_STD)),
        ]
    )
    text: LlamaSpec = field(default_factory=LlamaSpec)
    pad_to_multiple_of: int = 64
    n_action_bins: int = 256
    #: Size of the tokenizer's vocabulary (action ids are its last ``n_action_bins``); None: the
    #: embedding rows minus ``pad_to_multiple_of``, as upstream.
    text_vocab_size: int | None = None
    #: The empty "▁" token upstream appends after ``Out:`` (29871 in the Llama-2 vocabulary).
    space_token_id: int = 29871
    prompt_template: str = PROMPT_TEMPLATE
    #: Prompts longer than this many tokens are truncated (with a warning), keeping the end.
    max_prompt_tokens: int = 96
    #: "tokens" (OpenVLA's bins), "l1_chunk" (OFT-style continuous head) or "fast" (FAST: DCT + BPE
    #: tokens, fitted on the training set's chunks and saved with the processor).
    action_head: str = "tokens"
    #: FAST BPE vocabulary. Its ids are the last ``fast_vocab_size`` of the text vocabulary (LLM id =
    #: ``text_vocab_size - 1 - fast_id``). The paper uses 1024; 256 takes exactly the ids OpenVLA's bins
    #: take, so every preset keeps its text tokenizer (and Llama-2 loses no more text tokens).
    fast_vocab_size: int = 256
    #: FAST quantization: DCT coefficients are multiplied by this and rounded (paper: 10). Larger is
    #: finer (a value's rounding error is at most 0.5·sqrt(chunk_size)/scale) but needs more symbols
    #: (2·ceil(scale·sqrt(chunk_size)) + 1 must fit in fast_vocab_size) and more tokens per chunk.
    fast_scale: float = 10.0
    chunk_size: int = 1
    n_action_steps: int | None = None
    temporal_ensemble_coeff: float | None = None
    action_dim: int = 7
    #: Proprioceptive inputs (``observation.state`` values). 0: none, as released OpenVLA. > 0: an
    #: OpenVLA-OFT-style projector turns the normalized state into one extra token after the patches;
    #: without it a single camera leaves the gripper's height and opening to be guessed from pixels.
    proprio_dim: int = 0
    #: Where the projected state enters: "token" (OpenVLA-OFT: one token after the patches, read through
    #: attention) or "queries" (added to every action placeholder of the l1_chunk head, so the action
    #: block holds the state from its first layer; trains far faster from scratch).
    proprio_injection: str = "token"
    #: Auxiliary target during training (l1_chunk only): a privileged ``data.aux_keys`` entry, e.g.
    #: ``object_pos``, read out linearly from the mean of the placeholders' final states. From scratch,
    #: an unsaturated "where is it" target teaches the vision tower to localize faster than action
    #: labels that mostly say "which way" (experiments/demo_learnability, section 6). None: off.
    aux_target: str | None = None
    #: Where the auxiliary target is read: "actions" (the mean of the placeholders' final states) or
    #: "prompt" (the last prompt token, after all but the last layer). The placeholders hold the state,
    #: and in a demonstration the gripper sits at the object for most frames, so from "actions" the
    #: target is learnt as "about where the gripper is"; the prompt token sees only image and text,
    #: so it has to find the object, in one place the placeholders can attend to
    #: (experiments/demo_learnability, section 9).
    aux_readout: str = "actions"
    #: A second auxiliary target, read from the action block whatever ``aux_readout`` is, e.g.
    #: ``object_offset`` (object minus gripper) next to ``object_pos`` at the prompt: what the
    #: placeholders must compute from the prompt's estimate and their state. Unlike the action
    #: labels, which saturate at full speed, it says how far. Same ``aux_dim``, weight and scale.
    aux_action_target: str | None = None
    aux_dim: int = 3
    aux_weight: float = 1.0
    #: The target is divided by this before the L1 loss (metres → units of 10 cm for positions), so its
    #: loss has the action loss's magnitude.
    aux_scale: float = 0.1
    #: OpenVLA-OFT+'s FiLM: every vision block is scaled and shifted by projections of the prompt's
    #: average token embedding, so the towers see the instruction (OFT+ uses it for language
    #: following). Released OpenVLA: off.
    use_film: bool = False
    #: The images the policy reads, in order. One: released OpenVLA. More (e.g. agentview + wrist):
    #: OpenVLA-OFT's multi-image input, every image through the same towers, patches concatenated.
    cameras: list[str] = field(default_factory=lambda: ["agentview"])
    l1_head: L1HeadSpec = field(default_factory=L1HeadSpec)
    #: Tokenizer source: a directory with tokenizer files, or "train" to fit a byte-level BPE on the
    #: instruction corpus (small configs only).
    tokenizer: str = "train"
    tokenizer_train_vocab: int = 512
    gradient_checkpointing: bool = False
    #: Local directory (or hub id) of weights to start from; None: random init.
    pretrained: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.action_head not in ACTION_HEADS:
            raise ValueError(f"action_head must be one of {ACTION_HEADS}, got {self.action_head!r}")
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras must be a non-empty list of distinct camera names, got {self.cameras}")
        if len(self.vision) not in (1, 2):
            raise ValueError(f"vision must list 1 or 2 backbones, got {len(self.vision)}")
        for i, spec in enumerate(self.vision):
            if spec.weight_init not in VIT_WEIGHT_INITS:
                raise ValueError(
                    f"vision[{i}].weight_init must be one of {VIT_WEIGHT_INITS}, got {spec.weight_init!r}"
                )
            if spec.pos_embed_init not in POS_EMBED_INITS:
                raise ValueError(
                    f"vision[{i}].pos_embed_init must be one of {POS_EMBED_INITS}, got {spec.pos_embed_init!r}"
                )
        if not self.text.initializer_range > 0:
            raise ValueError(f"text.initializer_range must be > 0, got {self.text.initializer_range}")
        if self.chunk_size < 1 or self.action_dim < 1:
            raise ValueError("chunk_size and action_dim must be >= 1")
        if self.proprio_dim < 0:
            raise ValueError(f"proprio_dim must be >= 0 (0: no proprio input), got {self.proprio_dim}")
        if self.proprio_injection not in PROPRIO_INJECTIONS:
            raise ValueError(
                f"proprio_injection must be one of {PROPRIO_INJECTIONS}, got {self.proprio_injection!r}"
            )
        if self.proprio_injection == "queries" and self.action_head != "l1_chunk":
            raise ValueError(
                "proprio_injection='queries' needs action_head='l1_chunk' (placeholders to add to)"
            )
        if self.vocab_size <= self.n_action_bins:
            raise ValueError(
                f"text_vocab_size {self.vocab_size} leaves no room for {self.n_action_bins} bins"
            )
        if self.aux_target is not None or self.aux_action_target is not None:
            if self.action_head != "l1_chunk":
                raise ValueError("aux_target needs action_head='l1_chunk' (its placeholders are read out)")
            if self.aux_readout not in AUX_READOUTS:
                raise ValueError(f"aux_readout must be one of {AUX_READOUTS}, got {self.aux_readout!r}")
            if self.aux_dim < 1 or self.aux_weight <= 0 or self.aux_scale <= 0:
                raise ValueError(
                    f"aux_dim must be >= 1 and aux_weight, aux_scale > 0; got {self.aux_dim}, "
                    f"{self.aux_weight}, {self.aux_scale}"
                )
        if self.action_head == "fast":
            self._validate_fast()

    def _validate_fast(self) -> None:
        from vla_lab.policies.fast_tokenizer import alphabet_size_for

        if self.fast_scale <= 0:
            raise ValueError(f"fast_scale must be > 0, got {self.fast_scale}")
        need = alphabet_size_for(self.fast_scale, self.chunk_size)
        if self.fast_vocab_size < need:
            raise ValueError(
                f"fast_vocab_size={self.fast_vocab_size} cannot hold the {need} coefficient symbols that "
                f"fast_scale={self.fast_scale} and chunk_size={self.chunk_size} need "
                "(2·ceil(scale·sqrt(chunk_size)) + 1): raise fast_vocab_size or lower fast_scale"
            )
        first = self.vocab_size - self.fast_vocab_size
        specials = {"bos": self.text.bos_token_id, "eos": self.text.eos_token_id}
        clash = {k: v for k, v in specials.items() if first <= v < self.vocab_size}
        if first <= 0 or clash:
            raise ValueError(
                f"fast_vocab_size={self.fast_vocab_size} FAST ids (the last of text_vocab_size="
                f"{self.vocab_size}, from {first}) must leave the special tokens {specials} below them"
            )
        if self.tokenizer == "train" and first < MIN_TRAINED_TEXT_VOCAB:
            raise ValueError(
                f"text_vocab_size={self.vocab_size} - fast_vocab_size={self.fast_vocab_size} leaves "
                f"{first} ids for the trained text tokenizer, which needs >= {MIN_TRAINED_TEXT_VOCAB}: "
                "lower fast_vocab_size or raise text_vocab_size (and text.vocab_size)"
            )

    @property
    def n_action_ids(self) -> int:
        """Ids reserved for actions at the end of the text vocabulary (a trained tokenizer keeps off them)."""
        return self.fast_vocab_size if self.action_head == "fast" else self.n_action_bins

    @property
    def vocab_size(self) -> int:
        if self.text_vocab_size is not None:
            return self.text_vocab_size
        return self.text.vocab_size - self.pad_to_multiple_of

    @property
    def fused(self) -> bool:
        return len(self.vision) == 2

    @property
    def image_size(self) -> int:
        return self.vision[0].img_size

    # ---- (de)serialisation in the official layout ----
    def to_hf_dict(self) -> dict[str, Any]:
        d = {
            "model_type": "openvla",
            "architectures": ["OpenVLAForActionPrediction"],
            "use_fused_vision_backbone": self.fused,
            "timm_model_ids": [v.timm_id for v in self.vision],
            "timm_override_act_layers": [v.act_layer for v in self.vision],
            "image_sizes": [v.img_size for v in self.vision],
            "text_config": {"model_type": "llama", **dataclasses.asdict(self.text)},
            "pad_token_id": self.text.pad_token_id,
            "pad_to_multiple_of": self.pad_to_multiple_of,
            "n_action_bins": self.n_action_bins,
        }
        d["vla_lab"] = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("text", "pretrained")}
        return d

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> OpenVLAConfig:
        if d.get("model_type") not in ("openvla", "prismatic"):
            raise ValueError(
                f"config.json describes model_type={d.get('model_type')!r}, not an OpenVLA model"
            )
        own = dict(d.get("vla_lab", {}))
        text_fields = {f.name for f in dataclasses.fields(LlamaSpec)}
        text = LlamaSpec(**{k: v for k, v in d.get("text_config", {}).items() if k in text_fields})
        if "rope_parameters" in d.get("text_config", {}) and "rope_theta" not in d["text_config"]:
            text.rope_theta = float(d["text_config"]["rope_parameters"].get("rope_theta", text.rope_theta))
        text.pad_token_id = d.get("pad_token_id", text.pad_token_id)
        if "vision" in own:
            vision = [ViTSpec(**v) for v in own.pop("vision")]
        else:
            vision = [
                ViTSpec(tid, size, act, mean=list(_stats_for(tid)[0]), std=list(_stats_for(tid)[1]))
                for tid, size, act in zip(
                    d["timm_model_ids"], d["image_sizes"], d["timm_override_act_layers"], strict=True
                )
            ]
            own.setdefault("tokenizer", "checkpoint")
        if "l1_head" in own:
            own["l1_head"] = L1HeadSpec(**own["l1_head"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(own) - known
        if unknown:
            raise ValueError(f"config.json has unknown vla_lab fields {sorted(unknown)}")
        return cls(
            vision=vision,
            text=text,
            pad_to_multiple_of=d.get("pad_to_multiple_of", 64),
            n_action_bins=d.get("n_action_bins", 256),
            **{k: v for k, v in own.items() if k not in ("pad_to_multiple_of", "n_action_bins")},
        )


def _stats_for(timm_id: str) -> tuple[list[float], list[float]]:
    if "dinov2" in timm_id:
        return DINOV2_MEAN, DINOV2_STD
    if "siglip" in timm_id:
        return SIGLIP_MEAN, SIGLIP_STD
    raise ValueError(f"no image statistics known for vision backbone {timm_id!r}")


def config_from_mapping(cfg: dict[str, Any]) -> OpenVLAConfig:
    """Builds the dataclass from a plain mapping (e.g. a resolved Hydra node)."""
    cfg = dict(cfg)
    cfg["vision"] = [v if isinstance(v, ViTSpec) else ViTSpec(**v) for v in cfg.get("vision", [])] or None
    if cfg["vision"] is None:
        del cfg["vision"]
    if "text" in cfg and not isinstance(cfg["text"], LlamaSpec):
        cfg["text"] = LlamaSpec(**cfg["text"])
    if "l1_head" in cfg and not isinstance(cfg["l1_head"], L1HeadSpec):
        cfg["l1_head"] = L1HeadSpec(**cfg["l1_head"])
    return OpenVLAConfig(**cfg)
