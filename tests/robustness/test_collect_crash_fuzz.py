"""`vla-collect` killed (SIGKILL to its process group, browser included) at seeded random moments,
several times in a row, each time resumed, then resumed to the end: the journal left behind must
list only whole parts, nothing may sit half-written under the output's name, and the final file must
equal an uninterrupted run's. tests/rollout/test_collect_crash.py kills once at a fixed point (in
`make test`); this variant, in `make test-full`, draws the moments, in a collection of 12 demos."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from tests.conftest import cli, run
from tests.robustness.fuzz import FuzzRun, seed
from tests.rollout.test_collect_crash import ARGS, _episodes, _wait_for_kept, collect_uninterrupted
from tests.sim.conftest import needs_browser
from vla_lab.data.validate import validate_file
from vla_lab.rollout.journal import STATE_FILE, journal_dir

pytestmark = [pytest.mark.sim, needs_browser, pytest.mark.slow, pytest.mark.timeout(1200)]

KILLS = 6
EPISODES = 12
#: test_collect_crash's collection, twice as long, so that several kills fit in it
LONG_ARGS = [a if not a.startswith("episodes_per_task=") else f"episodes_per_task={EPISODES}" for a in ARGS]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same collection, never interrupted."""
    return collect_uninterrupted(tmp_path_factory.mktemp("ref"), LONG_ARGS)


def _journal_problem(out) -> str | None:
    """Why the journal a kill left is not safe to resume from, or None."""
    if out.exists():
        return f"{out.name} exists although the collection never finished"
    state = json.loads((journal_dir(out) / STATE_FILE).read_text())
    for part in state["parts"]:
        problems = validate_file(journal_dir(out) / part)
        if problems:
            return f"listed part {part} is damaged: {problems[0]}"
    return None


def _collect(out, cwd, resume: bool) -> subprocess.Popen:
    """vla-collect in its own process group (its browser dies with it when the group is killed)."""
    return subprocess.Popen(
        [cli("vla-collect"), *LONG_ARGS, f"out={out}", *(["resume=true"] if resume else [])],
        cwd=cwd,
        env={**os.environ, "VLA_LAB_ROOT": str(cwd)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _kill_at_random(out, tmp_path, rng, kept_before: int, resume: bool) -> tuple[str, str, str]:
    proc = _collect(out, tmp_path, resume)
    target = min(kept_before + int(rng.integers(1, 3)), EPISODES - 1)
    delay = float(rng.uniform(0, 0.6))  # after the commit: mid-episode, or mid-commit of the next
    _wait_for_kept(out, target, proc)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    problem = _journal_problem(out)
    return (
        ("data_lost" if problem else "accepted"),
        f"SIGKILL {delay:.2f} s after demo {target}",
        problem or "",
    )


def test_a_collection_killed_at_random_moments_resumes_to_the_same_file(tmp_path, reference):
    fuzz = FuzzRun("collect-sigkill", "long", seed(20260307))
    rng = np.random.default_rng(fuzz.seed)
    out = tmp_path / "demos.hdf5"
    kept = 0
    for kill in range(KILLS):
        outcome, what, detail = _kill_at_random(out, tmp_path, rng, kept, resume=kill > 0)
        fuzz.add(outcome, what, detail)
        state = json.loads((journal_dir(out) / STATE_FILE).read_text())
        kept = sum(c["kept"] for c in state["counts"].values())
        if kept >= EPISODES - 1:
            break
    res = run([cli("vla-collect"), *LONG_ARGS, f"out={out}", "resume=true"], tmp_path)
    same = res.returncode == 0 and _same_episodes(_episodes(out), reference)
    fuzz.add("accepted" if same else "data_lost", "resume to the end", "" if same else res.stderr[-300:])
    fuzz.finish(min_tried=2)


def _same_episodes(got, want) -> bool:
    return len(got) == len(want) and all(
        a[0] == b[0] and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
        for a, b in zip(got, want, strict=True)
    )
