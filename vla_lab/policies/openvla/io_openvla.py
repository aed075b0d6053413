"""What OpenVLA checkpoints need beyond weights: the text tokenizer (loaded or trained on the
instructions), the FAST tokenizer (fitted on the training set's chunks), and the config changes a
checkpoint may take at load time: a ``tokens`` head becoming a FAST one, auxiliary readouts added,
replaced or dropped, and the check that adapters describe their base's network."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from vla_lab.policies.fast_tokenizer import FastActionTokenizer
from vla_lab.policies.openvla.configuration_openvla import OpenVLAConfig
from vla_lab.policies.openvla.heads_openvla import aux_heads
from vla_lab.policies.openvla.processor_openvla import action_step, check_fast_matches
from vla_lab.policies.text_tokenizer import load_tokenizer, space_token_id, train_bpe_tokenizer

if TYPE_CHECKING:
    from vla_lab.policies.openvla.modeling_openvla import OpenVLAForActionPrediction, OpenVLAPolicy

log = logging.getLogger(__name__)


def build_tokenizer(config: OpenVLAConfig, corpus: list[str] | None):
    """The text tokenizer of a fresh policy: loaded from ``config.tokenizer``, or trained on ``corpus``
    around the ids reserved for actions."""
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


def same_network(a: OpenVLAConfig, b: OpenVLAConfig) -> bool:
    """Whether ``a`` and ``b`` describe the same weights: auxiliary readouts aside, and a ``tokens``
    and a ``fast`` head alike."""
    da, db = a.to_hf_dict(), b.to_hf_dict()
    for d in (da, db):
        for name in AUX_FIELDS:
            d["vla_lab"].pop(name, None)
    if {a.action_head, b.action_head} == {"tokens", "fast"}:
        for d in (da, db):
            for name in TOKEN_HEAD_FIELDS:
                d["vla_lab"].pop(name, None)
    return da == db


def adopt_fast_head(config: OpenVLAConfig, source: OpenVLAConfig | None, directory: Path) -> None:
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


def ensure_fast_tokenizer(policy: OpenVLAPolicy, action_chunks, directory: Path) -> OpenVLAPolicy:
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


def restore_rotary(model: OpenVLAForActionPrediction) -> None:
    """Rotary frequencies are non-persistent buffers, absent from checkpoints: rebuild them off meta."""
    lm = model.language_model.model
    lm.rotary_emb = type(lm.rotary_emb)(config=lm.config)
