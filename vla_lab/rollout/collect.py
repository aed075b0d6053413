"""Collection (``vla-collect``): episodes of the scripted expert or of a trained policy in the
simulator, recorded by the episode loop and written with the project's HDF5 writer."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_lab.data.format import ActionSpace
from vla_lab.data.writer import DemoWriter
from vla_lab.rollout.actors import EXPERT, Actor, ExpertActor, MixtureActor, PolicyActor
from vla_lab.rollout.config import PolicyCollectConfig
from vla_lab.rollout.journal import CollectJournal
from vla_lab.rollout.recording import (
    EXPERT_LABELS,
    LABELS,
    OBJECT_OFFSET_KEY,
    OBJECT_POS_KEY,
    Episode,
    record_episode,
)
from vla_lab.sim import control
from vla_lab.sim import manifest as mf
from vla_lab.sim.control import action_space
from vla_lab.sim.env import ENV_NAME, PROPRIO_KEYS, SimEnv
from vla_lab.sim.errors import SimError
from vla_lab.sim.expert import ScriptedExpert

log = logging.getLogger(__name__)


def episode_seed(seed: int, task_index: int, attempt: int) -> int:
    """Independent, reproducible episode seeds per (run seed, task, attempt)."""
    return int(np.random.SeedSequence([seed, task_index, attempt]).generate_state(1)[0])


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
    #: who acted: "expert", "policy" or "mixture"
    actor: str = "expert"

    @property
    def steps(self) -> int:
        return sum(c.steps for c in self.per_task.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "actor": self.actor,
            "seconds": round(self.seconds, 2),
            "steps_per_second": round(self.steps / self.seconds, 1) if self.seconds else None,
            "tasks": {t: vars(c) for t, c in self.per_task.items()},
        }


def _check_append_target(out: Path, cameras: tuple[str, ...], image_size: int, action_kind: str) -> None:
    """Appending must not mix image sizes or action spaces, nor drop cameras: the file says what it holds."""
    import h5py

    from vla_lab.data.format import camera_dataset

    with h5py.File(out, "r") as f:
        data = f.get("data")
        if data is None or "demo_0" not in data:
            return
        held = ActionSpace.from_json(data.attrs["action_space"]).kind
        if held != action_kind:
            raise ValueError(f"out={out} holds {held} actions; append with action_space={held}")
        obs = data["demo_0"]["obs"]
        for cam in cameras:
            key = camera_dataset(cam)
            if key not in obs:
                raise ValueError(f"out={out} has no camera {cam!r}; sim.cameras must match the file's")
            size = int(obs[key].shape[1])
            if size != image_size:
                raise ValueError(
                    f"out={out} holds {size} px {cam} images but this collection renders {image_size} px "
                    f"(sim.image_size); append with sim.image_size={size}"
                )


def make_actor(
    policy: PolicyCollectConfig | None,
    expert: ScriptedExpert,
    *,
    cameras: tuple[str, ...],
    image_size: int,
) -> Actor:
    """The scripted expert, or the checkpoint's policy (mixed with the expert when ``policy.beta > 0``),
    checked against the simulator's cameras and image size before any episode runs."""
    if policy is None or policy.checkpoint is None:
        return ExpertActor(expert)
    ckpt = PolicyActor.from_checkpoint(
        policy.checkpoint,
        execution=policy.execution,
        unnorm_key=policy.unnorm_key,
        device=policy.device,
    )
    missing = [c for c in ckpt.cameras if c not in cameras]
    if missing:
        raise ValueError(
            f"policy.checkpoint={policy.checkpoint} was trained on cameras {ckpt.cameras}; "
            f"sim.cameras={list(cameras)} lacks {missing}"
        )
    if ckpt.camera_size != image_size:
        raise ValueError(
            f"policy.checkpoint={policy.checkpoint} was trained on {ckpt.camera_size} px camera images "
            f"but sim.image_size={image_size}; collect with sim.image_size={ckpt.camera_size}"
        )
    if policy.beta > 0:
        return MixtureActor(ckpt, ExpertActor(expert), policy.beta)
    return ckpt


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
    policy: PolicyCollectConfig | None = None,
    max_steps: int | None = None,
    record_object_pos: bool = False,
    action_kind: str = control.DELTA,
    resume: bool = False,
) -> CollectSummary:
    """Record episodes into ``out``. Finished episodes are committed as they complete
    (:mod:`vla_lab.rollout.journal`); ``resume`` continues an interrupted collection of ``out``. Without ``policy`` (or with ``policy.checkpoint`` null) the
    scripted expert acts and ``label`` / ``keep_failures`` apply. With a checkpoint the policy acts
    (mixed with the expert by ``policy.beta``), ``policy.label`` chooses the recorded action and
    ``policy.keep`` which episodes are written (see :class:`PolicyCollectConfig`)."""
    if not tasks:
        raise ValueError("tasks must name at least one task")
    for t in tasks:
        mf.check_task(t)
    mf.check_environment(environment)
    if episodes_per_task < 1:
        raise ValueError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
    if max_attempts_factor < 1:
        raise ValueError(f"max_attempts_factor must be >= 1, got {max_attempts_factor}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or null, got {max_steps}")
    control.check_kind(action_kind, "action_space")
    rollouts = policy is not None and policy.checkpoint is not None
    if rollouts:
        policy.check()
        label = policy.label
        keep_all = policy.resolved_keep() == "all"
        if keep_failures and not keep_all:
            raise ValueError("keep_failures=true contradicts policy.keep=successes")
    else:
        if label not in LABELS:
            raise ValueError(f"expert.label must be one of {LABELS}, got {label!r}")
        keep_all = keep_failures
    out = Path(out)
    kwargs = dict(env_kwargs or {})
    cameras = tuple(kwargs.get("cameras") or ("agentview",))
    image_size = int(kwargs.get("image_size") or 224)
    if append and out.exists():
        _check_append_target(out, cameras, image_size, action_kind)
    expert = ScriptedExpert(noise_std, random_action_prob, seed)
    # the checkpoint loads (and fails, naming the field) before a browser starts
    actor = make_actor(policy if rollouts else None, expert, cameras=cameras, image_size=image_size)
    labelled_by = EXPERT if label in EXPERT_LABELS else actor.name
    env = SimEnv(tasks[0], environment, **kwargs)
    man = mf.load_manifest()
    env_meta = _env_meta(env, man, environment, noise_std, random_action_prob, label, record_object_pos)
    if rollouts:
        env_meta["rollouts"] = {
            **actor.describe(),
            "label": label,
            "keep": "all" if keep_all else "successes",
        }
    header = {
        "env_name": ENV_NAME,
        "robot": man["robot"]["name"],
        "action_space": action_space(action_kind),
        "cameras": list(env.cameras),
        # object_pos is written but not declared as proprio: the datamodule's default state
        # inputs are the declared keys, and privileged state must never become an input
        "proprio_keys": PROPRIO_KEYS,
        "env_meta": env_meta,
    }
    params = {
        "tasks": list(tasks),
        "environment": environment,
        "seed": int(seed),
        "label": label,
        "keep_all": bool(keep_all),
        "max_steps": max_steps,
        "append": bool(append),
        "env_meta": json.loads(json.dumps(env_meta)),
    }
    try:
        journal = CollectJournal(out, params, list(tasks), resume=resume)
    except BaseException:
        env.close()
        raise
    bar = None
    if progress:
        from tqdm import tqdm

        done = sum(c["kept"] for c in journal.counts.values())
        bar = tqdm(
            total=episodes_per_task * len(tasks),
            initial=done,
            desc="collect",
            unit="demo",
            dynamic_ncols=True,
        )
    t0 = time.monotonic()
    try:
        for ti, task in enumerate(tasks):
            count = journal.counts[task]
            limit = math.ceil(episodes_per_task * max_attempts_factor)
            while count["kept"] < episodes_per_task and count["attempts"] < limit:
                s = episode_seed(seed, ti, count["attempts"])
                ep = _record_retrying_faults(
                    env,
                    actor,
                    task,
                    s,
                    label=label,
                    max_steps=max_steps,
                    record_object_pos=record_object_pos,
                    action_kind=action_kind,
                )
                part = None
                if ep.success or keep_all:
                    part = journal.next_part()
                    with DemoWriter(part, mode="w", **header) as writer:
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
                            meta=_episode_meta(ep, actor, label, labelled_by),
                        )
                journal.record(task, steps=ep.steps, success=ep.success, part=part)
                if bar is not None:
                    bar.update(part is not None)
                    bar.set_postfix(
                        {
                            t: f"{c['successes']}/{c['attempts']}"
                            for t, c in journal.counts.items()
                            if c["attempts"]
                        }
                    )
    finally:
        if bar is not None:
            bar.close()
        env.close()
    # every task is done: the parts become the output in one atomic replacement
    with DemoWriter(out, mode="a" if append else "w", **header) as writer:
        for demo in journal.episodes():
            writer.copy_episode(demo)
    journal.remove()
    summary = CollectSummary(
        out=str(out), per_task={t: TaskCount(**c) for t, c in journal.counts.items()}, actor=actor.name
    )
    summary.seconds = time.monotonic() - t0
    return summary


