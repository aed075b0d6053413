"""Synthetic demonstration files: ours and LIBERO's exact layouts, made locally for tests and benches.

Episodes are small reaching motions whose images show where the end effector is, so the images,
proprio and actions agree with each other (a model can learn from them), and every image carries an
orientation marker (a red band on its top rows) that tests use to check flips.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from vla_lab.data.format import ActionSpace
from vla_lab.data.libero import SUITES
from vla_lab.data.writer import DemoWriter

MARKER_ROWS = 4
INSTRUCTIONS = [
    "reach the red target",
    "push the blue block left",
    "pick up the green cube",
    "put the cube in the bowl",
    "stack the yellow block on the red block",
]


def _episode(rng: np.random.Generator, length: int, image_size: int, cameras: list[str]):
    start, goal = rng.uniform(-0.2, 0.2, 3), rng.uniform(-0.2, 0.2, 3)
    frac = np.linspace(0, 1, length)[:, None]
    pos = start + (goal - start) * frac + rng.normal(0, 0.002, (length, 3))
    actions = np.zeros((length, 7), np.float32)
    actions[:, :3] = np.diff(pos, axis=0, append=pos[-1:]) / 0.02
    actions[:, 3:6] = rng.normal(0, 0.05, (length, 3))
    actions[:, 6] = (frac[:, 0] < 0.6).astype(np.float32)  # open, then close
    ori = np.cumsum(actions[:, 3:6] * 0.01, axis=0)
    images = {cam: render_frames(pos, image_size, rng.integers(40, 200, 3)) for cam in cameras}
    proprio = {
        "ee_pos": pos.astype(np.float32),
        "ee_ori": ori.astype(np.float32),
        "gripper_width": (0.04 * actions[:, 6:7]).astype(np.float32),
        # privileged (written, not a declared proprio key), as vla-collect record_object_pos=true writes it
        "object_pos": np.repeat(goal[None], length, 0).astype(np.float32),
        "object_offset": (goal[None] - pos).astype(np.float32),
    }
    return actions, images, proprio


def render_frames(pos: np.ndarray, size: int, background) -> np.ndarray:
    """Frames with a white square at the end-effector's (x, y) and a red marker band on top."""
    t = len(pos)
    frames = np.empty((t, size, size, 3), np.uint8)
    frames[:] = np.asarray(background, np.uint8)
    half = max(2, size // 16)
    centers = np.clip(((pos[:, :2] + 0.25) / 0.5 * size).astype(int), half, size - half - 1)
    for i, (cx, cy) in enumerate(centers):
        frames[i, cy - half : cy + half, cx - half : cx + half] = 255
    frames[:, :MARKER_ROWS] = (255, 0, 0)
    return frames


def make_demo_file(
    path: str | Path,
    *,
    num_demos: int = 4,
    length: tuple[int, int] = (20, 30),
    image_size: int = 64,
    cameras: tuple[str, ...] = ("agentview",),
    seed: int = 0,
    failures: int = 0,
    still: int = 0,
    task: str = "reach",
    environment: str = "synthetic",
    action_space: ActionSpace | None = None,
) -> Path:
    """A vla_lab-format file; the last ``failures`` demos are unsuccessful, ``still`` more never move."""
    rng = np.random.default_rng(seed)
    with DemoWriter(
        path,
        env_name="synthetic",
        robot="point_ee",
        action_space=action_space or ActionSpace(),
        cameras=list(cameras),
        proprio_keys=["ee_pos", "ee_ori", "gripper_width"],
        env_meta={"generator": "vla_lab.data.synthetic"},
    ) as w:
        for i in range(num_demos + still):
            t = int(rng.integers(length[0], length[1] + 1))
            actions, images, proprio = _episode(rng, t, image_size, list(cameras))
            if i >= num_demos:  # a demo in which the robot never moved
                proprio["ee_pos"][:] = proprio["ee_pos"][0]
                actions[:, :6] = 0
            w.add_episode(
                actions=actions,
                images=images,
                proprio=proprio,
                rewards=np.r_[np.zeros(t - 1), 1.0].astype(np.float32),
                instruction=INSTRUCTIONS[i % len(INSTRUCTIONS)],
                success=i < num_demos - failures or i >= num_demos,
                task=task,
                environment=environment,
                seed=seed * 1000 + i,
            )
    return Path(path)


def libero_file_name(suite: str, task_index: int) -> str:
    words = [
        "pick_up_the_black_bowl",
        "put_the_cream_cheese_in_the_bowl",
        "open_the_top_drawer",
        "turn_on_the_stove",
        "put_the_ketchup_in_the_basket",
    ]
    stem = words[task_index % len(words)]
    if task_index >= len(words):
        stem = f"{stem}_{task_index}"
    if suite in ("libero_10", "libero_90"):
        stem = f"KITCHEN_SCENE{task_index + 1}_{stem}"  # these suites prefix the scene
    return f"{stem}_demo.hdf5"


def make_libero_file(
    path: str | Path,
    *,
    variant: str = "raw",
    num_demos: int = 3,
    length: tuple[int, int] = (20, 30),
    image_size: int = 128,
    seed: int = 0,
    instruction: str | None = None,
) -> Path:
    """A file in LIBERO's raw (``variant="raw"``) or regenerated no-noops layout.

    Images are stored upside down as LIBERO stores them; gripper actions are -1 (open) / +1 (close).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    text = instruction or path.name.removesuffix("_demo.hdf5").replace("_", " ")
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        total = 0
        for i in range(num_demos):
            t = int(rng.integers(length[0], length[1] + 1))
            actions, images, proprio = _episode(rng, t, image_size, ["agentview", "eye_in_hand"])
            actions[:, 6] = 1.0 - 2.0 * actions[:, 6]  # framework 1=open -> LIBERO -1=open
            g = data.create_group(f"demo_{i}")
            g.create_dataset("actions", data=actions.astype(np.float64))
            g.create_dataset("states", data=rng.normal(size=(t, 47)))
            g.create_dataset("robot_states", data=rng.normal(size=(t, 9)))
            g.create_dataset("rewards", data=np.r_[np.zeros(t - 1), 1].astype(np.uint8))
            g.create_dataset("dones", data=np.r_[np.zeros(t - 1), 1].astype(np.uint8))
            obs = g.create_group("obs")
            for cam in ("agentview", "eye_in_hand"):
                obs.create_dataset(f"{cam}_rgb", data=images[cam][:, ::-1, ::-1])  # stored upside down
            ee_ori = proprio["ee_ori"].astype(np.float64)
            obs.create_dataset("ee_pos", data=proprio["ee_pos"].astype(np.float64))
            obs.create_dataset("ee_ori", data=ee_ori)
            obs.create_dataset("ee_states", data=np.concatenate([proprio["ee_pos"], ee_ori], 1))
            width = proprio["gripper_width"].astype(np.float64)
            obs.create_dataset("gripper_states", data=np.concatenate([width / 2, -width / 2], 1))
            obs.create_dataset("joint_states", data=rng.normal(size=(t, 7)))
            if variant == "raw":
                g.attrs["num_samples"] = t
                g.attrs["model_file"] = "<mujoco model xml>"
                g.attrs["init_state"] = rng.normal(size=47)
            total += t
        if variant == "raw":
            data.attrs["problem_info"] = json.dumps(
                {
                    "problem_name": "libero_tabletop_manipulation",
                    "domain_name": "robosuite",
                    "language_instruction": text,
                }
            )
            data.attrs["env_args"] = json.dumps(
                {
                    "type": 1,
                    "env_name": "Libero_Tabletop_Manipulation",
                    "env_kwargs": {"camera_heights": image_size, "camera_widths": image_size},
                }
            )
            data.attrs["bddl_file_name"] = f"libero/bddl_files/{path.stem}.bddl"
            data.attrs["bddl_file_content"] = "(define (problem LIBERO_Tabletop_Manipulation))"
            data.attrs["num_demos"] = num_demos
            data.attrs["total"] = total
            data.attrs["macros_image_convention"] = "opengl"
    return path


def make_libero_suite(
    root: str | Path,
    suite: str = "libero_spatial",
    *,
    variant: str = "raw",
    num_tasks: int = 3,
    num_demos: int = 2,
    image_size: int = 128,
    seed: int = 0,
) -> list[Path]:
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite}")
    folder = Path(root) / (suite if variant == "raw" else f"{suite}_no_noops")
    return [
        make_libero_file(
            folder / libero_file_name(suite, k),
            variant=variant,
            num_demos=num_demos,
            image_size=image_size if variant == "raw" else 2 * image_size,
            seed=seed + k,
        )
        for k in range(num_tasks)
    ]
