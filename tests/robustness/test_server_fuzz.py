"""`vla-serve` under seeded random and mutated input on loopback: JSON and binary bodies, HTTP framing
(content lengths, chunking, encodings, oversized bodies), headers, request lines, WebSocket messages,
handshakes and raw frames, and clients that vanish mid-request.

Each probe is classified: a clear error (4xx whose message names the problem, a close code that
says why, or a vanished client dropped quietly), accepted (a valid request answered correctly),
a crash (5xx, a WARNING/ERROR or traceback in the server's log, the server no longer answering
/health), a hang (nothing within HANG_S), or a wrong answer (a valid request refused, an invalid one
accepted, an error that does not name the problem). The server has 1 s header and body time-outs,
so probes that stall are answered within the bound.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.robustness.conftest import MAX_BODY
from tests.robustness.fuzz import SIZES, FuzzRun, seed
from tests.serve.conftest import CHUNK, INSTRUCTIONS, random_image
from vla_lab.serve.protocol import MAGIC, decode_binary_reply, encode_binary_request, encode_frame

PROBES = {"short": 200, "long": 6000}
HANG_S = 5.0  # the server's own time-outs are 1 s
#: close codes that tell the client what it did wrong (RFC 6455 7.4.1)
CLEAN_CLOSE = {1002: "protocol error", 1003: "unsupported data", 1007: "invalid data", 1009: "too big"}


# ------------------------------------------------------------------------------------------- probes
@dataclass
class Probe:
    what: str
    channel: str  # http (raw bytes on a fresh connection) | ws (a message) | wsraw (raw bytes, WS port)
    data: bytes | str
    #: read: wait for the answer; shut: half-close, then read; reset: leave with a RST, read nothing;
    #: stall: send, read; the server is expected to give up on us (close, or 408)
    finish: str = "read"
    expect: str = "error"  # error | ok | any
    #: an error message must contain one of these (empty: any non-empty message)
    names: tuple[str, ...] = ()
    #: wsraw: frames sent once the handshake is answered (as a client would: the websockets
    #: library drops a connection whose first segment holds a bad frame behind the handshake)
    frames: bytes = b""


WEIRD = [None, True, 0, -1, 2**63, 0.5, "", " ", "x" * 1200, "\ud800", [], [[1]], {}, {"a": [1]}]


def _png(rng, mode: str = "RGB", size: tuple[int, int] | None = None) -> str:
    w, h = size or (int(rng.integers(1, 24)), int(rng.integers(1, 24)))
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG" if mode != "CMYK" else "JPEG")
    return base64.b64encode(buf.getvalue()).decode()


def _valid_json(rng) -> dict:
    image = (
        random_image(int(rng.integers(1 << 30)), int(rng.integers(4, 16))).tolist()
        if rng.random() < 0.5
        else _png(rng)
    )
    msg = {"image": image, "instruction": INSTRUCTIONS[int(rng.integers(len(INSTRUCTIONS)))]}
    if rng.random() < 0.3:
        msg["id"] = int(rng.integers(1 << 40)) if rng.random() < 0.5 else "req-7"
    if rng.random() < 0.3:
        msg["proprio"] = rng.uniform(-1, 1, 8).tolist()  # validated, unused by this policy
    return msg


def _instruction_ok(v) -> bool:
    """A non-empty string of at most 1000 characters that UTF-8 can encode (JSON's \\ud800 escapes
    give lone surrogates, which it cannot)."""
    if not (isinstance(v, str) and v.strip() and len(v) <= 1000):
        return False
    try:
        return bool(v.encode())
    except UnicodeEncodeError:
        return False


def _id_ok(v) -> bool:
    return v is None or (isinstance(v, str) and len(v) <= 256) or (type(v) is int and len(str(v)) <= 64)


def _numbers_ok(v) -> bool:
    return isinstance(v, list) and all(type(x) in (int, float) and abs(x) < 1e38 for x in v)


def _proprio_ok(v) -> bool:
    """This policy reads no proprio, but what is sent is still validated."""
    return v is None or _numbers_ok(v) or (isinstance(v, dict) and all(map(_numbers_ok, v.values())))


def _field(rng) -> tuple[dict, str, str, tuple[str, ...]]:
    """A valid request with one field set to a weird value; (msg, what, expect, names)."""
    msg, name = _valid_json(rng), ["image", "instruction", "proprio", "id"][int(rng.integers(4))]
    value = WEIRD[int(rng.integers(len(WEIRD)))]
    msg[name] = value
    if name == "instruction":
        expect = "ok" if _instruction_ok(value) else "error"
    elif name == "id":
        expect = "ok" if _id_ok(value) else "error"
    elif name == "proprio":
        expect = "ok" if _proprio_ok(value) else "error"
    else:
        expect = "error"
    return msg, f"{name}={value!r:.30}", expect, (name,)


def _bad_image(rng) -> tuple[object, str]:
    kind = int(rng.integers(9))
    if kind == 0:
        return np.zeros(rng.integers(1, 4, int(rng.choice([1, 2, 4]))), int).tolist(), "image rank"
    if kind == 1:
        return (rng.random((2, 2, 3)) * 300 - 10).tolist(), "float pixels"
    if kind == 2:
        return [[[0, 0, 0]], [[0, 0]]], "ragged image"
    if kind == 3:
        return [[[256, 0, -1]]], "pixel out of range"
    if kind == 4:
        return base64.b64encode(rng.bytes(int(rng.integers(1, 64)))).decode(), "random base64"
    if kind == 5:
        return _png(rng)[: int(rng.integers(8, 60))], "truncated base64 PNG"
    if kind == 6:
        return _png(rng, str(rng.choice(["L", "P", "LA", "I;16", "1"]))), "PNG not RGB"
    if kind == 7:
        return _png(rng, size=(int(rng.integers(1025, 3000)), 1)), "PNG wider than max_image_side"
    return "data:image/png;base64,@@@", "data URL with bad base64"


def _json_probe(rng) -> tuple[bytes, str, str, tuple[str, ...]]:
    """A JSON body: (bytes, what, expect, names)."""
    kind = int(rng.integers(14))
    msg = _valid_json(rng)
    if kind <= 1:
        return json.dumps(msg).encode(), "valid JSON", "ok", ()
    if kind <= 4:
        m, what, expect, names = _field(rng)
        return json.dumps(m).encode(), what, expect, names
    if kind == 5:
        msg["image"], what = _bad_image(rng)
        return json.dumps(msg).encode(), what, "error", ("image",)
    if kind == 6:  # a literal the JSON standard does not have, or one absurdly long
        token = str(rng.choice(["NaN", "Infinity", "-Infinity", "1" * int(rng.integers(65, 6000))]))
        raw = json.dumps({**msg, "id": 0}).replace('"id": 0', f'"id": {token}')
        return raw.encode(), f"id literal {token[:12]}", "error", ("number",)
    if kind == 7:
        raw = json.dumps(msg).encode()
        return raw[: int(rng.integers(0, len(raw)))], "truncated JSON", "error", ("body",)
    if kind == 8:
        return rng.bytes(int(rng.integers(0, 400))), "random bytes", "error", ("body",)
    if kind == 9:
        raw = bytearray(json.dumps(msg).encode())
        raw[int(rng.integers(len(raw)))] = int(rng.choice([0x80, 0xC3, 0xFF]))
        return bytes(raw), "invalid UTF-8", "error", ("body",)
    if kind == 10:
        depth = int(rng.integers(1000, 100_000))
        return b"[" * depth + b"]" * depth, f"nesting {depth}", "error", ("body",)
    if kind == 11:
        top = [[], "s", 1, None, [msg]][int(rng.integers(5))]
        return json.dumps(top).encode(), f"top level {type(top).__name__}", "error", ("body",)
    if kind == 12:
        msg["images"] = {"agentview": msg["image"]}
        if rng.random() < 0.5:
            del msg["image"]
            msg["images"] = {"wrist": msg["images"]["agentview"]}
            return json.dumps(msg).encode(), "images without the camera", "error", ("images",)
        return json.dumps(msg).encode(), "image and images", "error", ("image",)
    msg[str(rng.choice(["extra", "cameras", "__proto__"]))] = 1
    return json.dumps(msg).encode(), "unknown field", "ok", ()


def _binary_probe(rng) -> tuple[bytes, str, str, tuple[str, ...]]:
    """A binary frame: (bytes, what, expect, names)."""
    image = random_image(int(rng.integers(1 << 30)), int(rng.integers(4, 16)))
    frame = encode_binary_request(image, "pick up the red block")
    h, w = image.shape[:2]
    kind = int(rng.integers(11))
    if kind <= 1:
        return frame, "valid binary", "ok", ()
    if kind == 2:
        return rng.bytes(4) + frame[4:], "bad magic", "error", ("request",)
    if kind == 3:
        n = int(rng.choice([70_000, 2**32 - 1, len(frame)]))
        return MAGIC + struct.pack("<I", n) + frame[8:], f"header length {n}", "error", ("header",)
    if kind == 4:
        junk = rng.bytes(int(rng.integers(1, 40)))
        return MAGIC + struct.pack("<I", len(junk)) + junk, "header not JSON", "error", ("header",)
    if kind == 5:
        shape = [[h, w], [h, w, 4], [-h, w, 3], ["a", w, 3], [h, w, 3, 1], None, [5000, 1, 3], [True, w, 3]]
        bad = shape[int(rng.integers(len(shape)))]
        frame = encode_frame({"instruction": "a", "shape": bad}, image.tobytes())
        return frame, f"shape {bad}", "error", ("header.shape",)
    if kind == 6:
        cams = [["wrist"], ["agentview", "agentview"], "agentview", [1]][int(rng.integers(4))]
        frame = encode_frame({"instruction": "a", "shape": [h, w, 3], "cameras": cams}, image.tobytes())
        return frame, f"cameras {cams}", "error", ("header.cameras",)
    if kind == 7:
        cut = int(rng.integers(1, h * w * 3))
        frame = encode_frame({"instruction": "a", "shape": [h, w, 3]}, image.tobytes()[:-cut])
        return frame, f"payload {cut} bytes short", "error", ("payload",)
    if kind == 8:
        value = WEIRD[int(rng.integers(len(WEIRD)))]
        frame = encode_frame({"instruction": value, "shape": [h, w, 3]}, image.tobytes())
        return (
            frame,
            f"instruction {value!r:.20}",
            "ok" if _instruction_ok(value) else "error",
            ("instruction",),
        )
    if kind == 9:
        data = bytearray(frame)
        for pos in rng.integers(0, len(data), int(rng.integers(1, 6))):
            data[pos] ^= 1 << int(rng.integers(8))
        return bytes(data), "bit flips", "any", ()
    cut = int(rng.integers(0, len(frame)))
    return frame[:cut], f"truncated to {cut} bytes", "error", ("request", "header", "payload")


# --------------------------------------------------------------------------------- HTTP probes
def _request(
    body: bytes, *, ctype="application/json", length: int | None = None, headers="", line=None
) -> bytes:
    line = line or b"POST /predict HTTP/1.1"
    cl = b"" if length == -1 else b"Content-Length: %d\r\n" % (len(body) if length is None else length)
    head = b"%s\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n%s%s\r\n" % (
        line,
        ctype.encode(),
        cl,
        headers.encode("latin-1") if isinstance(headers, str) else headers,
    )
    return head + body


def _http_framing(rng) -> Probe:
    body = json.dumps(_valid_json(rng)).encode()
    kind = int(rng.integers(12))
    if kind == 0:
        short = int(rng.integers(1, len(body)))
        # the rest of the body reads as the next request; aiohttp may answer that one's error first
        req = _request(body, length=short)
        return Probe("Content-Length too small", "http", req, names=("body", "Invalid method"))
    if kind == 1:
        extra = int(rng.integers(1, 1000))
        req = _request(body, length=len(body) + extra)
        return Probe("Content-Length too large, client half-closes", "http", req, "shut", "any")
    if kind == 2 and rng.random() < 0.2:  # costs the 1 s body time-out
        req = _request(body, length=len(body) + 10)
        return Probe("Content-Length too large, client waits", "http", req, "stall", names=("body",))
    if kind == 3:
        value = str(rng.choice(["abc", "-5", "1e3", "0x10", "99999999999999999999999", "5, 6"]))
        req = _request(body, length=-1, headers=f"Content-Length: {value}\r\n")
        return Probe(f"Content-Length: {value}", "http", req, "any")
    if kind == 4:
        req = _request(body, headers="Transfer-Encoding: chunked\r\n")
        return Probe("Content-Length and chunked", "http", req)
    if kind == 5:
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        req = _request(chunked, length=-1, headers="Transfer-Encoding: chunked\r\n")
        return Probe("chunked body", "http", req, expect="ok")
    if kind == 6:
        junk = bytes(rng.choice(list(b"zq!\x00G"), 4))
        req = _request(junk + b"\r\nabc\r\n", length=-1, headers="Transfer-Encoding: chunked\r\n")
        return Probe("bad chunk size", "http", req)
    if kind == 7:
        enc = str(rng.choice(["gzip", "deflate", "br", "x-unknown"]))
        return Probe(
            f"Content-Encoding: {enc}",
            "http",
            _request(body, headers=f"Content-Encoding: {enc}\r\n"),
            names=("Content-Encoding",),
        )
    if kind == 8:
        big = MAX_BODY + int(rng.integers(1, 100_000))
        return Probe("body over max_body_bytes", "http", _request(b"{" * big), names=("body",))
    if kind == 9:
        big = MAX_BODY + int(rng.integers(1, 50_000))
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (big, b"[" * big)
        req = _request(chunked, length=-1, headers="Transfer-Encoding: chunked\r\n")
        return Probe("chunked body over max_body_bytes", "http", req, names=("body",))
    if kind == 10:
        ctype = str(rng.choice(["text/plain", "application/octet-stream", "", "multipart/form-data"]))
        # no (or an empty) Content-Type means octet-stream (RFC 9110 8.3): read as a binary frame
        binary = ctype in ("application/octet-stream", "")
        req = _request(body, ctype=ctype)
        return Probe(f"Content-Type: {ctype!r}", "http", req, expect="error" if binary else "ok")
    return Probe("valid JSON over HTTP", "http", _request(body), expect="ok")


def _http_headers(rng) -> Probe:
    body = json.dumps(_valid_json(rng)).encode()
    kind = int(rng.integers(8))
    if kind == 0:
        host = str(rng.choice(["evil.example", "127.0.0.1.evil.example:80", "[::1", "a b", "\u00e9.example"]))
        req = _request(body).replace(b"Host: 127.0.0.1", f"Host: {host}".encode())
        return Probe(f"Host: {host}", "http", req, names=("Host",))
    if kind == 1:
        return Probe("no Host", "http", _request(body).replace(b"Host: 127.0.0.1\r\n", b""), names=("Host",))
    if kind == 2:
        origin = str(rng.choice(["http://evil.example", "file://", "http://[::1", "x"]))
        req = _request(body, headers=f"Origin: {origin}\r\n")
        return Probe(f"Origin: {origin}", "http", req, names=("Origin",))
    if kind == 3:
        n = int(rng.integers(8200, 40_000))
        return Probe("header line over 8 KiB", "http", _request(body, headers="X-Big: " + "a" * n + "\r\n"))
    if kind == 4:
        many = "".join(f"X-{i}: {i}\r\n" for i in range(int(rng.integers(200, 400))))
        return Probe("hundreds of headers", "http", _request(body, headers=many), "any")
    if kind == 5:
        raw = bytes(rng.choice([0, 1, 0x7F, 0x80, 0xFF, ord(":"), ord(" ")], 6)).decode("latin-1")
        return Probe("header name of control bytes", "http", _request(body, headers=f"X{raw}Y: 1\r\n"), "any")
    if kind == 6:
        return Probe("header without a colon", "http", _request(body, headers="NoColonHere\r\n"))
    auth = str(rng.choice(["Bearer", "Bearer " + "x" * 5000, "Basic Zm9vOmJhcg==", "\x00"]))
    return Probe(
        "Authorization (no token configured)",
        "http",
        _request(body, headers=f"Authorization: {auth}\r\n"),
        expect="any",
    )


def _http_request_line(rng) -> Probe:
    kind = int(rng.integers(7))
    if kind == 0:
        line = b"GET /health HTTP/1.1"
        return Probe("GET /health", "http", _request(b"", length=-1, line=line), expect="ok")
    if kind == 1:
        method = str(rng.choice(["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]))
        return Probe(
            f"{method} /predict", "http", _request(b"{}", line=f"{method} /predict HTTP/1.1".encode())
        )
    if kind == 2:
        path = str(
            rng.choice(["/", "/predict/", "/%00", "/../../etc/passwd", "/" + "a" * 3000, "/stats?x=%ZZ"])
        )
        expect = "ok" if path.startswith("/stats") else "error"
        line = f"{'GET' if expect == 'ok' else 'POST'} {path} HTTP/1.1".encode()
        return Probe(f"path {path[:20]}", "http", _request(b"{}", line=line), expect=expect)
    if kind == 3:
        version = str(rng.choice(["HTTP/9.9", "HTTP/1", "HTTX/1.1", "", "HTTP/1.1 extra"]))
        return Probe(
            f"version {version!r}",
            "http",
            _request(b"{}", line=f"POST /predict {version}".encode()),
            expect="any",
        )
    if kind == 4:
        junk = bytes(b for b in rng.bytes(int(rng.integers(8, 200))) if b not in b"\r\n") or b"\x00"
        return Probe("random request line", "http", junk + b"\r\n\r\n", expect="any")
    if kind == 5:
        return Probe("random bytes", "http", rng.bytes(int(rng.integers(1, 3000))), "shut", "any")
    body = json.dumps(_valid_json(rng)).encode()
    return Probe("HTTP/1.0 request", "http", _request(body, line=b"POST /predict HTTP/1.0"), expect="ok")


def _disconnect(rng) -> Probe:
    req = _request(json.dumps(_valid_json(rng)).encode())
    kind = int(rng.integers(4))
    if kind == 0:
        cut = int(rng.integers(1, req.index(b"\r\n\r\n")))
        return Probe("reset mid-headers", "http", req[:cut], "reset", "any")
    if kind == 1:
        cut = int(rng.integers(req.index(b"\r\n\r\n") + 4, len(req)))
        return Probe("reset mid-body", "http", req[:cut], "reset", "any")
    if kind == 2:
        return Probe("reset before reading the reply", "http", req, "reset", "any")
    if rng.random() < 0.3:  # costs the 1 s header time-out
        return Probe("headers never finished", "http", req[: req.index(b"\r\n")], "stall", "any")
    frame = _frame(0x1, b"x" * 100)[:30]
    return Probe("reset mid-WebSocket frame", "wsraw", _handshake(), "reset", "any", frames=frame)


# ---------------------------------------------------------------------------- WebSocket probes
def _handshake(extra: str = "", drop: str = "", path: str = "/", version: str = "13") -> bytes:
    key = base64.b64encode(b"0123456789abcdef").decode()
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        f"Sec-WebSocket-Version: {version}",
    ]
    lines = [x for x in lines if not (drop and x.startswith(drop))]
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def _frame(opcode: int, payload: bytes, *, fin=True, mask=True, rsv=0, length: int | None = None) -> bytes:
    """A client frame (RFC 6455 5.2), with every field settable to something wrong."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = b"\x01\x02\x03\x04"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _ws_raw(rng) -> Probe:
    kind = int(rng.integers(14))
    if kind == 0:
        drop = str(rng.choice(["Sec-WebSocket-Key", "Sec-WebSocket-Version", "Upgrade", "Connection"]))
        return Probe(f"handshake without {drop}", "wsraw", _handshake(drop=drop))
    if kind == 1:
        version = str(rng.choice(["8", "", "13, 8", "99999999999999999999"]))
        return Probe(f"handshake version {version!r}", "wsraw", _handshake(version=version))
    if kind == 2:
        return Probe(
            "handshake from a foreign Origin",
            "wsraw",
            _handshake("Origin: http://evil.example\r\n"),
            names=("Origin",),
        )
    if kind == 3:
        return Probe(
            "GET /health on the WebSocket port",
            "wsraw",
            _handshake(drop="Upgrade", path="/health").replace(b"Connection: Upgrade", b"Connection: close"),
            expect="ok",
        )
    if kind == 4:
        return Probe("POST handshake", "wsraw", _handshake().replace(b"GET", b"POST", 1))
    frames = {
        5: ("unmasked frame", _frame(0x1, b"{}", mask=False)),
        6: ("reserved bits", _frame(0x1, b"{}", rsv=int(rng.integers(1, 8)))),
        7: ("unknown opcode", _frame(int(rng.choice([3, 4, 5, 6, 7, 0xB, 0xC, 0xF])), b"x")),
        8: ("text frame of invalid UTF-8", _frame(0x1, b"\xff\xfe" + rng.bytes(8))),
        9: ("continuation without a start", _frame(0x0, b"x")),
        10: ("control frame over 125 bytes", _frame(0x9, b"p" * 200)),
        11: ("fragmented ping", _frame(0x9, b"p", fin=False)),
        12: ("close with code 999", _frame(0x8, struct.pack(">H", 999))),
        13: ("frame length 2**62", _frame(0x2, b"", length=1 << 62)),
    }
    what, frame = frames[kind]
    return Probe(what, "wsraw", _handshake(), frames=frame)


