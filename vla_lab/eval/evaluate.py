"""Evaluate a policy closed-loop: a fixed plan of episodes per task and environment in the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vla_lab.eval.actor import PolicyActor
from vla_lab.eval.config import EvalConfig
from vla_lab.eval.metrics import overall, summarize
from vla_lab.eval.rollout import episode_plan, run_episodes
from vla_lab.eval.safety import SafetyWrapper
from vla_lab.eval.video import save_gif


def policy_normalizer(policy, unnorm_key: str | None = None):
    from vla_lab.policies.normalization import check_unnorm_key, normalizer_from_entry

    stats = policy.processor.norm_stats
    return normalizer_from_entry(stats[check_unnorm_key(stats, unnorm_key)])


def evaluate_policy(
    policy,
    spec: dict[str, Any],
    cfg: EvalConfig,
    *,
    env=None,
    run_dir: Path | None = None,
    step: int = 0,
    unnorm_key: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the configured episodes; returns ``{"summaries", "overall", "results"}`` (videos to run_dir)."""
    from vla_lab.sim import SimEnv
    from vla_lab.sim.manifest import robot

    own_env = env is None
    env = env or SimEnv(
        cfg.tasks[0], cfg.environments[0], cameras=list(spec["cameras"]), image_size=cfg.render_size_for(spec)
    )
    normalizer = policy_normalizer(policy, unnorm_key if unnorm_key is not None else spec.get("unnorm_key"))
    actor = PolicyActor(policy, spec, normalizer, execution=cfg.execution)
    r = robot()
    safety = (
        SafetyWrapper(cfg.safety, r["workspace"], r["max_translation_per_step"])
        if cfg.safety.enabled
        else None
    )
    plan = episode_plan(cfg.tasks, cfg.environments, cfg.episodes_per_task, cfg.seed)
    bar = _progress(len(plan)) if progress else None
    try:
        results = run_episodes(
            env,
            actor,
            plan,
            max_steps=cfg.max_steps,
            safety=safety,
            record_first=cfg.videos_per_task if run_dir else 0,
            progress=(lambda _: bar.update(1)) if bar else None,
        )
    finally:
        if bar:
            bar.close()
        if own_env:
            env.close()
    videos = []
    if run_dir is not None:
        for res in results:
            if res.frames:
                name = f"episode_{res.task}_{res.environment}_seed{res.seed}_step{step}.gif"
                videos.append(save_gif(res.frames, Path(run_dir) / "figures" / name))
                res.frames = []
    summaries = summarize(results)
    return {"summaries": summaries, "overall": overall(summaries), "results": results, "videos": videos}


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="closed-loop eval", unit="episode", leave=False)
