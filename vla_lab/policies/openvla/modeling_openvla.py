"""Native Prismatic / OpenVLA model with module names and shapes of the official checkpoint.

``OpenVLAForActionPrediction`` holds ``vision_backbone.featurizer`` (DINOv2, timm),
``vision_backbone.fused_featurizer`` (SigLIP, timm), ``projector.fc1/fc2/fc3`` and
``language_model`` (``LlamaForCausalLM``); the optional ``action_head`` exists only for the
``l1_chunk`` head (the ``tokens`` and ``fast`` heads predict text-vocabulary ids with the LM head).
Patch features come from the second-to-last ViT block without the final norm, the two backbones'
features are concatenated per patch, and the projected patches are inserted right after ``<s>``.
``OpenVLAPolicy`` adds the vla_lab policy contract on top.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from timm.layers import LayerScale
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from vla_lab.config import keys
from vla_lab.policies import lora
from vla_lab.policies.action_tokenizer import BinActionTokenizer
from vla_lab.policies.checkpoint import load_state_dict_files, load_strict, save_state_dict
from vla_lab.policies.contract import VLAPolicy, check_actions, check_images, tasks_of
from vla_lab.policies.fast_tokenizer import FastActionTokenizer, from_llm_ids, to_llm_ids
from vla_lab.policies.openvla.configuration_openvla import L1HeadSpec, LlamaSpec, OpenVLAConfig, ViTSpec
from vla_lab.policies.openvla.processor_openvla import OpenVLAProcessor, action_step, check_fast_matches
from vla_lab.policies.quantization import disable_cpu_inference_repack, quantize_linears

IGNORE_INDEX = -100
log = logging.getLogger(__name__)


class ScaledResidual(nn.Module):
    """timm's LayerScale with its weight named ``scale_factor`` as in the official checkpoint
    (a parameter named ``gamma`` is renamed by some loaders, so upstream avoided it)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale_factor = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_factor


def build_vit(spec: ViTSpec, init_weights: bool = True) -> nn.Module:
    """timm ViT without classifier; ``init_weights=False`` allows building on the meta device."""
    vit = timm.create_model(
        spec.timm_id,
        pretrained=False,
        num_classes=0,
        img_size=spec.img_size,
        act_layer=spec.act_layer,
        weight_init=spec.weight_init if init_weights else "skip",
        **spec.timm_kwargs(),
    )
    for block in vit.blocks:
        for name in ("ls1", "ls2"):
            old = getattr(block, name, None)
            if isinstance(old, LayerScale):
                new = ScaledResidual(old.gamma.shape[0]).to(old.gamma.device)
                if old.gamma.device.type != "meta":
                    new.scale_factor.data.copy_(old.gamma.data)
                setattr(block, name, new)
    if init_weights and spec.pos_embed_init == "sincos":
        init_sincos_pos_embed(vit)
    return vit


def init_sincos_pos_embed(vit: nn.Module) -> None:
    """Writes 2-D sine-cosine codes of the patch grid into the (trainable) patch position embeddings;
    prefix tokens that carry their own embedding (class token) keep theirs."""
    grid = list(vit.patch_embed.grid_size)
    codes = build_sincos2d_pos_embed(grid, vit.embed_dim)  # (H*W, D), values in [-1, 1]
    with torch.no_grad():
        vit.pos_embed[:, vit.pos_embed.shape[1] - codes.shape[0] :].copy_(codes)


class FiLM(nn.Module):
    """OpenVLA-OFT+'s language conditioning of one ViT block: ``x * (1 + gamma) + beta`` after the
    block's attention, gamma and beta projected from the prompt's average token embedding. The same
    gamma and beta apply to every patch, so the towers can turn up the channels of what the
    instruction names while keeping where it is."""

    def __init__(self, llm_dim: int, vision_dim: int) -> None:
        super().__init__()
        self.scale = nn.Linear(llm_dim, vision_dim)
        self.shift = nn.Linear(llm_dim, vision_dim)

    def forward(self, x: torch.Tensor, language: torch.Tensor) -> torch.Tensor:
        return x * (1 + self.scale(language)[:, None]) + self.shift(language)[:, None]


def filmed_block(block: nn.Module, film: FiLM, x: torch.Tensor, language: torch.Tensor) -> torch.Tensor:
    """A timm ViT block with ``film`` between its attention and its MLP."""
    x = x + block.drop_path1(block.ls1(block.attn(block.norm1(x))))
    x = film(x, language)
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def penultimate_patches(
    vit: nn.Module,
    x: torch.Tensor,
    grad_ckpt: bool = False,
    films: nn.ModuleList | None = None,
    language: torch.Tensor | None = None,
) -> torch.Tensor:
    """Patch tokens after the second-to-last block (prefix tokens dropped, no final norm); with
    ``films``, each block is conditioned on ``language`` (B, llm_dim)."""
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
    for i, block in enumerate(vit.blocks[:-1]):
        if films is not None:
            args = (block, films[i], x, language)
            fn = filmed_block
        else:
            args, fn = (x,), block
        x = checkpoint(fn, *args, use_reentrant=False) if grad_ckpt and x.requires_grad else fn(*args)
    return x[:, vit.num_prefix_tokens :]


