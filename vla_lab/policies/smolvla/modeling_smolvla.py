"""Native SmolVLA: SmolVLM (transformers' classes) truncated to its first N text layers, plus an
action expert that shares the attention of every layer with the VLM.

Module names follow lerobot's checkpoints (``model.vlm_with_expert.vlm.*``,
``model.vlm_with_expert.lm_expert.*``, ``model.state_proj``, ``model.action_in_proj`` …).
Sequence: ``[image tokens × cameras, instruction tokens | state token | K noisy-action tokens]``;
the prefix attends bidirectionally, the state opens a new block, actions attend causally. On
self-attention layers the VLM and expert tokens attend jointly; on cross-attention layers the VLM
attends over the prefix and the expert attends to the VLM's (rotated) keys and values through its
own k/v projections. Flow matching: ``x_t = t·noise + (1-t)·actions`` with ``t ~ Beta(1.5, 1)``
(scaled to [0.001, 1]), the expert regresses ``noise - actions``; inference integrates 10 Euler
steps from t = 1 to 0 with the prefix K/V computed once.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import LlamaConfig, LlamaModel, SmolVLMConfig, SmolVLMForConditionalGeneration

from vla_lab.policies.contract import check_actions, tasks_of
from vla_lab.policies.pretrained import PretrainedPolicy
from vla_lab.policies.smolvla.configuration_smolvla import SmolVLAConfig
from vla_lab.policies.smolvla.processor_smolvla import SmolVLAProcessor
from vla_lab.policies.text_tokenizer import load_tokenizer, train_bpe_tokenizer

ROPE_WAVELENGTH = 10_000  # the expert stack's own rotary base, not the VLM's rope_theta


def apply_rope(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (split-half) of ``x`` (B, L, H, D) at integer ``positions`` (B, L), in fp32."""
    half = x.shape[-1] // 2
    freq = ROPE_WAVELENGTH ** ((2.0 / x.shape[-1]) * torch.arange(half, dtype=torch.float32, device=x.device))
    angles = (positions[..., None].float() / freq)[..., None, :]
    sin, cos = torch.sin(angles), torch.cos(angles)
    x1, x2 = x.float().split(half, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


def time_embedding(t: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """Sine-cosine embedding of flow times (B,) with periods log-spaced in [min, max] (fp64)."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    arg = (2 * math.pi / period)[None, :] * t[:, None].double()
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


def block_mask(pad: torch.Tensor, ar: torch.Tensor) -> torch.Tensor:
    """(B, N, N): token i sees valid token j when j's block index (cumsum of ``ar``) ≤ i's."""
    block = torch.cumsum(ar.long(), dim=1)
    return (block[:, None, :] <= block[:, :, None]) & pad[:, None, :] & pad[:, :, None]


def attend(q, k, v, mask: torch.Tensor) -> torch.Tensor:
    """Grouped-query attention in fp32; fully masked rows average uniformly (no NaN)."""
    groups = q.shape[2] // k.shape[2]
    k = k.repeat_interleave(groups, dim=2)
    v = v.repeat_interleave(groups, dim=2)
    bias = torch.zeros(mask.shape, dtype=torch.float32, device=q.device).masked_fill(
        ~mask, torch.finfo(torch.float32).min
    )
    out = F.scaled_dot_product_attention(
        q.float().transpose(1, 2),
        k.float().transpose(1, 2),
        v.float().transpose(1, 2),
        attn_mask=bias[:, None],
    )
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1).to(v.dtype)


def vlm_config(cfg: SmolVLAConfig) -> SmolVLMConfig:
    t, v = cfg.text, cfg.vision
    text = dict(
        model_type="llama",
        hidden_size=t.hidden_size,
        intermediate_size=t.intermediate_size,
        num_hidden_layers=t.num_hidden_layers,
        num_attention_heads=t.num_attention_heads,
        num_key_value_heads=t.num_key_value_heads,
        head_dim=t.head_dim,
        vocab_size=t.vocab_size,
        rms_norm_eps=t.rms_norm_eps,
        max_position_embeddings=t.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": t.rope_theta},
        tie_word_embeddings=False,
    )
    vision = dict(
        hidden_size=v.hidden_size,
        intermediate_size=v.intermediate_size,
        num_hidden_layers=v.num_hidden_layers,
        num_attention_heads=v.num_attention_heads,
        image_size=v.image_size,
        patch_size=v.patch_size,
    )
    return SmolVLMConfig(
        text_config=text, vision_config=vision, scale_factor=cfg.scale_factor, tie_word_embeddings=False
    )


class SmolVLMWithExpertModel(nn.Module):
    def __init__(self, cfg: SmolVLAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        config = vlm_config(cfg)
        self.vlm = SmolVLMForConditionalGeneration(config)
        text = self.vlm.model.text_model
        text.layers = text.layers[: cfg.num_vlm_layers]
        expert_cfg: LlamaConfig = copy.deepcopy(config.text_config)
        expert_cfg.hidden_size = cfg.expert_hidden
        expert_cfg.intermediate_size = cfg.expert_intermediate
        expert_cfg.num_hidden_layers = (
            cfg.num_expert_layers if cfg.num_expert_layers > 0 else cfg.num_vlm_layers
        )
        if cfg.num_vlm_layers % expert_cfg.num_hidden_layers:
            raise ValueError(
                f"num_vlm_layers {cfg.num_vlm_layers} is not a multiple of num_expert_layers "
                f"{expert_cfg.num_hidden_layers}"
            )
        self.lm_expert = LlamaModel(expert_cfg)
        kv_in = config.text_config.num_key_value_heads * config.text_config.head_dim
        kv_out = expert_cfg.num_key_value_heads * expert_cfg.head_dim
        for i, layer in enumerate(self.lm_expert.layers):
            if self._is_cross(i, fill=False):
                layer.self_attn.k_proj = nn.Linear(kv_in, kv_out, bias=expert_cfg.attention_bias)
                layer.self_attn.v_proj = nn.Linear(kv_in, kv_out, bias=expert_cfg.attention_bias)
        self.lm_expert.embed_tokens = None  # the expert reads embeddings, never token ids
        self.gradient_checkpointing = False

    @property
    def text_model(self) -> nn.Module:
        return self.vlm.model.text_model

    def _is_cross(self, i: int, fill: bool) -> bool:
        every = self.cfg.self_attn_every_n_layers
        return not fill and self.cfg.attention_mode == "cross_attn" and not (every > 0 and i % every == 0)

    def _expert_layer(self, i: int) -> nn.Module | None:
        step = self.cfg.num_vlm_layers // len(self.lm_expert.layers)
        return None if i % step else self.lm_expert.layers[i // step]

    def embed_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        vm = self.vlm.model
        h = vm.vision_model(
            pixel_values=pixel_values.to(vm.vision_model.embeddings.patch_embedding.weight.dtype)
        )
        return vm.connector(h.last_hidden_state)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_model.get_input_embeddings()(ids)

    def forward(
        self,
        embeds: list[torch.Tensor | None],
        mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: list | None = None,
        fill_cache: bool = False,
    ) -> list[torch.Tensor | None]:
        recompute = self.gradient_checkpointing and cache is None and torch.is_grad_enabled()
        for i in range(self.cfg.num_vlm_layers):
            if recompute:
                embeds = checkpoint(
                    self._layer, i, embeds, mask, position_ids, None, False, use_reentrant=False
                )
            else:
                embeds = self._layer(i, embeds, mask, position_ids, cache, fill_cache)
        norms = [self.text_model.norm, self.lm_expert.norm]
        return [None if h is None else n(h) for n, h in zip(norms, embeds, strict=True)]

    def _layer(self, i, embeds, mask, position_ids, cache, fill_cache):
        layers = [self.text_model.layers[i], self._expert_layer(i)]
        if self._is_cross(i, fill_cache):
            att = self._cross_attention(i, layers, embeds, mask, position_ids, cache)
        else:
            att = self._joint_attention(i, layers, embeds, mask, position_ids, cache, fill_cache)
        return [self._mlp_block(layer, h, a) for layer, h, a in zip(layers, embeds, att, strict=True)]

    @staticmethod
    def _qkv(layer: nn.Module, h: torch.Tensor):
        h = layer.input_layernorm(h)
        shape = (*h.shape[:-1], -1, layer.self_attn.head_dim)
        attn = layer.self_attn
        return attn.q_proj(h).view(shape), attn.k_proj(h).view(shape), attn.v_proj(h).view(shape)

    def _joint_attention(self, i, layers, embeds, mask, pos, cache, fill):
        parts = [
            (self._qkv(layer, h), h.shape[1])
            for layer, h in zip(layers, embeds, strict=True)
            if h is not None and layer is not None
        ]
        q = torch.cat([p[0][0] for p in parts], dim=1)
        k = torch.cat([p[0][1] for p in parts], dim=1)
        v = torch.cat([p[0][2] for p in parts], dim=1)
        n = q.shape[1]
        q, k = apply_rope(q, pos[:, :n]), apply_rope(k, pos[:, :n])
        if cache is not None and fill:
            cache.append((k, v))
        elif cache is not None:
            k, v = torch.cat([cache[i][0], k], dim=1), torch.cat([cache[i][1], v], dim=1)
        out = attend(q, k, v, mask[:, :n] if mask.shape[1] > n else mask)
        outs, start = [], 0
        for layer, h in zip(layers, embeds, strict=True):
            if h is None or layer is None:
                outs.append(None)
                continue
            outs.append(out[:, start : start + h.shape[1]])
            start += h.shape[1]
        return outs

    def _cross_attention(self, i, layers, embeds, mask, pos, cache):
        vlm_layer, expert_layer = layers
        prefix, suffix = embeds
        outs: list[torch.Tensor | None] = []
        if prefix is not None and cache is None:
            p = prefix.shape[1]
            q, k, v = self._qkv(vlm_layer, prefix)
            k = apply_rope(k, pos[:, :p])
            outs.append(attend(apply_rope(q, pos[:, :p]), k, v, mask[:, :p, :p]))
            suffix_pos = pos[:, p:]
        else:
            k, v = cache[i]
            outs.append(None)
            suffix_pos = pos
        if expert_layer is None or suffix is None:
            return [*outs, None]
        attn = expert_layer.self_attn
        h = expert_layer.input_layernorm(suffix)
        q = attn.q_proj(h).view(*h.shape[:-1], -1, attn.head_dim)
        ek = attn.k_proj(k.reshape(*k.shape[:2], -1)).view(*k.shape[:2], -1, attn.head_dim)
        ev = attn.v_proj(v.reshape(*v.shape[:2], -1)).view(*v.shape[:2], -1, attn.head_dim)
        q = apply_rope(q, suffix_pos - suffix_pos.min(dim=1, keepdim=True).values)
        outs.append(attend(q, ek, ev, mask[:, -suffix.shape[1] :, : ek.shape[1]]))
        return outs

    @staticmethod
    def _mlp_block(layer, h, att):
        if h is None or layer is None or att is None:
            return h
        out = layer.self_attn.o_proj(att.to(h.dtype)) + h
        return layer.mlp(layer.post_attention_layernorm(out)) + out


class SmolVLAFlowMatching(nn.Module):
    def __init__(self, cfg: SmolVLAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vlm_with_expert = SmolVLMWithExpertModel(cfg)
        width, expert = cfg.text.hidden_size, cfg.expert_hidden
        self.state_proj = nn.Linear(cfg.max_state_dim, width)
        self.action_in_proj = nn.Linear(cfg.max_action_dim, expert)
        self.action_out_proj = nn.Linear(expert, cfg.max_action_dim)
        self.action_time_mlp_in = nn.Linear(2 * expert, expert)
        self.action_time_mlp_out = nn.Linear(expert, expert)

    def embed_prefix(self, images, lang_tokens, lang_masks, state):
        embs, pads, ars = [], [], []
        for img in images:
            e = self.vlm_with_expert.embed_image(img)
            embs.append(e * math.sqrt(e.shape[-1]))
            pads.append(torch.ones(e.shape[:2], dtype=torch.bool, device=e.device))
            ars.append(torch.zeros(e.shape[:2], dtype=torch.bool, device=e.device))
        lang = self.vlm_with_expert.embed_tokens(lang_tokens)
        embs.append(lang * math.sqrt(lang.shape[-1]))
        pads.append(lang_masks)
        ars.append(torch.zeros_like(lang_masks))
        s = self.state_proj(state.to(self.state_proj.weight.dtype))[:, None]
        embs.append(s.to(embs[0].dtype))
        pads.append(torch.ones(s.shape[:2], dtype=torch.bool, device=s.device))
        ars.append(torch.ones(s.shape[:2], dtype=torch.bool, device=s.device))
        return torch.cat(embs, 1), torch.cat(pads, 1), torch.cat(ars, 1)

    def embed_suffix(self, x_t: torch.Tensor, t: torch.Tensor):
        a = self.action_in_proj(x_t.to(self.action_in_proj.weight.dtype))
        te = time_embedding(t, a.shape[-1], self.cfg.min_period, self.cfg.max_period).to(a.dtype)
        h = self.action_time_mlp_in(torch.cat([a, te[:, None].expand_as(a)], dim=2))
        h = self.action_time_mlp_out(F.silu(h))
        ones = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        return h, ones, ones.clone()

    def velocity_loss(self, images, lang_tokens, lang_masks, state, actions, noise, t) -> torch.Tensor:
        """Per-element squared error (B, K, max_action_dim) between predicted and true velocity."""
        tt = t[:, None, None]
        x_t = tt * noise + (1 - tt) * actions
        prefix, p_pad, p_ar = self.embed_prefix(images, lang_tokens, lang_masks, state)
        suffix, s_pad, s_ar = self.embed_suffix(x_t, t)
        pad, ar = torch.cat([p_pad, s_pad], 1), torch.cat([p_ar, s_ar], 1)
        pos = torch.cumsum(pad.long(), dim=1) - 1
        _, out = self.vlm_with_expert([prefix, suffix], block_mask(pad, ar), pos)
        v_t = self.action_out_proj(
            out[:, -self.cfg.chunk_size :].float().to(self.action_out_proj.weight.dtype)
        )
        return F.mse_loss(v_t.float(), (noise - actions).float(), reduction="none")

    @torch.no_grad()
    def sample_actions(self, images, lang_tokens, lang_masks, state, noise: torch.Tensor) -> torch.Tensor:
        prefix, p_pad, p_ar = self.embed_prefix(images, lang_tokens, lang_masks, state)
        pos = torch.cumsum(p_pad.long(), dim=1) - 1
        cache: list = []
        self.vlm_with_expert([prefix, None], block_mask(p_pad, p_ar), pos, cache=cache, fill_cache=True)
        x_t, dt = noise.float(), -1.0 / self.cfg.num_steps
        for step in range(self.cfg.num_steps):
            t = torch.full((noise.shape[0],), 1.0 + step * dt, dtype=torch.float32, device=noise.device)
            x_t = x_t + dt * self._velocity(x_t, t, p_pad, cache)
        return x_t

    def _velocity(self, x_t, t, p_pad, cache) -> torch.Tensor:
        suffix, s_pad, s_ar = self.embed_suffix(x_t, t)
        batch, s, p = suffix.shape[0], suffix.shape[1], p_pad.shape[1]
        mask = torch.cat([p_pad[:, None, :].expand(batch, s, p), block_mask(s_pad, s_ar)], dim=2)
        pos = p_pad.long().sum(-1, keepdim=True) + torch.cumsum(s_pad.long(), dim=1) - 1
        _, out = self.vlm_with_expert([None, suffix], mask, pos, cache=cache)
        return self.action_out_proj(
            out[:, -self.cfg.chunk_size :].to(self.action_out_proj.weight.dtype)
        ).float()


class SmolVLAPolicy(PretrainedPolicy):
    name = "smolvla"
    config_class = SmolVLAConfig
    processor_class = SmolVLAProcessor
    weights_prefix = "model."  # lerobot's layout

    def __init__(self, config: SmolVLAConfig, processor: SmolVLAProcessor | None) -> None:
        super().__init__(config, processor)
        self.model = SmolVLAFlowMatching(config)
        self.set_gradient_checkpointing(config.gradient_checkpointing)

    # ---- sub-models and freezing ----
    def submodels(self) -> dict[str, str]:
        p = "vlm_with_expert.vlm.model"
        # "projector" aliases the connector so PEFT presets written for OpenVLA apply here too.
        return {
            "vision": f"{p}.vision_model",
            "connector": f"{p}.connector",
            "projector": f"{p}.connector",
            "llm": f"{p}.text_model",
            "expert": "vlm_with_expert.lm_expert",
            "state_proj": "state_proj",
            "action_in_proj": "action_in_proj",
            "action_out_proj": "action_out_proj",
            "action_time_mlp_in": "action_time_mlp_in",
            "action_time_mlp_out": "action_time_mlp_out",
        }

    def fresh_submodels(self) -> list[str]:
        """Trained in full next to adapters: lerobot's default recipe trains the expert and projections."""
        names = ["expert", "action_in_proj", "action_out_proj", "action_time_mlp_in", "action_time_mlp_out"]
        return names + (["state_proj"] if self.config.train_state_proj else [])

    def apply_default_freezing(self) -> None:
        """lerobot's defaults: VLM frozen when ``train_expert_only``, vision frozen, state_proj trained."""
        vlm = self.model.vlm_with_expert.vlm
        if self.config.train_expert_only:
            vlm.requires_grad_(False)
        if self.config.freeze_vision_encoder:
            vlm.model.vision_model.requires_grad_(False)
        vlm.lm_head.requires_grad_(False)  # never in the loss
        self.model.state_proj.requires_grad_(self.config.train_state_proj)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self.model.vlm_with_expert.gradient_checkpointing = enabled

    # ---- checkpoints (hooks of PretrainedPolicy) ----
    @classmethod
    def config_to_dict(cls, config: SmolVLAConfig) -> dict[str, Any]:
        return config.to_json_dict()

    @classmethod
    def config_from_dict(cls, raw: dict[str, Any]) -> SmolVLAConfig:
        """vla_lab's config.json or lerobot's (see ``SmolVLAConfig.from_json_dict``)."""
        return SmolVLAConfig.from_json_dict(raw)

    @classmethod
    def new_processor(cls, config, corpus, norm_stats, action_chunks) -> SmolVLAProcessor:
        return SmolVLAProcessor.from_config(config, build_tokenizer(config, corpus), norm_stats)

    def restore_buffers(self) -> None:
        """Rotary frequencies are not saved: rebuild them off the meta device."""
        for stack in (self.model.vlm_with_expert.text_model, self.model.vlm_with_expert.lm_expert):
            stack.rotary_emb = type(stack.rotary_emb)(config=stack.config)

    # ---- inputs ----
    def _inputs(self, observation):
        images = self.processor.images(observation)
        batch = images[0].shape[0]
        state = self.processor.state(observation, self.config.max_state_dim)
        tokens, masks = self.processor.language(tasks_of(observation, batch), images[0].device)
        return images, tokens, masks, state

    def sample_time(self, batch: int, device) -> torch.Tensor:
        beta = torch.distributions.Beta(torch.tensor(1.5), torch.tensor(1.0))
        return (beta.sample((batch,)) * 0.999 + 0.001).to(device)

    def forward(self, batch, noise: torch.Tensor | None = None, time: torch.Tensor | None = None):
        action, is_pad = check_actions(batch, self.config.chunk_size, self.config.action_dim)
        images, tokens, masks, state = self._inputs(batch)
        actions = F.pad(action.float(), (0, self.config.max_action_dim - self.config.action_dim))
        noise = torch.randn_like(actions) if noise is None else noise
        time = self.sample_time(actions.shape[0], actions.device) if time is None else time
        losses = self.model.velocity_loss(images, tokens, masks, state, actions, noise, time)
        # Padding dims and steps past the episode end carry no signal: average over real entries.
        keep = (~is_pad)[..., None].float()
        real = losses[..., : self.config.action_dim] * keep
        loss = real.sum() / (keep.sum() * self.config.action_dim).clamp(min=1)
        return loss, {"loss": loss.detach(), "flow_time_mean": time.mean().detach()}

    @torch.no_grad()
    def predict_action_chunk(self, observation, noise: torch.Tensor | None = None) -> torch.Tensor:
        images, tokens, masks, state = self._inputs(observation)
        shape = (state.shape[0], self.config.chunk_size, self.config.max_action_dim)
        noise = torch.randn(shape, device=state.device) if noise is None else noise
        x = self.model.sample_actions(images, tokens, masks, state, noise)
        return x[:, :, : self.config.action_dim]


def build_tokenizer(config: SmolVLAConfig, corpus: list[str] | None):
    if config.tokenizer != "train":
        return load_tokenizer(config.tokenizer)
    return train_bpe_tokenizer(corpus or [], n_text=config.text.vocab_size, n_action=0)
