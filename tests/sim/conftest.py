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


def chromium_processes(profile: str | None = None) -> list[int]:
    """PIDs of live chromium processes on this machine (any owner); with ``profile``, only those of
    the browser using that profile directory (they inherit ``PROFILE_ENV``)."""
    from vla_lab.sim.browser import PROFILE_ENV

    marker = f"{PROFILE_ENV}={profile}".encode() if profile else None
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            comm = Path(f"/proc/{d}/comm").read_text().strip()
            state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if comm.startswith("chrom") and state != "Z" and (marker is None or _has_env(int(d), marker)):
            out.append(int(d))
    return out


def _has_env(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
