"""Closed-loop evaluation throughput: episodes per minute with one simulator versus several side by
side (``eval.num_envs``), same policy, same fixed episode plan. The policy is the freshly initialised
tiny checkpoint of the serving benchmark (openvla_tiny, ``l1_chunk``, chunk 8, executed 4 actions
per chunk); its episodes run to the step budget, so every configuration does the same work."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

EPISODES_PER_TASK, MAX_STEPS, NUM_ENVS = 6, 30, (1, 2)


def run(out_dir: Path) -> dict:
    from vla_lab.bench.serve import _checkpoint
    from vla_lab.eval.config import EvalConfig, ExecutionConfig
    from vla_lab.rollout.evaluate import evaluate_policy
    from vla_lab.rollout.runtime import PolicyRuntime

    rows = {}
    with tempfile.TemporaryDirectory(prefix="vla_bench_eval_") as tmp:
        runtime = PolicyRuntime.from_checkpoint(_checkpoint(Path(tmp)))
        for n in NUM_ENVS:
            cfg = EvalConfig(
                tasks=["reach_target", "pick_block"],
                environments=["studio"],
                episodes_per_task=EPISODES_PER_TASK,
                max_steps=MAX_STEPS,
                num_envs=n,
                videos_per_task=0,
                execution=ExecutionConfig(n_action_steps=4),
            )
            start = time.perf_counter()  # includes starting the browsers, as a user's evaluation does
            out = evaluate_policy(runtime, cfg)
            seconds = time.perf_counter() - start
            episodes = len(out["results"])
            steps = sum(r.steps for r in out["results"])
            rows[n] = {
                "episodes": episodes,
                "env_steps": steps,
                "seconds": round(seconds, 2),
                "episodes_per_min": round(60 * episodes / seconds, 1),
                "env_steps_per_s": round(steps / seconds, 1),
            }
    base = rows[NUM_ENVS[0]]["episodes_per_min"]
    return {
        "policy": "openvla_tiny l1_chunk, chunk 8, 4 actions executed per chunk, 224 px",
        "max_steps": MAX_STEPS,
        "by_num_envs": {str(n): r for n, r in rows.items()},
        "speedup": {str(n): round(r["episodes_per_min"] / base, 2) for n, r in rows.items()},
    }