class PrismaticVisionBackbone(nn.Module):
    """The (fused) towers. With ``num_images`` > 1 (OpenVLA-OFT's multi-image input, e.g. a third-person
    and a wrist camera) every image goes through the same towers and the patch sequences are
    concatenated, image after image: ``pixel_values`` stacks the images' channels, (B, n·C, H, W)."""

    def __init__(
        self,
        specs: list[ViTSpec],
        init_weights: bool = True,
        num_images: int = 1,
        film_dim: int | None = None,
    ) -> None:
        """``film_dim``: the LLM width, to condition every block on the instruction (OFT+'s FiLM);
        None: unconditioned towers, as released OpenVLA."""
        super().__init__()
        self.featurizer = build_vit(specs[0], init_weights)
        self.embed_dim = self.featurizer.embed_dim
        self.use_fused_vision_backbone = len(specs) == 2
        if self.use_fused_vision_backbone:
            self.fused_featurizer = build_vit(specs[1], init_weights)
            self.embed_dim += self.fused_featurizer.embed_dim
        self.num_images = num_images
        self.use_film = film_dim is not None
        if self.use_film:
            # separate from the timm blocks, so that their names stay those of the released checkpoint
            self.film = nn.ModuleDict(
                {
                    name: nn.ModuleList(FiLM(film_dim, vit.embed_dim) for _ in vit.blocks[:-1])
                    for name, vit in self._towers()
                }
            )
        self.gradient_checkpointing = False

    def _towers(self) -> list[tuple[str, nn.Module]]:
        towers = [("featurizer", self.featurizer)]
        return towers + (
            [("fused_featurizer", self.fused_featurizer)] if self.use_fused_vision_backbone else []
        )

    def forward(self, pixel_values: torch.Tensor, language: torch.Tensor | None = None) -> torch.Tensor:
        """``language`` (B, llm_dim): the prompts' average token embedding, needed with FiLM."""
        if self.use_film and language is None:
            raise ValueError(
                "these vision towers are FiLM-conditioned (use_film): pass the language embedding"
            )
        if self.num_images == 1:
            return self._patches(pixel_values, language)
        # one batched pass over all images, then each sample's patches side by side
        images = torch.cat(pixel_values.chunk(self.num_images, dim=1), dim=0)
        if language is not None:
            language = language.repeat(self.num_images, 1)
        return torch.cat(self._patches(images, language).chunk(self.num_images, dim=0), dim=1)

    def _patches(self, pixel_values: torch.Tensor, language: torch.Tensor | None) -> torch.Tensor:
        images = (
            torch.split(pixel_values, [3, 3], dim=1) if self.use_fused_vision_backbone else [pixel_values]
        )
        return torch.cat(
            [
                penultimate_patches(
                    vit,
                    image,
                    self.gradient_checkpointing,
                    self.film[name] if self.use_film else None,
                    language,
                )
                for (name, vit), image in zip(self._towers(), images, strict=True)
            ],
            dim=2,
        )


class PrismaticProjector(nn.Module):
    """GELU MLP; the fused variant widens to 4× the vision width first (3 layers)."""

    def __init__(self, fused: bool, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fused = fused
        if fused:
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
            self.act_fn1, self.act_fn2 = nn.GELU(), nn.GELU()
        else:
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
            self.act_fn1 = nn.GELU()

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.act_fn1(self.fc1(patches)))
        return self.fc3(self.act_fn2(x)) if self.fused else x


class ProprioProjector(nn.Module):
    """OpenVLA-OFT's proprio projector: the normalized state becomes one token in the LLM's space."""

    def __init__(self, proprio_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.act_fn = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn(self.fc1(state)))


class ActionQueries(nn.Module):
    """Learned placeholder embeddings, one per action value of the chunk. Learned rather than zero
    (OFT's choice): with zero inputs every slot starts identical and small models learn slowly."""

    def __init__(self, n: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, dim) * 0.02)

    def forward(self, batch: int) -> torch.Tensor:
        return self.weight.unsqueeze(0).expand(batch, -1, -1)


class L1ActionHead(nn.Module):
    """Residual MLP from the hidden states of one chunk step's A placeholders to its A actions."""

    def __init__(self, llm_dim: int, action_dim: int, spec: L1HeadSpec) -> None:
        super().__init__()
        hidden = spec.hidden_dim or llm_dim
        width = llm_dim * (action_dim + int(spec.read_prompt_end))
        self.norm_in = nn.LayerNorm(width)
        self.fc_in = nn.Linear(width, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU())
            for _ in range(spec.num_blocks)
        )
        self.norm_out = nn.LayerNorm(hidden)
        self.fc_out = nn.Linear(hidden, action_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.fc_in(self.norm_in(h)))
        for block in self.blocks:
            x = x + block(x)
        return self.fc_out(self.norm_out(x))


def llama_config(spec: LlamaSpec) -> LlamaConfig:
    cfg = LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rms_norm_eps=spec.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
        bos_token_id=spec.bos_token_id,
        eos_token_id=spec.eos_token_id,
        pad_token_id=spec.pad_token_id,
        initializer_range=spec.initializer_range,
        tie_word_embeddings=False,
    )
    cfg._attn_implementation = "sdpa"
    return cfg


class OpenVLAForActionPrediction(nn.Module):
    """The checkpoint-compatible network (no tokenizer, no statistics)."""

    def __init__(self, config: OpenVLAConfig, init_weights: bool = True) -> None:
        super().__init__()
        self.config = config
        self.vision_backbone = PrismaticVisionBackbone(
            config.vision,
            init_weights,
            len(config.cameras),
            config.text.hidden_size if config.use_film else None,
        )
        self.projector = PrismaticProjector(
            config.fused, self.vision_backbone.embed_dim, config.text.hidden_size
        )
        self.language_model = LlamaForCausalLM(llama_config(config.text))
        if config.proprio_dim:
            self.proprio_projector = ProprioProjector(config.proprio_dim, config.text.hidden_size)
        if config.action_head == "l1_chunk":
            self.action_queries = ActionQueries(
                config.chunk_size * config.action_dim, config.text.hidden_size
            )
            self.action_head = L1ActionHead(config.text.hidden_size, config.action_dim, config.l1_head)
        for head in aux_heads(config):
            setattr(self, head, nn.Linear(config.text.hidden_size, config.aux_dim))

    def embed_images(self, pixel_values: torch.Tensor, language: torch.Tensor | None = None) -> torch.Tensor:
        return self.projector(self.vision_backbone(pixel_values, language))

    def average_prompt_embedding(self, prompts: list[list[int]], device: torch.device) -> torch.Tensor:
        """(B, llm_dim): the mean input embedding of each prompt's tokens (FiLM's language input)."""
        return torch.stack([self.embed_tokens(torch.tensor(p, device=device)).mean(0) for p in prompts])

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.language_model.get_input_embeddings()(ids)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self.vision_backbone.gradient_checkpointing = enabled
        lm = self.language_model
        if enabled:
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif lm.is_activation_checkpointing:
            lm.activation_checkpointing_disable()


class Sequence:
    """A left-padded multimodal sequence: ``[pad…, <s>, patches, prompt…, suffix…]``."""

    def __init__(self, embeds: torch.Tensor, mask: torch.Tensor) -> None:
        self.embeds, self.mask = embeds, mask
        self.position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)


