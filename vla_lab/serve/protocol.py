"""Wire format of ``vla-serve``: request parsing and validation, binary framing. No I/O here.

JSON request: ``{"image": <base64 PNG/JPEG or nested uint8 list HxWx3>, "instruction": str,
"proprio": optional list (or {key: list}), "images": optional {camera: image}, "id": optional}``.
JSON reply: ``{"actions": [[...] * A] * K, "latency_ms": float, "batch_size": int, "id": ...}``.

Binary frame (request and reply alike)::

    b"VLA1" | uint32 little-endian n | n bytes UTF-8 JSON header | payload

Request header: ``{"instruction": str, "shape": [H, W, 3], "cameras": optional [name, ...],
"proprio": optional list, "id": optional}``; payload: one raw uint8 HxWx3 image (row-major RGB) per
camera, in ``cameras`` order (default: the policy's cameras). Reply header: ``{"shape": [K, A],
"dtype": "<f4", "latency_ms", "batch_size", "id"}``; payload: K*A little-endian float32.

Every problem raises :class:`RequestError` with an HTTP status and a message naming the field.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

MAGIC = b"VLA1"
_LEN = struct.Struct("<I")
PREFIX = len(MAGIC) + _LEN.size
#: binary headers are small JSON objects; anything bigger is a malformed (or hostile) request
MAX_HEADER_BYTES = 64 * 1024
#: image formats accepted inside JSON (base64)
IMAGE_FORMATS = ("PNG", "JPEG")


class RequestError(ValueError):
    """A malformed request; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What the served policy accepts (from its checkpoint) and the server's size limits."""

    cameras: tuple[str, ...]
    proprio_keys: tuple[str, ...] = ()
    state_dim: int = 0
    max_image_side: int = 1024
    max_instruction_chars: int = 1000


@dataclass
class Request:
    images: dict[str, np.ndarray]  # camera -> (H, W, 3) uint8
    instruction: str
    proprio: np.ndarray | None = None  # flat float32, proprio_keys concatenated in order
    id: Any = None


# ---------------------------------------------------------------------------------------- requests
#: longest integer literal a request may hold; no field needs more, and Python refuses to convert
#: more than 4,300 digits anyway (a ValueError deep inside json.loads)
MAX_INT_DIGITS = 64


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise RequestError(f"number: an integer of {len(text)} digits; at most {MAX_INT_DIGITS} allowed")
    return int(text)


def _no_constant(name: str) -> float:
    raise RequestError(f"number: {name} is not a finite number")


def load_json(data: bytes | str) -> Any:
    """``json.loads`` that refuses huge integers and NaN/Infinity with a ``RequestError``."""
    return json.loads(data, parse_int=_bounded_int, parse_constant=_no_constant)


def parse_json_request(body: bytes | str, limits: Limits) -> Request:
    try:
        msg = load_json(body)
    except UnicodeDecodeError as e:
        raise RequestError(f"body: not UTF-8 JSON ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise RequestError(f"body: invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise RequestError("body: JSON nested too deeply") from None
    if not isinstance(msg, dict):
        raise RequestError(f"body: must be a JSON object, got {type(msg).__name__}")
    if "images" in msg:
        if "image" in msg:
            raise RequestError("image, images: give one of them, not both")
        raw = msg["images"]
        if not isinstance(raw, dict):
            raise RequestError(f"images: must be an object {{camera: image}}, got {type(raw).__name__}")
    elif "image" in msg:
        if len(limits.cameras) != 1:
            raise RequestError(f"images: this policy needs cameras {list(limits.cameras)}; send images={{…}}")
        raw = {limits.cameras[0]: msg["image"]}
    else:
        raise RequestError("image: missing")
    images = {}
    for cam in limits.cameras:
        if cam not in raw:
            raise RequestError(f"images.{cam}: missing; this policy needs cameras {list(limits.cameras)}")
        name = "image" if "image" in msg else f"images.{cam}"
        images[cam] = decode_image(raw[cam], name, limits.max_image_side)
    return Request(
        images=images,
        instruction=check_instruction(msg.get("instruction"), limits),
        proprio=check_proprio(msg.get("proprio"), limits),
        id=check_id(msg.get("id")),
    )


def parse_binary_request(data: bytes, limits: Limits) -> Request:
    header, payload = split_frame(data, "request")
    shape = header.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape)
    ):
        raise RequestError(f"header.shape: must be [H, W, 3] integers, got {_short(shape)}")
    h, w, c = shape
    if c != 3:
        raise RequestError(f"header.shape: images must have 3 (RGB) channels, got {c}")
    _check_side(h, w, "header.shape", limits.max_image_side)
    cameras = header.get("cameras", list(limits.cameras))
    if not isinstance(cameras, list) or not all(isinstance(x, str) for x in cameras):
        raise RequestError(f"header.cameras: must be a list of camera names, got {_short(cameras)}")
    missing = [cam for cam in limits.cameras if cam not in cameras]
    if missing or len(set(cameras)) != len(cameras):
        raise RequestError(
            f"header.cameras: this policy needs cameras {list(limits.cameras)} (once each), got {cameras}"
        )
    size = h * w * 3
    if len(payload) != size * len(cameras):
        raise RequestError(
            f"payload: {len(payload)} bytes, expected {len(cameras)} x {h}x{w}x3 uint8 = "
            f"{size * len(cameras)} bytes"
        )
    images = {
        cam: np.frombuffer(payload, np.uint8, count=size, offset=i * size).reshape(h, w, 3)
        for i, cam in enumerate(cameras)
        if cam in limits.cameras
    }
    return Request(
        images=images,
        instruction=check_instruction(header.get("instruction"), limits),
        proprio=check_proprio(header.get("proprio"), limits),
        id=check_id(header.get("id")),
    )


