"""Evaluate a policy closed-loop: a fixed plan of episodes per task and environment, in the simulator
(``eval.backend: sim``) or in a LIBERO suite (``eval.backend: libero``, see docs/libero.md).

:func:`evaluate_policy` runs the plan for a :class:`PolicyRuntime` (the live policy during training,
or a loaded checkpoint); :func:`evaluate_checkpoint` is ``vla-eval``: load, run, write the results.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vla_lab.config.schemas import to_schema
from vla_lab.eval.config import EvalConfig
from vla_lab.eval.metrics import format_table, overall, summarize
from vla_lab.eval.safety import SafetyWrapper
from vla_lab.eval.video import save_gif
from vla_lab.fileio import atomic_write_text
from vla_lab.rollout.actors import PolicyActor
from vla_lab.rollout.batched import run_episodes_vectorized
from vla_lab.rollout.episode import episode_plan, run_episodes_parallel
from vla_lab.rollout.runtime import PolicyRuntime


def make_env(cfg: EvalConfig, spec: dict[str, Any]):
    """The environment ``cfg.backend`` names, rendering the policy's cameras at ``render_size``."""
    cameras, size = list(spec["cameras"]), cfg.render_size_for(spec)
    if cfg.backend == "libero":
        from vla_lab.eval.libero_env import LiberoEnv

        lc = cfg.libero
        return LiberoEnv(
            lc.suite,
            task_ids=lc.task_ids,
            cameras=cameras,
            image_size=size,
            settle_steps=lc.settle_steps,
            binarize_gripper=lc.binarize_gripper,
            hard_reset=lc.hard_reset,
            seed=cfg.seed,
        )
    if cfg.num_envs > 1 and cfg.vectorized:
        from vla_lab.sim.vector import VectorSimEnv

        return VectorSimEnv(
            cfg.num_envs,
            cfg.tasks[0],
            cfg.environments[0],
            cameras=cameras,
            image_size=size,
            randomization=cfg.randomization_knobs(),
        )
    from vla_lab.sim import SimEnv

    return SimEnv(
        cfg.tasks[0],
        cfg.environments[0],
        cameras=cameras,
        image_size=size,
        randomization=cfg.randomization_knobs(),
    )


def make_safety(cfg: EvalConfig) -> SafetyWrapper | None:
    """The configured safety layer; the workspace limits are the simulator's, so only there."""
    if not cfg.safety.enabled or cfg.backend != "sim":
        return None
    from vla_lab.sim.manifest import robot

    r = robot()
    return SafetyWrapper(cfg.safety, r["workspace"], r["max_translation_per_step"])


def evaluate_policy(
    runtime: PolicyRuntime,
    cfg: EvalConfig,
    *,
    env=None,
    run_dir: Path | None = None,
    step: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the configured episodes; returns ``{"summaries", "overall", "results", "videos"}``
    (GIFs of the first ``videos_per_task`` episodes per task go to ``run_dir/figures``)."""
    spec, policy = runtime.spec, runtime.policy
    owned = [] if env is not None else [make_env(cfg, spec)]
    env = env or owned[0]
    if cfg.backend == "libero":
        plan = env.plan(cfg.episodes_per_task)  # trial k of a task starts from its k-th fixed init state
    else:
        plan = episode_plan(cfg.tasks, cfg.environments, cfg.episodes_per_task, cfg.seed)
    bar = _progress(len(plan)) if progress else None
    tick = (lambda _: bar.update(1)) if bar else None
    record_first = cfg.videos_per_task if run_dir else 0
    num_envs = min(cfg.num_envs, len(plan))
    was_training = policy.training
    policy.eval()  # once for all workers: no actor toggles modes under another's feet
    try:
        runtime.configure(cfg.execution)
        if hasattr(env, "reset_envs"):  # a VectorSimEnv: the running episodes step together
            results = run_episodes_vectorized(
                env,
                runtime,
                plan,
                max_steps=cfg.max_steps,
                make_safety=lambda: make_safety(cfg),
                record_first=record_first,
                progress=tick,
            )
        else:
            extra_envs = [make_env(cfg, spec) for _ in range(num_envs - 1)]
            owned += extra_envs
            # one simulator drives the policy itself; several get a view each (own action queue)
            runtimes = [runtime] if num_envs == 1 else [runtime.view() for _ in range(num_envs)]
            workers = [
                (e, PolicyActor(r), make_safety(cfg))
                for e, r in zip([env, *extra_envs], runtimes, strict=True)
            ]
            results = run_episodes_parallel(
                workers, plan, max_steps=cfg.max_steps, record_first=record_first, progress=tick
            )
    finally:
        policy.train(was_training)
        if bar:
            bar.close()
        for e in owned:
            e.close()
    return _finish(results, run_dir, step)


def _finish(results, run_dir: Path | None, step: int) -> dict[str, Any]:
    """GIFs of the episodes that kept frames, and the summaries."""
    videos = []
    if run_dir is not None:
        for res in results:
            if res.frames:
                name = f"episode_{res.task}_{res.environment}_seed{res.seed}_step{step}.gif"
                videos.append(save_gif(res.frames, Path(run_dir) / "figures" / name))
                res.frames = []
    summaries = summarize(results)
    return {"summaries": summaries, "overall": overall(summaries), "results": results, "videos": videos}


def evaluate_checkpoint(cfg: DictConfig) -> dict:
    """``vla-eval``: the ``eval`` plan for ``cfg.checkpoint``; writes ``eval_results.json``,
    ``eval_table.md`` and GIFs to the job's output directory and prints the table."""
    eval_cfg: EvalConfig = to_schema(EvalConfig, cfg.eval, where="eval")
    eval_cfg.check_names()  # before loading anything: a bad name or a missing extra fails fast
    runtime = PolicyRuntime.from_checkpoint(cfg.checkpoint, unnorm_key=cfg.get("unnorm_key"))
    out_dir = Path(cfg.paths.output_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    out = evaluate_policy(runtime, eval_cfg, run_dir=out_dir, progress=True)
    table = format_table(out["summaries"])
    result = {
        "checkpoint": str(cfg.checkpoint),
        "overall": out["overall"],
        # per environment (per suite for LIBERO): mean over its tasks, pooled Wilson interval
        "environments": {
            e: overall([s for s in out["summaries"] if s.environment == e])
            for e in sorted({s.environment for s in out["summaries"]})
        },
        "tasks": [asdict(s) for s in out["summaries"]],
        "episodes": [r.to_row() for r in out["results"]],
        "config": OmegaConf.to_container(cfg.eval, resolve=True),
    }
    atomic_write_text(out_dir / "eval_results.json", json.dumps(result, indent=2))
    atomic_write_text(out_dir / "eval_table.md", table + "\n")
    print(table)
    o = out["overall"]
    print(
        f"\noverall: {o['success_rate']:.1%} over {o['episodes']} episodes "
        f"(pooled 95% CI [{o['ci_low']:.2f}, {o['ci_high']:.2f}]); results in {out_dir}"
    )
    return result


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="closed-loop eval", unit="episode", leave=False)
