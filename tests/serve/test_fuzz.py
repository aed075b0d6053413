"""Over a thousand malformed requests — random bytes, broken JSON, wrong types and shapes, corrupt
binary frames, oversized headers — each answered with an error while the server stays up and still
serves a valid request afterwards."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import string

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.serve.conftest import random_image
from vla_lab.serve.protocol import MAGIC, encode_binary_request, encode_frame

pytestmark = pytest.mark.timeout(120)

N_HTTP, N_RAW, N_WS = 700, 150, 250


def _valid_json() -> dict:
    return {"image": random_image(0, 8).tolist(), "instruction": "pick up the red block"}


def _bad_image(rng: np.random.Generator):
    kind = rng.integers(8)
    if kind == 0:  # a list of the wrong rank or channel count
        ndim = int(rng.choice([1, 2, 4]))
        return np.zeros(rng.integers(1, 4, ndim), int).tolist()
    if kind == 1:
        return np.zeros((2, 2, int(rng.choice([1, 2, 4]))), int).tolist()
    if kind == 2:  # floats, negative, too large
        return (rng.random((2, 2, 3)) * 300 - 10).tolist()
    if kind == 3:
        return "".join(rng.choice(list(string.printable), int(rng.integers(0, 40))))
    if kind == 4:
        return base64.b64encode(rng.bytes(int(rng.integers(1, 64)))).decode()
    if kind == 5:  # a PNG signature followed by garbage
        return base64.b64encode(b"\x89PNG\r\n\x1a\n" + rng.bytes(32)).decode()
    return [None, True, 3.5, {"a": 1}, [[["x", "y", "z"]]]][int(rng.integers(5))]


def _bad_json_body(rng: np.random.Generator) -> bytes:
    kind = rng.integers(6)
    if kind == 0:
        return rng.bytes(int(rng.integers(0, 300)))
    if kind == 1:  # a valid request cut short
        text = json.dumps(_valid_json())
        return text[: int(rng.integers(0, len(text) - 1))].encode()
    msg = _valid_json()
    if kind == 2:
        msg["image"] = _bad_image(rng)
    elif kind == 3:
        msg["instruction"] = [None, 7, [], {}, "", "x" * 2000][int(rng.integers(6))]
    elif kind == 4:
        msg["proprio"] = ["x", [[1.0]], [True], {"a": 1}, [float("nan")], [1e300]][int(rng.integers(6))]
    else:
        del msg[["image", "instruction"][int(rng.integers(2))]]
    return json.dumps(msg).encode()


def _bad_binary_body(rng: np.random.Generator) -> bytes:
    kind = rng.integers(6)
    h, w = (int(x) for x in rng.integers(1, 6, 2))
    if kind == 0:
        return rng.bytes(int(rng.integers(0, 64)))
    if kind == 1:  # the header length points past the end
        return MAGIC + int(rng.integers(20, 2**32)).to_bytes(4, "little") + b"{}"
    if kind == 2:  # a header that is not JSON
        junk = rng.bytes(int(rng.integers(1, 40)))
        return MAGIC + len(junk).to_bytes(4, "little") + junk
    if kind == 3:  # payload size off by a nonzero amount
        delta = int(rng.choice([-1, 1])) * int(rng.integers(1, 10))
        return encode_frame({"instruction": "a", "shape": [h, w, 3]}, b"\0" * max(0, h * w * 3 + delta))
    if kind == 4:
        shape = [[h, w], [h, w, 4], [-h, w, 3], ["a", w, 3], [h, w, 3, 1], None][int(rng.integers(6))]
        return encode_frame({"instruction": "a", "shape": shape}, b"\0" * (h * w * 3))
    return encode_frame({"instruction": [1], "shape": [h, w, 3]}, b"\0" * (h * w * 3))


def _raw_request(rng: np.random.Generator) -> bytes:
    kind = rng.integers(6)
    if kind == 0:  # random bytes as a request line
        junk = bytes(b for b in rng.bytes(int(rng.integers(8, 200))) if b not in b"\r\n ")
        return (junk or b"\x00") + b"\r\n\r\n"
    if kind == 1:  # one header line over the limit
        return (
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: "
            + b"a" * int(rng.integers(9000, 40000))
            + b"\r\n\r\n"
        )
    if kind == 2:  # too many headers
        return b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(300)) + b"\r\n"
    if kind == 3:
        return (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + rng.bytes(4).hex().encode()
            + b"z\r\n\r\n"
        )
    if kind == 4:
        return b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n"
    return b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n"


def _read_status(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    assert data.startswith(b"HTTP/1."), data[:100]
    return int(data.split(b" ", 2)[1]), data


def test_a_thousand_malformed_requests_each_get_an_error_and_the_server_survives(server):
    rng = np.random.default_rng(1234)
    port = server.server.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    statuses: list[int] = []
    for i in range(N_HTTP):
        binary = i % 3 == 0
        body = _bad_binary_body(rng) if binary else _bad_json_body(rng)
        ctype = "application/octet-stream" if binary else "application/json"
        conn.request("POST", "/predict", body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        reply = json.loads(resp.read())
        assert 400 <= resp.status < 500 and reply["status"] == resp.status and reply["error"], (
            body[:120],
            reply,
        )
        statuses.append(resp.status)
        if resp.will_close:
            conn.close()
    conn.close()

    for _ in range(N_RAW):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(_raw_request(rng))
            status, _ = _read_status(sock)
            assert 400 <= status < 500
            statuses.append(status)

    with connect(server.ws_url, open_timeout=10, compression=None, max_size=None) as ws:
        for i in range(N_WS):
            ws.send(_bad_binary_body(rng) if i % 2 else _bad_json_body(rng).decode(errors="replace"))
            reply = json.loads(ws.recv(timeout=10))
            assert 400 <= reply["status"] < 500 and reply["error"]
            statuses.append(reply["status"])
        ws.send(encode_binary_request(random_image(5), "pick up the red block"))
        assert ws.recv(timeout=10)[:4] == MAGIC

    assert len(statuses) >= 1000
    # alive and correct afterwards
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        "POST", "/predict", body=json.dumps(_valid_json()), headers={"Content-Type": "application/json"}
    )
    resp = conn.getresponse()
    assert resp.status == 200 and len(json.loads(resp.read())["actions"]) == 4
    conn.close()
    errors = sum(v for k, v in server.stats()["requests"].items() if k.startswith("error_4"))
    assert errors >= N_HTTP + N_WS


def test_an_oversized_websocket_message_closes_only_that_connection(server):
    with connect(server.ws_url, open_timeout=10, compression=None, max_size=None) as ws:
        ws.send(b"\0" * 1_000_001)
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=10)
        assert e.value.rcvd is not None and e.value.rcvd.code == 1009  # message too big
    with connect(server.ws_url, open_timeout=10, compression=None) as ws:
        ws.send(encode_binary_request(random_image(5), "pick up the red block"))
        assert ws.recv(timeout=10)[:4] == MAGIC
