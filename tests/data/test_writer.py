import json
import os
import signal
import stat
import subprocess
import sys

import h5py
import numpy as np
import pytest

from vla_lab.data import format as fmt
from vla_lab.data.errors import DataError, DataFormatError
from vla_lab.data.reader import DemoSource
from vla_lab.data.writer import DemoWriter


def _episode(t=5, a=7, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        actions=rng.normal(size=(t, a)).astype(np.float32),
        images={"agentview": rng.integers(0, 255, (t, size, size, 3), dtype=np.uint8)},
        proprio={"ee_pos": rng.normal(size=(t, 3))},
        instruction="reach the target",
        success=True,
        task="reach",
        environment="studio",
        seed=seed,
    )


def _writer(path, mode="w"):
    return DemoWriter(
        path, mode, env_name="tabletop", robot="ee", cameras=["agentview"], proprio_keys=["ee_pos"]
    )


def test_round_trip_layout_and_metadata(tmp_path):
    path = tmp_path / "d.hdf5"
    ep = _episode()
    with _writer(path) as w:
        assert w.add_episode(**ep) == "demo_0"
        assert w.add_episode(**_episode(t=3, seed=1)) == "demo_1"
    with h5py.File(path) as f:
        data = f["data"]
        assert (
            data.attrs["format"] == fmt.FORMAT_NAME
            and data.attrs["num_demos"] == 2
            and data.attrs["total"] == 8
        )
        assert fmt.ActionSpace.from_json(data.attrs["action_space"]).gripper_dims == [6]
        demo = data["demo_0"]
        np.testing.assert_array_equal(demo["actions"][:], ep["actions"])
        np.testing.assert_array_equal(demo["obs/agentview_rgb"][:], ep["images"]["agentview"])
        assert demo["obs/agentview_rgb"].chunks == (1, 8, 8, 3)
        assert demo.attrs["language_instruction"] == "reach the target" and demo.attrs["seed"] == 0
        assert demo["dones"][:].tolist() == [0, 0, 0, 0, 1]
        assert json.loads(demo.attrs["meta"]) == {}


def test_append_keeps_existing_demos(tmp_path):
    path = tmp_path / "d.hdf5"
    with _writer(path) as w:
        w.add_episode(**_episode())
    with _writer(path, "a") as w:
        assert w.add_episode(**_episode(seed=2)) == "demo_1"
    src = DemoSource(path)
    assert [e.demo for e in src.episodes] == ["demo_0", "demo_1"]


def test_error_inside_with_leaves_previous_file_intact(tmp_path):
    path = tmp_path / "d.hdf5"
    with _writer(path) as w:
        w.add_episode(**_episode())
    before = path.read_bytes()
    with pytest.raises(RuntimeError), _writer(path, "a") as w:
        w.add_episode(**_episode(seed=3))
        raise RuntimeError("collector crashed")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d.hdf5"]  # no temporary left behind


def test_sigkill_mid_write_never_leaves_a_partial_file(tmp_path):
    path = tmp_path / "d.hdf5"
    with _writer(path) as w:
        w.add_episode(**_episode())
    script = f"""
import os, signal, numpy as np
from vla_lab.data.writer import DemoWriter
w = DemoWriter({str(path)!r}, "a")
w.add_episode(actions=np.zeros((4, 7), np.float32), images={{"agentview": np.zeros((4, 8, 8, 3), np.uint8)}},
              proprio={{"ee_pos": np.zeros((4, 3))}}, instruction="x", success=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert len(DemoSource(path).episodes) == 1  # the old file, untouched and readable


def test_fresh_file_is_absent_until_close(tmp_path):
    path = tmp_path / "new.hdf5"
    w = _writer(path)
    w.add_episode(**_episode())
    assert not path.exists()
    w.close()
    assert path.exists()


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda e: e.update(actions=e["actions"][:, :5]), "actions"),
        (lambda e: e["actions"].__setitem__((2, 1), np.nan), "actions"),
        (lambda e: e["images"].__setitem__("agentview", e["images"]["agentview"][:3]), "obs/agentview_rgb"),
        (lambda e: e["proprio"].__setitem__("ee_pos", e["proprio"]["ee_pos"][:2]), "obs/ee_pos"),
        (lambda e: e.update(images={}), "obs"),
    ],
)
def test_bad_episode_is_rejected_naming_the_key(tmp_path, change, key):
    ep = _episode()
    change(ep)
    with _writer(tmp_path / "d.hdf5") as w, pytest.raises(DataError) as err:
        w.add_episode(**ep)
    assert err.value.key == key and err.value.demo == "demo_0"
    assert str(tmp_path / "d.hdf5") in str(err.value)


def test_append_to_foreign_file_is_refused(tmp_path):
    path = tmp_path / "foreign.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=[1])
    with pytest.raises(DataFormatError, match="cannot append"):
        _writer(path, "a")
    assert [p.name for p in tmp_path.iterdir()] == ["foreign.hdf5"]


def test_invalid_mode(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        DemoWriter(tmp_path / "x.hdf5", "r")
    assert not list(tmp_path.iterdir())


def test_written_file_gets_the_permissions_of_a_plain_open(tmp_path):
    # The file is built under a temporary name and renamed; it must not stay owner-only.
    plain = tmp_path / "plain"
    plain.write_text("")
    with _writer(tmp_path / "d.hdf5") as w:
        w.add_episode(**_episode())
    mode = stat.S_IMODE(os.stat(tmp_path / "d.hdf5").st_mode)
    assert mode == stat.S_IMODE(os.stat(plain).st_mode)
