"""A minimal Chrome DevTools Protocol client for driving viewer pages in tests (screenshots, keys)."""

from __future__ import annotations

import base64
import io
import itertools
import json
import time
from pathlib import Path

import numpy as np
from websockets.sync.client import connect

KEYS = {
    "Enter": ("Enter", 13),
    "Space": (" ", 32),
    "KeyW": ("w", 87),
    "KeyS": ("s", 83),
    "KeyA": ("a", 65),
    "KeyD": ("d", 68),
    "KeyR": ("r", 82),
    "KeyF": ("f", 70),
    "KeyK": ("k", 75),
    "KeyX": ("x", 88),
    "KeyJ": ("j", 74),
}


class Cdp:
    def __init__(self, profile: str | Path, timeout: float = 15.0):
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not port_file.exists() or len(port_file.read_text().split()) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium wrote no DevToolsActivePort file")
            time.sleep(0.05)
        port, path = port_file.read_text().split()[:2]
        self.ws = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=timeout).__enter__()
        self._ids = itertools.count(1)
        self.timeout = timeout
        while True:
            pages = [t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
            if pages:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("no page target")
            time.sleep(0.05)
        self.session = self.call("Target.attachToTarget", targetId=pages[0]["targetId"], flatten=True)[
            "sessionId"
        ]

    def call(self, method: str, session: str | None = None, **params):
        mid = next(self._ids)
        msg = {"id": mid, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + self.timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if reply.get("id") == mid:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def page(self, method: str, **params):
        return self.call(method, self.session, **params)

    def evaluate(self, expression: str):
        return self.page("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"page never satisfied {expression!r}")

    def key(self, code: str, hold: float = 0.0) -> None:
        key, vk = KEYS[code]
        self.page("Input.dispatchKeyEvent", type="keyDown", code=code, key=key, windowsVirtualKeyCode=vk)
        if hold:
            time.sleep(hold)
        self.page("Input.dispatchKeyEvent", type="keyUp", code=code, key=key, windowsVirtualKeyCode=vk)

    def screenshot(self) -> np.ndarray:
        from PIL import Image

        data = base64.b64decode(self.page("Page.captureScreenshot", format="png")["data"])
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def close(self) -> None:
        self.ws.close()
