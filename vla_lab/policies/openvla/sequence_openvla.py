"""OpenVLA's language-model input and the attention shortcuts its heads rely on: the left-padded
multimodal sequence ``[pad…, <s>, patches, prompt…, suffix…]``, the mask that lets an action block
see itself bidirectionally, and a last layer computed only where the l1 head reads."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

if TYPE_CHECKING:
    from vla_lab.policies.openvla.modeling_openvla import OpenVLAForActionPrediction


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
