"""Evaluate a policy closed-loop: a fixed plan of episodes per task and environment, in the simulator
(``eval.backend: sim``) or in a LIBERO suite (``eval.backend: libero``, see docs/libero.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vla_lab.eval.actor import PolicyActor
from vla_lab.eval.config import EvalConfig
from vla_lab.eval.metrics import overall, summarize
from vla_lab.eval.rollout import episode_plan, run_episodes_parallel
from vla_lab.eval.safety import SafetyWrapper
from vla_lab.eval.video import save_gif


def policy_normalizer(policy, unnorm_key: str | None = None):
    from vla_lab.policies.normalization import check_unnorm_key, normalizer_from_entry

    stats = policy.processor.norm_stats
    return normalizer_from_entry(stats[check_unnorm_key(stats, unnorm_key)])


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
    from vla_lab.sim import SimEnv

    return SimEnv(
        cfg.tasks[0],
        cfg.environments[0],
        cameras=cameras,
        image_size=size,
        randomization=cfg.randomization_knobs(),
    )


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
    normalizer = policy_normalizer(policy, unnorm_key if unnorm_key is not None else spec.get("unnorm_key"))

    def make_safety():
        if not cfg.safety.enabled or cfg.backend != "sim":  # the workspace limits are the simulator's
            return None
        from vla_lab.sim.manifest import robot

        r = robot()
        return SafetyWrapper(cfg.safety, r["workspace"], r["max_translation_per_step"])

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
        extra_envs = [make_env(cfg, spec) for _ in range(num_envs - 1)]
        owned += extra_envs
        # one simulator drives the policy itself; several get a view each (own action queue)
        views = [policy] if num_envs == 1 else [policy.execution_view() for _ in range(num_envs)]
        workers = [
            (e, PolicyActor(v, spec, normalizer, execution=cfg.execution), make_safety())
            for e, v in zip([env, *extra_envs], views, strict=True)
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
