"""Evaluate a policy closed-loop: a fixed plan of episodes per task and environment in the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vla_lab.eval.actor import PolicyActor
from vla_lab.eval.config import EvalConfig
from vla_lab.eval.metrics import overall, summarize
from vla_lab.eval.rollout import episode_plan, run_episodes, run_episodes_parallel
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

    def make_env():
        return SimEnv(
            cfg.tasks[0],
            cfg.environments[0],
            cameras=list(spec["cameras"]),
            image_size=cfg.render_size_for(spec),
        )

    normalizer = policy_normalizer(policy, unnorm_key if unnorm_key is not None else spec.get("unnorm_key"))
    r = robot()

    def make_safety():
        if not cfg.safety.enabled:
            return None
        return SafetyWrapper(cfg.safety, r["workspace"], r["max_translation_per_step"])

    plan = episode_plan(cfg.tasks, cfg.environments, cfg.episodes_per_task, cfg.seed)
    bar = _progress(len(plan)) if progress else None
    tick = (lambda _: bar.update(1)) if bar else None
    record_first = cfg.videos_per_task if run_dir else 0
    num_envs = min(cfg.num_envs, len(plan))
    owned = [] if env is not None else [make_env()]
    env = env or owned[0]
    was_training = policy.training
    policy.eval()  # once for all workers: no actor toggles modes under another's feet
    try:
        if num_envs == 1:
            actor = PolicyActor(policy, spec, normalizer, execution=cfg.execution)
            results = run_episodes(
                env,
                actor,
                plan,
                max_steps=cfg.max_steps,
                safety=make_safety(),
                record_first=record_first,
                progress=tick,
            )
        else:
            owned += [make_env() for _ in range(num_envs - 1)]
            envs = [env, *owned[len(owned) - (num_envs - 1) :]]
            workers = [
                (
                    e,
                    PolicyActor(policy.execution_view(), spec, normalizer, execution=cfg.execution),
                    make_safety(),
                )
                for e in envs
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
