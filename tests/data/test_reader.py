import json

import h5py
import numpy as np
import pytest

from vla_lab.data.errors import DataError, DataFormatError, EmptyDatasetError
from vla_lab.data.libero import suite_files
from vla_lab.data.reader import LIBERO, LIBERO_NO_NOOPS, VLA_LAB, DemoSource, instruction_from_filename
from vla_lab.data.synthetic import MARKER_ROWS, make_libero_file
from vla_lab.data.validate import validate_file


def test_detects_each_layout(demo_file, libero_root):
    assert DemoSource(demo_file).format == VLA_LAB
    raw = suite_files(libero_root, "libero_spatial")
    assert {DemoSource(p).format for p in raw} == {LIBERO}
    regen = suite_files(libero_root, "libero_10")
    assert {DemoSource(p).format for p in regen} == {LIBERO_NO_NOOPS}


def test_libero_images_are_turned_upright(tmp_path):
    path = make_libero_file(tmp_path / "t_demo.hdf5", image_size=16)
    src = DemoSource(path)
    with src.open() as f:
        raw = f["data/demo_0/obs/agentview_rgb"][0]
        frame = src.read_frame(f, "demo_0", "agentview", 0)
    red = np.array([255, 0, 0])
    assert (raw[-MARKER_ROWS:] == red).all() and not (raw[:MARKER_ROWS] == red).all()
    assert (frame[:MARKER_ROWS] == red).all()  # the marker band is back on top
    np.testing.assert_array_equal(frame, raw[::-1, ::-1])


def test_libero_gripper_maps_to_framework_convention(tmp_path):
    path = make_libero_file(tmp_path / "t_demo.hdf5", image_size=8)
    src = DemoSource(path)
    with src.open() as f:
        raw = f["data/demo_0/actions"][:, 6]
        mapped = src.read_actions(f, "demo_0")[:, 6]
    assert set(np.unique(raw)) == {-1.0, 1.0}
    np.testing.assert_array_equal(mapped[raw == -1.0], 1.0)  # LIBERO open -> framework open (1)
    np.testing.assert_array_equal(mapped[raw == 1.0], 0.0)  # LIBERO close -> framework closed (0)


def test_libero_instruction_from_problem_info_and_from_file_name(libero_root):
    raw = DemoSource(suite_files(libero_root, "libero_spatial")[0])
    with h5py.File(raw.path) as f:
        expected = json.loads(f["data"].attrs["problem_info"])["language_instruction"]
    assert raw.episodes[0].instruction == expected
    regen = DemoSource(suite_files(libero_root, "libero_10")[0])
    assert regen.episodes[0].instruction == "pick up the black bowl"
    assert instruction_from_filename(
        "LIVING_ROOM_SCENE2_put_both_the_alphabet_soup_and_the_tomato_sauce_in_the_basket_demo.hdf5"
    ) == ("put both the alphabet soup and the tomato sauce in the basket")


def test_suite_resolution(libero_root):
    assert all("libero_spatial/" in str(p) for p in suite_files(libero_root, "libero_spatial"))
    assert all("_no_noops" in str(p) for p in suite_files(libero_root, "libero_10", "auto"))
    assert len(suite_files(libero_root / "libero_spatial", "libero_spatial")) == 2
    with pytest.raises(DataError, match="unknown LIBERO suite 'libero_space'.*libero_spatial, libero_object"):
        suite_files(libero_root, "libero_space")
    with pytest.raises(EmptyDatasetError, match="no libero_goal task files"):
        suite_files(libero_root, "libero_goal")
    with pytest.raises(EmptyDatasetError):
        suite_files(libero_root, "libero_10", "raw")


# -- bad input: each names the culprit --------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file") as err:
        DemoSource(tmp_path / "nope.hdf5")
    assert err.value.file.endswith("nope.hdf5")


def test_not_hdf5(tmp_path):
    path = tmp_path / "notes.hdf5"
    path.write_text("just text")
    with pytest.raises(DataFormatError, match="not an HDF5 file"):
        DemoSource(path)


def test_foreign_layout(tmp_path):
    path = tmp_path / "other.hdf5"
    with h5py.File(path, "w") as f:
        f.create_group("episodes").create_dataset("act", data=np.zeros((3, 7)))
    with pytest.raises(
        DataFormatError, match=r"foreign layout: no /data group \(top level: \['episodes'\]\)"
    ):
        DemoSource(path)
    with h5py.File(path, "a") as f:
        f.create_group("data/demo_0").create_dataset("qpos", data=np.zeros(3))
    with pytest.raises(DataFormatError, match="foreign layout"):
        DemoSource(path)


def test_truncated_file(demo_file):
    data = demo_file.read_bytes()
    demo_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="truncated or corrupted") as err:
        DemoSource(demo_file)
    assert err.value.file == str(demo_file)


def test_corrupted_frame_is_reported_with_its_location(demo_file):
    src = DemoSource(demo_file)
    with h5py.File(demo_file) as f:
        offset = f["data/demo_1/obs/agentview_rgb"].id.get_chunk_info(3).byte_offset
    with open(demo_file, "r+b") as fh:
        fh.seek(offset + 10)
        fh.write(b"\x00\xff" * 8)
    with src.open() as f, pytest.raises(DataFormatError) as err:
        src.read_frame(f, "demo_1", "agentview", 3)
    assert (err.value.demo, err.value.key) == ("demo_1", "obs/agentview_rgb[3]")
    problems = validate_file(demo_file)  # decoding every frame is the default
    assert [(p.demo, p.key) for p in problems] == [("demo_1", "obs/agentview_rgb[3]")]
    assert validate_file(demo_file, deep=False) == []  # the structural check alone does not decode frames


def _edit(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)


def test_length_mismatch_and_nan_are_located(demo_file):
    def damage(f):
        del f["data/demo_2/obs/ee_pos"]
        f["data/demo_2/obs"].create_dataset("ee_pos", data=np.zeros((3, 3), np.float32))
        acts = f["data/demo_4/actions"][:]
        acts[5, 2] = np.nan
        acts[7, 0] = np.inf
        f["data/demo_4/actions"][:] = acts

    _edit(demo_file, damage)
    problems = {(p.demo, p.key): p.message for p in validate_file(demo_file)}
    assert "steps but actions have" in problems[("demo_2", "obs/ee_pos")]
    assert problems[("demo_4", "actions")] == "NaN or inf at steps [5, 7]"
    assert len(problems) == 2


def test_header_counts_are_checked(demo_file):
    _edit(demo_file, lambda f: f["data"].attrs.__setitem__("num_demos", 99))
    problems = validate_file(demo_file)
    assert [(p.key, p.message) for p in problems] == [
        ("data.attrs.num_demos", "says 99 but the file holds 6 demos")
    ]


def test_problem_lines_name_file_demo_and_key(demo_file):
    _edit(demo_file, lambda f: f["data/demo_0"].__delitem__("dones"))
    (problem,) = validate_file(demo_file)
    assert str(problem) == f"{demo_file}:demo_0:dones: missing dataset"


def test_unsupported_version(demo_file):
    _edit(demo_file, lambda f: f["data"].attrs.__setitem__("format_version", 7))
    with pytest.raises(DataFormatError, match="unsupported format_version 7"):
        DemoSource(demo_file)
