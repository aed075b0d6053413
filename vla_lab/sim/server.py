"""Loopback HTTP + WebSocket server (one ephemeral port) that serves the simulator page and its
``node_modules`` over HTTP and accepts the pages' WebSocket connections.

Only requests carrying the server's random token may open a WebSocket, so a stray local process
cannot take over a simulator. The token never appears on a command line (where ``ps`` shows it to
every local user): a page's address carries a one-time boot code instead, which the page trades for
the WebSocket address over HTTP (``GET /session?boot=<code>``) as it loads.
"""

from __future__ import annotations

import contextlib
import http
import json
import logging
import mimetypes
import queue
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection, serve

from vla_lab.sim import protocol
from vla_lab.sim.errors import SimCrashedError, SimError, SimProtocolError, SimTimeoutError
from vla_lab.sim.manifest import WEB_ROOT

# websockets logs every connection at INFO; only problems are of interest here.
_ws_log = logging.getLogger("vla_lab.sim.websockets")
_ws_log.setLevel(logging.WARNING)

#: largest WebSocket message accepted from a page: a teleoperation episode (every frame of a long
#: episode at the largest render size) fits; anything bigger is a misbehaving page
MAX_MESSAGE_BYTES = 256 << 20

_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".html": "text/html",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".css": "text/css",
}
_file_cache: dict[Path, bytes] = {}
_file_cache_lock = threading.Lock()


def _read_static(path: Path) -> bytes:
    with _file_cache_lock:
        data = _file_cache.get(path)
    if data is None:
        data = path.read_bytes()
        # node_modules are immutable between installs; our own sources may change while developing.
        if "node_modules" in path.parts:
            with _file_cache_lock:
                _file_cache[path] = data
    return data


class Link:
    """One page's WebSocket: synchronous request/response with time-outs."""

    def __init__(self, conn: ServerConnection, hello: dict[str, Any]):
        self.conn = conn
        self.hello = hello
        self.closed = threading.Event()
        self._next_id = 1

    def send(self, header: dict[str, Any]) -> int:
        rid = self._next_id
        self._next_id += 1
        try:
            self.conn.send(protocol.encode({**header, "id": rid}))
        except ConnectionClosed as e:
            raise SimCrashedError(f"the simulator page closed the connection ({e})") from e
        return rid

    def receive(
        self, rid: int, expected: str, timeout: float, alive=lambda: True
    ) -> tuple[dict[str, Any], memoryview]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SimTimeoutError(f"the simulator did not answer within {timeout:.1f} s")
            try:
                data = self.conn.recv(timeout=min(remaining, 0.25))
                break
            except TimeoutError:
                if not alive():
                    raise SimCrashedError(
                        "the browser process died while waiting for the simulator"
                    ) from None
            except ConnectionClosed as e:
                raise SimCrashedError(f"the simulator page closed the connection ({e})") from e
        header, payload = protocol.decode(data)
        protocol.check_reply(header, rid, expected)
        return header, payload

    def request(self, header: dict[str, Any], expected: str, timeout: float, alive=lambda: True):
        return self.receive(self.send(header), expected, timeout, alive)

    def close(self) -> None:
        self.closed.set()
        with contextlib.suppress(ConnectionClosed, OSError):  # already closed by the other side
            self.conn.close()


class SimServer:
    def __init__(self, web_root: Path = WEB_ROOT, handler=None):
        """``handler(conn)`` replaces the default one (pages that say hello and answer requests)."""
        self.web_root = web_root.resolve()
        self.token = secrets.token_urlsafe(16)
        self._boot_codes: set[str] = set()
        self._boot_lock = threading.Lock()
        self._links: queue.Queue[Link | Exception] = queue.Queue()
        self._server = serve(
            handler or self._handler,
            "127.0.0.1",
            0,
            compression=None,  # images are incompressible noise to deflate and it costs milliseconds
            max_size=MAX_MESSAGE_BYTES,
            ping_interval=None,  # liveness is checked per request, with the browser process
            process_request=self._process_request,
            server_header=None,
            close_timeout=1,
            logger=_ws_log,
        )
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="vla-sim-server", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def socket_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?token={self.token}"

    def page_url(self, page: str = "index.html", **params: Any) -> str:
        """The address of one page load: a fresh one-time boot code, so call it once per page."""
        code = secrets.token_urlsafe(16)
        with self._boot_lock:
            self._boot_codes.add(code)
        return f"{self.base_url}/{page}?{urlencode({'boot': code, **params})}"

    def _redeem(self, code: str) -> bool:
        with self._boot_lock:
            if code in self._boot_codes:
                self._boot_codes.discard(code)
                return True
            return False

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if not secrets.compare_digest(query.get("token", [""])[0], self.token):
                return conn.respond(http.HTTPStatus.FORBIDDEN, "bad token\n")
            return None
        if url.path == "/session":
            if not self._redeem(query.get("boot", [""])[0]):
                return conn.respond(http.HTTPStatus.FORBIDDEN, "unknown or already used boot code\n")
            return _ok(json.dumps({"ws": self.socket_url}).encode(), "application/json")
        rel = url.path.lstrip("/") or "index.html"
        path = (self.web_root / rel).resolve()
        if not path.is_relative_to(self.web_root) or not path.is_file():
            return conn.respond(http.HTTPStatus.NOT_FOUND, f"not found: {url.path}\n")
        body = _read_static(path)
        ctype = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return _ok(body, ctype)

    def _handler(self, conn: ServerConnection) -> None:
        # Small request frames must not wait for Nagle's algorithm (it costs up to 40 ms per step).
        conn.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            data = conn.recv(timeout=30)
            header, _ = protocol.decode(data)
            if header.get("type") != "hello" or not isinstance(header.get("manifest"), dict):
                raise SimProtocolError(
                    f"the page's first message must be 'hello' with a manifest, got {header.get('type')!r}"
                )
        except (TimeoutError, ConnectionClosed, SimError) as e:
            self._links.put(SimProtocolError(f"page failed to say hello: {e}"))
            return
        link = Link(conn, header)
        self._links.put(link)
        # The connection lives as long as this handler runs; requests are made from the caller's thread.
        while not link.closed.wait(0.5):
            if conn.state.name == "CLOSED":
                break

    def accept(self, timeout: float, alive=lambda: True) -> Link:
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self._links.get(timeout=0.05)
            except queue.Empty:
                if not alive():
                    raise SimCrashedError("the browser exited before the simulator page connected") from None
                if time.monotonic() > deadline:
                    raise SimTimeoutError(
                        f"the simulator page did not connect within {timeout:.1f} s"
                    ) from None
                continue
            if isinstance(item, Exception):
                raise item
            return item

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)


def _ok(body: bytes, ctype: str) -> Response:
    headers = Headers(
        [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
    )
    return Response(200, "OK", headers, body)
