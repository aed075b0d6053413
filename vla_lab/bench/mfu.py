"""Model FLOPs utilisation of training on this machine: FLOPs per sample counted by
``torch.utils.flop_counter`` over one forward and backward pass, times the measured samples/s, over
the measured matmul peak of the precision training runs in (fp32: the CPU trainer's, ``trainer=cpu``;
bf16 autocast pays only on hardware with bf16 matrix units, and the peak it would be measured
against is reported beside it)."""

from __future__ import annotations

import time

import torch

WARMUP, STEPS, BATCH, CHUNK, SIZE = 2, 6, 32, 8, 224
MODELS = ("openvla_tiny", "openvla_small")


def _policy(model: str):
    from vla_lab.config.compose import compose
    from vla_lab.policies.config import register_configs
    from vla_lab.policies.factory import make_policy

    register_configs()
    cfg = compose("model", [f"model={model}", "model.action_head=l1_chunk", f"model.chunk_size={CHUNK}"])
    return make_policy(cfg.model, corpus=["pick up the red block", "open the drawer"])


def _batch() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "observation.images.agentview": torch.rand(BATCH, 3, SIZE, SIZE, generator=g),
        "task": ["pick up the red block", "open the drawer"] * (BATCH // 2),
        "action": torch.rand(BATCH, CHUNK, 7, generator=g) * 2 - 1,
        "action_is_pad": torch.zeros(BATCH, CHUNK, dtype=torch.bool),
    }


def flops_per_sample(policy, batch: dict) -> float:
    """Counted FLOPs of one training step's forward and backward, per sample."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss, _ = policy(batch)
        loss.backward()
    policy.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(batch["task"])


def samples_per_s(policy, batch: dict) -> float:
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4, foreach=True)
    for step in range(WARMUP + STEPS):
        if step == WARMUP:
            start = time.perf_counter()
        loss, _ = policy(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return STEPS * len(batch["task"]) / (time.perf_counter() - start)


def run() -> dict:
    from vla_lab.bench.policies import _matmul_peak

    models = {}
    for name in MODELS:
        torch.manual_seed(0)
        policy, batch = _policy(name).train(), _batch()
        flops = flops_per_sample(policy, batch)
        peak = _matmul_peak(torch.float32)  # next to the model's timing: a busy spell hits both
        rate = samples_per_s(policy, batch)
        models[name] = {
            "fp32_matmul_peak_gflops": round(peak / 1e9, 1),
            "params": sum(p.numel() for p in policy.parameters()),
            "gflop_per_sample": round(flops / 1e9, 3),
            "samples_per_s": round(rate, 2),
            "achieved_gflops": round(rate * flops / 1e9, 2),
            "mfu": round(rate * flops / peak, 4),
        }
    return {
        "precision": "fp32",
        "batch_size": BATCH,
        "image_size": SIZE,
        "head": f"l1_chunk, chunk {CHUNK}",
        "bf16_matmul_peak_gflops": round(_matmul_peak(torch.bfloat16, n=512, iters=2) / 1e9, 1),
        "models": models,
    }
