"""Closed-loop evaluation throughput: episodes per minute of one simulator (sequential) against
``VECTOR_ENVS`` stepped together (``eval.vectorized``: a ``VectorSimEnv`` over two renderer processes,
one batched policy forward per step), same policy, same fixed episode plan, in interleaved rounds.
The policy is the freshly initialised tiny checkpoint of the serving benchmark (openvla_tiny,
``l1_chunk``, chunk 8, 4 actions executed per chunk); its episodes run to the step budget, so both
do the same work, and the bench checks that both scored the same episodes alike."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

EPISODES_PER_TASK, MAX_STEPS, VECTOR_ENVS, ROUNDS = 6, 30, 4, 2


def _config(num_envs: int):
    from vla_lab.eval.config import EvalConfig, ExecutionConfig

    return EvalConfig(
        tasks=["reach_target", "pick_block"],
        environments=["studio"],
        episodes_per_task=EPISODES_PER_TASK,
        max_steps=MAX_STEPS,
        num_envs=num_envs,
        videos_per_task=0,
        execution=ExecutionConfig(n_action_steps=4),
    )


def run(out_dir: Path) -> dict:
    from vla_lab.bench.serve import _checkpoint
    from vla_lab.rollout.evaluate import evaluate_policy
    from vla_lab.rollout.runtime import PolicyRuntime

    rates: dict[str, list[float]] = {"sequential": [], "vectorised": []}
    episodes: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="vla_bench_eval_") as tmp:
        runtime = PolicyRuntime.from_checkpoint(_checkpoint(Path(tmp)))
        for _ in range(ROUNDS):
            for side, n in (("sequential", 1), ("vectorised", VECTOR_ENVS)):
                start = time.perf_counter()  # includes starting the browsers, as a user's evaluation does
                out = evaluate_policy(runtime, _config(n))
                rates[side].append(60 * len(out["results"]) / (time.perf_counter() - start))
                episodes[side] = [(r.task, r.seed, r.success, r.steps) for r in out["results"]]
    ratios = [v / s for v, s in zip(rates["vectorised"], rates["sequential"], strict=True)]
    return {
        "policy": "openvla_tiny l1_chunk, chunk 8, 4 actions executed per chunk, 224 px",
        "episodes": len(episodes["sequential"]),
        "max_steps": MAX_STEPS,
        "vectorised_envs": VECTOR_ENVS,
        "rounds": ROUNDS,
        "episodes_per_min_sequential": round(statistics.median(rates["sequential"]), 1),
        "episodes_per_min_vectorised": round(statistics.median(rates["vectorised"]), 1),
        "speedup": round(statistics.median(ratios), 2),
        "speedup_by_round": [round(x, 2) for x in ratios],
        "same_episodes": episodes["sequential"] == episodes["vectorised"],
    }
