"""Simulator throughput and expert quality: start-up time, single-env and vectorised steps/s with a
random policy (physics + render + readback + WebSocket), reset time, and the scripted experts'
success over seeded episodes. ``python -m vla_lab.bench.sim [--out DIR] [--expert-episodes N]``."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np


def _random_actions(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.uniform(-1, 1, (n, 7)).astype(np.float32)
    a[:, 6] = rng.uniform(0, 1, n)
    return a


def _timed_steps(env, rng, seconds: float, on_done) -> tuple[int, float, list[float]]:
    steps, lat = 0, []
    end = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < end:
        t = time.perf_counter()
        _, _, term, trunc, _ = env.step(_random_actions(rng, 1)[0])
        lat.append(time.perf_counter() - t)
        steps += 1
        if term or trunc:
            on_done(steps)
    return steps, time.perf_counter() - t0, lat


def single_env(seconds: float = 8.0, warmup_steps: int = 1500, task: str = "pick_block") -> dict:
    """Steps/s of a fresh browser ("cold": V8 is still compiling three.js and Rapier in the
    background) and after ``warmup_steps`` ("warm", the steady state of long runs)."""
    from vla_lab.sim import SimEnv

    env = SimEnv(task, "studio")
    try:
        t0 = time.perf_counter()
        env.reset(seed=0)
        first_reset = time.perf_counter() - t0
        startup = env.backend.startup_seconds
        resets = []
        for s in range(1, 11):
            t = time.perf_counter()
            env.reset(seed=s)
            resets.append(time.perf_counter() - t)
        rng = np.random.default_rng(0)
        env.reset(seed=100)

        def again(n: int) -> None:
            env.reset(seed=100 + n)

        cold_steps, cold_time, _ = _timed_steps(env, rng, seconds, again)
        for k in range(max(0, warmup_steps - cold_steps)):
            _, _, term, trunc, _ = env.step(_random_actions(rng, 1)[0])
            if term or trunc:
                again(k)
        warm_steps, warm_time, lat = _timed_steps(env, rng, seconds, again)
    finally:
        env.close()
    return {
        "task": task,
        "startup_s": round(startup, 3),
        "first_reset_s": round(first_reset, 3),
        "reset_ms_median": round(1000 * statistics.median(resets), 2),
        "cold_steps_per_s": round(cold_steps / cold_time, 1),
        "steps_per_s": round(warm_steps / warm_time, 1),
        "step_ms_median": round(1000 * statistics.median(lat), 2),
        "warmup_steps": warmup_steps,
    }


def vector_env(
    num_envs: int, pages: int, seconds: float = 8.0, warmup_steps: int = 1500, task: str = "pick_block"
) -> dict:
    from vla_lab.sim.vector import VectorSimEnv

    env = VectorSimEnv(num_envs, task, "studio", pages=pages)
    try:
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        # Every page warms up like the single env does (see single_env).
        for _ in range(max(1, warmup_steps * pages // num_envs)):
            env.step(_random_actions(rng, num_envs))
        calls = 0
        end = time.perf_counter() + seconds
        t0 = time.perf_counter()
        while time.perf_counter() < end:
            env.step(_random_actions(rng, num_envs))
            calls += 1
        elapsed = time.perf_counter() - t0
    finally:
        env.close()
    return {"num_envs": num_envs, "pages": pages, "env_steps_per_s": round(calls * num_envs / elapsed, 1)}


def expert_success(episodes: int) -> dict:
    from vla_lab.sim import SimEnv, list_tasks
    from vla_lab.sim.expert import ScriptedExpert

    out = {}
    env = SimEnv("pick_block", "studio")
    expert = ScriptedExpert()
    try:
        for t in list_tasks():
            name = t["name"]
            ok, steps, failed = 0, 0, []
            t0 = time.perf_counter()
            for seed in range(episodes):
                _, info = env.reset(seed=seed, options={"task": name})
                while True:
                    _, _, term, trunc, info = env.step(expert.act(info))
                    steps += 1
                    if term or trunc:
                        break
                ok += bool(info["success"])
                if not info["success"]:
                    failed.append(seed)
            out[name] = {
                "episodes": episodes,
                "success_rate": round(ok / episodes, 4),
                "failed_seeds": failed,
                "mean_steps": round(steps / episodes, 1),
                "steps_per_s_with_resets": round(steps / (time.perf_counter() - t0), 1),
            }
    finally:
        env.close()
    return out


def run(out_dir: Path, *, seconds: float = 8.0, expert_episodes: int = 50) -> dict:
    load_before = os.getloadavg()[0]
    single = single_env(seconds)
    vectors = [vector_env(n, p, seconds) for n, p in ((2, 1), (4, 1), (2, 2), (4, 2))]
    best = max(vectors, key=lambda v: v["env_steps_per_s"])
    experts = expert_success(expert_episodes) if expert_episodes > 0 else {}
    return {
        "benchmark": "sim",
        "load_average_1min_at_start": round(load_before, 2),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "single": single,
        "vectorised": vectors,
        "vectorised_best": best,
        "vectorised_speedup": round(best["env_steps_per_s"] / single["steps_per_s"], 2),
        "targets": {"single_steps_per_s": 180, "vectorised_speedup": 1.5, "expert_success": 0.98},
        "experts": experts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vla_lab.bench.sim", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--expert-episodes", type=int, default=50)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args.out, seconds=args.seconds, expert_episodes=args.expert_episodes)
    tmp = args.out / "sim.json.tmp"
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(args.out / "sim.json")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
