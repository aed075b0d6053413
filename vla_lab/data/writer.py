"""Crash-safe, streaming writer for the vla_lab demonstration format.

Episodes go into a temporary file beside the target, which is fsynced and renamed over the target
only on a clean ``close()``. A crash at any point therefore leaves either the previous file or no
file, never a half-written one. ``mode="a"`` appends to a copy of the existing file under the same
guarantee; the copy is the price of that guarantee (HDF5 has no crash-safe in-place append).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vla_lab.data import format as fmt
from vla_lab.data.errors import DataError, DataFormatError
from vla_lab.fileio import temp_file_beside


class DemoWriter:
    def __init__(
        self,
        path: str | os.PathLike,
        mode: str = "w",
        *,
        env_name: str = "unknown",
        robot: str = "unknown",
        action_space: fmt.ActionSpace | None = None,
        cameras: list[str] | None = None,
        proprio_keys: list[str] | None = None,
        env_meta: Mapping[str, Any] | None = None,
        image_compression: str | None = None,
    ):
        if mode not in ("w", "a"):
            raise ValueError(f"DemoWriter mode must be 'w' or 'a', got {mode!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._compression = image_compression
        self._tmp = temp_file_beside(self.path)
        appending = mode == "a" and self.path.exists()
        if appending:
            shutil.copyfile(self.path, self._tmp)
        try:
            self._file = h5py.File(self._tmp, "a" if appending else "w")
        except OSError as exc:
            self._tmp.unlink(missing_ok=True)
            raise DataFormatError(f"cannot open for appending: {exc}", file=str(self.path)) from exc
        if appending:
            self._load_header()
            if action_space is not None and action_space.kind != self.action_space.kind:
                self._file.close()
                self._tmp.unlink(missing_ok=True)
                raise DataFormatError(
                    f"cannot append {action_space.kind} actions to a file of {self.action_space.kind} actions",
                    file=str(self.path),
                    key="data.attrs.action_space",
                )
        else:
            self._write_header(
                env_name,
                robot,
                action_space or fmt.ActionSpace(),
                cameras or [],
                proprio_keys or [],
                dict(env_meta or {}),
            )

    # -- header -------------------------------------------------------------------------------
    def _write_header(self, env_name, robot, action_space, cameras, proprio_keys, env_meta):
        data = self._file.create_group(fmt.DATA_GROUP)
        data.attrs.update(
            {
                "format": fmt.FORMAT_NAME,
                "format_version": fmt.FORMAT_VERSION,
                "env_name": env_name,
                "robot": robot,
                "env_meta": json.dumps(env_meta),
                "action_space": action_space.to_json(),
                "cameras": json.dumps(list(cameras)),
                "proprio_keys": json.dumps(list(proprio_keys)),
                "image_convention": "upright",
                "num_demos": 0,
                "total": 0,
            }
        )
        self.action_space, self.cameras, self.proprio_keys = action_space, list(cameras), list(proprio_keys)

    def _load_header(self):
        data = self._file.get(fmt.DATA_GROUP)
        if data is None or data.attrs.get("format") != fmt.FORMAT_NAME:
            self.abort()
            raise DataFormatError(f"not a {fmt.FORMAT_NAME} file, cannot append", file=str(self.path))
        self.action_space = fmt.ActionSpace.from_json(data.attrs["action_space"])
        self.cameras = json.loads(data.attrs["cameras"])
        self.proprio_keys = json.loads(data.attrs["proprio_keys"])

    @property
    def num_demos(self) -> int:
        return int(self._file[fmt.DATA_GROUP].attrs["num_demos"])

    # -- episodes -----------------------------------------------------------------------------
    def add_episode(
        self,
        *,
        actions: np.ndarray,
        images: Mapping[str, np.ndarray],
        proprio: Mapping[str, np.ndarray] | None = None,
        rewards: np.ndarray | None = None,
        dones: np.ndarray | None = None,
        instruction: str,
        success: bool,
        task: str = "",
        environment: str = "",
        seed: int = -1,
        meta: Mapping[str, Any] | None = None,
    ) -> str:
        """Write one episode and return its key (``demo_<i>``); checks shapes before writing."""
        actions = np.asarray(actions, dtype=np.float32)
        proprio = {k: np.asarray(v, dtype=np.float32) for k, v in (proprio or {}).items()}
        key = fmt.demo_key(self.num_demos)
        t = self._check_episode(key, actions, images, proprio)
        rewards = np.zeros(t, np.float32) if rewards is None else np.asarray(rewards, np.float32)
        if dones is None:
            dones = np.zeros(t, np.uint8)
            dones[-1] = 1
        dones = np.asarray(dones).astype(np.uint8)
        for name, arr in (("rewards", rewards), ("dones", dones)):
            if arr.shape != (t,):
                raise DataError(
                    f"expected shape ({t},), got {arr.shape}", file=str(self.path), demo=key, key=name
                )

        data = self._file[fmt.DATA_GROUP]
        demo = data.create_group(key)
        # fletcher32 on every array, not only the frames: a flipped bit in an action or a proprio value
        # would otherwise read back as a plausible, wrong number
        demo.create_dataset(fmt.ACTIONS, data=actions, fletcher32=True)
        demo.create_dataset(fmt.REWARDS, data=rewards, fletcher32=True)
        demo.create_dataset(fmt.DONES, data=dones, fletcher32=True)
        obs = demo.create_group(fmt.OBS_GROUP)
        for cam, frames in images.items():
            frames = np.asarray(frames, dtype=np.uint8)
            # fletcher32: a per-chunk checksum, so a corrupted frame fails loudly instead of
            # training on garbage pixels (uncompressed data has no other integrity check).
            obs.create_dataset(
                fmt.camera_dataset(cam),
                data=frames,
                chunks=(1, *frames.shape[1:]),
                compression=self._compression,
                fletcher32=True,
            )
        for name, arr in proprio.items():
            obs.create_dataset(name, data=arr.reshape(t, -1), fletcher32=True)
        demo.attrs.update(
            {
                "num_samples": t,
                "language_instruction": instruction,
                "success": bool(success),
                "task": task,
                "environment": environment,
                "seed": int(seed),
                "meta": json.dumps(dict(meta or {})),
            }
        )
        data.attrs["num_demos"] = self.num_demos + 1
        data.attrs["total"] = int(data.attrs["total"]) + t
        return key

    def copy_episode(self, demo: h5py.Group) -> str:
        """Append an episode of another file of this layout as it is (datasets, chunking,
        checksums and attributes); returns its key here."""
        cams = [c for c in self.cameras if fmt.camera_dataset(c) not in demo[fmt.OBS_GROUP]]
        if cams:
            raise DataError(
                f"missing cameras {cams}", file=str(demo.file.filename), demo=demo.name, key="obs"
            )
        key = fmt.demo_key(self.num_demos)
        data = self._file[fmt.DATA_GROUP]
        self._file.copy(demo, data, name=key)
        data.attrs["num_demos"] = self.num_demos + 1
        data.attrs["total"] = int(data.attrs["total"]) + int(demo[fmt.ACTIONS].shape[0])
        return key

    def _check_episode(self, key, actions, images, proprio) -> int:
        where = {"file": str(self.path), "demo": key}
        if actions.ndim != 2 or actions.shape[0] == 0:
            raise DataError(f"actions must be (T, A) with T > 0, got {actions.shape}", key="actions", **where)
        t, a = actions.shape
        if a != self.action_space.dim:
            raise DataError(
                f"action dim {a} != action_space dim {self.action_space.dim}", key="actions", **where
            )
        if not np.isfinite(actions).all():
            raise DataError("actions contain NaN or inf", key="actions", **where)
        missing = set(self.cameras) - set(images)
        if missing:
            raise DataError(f"missing cameras {sorted(missing)}", key="obs", **where)
        for cam, frames in images.items():
            shape = np.shape(frames)
            if len(shape) != 4 or shape[0] != t or shape[-1] != 3:
                raise DataError(
                    f"images must be ({t}, H, W, 3), got {shape}",
                    key=f"obs/{fmt.camera_dataset(cam)}",
                    **where,
                )
        for name, arr in proprio.items():
            if arr.shape[0] != t:
                raise DataError(f"{arr.shape[0]} steps but actions have {t}", key=f"obs/{name}", **where)
        missing = set(self.proprio_keys) - set(proprio)
        if missing:
            raise DataError(f"missing proprio keys {sorted(missing)}", key="obs", **where)
        return t

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> Path:
        """Flush, fsync and atomically move the file into place; returns the final path."""
        if self._file is None:
            return self.path
        self._file.flush()
        self._file.close()
        self._file = None
        with open(self._tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop everything written since opening; the target file is left as it was."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> DemoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):
        # An unclosed writer (e.g. the process is being torn down after an error) must not leave
        # its temporary file behind.
        if getattr(self, "_file", None) is not None:
            self.abort()
