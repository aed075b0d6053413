"""Headless Chromium as a child process that can never outlive the Python process.

The browser runs in its own process group (so closing kills every helper process it spawned) and
with ``PR_SET_PDEATHSIG = SIGKILL`` (so the kernel kills it when its parent dies, SIGKILL included).
The death signal fires when the *thread* that started the browser exits: start browsers from a
long-lived thread (normally the main thread). Chromium's crash handler daemonises into a process
group of its own; it exits by itself as soon as the browser is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from vla_lab.sim.errors import SimError

DEFAULT_CHROMIUM = "/usr/lib/chromium/chromium"
_PR_SET_PDEATHSIG = 1

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--mute-audio",
    # Headless pages count as hidden; without these Chromium throttles their timers and priority.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--disable-features=Translate,MediaRouter,OptimizationHints,CalculateNativeWinOcclusion",
)

PROFILE_PREFIX = "vla-sim-chromium-"
OWNER_FILE = "vla-sim-owner.pid"
#: environment variable naming the profile directory in every process a browser starts
PROFILE_ENV = "VLA_SIM_PROFILE"

_live: set[Browser] = set()
_live_lock = threading.Lock()


def find_chromium(explicit: str | None = None) -> str:
    candidates = [explicit] if explicit else [os.environ.get("VLA_LAB_CHROMIUM"), DEFAULT_CHROMIUM]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    if explicit:
        raise SimError(f"chromium executable {explicit!r} does not exist or is not executable")
    raise SimError(
        f"headless Chromium not found at {DEFAULT_CHROMIUM} (or $VLA_LAB_CHROMIUM); install it with "
        "`make sim-deps` (apt-get install chromium)"
    )


def _child_setup() -> None:  # runs in the child between fork and exec
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(111)
    # The parent may already have died between fork and prctl; then nobody would ever signal us.
    if os.getppid() == 1:
        os._exit(112)


class Browser:
    """One headless Chromium process (with its helpers) showing ``urls``, one tab each."""

    def __init__(self, urls: list[str], executable: str | None = None, extra_flags: tuple[str, ...] = ()):
        self.executable = find_chromium(executable)
        sweep_stale_profiles()
        self.profile = tempfile.mkdtemp(prefix=PROFILE_PREFIX)
        Path(self.profile, OWNER_FILE).write_text(str(os.getpid()))
        self.log_path = Path(self.profile) / "chromium.log"
        args = [self.executable, *CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={self.profile}", *urls]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_child_setup,
                close_fds=True,
                # inherited by every process of this browser: what tells them apart from another's
                env={**os.environ, PROFILE_ENV: self.profile},
            )
        self.pgid = self.proc.pid  # setsid made the browser its own process-group leader
        self.started = time.monotonic()
        with _live_lock:
            _live.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def close(self) -> None:
        """Kills the whole process group (browser, GPU, renderer, zygote) and removes the profile."""
        with _live_lock:
            _live.discard(self)
        with contextlib.suppress(ProcessLookupError):  # the group is already gone
            os.killpg(self.pgid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired as e:
            raise SimError(f"chromium (pid {self.pid}) did not exit after SIGKILL") from e
        # Helpers may take a moment to be reaped by init; wait briefly so callers see a clean table.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and _group_alive(self.pgid):
            time.sleep(0.02)
        shutil.rmtree(self.profile, ignore_errors=True)


def sweep_stale_profiles() -> None:
    """Deletes browser profiles left behind by SIGKILLed owners (their own close() never ran)."""
    for d in Path(tempfile.gettempdir()).glob(f"{PROFILE_PREFIX}*"):
        try:
            owner = int((d / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours to judge (no owner recorded)
        if not Path(f"/proc/{owner}").exists():
            shutil.rmtree(d, ignore_errors=True)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue  # exited while we looked
        # Fields after the parenthesised command name: state ppid pgrp ...
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(d))
    return out


def _group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


@atexit.register
def _close_all() -> None:
    with _live_lock:
        browsers = list(_live)
    for b in browsers:
        b.close()
