"""Python end of the simulator wire protocol (see ``web/src/protocol.js`` and ``docs/simulator.md``).

Every WebSocket message, both directions, is one binary frame: a little-endian ``uint32`` header length
N, N bytes of UTF-8 JSON header, then the payload. Images travel as raw RGBA rows, bottom row first,
described in the header by ``{name, offset, nbytes, height, width, channels, rows}``.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

from vla_lab.sim.errors import SimProtocolError, SimRequestError

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 1 << 20
_LEN = struct.Struct("<I")

_REPLY_TYPES = frozenset({"hello", "obs", "batch", "pong", "closed", "error"})
#: Messages a teleoperation page sends on its own initiative.
TELEOP_TYPES = frozenset({"hello", "teleop_episode"})
_PROPRIO = {"ee_pos": 3, "ee_ori": 3, "gripper_width": 1}
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def encode(header: dict[str, Any], payload: bytes = b"") -> bytes:
    h = json.dumps({"v": PROTOCOL_VERSION, **header}, separators=(",", ":"), allow_nan=False).encode()
    return _LEN.pack(len(h)) + h + payload


def decode(data: bytes | str, allowed: frozenset[str] = _REPLY_TYPES) -> tuple[dict[str, Any], memoryview]:
    if isinstance(data, str):
        raise SimProtocolError("expected a binary frame, got a text frame")
    if len(data) < 4:
        raise SimProtocolError(f"frame of {len(data)} bytes is shorter than the 4-byte header length")
    (n,) = _LEN.unpack_from(data, 0)
    if n > MAX_HEADER_BYTES or 4 + n > len(data):
        raise SimProtocolError(f"header length {n} does not fit in a frame of {len(data)} bytes")
    try:
        header = json.loads(bytes(data[4 : 4 + n]).decode("utf-8"), parse_constant=_no_constant)
    except SimProtocolError:
        raise
    # ValueError covers malformed JSON and integers past Python's 4,300-digit conversion limit
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise SimProtocolError(f"header is not valid UTF-8 JSON: {type(e).__name__}: {e}"[:300]) from e
    if not isinstance(header, dict):
        raise SimProtocolError("header must be a JSON object")
    if header.get("v") != PROTOCOL_VERSION:
        raise SimProtocolError(
            f"simulator speaks protocol version {header.get('v')!r}, this client speaks {PROTOCOL_VERSION}"
        )
    # a JSON list or object as the type is unhashable: test the type before the set membership
    if not isinstance(header.get("type"), str) or header["type"] not in allowed:
        raise SimProtocolError(
            f"unknown message type {header.get('type')!r}; expected one of {sorted(allowed)}"
        )
    return header, memoryview(data)[4 + n :]


def check_reply(header: dict[str, Any], request_id: int, expected: str) -> None:
    """Raises for error replies and for replies that do not answer the request."""
    if header["type"] == "error":
        message = header.get("message")
        if not isinstance(message, str) or not message.strip():
            message = f"the simulator answered an error without a message (message: {_short(message)})"
        raise SimRequestError(message, str(header.get("code", "error")))
    if header.get("id") != request_id:
        raise SimProtocolError(f"reply id {header.get('id')!r} does not match request id {request_id}")
    if header["type"] != expected:
        raise SimProtocolError(f"expected a '{expected}' reply, got '{header['type']}'")


def _no_constant(name: str) -> float:
    raise SimProtocolError(f"header holds {name}, which is not a finite number")


def _num(x: Any, where: str, limit: float = math.inf) -> float:
    """A finite number; with ``limit``, also within ±limit (float32 arrays would turn more into inf)."""
    if not isinstance(x, int | float) or isinstance(x, bool):
        raise SimProtocolError(f"{where} must be a number, got {_short(x)}")
    try:
        value = float(x)
    except OverflowError:  # an integer too large for a float
        raise SimProtocolError(f"{where} must be a finite number, got {_short(x)}") from None
    if not math.isfinite(value):
        raise SimProtocolError(f"{where} must be a finite number, got {value}")
    if abs(value) > limit:
        raise SimProtocolError(f"{where} must be a finite float32 number, got {value:g}")
    return value


def _count(x: Any, where: str, limit: int = 1 << 31) -> int:
    """A non-negative integer below ``limit`` (sizes and offsets of the payload)."""
    if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x < limit:
        raise SimProtocolError(f"{where} must be an integer in [0, {limit}), got {_short(x)}")
    return x


def _short(x: Any, n: int = 80) -> str:
    text = (
        repr(x) if not isinstance(x, int) or x.bit_length() < 256 else f"an integer of {x.bit_length()} bits"
    )
    return text if len(text) <= n else text[: n - 3] + "..."


def parse_obs(item: dict[str, Any], payload: memoryview) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Turns one per-env reply into (observation dict, result fields). Images become upright RGB."""
    obs: dict[str, np.ndarray] = {}
    images = item.get("images")
    if not isinstance(images, list):
        raise SimProtocolError("obs reply lacks an 'images' list")
    for im in images:
        if not isinstance(im, dict) or not isinstance(im.get("name"), str):
            raise SimProtocolError(f"malformed image descriptor {_short(im)}: needs a name")
        name = im["name"]
        off, nbytes = _count(im.get("offset"), f"{name}.offset"), _count(im.get("nbytes"), f"{name}.nbytes")
        h, w = (
            _count(im.get("height"), f"{name}.height", 1 << 15),
            _count(im.get("width"), f"{name}.width", 1 << 15),
        )
        c = _count(im.get("channels"), f"{name}.channels", 16)
        if c != 4 or nbytes != h * w * 4 or off < 0 or off + nbytes > len(payload):
            raise SimProtocolError(
                f"image '{name}' ({h}x{w}x{c}, {nbytes} bytes at {off}) does not fit the {len(payload)}-byte payload"
            )
        rgba = np.frombuffer(payload, dtype=np.uint8, count=nbytes, offset=off).reshape(h, w, 4)
        # readPixels returns the bottom row first; flip to row 0 = top and drop alpha.
        obs[name] = np.ascontiguousarray(rgba[::-1, :, :3])
    proprio = item.get("proprio")
    if not isinstance(proprio, dict):
        raise SimProtocolError("obs reply lacks 'proprio'")
    for key, dim in _PROPRIO.items():
        v = proprio.get(key)
        if not isinstance(v, list) or len(v) != dim:
            raise SimProtocolError(f"proprio.{key} must be a list of {dim} numbers, got {v!r}")
        obs[key] = np.asarray([_num(x, f"proprio.{key}", _FLOAT32_MAX) for x in v], dtype=np.float32)
    info = item.get("info")
    if not isinstance(info, dict):
        raise SimProtocolError("obs reply lacks 'info'")
    _check_info(info)
    for key in ("terminated", "truncated", "success"):
        if not isinstance(item.get(key), bool):
            raise SimProtocolError(f"obs reply field '{key}' must be a boolean, got {item.get(key)!r}")
    result = {
        "reward": _num(item.get("reward"), "reward"),
        "terminated": item["terminated"],
        "truncated": item["truncated"],
        "info": info,
    }
    return obs, result


#: info fields read by rollouts and experts, with what each must be
_INFO_NUMBERS = ("distance_to_goal",)
_INFO_VECTORS = {"expert_action": 7, "expert_target": 7}


def _check_info(info: dict[str, Any]) -> None:
    """The info fields consumers read must be what they expect: a malformed one is this reply's
    fault and must surface here as a protocol error, not later as a ``TypeError`` in an episode."""
    if "instruction" in info and not isinstance(info["instruction"], str):
        raise SimProtocolError(f"info.instruction must be a string, got {_short(info['instruction'])}")
    if "max_steps" in info:
        _count(info["max_steps"], "info.max_steps", 1 << 20)
    for key in _INFO_NUMBERS:
        if key in info:
            info[key] = _num(info[key], f"info.{key}")
    for key, dim in _INFO_VECTORS.items():
        if key in info:
            v = info[key]
            if not isinstance(v, list) or len(v) != dim:
                raise SimProtocolError(f"info.{key} must be a list of {dim} numbers, got {_short(v)}")
            for i, x in enumerate(v):
                _num(x, f"info.{key}[{i}]")