#: attempts of one episode when the simulator fails under it (a crashed or hung renderer restarts)
FAULT_RETRIES = 2


def _record_retrying_faults(env: SimEnv, actor: Actor, task: str, seed: int, **kwargs: Any) -> Episode:
    """One episode; a simulator fault reruns it with the same seed on a fresh browser (the same
    episode, since episodes depend only on their seed), up to ``FAULT_RETRIES`` times."""
    for _ in range(FAULT_RETRIES):
        try:
            return record_episode(env, actor, task, seed, **kwargs)
        except SimError as err:
            log.warning("episode %s seed %d: simulator fault (%s); running it again", task, seed, err)
    return record_episode(env, actor, task, seed, **kwargs)


def _env_meta(
    env: SimEnv,
    man: dict[str, Any],
    environment: str,
    noise_std: float,
    random_action_prob: float,
    label: str,
    record_object_pos: bool,
) -> dict[str, Any]:
    """The file's description of the simulator, the scenes and the expert."""
    meta: dict[str, Any] = {
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
    if record_object_pos:
        meta["privileged_obs"] = {
            OBJECT_POS_KEY: "world position (m) of the object the instruction names",
            OBJECT_OFFSET_KEY: "that position minus the tool centre point's (m)",
        }
    return meta


def _episode_meta(ep: Episode, actor: Actor, label: str, labelled_by: str) -> dict[str, Any]:
    """Who acted and who labelled, how far the labels are from what ran, and the outcome."""
    meta: dict[str, Any] = {
        "expert": "scripted",
        "acted_by": actor.name,
        "labelled_by": labelled_by,
        "label": label,
        "success": ep.success,
        "final_distance_to_goal": ep.final_distance,
        "steps": ep.steps,
        "expert_steps": ep.expert_steps,
        "label_executed_l1": float(np.abs(ep.actions - ep.executed).mean()),
    }
    if isinstance(actor, PolicyActor | MixtureActor):
        ckpt = actor if isinstance(actor, PolicyActor) else actor.policy
        meta["checkpoint"] = ckpt.checkpoint
    if isinstance(actor, MixtureActor):
        meta["beta"] = actor.beta
    return meta
