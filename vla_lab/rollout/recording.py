"""Recording an episode for a dataset: every step's images, proprio, action label, reward and end
flag, and the actions that ran, taken from the one episode loop (:mod:`vla_lab.rollout.episode`).

The recorded action label is chosen separately from who acts: ``"expert"`` (or ``"clean"``) records
the scripted expert's own action at every visited state (``info["expert_action"]``: DART for a
perturbed expert, DAgger for a policy), ``"executed"`` records the action that ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vla_lab.rollout.actors import EXPERT, Actor, ExpertActor
from vla_lab.rollout.episode import run_episode
from vla_lab.sim import control
from vla_lab.sim.env import PROPRIO_KEYS
from vla_lab.sim.expert import ScriptedExpert

#: privileged per-step state written next to the proprio when asked (never a policy input)
OBJECT_POS_KEY = "object_pos"
#: the same position relative to the tool centre point: the direction a reaching action takes
OBJECT_OFFSET_KEY = "object_offset"
#: labels of expert demonstrations
LABELS = ("clean", "executed")
#: labels meaning "the scripted expert's own action at the visited state"
EXPERT_LABELS = ("clean", "expert")


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
    #: the actions that ran (``actions`` holds the recorded labels)
    executed: np.ndarray | None = None
    #: steps at which the scripted expert chose the executed action
    expert_steps: int = 0


def object_position(info: dict[str, Any], task: str) -> np.ndarray:
    """World position of the object the instruction names: the target sphere of a reach task, else
    the block to move (role ``object``)."""
    target = (info.get("fixtures") or {}).get("target")
    if target is not None:
        return np.asarray(target["pos"], np.float32)
    obj = (info.get("objects") or {}).get("object")
    if obj is None:
        raise ValueError(f"task {task!r} has neither a target fixture nor an object with role 'object'")
    return np.asarray(obj["pos"], np.float32)


class DemoRecorder:
    """Collects one episode's per-step arrays (a :class:`vla_lab.rollout.episode.Recorder`).

    ``action_kind`` is the space labels and executed actions are written in: the actor always
    commands deltas; ``target_ee`` records the expert's target pose (``info["expert_target"]``) and
    the pose an executed delta heads for.
    """

    def __init__(
        self, cameras: list[str], task: str, *, label: str, record_object_pos: bool, action_kind: str
    ):
        self.task, self.label, self.action_kind = task, label, action_kind
        self.record_object_pos = record_object_pos
        self.frames: dict[str, list[np.ndarray]] = {c: [] for c in cameras}
        keys = PROPRIO_KEYS + ([OBJECT_POS_KEY, OBJECT_OFFSET_KEY] if record_object_pos else [])
        self.proprio: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        self.labels: list[np.ndarray] = []
        self.executed: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.dones: list[bool] = []
        self.expert_steps = 0
        self.instruction = ""
        self._obs: dict[str, np.ndarray] = {}
        self._info: dict[str, Any] = {}

    def observe(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self._obs, self._info = obs, info
        self.instruction = str(info["instruction"])
        for c in self.frames:
            self.frames[c].append(obs[c])
        for k in PROPRIO_KEYS:
            self.proprio[k].append(obs[k])
        if self.record_object_pos:
            where = object_position(info, self.task)
            self.proprio[OBJECT_POS_KEY].append(where)
            self.proprio[OBJECT_OFFSET_KEY].append(where - np.asarray(obs["ee_pos"], np.float32))

    def stepped(self, action: np.ndarray, reward: float, done: bool, source: str) -> None:
        obs, info = self._obs, self._info
        self.expert_steps += source == EXPERT
        if self.action_kind == control.TARGET:
            clean = ScriptedExpert.clean_target(info)
            ran = control.delta_to_target(action, obs["ee_pos"], obs["ee_ori"])
        else:
            clean, ran = ScriptedExpert.clean_action(info), action
        self.labels.append(clean if self.label in EXPERT_LABELS else ran)
        self.executed.append(ran)
        self.rewards.append(reward)
        self.dones.append(done)


def record_episode(
    env,
    actor: Actor,
    task: str,
    seed: int,
    *,
    label: str = "expert",
    max_steps: int | None = None,
    record_object_pos: bool = False,
    action_kind: str = control.DELTA,
) -> Episode:
    """One episode driven by ``actor`` (expert, policy or mixture), recorded step by step.

    ``label`` chooses the recorded action (see the module's docstring); ``Episode.executed`` always
    holds what ran and ``Episode.expert_steps`` how many of those steps the expert chose.
    ``max_steps`` shortens the task's own step budget; ``action_kind`` is the space labels and
    ``Episode.executed`` are written in (:class:`DemoRecorder`)."""
    control.check_kind(action_kind, "action_space")
    if label not in EXPERT_LABELS + ("executed",):
        raise ValueError(f"label must be one of {EXPERT_LABELS + ('executed',)}, got {label!r}")
    rec = DemoRecorder(
        env.cameras, task, label=label, record_object_pos=record_object_pos, action_kind=action_kind
    )
    result = run_episode(env, actor, task=task, seed=seed, max_steps=max_steps, recorder=rec)
    return Episode(
        task=task,
        seed=seed,
        instruction=rec.instruction,
        success=result.success,
        actions=np.stack(rec.labels).astype(np.float32),
        images={c: np.stack(v) for c, v in rec.frames.items()},
        proprio={k: np.stack(v).astype(np.float32) for k, v in rec.proprio.items()},
        rewards=np.asarray(rec.rewards, np.float32),
        dones=np.asarray(rec.dones, bool),
        final_distance=result.final_distance,
        steps=result.steps,
        executed=np.stack(rec.executed).astype(np.float32),
        expert_steps=rec.expert_steps,
    )


def run_expert_episode(env, expert: ScriptedExpert, task: str, seed: int, *, label: str = "clean") -> Episode:
    """One expert episode. ``label="clean"`` records the expert's unperturbed action at every visited
    state while the perturbed one is executed (DART): the policy then learns to recover from the
    drift noise causes, without learning the noise. ``label="executed"`` records what was executed."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    return record_episode(env, ExpertActor(expert), task, seed, label=label)
