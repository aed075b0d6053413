"""Policy benchmarks on the tiny configs: training throughput (bf16 autocast), model FLOPs
utilisation against the measured matmul peak, and inference latency per action of the ``tokens``,
``l1_chunk`` and ``fast`` heads at chunk 8. The FAST head's latency depends on how many tokens the model
emits before ``</s>``; untrained, it usually runs to its budget (K·A tokens), so its entry reports the
tokens generated and how many its tokenizer needs for the benchmark's chunks."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

WARMUP, STEPS, BATCH, CHUNK = 2, 6, 8, 8


def _matmul_peak(dtype: torch.dtype, n: int = 2048, iters: int = 6) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    return 2 * n**3 * iters / (time.perf_counter() - start)


def _smooth_chunks(n: int, chunk: int, dim: int = 7, seed: int = 0) -> np.ndarray:
    """Normalized (n, chunk, dim) chunks: slow sinusoids, like a demonstration's motion (fits FAST)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, chunk)[None, :, None]
    amp, freq, phase = (rng.uniform(lo, hi, (n, 1, dim)) for lo, hi in ((0.1, 0.8), (0, 0.5), (0, 2 * np.pi)))
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def _make(head: str, chunk: int):
    from vla_lab.config.compose import compose
    from vla_lab.policies.config import register_configs
    from vla_lab.policies.factory import make_policy

    register_configs()
    cfg = compose("model", ["model=openvla_tiny", f"model.action_head={head}", f"model.chunk_size={chunk}"])
    chunks = _smooth_chunks(2000, chunk) if head == "fast" else None
    return make_policy(cfg.model, corpus=["pick up the red block", "open the drawer"], action_chunks=chunks)


def _batch(batch: int, chunk: int, size: int = 224) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "observation.images.agentview": torch.rand(batch, 3, size, size, generator=g),
        "task": ["pick up the red block"] * batch,
        "action": torch.rand(batch, chunk, 7, generator=g) * 2 - 1,
        "action_is_pad": torch.zeros(batch, chunk, dtype=torch.bool),
    }


def _flops_per_sample(policy) -> float:
    """6·params·tokens summed over the ViTs (their patches) and the LLM (its sequence)."""
    m = policy.model
    vb = m.vision_backbone
    vits = [vb.featurizer, vb.fused_featurizer] if vb.use_fused_vision_backbone else [vb.featurizer]
    flops = sum(6 * sum(p.numel() for p in v.blocks[:-1].parameters()) * 261 for v in vits)
    llm_params = sum(p.numel() for n, p in m.language_model.named_parameters() if "embed_tokens" not in n)
    return flops + 6 * llm_params * (1 + 256 + 20 + 7 * policy.config.chunk_size + 1)


def train_throughput() -> dict:
    torch.manual_seed(0)
    policy = _make("tokens", 1).train()
    batch = _batch(BATCH, 1)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    for step in range(WARMUP + STEPS):
        if step == WARMUP:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = policy(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    elapsed = time.perf_counter() - start
    sps = STEPS * BATCH / elapsed
    peak = _matmul_peak(torch.bfloat16)
    achieved = sps * _flops_per_sample(policy)
    return {
        "samples_per_s": round(sps, 2),
        "batch_size": BATCH,
        "precision": "bf16 autocast",
        "achieved_tflops": round(achieved / 1e12, 4),
        "bf16_matmul_peak_tflops": round(peak / 1e12, 3),
        "mfu": round(achieved / peak, 4),
    }


#: Goal of the OFT-style head: at least this many times faster per action than bin tokens.
L1_SPEEDUP_GOAL = 8.0


def latencies_per_action(heads: tuple[str, ...], rounds: int = 15) -> dict[str, dict]:
    """Median latency of one chunk per head. The heads are timed in interleaved rounds, so a slow
    spell of a shared machine hits all of them alike instead of skewing one head's figure."""
    torch.manual_seed(0)
    policies = {h: _make(h, CHUNK).eval() for h in heads}
    obs = _batch(1, CHUNK)
    samples: dict[str, list[float]] = {h: [] for h in heads}
    with torch.inference_mode():
        for policy in policies.values():
            policy.predict_action_chunk(obs)
        for _ in range(rounds):
            for head, policy in policies.items():
                start = time.perf_counter()
                policy.predict_action_chunk(obs)
                samples[head].append(time.perf_counter() - start)
    out = {}
    for head, times in samples.items():
        per_chunk = float(np.median(times))
        out[head] = {
            "ms_per_chunk": round(1e3 * per_chunk, 2),
            "ms_per_action": round(1e3 * per_chunk / CHUNK, 2),
            "rounds": rounds,
        }
    if "fast" in policies:
        out["fast"].update(_fast_token_counts(policies["fast"], obs))
    return out


def _fast_token_counts(policy, obs) -> dict:
    with torch.no_grad():
        patches, prompts = policy._encode_observation(obs)
        generated = len(policy.generate_fast_ids(patches, prompts)[0])
    needed = [len(r) for r in policy.fast_tokenizer.encode(_smooth_chunks(500, CHUNK, seed=1))]
    return {
        "generated_tokens": generated,
        "fast_tokens_per_chunk_needed": round(float(np.mean(needed)), 1),
        "bin_tokens_per_chunk": CHUNK * 7,
        # An untrained model never emits </s>, so its timing is that of the full K·A budget.
        "note": "untrained model: decodes its whole budget; a trained one stops after about the needed tokens",
    }


def smolvla_tiny() -> dict:
    """Training samples/s (bf16 autocast, VLM frozen as by default) and latency of one 10-step chunk."""
    from vla_lab.config.compose import compose
    from vla_lab.policies.config import register_configs
    from vla_lab.policies.factory import make_policy

    register_configs()
    torch.manual_seed(0)
    cfg = compose("model", ["model=smolvla_tiny"])
    policy = make_policy(cfg.model, corpus=["pick up the red block"])
    k = policy.config.chunk_size
    batch = _batch(BATCH, k)
    batch["observation.state"] = torch.rand(BATCH, 8) * 2 - 1
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-4)
    for step in range(WARMUP + STEPS):
        if step == WARMUP:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = policy(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sps = STEPS * BATCH / (time.perf_counter() - start)
    policy.eval()
    obs = {key: v[:1] for key, v in batch.items()}
    policy.predict_action_chunk(obs)
    start = time.perf_counter()
    policy.predict_action_chunk(obs)
    per_chunk = time.perf_counter() - start
    return {
        "train_samples_per_s": round(sps, 2),
        "batch_size": BATCH,
        "chunk_size": k,
        "ms_per_chunk": round(1e3 * per_chunk, 2),
        "ms_per_action": round(1e3 * per_chunk / k, 2),
    }


def run(out_dir: Path) -> dict:
    lat = latencies_per_action(("tokens", "l1_chunk", "fast"))
    speedup = lat["tokens"]["ms_per_action"] / lat["l1_chunk"]["ms_per_action"]
    return {
        "openvla_tiny_train": train_throughput(),
        "openvla_tiny_latency_chunk8": {
            **lat,
            "l1_speedup_per_action": round(speedup, 2),
            "l1_speedup_goal": L1_SPEEDUP_GOAL,
            "meets_goal": speedup >= L1_SPEEDUP_GOAL,
        },
        "smolvla_tiny": smolvla_tiny(),
        "fp32_matmul_peak_tflops": round(_matmul_peak(torch.float32) / 1e12, 3),
    }
