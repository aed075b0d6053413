"""What the fuzzers of this suite found, each pinned by a direct test: malformed input that raised
the wrong exception, logged a traceback, or answered 500, now refused with an error naming it."""

from __future__ import annotations

import http.client
import json
import logging
import shutil
import socket
import struct

import h5py
import numpy as np
import pytest

from tests.robustness.data_reads import vla_data_cli
from tests.sim.test_protocol import _obs_item
from vla_lab.data.errors import DataFormatError
from vla_lab.data.reader import DemoSource
from vla_lab.data.synthetic import make_demo_file
from vla_lab.data.validate import validate_file
from vla_lab.policies.checkpoint import MANIFEST, verify_manifest
from vla_lab.sim import SimProtocolError, protocol
from vla_lab.sim.errors import SimRequestError

pytestmark = pytest.mark.timeout(120)


# ------------------------------------------------------------------------------------ vla-serve
def _post(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json", **headers})
    resp = conn.getresponse()
    reply = json.loads(resp.read())
    conn.close()
    return resp.status, reply


def test_an_origin_that_is_not_a_url_is_refused_naming_it(fuzz_server):
    # was: urlsplit's ValueError inside the Origin check, answered 500 with a logged traceback
    status, reply = _post(fuzz_server.server.port, b"{}", {"Origin": "http://[::1"})
    assert status == 403 and "Origin: 'http://[::1'" in reply["error"], reply


def test_an_instruction_with_a_lone_surrogate_is_a_clear_400(fuzz_server):
    # was: accepted, then the tokenizer failed inside the batched forward pass (500 for the batch)
    body = json.dumps({"image": [[[1, 2, 3]]], "instruction": "pick \ud800"}).encode()
    status, reply = _post(fuzz_server.server.port, body, {})
    assert status == 400 and reply["error"].startswith("instruction: not valid Unicode text"), reply


def test_malformed_http_is_counted_not_logged_as_a_server_error(fuzz_server, caplog):
    # was: aiohttp's ERROR "Error handling request" with a traceback for each such request
    before = fuzz_server.stats()["requests"].get("bad_http", 0)
    with caplog.at_level(logging.INFO), socket.create_connection(("127.0.0.1", fuzz_server.server.port)) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nNoColonHere\r\n\r\n")
        assert b" 400 Bad Request" in s.recv(1024).split(b"\r\n")[0]
    assert fuzz_server.stats()["requests"]["bad_http"] == before + 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert any(
        "refused a malformed request (400 Invalid header token" in r.getMessage() for r in caplog.records
    )


# --------------------------------------------------------------------------------- sim protocol
@pytest.mark.parametrize("kind", [[], {}, ["obs"]])
def test_a_message_type_that_is_not_a_string_is_a_protocol_error(kind):
    # was: TypeError: unhashable type
    raw = json.dumps({"v": protocol.PROTOCOL_VERSION, "type": kind}).encode()
    with pytest.raises(SimProtocolError, match="unknown message type"):
        protocol.decode(struct.pack("<I", len(raw)) + raw)


def test_proprio_beyond_float32_is_a_protocol_error():
    # was: accepted as inf in the float32 observation
    with pytest.raises(SimProtocolError, match=r"proprio.ee_pos must be a finite float32 number"):
        protocol.parse_obs(_obs_item(proprio__ee_pos=[0, 1e300, 0]), memoryview(bytes(16)))


@pytest.mark.parametrize("message", ["", None, 5])
def test_an_error_reply_without_a_message_still_says_what_happened(message):
    # was: SimRequestError("") or SimRequestError("None")
    with pytest.raises(SimRequestError, match="answered an error without a message"):
        protocol.check_reply({"type": "error", "message": message}, 1, "obs")


# ---------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("entry", ["abc", 7, None, {"bytes": "9", "sha256": "x"}])
def test_a_manifest_entry_of_the_wrong_shape_is_refused_naming_it(checkpoint, tmp_path, entry):
    # was: AttributeError: 'str' object has no attribute 'get'
    copy = shutil.copytree(checkpoint, tmp_path / "best")
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["files"]["config.json"] = entry
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=rf"{MANIFEST}: entry 'config.json' is not"):
        verify_manifest(copy)


# ---------------------------------------------------------------------------- demonstration data
@pytest.fixture
def demos(tmp_path):
    return make_demo_file(tmp_path / "demos.hdf5", num_demos=3, length=(6, 9), image_size=12, seed=3)


def _edit(path, fn) -> None:
    with h5py.File(path, "r+") as f:
        fn(f["data"])


