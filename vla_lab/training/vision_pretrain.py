"""Localization warm-up of from-scratch vision towers, before the VLA itself trains.

Released VLAs start from DINOv2 / SigLIP weights that already know *where* things are. Tiny towers
trained from scratch do not, and the action loss teaches them slowly: it reaches the patches only
through the LLM's attention, which starts uniform (``experiments/demo_learnability``, section 7).
This stage trains the towers alone to regress a privileged per-frame target the data delivers
(``data.aux_keys``, e.g. ``object_pos``) through a readout with position-specific weights per patch,
a path that learns in a few hundred steps. The readout is then thrown away; the towers keep what they
learnt and the VLA trains on top of them as usual.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vla_lab.config import keys
from vla_lab.config.errors import ConfigError
from vla_lab.policies import registry

log = logging.getLogger(__name__)


SCHEDULES = ("cosine", "constant")


@dataclass
class VisionPretrainConfig:
    #: optimizer steps of the warm-up; 0 = off
    steps: int = 0
    #: the data key to regress (must be listed in data.aux_keys)
    target: str = "object_pos"
    lr: float = 1e-3
    #: "cosine": the rate decays to 0 over ``steps`` (at a constant rate the held-out error stalls
    #: at the noise level of the last updates); "constant"
    schedule: str = "cosine"
    #: the target is divided by this before the L1 loss (0.1 m: losses of order 1)
    scale: float = 0.1
    #: features per patch fed to the readout
    patch_features: int = 16
    #: held-out error is measured every this many steps (and at the end)
    log_every: int = 100
    #: held-out batches per measurement
    val_batches: int = 8

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"vision_pretrain.steps must be >= 0, got {self.steps}")
        if not self.lr > 0 or not self.scale > 0:
            raise ConfigError("vision_pretrain.lr and vision_pretrain.scale must be > 0")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"vision_pretrain.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.patch_features < 1 or self.log_every < 1 or self.val_batches < 1:
            raise ConfigError("vision_pretrain.patch_features, log_every and val_batches must be >= 1")


class PatchGridReadout(nn.Module):
    """Per-patch projection, flattened over the grid, then an MLP: weights differ per patch. The
    instruction (a bag of its token ids) scales and shifts the per-patch features (FiLM), so the
    readout can pick *the named* object's patch among distractors."""

    def __init__(
        self,
        n_patches: int,
        width: int,
        out_dim: int,
        patch_features: int,
        vocab_size: int,
        use_words: bool = True,
    ) -> None:
        super().__init__()
        self.per_patch = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, patch_features))
        self.words = nn.EmbeddingBag(vocab_size, 2 * patch_features, mode="mean")
        nn.init.zeros_(self.words.weight)  # FiLM starts as the identity
        # towers that see the instruction themselves (OpenVLA-OFT+'s FiLM) must learn which object
        # is named: a readout that could pick it out would take that lesson away with it
        self.words.weight.requires_grad_(use_words)
        self.mlp = nn.Sequential(
            nn.GELU(),
            nn.Flatten(1),
            nn.Linear(n_patches * patch_features, 256),
            nn.GELU(),
            nn.Linear(256, out_dim),
        )

    def forward(self, patches: torch.Tensor, token_ids: list[list[int]]) -> torch.Tensor:
        flat = torch.tensor([i for ids in token_ids for i in ids], device=patches.device)
        offsets = torch.tensor(
            [0, *itertools.accumulate(len(ids) for ids in token_ids[:-1])], device=patches.device
        )
        gain, bias = self.words(flat, offsets)[:, None].chunk(2, dim=-1)
        return self.mlp(self.per_patch(patches) * (1 + gain) + bias)


def check_applicable(cfg: VisionPretrainConfig, model_cfg: Any, aux_keys: list[str]) -> None:
    """Fail before any work when the warm-up cannot run with this model and data."""
    if not cfg.steps:
        return
    family = registry.find_family(model_cfg.get("family"))
    if family is None or not family.vision_warmup:
        warmable = sorted(f.name for f in registry.families() if f.vision_warmup)
        raise ConfigError(
            f"vision_pretrain.steps={cfg.steps}: the warm-up trains the vision towers of {warmable} "
            f"policies; model.family is {model_cfg.get('family')!r}"
        )
    if model_cfg.get("pretrained"):
        raise ConfigError(
            f"vision_pretrain.steps={cfg.steps} warms up towers trained from scratch, but "
            f"model.pretrained={model_cfg.get('pretrained')} already brings trained ones"
        )
    if cfg.target not in aux_keys:
        raise ConfigError(
            f"vision_pretrain.target={cfg.target!r} must be delivered by the data: add it to "
            f"data.aux_keys (now {aux_keys}); collect it with e.g. vla-collect record_object_pos=true"
        )


def _batches(loader):
    """Cycles through a loader without end (the warm-up counts steps, not epochs)."""
    while True:
        yield from loader


def _rate(cfg: VisionPretrainConfig, step: int) -> float:
    """Multiplier of ``cfg.lr`` at ``step``."""
    if cfg.schedule == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / max(cfg.steps, 1)))


def pretrain_vision(policy, train_loader, val_loader, cfg: VisionPretrainConfig) -> dict[str, Any]:
    """Trains ``policy``'s vision towers in place; returns what was measured (errors in the
    target's units, per axis averaged)."""
    target_key = keys.aux_key(cfg.target)
    towers = policy.vision_towers()
    batches = _batches(train_loader)
    first = next(batches)  # sizes the readout, then is the first training batch
    with torch.no_grad():
        patches = policy.vision_patches(first)
    readout = PatchGridReadout(
        patches.shape[1],
        patches.shape[2],
        first[target_key].shape[1],
        cfg.patch_features,
        policy.text_vocab_size(),
        use_words=not getattr(policy.config, "use_film", False),
    )

    def guess(batch) -> torch.Tensor:
        return readout(policy.vision_patches(batch), policy.instruction_ids(batch)) * cfg.scale

    params = [p for p in towers.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([*params, *readout.parameters()], lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _rate(cfg, step))

    def error(batches) -> float:
        towers.eval()
        with torch.no_grad():
            errs = [(guess(b) - b[target_key].float()).abs().mean() for b in batches]
        towers.train()
        return float(torch.stack(errs).mean())

    held_out = list(itertools.islice(val_loader, cfg.val_batches)) if val_loader is not None else []
    history = []
    started = time.perf_counter()
    was_training = towers.training
    towers.train()
    for step, batch in enumerate(itertools.chain([first], batches)):
        if step % cfg.log_every == 0 or step == cfg.steps:
            row = {"step": step, "seconds": round(time.perf_counter() - started, 1)}
            if held_out:
                row["val_error"] = round(error(held_out), 5)
            history.append(row)
            log.info("vision pretraining: %s", row)
        if step == cfg.steps:
            break
        loss = (guess(batch) - batch[target_key].float()).abs().mean() / cfg.scale
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if "train_error" not in history[-1]:  # the batch right after each measurement
            history[-1]["train_error"] = round(loss.item() * cfg.scale, 5)
    towers.train(was_training)
    targets = torch.cat([b[target_key].float() for b in held_out]) if held_out else None
    return {
        "steps": cfg.steps,
        "target": cfg.target,
        # what always answering the held-out mean would score: the error to beat
        "val_error_of_mean_guess": round(float((targets - targets.mean(0)).abs().mean()), 5)
        if held_out
        else None,
        "seconds": round(time.perf_counter() - started, 1),
        "history": history,
    }
