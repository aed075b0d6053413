"""Several simulator instances stepped together: one browser, ``pages`` tabs (renderer processes that
run in parallel), each hosting a share of the environments and answering one batched message per step.

Auto-reset happens in the same step: when an episode ends, the returned observation is already the
first one of the next episode, and that env's info carries ``final_obs``/``final_info`` of the one that
ended. Infos are a list with one dict per environment.

``reset_envs`` and ``step_envs`` drive chosen environments explicitly instead (each its own task,
environment, seed and step budget; no auto-reset): what a fixed evaluation plan needs. Either way a
renderer that stops drawing (frames byte-identical while the gripper moves, ``FROZEN_STEPS`` in a
row, as ``SimEnv`` checks) drops the browser and raises ``SimCrashedError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from vla_lab.sim import manifest as mf
from vla_lab.sim.backend import SimBackend
from vla_lab.sim.env import (
    FROZEN_STEPS,
    build_spaces,
    check_action,
    check_cameras,
    check_frames,
    frames_frozen,
)
from vla_lab.sim.errors import SimCrashedError, SimProtocolError, SimStateError, SimTimeoutError
from vla_lab.sim.protocol import parse_obs


class VectorSimEnv:
    def __init__(
        self,
        num_envs: int,
        task: str | Sequence[str] = "pick_block",
        environment: str | Sequence[str] = "studio",
        *,
        pages: int | None = None,
        cameras: Sequence[str] = ("agentview",),
        image_size: int = 224,
        randomization: dict[str, Any] | None = None,
        timeout: float = 20.0,
        startup_timeout: float = 20.0,
        chromium: str | None = None,
    ):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.num_envs = num_envs
        self.tasks = [task] * num_envs if isinstance(task, str) else list(task)
        self.environments = [environment] * num_envs if isinstance(environment, str) else list(environment)
        if len(self.tasks) != num_envs or len(self.environments) != num_envs:
            raise ValueError(
                f"need one task and one environment per env ({num_envs}), got {len(self.tasks)} and {len(self.environments)}"
            )
        for t in self.tasks:
            mf.check_task(t)
        for e in self.environments:
            mf.check_environment(e)
        self.pages = min(num_envs, pages if pages is not None else 2)
        if self.pages < 1:
            raise ValueError(f"pages must be >= 1, got {pages}")
        self.cameras = check_cameras(cameras)
        self.image_size = image_size
        self.randomization = mf.check_randomization(randomization)
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.chromium = chromium
        self.single_observation_space, self.single_action_space = build_spaces(self.cameras, image_size)
        self.observation_space = spaces.Dict(
            {
                k: spaces.Box(
                    np.repeat(s.low[None], num_envs, 0), np.repeat(s.high[None], num_envs, 0), dtype=s.dtype
                )
                for k, s in self.single_observation_space.spaces.items()
            }
        )
        self.action_space = spaces.Box(
            np.repeat(self.single_action_space.low[None], num_envs, 0),
            np.repeat(self.single_action_space.high[None], num_envs, 0),
            dtype=np.float32,
        )
        # env i lives on page i % pages as that page's slot i // pages
        self._where = [(i % self.pages, i // self.pages) for i in range(num_envs)]
        self._backend: SimBackend | None = None
        self._rngs: list[np.random.Generator] = [np.random.default_rng(i) for i in range(num_envs)]
        self._last_obs: dict[int, dict[str, np.ndarray]] = {}
        self._frozen = [0] * num_envs
        self._active = False
        self._closed = False

    @property
    def backend(self) -> SimBackend | None:
        return self._backend

    def _reset_item(
        self, i: int, seed: int, task: str | None = None, environment: str | None = None, max_steps=None
    ) -> dict[str, Any]:
        opts = {"randomization": self.randomization, "cameras": self.cameras, "image_size": self.image_size}
        if max_steps is not None:
            opts["max_steps"] = int(max_steps)
        return {
            "type": "reset",
            "env": self._where[i][1],
            "task": task or self.tasks[i],
            "environment": environment or self.environments[i],
            "seed": int(seed),
            "options": opts,
        }

    def _exchange(
        self, items: dict[int, dict[str, Any]]
    ) -> dict[int, tuple[dict[str, np.ndarray], dict[str, Any]]]:
        """Sends each env's item to its page, to all pages first, then collects every reply."""
        backend = self._backend
        if backend is None or not backend.alive():
            self._drop_backend()
            raise SimCrashedError("the browser process is not running")
        per_page: dict[int, list[int]] = {}
        for i in items:
            per_page.setdefault(self._where[i][0], []).append(i)
        try:
            rids = {
                p: backend.send(p, {"type": "batch", "items": [items[i] for i in idx]})
                for p, idx in per_page.items()
            }
            out = {}
            for p, idx in per_page.items():
                header, payload = backend.receive(p, rids[p], "batch")
                replies = header.get("items")
                if not isinstance(replies, list):
                    raise SimProtocolError(f"page {p} answered a batch whose items are not a list")
                if len(replies) != len(idx):
                    raise SimProtocolError(f"page {p} answered {len(replies)} items for {len(idx)} requests")
                for i, item in zip(idx, replies, strict=True):
                    out[i] = parse_obs(item, payload)
                    check_frames(out[i][0], self.cameras, self.image_size)
            return out
        except (SimTimeoutError, SimCrashedError):
            self._drop_backend()
            raise

    def _check_rendering(self, i: int, obs: dict[str, np.ndarray]) -> None:
        prev = self._last_obs.get(i)
        self._last_obs[i] = obs
        self._frozen[i] = (
            self._frozen[i] + 1 if prev is not None and frames_frozen(prev, obs, self.cameras) else 0
        )
        if self._frozen[i] >= FROZEN_STEPS:
            self._drop_backend()
            raise SimCrashedError(
                f"the renderer froze: env {i} sent {self._frozen[i]} frames unchanged while the gripper "
                "moved; the next reset starts a fresh browser"
            )

    def _fresh(self, i: int, obs: dict[str, np.ndarray]) -> None:
        self._last_obs[i], self._frozen[i] = obs, 0

    def _drop_backend(self) -> None:
        self._active = False
        if self._backend is not None:
            backend, self._backend = self._backend, None
            backend.close()

    @staticmethod
    def _stack(obs_list: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {k: np.stack([o[k] for o in obs_list]) for k in obs_list[0]}

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None):
        if self._closed:
            raise SimStateError("reset() on a closed VectorSimEnv")
        if options:
            raise ValueError(
                "VectorSimEnv.reset takes no options; set tasks/environments/randomization in the constructor"
            )
        if seed is None:
            seeds = [int(r.integers(0, 2**31 - 1)) for r in self._rngs]
        elif isinstance(seed, int | np.integer):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = [int(s) for s in seed]
            if len(seeds) != self.num_envs:
                raise ValueError(f"need {self.num_envs} seeds, got {len(seeds)}")
        self._rngs = [np.random.default_rng(s) for s in seeds]
        if self._backend is not None and not self._backend.alive():
            self._drop_backend()
        if self._backend is None:
            self._backend = SimBackend(self.pages, self.chromium, self.startup_timeout, self.timeout)
        results = self._exchange({i: self._reset_item(i, s) for i, s in enumerate(seeds)})
        for i, (o, _) in results.items():
            self._fresh(i, o)
        self._active = True
        return self._stack([results[i][0] for i in range(self.num_envs)]), [
            results[i][1]["info"] for i in range(self.num_envs)
        ]

    def step(self, actions):
        if self._closed:
            raise SimStateError("step() on a closed VectorSimEnv")
        if not self._active:
            raise SimStateError("step() called before reset()")
        a = np.asarray(actions)
        if a.ndim != 2 or a.shape[0] != self.num_envs:
            raise ValueError(f"actions must have shape ({self.num_envs}, 7), got {a.shape}")
        items = {
            i: {"type": "step", "env": self._where[i][1], "action": check_action(a[i])}
            for i in range(self.num_envs)
        }
        res = self._exchange(items)
        for i in range(self.num_envs):
            self._check_rendering(i, res[i][0])
        results = [res[i] for i in range(self.num_envs)]
        obs = [o for o, _ in results]
        infos = [r["info"] for _, r in results]
        rewards = np.array([r["reward"] for _, r in results], np.float32)
        term = np.array([r["terminated"] for _, r in results], bool)
        trunc = np.array([r["truncated"] for _, r in results], bool)
        done = [i for i in range(self.num_envs) if term[i] or trunc[i]]
        if done:
            fresh = self._exchange(
                {i: self._reset_item(i, int(self._rngs[i].integers(0, 2**31 - 1))) for i in done}
            )
            for i, (o, r) in fresh.items():
                infos[i] = {**r["info"], "final_obs": obs[i], "final_info": infos[i]}
                obs[i] = o
                self._fresh(i, o)
        return self._stack(obs), rewards, term, trunc, infos

    def reset_envs(self, specs: dict[int, dict[str, Any]]) -> dict[int, tuple[dict[str, np.ndarray], dict]]:
        """Start an episode in each env named in ``specs`` (``{env: {"seed", "task", "environment",
        "max_steps"}}``; all but the seed optional), all in one exchange: ``{env: (obs, info)}``.
        Starts the browser when there is none (first use, or after a fault)."""
        if self._closed:
            raise SimStateError("reset_envs() on a closed VectorSimEnv")
        unknown = [i for i in specs if not 0 <= i < self.num_envs]
        if unknown:
            raise ValueError(f"no env {unknown} in a VectorSimEnv of {self.num_envs}")
        for spec in specs.values():
            for name, check in (("task", mf.check_task), ("environment", mf.check_environment)):
                if spec.get(name) is not None:
                    check(spec[name])
        if self._backend is not None and not self._backend.alive():
            self._drop_backend()
        if self._backend is None:
            self._backend = SimBackend(self.pages, self.chromium, self.startup_timeout, self.timeout)
            self._last_obs.clear()
        items = {
            i: self._reset_item(
                i, spec["seed"], spec.get("task"), spec.get("environment"), spec.get("max_steps")
            )
            for i, spec in specs.items()
        }
        out = {}
        for i, (o, r) in self._exchange(items).items():
            self._fresh(i, o)
            out[i] = (o, r["info"])
        self._active = True
        return out

    def step_envs(
        self, actions: dict[int, Any]
    ) -> dict[int, tuple[dict[str, np.ndarray], float, bool, bool, dict]]:
        """One step of each env named in ``actions``, in one exchange, without auto-reset:
        ``{env: (obs, reward, terminated, truncated, info)}``. An env whose episode ended must be
        started again with ``reset_envs`` before it steps."""
        if self._closed:
            raise SimStateError("step_envs() on a closed VectorSimEnv")
        if not self._active:
            raise SimStateError("step_envs() called before reset_envs()")
        items = {
            i: {"type": "step", "env": self._where[i][1], "action": check_action(a)}
            for i, a in actions.items()
        }
        out = {}
        for i, (o, r) in self._exchange(items).items():
            self._check_rendering(i, o)
            out[i] = (o, float(r["reward"]), bool(r["terminated"]), bool(r["truncated"]), r["info"])
        return out

    def close(self) -> None:
        self._closed = True
        self._drop_backend()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