@pytest.mark.parametrize(
    "edit, where",
    [
        (lambda d: d["demo_1"].attrs.__setitem__("num_samples", ""), ("demo_1", "attrs.num_samples")),
        (lambda d: d.attrs.__setitem__("num_demos", np.arange(3)), (None, "data.attrs.num_demos")),
    ],
    ids=["num_samples-text", "num_demos-array"],
)
def test_validate_names_a_count_that_is_not_an_integer(demos, edit, where):
    # was: ValueError / TypeError from int() escaping vla-data validate
    _edit(demos, edit)
    problems = {(p.demo, p.key): p.message for p in validate_file(demos)}
    assert problems[where].startswith("must be an integer"), problems


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d.attrs.__setitem__("cameras", '""'), "data.attrs.cameras: must be a JSON list of names"),
        (lambda d: d.attrs.__setitem__("proprio_keys", "5"), "data.attrs.proprio_keys: must be a JSON list"),
        (
            lambda d: d.attrs.__setitem__("action_space", json.dumps({"names": "dxdydz"})),
            "data.attrs.action_space: names must be a non-empty list of strings",
        ),
        (lambda d: d["demo_2"].attrs.__setitem__("success", np.arange(3)), "demo_2:attrs: cannot read"),
        (
            lambda d: d["demo_0"].move("actions", "actions_moved") or d["demo_0"].create_group("actions"),
            "demo_0:actions: not an array",
        ),
    ],
    ids=["cameras-string", "proprio-number", "action-names-string", "success-array", "actions-group"],
)
def test_mistyped_header_and_demo_attributes_are_data_errors(demos, edit, match):
    # were: an empty camera list read silently, TypeError later, ValueError from bool(array)
    _edit(demos, edit)
    with pytest.raises(DataFormatError, match=match) as err:
        DemoSource(demos)
    assert str(demos) in str(err.value)


def test_a_frame_past_a_short_image_dataset_is_a_data_error(demos):
    # was: h5py's IndexError escaping DemoSource.read_frame
    def shorten(d):
        frames = d["demo_0/obs/agentview_rgb"][:-1]
        del d["demo_0/obs/agentview_rgb"]
        d["demo_0/obs"].create_dataset("agentview_rgb", data=frames)

    _edit(demos, shorten)
    src = DemoSource(demos)
    with (
        src.open() as f,
        pytest.raises(DataFormatError, match=r"demo_0:obs/agentview_rgb\[\d+\]: cannot read"),
    ):
        src.read_frame(f, "demo_0", "agentview", src.episodes[0].length - 1)


def _forget_the_first_chunk_index(path) -> None:
    """Zero the entry count of the B-tree node of raw-data chunks (signature TREE, node type 1) that
    indexes demo_0's frames: HDF5 then finds none of its chunks. The node is the one whose first
    child is frame 0's chunk (every array is chunked, so it is not simply the file's first)."""
    with h5py.File(path, "r") as f:
        frames = f["data/demo_0/obs/agentview_rgb"]
        first_chunk = frames.id.get_chunk_info(0).byte_offset.to_bytes(8, "little")
        key_bytes = 8 + 8 * (frames.ndim + 1)  # chunk size, filter mask, one offset per dim + 1
    data = bytearray(path.read_bytes())
    at = data.index(b"TREE")
    while data[at + 4] != 1 or data[at + 24 + key_bytes : at + 32 + key_bytes] != first_chunk:
        at = data.index(b"TREE", at + 1)
    data[at + 6 : at + 8] = bytes(2)
    path.write_bytes(bytes(data))


def test_frames_the_chunk_index_lost_are_unreadable_not_zeros(demos):
    # was: every consumer read demo_0's frames as zeros (HDF5's fill value), without an error
    _forget_the_first_chunk_index(demos)
    problems = {(p.demo, p.key): p.message for p in validate_file(demos)}
    assert problems[("demo_0", "obs/agentview_rgb[0]")].startswith(
        "unreadable frame (missing from the file's chunk index"
    ), problems
    src = DemoSource(demos)
    with src.open() as f:
        with pytest.raises(DataFormatError, match=r"demo_0:obs/agentview_rgb\[0\]: unreadable frame"):
            src.read_frame(f, "demo_0", "agentview", 0)
        with pytest.raises(DataFormatError, match=r"demo_0:obs/agentview_rgb\[0\]: unreadable frame"):
            src.read_frames(f, "demo_0", "agentview")
        assert src.read_frames(f, "demo_1", "agentview").any()  # the other demos read as before


def test_proprio_that_is_not_t_by_d_is_blamed_on_its_own_demo(demos):
    # was: read as (T, 1), after which stats blamed the next, intact demo for its "wrong" width
    def flatten(d):
        column = d["demo_0/obs/ee_pos"][:, 0]
        del d["demo_0/obs/ee_pos"]
        d["demo_0/obs"].create_dataset("ee_pos", data=column)

    _edit(demos, flatten)
    rc, out = vla_data_cli("stats", "--json", str(demos))
    assert rc == 2 and f"{demos}:demo_0:obs/ee_pos: shape (" in out, out
    problems = {(p.demo, p.key): p.message for p in validate_file(demos)}
    assert problems[("demo_0", "obs/ee_pos")].startswith("shape ("), problems
