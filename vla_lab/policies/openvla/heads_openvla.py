"""OpenVLA's three action heads, as mixins of ``OpenVLAPolicy`` (which provides ``config``,
``model``, ``processor``, ``action_tokenizer`` and ``_hidden``):

- ``tokens``: OpenVLA's 256 bins per action value, one LM-head token each, decoded greedily;
- ``l1_chunk``: OpenVLA-OFT's continuous head, an MLP over the hidden states of K·A learned
  placeholders that attend to each other, trained with L1 (plus optional auxiliary readouts);
- ``fast``: FAST tokens (DCT + BPE over a whole chunk) in the text vocabulary, decoded greedily
  over the FAST ids only.

Also the modules the ``l1_chunk`` head adds and the action metrics every head logs.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from vla_lab.config import keys
from vla_lab.policies.fast_tokenizer import FastActionTokenizer, from_llm_ids, to_llm_ids
from vla_lab.policies.openvla.configuration_openvla import L1HeadSpec, OpenVLAConfig
from vla_lab.policies.openvla.sequence_openvla import assemble, block_bidirectional_mask, tail_hidden_states

IGNORE_INDEX = -100
log = logging.getLogger(__name__)


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


def aux_heads(config: OpenVLAConfig) -> list[str]:
    """The auxiliary readout modules ``config`` asks for."""
    return [
        head
        for head, target in (("aux_head", config.aux_target), ("aux_action_head", config.aux_action_target))
        if target is not None
    ]


class TokenHead:
    """OpenVLA's binned action tokens: cross-entropy on K·A ids and </s>, greedy decoding."""

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


class L1ChunkHead:
    """OpenVLA-OFT's continuous chunk head and the auxiliary readouts trained beside it."""

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


class FastHead:
    """FAST tokens: the chunk's quantized DCT, BPE-merged, spelled with the last text ids."""

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
