"""The policy server: HTTP (aiohttp) and WebSocket (websockets) front ends on one event loop, one
micro-batcher behind both. Request parsing runs in a small thread pool and the forward pass in the
batcher's worker thread, so the loop only moves bytes.

HTTP: ``GET /health``, ``GET /stats``, ``POST /predict`` (JSON, or the binary frame with
``Content-Type: application/octet-stream``). WebSocket (its own port): JSON text frames or binary
frames, one reply per message, in order. Formats: :mod:`vla_lab.serve.protocol`; docs/serving.md.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import PurePath
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

from vla_lab.serve.batching import MicroBatcher
from vla_lab.serve.config import ServeConfig
from vla_lab.serve.protocol import (
    Request,
    RequestError,
    _short,
    encode_binary_reply,
    json_reply,
    parse_binary_request,
    parse_json_request,
)

log = logging.getLogger(__name__)

BINARY_TYPE = "application/octet-stream"
#: HTTP header limits (request line and each header field); beyond them aiohttp answers 400
MAX_HEADER_LINE = 8190


class PolicyServer:
    def __init__(self, cfg: ServeConfig, engine):
        self.cfg, self.engine = cfg, engine
        self.limits = engine.limits(cfg.max_image_side, cfg.max_instruction_chars)
        self.served_hosts = cfg.served_hosts()
        self.token = cfg.auth_token
        self.batcher = MicroBatcher(
            engine,
            max_batch_size=cfg.max_batch_size,
            max_wait_ms=cfg.max_wait_ms,
            max_pending=cfg.max_pending,
        )
        self.parsers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vla-serve-parse")
        self.counts: Counter[str] = Counter()
        self.port = self.ws_port = 0
        self._runner: web.AppRunner | None = None
        self._ws = None

    # ------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self.batcher.start()
        app = web.Application(
            client_max_size=self.cfg.max_body_bytes, middlewares=[self._errors, self._origin, self._auth]
        )
        app.router.add_get("/health", self._health)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/predict", self._predict)
        # no access log (one line per request costs latency); compressed bodies are refused rather
        # than inflated, so max_body_bytes bounds what a request can make the server hold
        self._runner = web.AppRunner(
            app,
            access_log=None,
            auto_decompress=False,
            max_line_size=MAX_HEADER_LINE,
            max_field_size=MAX_HEADER_LINE,
            shutdown_timeout=2.0,
            # armed when a connection opens and re-armed after each request: a client that never
            # completes its headers is dropped after this long instead of holding a connection
            keepalive_timeout=self.cfg.header_timeout_s,
            logger=_ClientFaultLog(self.counts),
        )
        await self._runner.setup()
        http_sock = _listen(self.cfg.host, self.cfg.port)
        await web.SockSite(self._runner, http_sock).start()
        self.port = http_sock.getsockname()[1]
        ws_sock = _listen(self.cfg.host, self.cfg.ws_port)
        self._ws = await ws_serve(
            self._ws_handler,
            sock=ws_sock,
            max_size=self.cfg.max_body_bytes,
            compression=None,  # images are incompressible noise to deflate, and it costs latency
            process_request=self._ws_auth,
            open_timeout=self.cfg.header_timeout_s,
        )
        self.ws_port = ws_sock.getsockname()[1]

    async def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            await asyncio.wait_for(self._ws.wait_closed(), 5.0)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.batcher.close()
        self.parsers.shutdown(wait=True, cancel_futures=True)

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.cfg.host)}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{_url_host(self.cfg.host)}:{self.ws_port}"

    # --------------------------------------------------------------------------------- serving
    async def answer(self, req: Request, start: float) -> tuple[Any, dict[str, Any]]:
        """Runs one parsed request through the batcher: ``(actions (K, A), reply metadata)``."""
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self.parsers, self.engine.prepare, req)
        pred = await self.batcher.submit(prepared)
        meta: dict[str, Any] = {
            "latency_ms": round(1000 * (time.perf_counter() - start), 3),
            "batch_size": pred.batch_size,
        }
        if req.id is not None:
            meta["id"] = req.id
        return pred.actions, meta

    async def parse(self, data: bytes | str, binary: bool) -> Request:
        loop = asyncio.get_running_loop()
        parser = parse_binary_request if binary else parse_json_request
        return await loop.run_in_executor(self.parsers, parser, data, self.limits)

    def authorized(self, header: str | None) -> bool:
        if self.token is None:
            return True
        scheme, _, given = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())

    def foreign_host(self, host: str | None, origin: str | None) -> str | None:
        """Why a request addressed to ``host`` from ``origin`` is refused, or None when served.
        A browser page on another site that rebinds its DNS name to 127.0.0.1 still sends its own
        name as Host (and Origin): only requests naming this server get through."""
        served = self.served_hosts
        name = _host_name(host)
        if name is None or name not in served:
            return f"Host: {_short(host)} is not served here (allowed_hosts)"
        if origin is not None and origin != "null":
            origin_name = _host_name(origin, url=True)
            if origin_name is None or origin_name not in served:
                return f"Origin: {_short(origin)} may not call this server (allowed_hosts)"
        return None

    def stats(self) -> dict[str, Any]:
        return {"requests": dict(self.counts), **self.batcher.stats()}

    def health(self) -> dict[str, Any]:
        info = dict(self.engine.info())
        if info.get("checkpoint"):
            # the run and checkpoint names identify the policy; the absolute path would tell any
            # caller about the machine's file system
            info["checkpoint"] = "/".join(PurePath(str(info["checkpoint"])).parts[-2:])
        return {
            "status": "ok",
            **info,
            "port": self.port,
            "ws_port": self.ws_port,
            "max_batch_size": self.cfg.max_batch_size,
            "max_wait_ms": self.cfg.max_wait_ms,
            "max_body_bytes": self.cfg.max_body_bytes,
            "max_image_side": self.cfg.max_image_side,
            "auth": self.token is not None,
        }

    # ------------------------------------------------------------------------------------ HTTP
    @web.middleware
    async def _errors(self, request: web.Request, handler):
        try:
            return await handler(request)
        except RequestError as e:
            return self._error(e.status, str(e))
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return self._error(e.status, self._http_reason(e, request))
        except ConnectionResetError:
            # the client went away mid-request: nobody to answer and nothing to log; the empty
            # response ends aiohttp's handling quietly (re-raising would log it as a server error)
            self.counts["client_reset"] += 1
            return web.Response(status=400)
        except Exception as e:  # a bug must not take the server down: log it, answer 500
            log.exception("%s %s failed", request.method, request.path)
            return self._error(500, f"internal error: {type(e).__name__}")

    @web.middleware
    async def _origin(self, request: web.Request, handler):
        refused = self.foreign_host(request.headers.get("Host"), request.headers.get("Origin"))
        if refused is not None:
            return self._error(403, refused)
        return await handler(request)

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if not self.authorized(request.headers.get("Authorization")):
            resp = self._error(401, "missing or wrong bearer token (Authorization: Bearer <token>)")
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
        return await handler(request)

    def _http_reason(self, e: web.HTTPException, request: web.Request) -> str:
        if e.status == 404:
            return f"no such endpoint: {request.path} (GET /health, GET /stats, POST /predict)"
        if e.status == 405:
            return f"method {request.method} not allowed on {request.path}"
        if e.status == 413:
            return f"body: larger than the {self.cfg.max_body_bytes} bytes allowed (max_body_bytes)"
        return e.reason

    def _error(self, status: int, message: str) -> web.Response:
        self.counts[f"error_{status}"] += 1
        return web.json_response({"error": message, "status": status}, status=status)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(self.health())

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _predict(self, request: web.Request) -> web.Response:
        start = time.perf_counter()
        if request.content_length is not None and request.content_length > self.cfg.max_body_bytes:
            raise RequestError(
                f"body: {request.content_length} bytes, at most {self.cfg.max_body_bytes} allowed", 413
            )
        if request.headers.get("Content-Encoding", "identity").lower() != "identity":
            raise RequestError("Content-Encoding: compressed bodies are not accepted", 415)
        try:
            async with asyncio.timeout(self.cfg.read_timeout_s):
                body = await request.read()
        except TimeoutError:
            raise RequestError(f"body: not received within {self.cfg.read_timeout_s} s", 408) from None
        binary = request.content_type == BINARY_TYPE
        self.counts["http_binary" if binary else "http_json"] += 1
        actions, meta = await self.answer(await self.parse(body, binary), start)
        if binary:
            return web.Response(body=encode_binary_reply(actions, meta), content_type=BINARY_TYPE)
        return web.json_response(json_reply(actions, meta))

    # ------------------------------------------------------------------------------- WebSocket
    def _ws_auth(self, connection: ServerConnection, request):
        """Before the handshake: the token, and a plain ``GET /health`` so that a client given only
        the WebSocket address can still ask what it talks to."""
        refused = self.foreign_host(request.headers.get("Host"), request.headers.get("Origin"))
        if refused is not None:
            self.counts["error_403"] += 1
            return connection.respond(HTTPStatus.FORBIDDEN, refused + "\n")
        if not self.authorized(request.headers.get("Authorization")):
            self.counts["error_401"] += 1
            response = connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token\n")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        if request.path == "/health" and "upgrade" not in request.headers.get("Connection", "").lower():
            response = connection.respond(HTTPStatus.OK, json.dumps(self.health()))
            del response.headers["Content-Type"]  # respond() sets text/plain; headers append
            response.headers["Content-Type"] = "application/json"
            return response
        return None

    async def _ws_handler(self, conn: ServerConnection) -> None:
        try:
            async for message in conn:
                start = time.perf_counter()
                binary = isinstance(message, bytes)
                self.counts["ws_binary" if binary else "ws_json"] += 1
                try:
                    actions, meta = await self.answer(await self.parse(message, binary), start)
                except RequestError as e:
                    self.counts[f"error_{e.status}"] += 1
                    await conn.send(json.dumps({"error": str(e), "status": e.status}))
                    continue
                except Exception as e:  # a bug must not end the connection
                    log.exception("WebSocket message failed")
                    self.counts["error_500"] += 1
                    await conn.send(
                        json.dumps({"error": f"internal error: {type(e).__name__}", "status": 500})
                    )
                    continue
                if binary:
                    await conn.send(encode_binary_reply(actions, meta))
                else:
                    await conn.send(json.dumps(json_reply(actions, meta)))
        except ConnectionClosed:
            return  # the client left (or sent an oversized message: closed with 1009)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as e:
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e


def _host_name(host: str | None, url: bool = False) -> str | None:
    """The name in a Host header (or, with ``url``, an Origin URL), without port and IPv6
    brackets, lower-cased; None when there is none."""
    if not host:
        return None
    try:
        name = urlsplit(host.strip() if url else f"//{host.strip()}").hostname
    except ValueError:  # e.g. an unterminated IPv6 bracket or a port that is not a number
        return None
    return name.lower() if name else None


class _ClientFaultLog(logging.LoggerAdapter):
    """aiohttp's server log, less the client's faults: a request its parser refuses (a bad request
    line, header, length or chunk; answered 400 by aiohttp itself) is counted as ``bad_http`` in
    /stats and logged as one INFO line, where aiohttp would log an ERROR with a traceback. Any other
    exception keeps its traceback."""

    def __init__(self, counts: Counter[str]):
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self.counts = counts

    def exception(self, msg, *args, exc_info=True, **kwargs) -> None:
        if isinstance(exc_info, HttpProcessingError) and 400 <= exc_info.code < 500:
            self.counts["bad_http"] += 1
            reason = " ".join(str(exc_info.message).split())[:200]  # aiohttp's is several lines
            self.info("refused a malformed request (%d %s)", exc_info.code, reason)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# ------------------------------------------------------------------------------------- running it
async def serve_until_stopped(cfg: ServeConfig, engine, on_ready, stop: asyncio.Event) -> None:
    server = PolicyServer(cfg, engine)
    await server.start()
    try:
        on_ready(server)
        await stop.wait()
    finally:
        await server.close()


class BackgroundServer:
    """A :class:`PolicyServer` on its own event loop in a thread: for tests, benchmarks and
    ``vla-serve mode=episodes`` without a running server. Use as a context manager."""

    def __init__(self, cfg: ServeConfig, engine, start_timeout: float = 30.0):
        self.cfg, self.engine, self.start_timeout = cfg, engine, start_timeout
        self.server: PolicyServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="vla-serve", daemon=True)

    def _main(self) -> None:
        async def run():
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await serve_until_stopped(self.cfg, self.engine, self._on_ready, self._stop)

        try:
            asyncio.run(run())
        except BaseException as e:
            self._error = e
            self._ready.set()

    def _on_ready(self, server: PolicyServer) -> None:
        self.server = server
        self._ready.set()

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        if not self._ready.wait(self.start_timeout):
            raise TimeoutError(f"the policy server did not start within {self.start_timeout} s")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self, timeout: float = 15.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the policy server did not stop within {timeout} s")

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    def stats(self) -> dict[str, Any]:
        """The server's counters, read on its own loop (they change there)."""

        async def read() -> dict[str, Any]:
            return self.server.stats()

        return asyncio.run_coroutine_threadsafe(read(), self._loop).result(10.0)
