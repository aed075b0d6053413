"""`vla-sim view` in real headless Chromium: the page shows the scene, keys move the gripper, kept
episodes land in HDF5; spectator mode shows episodes driven from Python."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.sim.cdp import Cdp
from tests.sim.conftest import needs_browser
from vla_lab.sim import SimEnv
from vla_lab.sim.browser import Browser

pytestmark = [pytest.mark.sim, needs_browser, pytest.mark.timeout(180)]

CDP_FLAGS = ("--remote-debugging-port=0", "--window-size=1100,640")


def read_line(proc: subprocess.Popen, prefix: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
        if not line and proc.poll() is not None:
            raise RuntimeError(f"vla-sim exited: {proc.stderr.read()}")
    raise TimeoutError(f"no line starting with {prefix!r}")


def scene_pixels(shot: np.ndarray) -> np.ndarray:
    # The screen canvas sits at the top-left (16 px margin, 560 px square).
    return shot[16:576, 16:576].astype(int)


def test_teleop_page_shows_scene_moves_gripper_and_records(tmp_path):
    out = tmp_path / "teleop.hdf5"
    cmd = [
        str(Path(sys.executable).with_name("vla-sim")),
        "view",
        "--task",
        "pick_block",
        "--record",
        str(out),
        "--duration",
        "120",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    browser = None
    try:
        url = read_line(proc, "open ")
        assert url.startswith("http://127.0.0.1:")
        browser = Browser([url], extra_flags=CDP_FLAGS)
        cdp = Cdp(browser.profile)
        cdp.wait_for("document.getElementById('status').textContent.includes('not recording')")
        before = scene_pixels(cdp.screenshot())
        assert len(np.unique(before.reshape(-1, 3), axis=0)) > 100, "the scene is not drawn"
        assert before.mean() > 40
        cdp.key("Enter")  # start recording
        cdp.wait_for("document.getElementById('status').textContent.includes('REC')")
        cdp.key("KeyW", hold=0.6)  # forward (+x)
        cdp.key("KeyR", hold=0.3)  # up
        time.sleep(0.2)
        after = scene_pixels(cdp.screenshot())
        assert np.abs(after - before).mean() > 0.5, "the keypresses did not change the view"
        cdp.key("KeyK")  # keep
        saved = read_line(proc, "saved ")
        assert saved.startswith("demo_0")
        cdp.close()
    finally:
        if browser is not None:
            browser.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert proc.returncode == 0
    with h5py.File(out) as f:
        demo = f["data/demo_0"]
        pos = demo["obs/ee_pos"][:]
        assert pos[-1, 0] - pos[0, 0] > 0.04  # W moved the gripper forward by several 2 cm steps
        assert pos[-1, 2] > pos[0, 2]
        assert demo["obs/agentview_rgb"].shape[1:] == (224, 224, 3)
        assert demo.attrs["task"] == "pick_block" and bool(demo.attrs["success"])
    val = subprocess.run(
        [str(Path(sys.executable).with_name("vla-data")), "validate", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert val.returncode == 0, val.stdout + val.stderr


def test_spectator_mode_shows_python_driven_episode():
    browsers: list[Browser] = []

    def open_page(url: str) -> None:
        browsers.append(Browser([url], extra_flags=CDP_FLAGS))

    env = SimEnv("place_in_container", viewer=True, on_url=open_page, startup_timeout=30)
    try:
        obs, info = env.reset(seed=4)
        for _ in range(15):
            obs, *_, info = env.step(info["expert_action"])
        cdp = Cdp(browsers[0].profile)
        text = cdp.wait_for("document.getElementById('status').textContent")
        assert "step 15" in text
        assert info["instruction"] in cdp.evaluate("document.getElementById('instruction').textContent")
        shot = scene_pixels(cdp.screenshot())
        assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 100
        cdp.close()
    finally:
        env.close()
        for b in browsers:
            b.close()
    assert not any(b.alive() for b in browsers) and os.path.exists("/proc")


def test_vla_sim_view_spectate_runs_the_expert_in_the_opened_page():
    cmd = [
        str(Path(sys.executable).with_name("vla-sim")),
        "view",
        "--spectate",
        "--task",
        "reach_target",
        "--episodes",
        "2",
        "--connect-timeout",
        "60",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    browser = None
    try:
        url = read_line(proc, "open ")
        assert "view.html" in url and "mode=spectate" in url
        browser = Browser([url])
        assert read_line(proc, "episode 0: success=").startswith("True")
        assert read_line(proc, "episode 1: success=").startswith("True")
        assert proc.wait(timeout=30) == 0
    finally:
        if browser is not None:
            browser.close()
        if proc.poll() is None:
            proc.kill()
