"""Episodes of a fixed plan over a :class:`~vla_lab.sim.vector.VectorSimEnv`: every running episode
steps in one exchange with the simulator, and the policy predicts the chunks they need in one batched
forward pass (:meth:`PolicyRuntime.act_many`), instead of one simulator and one forward per thread.

Each environment slot takes the plan's next episode when its own ends, with the episode's task,
environment, seed and step budget, so the episodes and their scores are those of a sequential run
(:func:`vla_lab.rollout.episode.run_episodes`). A simulator fault loses the browser and with it every
episode running at that moment: those fail with the fault as their reason, and the plan continues on a
fresh browser.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vla_lab.eval.metrics import EpisodeResult
from vla_lab.eval.safety import SafetyWrapper
from vla_lab.rollout.episode import SIM_FAULTS, recording_flags
from vla_lab.rollout.runtime import PolicyRuntime

log = logging.getLogger(__name__)


@dataclass
class _Running:
    """One slot's episode in progress."""

    index: int  # in the plan
    safety: SafetyWrapper | None
    keep_frames: bool
    obs: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    frames: list[np.ndarray] = field(default_factory=list)


def run_episodes_vectorized(
    venv,
    runtime: PolicyRuntime,
    plan: Sequence[tuple[str, str, int]],
    *,
    max_steps: int | None = None,
    make_safety: Callable[[], SafetyWrapper | None] = lambda: None,
    record_first: int = 0,
    progress: Callable[[EpisodeResult], None] | None = None,
) -> list[EpisodeResult]:
    """The plan's ``(task, environment, seed)`` episodes, ``venv.num_envs`` at a time; results in
    plan order. Frames are kept for the first ``record_first`` episodes of each task."""
    plan = list(plan)
    flags = recording_flags(plan, record_first)
    views = [runtime.view() for _ in range(venv.num_envs)]
    results: list[EpisodeResult | None] = [None] * len(plan)
    pending = iter(range(len(plan)))
    running: dict[int, _Running] = {}

    def finish(slot: int, success: bool, distance: float, failure: str) -> None:
        ep = running.pop(slot)
        task, environment, seed = plan[ep.index]
        interventions = ep.safety.interventions if ep.safety else 0
        results[ep.index] = EpisodeResult(
            task, environment, seed, success, ep.steps, distance, interventions, failure, ep.frames
        )
        if progress:
            progress(results[ep.index])

    def fail_running(err: BaseException) -> None:
        log.warning("simulator fault with %d episodes running, all failed: %s", len(running), err)
        for slot in list(running):
            finish(slot, False, float("nan"), f"{type(err).__name__}: {err}")

    def start(slots) -> None:
        specs = {}
        for slot in slots:
            i = next(pending, None)
            if i is None:
                continue
            task, environment, seed = plan[i]
            running[slot] = _Running(i, make_safety(), flags[i])
            views[slot].reset()
            if running[slot].safety is not None:
                running[slot].safety.reset()
            specs[slot] = {"task": task, "environment": environment, "seed": seed, "max_steps": max_steps}
        if not specs:
            return
        try:
            replies = venv.reset_envs(specs)
        except SIM_FAULTS as err:
            fail_running(err)
            return start(specs)  # the plan goes on with a fresh browser
        for slot, (obs, info) in replies.items():
            running[slot].obs, running[slot].info = obs, info

    start(range(venv.num_envs))
    while running:
        slots = sorted(running)
        eps = [running[s] for s in slots]
        actions = runtime.act_many(
            [views[s] for s in slots], [ep.obs for ep in eps], [str(ep.info["instruction"]) for ep in eps]
        )
        commands = {}
        for slot, ep, action in zip(slots, eps, actions, strict=True):
            if ep.keep_frames:
                ep.frames.append(ep.obs[venv.cameras[0]])
            commands[slot] = ep.safety(action, ep.obs) if ep.safety is not None else action
        try:
            stepped = venv.step_envs(commands)
        except SIM_FAULTS as err:
            fail_running(err)
            start(slots)
            continue
        ended = []
        for slot, (obs, _reward, terminated, truncated, info) in stepped.items():
            ep = running[slot]
            ep.obs, ep.info, ep.steps = obs, info, ep.steps + 1
            if terminated or truncated or info.get("success"):
                success = bool(info.get("success"))
                distance = float(info.get("distance_to_goal", float("nan")))
                finish(slot, success, distance, "" if success else "timeout")
                ended.append(slot)
        start(ended)
    return [r for r in results if r is not None]