def _ws_message(rng) -> Probe:
    if rng.random() < 0.03:
        big = MAX_BODY + int(rng.integers(1, 50_000))
        return Probe("message over max_body_bytes", "ws", b"\0" * big)
    if rng.random() < 0.5:
        data, what, expect, names = _json_probe(rng)
        try:
            return Probe(f"WS text: {what}", "ws", data.decode(), expect=expect, names=names)
        except UnicodeDecodeError:  # a text frame carries Unicode: what is sent is the replaced text
            # U+FFFD may land where any text is valid (the instruction): either answer is right
            text = data.decode(errors="replace")
            return Probe(f"WS text: {what} (bytes replaced)", "ws", text, expect="any")
    data, what, expect, names = _binary_probe(rng)
    return Probe(f"WS binary: {what}", "ws", data, expect=expect, names=names)


def _http_body(rng) -> Probe:
    if rng.random() < 0.5:
        data, what, expect, names = _json_probe(rng)
        return Probe(f"HTTP JSON: {what}", "http", _request(data), expect=expect, names=names)
    data, what, expect, names = _binary_probe(rng)
    req = _request(data, ctype="application/octet-stream")
    return Probe(f"HTTP binary: {what}", "http", req, expect=expect, names=names)


GENERATORS: list[tuple[Callable, int]] = [
    (_http_body, 8),
    (_ws_message, 6),
    (_http_framing, 3),
    (_http_headers, 2),
    (_http_request_line, 2),
    (_ws_raw, 2),
    (_disconnect, 1),
]
_WEIGHTS = np.array([w for _, w in GENERATORS], float) / sum(w for _, w in GENERATORS)


