"""Seeded random damage to a demonstration file of the project's own format: byte damage (bit flips,
truncation, emptied or deleted file, overwritten blocks, junk appended) and HDF5 edits (datasets
deleted or replaced by other shapes, types and NaN, attributes and header JSON re-typed or cut,
demos renamed or deleted). `vla-data validate`, `vla-data stats` and reading the file as training
does must refuse with the project's DataError naming the file (and the demo when the damage is
confined to one), never raise anything else, never hang, and never read a damaged file back as if
it were intact.

A probe is a clear error when at least one consumer refuses it naming the file and none crashes;
accepted when every consumer reads back exactly what was saved (the damage hit unused bytes) or an
HDF5 edit left a different but valid file; data lost when byte damage reads back changed without
an error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.robustness.damage import FILE_DAMAGE, WEIRD
from tests.robustness.data_reads import DataView, IsolatedReader, read_demos
from tests.robustness.fuzz import SIZES, FuzzRun, pick, seed
from vla_lab.data.synthetic import make_demo_file

PROBES = {"short": 60, "long": 2000}


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    """A small file of the project's own format (the writer's layout, checksummed frames)."""
    path = tmp_path_factory.mktemp("demos") / "demos.hdf5"
    return make_demo_file(path, num_demos=3, length=(6, 9), image_size=12, seed=3)


def _edit_hdf5(rng, path: Path) -> tuple[str, str]:
    """One HDF5 object of a demo (or of /data) removed, replaced or re-typed; (demo, what)."""
    with h5py.File(path, "r+") as f:
        data = f["data"]
        demo = pick(rng, sorted(data))
        kind = int(rng.integers(6))
        if kind == 0:
            key = pick(rng, ["actions", "rewards", "dones", "obs", "obs/agentview_rgb", "obs/ee_pos"])
            if key in data[demo]:
                del data[demo][key]
            return demo, f"{demo}/{key} deleted"
        if kind == 1:
            key, value = _replacement(rng, data[demo])
            del data[demo][key]
            data[demo][key] = value
            return demo, f"{demo}/{key} replaced by {value.dtype} {value.shape}"
        if kind == 2:
            name = pick(rng, ["num_samples", "language_instruction", "success", "task"])
            data[demo].attrs[name] = _attr_value(rng)
            return demo, f"{demo}.attrs.{name} = {data[demo].attrs[name]!r:.40}"
        if kind == 3:
            name = pick(
                rng, ["action_space", "cameras", "proprio_keys", "format", "format_version", "num_demos"]
            )
            data.attrs[name] = _header_value(rng, data.attrs[name])
            return "", f"data.attrs.{name} = {data.attrs[name]!r:.60}"
        if kind == 4:
            data.move(demo, pick(rng, ["demo_x", "demo_-1", "demo_99999999999999999999", "notademo"]))
            return "", f"{demo} renamed"  # gone under its name: errors cannot name it
        del data[demo]
        return "", f"{demo} deleted"


def _replacement(rng, group) -> tuple[str, np.ndarray]:
    key = pick(rng, ["actions", "obs/ee_pos", "obs/agentview_rgb", "rewards"])
    t = group["actions"].shape[0]
    shapes = {
        "actions": [(t, 6), (t + 1, 7), (t,), (0, 7), (t, 7, 1)],
        "obs/ee_pos": [(t - 1, 3), (t, 3, 2), (t,)],
        "obs/agentview_rgb": [(t, 12, 12), (t - 1, 12, 12, 3), (t, 12, 12, 4)],
        "rewards": [(t - 1,), (t, 2)],
    }
    shape = pick(rng, shapes[key])
    dtype = pick(rng, [np.float32, np.float64, np.int8, np.uint8])
    value = rng.normal(size=shape).astype(dtype) if shape[0] > 0 else np.zeros(shape, dtype)
    if key == "actions" and rng.random() < 0.5:
        value = np.full((t, 7), pick(rng, [np.nan, np.inf, -np.inf]), np.float32)
    return key, value


def _attr_value(rng):
    return pick(rng, [-1, 10**6, "", "x" * 300, np.arange(3), 1.5, b"\xff\xfe", True])


def _header_value(rng, old):
    """A JSON attribute cut short, re-typed, with an unknown field, or a number out of range."""
    text = old.decode() if isinstance(old, bytes) else str(old)
    return pick(
        rng,
        [
            text[: int(rng.integers(0, max(len(text), 1)))],
            json.dumps(pick(rng, WEIRD)),
            json.dumps({"names": ["dx"], "bogus": 1}),
            "not json",
            -3,
            99,
            np.arange(4),
        ],
    )


def damage_demos(rng, path: Path) -> tuple[str, str, bool]:
    """(the demo the damage is confined to, or ""; what was done; whether it damaged bytes, where
    an edit through h5py may leave a different but valid file)."""
    if rng.random() < 0.45:
        return (*_edit_hdf5(rng, path), False)
    damage = pick(rng, FILE_DAMAGE)
    return "", damage(rng, path), True


def _differences(a: dict, b: dict) -> list[str]:
    """What differs between two `_load_everything` results."""
    if a["demos"].keys() != b["demos"].keys():
        return ["the set of demos"]
    out = ["header"] if a["header"] != b["header"] else []
    for demo, (meta_a, *arrays_a) in a["demos"].items():
        meta_b, *arrays_b = b["demos"][demo]
        if meta_a[0] != meta_b[0]:
            out.append(f"{demo} length")
        elif meta_a != meta_b:
            out.append(f"{demo} metadata")
        for name, x, y in zip(("actions", "proprio", "frames"), arrays_a, arrays_b, strict=True):
            if x.shape != y.shape or not np.array_equal(x, y, equal_nan=True):
                out.append(f"{demo} {name}")
    return out


#: DemoWriter checksums image frames only (Fletcher-32); actions, proprio, rewards and the HDF5
#: metadata (attributes: instructions, success, the action space) carry none, so a bit flip there
#: reads back as a different value. The fix belongs in vla_lab/data/writer.py (fletcher32 on every
#: dataset, libver="latest" for checksummed object headers); pinned by
#: test_a_bit_flip_in_an_action_is_found_by_validate.
LOWDIM_GAP = "demo-file-unchecksummed-lowdim-and-metadata"


def _errors(view: DataView) -> list[str]:
    out = [view.validate[1]] if view.validate[0] != 0 else []
    out += [view.stats[1]] if view.stats[0] != 0 else []
    return out + ([view.load[1]] if view.load[0] == "error" else [])


#: HDF5 2.0's global heap parser (where h5py keeps string attributes) loops forever on an object size
#: that wraps its arithmetic (2**64 - 16), holding the GIL: validate, stats and training hang on such
#: a file. Not fixable in vla_lab's reading code; the writer could store fixed-length strings (no
#: global heap). Pinned by test_a_looping_global_heap_is_reported_not_a_hang.
HEAP_GAP = "hdf5-global-heap-loop"


def _data_outcome(result: tuple[str, object], path: Path, demo: str, byte_damage: bool, intact: DataView):
    """(outcome, detail, known gap) of one damaged file, from its IsolatedReader result."""
    kind, got = result
    if kind == "hang":
        in_attrs = "h5py/_hl/attrs.py" in str(got)  # where string attributes are read
        return "hang", f"no result within the bound; stack: {str(got)[-300:]}", HEAP_GAP if in_attrs else None
    if kind == "crash":
        return "crash", str(got), None
    view: DataView = got
    if any(rc not in (0, 1, 2) for rc in (view.validate[0], view.stats[0])):
        return "crash", f"exit statuses {view.validate[0]}, {view.stats[0]}", None
    errors = _errors(view)
    if errors:
        unnamed = [e for e in errors if str(path) not in e or (demo and demo not in e)]
        if unnamed:
            return "wrong_answer", f"does not name {path.name} {demo}: {unnamed[0][:200]}", None
        return "clear_error", errors[0][:300], None
    return _silent_outcome(_differences(intact.load[1], view.load[1]), byte_damage)


def _silent_outcome(diff: list[str], byte_damage: bool) -> tuple[str, str, str | None]:
    """Every consumer succeeded: harmless, a valid edit, or damage read back as data."""
    if not diff:
        return "accepted", "reads back what was saved", None
    if not byte_damage:
        return "accepted", f"an edit leaving a valid file ({', '.join(diff[:3])})", None
    structural = any(d.endswith(("frames", "length")) or d == "the set of demos" for d in diff)
    detail = f"read back changed without an error: {', '.join(diff[:4])}"
    return "data_lost", detail, None if structural else LOWDIM_GAP


@pytest.fixture(scope="module")
def reader():
    reader = IsolatedReader()
    yield reader
    reader.close()


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("size", SIZES)
def test_damaged_demo_files_are_refused_naming_file_demo_and_key(demos, reader, tmp_path, size):
    run = FuzzRun("data-corruption", size, seed(20260305))
    rng = np.random.default_rng(run.seed)
    intact = read_demos(demos)
    assert intact.validate[0] == 0 and intact.stats[0] == 0 and intact.load[0] == "ok", intact
    for i in range(PROBES[size]):
        path = Path(shutil.copy(demos, tmp_path / f"{i}.hdf5"))
        demo, what, byte_damage = damage_demos(rng, path)
        outcome, detail, gap = _data_outcome(reader.read(path), path, demo, byte_damage, intact)
        run.add(outcome, what, detail, gap=gap)
        path.unlink(missing_ok=True)
    run.finish(min_tried=PROBES[size])


@pytest.mark.slow  # waits out the bound
@pytest.mark.xfail(strict=True, reason=f"known gap {HEAP_GAP}: HDF5 loops forever on this heap")
@pytest.mark.timeout(120)
def test_a_looping_global_heap_is_reported_not_a_hang(demos, tmp_path):
    path = Path(shutil.copy(demos, tmp_path / "looping.hdf5"))
    data = path.read_bytes()
    if b"GCOL" not in data:
        return  # no global heap (fixed-length strings): nothing can loop, the gap is closed
    # the first object of the first collection: signature, version, reserved (8), collection size
    # (8), then the object's index (2), reference count (2), reserved (4) and size (8)
    with open(path, "r+b") as fh:
        fh.seek(data.index(b"GCOL") + 16 + 8)
        fh.write((2**64 - 16).to_bytes(8, "little"))
    reader = IsolatedReader(bound=10.0)
    try:
        kind, got = reader.read(path)
    finally:
        reader.close()
    assert kind == "view" and got.validate[0] == 2 and str(path) in got.validate[1], (kind, str(got)[-500:])


def test_a_bit_flip_in_an_action_is_found_by_validate(demos, tmp_path):
    """Every array carries a fletcher32 checksum (the writer), so a still-finite flipped bit is found."""
    path = Path(shutil.copy(demos, tmp_path / "flipped.hdf5"))
    with h5py.File(path, "r") as f:
        offset = f["data/demo_0/actions"].id.get_chunk_info(0).byte_offset  # the raw floats
    with open(path, "r+b") as fh:
        fh.seek(offset + 2)
        byte = fh.read(1)[0]
        fh.seek(offset + 2)
        fh.write(bytes([byte ^ 0x01]))  # a low mantissa bit of the first action: still finite
    view = read_demos(path)
    assert view.validate[0] == 1 and "demo_0:actions" in view.validate[1], view.validate
