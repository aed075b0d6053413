"""Wire protocol: malformed messages get error replies and never kill either side."""

from __future__ import annotations

import json
import re
import struct

import pytest

from tests.sim.conftest import needs_browser
from vla_lab.sim import SimProtocolError, protocol

OK_HEADER = {"type": "pong", "id": 1}


def frame(header: dict) -> bytes:
    """A frame with exactly this header (no version added)."""
    h = json.dumps(header).encode()
    return struct.pack("<I", len(h)) + h


def test_encode_decode_round_trip():
    data = protocol.encode(OK_HEADER, b"\x01\x02")
    header, payload = protocol.decode(data)
    assert header == {"v": protocol.PROTOCOL_VERSION, **OK_HEADER} and bytes(payload) == b"\x01\x02"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("text", "binary frame"),
        (b"\x01", "shorter than the 4-byte"),
        (struct.pack("<I", 99) + b"{}", "does not fit"),
        (struct.pack("<I", 3) + b"{x}", "not valid UTF-8 JSON"),
        (struct.pack("<I", 2) + b"[]", "must be a JSON object"),
        (frame({"v": 9, "type": "obs"}), "protocol version 9"),
        (protocol.encode({"type": "weird"}), "unknown message type 'weird'"),
    ],
)
def test_python_rejects_malformed_replies(data, match):
    with pytest.raises(SimProtocolError, match=match):
        protocol.decode(data)


def test_reply_must_answer_the_request():
    header, _ = protocol.decode(protocol.encode({"type": "obs", "id": 4}))
    with pytest.raises(SimProtocolError, match="does not match request id 5"):
        protocol.check_reply(header, 5, "obs")


def test_truncated_image_payload_is_rejected():
    item = {
        "images": [{"name": "agentview", "offset": 0, "nbytes": 16, "height": 2, "width": 2, "channels": 4}],
        "proprio": {"ee_pos": [0, 0, 0], "ee_ori": [0, 0, 0], "gripper_width": [0]},
        "info": {},
        "terminated": False,
        "truncated": False,
        "success": False,
        "reward": 0,
    }
    with pytest.raises(SimProtocolError, match="does not fit the 8-byte payload"):
        protocol.parse_obs(item, memoryview(b"\0" * 8))
    obs, _ = protocol.parse_obs(item, memoryview(bytes(range(16))))
    # Rows arrive bottom-up: the last row on the wire is the top of the image.
    assert obs["agentview"][0, 0].tolist() == [8, 9, 10]


def _obs_item(**changes) -> dict:
    item = {
        "images": [{"name": "agentview", "offset": 0, "nbytes": 16, "height": 2, "width": 2, "channels": 4}],
        "proprio": {"ee_pos": [0, 0, 0], "ee_ori": [0, 0, 0], "gripper_width": [0]},
        "info": {"instruction": "pick", "distance_to_goal": 0.1, "expert_action": [0] * 7},
        "terminated": False,
        "truncated": False,
        "success": False,
        "reward": 0,
    }
    for key, value in changes.items():
        target = item
        *path, last = key.split("__")
        for part in path:
            target = target[part]
        target[last] = value
    return item


@pytest.mark.parametrize(
    ("raw_header", "match"),
    [
        (b'{"v": 1, "type": "obs", "id": ' + b"9" * 5000 + b"}", "not valid UTF-8 JSON: ValueError"),
        (b'{"v": 1, "type": "obs", "x": NaN}', "NaN, which is not a finite number"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid UTF-8 JSON: RecursionError"),
    ],
    ids=["huge-int", "nan", "deep"],
)
def test_unparseable_headers_are_protocol_errors(raw_header, match):
    with pytest.raises(SimProtocolError, match=match):
        protocol.decode(struct.pack("<I", len(raw_header)) + raw_header)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"reward": float("nan")}, "reward must be a finite number"),
        ({"reward": 10**400}, "reward must be a finite number"),
        ({"proprio__ee_pos": [0, float("inf"), 0]}, r"proprio.ee_pos must be a finite number"),
        (
            {
                "images": [
                    {
                        "name": "agentview",
                        "offset": 10**30,
                        "nbytes": 16,
                        "height": 2,
                        "width": 2,
                        "channels": 4,
                    }
                ]
            },
            "offset must be an integer",
        ),
        (
            {
                "images": [
                    {"name": "agentview", "offset": 0, "nbytes": 16.5, "height": 2, "width": 2, "channels": 4}
                ]
            },
            "nbytes must be an integer",
        ),
        (
            {
                "images": [
                    {"name": "agentview", "offset": 0, "nbytes": 16, "height": -2, "width": -2, "channels": 4}
                ]
            },
            "height must be an integer",
        ),
        ({"images": ["agentview"]}, "needs a name"),
        ({"info__distance_to_goal": "far"}, "info.distance_to_goal must be a number"),
        ({"info__instruction": 5}, "info.instruction must be a string"),
        ({"info__expert_action": [0, 0]}, "info.expert_action must be a list of 7 numbers"),
        (
            {"info__expert_action": [0] * 6 + [float("nan")]},
            r"info.expert_action\[6\] must be a finite number",
        ),
        ({"info__max_steps": True}, "info.max_steps must be an integer"),
    ],
)
def test_malformed_observations_are_protocol_errors(changes, match):
    """Every malformed reply surfaces as SimProtocolError (a SimError: one failed episode), never as
    OverflowError / ValueError / TypeError that would end a whole evaluation."""
    with pytest.raises(SimProtocolError, match=match):
        protocol.parse_obs(_obs_item(**changes), memoryview(bytes(16)))


@pytest.mark.sim
@needs_browser
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("a text frame", "expected a binary frame"),
        (b"\x00\x01", "shorter than the 4-byte header length"),
        (struct.pack("<I", 1000) + b"{}", "does not fit in a frame"),
        (struct.pack("<I", 5) + b"{oops", "not valid UTF-8 JSON"),
        (frame({"v": 2, "type": "ping"}), "unsupported protocol version 2"),
        (protocol.encode({"type": "explode"}), "unknown message type 'explode'"),
        (protocol.encode({"type": "step", "action": "up"}), "action must be an array"),
        (
            protocol.encode({"type": "step", "action": [0, 0, 0, 0, 0, 0, "x"]}),
            r"action\[6\] must be a finite number",
        ),
        (
            protocol.encode({"type": "reset", "task": "pick_block", "environment": "studio", "seed": 1.5}),
            "seed must be an integer",
        ),
        (
            protocol.encode(
                {"type": "reset", "task": "pick_block", "environment": "studio", "seed": 1, "extra": 1}
            ),
            "unknown field 'extra'",
        ),
        (protocol.encode({"type": "batch", "items": []}), "items must not be empty"),
        (
            protocol.encode({"type": "step", "action": [0] * 7, "env": 99}),
            r"env index must be an integer in \[0, 64\)",
        ),
    ],
)
def test_page_answers_malformed_requests_with_errors(sim_env, raw, match):
    sim_env.reset(seed=0)
    link = sim_env.backend.links[0]
    link.conn.send(raw)
    header, _ = protocol.decode(link.conn.recv(timeout=10))
    assert header["type"] == "error" and header["code"] in {"bad_request", "version", "not_reset"}
    assert re.search(match, header["message"]), header["message"]
    # Both sides survive: the same page keeps serving the episode.
    sim_env.step([0, 0, 0, 0, 0, 0, 1])
    pong, _ = link.request({"type": "ping"}, "pong", 10)
    assert pong["type"] == "pong"
