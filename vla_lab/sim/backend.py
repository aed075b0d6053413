"""A running simulator: loopback server + headless Chromium + one WebSocket link per page.

Headless Chromium shows one page per process, so ``pages > 1`` starts one browser per page; each
has its own renderer and GPU process, which is what lets pages step in parallel."""

from __future__ import annotations

import time
from typing import Any

from vla_lab.sim.browser import Browser
from vla_lab.sim.errors import SimCrashedError, SimError, SimProtocolError, SimTimeoutError
from vla_lab.sim.manifest import load_manifest
from vla_lab.sim.protocol import PROTOCOL_VERSION
from vla_lab.sim.server import Link, SimServer


class SimBackend:
    def __init__(
        self,
        pages: int = 1,
        chromium: str | None = None,
        startup_timeout: float = 20.0,
        request_timeout: float = 10.0,
        extra_flags: tuple[str, ...] = (),
        *,
        launch: bool = True,
        page: str = "index.html",
        page_params: dict[str, str] | None = None,
        on_url=None,
    ):
        """``launch=False`` starts no browser: ``on_url(url)`` is called with the page address for a
        person (or a test) to open, and the backend waits ``startup_timeout`` for it to connect."""
        if pages < 1:
            raise ValueError(f"pages must be >= 1, got {pages}")
        self.request_timeout = float(request_timeout)
        self.launched = launch
        self.browsers: list[Browser] = []
        self.links: list[Link] = []
        t0 = time.monotonic()
        self.server = SimServer()
        try:
            # one address per page: each carries its own one-time boot code
            urls = [self.server.page_url(page, **(page_params or {})) for _ in range(pages)]
            if launch:
                for url in urls:
                    self.browsers.append(Browser([url], chromium, extra_flags))
            elif on_url is not None:
                for url in urls:
                    on_url(url)
            self.launched = launch
            for _ in range(pages):
                self.links.append(self.server.accept(startup_timeout, self.alive))
        except BaseException as e:
            tail = "\n".join(b.log_tail() for b in self.browsers)
            self.close()
            if isinstance(e, SimError) and tail:
                raise type(e)(f"{e}\nchromium log (tail):\n{tail}") from e
            raise
        self.startup_seconds = time.monotonic() - t0
        hello = self.links[0].hello["manifest"]
        if hello.get("protocol_version") != PROTOCOL_VERSION:
            self.close()
            raise SimProtocolError(
                f"page speaks protocol {hello.get('protocol_version')}, client {PROTOCOL_VERSION}"
            )
        self.manifest: dict[str, Any] = hello
        if hello != load_manifest():
            # The page is the authority; a stale manifest.json would mislead list_tasks().
            self.close()
            raise SimError(
                "the page's task registry differs from manifest.json; regenerate it (delete web/manifest.json)"
            )

    @property
    def browser(self) -> Browser | None:
        """The first (for a single page: the only) browser."""
        return self.browsers[0] if self.browsers else None

    def alive(self) -> bool:
        if not self.launched:
            # A browser we did not start: the open WebSocket is the only sign of life.
            return all(link.conn.state.name == "OPEN" for link in self.links)
        return bool(self.browsers) and all(b.alive() for b in self.browsers)

    def send(self, page: int, header: dict[str, Any]) -> int:
        return self.links[page].send(header)

    def receive(self, page: int, rid: int, expected: str, timeout: float | None = None):
        return self.links[page].receive(rid, expected, timeout or self.request_timeout, self.alive)

    def request(self, page: int, header: dict[str, Any], expected: str, timeout: float | None = None):
        if not self.alive():
            raise SimCrashedError("the browser process is not running")
        return self.links[page].request(header, expected, timeout or self.request_timeout, self.alive)

    def close(self) -> None:
        # Browser first: closing a WebSocket to a hung page would wait for its closing handshake.
        for b in self.browsers:
            b.close()
        self.browsers = []
        for link in self.links:
            link.close()
        self.links = []
        self.server.close()


__all__ = ["SimBackend", "SimCrashedError", "SimTimeoutError"]
