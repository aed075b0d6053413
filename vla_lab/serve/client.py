"""Python client of ``vla-serve``: ``PolicyClient(url, token).predict(image, instruction)``.

``url`` picks the transport: ``http://host:port`` (one keep-alive connection) or ``ws://host:ws_port``
(one WebSocket). ``binary=True`` sends raw pixels in the binary frame (fastest); ``binary=False`` the
JSON form with a base64 PNG (lossless, so both give the same actions). Not thread-safe: one client
per thread.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import threading
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from vla_lab.serve.protocol import decode_binary_reply, encode_binary_request

TOKEN_ENV = "VLA_SERVE_TOKEN"


class ServeError(RuntimeError):
    """The server answered with an error (``status`` is its HTTP status or WebSocket error status)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


def encode_png(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    # level 1: the PNG stays lossless; higher levels cost milliseconds for a few percent
    Image.fromarray(np.ascontiguousarray(image, np.uint8)).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


class PolicyClient:
    def __init__(
        self, url: str, token: str | None = None, *, timeout: float = 30.0, binary: bool = True
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "ws") or not parts.hostname or not parts.port:
            raise ValueError(f"url: expected http://host:port or ws://host:port, got {url!r}")
        self.url, self.scheme = url, parts.scheme
        self.host, self.port = parts.hostname, parts.port
        self.token = token if token is not None else os.environ.get(TOKEN_ENV)
        self.timeout, self.binary = timeout, binary
        #: metadata of the last reply: latency_ms (server side), batch_size, id
        self.last: dict[str, Any] = {}
        self._http: http.client.HTTPConnection | None = None
        self._ws = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------ public API
    def health(self) -> dict[str, Any]:
        """``GET /health`` (the WebSocket port answers it too)."""
        status, _, body = self._http_request("GET", "/health")
        return self._json_or_raise(status, body)

    def stats(self) -> dict[str, Any]:
        if self.scheme != "http":
            raise ValueError("stats: only the HTTP port serves GET /stats")
        status, _, body = self._http_request("GET", "/stats")
        return self._json_or_raise(status, body)

    def predict(
        self,
        image: np.ndarray | dict[str, np.ndarray],
        instruction: str,
        proprio: Any = None,
        *,
        id: Any = None,
    ) -> np.ndarray:
        """(K, A) float32 actions in the simulator's units. ``image``: HxWx3 uint8, or
        ``{camera: image}`` for multi-camera policies; ``proprio``: flat list (proprio keys concatenated)."""
        with self._lock:
            if self.binary:
                reply = self._send(encode_binary_request(image, instruction, proprio, id), binary=True)
                actions, meta = decode_binary_reply(reply)
            else:
                msg: dict[str, Any] = {"instruction": instruction}
                if isinstance(image, dict):
                    msg["images"] = {k: encode_png(v) for k, v in image.items()}
                else:
                    msg["image"] = encode_png(image)
                if proprio is not None:
                    msg["proprio"] = np.asarray(proprio, np.float64).reshape(-1).tolist()
                if id is not None:
                    msg["id"] = id
                meta = json.loads(self._send(json.dumps(msg).encode(), binary=False))
                actions = np.asarray(meta.pop("actions"), np.float32)
            self.last = meta
            return actions

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------- transport
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _send(self, data: bytes, *, binary: bool) -> bytes | str:
        if self.scheme == "ws":
            return self._ws_send(data if binary else data.decode())
        ctype = "application/octet-stream" if binary else "application/json"
        status, headers, body = self._http_request("POST", "/predict", data, ctype)
        if status != 200:
            self._json_or_raise(status, body)
        return body

    def _http_request(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None):
        headers = self._headers()
        if ctype:
            headers["Content-Type"] = ctype
        # The server may have closed an idle keep-alive connection: retry once on a fresh one
        # (prediction has no side effects, so a repeat is harmless).
        for attempt in (0, 1):
            if self._http is None:
                self._http = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._http.request(method, path, body=body, headers=headers)
                resp = self._http.getresponse()
                return resp.status, dict(resp.getheaders()), resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._http.close()
                self._http = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _ws_send(self, message: bytes | str) -> bytes | str:
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        if self._ws is None:
            try:
                self._ws = connect(
                    f"ws://{self.host}:{self.port}/",
                    additional_headers=self._headers(),
                    open_timeout=self.timeout,
                    compression=None,
                    max_size=None,  # replies are small; the server bounds what it sends
                    legacy=True,  # a connection kept across calls, closed by close()
                )
            except InvalidStatus as e:
                raise ServeError(
                    e.response.status_code, e.response.body.decode(errors="replace").strip()
                ) from None
        self._ws.send(message)
        reply = self._ws.recv(timeout=self.timeout)
        if isinstance(reply, str):
            msg = json.loads(reply)
            if "error" in msg:
                raise ServeError(int(msg.get("status", 400)), msg["error"])
            if isinstance(message, bytes):
                raise ServeError(500, f"expected a binary reply, got text: {reply[:200]}")
        return reply

    @staticmethod
    def _json_or_raise(status: int, body: bytes) -> dict[str, Any]:
        try:
            msg = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ServeError(status, body[:200].decode(errors="replace")) from None
        if status != 200:
            raise ServeError(status, msg.get("error", str(msg)) if isinstance(msg, dict) else str(msg))
        return msg
