"""Read-only access to demonstration files of any supported layout.

``open_source(path)`` detects the layout and returns a ``DemoSource``: our ``vla_lab-demo`` files,
LIBERO's raw ``*_demo.hdf5`` files, and OpenVLA's regenerated ``*_no_noops`` files. Everything above
this module sees one convention: upright images, framework gripper convention, float32 arrays.
h5py/OS errors never escape raw: they become ``DataError`` naming the file, demo and key.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from vla_lab.data import format as fmt
from vla_lab.data.errors import DataError, DataFormatError

VLA_LAB = "vla_lab"
LIBERO = "libero"
LIBERO_NO_NOOPS = "libero_no_noops"
FORMATS = (VLA_LAB, LIBERO, LIBERO_NO_NOOPS)

#: LIBERO's proprio datasets in the order OpenVLA-OFT feeds them (6-D EEF pose + 2 finger joints).
LIBERO_PROPRIO_KEYS = ["ee_states", "gripper_states"]
LIBERO_CAMERAS = ["agentview", "eye_in_hand"]
_SCENE_PREFIX = re.compile(r"^[A-Z0-9_]*SCENE\d+_")


def libero_to_framework_gripper(g: np.ndarray) -> np.ndarray:
    """LIBERO: -1 open / +1 close  ->  framework: 1 open / 0 closed."""
    return (1.0 - g) / 2.0


def framework_to_libero_gripper(g: np.ndarray) -> np.ndarray:
    return 1.0 - 2.0 * g


def instruction_from_filename(path: str | os.PathLike) -> str:
    """``KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5`` -> ``turn on the stove`` (LIBERO task naming)."""
    stem = Path(path).name
    for suffix in (".hdf5", ".h5"):
        stem = stem.removesuffix(suffix)
    stem = stem.removesuffix("_demo").removesuffix("_no_noops")
    return _SCENE_PREFIX.sub("", stem).replace("_", " ").strip()


@dataclass(frozen=True)
class EpisodeRef:
    """One demonstration, located and summarised (no arrays)."""

    file: str
    demo: str
    length: int
    instruction: str
    success: bool
    task: str
    environment: str


@contextmanager
def h5_errors(file: str, demo: str | None = None, key: str | None = None):
    """Turn h5py/OS failures while reading into a ``DataError`` naming the location."""
    try:
        yield
    except DataError:
        raise
    # IndexError: h5py's reads past a (corrupted or short) dataset's end
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
        raise DataFormatError(
            f"cannot read ({type(exc).__name__}: {exc})", file=file, demo=demo, key=key
        ) from exc


def open_h5(path: str | os.PathLike) -> h5py.File:
    """Open read-only with a clear error for missing, non-HDF5, truncated or corrupt files."""
    p = Path(path)
    if not p.exists():
        raise DataError("no such file", file=str(p))
    if p.is_dir():
        raise DataError("is a directory, expected an HDF5 file", file=str(p))
    try:
        if not h5py.is_hdf5(p):
            raise DataFormatError("not an HDF5 file (no HDF5 signature)", file=str(p))
        return h5py.File(p, "r")
    except DataError:
        raise
    except OSError as exc:
        raise DataFormatError(f"truncated or corrupted HDF5 file ({exc})", file=str(p)) from exc


def detect_format(f: h5py.File, path: str) -> str:
    with h5_errors(path):
        data = f.get(fmt.DATA_GROUP)
        if not isinstance(data, h5py.Group):
            raise DataFormatError(
                f"foreign layout: no /{fmt.DATA_GROUP} group (top level: {sorted(f.keys())})", file=path
            )
        name = data.attrs.get("format")
        if name is not None:
            if _as_str(name) != fmt.FORMAT_NAME:
                raise DataFormatError(f"unknown format {name!r}", file=path, key="data.attrs.format")
            version = int(data.attrs.get("format_version", -1))
            if version < 1 or version > fmt.FORMAT_VERSION:
                raise DataFormatError(
                    f"unsupported format_version {version} (this vla_lab reads 1..{fmt.FORMAT_VERSION})",
                    file=path,
                    key="data.attrs.format_version",
                )
            return VLA_LAB
        if "problem_info" in data.attrs:
            return LIBERO
        demos = [k for k in data if k.startswith(fmt.DEMO_PREFIX)]
        if demos and _looks_like_libero_demo(data[demos[0]]):
            return LIBERO_NO_NOOPS
        raise DataFormatError(
            "foreign layout: /data has no vla_lab or LIBERO metadata and its demos lack "
            "actions + obs/agentview_rgb",
            file=path,
        )


def _looks_like_libero_demo(g) -> bool:
    return isinstance(g, h5py.Group) and fmt.ACTIONS in g and "obs/agentview_rgb" in g


def _as_str(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class DemoSource:
    """One demonstration file. Holds no open handle: methods take one, so workers can own theirs."""

    def __init__(self, path: str | os.PathLike, format_hint: str = "auto"):
        self.path = str(path)
        with open_h5(self.path) as f:
            detected = detect_format(f, self.path)
            if format_hint not in ("auto", detected):
                raise DataFormatError(
                    f"configured format {format_hint!r} but the file is {detected!r}", file=self.path
                )
            self.format = detected
            with h5_errors(self.path, key="data.attrs"):
                self._read_header(f)
            self.episodes = self._list_episodes(f)

    # -- header ---------------------------------------------------------------------------------
    def _read_header(self, f: h5py.File) -> None:
        attrs = f[fmt.DATA_GROUP].attrs
        if self.format == VLA_LAB:
            self.action_space = fmt.ActionSpace.from_json(attrs["action_space"])
            self.cameras = json.loads(attrs["cameras"])
            self.proprio_keys = json.loads(attrs["proprio_keys"])
            self.flip_images = _as_str(attrs.get("image_convention", "upright")) != "upright"
            self.env_name = _as_str(attrs.get("env_name", ""))
            self.file_instruction = None
            self._check_header_types()
        else:
            self.action_space = fmt.ActionSpace()
            self.cameras = list(LIBERO_CAMERAS)
            self.proprio_keys = list(LIBERO_PROPRIO_KEYS)
            self.flip_images = True  # LIBERO renders with the OpenGL convention: rows bottom-up
            self.env_name = "libero"
            self.file_instruction = self._libero_instruction(attrs)

    def _check_header_types(self) -> None:
        """JSON attributes that parse but hold the wrong types would fail later, far from here."""
        for key, value in (("cameras", self.cameras), ("proprio_keys", self.proprio_keys)):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DataFormatError(
                    f"must be a JSON list of names, got {str(value)[:60]}",
                    file=self.path,
                    key=f"data.attrs.{key}",
                )
        space = self.action_space
        if not (
            isinstance(space.names, list) and space.names and all(isinstance(n, str) for n in space.names)
        ):
            raise DataFormatError(
                "names must be a non-empty list of strings", file=self.path, key="data.attrs.action_space"
            )
        if not isinstance(space.gripper_dims, list) or not all(
            type(d) is int and 0 <= d < space.dim for d in space.gripper_dims
        ):
            raise DataFormatError(
                f"gripper_dims must be indices below {space.dim}",
                file=self.path,
                key="data.attrs.action_space",
            )

    def _libero_instruction(self, attrs) -> str:
        if self.format == LIBERO:
            try:
                info = json.loads(attrs["problem_info"])
                text = info["language_instruction"]
            except (KeyError, json.JSONDecodeError, TypeError) as exc:
                raise DataFormatError(
                    f"problem_info has no language_instruction ({exc})",
                    file=self.path,
                    key="data.attrs.problem_info",
                ) from exc
            return " ".join(text) if isinstance(text, list) else str(text)
        return instruction_from_filename(self.path)

    def _list_episodes(self, f: h5py.File) -> list[EpisodeRef]:
        with h5_errors(self.path, key=fmt.DATA_GROUP):  # a corrupted group fails while listed
            data = f[fmt.DATA_GROUP]
            names = sorted((k for k in data if k.startswith(fmt.DEMO_PREFIX)), key=fmt.demo_sort_key)
        return [self._episode_ref(data, n) for n in names]

    def _episode_ref(self, data: h5py.Group, name: str) -> EpisodeRef:
        with h5_errors(self.path, name, fmt.ACTIONS):
            g = data[name]
            if fmt.ACTIONS not in g:
                raise DataFormatError("missing dataset", file=self.path, demo=name, key=fmt.ACTIONS)
            if not isinstance(g[fmt.ACTIONS], h5py.Dataset) or not g[fmt.ACTIONS].ndim:
                raise DataFormatError("not an array of steps", file=self.path, demo=name, key=fmt.ACTIONS)
            length = int(g[fmt.ACTIONS].shape[0])
        attrs = g.attrs
        if self.format == VLA_LAB:
            # attributes live in the (unchecksummed) object header: a damaged one fails as it is read
            with h5_errors(self.path, name, "attrs"):
                return EpisodeRef(
                    self.path,
                    name,
                    length,
                    _as_str(attrs.get("language_instruction", "")),
                    bool(attrs.get("success", True)),
                    _as_str(attrs.get("task", "")),
                    _as_str(attrs.get("environment", "")),
                )
        task = Path(self.path).name.removesuffix(".hdf5").removesuffix("_demo")
        # LIBERO keeps only successful demos (the regenerated files drop failures explicitly).
        return EpisodeRef(self.path, name, length, self.file_instruction, True, task, "libero")

    # -- arrays ---------------------------------------------------------------------------------
    def read_actions(self, f: h5py.File, demo: str) -> np.ndarray:
        with h5_errors(self.path, demo, fmt.ACTIONS):
            a = np.asarray(f[fmt.DATA_GROUP][demo][fmt.ACTIONS], dtype=np.float32)
        if self.format != VLA_LAB:
            a = a.copy()
            for d in self.action_space.gripper_dims:
                a[:, d] = libero_to_framework_gripper(a[:, d])
        return a

    def read_proprio(self, f: h5py.File, demo: str, keys: list[str], steps: int | None = None) -> np.ndarray:
        """The ``keys`` concatenated per step; with ``steps``, each key must have that many rows."""
        parts = []
        for k in keys:
            with h5_errors(self.path, demo, f"obs/{k}"):
                obs = f[fmt.DATA_GROUP][demo][fmt.OBS_GROUP]
                if k not in obs:
                    raise DataError(
                        f"missing obs key (available: {sorted(obs.keys())})",
                        file=self.path,
                        demo=demo,
                        key=f"obs/{k}",
                    )
                arr = np.asarray(obs[k], dtype=np.float32)
            if arr.ndim != 2:  # writers store (T, D); another rank would be reshaped into a wrong width
                raise DataFormatError(
                    f"shape {arr.shape}, expected (T, D)", file=self.path, demo=demo, key=f"obs/{k}"
                )
            rows = arr.shape[0]
            expected = steps if steps is not None else (parts[0].shape[0] if parts else rows)
            if rows != expected:
                raise DataError(
                    f"{rows} steps but {'the actions have' if steps is not None else f'obs/{keys[0]} has'} "
                    f"{expected}",
                    file=self.path,
                    demo=demo,
                    key=f"obs/{k}",
                )
            parts.append(arr.reshape(rows, -1))
        if not parts:
            return np.zeros((0, 0), np.float32)
        return np.concatenate(parts, axis=1)

    def image_dataset(self, f: h5py.File, demo: str, camera: str) -> h5py.Dataset:
        key = f"obs/{fmt.camera_dataset(camera)}"
        with h5_errors(self.path, demo, key):
            obs = f[fmt.DATA_GROUP][demo][fmt.OBS_GROUP]
            name = fmt.camera_dataset(camera)
            if name not in obs:
                cams = [k.removesuffix(fmt.RGB_SUFFIX) for k in obs if k.endswith(fmt.RGB_SUFFIX)]
                raise DataError(
                    f"no camera {camera!r} (available: {cams})", file=self.path, demo=demo, key=key
                )
            return obs[name]

    def read_frame(self, f: h5py.File, demo: str, camera: str, t: int) -> np.ndarray:
        """One (H, W, 3) uint8 frame, upright."""
        ds = self.image_dataset(f, demo, camera)
        with h5_errors(self.path, demo, f"obs/{fmt.camera_dataset(camera)}[{t}]"):
            frame = ds[t]
        if not frame.any():  # all zeros: HDF5's fill value, or a real black frame
            self._check_stored(ds, demo, camera, t)
        return np.ascontiguousarray(frame[::-1, ::-1]) if self.flip_images else frame

    def read_frames(self, f: h5py.File, demo: str, camera: str) -> np.ndarray:
        """All of an episode's (T, H, W, 3) uint8 frames, upright: one read instead of T. A read that
        fails is retried frame by frame, so that the error names the corrupted frame."""
        ds = self.image_dataset(f, demo, camera)
        try:
            frames = ds[()]
        except OSError:
            return np.stack([self.read_frame(f, demo, camera, t) for t in range(ds.shape[0])])
        for t in np.flatnonzero(~frames.reshape(len(frames), -1).any(axis=1)):  # all-zero frames
            self._check_stored(ds, demo, camera, int(t))
        return np.ascontiguousarray(frames[:, ::-1, ::-1]) if self.flip_images else frames

    def _check_stored(self, ds: h5py.Dataset, demo: str, camera: str, t: int) -> None:
        if (why := missing_chunk(ds, t)) is not None:
            key = f"obs/{fmt.camera_dataset(camera)}[{t}]"
            raise DataFormatError(f"unreadable frame ({why})", file=self.path, demo=demo, key=key)

    def open(self) -> h5py.File:
        return open_h5(self.path)

    def __repr__(self) -> str:
        return f"DemoSource({self.path!r}, format={self.format!r}, demos={len(self.episodes)})"


def missing_chunk(ds: h5py.Dataset, t: int) -> str | None:
    """Why frame ``t`` of ``ds`` is not in the file, or None. A damaged chunk index makes HDF5 read
    a chunk it cannot find as the fill value (zeros), without an error; reading the chunk's raw
    bytes does fail. Callers check all-zero frames only, so intact data pays nothing."""
    if ds.chunks is None:
        return None
    start = (t - t % ds.chunks[0],)
    grid = (range(0, n, c) for n, c in zip(ds.shape[1:], ds.chunks[1:], strict=True))
    for rest in itertools.product(*grid):
        try:
            ds.id.read_direct_chunk(start + rest)
        except (OSError, RuntimeError, ValueError) as exc:
            return f"missing from the file's chunk index, it would read as zeros: {exc}"
    return None


def expand_paths(spec: str | os.PathLike) -> list[Path]:
    """A file, a directory (all ``*.hdf5`` inside, recursively) or a glob, sorted."""
    p = Path(spec)
    if p.is_dir():
        files = sorted(p.rglob("*.hdf5")) + sorted(p.rglob("*.h5"))
        if not files:
            raise DataError("directory holds no .hdf5 files", file=str(p))
        return files
    if any(ch in str(spec) for ch in "*?["):
        import glob

        files = sorted(Path(x) for x in glob.glob(str(spec), recursive=True))
        if not files:
            raise DataError("glob matched no files", file=str(spec))
        return files
    if not p.exists():
        raise DataError("no such file", file=str(p))
    return [p]


def iter_sources(spec: str | os.PathLike, format_hint: str = "auto") -> Iterator[DemoSource]:
    for path in expand_paths(spec):
        yield DemoSource(path, format_hint)
