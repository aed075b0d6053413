"""Closed-loop episodes through a policy server: :class:`RemotePolicyActor` is an actor
(:class:`vla_lab.rollout.actors.Actor`) whose policy runs behind ``vla-serve``, and
:func:`run_remote_episodes` runs ``vla-eval``'s episode plan with it.

The server is stateless (it answers one chunk per request, so batching across clients stays
simple); executing the chunk — open loop over ``n_action_steps``, or temporal ensembling — happens
here, on the client, with the same rules as :class:`~vla_lab.policies.contract.VLAPolicy`.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch

from vla_lab.eval.config import ExecutionConfig
from vla_lab.rollout.actors import POLICY
from vla_lab.serve.client import PolicyClient
from vla_lab.sim.control import DELTA, TARGET, target_to_delta


class RemotePolicyActor:
    name = POLICY
    last_source = POLICY

    def __init__(self, client: PolicyClient, execution: ExecutionConfig | None = None):
        from vla_lab.policies.contract import TemporalEnsembler

        self.client = client
        info = client.health()
        self.cameras, self.proprio_keys = list(info["cameras"]), list(info["proprio_keys"])
        self.chunk_size = int(info["chunk_size"])
        #: servers of target-pose policies answer poses; every executed one becomes a delta command
        self.action_kind = info.get("action_kind", DELTA)
        self.execution = execution = execution or ExecutionConfig()
        coeff = execution.temporal_ensemble_coeff
        n = self.chunk_size if execution.n_action_steps is None else int(execution.n_action_steps)
        if not 1 <= n <= self.chunk_size:
            raise ValueError(
                f"execution.n_action_steps: must be in [1, chunk_size={self.chunk_size}], got {n}"
            )
        # Ensembling blends the served (un-normalized) chunks; the policy itself blends normalized
        # ones. Both are affine images of each other, so they differ only where actions were clipped.
        self.n_action_steps = 1 if coeff is not None else n
        self.ensembler = TemporalEnsembler(coeff, self.chunk_size) if coeff is not None else None
        self._queue: deque[np.ndarray] = deque()

    def reset(self, seed: int) -> None:
        self._queue.clear()
        if self.ensembler is not None:
            self.ensembler.reset()

    def predict_chunk(self, obs: dict[str, np.ndarray], instruction: str) -> np.ndarray:
        missing = [c for c in self.cameras if c not in obs]
        if missing:
            raise KeyError(
                f"observation lacks camera(s) {missing} the policy was trained on; it has {sorted(obs)}"
            )
        images: Any = obs[self.cameras[0]] if len(self.cameras) == 1 else {c: obs[c] for c in self.cameras}
        proprio = None
        if self.proprio_keys:
            proprio = np.concatenate([np.asarray(obs[k], np.float32).reshape(-1) for k in self.proprio_keys])
        return self.client.predict(images, instruction, proprio)

    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        if self.ensembler is not None:
            chunk = torch.from_numpy(self.predict_chunk(obs, str(info["instruction"])))[None]
            action = self.ensembler.update(chunk)[0].numpy()
        else:
            if not self._queue:
                chunk = self.predict_chunk(obs, str(info["instruction"]))
                self._queue.extend(chunk[: self.n_action_steps])
            action = self._queue.popleft().copy()
        if self.action_kind == TARGET:
            return target_to_delta(action, obs["ee_pos"], obs["ee_ori"])
        return action

    def describe(self) -> dict[str, Any]:
        return {
            "actor": self.name,
            "server": self.client.url,
            "n_action_steps": self.execution.n_action_steps,
            "temporal_ensemble_coeff": self.execution.temporal_ensemble_coeff,
        }


def run_remote_episodes(client: PolicyClient, eval_cfg, *, viewer: bool = False, progress: bool = True):
    """The ``eval`` plan (tasks x environments x episodes, seeds, safety, execution) through the
    server; returns ``{"summaries", "overall", "results"}`` like ``evaluate_policy``."""
    from vla_lab.eval.metrics import overall, summarize
    from vla_lab.rollout.episode import episode_plan, run_episodes
    from vla_lab.rollout.evaluate import make_safety
    from vla_lab.sim import SimEnv

    if eval_cfg.backend != "sim":
        from vla_lab.config.errors import ConfigError

        raise ConfigError(
            f"eval.backend: episodes through a server run the simulator, not {eval_cfg.backend!r}"
        )
    eval_cfg.check_names()
    actor = RemotePolicyActor(client, eval_cfg.execution)
    safety = make_safety(eval_cfg)
    env = SimEnv(
        eval_cfg.tasks[0],
        eval_cfg.environments[0],
        cameras=actor.cameras,
        image_size=eval_cfg.render_size,
        viewer=viewer,
        # a person has to open the viewer page first
        startup_timeout=600.0 if viewer else 20.0,
    )
    plan = episode_plan(eval_cfg.tasks, eval_cfg.environments, eval_cfg.episodes_per_task, eval_cfg.seed)
    done = [0]

    def report(result) -> None:
        done[0] += 1
        if progress:
            print(
                f"episode {done[0]}/{len(plan)}: {result.task} ({result.environment}, seed {result.seed}) "
                f"success={result.success} steps={result.steps}",
                flush=True,
            )

    try:
        results = run_episodes(env, actor, plan, max_steps=eval_cfg.max_steps, safety=safety, progress=report)
    finally:
        env.close()
    summaries = summarize(results)
    return {"summaries": summaries, "overall": overall(summaries), "results": results}
