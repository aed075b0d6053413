"""Schema and content checks for demonstration files: one ``Problem`` per defect found."""

from __future__ import annotations

import os
from dataclasses import dataclass

import h5py
import numpy as np

from vla_lab.data import format as fmt
from vla_lab.data.errors import DataError
from vla_lab.data.reader import VLA_LAB, DemoSource, h5_errors, missing_chunk


@dataclass(frozen=True)
class Problem:
    file: str
    demo: str | None
    key: str | None
    message: str

    def __str__(self) -> str:
        where = ":".join(p for p in (self.file, self.demo, self.key) if p)
        return f"{where}: {self.message}"


def validate_file(path: str | os.PathLike, *, deep: bool = True) -> list[Problem]:
    """Check one file. ``deep`` (the default) also decodes every image frame, which finds corrupted
    chunks before training trips on them; ``deep=False`` checks structure and low-dim arrays only."""
    try:
        source = DemoSource(path)
    except DataError as err:
        return [Problem(err.file or str(path), err.demo, err.key, err.detail)]
    return validate_source(source, deep=deep)


def validate_source(source: DemoSource, *, deep: bool = False) -> list[Problem]:
    """Check an already opened source (its header parsed without error)."""
    problems: list[Problem] = []
    if not source.episodes:
        problems.append(Problem(source.path, None, "data", "file holds no demos"))
    try:
        with source.open() as f:
            if source.format == VLA_LAB:
                with h5_errors(source.path, key="data.attrs"):
                    problems += _check_header(source, f)
            for ep in source.episodes:
                problems += _check_demo_readable(source, f, ep.demo, deep)
    except DataError as err:
        problems.append(Problem(err.file or source.path, err.demo, err.key, err.detail))
    return problems


def _int_attr(attrs, name: str) -> int | None:
    """An integer attribute; None when absent; a DataError naming it when it is something else."""
    value = attrs.get(name)
    if value is None:
        return None
    if isinstance(value, np.integer | int) and not isinstance(value, bool | np.bool_):
        return int(value)
    raise DataError(f"must be an integer, got {str(value)[:60]}", key=name)


def _check_demo_readable(source: DemoSource, f: h5py.File, demo: str, deep: bool) -> list[Problem]:
    """One demo's problems; a demo too damaged to check (unreadable objects or attributes) is one
    problem naming it, and the other demos are still checked."""
    try:
        with h5_errors(source.path, demo):
            return _check_demo(source, f, demo, deep)
    except DataError as err:
        return [Problem(source.path, demo, err.key, err.detail)]


def _check_header(source: DemoSource, f: h5py.File) -> list[Problem]:
    attrs = f[fmt.DATA_GROUP].attrs
    problems = []
    try:
        declared, total_attr = _int_attr(attrs, "num_demos"), _int_attr(attrs, "total")
    except DataError as err:
        return [Problem(source.path, None, f"data.attrs.{err.key}", err.detail)]
    declared = -1 if declared is None else declared
    if declared != len(source.episodes):
        problems.append(
            Problem(
                source.path,
                None,
                "data.attrs.num_demos",
                f"says {declared} but the file holds {len(source.episodes)} demos",
            )
        )
    total = sum(e.length for e in source.episodes)
    if total_attr != total:
        problems.append(
            Problem(
                source.path, None, "data.attrs.total", f"says {total_attr} but demos sum to {total} steps"
            )
        )
    return problems


def _check_demo(source: DemoSource, f: h5py.File, demo: str, deep: bool) -> list[Problem]:
    out: list[Problem] = []

    def bad(key: str, message: str) -> None:
        out.append(Problem(source.path, demo, key, message))

    g = f[fmt.DATA_GROUP][demo]
    with h5_errors(source.path, demo, fmt.ACTIONS):
        actions = np.asarray(g[fmt.ACTIONS])
    if actions.ndim != 2 or actions.shape[1] != source.action_space.dim:
        bad(fmt.ACTIONS, f"shape {actions.shape}, expected (T, {source.action_space.dim})")
    elif not np.isfinite(actions).all():
        rows = np.unique(np.argwhere(~np.isfinite(actions))[:, 0])
        bad(fmt.ACTIONS, f"NaN or inf at steps {rows[:5].tolist()}{'...' if len(rows) > 5 else ''}")
    t = actions.shape[0] if actions.ndim else 0
    if t == 0:
        bad(fmt.ACTIONS, "empty episode")
    try:
        declared = _int_attr(g.attrs, "num_samples")
    except DataError as err:
        declared = None
        bad(f"attrs.{err.key}", err.detail)
    if declared is not None and declared != t:
        bad("attrs.num_samples", f"says {declared} but actions have {t} steps")
    if source.format == VLA_LAB and not str(g.attrs.get("language_instruction", "")).strip():
        bad("attrs.language_instruction", "missing or empty")
    for name in (fmt.REWARDS, fmt.DONES):
        if not isinstance(g.get(name), h5py.Dataset):
            bad(name, "missing dataset")
        elif g[name].shape[:1] != (t,):
            bad(name, f"{g[name].shape[0] if g[name].ndim else 0} steps but actions have {t}")
    if fmt.OBS_GROUP not in g:
        bad(fmt.OBS_GROUP, "missing group")
        return out
    obs = g[fmt.OBS_GROUP]
    for cam in source.cameras:
        key = f"obs/{fmt.camera_dataset(cam)}"
        ds = obs.get(fmt.camera_dataset(cam))
        if not isinstance(ds, h5py.Dataset):
            bad(key, "missing camera")
            continue
        if ds.ndim != 4 or ds.shape[0] != t or ds.shape[-1] != 3:
            bad(key, f"shape {ds.shape}, expected ({t}, H, W, 3)")
        elif ds.dtype != np.uint8:
            bad(key, f"dtype {ds.dtype}, expected uint8")
        elif deep:
            bad_frame = _first_unreadable_frame(ds)
            if bad_frame is not None:
                bad(f"{key}[{bad_frame[0]}]", f"unreadable frame ({bad_frame[1]})")
    for k in source.proprio_keys:
        ds = obs.get(k)
        if not isinstance(ds, h5py.Dataset):
            bad(f"obs/{k}", "missing proprio key")
            continue
        if ds.ndim != 2:
            bad(f"obs/{k}", f"shape {ds.shape}, expected ({t}, D)")
        elif ds.shape[0] != t:
            bad(f"obs/{k}", f"{ds.shape[0]} steps but actions have {t}")
        elif not np.isfinite(np.asarray(ds, dtype=np.float64)).all():
            bad(f"obs/{k}", "NaN or inf")
    return out


def _first_unreadable_frame(ds: h5py.Dataset) -> tuple[int, str] | None:
    """Decode the whole dataset in one read (fast when intact); on failure, find the frame. A frame
    that decodes to zeros may be one the chunk index lost (see ``missing_chunk``)."""
    try:
        frames = ds[()]
    except (OSError, ValueError, RuntimeError):
        frames = None
    if frames is not None:
        for i in np.flatnonzero(~frames.reshape(len(frames), -1).any(axis=1)):
            if (why := missing_chunk(ds, int(i))) is not None:
                return int(i), why
        return None
    for i in range(ds.shape[0]):
        try:
            ds[i]
        except (OSError, ValueError, RuntimeError) as exc:
            return i, str(exc)
    return None
