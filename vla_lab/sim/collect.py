"""Demonstration collection: scripted experts in the simulator, written with the project's HDF5 writer."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_lab.data.format import ActionSpace
from vla_lab.data.writer import DemoWriter
from vla_lab.sim import manifest as mf
from vla_lab.sim.env import SimEnv
from vla_lab.sim.expert import ScriptedExpert

ENV_NAME = "tabletop"
PROPRIO_KEYS = ["ee_pos", "ee_ori", "gripper_width"]
LABELS = ("clean", "executed")


def action_space() -> ActionSpace:
    r = mf.robot()
    t, rot = r["max_translation_per_step"], r["max_rotation_per_step"]
    return ActionSpace(
        units=[f"x{t} m"] * 3 + [f"x{rot} rad"] * 3 + [f"x{r['max_width']} m opening"],
    )


def episode_seed(seed: int, task_index: int, attempt: int) -> int:
    """Independent, reproducible episode seeds per (run seed, task, attempt)."""
    return int(np.random.SeedSequence([seed, task_index, attempt]).generate_state(1)[0])


@dataclass
class Episode:
    task: str
    seed: int
    instruction: str
    success: bool
    actions: np.ndarray
    images: dict[str, np.ndarray]
    proprio: dict[str, np.ndarray]
    rewards: np.ndarray
    dones: np.ndarray
    final_distance: float
    steps: int


def run_expert_episode(
    env: SimEnv, expert: ScriptedExpert, task: str, seed: int, *, label: str = "clean"
) -> Episode:
    """One expert episode. ``label="clean"`` records the expert's unperturbed action at every visited
    state while the perturbed one is executed (DART): the policy then learns to recover from the
    drift noise causes, without learning the noise. ``label="executed"`` records what was executed."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    obs, info = env.reset(seed=seed, options={"task": task})
    expert.reset(seed)
    frames: dict[str, list[np.ndarray]] = {c: [] for c in env.cameras}
    proprio: dict[str, list[np.ndarray]] = {k: [] for k in PROPRIO_KEYS}
    actions, rewards, dones = [], [], []
    max_steps = int(info["max_steps"])
    for _ in range(max_steps):
        for c in env.cameras:
            frames[c].append(obs[c])
        for k in PROPRIO_KEYS:
            proprio[k].append(obs[k])
        clean = expert.clean_action(info)
        a = expert.act(info)
        obs, r, term, trunc, info = env.step(a)
        actions.append(clean if label == "clean" else a)
        rewards.append(r)
        dones.append(term or trunc)
        if term or trunc:
            break
    return Episode(
        task=task,
        seed=seed,
        instruction=str(info["instruction"]),
        success=bool(info["success"]),
        actions=np.stack(actions).astype(np.float32),
        images={c: np.stack(v) for c, v in frames.items()},
        proprio={k: np.stack(v).astype(np.float32) for k, v in proprio.items()},
        rewards=np.asarray(rewards, np.float32),
        dones=np.asarray(dones, bool),
        final_distance=float(info["distance_to_goal"]),
        steps=len(actions),
    )


@dataclass
class TaskCount:
    kept: int = 0
    attempts: int = 0
    successes: int = 0
    steps: int = 0


@dataclass
class CollectSummary:
    out: str
    per_task: dict[str, TaskCount] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def steps(self) -> int:
        return sum(c.steps for c in self.per_task.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "seconds": round(self.seconds, 2),
            "steps_per_second": round(self.steps / self.seconds, 1) if self.seconds else None,
            "tasks": {t: vars(c) for t, c in self.per_task.items()},
        }


def collect(
    *,
    tasks: list[str],
    environment: str,
    episodes_per_task: int,
    out: str | Path,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    noise_std: float = 0.0,
    random_action_prob: float = 0.0,
    label: str = "clean",
    keep_failures: bool = False,
    max_attempts_factor: float = 2.0,
    append: bool = False,
    progress: bool = True,
) -> CollectSummary:
    if not tasks:
        raise ValueError("tasks must name at least one task")
    for t in tasks:
        mf.check_task(t)
    mf.check_environment(environment)
    if episodes_per_task < 1:
        raise ValueError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
    if max_attempts_factor < 1:
        raise ValueError(f"max_attempts_factor must be >= 1, got {max_attempts_factor}")
    kwargs = dict(env_kwargs or {})
    env = SimEnv(tasks[0], environment, **kwargs)
    expert = ScriptedExpert(noise_std, random_action_prob, seed)
    man = mf.load_manifest()
    env_meta = {
        "simulator": "vla_lab three.js tabletop",
        "sim_version": man["sim_version"],
        "protocol_version": man["protocol_version"],
        "environment": environment,
        "control_dt": man["robot"]["control_dt"],
        "robot": man["robot"],
        "orientation_convention": man["orientation_convention"],
        "image_size": env.image_size,
        "randomization": env.randomization,
        "expert": {"noise_std": noise_std, "random_action_prob": random_action_prob, "label": label},
    }
    summary = CollectSummary(out=str(out), per_task={t: TaskCount() for t in tasks})
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=episodes_per_task * len(tasks), desc="collect", unit="demo", dynamic_ncols=True)
    t0 = time.monotonic()
    try:
        with DemoWriter(
            out,
            mode="a" if append else "w",
            env_name=ENV_NAME,
            robot=man["robot"]["name"],
            action_space=action_space(),
            cameras=list(env.cameras),
            proprio_keys=PROPRIO_KEYS,
            env_meta=env_meta,
        ) as writer:
            for ti, task in enumerate(tasks):
                count = summary.per_task[task]
                limit = math.ceil(episodes_per_task * max_attempts_factor)
                while count.kept < episodes_per_task and count.attempts < limit:
                    s = episode_seed(seed, ti, count.attempts)
                    ep = run_expert_episode(env, expert, task, s, label=label)
                    count.attempts += 1
                    count.successes += ep.success
                    count.steps += ep.steps
                    if ep.success or keep_failures:
                        writer.add_episode(
                            actions=ep.actions,
                            images=ep.images,
                            proprio=ep.proprio,
                            rewards=ep.rewards,
                            dones=ep.dones,
                            instruction=ep.instruction,
                            success=ep.success,
                            task=task,
                            environment=environment,
                            seed=s,
                            meta={
                                "expert": "scripted",
                                "final_distance_to_goal": ep.final_distance,
                                "steps": ep.steps,
                            },
                        )
                        count.kept += 1
                        if bar is not None:
                            bar.update(1)
                    if bar is not None:
                        bar.set_postfix(
                            {
                                t: f"{c.successes}/{c.attempts}"
                                for t, c in summary.per_task.items()
                                if c.attempts
                            }
                        )
    finally:
        if bar is not None:
            bar.close()
        env.close()
    summary.seconds = time.monotonic() - t0
    return summary
