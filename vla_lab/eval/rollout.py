"""Closed-loop episodes: observation -> actor -> action -> simulator, until success or budget.

An *actor* is anything with ``reset()`` and ``act(observation, info) -> action (7,)`` in the
simulator's units. ``info`` carries the instruction; its privileged state is for scripted experts
only (policies read the observation and ``info["instruction"]``). A simulator fault
(crash, hang) ends that episode as failed with its reason; the environment starts a fresh browser on
the next reset, so one fault never ends an evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol

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
    results, recorded = [], {}
    for task, environment, seed in plan:
        record = recorded.get(task, 0) < record_first
        result = run_episode(
            env,
            actor,
            task=task,
            environment=environment,
            seed=seed,
            max_steps=max_steps,
            safety=safety,
            record=record,
        )
        recorded[task] = recorded.get(task, 0) + int(record)
        results.append(result)
        if progress:
            progress(result)
    return results


def episode_plan(
    tasks: list[str], environments: list[str], episodes: int, seed: int
) -> list[tuple[str, str, int]]:
    """Fixed seeds per (task, environment): the same plan compares checkpoints on the same episodes."""
    return [(t, e, seed * 100_003 + i) for t in tasks for e in environments for i in range(episodes)]
