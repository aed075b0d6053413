"""Closed-loop episodes: observation -> actor -> action -> simulator, until success or budget.

An *actor* is anything with ``reset()`` and ``act(observation, info) -> action (7,)`` in the
simulator's units. ``info`` carries the instruction; its privileged state is for scripted experts
only (policies read the observation and ``info["instruction"]``). A simulator fault
(crash, hang) ends that episode as failed with its reason; the environment starts a fresh browser on
the next reset, so one fault never ends an evaluation.
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

log = logging.getLogger(__name__)


class Actor(Protocol):
    def reset(self) -> None: ...

    def act(self, observation: dict, info: dict) -> np.ndarray: ...


def run_episode(
    env,
    actor: Actor,
    *,
    task: str,
    environment: str,
    seed: int,
    max_steps: int | None = None,
    safety: SafetyWrapper | None = None,
    record: bool = False,
    fault_types: tuple[type[BaseException], ...] = (),
) -> EpisodeResult:
    """One episode. ``fault_types`` are simulator errors that fail the episode instead of raising."""
    from vla_lab.sim.errors import SimError

    faults = fault_types or (SimError,)
    actor.reset()
    if safety is not None:
        safety.reset()
    frames, steps, info = [], 0, {}
    try:
        options = {"task": task, "environment": environment}
        if max_steps is not None:
            options["max_steps"] = int(max_steps)
        obs, info = env.reset(seed=seed, options=options)
        while True:
            if record:
                frames.append(obs[env.cameras[0]])
            action = actor.act(obs, info)
            if safety is not None:
                action = safety(action, obs)
            obs, _, terminated, truncated, info = env.step(action)
            steps += 1
            if terminated or truncated or info.get("success"):
                break
    except faults as err:
        log.warning("episode %s/%s seed %d failed by a simulator fault: %s", task, environment, seed, err)
        return EpisodeResult(
            task,
            environment,
            seed,
            False,
            steps,
            float("nan"),
            safety.interventions if safety else 0,
            f"{type(err).__name__}: {err}",
            frames,
        )
    success = bool(info.get("success"))
    return EpisodeResult(
        task,
        environment,
        seed,
        success,
        steps,
        float(info.get("distance_to_goal", float("nan"))),
        safety.interventions if safety else 0,
        "" if success else "timeout",
        frames,
    )


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


def recording_flags(plan: Sequence[tuple[str, str, int]], record_first: int) -> list[bool]:
    """Frames are kept for the first ``record_first`` episodes of each task, in plan order."""
    seen: dict[str, int] = {}
    flags = []
    for task, _, _ in plan:
        flags.append(seen.get(task, 0) < record_first)
        seen[task] = seen.get(task, 0) + 1
    return flags


def run_episodes_parallel(
    workers: Sequence[tuple[Any, Actor, SafetyWrapper | None]],
    plan: Iterable[tuple[str, str, int]],
    *,
    max_steps: int | None = None,
    record_first: int = 0,
    progress: Callable[[EpisodeResult], None] | None = None,
) -> list[EpisodeResult]:
    """The plan's episodes over several ``(env, actor, safety)`` workers, one thread each (a single
    worker runs in the calling thread).

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
                record=flags[i],
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


def episode_plan(
    tasks: list[str], environments: list[str], episodes: int, seed: int
) -> list[tuple[str, str, int]]:
    """Fixed seeds per (task, environment): the same plan compares checkpoints on the same episodes."""
    return [(t, e, seed * 100_003 + i) for t in tasks for e in environments for i in range(episodes)]
