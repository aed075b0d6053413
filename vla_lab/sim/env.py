"""Gymnasium environment backed by the Three.js simulator running in headless Chromium."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from vla_lab.sim import manifest as mf
from vla_lab.sim.backend import SimBackend
from vla_lab.sim.errors import (
    SimActionError,
    SimCrashedError,
    SimProtocolError,
    SimStateError,
    SimTimeoutError,
)
from vla_lab.sim.protocol import parse_obs

#: consecutive byte-identical frames, while the gripper moves, that mean the renderer is dead
FROZEN_STEPS = 3
#: gripper motion (m, any axis) in one step that must show in the images
FROZEN_MOTION_M = 1e-3

ACTION_DIM = 7
#: the environment's name as dataset files record it (``DemoWriter(env_name=...)``)
ENV_NAME = "tabletop"
#: the robot's proprioceptive observation keys, in the order policies read them
PROPRIO_KEYS = ["ee_pos", "ee_ori", "gripper_width"]


def check_frames(obs: dict[str, np.ndarray], cameras: Sequence[str], size: int) -> None:
    """A reply must carry every camera asked for, at the size asked for: a page that sends less
    (or another size) is a protocol fault of that episode, not a KeyError steps later."""
    for cam in cameras:
        image = obs.get(cam)
        if not isinstance(image, np.ndarray) or image.shape != (size, size, 3) or image.dtype != np.uint8:
            got = "nothing" if image is None else f"{getattr(image, 'shape', type(image).__name__)}"
            raise SimProtocolError(
                f"the page sent {got} for camera {cam!r}, expected ({size}, {size}, 3) uint8"
            )


def frames_frozen(prev: dict[str, np.ndarray], obs: dict[str, np.ndarray], cameras: Sequence[str]) -> bool:
    """Every camera's frame byte-identical to the last one although the gripper moved: a renderer
    that stopped drawing, not a still scene."""
    moved = float(np.abs(obs["ee_pos"] - prev["ee_pos"]).max()) > FROZEN_MOTION_M
    return moved and all(np.array_equal(obs[c], prev[c]) for c in cameras)


def check_action(action: Any) -> list[float]:
    """Shape and finiteness are errors; range is not (the simulator clips and flags ``info['clipped']``)."""
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise SimActionError(f"action must be a sequence of {ACTION_DIM} numbers: {e}") from e
    if a.shape != (ACTION_DIM,):
        raise SimActionError(
            f"action must have shape ({ACTION_DIM},) [dx, dy, dz, droll, dpitch, dyaw, gripper], got {a.shape}"
        )
    bad = [i for i in range(ACTION_DIM) if not math.isfinite(a[i])]
    if bad:
        raise SimActionError(f"action has non-finite values at dims {bad}: {a.tolist()}")
    return a.tolist()


def build_spaces(cameras: Sequence[str], image_size: int) -> tuple[spaces.Dict, spaces.Box]:
    robot = mf.robot()
    obs: dict[str, spaces.Space] = {
        cam: spaces.Box(0, 255, (image_size, image_size, 3), dtype=np.uint8) for cam in cameras
    }
    ws = robot["workspace"]
    obs["ee_pos"] = spaces.Box(
        np.array([ws["x"][0], ws["y"][0], ws["z"][0]], np.float32),
        np.array([ws["x"][1], ws["y"][1], ws["z"][1]], np.float32),
        dtype=np.float32,
    )
    obs["ee_ori"] = spaces.Box(-np.pi, np.pi, (3,), dtype=np.float32)
    obs["gripper_width"] = spaces.Box(0.0, float(robot["max_width"]), (1,), dtype=np.float32)
    low = np.array([-1, -1, -1, -1, -1, -1, 0], dtype=np.float32)
    high = np.ones(ACTION_DIM, dtype=np.float32)
    return spaces.Dict(obs), spaces.Box(low, high, dtype=np.float32)


def check_cameras(cameras: Sequence[str]) -> list[str]:
    valid = mf.load_manifest()["cameras"]
    cams = list(cameras)
    if not cams or any(c not in valid for c in cams) or len(set(cams)) != len(cams):
        raise ValueError(f"cameras must be distinct names from {valid}, got {cams}")
    return cams


class SimEnv(gym.Env):
    """One simulated tabletop episode at a time.

    Observations: ``agentview`` (and optionally ``wrist``) RGB ``uint8 (S, S, 3)`` upright, ``ee_pos``
    (m, base frame), ``ee_ori`` (roll, pitch, yaw in rad, R = Rz Ry Rx), ``gripper_width`` (m).
    Actions: ``[dx, dy, dz, droll, dpitch, dyaw, gripper]``; dims 0-5 in [-1, 1] scale to at most
    2 cm / 0.1 rad per step, gripper in [0, 1] is the commanded opening (1 = open, 0 = closed).
    ``info`` carries ``success``, ``distance_to_goal``, ``instruction``, ``clipped`` and the privileged
    object state. The browser starts on the first ``reset`` and is restarted by a later ``reset`` if it
    crashed or hung.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        task: str = "pick_block",
        environment: str = "studio",
        *,
        cameras: Sequence[str] = ("agentview",),
        image_size: int = 224,
        randomization: dict[str, Any] | None = None,
        max_steps: int | None = None,
        timeout: float = 10.0,
        startup_timeout: float = 20.0,
        chromium: str | None = None,
        render_mode: str | None = "rgb_array",
        viewer: bool = False,
        on_url=None,
    ):
        """``viewer=True`` launches no headless browser: the episodes run in the viewer page
        (spectator mode) that a person opens at the address passed to ``on_url`` (default: printed)."""
        mf.check_task(task)
        mf.check_environment(environment)
        self.cameras = check_cameras(cameras)
        if not isinstance(image_size, int) or not 16 <= image_size <= 1024:
            raise ValueError(f"image_size must be an integer in [16, 1024], got {image_size!r}")
        if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
            raise ValueError(f"max_steps must be a positive integer or None, got {max_steps!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.task = task
        self.environment = environment
        self.image_size = image_size
        self.randomization = mf.check_randomization(randomization)
        self.max_steps = max_steps
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.chromium = chromium
        self.render_mode = render_mode
        self.viewer = viewer
        self.on_url = on_url or (lambda url: print(f"open {url} in a browser to watch", flush=True))
        self.observation_space, self.action_space = build_spaces(self.cameras, image_size)
        self._backend: SimBackend | None = None
        self._active = False
        self._closed = False
        self._last_obs: dict[str, np.ndarray] | None = None
        self._frozen_steps = 0
        self.last_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ lifecycle
    @property
    def backend(self) -> SimBackend | None:
        return self._backend

    def _ensure_backend(self) -> SimBackend:
        if self._backend is not None and not self._backend.alive():
            self._drop_backend()
        if self._backend is None:
            if self.viewer:
                self._backend = SimBackend(
                    1,
                    self.chromium,
                    self.startup_timeout,
                    self.timeout,
                    launch=False,
                    page="view.html",
                    page_params={"mode": "spectate"},
                    on_url=self.on_url,
                )
            else:
                self._backend = SimBackend(1, self.chromium, self.startup_timeout, self.timeout)
        return self._backend

    def _drop_backend(self) -> None:
        self._active = False
        if self._backend is not None:
            backend, self._backend = self._backend, None
            backend.close()

    def _request(self, header: dict[str, Any]):
        backend = self._ensure_backend() if header["type"] == "reset" else self._backend
        if backend is None:
            raise SimStateError("step() called before reset()")
        try:
            return backend.request(0, header, "obs")
        except (SimTimeoutError, SimCrashedError):
            # The page is hung or gone: kill it now so that the next reset starts a fresh browser.
            self._drop_backend()
            raise

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if self._closed:
            raise SimStateError("reset() on a closed SimEnv")
        super().reset(seed=seed)
        opts = dict(options or {})
        task = opts.pop("task", self.task)
        environment = opts.pop("environment", self.environment)
        mf.check_task(task)
        mf.check_environment(environment)
        knobs = {**self.randomization, **mf.check_randomization(opts.pop("randomization", None))}
        max_steps = opts.pop("max_steps", self.max_steps)
        if opts:
            raise ValueError(
                f"unknown reset options {sorted(opts)}; valid: task, environment, randomization, max_steps"
            )
        if seed is None:
            seed = int(self.np_random.integers(0, 2**31 - 1))
        if not isinstance(seed, int | np.integer) or not 0 <= int(seed) < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
        sim_opts: dict[str, Any] = {
            "randomization": knobs,
            "cameras": self.cameras,
            "image_size": self.image_size,
        }
        if max_steps is not None:
            sim_opts["max_steps"] = int(max_steps)
        header = {
            "type": "reset",
            "task": task,
            "environment": environment,
            "seed": int(seed),
            "options": sim_opts,
        }
        reply, payload = self._request(header)
        obs, result = parse_obs(reply, payload)
        check_frames(obs, self.cameras, self.image_size)
        self._frozen_steps = 0
        self._active = True
        self._last_obs = obs
        self.last_info = result["info"]
        return obs, result["info"]

    def step(self, action):
        if self._closed:
            raise SimStateError("step() on a closed SimEnv")
        if not self._active:
            raise SimStateError(
                "step() called before reset() (or after the episode ended); call reset() first"
            )
        a = check_action(action)
        reply, payload = self._request({"type": "step", "action": a})
        obs, result = parse_obs(reply, payload)
        check_frames(obs, self.cameras, self.image_size)
        self._check_rendering(obs)
        self._last_obs = obs
        info = result["info"]
        self.last_info = info
        if result["terminated"] or result["truncated"]:
            self._active = False
        return obs, result["reward"], result["terminated"], result["truncated"], info

    def _check_rendering(self, obs: dict[str, np.ndarray]) -> None:
        """A renderer that died under a live page (e.g. Chromium's GPU process) keeps answering
        with the same image: frames that stay byte-identical while the gripper moves are that, not
        a still scene. After ``FROZEN_STEPS`` of them the browser is dropped (the next reset starts
        a fresh one) and the episode fails with the reason."""
        prev = self._last_obs
        if prev is None:
            return
        self._frozen_steps = self._frozen_steps + 1 if frames_frozen(prev, obs, self.cameras) else 0
        if self._frozen_steps >= FROZEN_STEPS:
            self._drop_backend()
            raise SimCrashedError(
                f"the renderer froze: {self._frozen_steps} frames unchanged while the gripper moved; "
                "the next reset starts a fresh browser"
            )

    def render(self):
        if self._last_obs is None:
            return None
        return self._last_obs[self.cameras[0]]

    def close(self):
        self._closed = True
        self._drop_backend()