def assemble(
    model: OpenVLAForActionPrediction,
    patches: torch.Tensor,
    prompts: list[list[int]],
    suffix: torch.Tensor | None,
) -> Sequence:
    """``prompts`` start with ``<s>``; ``suffix`` (B, S, D) embeddings are appended to every row."""
    batch, device = len(prompts), patches.device
    width = max(len(p) for p in prompts)
    ids = torch.zeros(batch, width, dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :] = torch.tensor(p, device=device)
    text = model.embed_tokens(ids)
    rows = []
    for b, p in enumerate(prompts):
        start = width - len(p)
        parts = [text[b, start : start + 1], patches[b], text[b, start + 1 :]]
        if suffix is not None:
            parts.append(suffix[b])
        rows.append(torch.cat(parts))
    length = max(r.shape[0] for r in rows)
    embeds = patches.new_zeros(batch, length, patches.shape[-1])
    mask = torch.zeros(batch, length, dtype=torch.bool, device=device)
    for b, r in enumerate(rows):
        embeds[b, length - r.shape[0] :] = r
        mask[b, length - r.shape[0] :] = True
    return Sequence(embeds, mask)


def block_bidirectional_mask(mask: torch.Tensor, n_block: int) -> torch.Tensor:
    """(B, 1, L, L) boolean mask: causal over real tokens, but the last ``n_block`` positions see each other."""
    length = mask.shape[1]
    idx = torch.arange(length, device=mask.device)
    allowed = idx[None, :] <= idx[:, None]
    in_block = idx >= length - n_block
    allowed = allowed | (in_block[:, None] & in_block[None, :])
    allowed = allowed[None] & mask[:, None, :]
    # Padding rows would be all-False (NaN in softmax): let them attend to themselves.
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=mask.device)[None]
    return allowed[:, None]