def random_probe(rng: np.random.Generator) -> Probe:
    return GENERATORS[int(rng.choice(len(GENERATORS), p=_WEIGHTS))][0](rng)


# -------------------------------------------------------------------------------------- exchange
@dataclass
class Answer:
    status: int | None = None  # HTTP status (of the WebSocket handshake too)
    body: bytes = b""
    reply: bytes | str | None = None  # a WebSocket message from the server
    close_code: int | None = None  # the server's WebSocket close code
    ended: str = ""  # eof (closed without an answer) | timeout | gone (we left first)


def _rst_close(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _read_head(f) -> tuple[int, dict[str, str]]:
    status = int(f.readline().split(b" ", 2)[1])
    headers = {}
    while (line := f.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def _read_ws_close(f) -> Answer:
    """Reads server frames until a close frame (its code) or a pong."""
    while True:
        b0, b1 = f.read(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", f.read(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", f.read(8))
        payload = f.read(n)
        if b0 & 0x0F == 0x8:
            return Answer(101, close_code=struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005)
        if b0 & 0x0F == 0xA:
            return Answer(101, reply=b"pong")


def exchange_raw(port: int, probe: Probe) -> Answer:
    """Raw bytes on a fresh connection to ``port`` (HTTP, or the WebSocket port)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_S)
    try:
        # the server may answer (413) and close before taking it all: then read that answer
        with contextlib.suppress(OSError):
            sock.sendall(probe.data)
        if probe.finish == "reset" and not probe.frames:
            return Answer(ended="gone")
        if probe.finish == "shut":
            sock.shutdown(socket.SHUT_WR)
        f = sock.makefile("rb")
        status, headers = _read_head(f)
        if status != 101:
            return Answer(status, f.read(int(headers.get("content-length", 0))))
        sock.sendall(probe.frames)
        return Answer(ended="gone") if probe.finish == "reset" else _read_ws_close(f)
    except TimeoutError:
        return Answer(ended="timeout")
    except (OSError, ValueError, IndexError):  # EOF or reset before a whole answer
        return Answer(ended="eof")
    finally:
        _rst_close(sock)


class WsClient:
    """One WebSocket connection for message probes, reopened after the server closes it."""

    def __init__(self, url: str):
        self.url, self.conn = url, None

    def exchange(self, data: bytes | str) -> Answer:
        if self.conn is None:
            self.conn = connect(self.url, open_timeout=HANG_S, compression=None, max_size=None)
        try:
            self.conn.send(data)
            return Answer(reply=self.conn.recv(timeout=HANG_S))
        except TimeoutError:
            self.close()  # a late answer would be taken for the next probe's
            return Answer(ended="timeout")
        except ConnectionClosed as e:
            self.close()
            return Answer(close_code=e.rcvd.code) if e.rcvd else Answer(ended="eof")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# ------------------------------------------------------------------------------------ classify
def _message(ans: Answer) -> tuple[int | None, str]:
    """(status, error message) of an error answer, whichever channel it came on."""
    if ans.reply is not None:
        try:
            body = json.loads(ans.reply) if isinstance(ans.reply, str) else None
        except ValueError:
            return None, ""
        if isinstance(body, dict) and "error" in body:
            return body.get("status"), str(body["error"])
        return None, ""
    text = ans.body.decode("utf-8", "replace")
    try:
        return ans.status, str(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        return ans.status, text  # aiohttp's and websockets' own refusals are plain text


def _bad_success(ans: Answer) -> str | None:
    """Why a successful answer is malformed, or None."""
    data = ans.reply if ans.reply is not None else ans.body
    if data == b"pong":
        return None
    if isinstance(data, bytes) and data[:4] == MAGIC:
        actions, _ = decode_binary_reply(data)
    else:
        body = json.loads(data)
        if body.get("status") == "ok" or "requests" in body:  # /health, /stats
            return None
        actions = np.asarray(body["actions"], np.float32)
    ok = actions.shape == (CHUNK, 7) and np.isfinite(actions).all()
    return None if ok else f"actions {actions.shape}"


def classify(probe: Probe, ans: Answer) -> tuple[str, str]:
    if ans.ended == "timeout":
        return "hang", f"nothing within {HANG_S} s"
    if ans.ended == "gone":
        return "clear_error", "the client left; the server dropped the connection"
    if ans.ended == "eof":
        quiet = probe.finish in ("shut", "stall") or probe.expect == "any"
        return ("clear_error", "closed the connection") if quiet else ("wrong_answer", "closed, no answer")
    if ans.close_code is not None:
        if ans.close_code == 1011:
            return "crash", "close code 1011 (internal error)"
        reason = CLEAN_CLOSE.get(ans.close_code)
        if reason and probe.expect != "ok":
            return "clear_error", f"close code {ans.close_code} ({reason})"
        return "wrong_answer", f"close code {ans.close_code}"
    status, message = _message(ans)
    if status is not None and status >= 500:
        return "crash", f"{status}: {message}"
    if status is not None and status >= 400:
        if probe.expect == "ok":
            return "wrong_answer", f"valid request refused: {status} {message}"
        if not message.strip() or (probe.names and not any(n in message for n in probe.names)):
            return "wrong_answer", f"{status} {message!r} does not name {probe.names}"
        return "clear_error", f"{status} {message}"
    if probe.expect == "error":
        return "wrong_answer", f"invalid request answered ({ans.status})"
    bad = _bad_success(ans)
    return ("crash", bad) if bad else ("accepted", "")


# ----------------------------------------------------------------------------------------- run
def _health(port: int) -> str | None:
    """Why the server does not answer /health correctly, or None."""
    ans = exchange_raw(port, Probe("health", "http", b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
    if ans.status != 200:
        return f"/health answered {ans.status or ans.ended}"
    body = json.loads(ans.body)
    return None if body["status"] == "ok" and body["chunk_size"] == CHUNK else f"/health said {body}"


def _logged(records: list[logging.LogRecord]) -> str | None:
    """A server-side failure among ``records``: a warning, an error or any traceback."""
    bad = [r for r in records if r.levelno >= logging.WARNING or r.exc_info]
    return f"logged {bad[0].name}: {bad[0].getMessage()[:200]}" if bad else None


@pytest.mark.timeout(600)
@pytest.mark.parametrize("size", SIZES)
def test_mutated_requests_get_clear_errors_and_the_server_survives(fuzz_server, caplog, size):
    # what vla-serve logs: INFO and up, websockets from WARNING
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.WARNING, logger="websockets")
    rng = np.random.default_rng(seed(20260303))
    run = FuzzRun("server", size, seed(20260303))
    port, ws_port = fuzz_server.server.port, fuzz_server.server.ws_port
    client = WsClient(fuzz_server.ws_url)
    try:
        for _ in range(PROBES[size]):
            probe = random_probe(rng)
            before = len(caplog.records)
            if probe.channel == "ws":
                ans = client.exchange(probe.data)
            else:
                ans = exchange_raw(ws_port if probe.channel == "wsraw" else port, probe)
            outcome, detail = classify(probe, ans)
            dead = _health(port)
            failure = dead or _logged(caplog.records[before:])
            run.add("crash" if failure else outcome, probe.what, failure or detail)
            if dead:
                break
    finally:
        client.close()
    assert _health(port) is None  # and it still serves a valid request afterwards
    assert classify(Probe("valid", "ws", "", expect="ok"), _valid_ws(fuzz_server.ws_url, rng)) == (
        "accepted",
        "",
    )
    run.finish(min_tried=PROBES[size])


def _valid_ws(url: str, rng) -> Answer:
    with connect(url, open_timeout=HANG_S, compression=None) as ws:
        ws.send(json.dumps(_valid_json(rng)))
        return Answer(reply=ws.recv(timeout=HANG_S))
