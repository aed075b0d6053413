"""Collection keeps what it finished: killed (SIGKILL, Ctrl-C) mid-run, `resume=true` continues to
the requested count and the file equals an uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest

from tests.conftest import cli, run
from tests.sim.conftest import needs_browser
from vla_lab.rollout.journal import STATE_FILE, journal_dir

pytestmark = [pytest.mark.sim, needs_browser, pytest.mark.timeout(400)]

ARGS = ["tasks=[reach_target]", "episodes_per_task=6", "sim.image_size=64", "seed=5", "progress=false"]


def _start(out, cwd):
    env = {**os.environ, "VLA_LAB_ROOT": str(cwd)}
    return subprocess.Popen(
        [cli("vla-collect"), *ARGS, f"out={out}"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its browser dies with it when the group is killed
        # a shell that started this run in the background may have set SIGINT to "ignore", which
        # children inherit; the user's Ctrl-C is what this test plays, so restore the default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_kept(out, n: int, proc, timeout: float = 180) -> None:
    state = journal_dir(out) / STATE_FILE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if state.is_file():
            counts = json.loads(state.read_text())["counts"]
            if sum(c["kept"] for c in counts.values()) >= n:
                return
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {n} demos committed in {timeout} s")


def _episodes(path):
    with h5py.File(path) as f:
        data = f["data"]
        return [
            (int(data[d].attrs["seed"]), data[d]["actions"][()], data[d]["obs/agentview_rgb"][()])
            for d in sorted(data, key=lambda k: int(k.split("_")[1]))
        ]


def collect_uninterrupted(tmp, args: list[str]):
    """The episodes of the collection ``args`` run to its end in ``tmp``."""
    res = run([cli("vla-collect"), *args, f"out={tmp / 'ref.hdf5'}"], tmp)
    assert res.returncode == 0, res.stderr
    return _episodes(tmp / "ref.hdf5")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same collection, never interrupted."""
    return collect_uninterrupted(tmp_path_factory.mktemp("ref"), ARGS)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "sigint"])
def test_a_killed_collection_resumes_to_the_same_file(tmp_path, reference, sig):
    out = tmp_path / "demos.hdf5"
    proc = _start(out, tmp_path)
    _wait_for_kept(out, 3, proc)
    if sig == signal.SIGKILL:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "resume=true" in err, err
        # an orderly stop leaves no temp file behind
        assert not [p.name for p in journal_dir(out).iterdir() if p.name.startswith(".")]
    assert not out.exists()  # nothing half-written in place of the output
    kept = json.loads((journal_dir(out) / STATE_FILE).read_text())["parts"]
    assert len(kept) >= 3

    res = run([cli("vla-collect"), *ARGS, f"out={out}", "resume=true"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert not journal_dir(out).exists()
    got = _episodes(out)
    assert len(got) == len(reference) == 6
    for (seed_a, act_a, img_a), (seed_b, act_b, img_b) in zip(got, reference, strict=True):
        assert seed_a == seed_b
        np.testing.assert_array_equal(act_a, act_b)
        np.testing.assert_array_equal(img_a, img_b)


def test_resume_refuses_other_settings_and_a_missing_journal(tmp_path):
    out = tmp_path / "demos.hdf5"
    res = run([cli("vla-collect"), *ARGS, f"out={out}", "resume=true"], tmp_path, 120)
    assert res.returncode == 2 and "no interrupted collection" in res.stderr, res.stderr
    proc = _start(out, tmp_path)
    _wait_for_kept(out, 1, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    res = run(
        [cli("vla-collect"), *ARGS[:-2], "seed=6", "progress=false", f"out={out}", "resume=true"],
        tmp_path,
        120,
    )
    assert res.returncode == 2 and "seed: 5 then, 6 now" in res.stderr, res.stderr