def split_frame(data: bytes, what: str) -> tuple[dict[str, Any], memoryview]:
    """``(header, payload)`` of a binary frame."""
    view = memoryview(data)
    if len(view) < PREFIX or bytes(view[:4]) != MAGIC:
        raise RequestError(f"{what}: binary frames start with {MAGIC!r} and a uint32 header length")
    (n,) = _LEN.unpack_from(view, 4)
    if n > MAX_HEADER_BYTES:
        raise RequestError(f"header: {n} bytes, at most {MAX_HEADER_BYTES} allowed")
    if PREFIX + n > len(view):
        raise RequestError(f"header: length says {n} bytes, only {len(view) - PREFIX} follow")
    try:
        header = load_json(bytes(view[PREFIX : PREFIX + n]))
    except RequestError as e:
        raise RequestError(f"header: {e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise RequestError(f"header: not a UTF-8 JSON object ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise RequestError(f"header: must be a JSON object, got {type(header).__name__}")
    return header, view[PREFIX + n :]


def encode_frame(header: dict[str, Any], payload: bytes | memoryview = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join((MAGIC, _LEN.pack(len(head)), head, payload))


def encode_binary_request(
    images: np.ndarray | dict[str, np.ndarray], instruction: str, proprio=None, id: Any = None
) -> bytes:
    """Client side of the binary form: one HxWx3 uint8 image (the policy's only camera) or
    ``{camera: image}``, every image of the same shape."""
    named = isinstance(images, dict)
    arrays = [np.ascontiguousarray(im, dtype=np.uint8) for im in (images.values() if named else [images])]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"the binary form needs images of one shape, got {sorted(shapes)}")
    header: dict[str, Any] = {"instruction": instruction, "shape": list(arrays[0].shape)}
    if named:
        header["cameras"] = list(images)
    if proprio is not None:
        header["proprio"] = np.asarray(proprio, np.float64).reshape(-1).tolist()
    if id is not None:
        header["id"] = id
    return encode_frame(header, b"".join(a.tobytes() for a in arrays))


# ----------------------------------------------------------------------------------------- replies
def encode_binary_reply(actions: np.ndarray, meta: dict[str, Any]) -> bytes:
    actions = np.ascontiguousarray(actions, dtype="<f4")
    return encode_frame({"shape": list(actions.shape), "dtype": "<f4", **meta}, actions.tobytes())


def decode_binary_reply(data: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    header, payload = split_frame(data, "reply")
    shape = tuple(header["shape"])
    return np.frombuffer(payload, "<f4").reshape(shape).astype(np.float32), header


def json_reply(actions: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
    # float32 -> Python float is exact, and JSON round-trips it exactly
    return {"actions": np.asarray(actions, np.float32).tolist(), **meta}


# -------------------------------------------------------------------------------------- validation
def decode_image(value: Any, name: str, max_side: int) -> np.ndarray:
    """(H, W, 3) uint8 from a base64 PNG/JPEG string or a nested list of integers."""
    if isinstance(value, str):
        return _decode_base64_image(value, name, max_side)
    if isinstance(value, list):
        return _list_image(value, name, max_side)
    raise RequestError(
        f"{name}: must be a base64 PNG/JPEG string or a nested HxWx3 uint8 list, got {type(value).__name__}"
    )


def _decode_base64_image(value: str, name: str, max_side: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if value.startswith("data:"):  # data URL: data:image/png;base64,....
        value = value.partition(",")[2]
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(f"{name}: invalid base64 ({e})") from None
    try:
        with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as img:
            # the header alone gives the size: refuse huge images before decoding any pixel
            _check_side(img.height, img.width, name, max_side)
            if img.mode not in ("RGB", "RGBA"):
                raise RequestError(f"{name}: must be an RGB image, got mode {img.mode}")
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except RequestError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise RequestError(f"{name}: not a decodable PNG or JPEG image ({type(e).__name__}: {e})") from None
    return arr


def _list_image(value: list, name: str, max_side: int) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as e:  # ragged nesting
        raise RequestError(f"{name}: nested list is not a regular HxWx3 array ({e})") from None
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise RequestError(f"{name}: must have shape [H, W, 3], got {list(arr.shape)}")
    _check_side(arr.shape[0], arr.shape[1], name, max_side)
    if arr.dtype.kind not in "iu":
        raise RequestError(f"{name}: values must be integers 0-255 (uint8), got {_kind(arr.dtype)}")
    if arr.min() < 0 or arr.max() > 255:
        raise RequestError(f"{name}: values must be in [0, 255], got [{arr.min()}, {arr.max()}]")
    return arr.astype(np.uint8)


def _check_side(h: int, w: int, name: str, max_side: int) -> None:
    if not (1 <= h <= max_side and 1 <= w <= max_side):
        raise RequestError(f"{name}: image is {h}x{w}; height and width must be in [1, {max_side}]")


def check_instruction(value: Any, limits: Limits) -> str:
    if value is None:
        raise RequestError("instruction: missing")
    if not isinstance(value, str):
        raise RequestError(f"instruction: must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RequestError("instruction: empty")
    try:  # JSON's \ud800 escapes decode to lone surrogates, which the tokenizer cannot encode
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RequestError(
            f"instruction: not valid Unicode text ({e.reason} at character {e.start})"
        ) from None
    if len(value) > limits.max_instruction_chars:
        raise RequestError(
            f"instruction: {len(value)} characters, at most {limits.max_instruction_chars} allowed"
        )
    return value


def check_proprio(value: Any, limits: Limits) -> np.ndarray | None:
    """Flat proprio vector (``proprio_keys`` concatenated); ``None`` when the policy takes none."""
    if value is None:
        if limits.proprio_keys:
            raise RequestError(
                f"proprio: missing; this policy needs {limits.state_dim} values "
                f"({', '.join(limits.proprio_keys)} concatenated)"
            )
        return None
    if isinstance(value, dict):
        missing = [k for k in limits.proprio_keys if k not in value]
        if missing:
            raise RequestError(
                f"proprio: missing keys {missing}; this policy needs {list(limits.proprio_keys)}"
            )
        parts = {str(k): _numbers(v, f"proprio.{k}") for k, v in value.items()}
        vec = np.concatenate([parts[k] for k in limits.proprio_keys] or [np.zeros(0, np.float32)])
    else:
        vec = _numbers(value, "proprio")
    if not limits.proprio_keys:
        return None  # validated, but this policy reads no proprio
    if vec.shape[0] != limits.state_dim:
        raise RequestError(
            f"proprio: {vec.shape[0]} values, this policy needs {limits.state_dim} "
            f"({', '.join(limits.proprio_keys)} concatenated)"
        )
    return vec


def _numbers(value: Any, name: str) -> np.ndarray:
    if not isinstance(value, list) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in value
    ):
        raise RequestError(f"{name}: must be a flat list of numbers, got {_short(value)}")
    if len(value) > 4096:
        raise RequestError(f"{name}: {len(value)} values, at most 4096 allowed")
    try:
        with np.errstate(over="ignore"):  # overflow to inf is reported just below
            vec = np.asarray(value, np.float64).astype(np.float32)
    except OverflowError:
        raise RequestError(f"{name}: values out of float range") from None
    if not np.isfinite(vec).all():
        raise RequestError(f"{name}: values must be finite float32 numbers")
    return vec


def check_id(value: Any) -> Any:
    if value is None or (isinstance(value, str | int) and not isinstance(value, bool)):
        if isinstance(value, str) and len(value) > 256:
            raise RequestError("id: at most 256 characters")
        return value
    raise RequestError(f"id: must be a string or an integer, got {type(value).__name__}")


def _kind(dtype: np.dtype) -> str:
    return {"f": "floats", "b": "booleans", "U": "strings", "O": "mixed values"}.get(dtype.kind, str(dtype))


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."
