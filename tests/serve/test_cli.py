"""``vla-serve`` as a user runs it: a subprocess on free ports that prints its address, answers,
and stops cleanly on SIGTERM; bad configuration exits 2 naming the field."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from tests.serve.conftest import CHUNK, random_image
from vla_lab.serve.client import PolicyClient

# each subprocess imports torch and the model stack: seconds apiece on a busy 2-core machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _vla_serve(*args: str, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vla_lab.cli.serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _lines(proc: subprocess.Popen) -> queue.Queue:
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_serves_on_free_ports_and_stops_on_sigterm(checkpoint):
    proc = _vla_serve(f"checkpoint={checkpoint}", "port=0", "ws_port=0", env={"VLA_SERVE_TOKEN": "tok"})
    try:
        lines, seen, url = _lines(proc), [], None
        while url is None:
            line = lines.get(timeout=90)
            assert line is not None, "".join(seen)
            seen.append(line)
            if line.startswith("vla-serve: listening on "):
                url = line.split()[3]
        with PolicyClient(url, "tok") as client:
            info = client.health()
            assert info["auth"] and info["chunk_size"] == CHUNK
            assert client.predict(random_image(0), "reach the green target").shape == (CHUNK, 7)
        with PolicyClient(f"ws://127.0.0.1:{info['ws_port']}", "tok") as client:
            assert np.isfinite(client.predict(random_image(1), "reach the green target")).all()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.parametrize(
    "args, message",
    [
        (["checkpoint=/nonexistent/ckpt"], "checkpoint=/nonexistent/ckpt: no such directory"),
        ([], "checkpoint: required"),
        (["checkpoint=x", "port=70000"], "port: must be in [0, 65535]"),
    ],
)
def test_bad_configuration_exits_2_naming_the_field(args, message):
    proc = subprocess.run(
        [sys.executable, "-m", "vla_lab.cli.serve", *args], capture_output=True, text=True, timeout=90
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
