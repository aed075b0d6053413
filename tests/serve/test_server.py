"""The real server on loopback: health, JSON / binary / WebSocket predictions equal to what the
evaluation actor computes, authentication, batching of concurrent requests and input validation."""

from __future__ import annotations

import base64
import http.client
import io
import json
import threading
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from tests.serve.conftest import CHUNK, IMAGE_SIZE, INSTRUCTIONS, random_image, reference_chunk, serve_config
from vla_lab.serve.client import PolicyClient, ServeError
from vla_lab.serve.protocol import MAGIC, encode_binary_request, encode_frame
from vla_lab.serve.server import BackgroundServer

pytestmark = pytest.mark.timeout(60)


def request(url: str, method: str, path: str, body=b"", ctype="application/json", headers=None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": ctype, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def error_of(url: str, body, ctype="application/json", headers=None) -> tuple[int, str]:
    status, content_type, data = request(url, "POST", "/predict", body, ctype, headers)
    assert content_type.startswith("application/json"), data[:200]
    msg = json.loads(data)
    assert msg["status"] == status
    return status, msg["error"]


def png_b64(image: np.ndarray, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def test_health_describes_the_checkpoint(server, checkpoint):
    info = PolicyClient(server.url).health()
    assert info["status"] == "ok" and info["model_family"] == "openvla"
    assert (info["action_dim"], info["chunk_size"], info["image_size"]) == (7, CHUNK, IMAGE_SIZE)
    assert info["cameras"] == ["agentview"] and info["unnorm_key"] == "sim_demo"
    assert info["checkpoint"] == f"{checkpoint.parent.name}/{checkpoint.name}"  # no absolute path
    assert info["ws_port"] == server.server.ws_port
    # the WebSocket port answers a plain GET /health too
    assert PolicyClient(server.ws_url).health() == info


@pytest.mark.parametrize("url_kind", ["http", "ws"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_predictions_equal_the_evaluation_actor(server, reference, url_kind, binary):
    url = server.url if url_kind == "http" else server.ws_url
    with PolicyClient(url, binary=binary) as client:
        for seed, instruction in enumerate(INSTRUCTIONS):
            image = random_image(seed, size=48 + 16 * seed)  # any size: the checkpoint's transform resizes
            actions = client.predict(image, instruction, id=seed)
            assert actions.shape == (CHUNK, 7) and actions.dtype == np.float32
            np.testing.assert_array_equal(actions, reference_chunk(reference, image, instruction))
            assert client.last["id"] == seed and client.last["latency_ms"] > 0


def test_json_accepts_lists_png_and_jpeg(server, reference):
    image = random_image(7)
    want = reference_chunk(reference, image, INSTRUCTIONS[0])
    for encoded in (image.tolist(), png_b64(image), "data:image/png;base64," + png_b64(image)):
        status, _, data = request(
            server.url, "POST", "/predict", json.dumps({"image": encoded, "instruction": INSTRUCTIONS[0]})
        )
        assert status == 200, data
        np.testing.assert_array_equal(np.asarray(json.loads(data)["actions"], np.float32), want)
    # JPEG is lossy: it is decoded exactly as PIL decodes it
    jpeg = png_b64(image, "JPEG")
    decoded = np.array(Image.open(io.BytesIO(base64.b64decode(jpeg))).convert("RGB"))
    status, _, data = request(
        server.url, "POST", "/predict", json.dumps({"image": jpeg, "instruction": INSTRUCTIONS[0]})
    )
    assert status == 200
    np.testing.assert_array_equal(
        np.asarray(json.loads(data)["actions"], np.float32),
        reference_chunk(reference, decoded, INSTRUCTIONS[0]),
    )


def test_binary_reply_format(server):
    body = encode_binary_request(random_image(1), INSTRUCTIONS[1], id="abc")
    status, ctype, data = request(server.url, "POST", "/predict", body, "application/octet-stream")
    assert status == 200 and ctype == "application/octet-stream" and data[:4] == MAGIC
    n = int.from_bytes(data[4:8], "little")
    header = json.loads(data[8 : 8 + n])
    assert header["shape"] == [CHUNK, 7] and header["dtype"] == "<f4" and header["id"] == "abc"
    assert len(data) == 8 + n + CHUNK * 7 * 4


def test_concurrent_requests_are_batched_and_answered_with_their_own_actions(server, reference):
    n_clients, rounds = 6, 3
    inputs = [(random_image(100 + i), INSTRUCTIONS[i % 3]) for i in range(n_clients)]
    want = [reference_chunk(reference, im, ins) for im, ins in inputs]
    assert not np.allclose(want[0], want[1])  # distinct inputs give distinct answers
    got: dict[tuple[int, int], tuple[np.ndarray, int]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_clients, timeout=20)

    def client_loop(i: int) -> None:
        try:
            with PolicyClient(server.url if i % 2 else server.ws_url, timeout=20) as client:
                for r in range(rounds):
                    barrier.wait()
                    got[i, r] = client.predict(*inputs[i]), client.last["batch_size"]
        except BaseException as e:  # reported below: the test fails with it
            errors.append(e)
            barrier.abort()

    before = server.stats()["batches"]
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert not errors, errors
    assert len(got) == n_clients * rounds
    for (i, _), (actions, _) in got.items():
        # a batched forward pass may differ from a single one in the last float bits only
        np.testing.assert_allclose(actions, want[i], rtol=0, atol=1e-5)
    stats = server.stats()
    assert stats["max_batch_size_seen"] > 1 and max(b for _, b in got.values()) > 1
    assert stats["batches"] - before < n_clients * rounds  # fewer forward passes than requests


def test_auth_rejects_missing_and_wrong_tokens(engine):
    with BackgroundServer(serve_config(auth_token="s3cret"), engine) as srv:
        body = json.dumps({"image": random_image(0).tolist(), "instruction": "reach the green target"})
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic s3cret"}):
            assert error_of(srv.url, body, headers=headers)[0] == 401
            status, _, _ = request(srv.url, "GET", "/health", headers=headers)
            assert status == 401
        ok = request(srv.url, "POST", "/predict", body, headers={"Authorization": "Bearer s3cret"})
        assert ok[0] == 200
        with pytest.raises(ServeError) as e, PolicyClient(srv.ws_url, "wrong") as client:
            client.predict(random_image(0), "reach the green target")
        assert e.value.status == 401
        with PolicyClient(srv.ws_url, "s3cret") as client:
            assert client.predict(random_image(0), "reach the green target").shape == (CHUNK, 7)
            assert client.health()["auth"] is True


def test_token_from_environment(engine, monkeypatch):
    monkeypatch.setenv("VLA_SERVE_TOKEN", "from-env")
    from vla_lab.config.compose import compose
    from vla_lab.config.schemas import to_schema
    from vla_lab.serve.config import ServeConfig

    cfg = to_schema(ServeConfig, compose("serve", ["checkpoint=x"]), where="vla-serve")
    assert cfg.auth_token == "from-env" and cfg.host == "127.0.0.1"
    with BackgroundServer(serve_config(auth_token=cfg.auth_token), engine) as srv:
        assert PolicyClient(srv.url).health()["auth"] is True  # the client reads the variable too
        monkeypatch.delenv("VLA_SERVE_TOKEN")
        with pytest.raises(ServeError, match="401"):
            PolicyClient(srv.url).health()


def _valid() -> dict:
    return {"image": random_image(3, 16).tolist(), "instruction": "pick up the red block"}


BAD_JSON = [
    (b"{not json", "body: invalid JSON"),
    (b"[1, 2]", "body: must be a JSON object"),
    (b"\xff\xfe\x00", "body"),
    (json.dumps({"instruction": "x"}), "image: missing"),
    (json.dumps({**_valid(), "image": "***"}), "image: invalid base64"),
    (json.dumps({**_valid(), "image": base64.b64encode(b"not an image").decode()}), "image: not a decodable"),
    (json.dumps({**_valid(), "image": [[[1, 2]]]}), "image: must have shape [H, W, 3]"),
    (json.dumps({**_valid(), "image": [[[1, 2, 3]], [[1, 2]]]}), "image: nested list is not a regular"),
    (json.dumps({**_valid(), "image": [[[0.5, 0.5, 0.5]]]}), "image: values must be integers"),
    (json.dumps({**_valid(), "image": [[[0, 300, 0]]]}), "image: values must be in [0, 255]"),
    (json.dumps({**_valid(), "image": 5}), "image: must be a base64 PNG/JPEG string"),
    (json.dumps({**_valid(), "image": [[[0, 0, 0]] * 2000]}), "image: image is 1x2000"),
    (json.dumps({"image": _valid()["image"]}), "instruction: missing"),
    (json.dumps({**_valid(), "instruction": 3}), "instruction: must be a string"),
    (json.dumps({**_valid(), "instruction": "  "}), "instruction: empty"),
    (json.dumps({**_valid(), "instruction": "a" * 5000}), "instruction: 5000 characters"),
    (json.dumps({**_valid(), "proprio": "x"}), "proprio: must be a flat list of numbers"),
    (json.dumps({**_valid(), "images": {"wrist": "x"}}), "image, images: give one of them"),
    (json.dumps({"images": {"wrist": "x"}, "instruction": "a"}), "images.agentview: missing"),
    (json.dumps({**_valid(), "id": [1]}), "id: must be a string or an integer"),
    (b"[" * 100000 + b"]" * 100000, "body: JSON nested too deeply"),
]


@pytest.mark.parametrize("body, message", BAD_JSON, ids=range(len(BAD_JSON)))
def test_malformed_json_requests_get_a_4xx_naming_the_problem(server, body, message):
    status, error = error_of(server.url, body)
    assert status == 400 and message in error, error


def _frame(header: dict, payload: bytes = b"") -> bytes:
    return encode_frame(header, payload)


BAD_BINARY = [
    (b"", "request: binary frames start with"),
    (b"VLA2" + b"\0" * 8, "request: binary frames start with"),
    (MAGIC + (10**6).to_bytes(4, "little"), "header: 1000000 bytes, at most"),
    (MAGIC + (50).to_bytes(4, "little") + b"{}", "header: length says 50 bytes"),
    (MAGIC + (3).to_bytes(4, "little") + b"\xff\xff\xff", "header: not a UTF-8 JSON object"),
    (_frame({"instruction": "a", "shape": [2, 2]}), "header.shape: must be [H, W, 3]"),
    (_frame({"instruction": "a", "shape": [2, 2, 4]}, b"\0" * 16), "header.shape: images must have 3"),
    (_frame({"instruction": "a", "shape": [0, 2, 3]}), "header.shape: image is 0x2"),
    (_frame({"instruction": "a", "shape": [2, 2, 3]}, b"\0" * 11), "payload: 11 bytes, expected"),
    (_frame({"shape": [2, 2, 3]}, b"\0" * 12), "instruction: missing"),
    (_frame({"instruction": "a", "shape": [2, 2, 3], "cameras": ["wrist"]}, b"\0" * 12), "header.cameras"),
]


@pytest.mark.parametrize("body, message", BAD_BINARY, ids=range(len(BAD_BINARY)))
def test_malformed_binary_requests_get_a_4xx_naming_the_problem(server, body, message):
    status, error = error_of(server.url, body, "application/octet-stream")
    assert status == 400 and message in error, error


def test_oversized_bodies_unknown_routes_and_methods(server):
    status, error = error_of(server.url, b"x" * 1_000_001)
    assert status == 413 and "at most 1000000" in error
    assert request(server.url, "GET", "/nope")[0] == 404
    assert json.loads(request(server.url, "GET", "/nope")[2])["error"].startswith("no such endpoint")
    assert request(server.url, "GET", "/predict")[0] == 405
    assert error_of(server.url, b"{}", headers={"Content-Encoding": "gzip"})[0] == 415


def test_websocket_errors_keep_the_connection_open(server):
    from websockets.sync.client import connect

    with connect(server.ws_url, open_timeout=10, compression=None) as ws:
        ws.send("{bad")
        assert "body: invalid JSON" in json.loads(ws.recv(timeout=10))["error"]
        ws.send(b"VLA1")
        assert json.loads(ws.recv(timeout=10))["status"] == 400
        ws.send(encode_binary_request(random_image(0), "reach the green target"))
        assert ws.recv(timeout=10)[:4] == MAGIC
