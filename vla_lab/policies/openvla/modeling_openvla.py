"""Native Prismatic / OpenVLA model with module names and shapes of the official checkpoint.

``OpenVLAForActionPrediction`` holds ``vision_backbone.featurizer`` (DINOv2, timm),
``vision_backbone.fused_featurizer`` (SigLIP, timm), ``projector.fc1/fc2/fc3`` and
``language_model`` (``LlamaForCausalLM``); the optional ``action_head`` exists only for the
``l1_chunk`` head (the ``tokens`` and ``fast`` heads predict text-vocabulary ids with the LM head).
Patch features come from the second-to-last ViT block without the final norm, the two backbones'
features are concatenated per patch, and the projected patches are inserted right after ``<s>``.
``OpenVLAPolicy`` adds the vla_lab policy contract on top: observations in, one of the three heads
(``heads_openvla``) out, checkpoints through ``PretrainedPolicy``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from vla_lab.config import keys
from vla_lab.policies.action_tokenizer import BinActionTokenizer
from vla_lab.policies.contract import check_actions, check_images, tasks_of
from vla_lab.policies.openvla import io_openvla
from vla_lab.policies.openvla.backbone_openvla import (
    PrismaticProjector,
    PrismaticVisionBackbone,
    ProprioProjector,
)
from vla_lab.policies.openvla.configuration_openvla import LlamaSpec, OpenVLAConfig
from vla_lab.policies.openvla.heads_openvla import (
    ActionQueries,
    FastHead,
    L1ActionHead,
    L1ChunkHead,
    TokenHead,
    aux_heads,
)
from vla_lab.policies.openvla.processor_openvla import OpenVLAProcessor
from vla_lab.policies.openvla.sequence_openvla import Sequence
from vla_lab.policies.pretrained import PretrainedPolicy

#: Fields a caller's config sets on a loaded checkpoint: how chunks execute and whether to recompute
#: activations, never the network.
RUNTIME_FIELDS = ("n_action_steps", "temporal_ensemble_coeff", "gradient_checkpointing")


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


class OpenVLAPolicy(TokenHead, L1ChunkHead, FastHead, PretrainedPolicy):
    name = "openvla"
    config_class = OpenVLAConfig
    processor_class = OpenVLAProcessor

    def __init__(self, config: OpenVLAConfig, processor, init_weights: bool = True) -> None:
        super().__init__(config, processor)
        self.model = OpenVLAForActionPrediction(config, init_weights)
        self.action_tokenizer = BinActionTokenizer(config.vocab_size, config.n_action_bins)
        self.model.set_gradient_checkpointing(config.gradient_checkpointing)

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

    # ---- checkpoints (hooks of PretrainedPolicy) ----
    @classmethod
    def config_to_dict(cls, config: OpenVLAConfig) -> dict[str, Any]:
        return config.to_hf_dict()

    @classmethod
    def config_from_dict(cls, raw: dict[str, Any]) -> OpenVLAConfig:
        return OpenVLAConfig.from_hf_dict(raw)

    @classmethod
    def new_processor(cls, config, corpus, norm_stats, action_chunks) -> OpenVLAProcessor:
        tokenizer = io_openvla.build_tokenizer(config, corpus)
        fast = io_openvla.fit_fast_tokenizer(config, action_chunks) if config.action_head == "fast" else None
        return OpenVLAProcessor.from_config(config, tokenizer, norm_stats, fast)

    @classmethod
    def skeleton(cls, config: OpenVLAConfig) -> OpenVLAPolicy:
        with torch.device("meta"):
            return cls(config, None, init_weights=False)

    @classmethod
    def checkpoint_config(cls, raw, adapter_raw, overrides, directory: Path) -> OpenVLAConfig:
        """The checkpoint's config, with the FAST head of ``overrides`` or of the adapters on top (a
        ``tokens`` checkpoint fine-tunes into a FAST one: both heads are the LM head, so every
        weight carries over) and the caller's run-time fields."""
        config = OpenVLAConfig.from_hf_dict(raw)
        own = OpenVLAConfig.from_hf_dict(adapter_raw) if adapter_raw is not None else None
        # Adapters trained with the FAST head on a tokens-head base carry the head; the base does not.
        io_openvla.adopt_fast_head(
            config, own if own is not None and own.action_head == "fast" else overrides, directory
        )
        if overrides is not None:
            for name in RUNTIME_FIELDS:
                setattr(config, name, getattr(overrides, name))
        return config

    def restore_buffers(self) -> None:
        io_openvla.restore_rotary(self.model)

    def adopt_overrides(self, overrides: OpenVLAConfig | None) -> None:
        if overrides is not None:
            io_openvla.adopt_aux_target(self, overrides)

    def check_adapters(self, adapter_raw, base_raw, directory: Path, base_dir: Path) -> None:
        own = OpenVLAConfig.from_hf_dict(adapter_raw)
        io_openvla.adopt_aux_target(
            self, own
        )  # the adapters were trained with their own auxiliary readout (or none)
        if not io_openvla.same_network(own, OpenVLAConfig.from_hf_dict(base_raw)):
            raise ValueError(
                f"adapter config in {directory} describes another architecture than its base {base_dir}"
            )

    def finish_loading(self, directory: Path, action_chunks) -> None:
        """A FAST policy leaves with a tokenizer matching its config: the saved one, or one fitted
        on ``action_chunks`` when the checkpoint had the ``tokens`` head."""
        io_openvla.ensure_fast_tokenizer(self, action_chunks, directory)

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
