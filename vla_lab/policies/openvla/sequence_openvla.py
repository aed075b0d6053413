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
    """``prompts`` start with ``<s>``; ``suffix`` (B, S, D) embeddings are appended to every row.

    One gather builds every row (its backward one scatter): assigning rows one by one into a
    zero tensor made autograd copy the whole sequence's gradient once per row."""
    batch, device = len(prompts), patches.device
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    width, n_patch = int(lengths.max()), patches.shape[1]
    n_suffix = 0 if suffix is None else suffix.shape[1]
    ids = torch.zeros(batch, width, dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :] = torch.tensor(p, device=device)
    parts = [model.embed_tokens(ids), patches] + ([suffix] if suffix is not None else [])
    source = torch.cat([*parts, patches.new_zeros(batch, 1, patches.shape[-1])], dim=1)
    # source positions: text [0, width), patches [width, width + P), suffix after, one zero row last
    length = width + n_patch + n_suffix
    j = torch.arange(length, device=device)[None]
    start = (width - lengths)[:, None]  # left padding of each row = the index of its <s>
    index = torch.where(j <= start, j, j - n_patch)  # <s> and, after the patches, the prompt
    index = torch.where((j > start) & (j <= start + n_patch), width + j - start - 1, index)
    index = torch.where(j >= width + n_patch, j, index)  # the suffix sits at the same offset
    index = torch.where(j < start, source.shape[1] - 1, index)
    embeds = source.gather(1, index[..., None].expand(-1, -1, source.shape[-1]))
    return Sequence(embeds, (j >= start).expand(batch, -1).contiguous())


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