def tail_hidden_states(
    lm, seq: Sequence, mask: torch.Tensor, n: int, with_prompt_end: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The LLM's final hidden states at the last ``n`` positions, equal to
    ``lm(...).last_hidden_state[:, -n:]``. Only those positions feed the l1 head, so the last decoder
    layer computes keys and values everywhere but queries, attention output and MLP for the ``n``
    positions alone: with few layers that is a large share of the work, in training and inference.
    ``with_prompt_end`` also returns the (normed) state of the token before them, the prompt's last,
    as the last layer reads it (rows are left-padded, so it is at ``-n - 1`` in every row)."""
    hidden = seq.embeds
    cos, sin = lm.rotary_emb(hidden, position_ids=seq.position_ids)
    *body, last = lm.layers[: lm.config.num_hidden_layers]
    for layer in body:
        hidden = layer(
            hidden, attention_mask=mask, position_embeddings=(cos, sin), position_ids=seq.position_ids
        )
    attn = last.self_attn
    batch, length, _ = hidden.shape
    normed = last.input_layernorm(hidden)
    q = attn.q_proj(normed[:, -n:]).view(batch, n, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(normed).view(batch, length, -1, attn.head_dim).transpose(1, 2)
    v = attn.v_proj(normed).view(batch, length, -1, attn.head_dim).transpose(1, 2)
    q = apply_rotary_pos_emb(q, q, cos[:, -n:], sin[:, -n:])[0]
    k = apply_rotary_pos_emb(k, k, cos, sin)[0]
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask[:, :, -n:], scale=attn.scaling, enable_gqa=k.shape[1] != q.shape[1]
    )
    prompt_end = hidden[:, -n - 1]
    hidden = hidden[:, -n:] + attn.o_proj(out.transpose(1, 2).reshape(batch, n, -1))
    hidden = hidden + last.mlp(last.post_attention_layernorm(hidden))
    return (lm.norm(hidden), lm.norm(prompt_end)) if with_prompt_end else lm.norm(hidden)


class OpenVLAPolicy(VLAPolicy):
    name = "openvla"

    def __init__(self, config: OpenVLAConfig, processor, init_weights: bool = True) -> None:
        super().__init__(config.chunk_size, config.n_action_steps, config.temporal_ensemble_coeff)
        self.config = config
        self.processor = processor
        self.model = OpenVLAForActionPrediction(config, init_weights)
        self.action_tokenizer = BinActionTokenizer(config.vocab_size, config.n_action_bins)
        self.model.set_gradient_checkpointing(config.gradient_checkpointing)

    base_path: str | None = None
    peft_spec = None
    base_fingerprint: str | None = None

    def submodels(self) -> dict[str, str]:
        """Sub-model names accepted by PEFT specs → module paths inside ``self.model``."""
        return {
            "vision": "vision_backbone",
            "projector": "projector",
            "llm": "language_model",
            "action_head": "action_head",
            "action_queries": "action_queries",
            "proprio": "proprio_projector",
            "aux": "aux_head",
            "aux_action": "aux_action_head",
        }

    def fresh_submodels(self) -> list[str]:
        """Sub-models no pretrained checkpoint provides: trained in full even under LoRA."""
        fresh = ["action_queries", "action_head"] if self.config.action_head == "l1_chunk" else []
        fresh += [{"aux_head": "aux", "aux_action_head": "aux_action"}[h] for h in aux_heads(self.config)]
        return fresh + (["proprio"] if self.config.proprio_dim else [])

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self.model.set_gradient_checkpointing(enabled)

    def apply_peft(self, spec) -> OpenVLAPolicy:
        self.base_fingerprint = lora.base_fingerprint(self.model)
        if self.base_path is None and spec.method != "none":
            self.base_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.peft_spec = spec
        return lora.apply_peft(self, spec)

    def merge_adapters(self) -> OpenVLAPolicy:
        lora.merge_adapters(self)
        self.peft_spec, self.base_path = None, None
        return self

    def save_pretrained(self, directory: str | Path) -> None:
        save_openvla(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs: Any) -> OpenVLAPolicy:
        return load_openvla(directory, **kwargs)

    # ---- inputs ----
    def _encode_observation(self, observation) -> tuple[torch.Tensor, list[list[int]]]:
        """Prefix inputs: projected patches (plus the state token under ``proprio_injection=token``)
        and the prompts' token ids."""
        pixel_values = self._pixel_values(observation)
        prompts = self.processor.prompt_ids(tasks_of(observation, pixel_values.shape[0]))
        patches = self.model.embed_images(pixel_values, self._language(prompts, pixel_values))
        if self.config.proprio_dim and self.config.proprio_injection == "token":
            patches = torch.cat([patches, self._state_embedding(observation, patches)], dim=1)
        return patches, prompts

    def _pixel_values(self, observation) -> torch.Tensor:
        """The cameras' images as the towers' input, in the weights' float dtype."""
        images = check_images(observation, self.config.cameras, self.config.image_size)
        dtype = self.model.projector.fc1.weight.dtype
        dtype = dtype if dtype.is_floating_point else torch.float32
        return self.processor.pixel_values(images).to(dtype)

    def vision_towers(self) -> nn.Module:
        """The fused vision backbone (what ``vla_lab.training.vision_pretrain`` warms up)."""
        return self.model.vision_backbone

    def _language(self, prompts: list[list[int]], pixel_values: torch.Tensor) -> torch.Tensor | None:
        """The towers' FiLM input under ``use_film``, in the images' dtype; else None."""
        if not self.config.use_film:
            return None
        return self.model.average_prompt_embedding(prompts, pixel_values.device).to(pixel_values.dtype)

    def vision_patches(self, observation) -> torch.Tensor:
        """(B, patches, width) features of the towers, before the projector."""
        pixel_values = self._pixel_values(observation)
        language = (
            self._language(self.instruction_ids(observation), pixel_values) if self.config.use_film else None
        )
        return self.model.vision_backbone(pixel_values, language)

    def instruction_ids(self, observation) -> list[list[int]]:
        """The prompt token ids of each instruction in the batch."""
        return self.processor.prompt_ids(tasks_of(observation, len(observation[keys.TASK])))

    def text_vocab_size(self) -> int:
        return self.config.text.vocab_size

    def _query_offset(self, observation, patches: torch.Tensor) -> torch.Tensor | None:
        """What every action placeholder gets added: the state embedding under
        ``proprio_injection=queries``, else nothing."""
        if self.config.proprio_dim and self.config.proprio_injection == "queries":
            return self._state_embedding(observation, patches)
        return None

    def _state_embedding(self, observation, patches: torch.Tensor) -> torch.Tensor:
        state = self._proprio(observation, patches.shape[0]).to(device=patches.device, dtype=patches.dtype)
        return self.model.proprio_projector(state)[:, None]

    def _proprio(self, observation, batch: int) -> torch.Tensor:
        state = observation.get(keys.STATE)
        if state is None:
            raise KeyError(
                f"this policy has proprio_dim={self.config.proprio_dim} and needs {keys.STATE!r} "
                "(set data.proprio_keys, or build the model with proprio_dim=0)"
            )
        if tuple(state.shape) != (batch, self.config.proprio_dim):
            raise ValueError(
                f"{keys.STATE} must be (B={batch}, proprio_dim={self.config.proprio_dim}), got "
                f"{tuple(state.shape)}: model.proprio_dim and data.proprio_keys disagree"
            )
        return state

    def _hidden(self, seq: Sequence, attn: torch.Tensor | None = None, **kw):
        return self.model.language_model.model(
            inputs_embeds=seq.embeds,
            attention_mask=seq.mask if attn is None else attn,
            position_ids=seq.position_ids,
            **kw,
        )

    # ---- training ----
    def forward(self, batch) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        action, is_pad = check_actions(batch, self.config.chunk_size, self.config.action_dim)
        patches, prompts = self._encode_observation(batch)
        if self.config.action_head == "l1_chunk":
            return self._l1_forward(
                patches,
                prompts,
                action,
                is_pad,
                self._query_offset(batch, patches),
                self._aux_batch_key(batch, self.config.aux_target),
                self._aux_batch_key(batch, self.config.aux_action_target),
            )
        if self.config.action_head == "fast":
            return self._fast_forward(patches, prompts, action, is_pad)
        return self._token_forward(patches, prompts, action, is_pad)

    def _token_forward(self, patches, prompts, action, is_pad):
        batch = action.shape[0]
        targets = self.action_tokenizer.encode(action).reshape(batch, -1)
        eos = torch.full((batch, 1), self.config.text.eos_token_id, dtype=torch.long, device=targets.device)
        suffix_ids = torch.cat([targets, eos], dim=1)
        seq = assemble(self.model, patches, prompts, self.model.embed_tokens(suffix_ids))
        hidden = self._hidden(seq).last_hidden_state
        n = suffix_ids.shape[1]
        logits = self.model.language_model.lm_head(hidden[:, -n - 1 : -1]).float()
        labels = suffix_ids.clone()
        labels[:, :-1][is_pad.repeat_interleave(self.config.action_dim, dim=1)] = IGNORE_INDEX
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX
        )
        with torch.no_grad():
            pred = logits[:, :-1].argmax(-1)
            valid = labels[:, :-1] != IGNORE_INDEX
            acc = (pred == targets)[valid].float().mean()
            pred_actions = self.action_tokenizer.decode(pred).reshape(action.shape)
        return loss, {
            "loss": loss.detach(),
            "token_accuracy": acc,
            **action_metrics(pred_actions, action, is_pad),
        }

    def _placeholders(self, batch: int, patches: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
        queries = self.model.action_queries(batch).to(patches.dtype)
        return queries if offset is None else queries + offset

    def _l1_chunk(
        self,
        patches,
        prompts,
        offset: torch.Tensor | None = None,
        with_aux: bool = False,
        with_block: bool = False,
    ):
        """(B, K, A) chunk; with ``with_aux`` also ``aux_target``'s readout input (B, hidden), with
        ``with_block`` also the action block's mean state (B, hidden)."""
        batch = patches.shape[0]
        n = self.config.chunk_size * self.config.action_dim
        seq = assemble(self.model, patches, prompts, self._placeholders(batch, patches, offset))
        head_reads_prompt = self.config.l1_head.read_prompt_end
        from_prompt = with_aux and self.config.aux_readout == "prompt"
        hidden = tail_hidden_states(
            self.model.language_model.model,
            seq,
            block_bidirectional_mask(seq.mask, n),
            n,
            from_prompt or head_reads_prompt,
        )
        hidden, prompt_end = hidden if from_prompt or head_reads_prompt else (hidden, None)
        steps = hidden.reshape(batch, self.config.chunk_size, -1)
        if head_reads_prompt:
            steps = torch.cat([steps, prompt_end[:, None].expand(-1, self.config.chunk_size, -1)], dim=-1)
        pred = self.model.action_head(steps).float()
        block = hidden.mean(dim=1)
        out = (
            (pred,)
            + ((prompt_end if from_prompt else block,) if with_aux else ())
            + ((block,) if with_block else ())
        )
        return out if len(out) > 1 else pred

    def aux_guess(self, features: torch.Tensor, head: str = "aux_head") -> torch.Tensor:
        """An auxiliary estimate in its target's units: ``aux_head`` from ``_l1_chunk(...,
        with_aux=True)[1]``, ``aux_action_head`` from the action block's mean state."""
        return getattr(self.model, head)(features).float() * self.config.aux_scale

    def _aux_batch_key(self, batch, name: str | None) -> torch.Tensor | None:
        """The privileged target ``name`` (training batches only), checked for shape."""
        if name is None:
            return None
        target = batch.get(keys.aux_key(name))
        if target is None:
            raise KeyError(
                f"auxiliary target {name!r} needs {keys.aux_key(name)!r} in the batch: add {name!r} to "
                "data.aux_keys (and collect it, e.g. vla-collect record_object_pos=true)"
            )
        if target.ndim != 2 or target.shape[1] != self.config.aux_dim:
            raise ValueError(
                f"{keys.aux_key(name)} must be (B, aux_dim={self.config.aux_dim}), got {tuple(target.shape)}"
            )
        return target

    def _l1_forward(
        self, patches, prompts, action, is_pad, offset=None, aux_target=None, aux_action_target=None
    ):
        with_aux = aux_target is not None or aux_action_target is not None
        if with_aux:
            pred, readout, block = self._l1_chunk(patches, prompts, offset, with_aux=True, with_block=True)
        else:
            pred = self._l1_chunk(patches, prompts, offset)
        keep = (~is_pad).unsqueeze(-1).float()
        loss = (torch.abs(pred - action) * keep).sum() / (keep.sum() * action.shape[-1]).clamp(min=1)
        logs = {**action_metrics(pred.detach(), action, is_pad)}
        # errors are logged in the targets' own units (m for positions)
        for name, head, features, target in (
            ("aux_l1", "aux_head", readout if with_aux else None, aux_target),
            ("aux_action_l1", "aux_action_head", block if with_aux else None, aux_action_target),
        ):
            if target is not None:
                error = torch.abs(self.aux_guess(features, head) - target.float())
                loss = loss + self.config.aux_weight * error.mean() / self.config.aux_scale
                logs[name] = error.mean().detach()
        return loss, {"loss": loss.detach(), **logs}

    # ---- the FAST head ----
    @property
    def fast_tokenizer(self) -> FastActionTokenizer:
        fast = getattr(self.processor, "fast_tokenizer", None)
        if fast is None:
            raise RuntimeError("action_head='fast' but the processor holds no FAST tokenizer")
        return fast

    def _fast_targets(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(suffix ids (B, L), labels (B, L), FAST lengths (B,)): each row's FAST ids then </s>, right-
        padded to the longest row with the pad id, whose labels are ignored. The chunk's padded steps
        (the last action repeated) are part of its encoding: the DCT mixes steps, so they cannot be
        masked one by one."""
        rows = self.fast_tokenizer.encode(action.detach().float().cpu().numpy())
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        width = int(lengths.max()) + 1
        eos, pad = self.config.text.eos_token_id, self.config.text.pad_token_id
        suffix = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for b, row in enumerate(rows):
            ids = torch.from_numpy(to_llm_ids(row, self.config.vocab_size))
            suffix[b, : len(row)], suffix[b, len(row)] = ids, eos
            labels[b, : len(row) + 1] = suffix[b, : len(row) + 1]
        device = action.device
        return suffix.to(device), labels.to(device), lengths.to(device)

    def _fast_forward(self, patches, prompts, action, is_pad):
        suffix_ids, labels, lengths = self._fast_targets(action)
        seq = assemble(self.model, patches, prompts, self.model.embed_tokens(suffix_ids))
        hidden = self._hidden(seq).last_hidden_state
        n = suffix_ids.shape[1]
        logits = self.model.language_model.lm_head(hidden[:, -n - 1 : -1]).float()
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX
        )
        with torch.no_grad():
            pred = logits.argmax(-1)
            is_action = torch.arange(n, device=pred.device)[None] < lengths[:, None]
            acc = (pred == suffix_ids)[is_action].float().mean()
            # Teacher-forced argmax ids, one row per target length, decoded like generated ones.
            rows = [pred[b, : int(lengths[b])].tolist() for b in range(pred.shape[0])]
            pred_actions, malformed = self._decode_fast(rows)
        return loss, {
            "loss": loss.detach(),
            "token_accuracy": acc,
            "fast_tokens_per_chunk": lengths.float().mean(),
            "fast_malformed_rate": torch.tensor(float(malformed.mean()), device=action.device),
            **action_metrics(pred_actions.to(action.device), action, is_pad),
        }

    def _decode_fast(self, llm_rows: list[list[int]]) -> tuple[torch.Tensor, np.ndarray]:
        """Language-model id rows → ((B, K, A) normalized actions, malformed flags (B,))."""
        fast_rows = [from_llm_ids(r, self.config.vocab_size) for r in llm_rows]
        chunks, malformed = self.fast_tokenizer.decode(fast_rows)
        return torch.from_numpy(chunks), malformed

    @torch.no_grad()
    def generate_fast_ids(self, patches: torch.Tensor, prompts: list[list[int]]) -> list[list[int]]:
        """Greedy decoding with a KV cache, restricted to the FAST ids and </s>, until every row has
        emitted </s> or K·A tokens (no valid chunk needs more: a token spells >= 1 coefficient, so a
        row still going is cut there). Rows that finished are fed </s> until the others are done.
        Returns each row's ids before its </s>."""
        eos = self.config.text.eos_token_id
        allowed = self._fast_logit_mask(self.config.text.vocab_size, patches.device)
        done = torch.zeros(len(prompts), dtype=torch.bool, device=patches.device)

        def choose(logits: torch.Tensor) -> torch.Tensor:
            nonlocal done
            nxt = logits.float().masked_fill(~allowed, float("-inf")).argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
            done = done | (nxt == eos)
            return nxt[:, None]

        budget = self.config.chunk_size * self.config.action_dim
        tokens = self._greedy_decode(patches, prompts, budget, choose, finished=lambda: bool(done.all()))
        ids = tokens.tolist()
        return [row[: row.index(eos)] if eos in row else row for row in ids]

    def _fast_logit_mask(self, n_logits: int, device: torch.device) -> torch.Tensor:
        """True for the ids the BPE can emit and </s>: a text id carries no action and was never a target."""
        allowed = torch.zeros(n_logits, dtype=torch.bool, device=device)
        vocab = self.config.vocab_size
        allowed[vocab - self.fast_tokenizer.n_tokens : vocab] = True
        allowed[self.config.text.eos_token_id] = True
        return allowed

    def _predict_fast(self, patches, prompts) -> torch.Tensor:
        chunks, malformed = self._decode_fast(self.generate_fast_ids(patches, prompts))
        if malformed.any():
            _warn_malformed(self.fast_tokenizer, int(malformed.sum()), len(prompts))
        return chunks.to(patches.device)

    # ---- inference ----
    @torch.no_grad()
    def predict_action_chunk(self, observation) -> torch.Tensor:
        patches, prompts = self._encode_observation(observation)
        if self.config.action_head == "l1_chunk":
            return self._l1_chunk(patches, prompts, self._query_offset(observation, patches))
        if self.config.action_head == "fast":
            return self._predict_fast(patches, prompts)
        ids = self.generate_action_ids(patches, prompts)
        return self.action_tokenizer.decode(ids).reshape(len(prompts), self.config.chunk_size, -1)

    @torch.no_grad()
    def generate_action_ids(self, patches: torch.Tensor, prompts: list[list[int]]) -> torch.Tensor:
        """Greedy decoding of ``chunk_size × action_dim`` tokens with a KV cache."""
        budget = self.config.chunk_size * self.config.action_dim
        return self._greedy_decode(patches, prompts, budget, lambda logits: logits.argmax(-1, keepdim=True))

    def _greedy_decode(self, patches, prompts, budget: int, choose, finished=lambda: False) -> torch.Tensor:
        """(B, ≤ budget) ids: the prompt is prefilled once, then each step feeds ``choose(last logits)``
        ((B, V) → (B, 1) ids) back through the KV cache, until ``budget`` steps or ``finished()``."""
        seq = assemble(self.model, patches, prompts, None)
        lm = self.model.language_model
        out = lm(
            inputs_embeds=seq.embeds,
            attention_mask=seq.mask.long(),
            position_ids=seq.position_ids,
            past_key_values=DynamicCache(config=lm.config),
            use_cache=True,
            logits_to_keep=1,
        )
        mask, pos = seq.mask.long(), seq.position_ids[:, -1:]
        tokens = []
        for step in range(budget):
            nxt = choose(out.logits[:, -1])
            tokens.append(nxt)
            if step + 1 == budget or finished():
                break
            mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
            pos = pos + 1
            out = lm(
                input_ids=nxt,
                attention_mask=mask,
                position_ids=pos,
                past_key_values=out.past_key_values,
                use_cache=True,
            )
        return torch.cat(tokens, dim=1)


def _warn_malformed(fast: FastActionTokenizer, n_bad: int, batch: int) -> None:
    """Warns when the running count passes 1, 2, 4, 8, …: visible, without flooding a long evaluation."""
    total = fast.counts["malformed"]
    if total.bit_length() > (total - n_bad).bit_length():
        log.warning(
            "FAST: %d of %d generated chunks did not decode to exactly K·A coefficients (repaired: "
            "unknown ids dropped, missing high frequencies zero); %d of %d so far",
            n_bad,
            batch,
            total,
            fast.counts["decoded"],
        )


def action_metrics(pred: torch.Tensor, target: torch.Tensor, is_pad: torch.Tensor) -> dict[str, torch.Tensor]:
    """Validation metrics in normalized units; dims 0-2 position, 3-5 rotation, last = gripper."""
    keep = ~is_pad
    p, t = pred[keep].float(), target[keep].float()
    if p.numel() == 0:
        return {}
    out = {"l1_error": (p - t).abs().mean()}
    if p.shape[-1] >= 7:
        out["position_l1"] = (p[:, :3] - t[:, :3]).abs().mean()
        out["rotation_l1"] = (p[:, 3:6] - t[:, 3:6]).abs().mean()
        out["direction_accuracy"] = (torch.sign(p[:, :3]) == torch.sign(t[:, :3])).float().mean()
        # The gripper dim is not normalized: [0, 1], 1 = open.
        out["gripper_accuracy"] = ((p[:, -1] > 0.5) == (t[:, -1] > 0.5)).float().mean()
    return out


# ---- construction and persistence ----
CONFIG_FILE = "config.json"


def build_tokenizer(config: OpenVLAConfig, corpus: list[str] | None):
    from vla_lab.policies.text_tokenizer import load_tokenizer, space_token_id, train_bpe_tokenizer

    if config.tokenizer == "checkpoint":
        raise ValueError(
            "this config takes its tokenizer from a checkpoint: set model.pretrained to its directory"
        )
    if config.tokenizer != "train":
        return load_tokenizer(config.tokenizer)
    n_text = config.vocab_size - config.n_action_ids
    tokenizer = train_bpe_tokenizer(corpus or [], n_text=n_text, n_action=config.n_action_ids)
    if config.space_token_id != space_token_id(tokenizer):
        config.space_token_id = space_token_id(tokenizer)
    return tokenizer


def fit_fast_tokenizer(config: OpenVLAConfig, action_chunks: np.ndarray | None) -> FastActionTokenizer:
    """The FAST tokenizer of ``config``, fitted on the training set's normalized chunks (N, K, A)."""
    if action_chunks is None or len(action_chunks) == 0:
        raise ValueError(
            "model.action_head=fast fits its tokenizer on the training set's normalized action chunks: "
            "pass action_chunks=datamodule.action_chunks() to make_policy (vla-train does)"
        )
    chunks = np.asarray(action_chunks)
    if chunks.ndim != 3 or chunks.shape[1:] != (config.chunk_size, config.action_dim):
        raise ValueError(
            f"action_chunks have shape {chunks.shape}; model.chunk_size={config.chunk_size} and "
            f"model.action_dim={config.action_dim} need (N, {config.chunk_size}, {config.action_dim})"
        )
    fast = FastActionTokenizer.fit(chunks, scale=config.fast_scale, vocab_size=config.fast_vocab_size)
    lengths = [len(r) for r in fast.encode(chunks)]
    log.info(
        "FAST tokenizer fitted on %d chunks: %d tokens, %.1f tokens per chunk on them (bins: %d)",
        len(chunks),
        fast.n_tokens,
        float(np.mean(lengths)),
        config.chunk_size * config.action_dim,
    )
    return fast


def make_openvla_policy(
    config: OpenVLAConfig,
    corpus: list[str] | None = None,
    norm_stats: dict[str, Any] | None = None,
    action_chunks: np.ndarray | None = None,
) -> OpenVLAPolicy:
    """A fresh policy; ``corpus`` (the dataset's instructions) trains the small configs' tokenizer and
    ``action_chunks`` (normalized, (N, K, A)) the FAST tokenizer of ``action_head=fast``."""
    if config.pretrained:
        return OpenVLAPolicy.from_pretrained(
            config.pretrained, overrides=config, norm_stats=norm_stats, action_chunks=action_chunks
        )
    tokenizer = build_tokenizer(config, corpus)
    fast = fit_fast_tokenizer(config, action_chunks) if config.action_head == "fast" else None
    processor = OpenVLAProcessor.from_config(config, tokenizer, norm_stats, fast)
    return OpenVLAPolicy(config, processor)


def save_openvla(policy: OpenVLAPolicy, directory: str | Path) -> None:
    """Full weights, or — for an adapted policy — peft adapters plus a reference to the base."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = policy.config.to_hf_dict()
    cfg["norm_stats"] = policy.processor.norm_stats
    if lora.is_adapted(policy):
        lora.save_adapters(policy, directory)
        cfg["peft"] = dataclasses.asdict(policy.peft_spec)
        cfg["base_model"] = _base_reference(policy, directory)
        cfg["base_fingerprint"] = policy.base_fingerprint
    else:
        save_state_dict(policy.model.state_dict(), directory)
    (directory / CONFIG_FILE).write_text(json.dumps(cfg, indent=2))
    policy.processor.save_pretrained(directory)


def _base_reference(policy: OpenVLAPolicy, directory: Path) -> str:
    if policy.base_path is not None:
        return str(Path(policy.base_path).resolve())
    # A randomly initialised base exists nowhere else: keep it next to the adapters.
    base_dir = directory / "base"
    base_dir.mkdir(exist_ok=True)
    save_state_dict(policy.base_state, base_dir)
    cfg = policy.config.to_hf_dict()
    (base_dir / CONFIG_FILE).write_text(json.dumps(cfg, indent=2))
    policy.processor.save_pretrained(base_dir)
    return "base"


def load_openvla(
    directory: str | Path,
    overrides: OpenVLAConfig | None = None,
    norm_stats: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    quantization: str | None = None,
    action_chunks: np.ndarray | None = None,
) -> OpenVLAPolicy:
    """Loads a vla_lab or official OpenVLA checkpoint directory (full weights or adapters).
    ``overrides`` may change run-time fields only (chunk execution, gradient checkpointing), with one
    exception: ``overrides.action_head == "fast"`` turns a ``tokens``-head checkpoint into a FAST one
    (both heads are the LM head over the vocabulary, so every weight carries over) and fits its FAST
    tokenizer on ``action_chunks``. A FAST checkpoint always decodes with its saved tokenizer."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{directory} has no {CONFIG_FILE}: not a checkpoint directory")
    raw = json.loads((directory / CONFIG_FILE).read_text())
    if (directory / lora.ADAPTER_CONFIG).exists():
        policy = _load_adapted(directory, raw, overrides, norm_stats)
    else:
        policy = _load_full(directory, raw, overrides, norm_stats, dtype, quantization)
    return _ensure_fast_tokenizer(policy, action_chunks, directory)


def _load_full(
    directory: Path,
    raw: dict[str, Any],
    overrides: OpenVLAConfig | None,
    norm_stats: dict[str, Any] | None,
    dtype: torch.dtype | None = None,
    quantization: str | None = None,
    head_source: OpenVLAConfig | None = None,
) -> OpenVLAPolicy:
    config = OpenVLAConfig.from_hf_dict(raw)
    _adopt_fast_head(config, head_source or overrides, directory)
    if overrides is not None:
        for name in ("n_action_steps", "temporal_ensemble_coeff", "gradient_checkpointing"):
            setattr(config, name, getattr(overrides, name))
    saved_stats = raw.get("norm_stats") or {}
    processor = OpenVLAProcessor.from_pretrained(directory, config, {**saved_stats, **(norm_stats or {})})
    with torch.device("meta"):
        policy = OpenVLAPolicy(config, processor, init_weights=False)
    load_strict(policy.model, load_state_dict_files(directory), f"checkpoint {directory}")
    _materialize_buffers(policy.model)
    if overrides is not None:
        adopt_aux_target(policy, overrides)
    policy.base_path = str(directory)
    if dtype is not None:
        policy.to(dtype)
    if quantization is not None:
        quantize_linears(policy.model, ["language_model"], quantization)
        disable_cpu_inference_repack(policy.model)
    return policy


def _load_adapted(directory: Path, raw: dict[str, Any], overrides, norm_stats) -> OpenVLAPolicy:
    from vla_lab.policies.config import peft_spec_from

    base_dir = Path(raw["base_model"])
    base_dir = base_dir if base_dir.is_absolute() else directory / base_dir
    if not (base_dir / CONFIG_FILE).exists():
        raise FileNotFoundError(f"base model {base_dir} of the adapters in {directory} has no {CONFIG_FILE}")
    own = OpenVLAConfig.from_hf_dict(raw)
    base_raw = json.loads((base_dir / CONFIG_FILE).read_text())
    stats = {**(raw.get("norm_stats") or {}), **(norm_stats or {})}
    # Adapters trained with the FAST head on a tokens-head base carry the head; the base does not.
    head = own if own.action_head == "fast" else overrides
    if (base_dir / lora.ADAPTER_CONFIG).exists():
        policy = _load_adapted(base_dir, base_raw, overrides, stats)
    else:
        policy = _load_full(base_dir, base_raw, overrides, stats, head_source=head)
    policy.processor = OpenVLAProcessor.from_pretrained(directory, policy.config, policy.processor.norm_stats)
    spec = peft_spec_from(raw["peft"])
    adopt_aux_target(policy, own)  # the adapters were trained with their own auxiliary readout (or none)
    if not _same_network(own, OpenVLAConfig.from_hf_dict(base_raw)):
        raise ValueError(
            f"adapter config in {directory} describes another architecture than its base {base_dir}"
        )
    lora.load_adapters(policy, directory, spec, raw.get("base_fingerprint"))
    policy.peft_spec = spec
    return policy


#: Fields in which a ``tokens`` and a ``fast`` config of the same network may differ: how actions map
#: to ids and how chunks execute, never the weights.
TOKEN_HEAD_FIELDS = (
    "action_head",
    "chunk_size",
    "n_action_steps",
    "temporal_ensemble_coeff",
    "fast_vocab_size",
    "fast_scale",
)


#: Training-only fields: the auxiliary readouts are added, replaced or dropped at load (``adopt_aux_target``).
AUX_FIELDS = ("aux_target", "aux_readout", "aux_action_target", "aux_dim", "aux_weight", "aux_scale")


def aux_heads(config: OpenVLAConfig) -> list[str]:
    """The auxiliary readout modules ``config`` asks for."""
    return [
        head
        for head, target in (("aux_head", config.aux_target), ("aux_action_head", config.aux_action_target))
        if target is not None
    ]


def adopt_aux_target(policy: OpenVLAPolicy, source: OpenVLAConfig) -> None:
    """Gives a loaded policy ``source``'s auxiliary targets: a fine-tune on data without the privileged
    keys drops the pretraining readouts; a new target or readout place gets a fresh readout (trained
    in full)."""
    config, model = policy.config, policy.model
    if all(getattr(config, f) == getattr(source, f) for f in AUX_FIELDS):
        return
    kept = {
        "aux_head": (config.aux_target, config.aux_readout, config.aux_dim),
        "aux_action_head": (config.aux_action_target, config.aux_dim),
    }
    for name in AUX_FIELDS:
        setattr(config, name, getattr(source, name))
    config.validate()
    now = {
        "aux_head": (config.aux_target, config.aux_readout, config.aux_dim),
        "aux_action_head": (config.aux_action_target, config.aux_dim),
    }
    ref = model.language_model.get_input_embeddings().weight
    for head in ("aux_head", "aux_action_head"):
        if hasattr(model, head) and kept[head] != now[head]:
            delattr(model, head)
        if head in aux_heads(config) and not hasattr(model, head):
            setattr(
                model,
                head,
                nn.Linear(config.text.hidden_size, config.aux_dim).to(device=ref.device, dtype=ref.dtype),
            )


def _same_network(a: OpenVLAConfig, b: OpenVLAConfig) -> bool:
    da, db = a.to_hf_dict(), b.to_hf_dict()
    for d in (da, db):
        for name in AUX_FIELDS:
            d["vla_lab"].pop(name, None)
    if {a.action_head, b.action_head} == {"tokens", "fast"}:
        for d in (da, db):
            for name in TOKEN_HEAD_FIELDS:
                d["vla_lab"].pop(name, None)
    return da == db


def _adopt_fast_head(config: OpenVLAConfig, source: OpenVLAConfig | None, directory: Path) -> None:
    """Switches a ``tokens``-head checkpoint's config to ``source``'s FAST head (chunk, vocabulary and
    scale included: the tokenizer is fitted for them)."""
    if source is None or source.action_head != "fast" or config.action_head == "fast":
        return
    if config.action_head != "tokens":
        raise ValueError(
            f"checkpoint {directory} has action_head={config.action_head!r}; model.action_head=fast can "
            "start only from a 'tokens' or 'fast' checkpoint (the l1_chunk head has weights of its own)"
        )
    config.action_head = "fast"
    config.chunk_size = source.chunk_size
    config.n_action_steps, config.temporal_ensemble_coeff = (
        source.n_action_steps,
        source.temporal_ensemble_coeff,
    )
    config.fast_vocab_size, config.fast_scale = source.fast_vocab_size, source.fast_scale
    config.validate()


def _ensure_fast_tokenizer(policy: OpenVLAPolicy, action_chunks, directory: Path) -> OpenVLAPolicy:
    """A FAST policy leaves here with a tokenizer matching its config: the saved one, or one fitted on
    ``action_chunks`` when the checkpoint had the ``tokens`` head."""
    if policy.config.action_head != "fast":
        return policy
    processor = policy.processor
    if processor.fast_tokenizer is not None:
        check_fast_matches(
            processor.fast_tokenizer, action_step(policy.config), f"FAST tokenizer of {directory}"
        )
        return policy
    if action_chunks is None:
        raise ValueError(
            f"{directory} holds no FAST tokenizer but action_head=fast: fine-tune it with vla-train, "
            "which fits one on the training set's action chunks (make_policy(..., action_chunks="
            "datamodule.action_chunks())), or load a checkpoint trained with action_head=fast"
        )
    processor.attach_fast_tokenizer(fit_fast_tokenizer(policy.config, action_chunks), policy.config)
    return policy


def _materialize_buffers(model: OpenVLAForActionPrediction) -> None:
    """Non-persistent buffers (rotary frequencies) are not in checkpoints: rebuild them off meta."""
    lm = model.language_model.model
    lm.rotary_emb = type(lm.rotary_emb)(config=lm.config)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if left:
        raise RuntimeError(f"tensors left uninitialised after loading: {left[:10]}")
