"""The episode loop: observation -> actor -> (safety) -> simulator, until success or the step budget.

One loop serves evaluation and collection. It always scores the episode (success, steps, final
distance to the goal, safety interventions, and why it failed); it can keep the first camera's frames
(evaluation videos) and hand every step to a :class:`Recorder` (collection writes demonstrations from
it). Simulator faults named in ``tolerate`` (a crash, a hang) end that episode as failed with their
reason; the environment starts a fresh browser on the next reset, so one fault never ends an
evaluation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from vla_lab.eval.metrics import EpisodeResult
from vla_lab.eval.safety import SafetyWrapper
from vla_lab.rollout.actors import Actor
from vla_lab.sim.errors import SimError

log = logging.getLogger(__name__)

#: the faults evaluation survives: every simulator error
SIM_FAULTS: tuple[type[BaseException], ...] = (SimError,)


class Recorder(Protocol):
    """Receives every step of an episode, in order."""

    def observe(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        """The state the actor is about to act in."""

    def stepped(self, action: np.ndarray, reward: float, done: bool, source: str) -> None:
        """The action executed from the last observed state (after the safety layer), the step's
        reward and end flag, and who chose the action (the actor's ``last_source``)."""


def run_episode(
    env,
    actor: Actor,
    *,
    task: str,
    seed: int,
    environment: str | None = None,
    max_steps: int | None = None,
    safety: SafetyWrapper | None = None,
    frames: bool = False,
    recorder: Recorder | None = None,
    tolerate: tuple[type[BaseException], ...] = (),
) -> EpisodeResult:
    """One scored episode. ``environment`` and ``max_steps`` (null = the environment's own / the
    task's own) go to ``env.reset``; ``frames`` keeps the first camera's frames in the result."""
    actor.reset(seed)
    if safety is not None:
        safety.reset()
    kept: list[np.ndarray] = []
    options: dict[str, Any] = {"task": task}
    if environment is not None:
        options["environment"] = environment
    if max_steps is not None:
        options["max_steps"] = int(max_steps)
    where = environment if environment is not None else str(getattr(env, "environment", ""))
    steps, info = 0, {}
    try:
        obs, info = env.reset(seed=seed, options=options)
        while True:
            if frames:
                kept.append(obs[env.cameras[0]])
            if recorder is not None:
                recorder.observe(obs, info)
            action = np.asarray(actor.act(obs, info), dtype=np.float32)
            source = actor.last_source
            if safety is not None:
                action = safety(action, obs)
            obs, reward, terminated, truncated, info = env.step(action)
            steps += 1
            if recorder is not None:
                recorder.stepped(action, reward, bool(terminated or truncated), source)
            if terminated or truncated or info.get("success"):
                break
    except tolerate as err:
        log.warning("episode %s/%s seed %d failed by a simulator fault: %s", task, where, seed, err)
        interventions = safety.interventions if safety else 0
        failure = f"{type(err).__name__}: {err}"
        return EpisodeResult(task, where, seed, False, steps, float("nan"), interventions, failure, kept)
    success = bool(info.get("success"))
    return EpisodeResult(
        task,
        where,
        seed,
        success,
        steps,
        float(info.get("distance_to_goal", float("nan"))),
        safety.interventions if safety else 0,
        "" if success else "timeout",
        kept,
    )


def episode_plan(
    tasks: list[str], environments: list[str], episodes: int, seed: int
) -> list[tuple[str, str, int]]:
    """Fixed seeds per (task, environment): the same plan compares checkpoints on the same episodes."""
    return [(t, e, seed * 100_003 + i) for t in tasks for e in environments for i in range(episodes)]


def recording_flags(plan: Sequence[tuple[str, str, int]], record_first: int) -> list[bool]:
    """Frames are kept for the first ``record_first`` episodes of each task, in plan order."""
    seen: dict[str, int] = {}
    flags = []
    for task, _, _ in plan:
        flags.append(seen.get(task, 0) < record_first)
        seen[task] = seen.get(task, 0) + 1
    return flags


def run_episodes(
    env,
    actor: Actor,
    plan: Iterable[tuple[str, str, int]],
    *,
    max_steps: int | None = None,
    safety: SafetyWrapper | None = None,
    record_first: int = 0,
    progress: Callable[[EpisodeResult], None] | None = None,
) -> list[EpisodeResult]:
    """Episodes for each ``(task, environment, seed)``; frames kept for the first ``record_first`` per task."""
    return run_episodes_parallel(
        [(env, actor, safety)], plan, max_steps=max_steps, record_first=record_first, progress=progress
    )


def run_episodes_parallel(
    workers: Sequence[tuple[Any, Actor, SafetyWrapper | None]],
    plan: Iterable[tuple[str, str, int]],
    *,
    max_steps: int | None = None,
    record_first: int = 0,
    progress: Callable[[EpisodeResult], None] | None = None,
) -> list[EpisodeResult]:
    """The plan's episodes over several ``(env, actor, safety)`` workers, one thread each (a single
    worker runs in the calling thread). Simulator faults fail their episode only.

    Each worker takes the next unstarted episode when it finishes one, so a slow episode never idles
    the others; results come back in plan order and are the same as a sequential run's, because an
    episode depends only on its seed and the actor's state is reset for every episode. Threads
    suffice: the simulator works in its own browser process and torch releases the GIL.
    """
    plan = list(plan)
    flags = recording_flags(plan, record_first)
    results: list[EpisodeResult | None] = [None] * len(plan)
    lock = threading.Lock()
    next_index = iter(range(len(plan)))

    def work(env, actor, safety) -> None:
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            task, environment, seed = plan[i]
            results[i] = run_episode(
                env,
                actor,
                task=task,
                environment=environment,
                seed=seed,
                max_steps=max_steps,
                safety=safety,
                frames=flags[i],
                tolerate=SIM_FAULTS,
            )
            if progress:
                with lock:
                    progress(results[i])

    if len(workers) == 1:
        work(*workers[0])
    else:
        with ThreadPoolExecutor(max_workers=len(workers), thread_name_prefix="eval-env") as pool:
            for future in [pool.submit(work, *w) for w in workers]:
                future.result()  # re-raises a worker's unexpected error
    return [r for r in results if r is not None]
