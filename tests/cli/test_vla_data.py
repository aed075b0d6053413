"""`vla-data` run as users run it: the installed console script, in a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from vla_lab.data.reader import DemoSource
from vla_lab.data.stats import compute_stats

VLA_DATA = shutil.which("vla-data", path=str(Path(sys.executable).parent))


def run(*args, timeout=120):
    assert VLA_DATA, "the vla-data console script is not installed next to this interpreter"
    return subprocess.run([VLA_DATA, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_inspect_our_file(demo_file):
    out = run("inspect", demo_file)
    assert out.returncode == 0, out.stderr
    assert "format=vla_lab" in out.stdout and "demos=6" in out.stdout
    assert "agentview (32, 32, 3)" in out.stdout and "ee_pos(3)" in out.stdout
    assert "reach the red target" in out.stdout


def test_inspect_libero_suite_dir_as_json(libero_root):
    out = run("inspect", libero_root / "libero_spatial", "--json")
    assert out.returncode == 0, out.stderr
    files = json.loads(out.stdout)
    assert [f["format"] for f in files] == ["libero", "libero"]
    assert files[0]["cameras"] == {"agentview": [32, 32, 3], "eye_in_hand": [32, 32, 3]}
    assert files[0]["proprio"] == {"ee_states": 6, "gripper_states": 2}


def test_validate_ok_and_problems(demo_file, libero_root):
    ok = run("validate", demo_file)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 1 file(s) valid")
    assert run("validate", libero_root).returncode == 0  # both LIBERO layouts, recursively
    with h5py.File(demo_file, "a") as f:
        del f["data/demo_1/obs/agentview_rgb"]
        f["data/demo_2/actions"][3, 0] = np.inf
    bad = run("validate", demo_file)
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == [
        f"{demo_file}:demo_1:obs/agentview_rgb: missing camera",
        f"{demo_file}:demo_2:actions: NaN or inf at steps [3]",
    ]


def test_stats_json_schema_and_values(demo_file):
    out = run("stats", demo_file, "--json")
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert set(payload) == {"num_demos", "num_transitions", "action", "proprio"}
    src = DemoSource(demo_file)
    expected = compute_stats({src.path: src}, src.episodes, src.proprio_keys).to_dict()
    assert payload["num_demos"] == 6 and payload["num_transitions"] == expected["num_transitions"]
    for part in ("action", "proprio"):
        assert set(payload[part]) == {"mean", "std", "min", "max", "q01", "q99"}
        np.testing.assert_allclose(payload[part]["q99"], expected[part]["q99"])
    assert len(payload["action"]["mean"]) == 7 and len(payload["proprio"]["mean"]) == 7


def test_stats_on_a_libero_glob(libero_root):
    out = run("stats", f"{libero_root}/libero_10_no_noops/*.hdf5", "--json")
    payload = json.loads(out.stdout)
    assert payload["num_demos"] == 4 and len(payload["proprio"]["q01"]) == 8
    assert min(payload["action"]["min"][6:]) >= 0.0 and max(payload["action"]["max"][6:]) <= 1.0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_text("hello"), "not an HDF5 file"),
        (lambda p: h5py.File(p, "w").close(), "foreign layout"),
    ],
)
def test_bad_paths_exit_with_a_clear_message(tmp_path, make, message):
    path = tmp_path / "x.hdf5"
    make(path)
    inspect = run("inspect", path)
    assert inspect.returncode == 2 and message in inspect.stderr and str(path) in inspect.stderr
    assert "Traceback" not in inspect.stderr
    validate = run("validate", path)
    assert validate.returncode in (1, 2) and message in validate.stdout + validate.stderr


def test_glob_matching_nothing(tmp_path):
    out = run("stats", tmp_path / "*.hdf5")
    assert out.returncode == 2 and "glob matched no files" in out.stderr


def _replace(path, key, fn):
    """Rewrite dataset ``key`` of ``path`` with ``fn(old array)`` (any shape)."""
    with h5py.File(path, "a") as f:
        old = f[key][()]
        del f[key]
        f[key] = fn(old)


@pytest.mark.parametrize(
    "key, edit, where, message",
    [
        (
            "data/demo_2/actions",
            lambda a: np.where(np.arange(len(a))[:, None] == 3, np.nan, a),
            "demo_2:actions",
            "NaN or inf at steps [3]",
        ),
        ("data/demo_1/actions", lambda a: a[:, :6], "demo_1:actions", "expected (T, 7)"),
        ("data/demo_4/obs/ee_pos", lambda a: a[:-2], "demo_4:obs/ee_pos", "steps but the actions have"),
        ("data/demo_0/obs/gripper_width", lambda a: np.full_like(a, np.inf), "demo_0:obs/", "NaN or inf"),
    ],
    ids=["nan-actions", "action-width", "proprio-length", "inf-proprio"],
)
def test_stats_and_validate_reject_bad_arrays_naming_demo_and_key(demo_file, key, edit, where, message):
    _replace(demo_file, key, edit)
    stats = run("stats", demo_file, "--json")
    assert stats.returncode == 2, stats.stdout
    assert f"{demo_file}:{where}" in stats.stderr and message in stats.stderr
    assert "Traceback" not in stats.stderr and stats.stdout == ""  # no NaN-laden JSON printed
    validate = run("validate", demo_file)
    assert validate.returncode == 1 and where.split(":")[0] in validate.stdout


def test_validate_decodes_frames_by_default(demo_file):
    with h5py.File(demo_file) as f:
        offset = f["data/demo_2/obs/agentview_rgb"].id.get_chunk_info(5).byte_offset
    with open(demo_file, "r+b") as fh:
        fh.seek(offset + 4)
        fh.write(b"\x13\x37" * 8)
    default = run("validate", demo_file)
    assert default.returncode == 1 and "demo_2:obs/agentview_rgb[5]: unreadable frame" in default.stdout
    quick = run("validate", demo_file, "--quick")
    assert quick.returncode == 0, quick.stdout  # the structural check alone does not decode frames
