"""Fixtures of the simulator tests: real headless Chromium, shared per module to keep the suite fast."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import HAVE_CHROMIUM, HAVE_MODULES, HAVE_NODE, needs_browser  # noqa: F401  (shared)


@pytest.fixture(scope="module")
def sim_env():
    from vla_lab.sim import SimEnv

    env = SimEnv("pick_block", "studio", timeout=15.0)
    yield env
    env.close()


def chromium_processes() -> list[int]:
    """PIDs of live chromium processes on this machine (any owner)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            comm = Path(f"/proc/{d}/comm").read_text().strip()
            state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if comm.startswith("chrom") and state != "Z":
            out.append(int(d))
    return out


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
