"""`vla-serve` against hostile or unlucky clients on loopback: half-sent headers, foreign Host and
Origin headers (DNS rebinding), absurd numbers, clients that vanish mid-body."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import struct
import time

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.serve.conftest import serve_config

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def strict_server(engine):
    from vla_lab.serve.server import BackgroundServer

    cfg = serve_config(max_body_bytes=1_000_000, header_timeout_s=1.0, allowed_hosts=["policy.lab"])
    with BackgroundServer(cfg, engine) as srv:
        yield srv


def _get(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = json.loads(resp.read() or b"{}")
    conn.close()
    return resp.status, body


def test_half_sent_headers_are_dropped_after_the_header_timeout(strict_server):
    with socket.create_connection(("127.0.0.1", strict_server.server.port), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
        started = time.monotonic()
        assert sock.recv(1024) == b""  # the server closed the connection
        waited = time.monotonic() - started
    assert waited < 8.0, f"connection held {waited:.1f} s with a 1 s header timeout"
    status, body = _get(strict_server.server.port, "/health", {})
    assert status == 200 and body["status"] == "ok"  # and it still serves


@pytest.mark.parametrize(
    "headers, status, message",
    [
        ({"Host": "evil.example:8000"}, 403, "Host: 'evil.example:8000' is not served"),
        ({"Host": "127.0.0.1", "Origin": "http://evil.example"}, 403, "Origin: 'http://evil.example'"),
        ({"Host": "[::1"}, 403, "is not served"),
        ({"Host": "localhost:1234"}, 200, None),
        ({"Host": "policy.lab", "Origin": "http://policy.lab:9000"}, 200, None),
        ({"Host": "127.0.0.1:5", "Origin": "null"}, 200, None),
    ],
)
def test_requests_must_name_this_server(strict_server, headers, status, message):
    got, body = _get(strict_server.server.port, "/health", headers)
    assert got == status, body
    if message:
        assert message in body["error"]


def test_websocket_handshake_from_a_foreign_origin_is_refused(strict_server):
    with pytest.raises(InvalidStatus) as err:
        connect(strict_server.ws_url, open_timeout=10, origin="http://evil.example")
    assert err.value.response.status_code == 403
    with connect(strict_server.ws_url, open_timeout=10, origin="http://localhost:3000") as ws:
        ws.send(json.dumps({"image": "x", "instruction": "hi"}))
        assert json.loads(ws.recv(timeout=10))["status"] == 400  # served, and the bad image named


def test_health_names_the_checkpoint_without_its_absolute_path(strict_server, checkpoint):
    _, body = _get(strict_server.server.port, "/health", {})
    assert body["checkpoint"] == f"{checkpoint.parent.name}/{checkpoint.name}"
    assert str(checkpoint.parent) not in json.dumps(body)


@pytest.mark.parametrize(
    "body, message",
    [
        (
            b'{"image": [[[1, 2, 3]]], "instruction": "hi", "id": ' + b"9" * 5000 + b"}",
            "integer of 5000 digits",
        ),
        (b'{"image": "x", "instruction": "hi", "proprio": [' + b"1" * 100 + b"]}", "integer of 100 digits"),
        (b'{"image": "x", "instruction": "hi", "id": NaN}', "NaN is not a finite number"),
    ],
)
def test_absurd_numbers_get_a_clear_400(strict_server, body, message):
    conn = http.client.HTTPConnection("127.0.0.1", strict_server.server.port, timeout=10)
    conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    reply = json.loads(resp.read())
    assert resp.status == 400 and message in reply["error"], reply


def test_binary_header_with_a_huge_integer_is_a_clear_400(strict_server):
    header = b'{"shape": [8, 8, 3], "instruction": "hi", "id": ' + b"7" * 4400 + b"}"
    frame = b"VLA1" + struct.pack("<I", len(header)) + header + bytes(8 * 8 * 3)
    conn = http.client.HTTPConnection("127.0.0.1", strict_server.server.port, timeout=10)
    conn.request("POST", "/predict", body=frame, headers={"Content-Type": "application/octet-stream"})
    resp = conn.getresponse()
    reply = json.loads(resp.read())
    assert resp.status == 400 and "header: number: an integer of 4400 digits" in reply["error"], reply


def test_a_client_reset_mid_body_is_not_logged_as_an_error(strict_server, caplog):
    port = strict_server.server.port
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n" + b"{" * 1000
            )
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # RST with the body unfinished
        time.sleep(1.0)
        status, _ = _get(port, "/health", {})
    assert status == 200
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not noisy, [f"{r.name}: {r.getMessage()}" for r in noisy]
