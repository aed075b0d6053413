"""Browser crashes, hangs, dropped connections and killed parents: clear errors, no orphans, no hangs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.sim.conftest import chromium_processes, kill_group, needs_browser
from vla_lab.sim import SimCrashedError, SimEnv, SimTimeoutError
from vla_lab.sim.browser import OWNER_FILE, PROFILE_PREFIX, group_members, sweep_stale_profiles
from vla_lab.sim.server import SimServer
from vla_lab.sim.vector import VectorSimEnv

pytestmark = [pytest.mark.sim, needs_browser, pytest.mark.timeout(120)]

ZERO = [0, 0, 0, 0, 0, 0, 1]


def test_crashed_browser_raises_then_reset_starts_a_fresh_one():
    env = SimEnv("pick_block", timeout=10.0)
    try:
        env.reset(seed=0)
        first = env.backend.browser
        pgid = first.pgid
        kill_group(pgid)
        t0 = time.monotonic()
        with pytest.raises(SimCrashedError):
            env.step(ZERO)
        assert time.monotonic() - t0 < 5.0
        assert env.backend is None and not group_members(pgid)
        obs, _ = env.reset(seed=0)
        assert env.backend.browser is not first and env.backend.alive()
        env.step(ZERO)
    finally:
        env.close()


def test_hung_browser_times_out_then_reset_starts_a_fresh_one():
    env = SimEnv("reach_target", timeout=2.0)
    try:
        env.reset(seed=0)
        pgid = env.backend.browser.pgid
        kill_group(pgid, signal.SIGSTOP)  # a page that never answers
        t0 = time.monotonic()
        with pytest.raises(SimTimeoutError, match="did not answer within 2.0 s"):
            env.step(ZERO)
        assert time.monotonic() - t0 < 4.0
        assert not group_members(pgid)  # the hung browser was killed, not leaked
        env.reset(seed=0)
        env.step(ZERO)
    finally:
        env.close()


def test_python_disconnect_leaves_the_page_idle_and_the_browser_alive():
    env = SimEnv("pick_block")
    try:
        env.reset(seed=0)
        backend = env.backend
        backend.links[0].close()  # Python side drops the link, browser keeps running
        time.sleep(0.5)
        assert backend.alive()
        pids = group_members(backend.browser.pgid)

        def cpu_ticks() -> int:
            total = 0
            for pid in pids:
                try:
                    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                total += int(f[11]) + int(f[12])  # utime + stime
            return total

        before = cpu_ticks()
        time.sleep(1.0)
        # An idle page burns (almost) nothing: no reconnect loop, no render loop.
        assert cpu_ticks() - before < 30
        with pytest.raises(SimCrashedError):
            env.step(ZERO)
    finally:
        env.close()


def test_no_orphan_browser_when_the_python_parent_is_sigkilled(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from vla_lab.sim import SimEnv
        env = SimEnv("reach_target")
        env.reset(seed=0)
        print(env.backend.browser.pgid, flush=True)
        sys.stdin.read()  # wait to be killed
        """
    )
    before = set(chromium_processes())
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), f"child did not start the simulator: {line!r}"
        pgid = int(line)
        assert group_members(pgid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (group_members(pgid) or set(chromium_processes()) - before):
            time.sleep(0.1)
        assert not group_members(pgid), "browser processes survived their SIGKILLed parent"
        assert not set(chromium_processes()) - before
        # The dead owner could not delete its profile; the next browser start sweeps it away.
        stale = list(Path(tempfile.gettempdir()).glob(f"{PROFILE_PREFIX}*"))
        assert stale
        sweep_stale_profiles()
        assert not [d for d in stale if d.exists() and (d / OWNER_FILE).read_text() == str(proc.pid)]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_close_leaves_no_process_behind():
    """No process of the browser survives close, in its process group or out of it (found by the
    profile it inherited, so other browsers on the machine do not count)."""
    env = SimEnv("reach_target")
    env.reset(seed=0)
    pgid = env.backend.browser.pgid
    profile = Path(env.backend.browser.profile)
    assert len(chromium_processes(str(profile))) >= 2  # the browser and its helpers carry the mark
    env.close()
    assert not group_members(pgid) and not profile.exists()
    assert not chromium_processes(str(profile))


def test_server_refuses_foreign_websockets_and_serves_only_its_files():
    import urllib.error
    import urllib.request

    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    server = SimServer()
    try:
        with pytest.raises(InvalidStatus):
            connect(f"ws://127.0.0.1:{server.port}/ws?token=wrong", open_timeout=5)
        with urllib.request.urlopen(f"{server.base_url}/index.html", timeout=5) as r:
            assert b"importmap" in r.read()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{server.base_url}/../../pyproject.toml", timeout=5)
        assert e.value.code == 404
    finally:
        server.close()


def test_page_addresses_carry_a_one_time_boot_code_not_the_token():
    import json
    import urllib.error
    import urllib.request
    from urllib.parse import parse_qs, urlsplit

    server = SimServer()
    try:
        url = server.page_url("index.html", task="pick_block")
        assert server.token not in url
        boot = parse_qs(urlsplit(url).query)["boot"][0]
        session = f"{server.base_url}/session?boot={boot}"
        with urllib.request.urlopen(session, timeout=5) as r:
            assert json.loads(r.read())["ws"] == server.socket_url
        with pytest.raises(urllib.error.HTTPError) as e:  # a second use is refused
            urllib.request.urlopen(session, timeout=5)
        assert e.value.code == 403
        assert server.page_url() != url  # every page load gets its own code
    finally:
        server.close()


@pytest.mark.sim
@needs_browser
@pytest.mark.timeout(120)
def test_the_token_is_not_on_the_browser_command_line():
    env = SimEnv("reach_target", "studio", timeout=15.0)
    try:
        env.reset(seed=0)
        token = env.backend.server.token
        lines = []
        for pid in chromium_processes():
            try:
                lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
            except OSError:
                continue
        assert lines and not any(token in line for line in lines)
    finally:
        env.close()


def test_oversized_messages_close_the_page_connection():
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from vla_lab.sim import server as sim_server

    server = SimServer()
    try:
        with connect(server.socket_url, open_timeout=5, max_size=None) as ws:
            ws.send(b"\0" * (sim_server.MAX_MESSAGE_BYTES + 1))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
    finally:
        server.close()


def _gpu_processes() -> list[int]:
    pids = []
    for pid in chromium_processes():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()  # Chromium rewrites its argv as one title
        except OSError:
            continue
        if b"--type=gpu-process" in cmd:
            pids.append(pid)
    return pids


def _kill_gpu_process(backend) -> None:
    """SIGKILL the GPU process of the backend's first browser: the page lives on, drawing nothing."""
    group = set(group_members(backend.browsers[0].pgid))
    gpu = [p for p in _gpu_processes() if p in group]
    assert gpu, "no GPU process found in the browser's process group"
    for pid in gpu:
        os.kill(pid, signal.SIGKILL)


@pytest.mark.sim
@needs_browser
@pytest.mark.timeout(180)
def test_a_dead_renderer_fails_the_episode_and_the_next_reset_recovers():
    """Killing Chromium's GPU process leaves a live page answering with frozen frames: the
    environment notices, fails the episode naming the renderer, and the next reset renders again."""
    env = SimEnv("reach_target", "studio", timeout=15.0)
    try:
        env.reset(seed=1)
        _kill_gpu_process(env.backend)
        move = np.array([1.0, 0, 0, 0, 0, 0, 1.0], np.float32)
        with pytest.raises(SimCrashedError, match="renderer froze"):
            for _ in range(40):
                env.step(move)
                move[0] = -move[0]  # back and forth: the gripper keeps moving inside the workspace
        first, _ = env.reset(seed=1)  # a fresh browser
        later, *_ = env.step(move)
        assert not np.array_equal(first["agentview"], later["agentview"])
    finally:
        env.close()


@pytest.mark.sim
@needs_browser
@pytest.mark.timeout(180)
def test_a_dead_renderer_under_a_vector_env_fails_its_step_and_reset_envs_recovers():
    """The same check in ``VectorSimEnv``: its renderer killed, the step that notices raises naming
    the renderer; the next ``reset_envs`` starts a fresh browser that renders again."""
    venv = VectorSimEnv(2, "reach_target", "studio", pages=1, timeout=15.0)
    try:
        venv.reset_envs({0: {"seed": 1}, 1: {"seed": 2}})
        _kill_gpu_process(venv.backend)
        move = np.array([1.0, 0, 0, 0, 0, 0, 1.0], np.float32)
        with pytest.raises(SimCrashedError, match="renderer froze"):
            for _ in range(40):
                venv.step_envs({0: move, 1: move})
                move[0] = -move[0]
        assert venv.backend is None  # dropped
        first = venv.reset_envs({0: {"seed": 1}})[0][0]
        later = venv.step_envs({0: move})[0][0]
        assert not np.array_equal(first["agentview"], later["agentview"])
    finally:
        venv.close()
