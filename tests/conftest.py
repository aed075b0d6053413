"""Shared fixtures: data made on the spot in tmp dirs (our format and LIBERO's exact layouts)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vla_lab.config.compose import compose_run
from vla_lab.data.synthetic import make_demo_file, make_libero_suite
from vla_lab.sim.browser import DEFAULT_CHROMIUM
from vla_lab.sim.manifest import WEB_ROOT


@pytest.fixture(scope="session", autouse=True)
def _hydra_schemas():
    """Every console script's typed schemas in Hydra's ConfigStore: tests compose any root config."""
    from vla_lab.cli.hydra_app import register_all

    register_all()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Statistics caches fall back to a home directory; keep tests out of the real one.
    monkeypatch.setenv("VLA_LAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def demo_file(tmp_path):
    return make_demo_file(tmp_path / "demos.hdf5", num_demos=6, length=(12, 20), image_size=32, seed=1)


@pytest.fixture
def libero_root(tmp_path):
    root = tmp_path / "libero"
    make_libero_suite(root, "libero_spatial", variant="raw", num_tasks=2, num_demos=2, image_size=32)
    make_libero_suite(root, "libero_10", variant="no_noops", num_tasks=2, num_demos=2, image_size=16)
    return root


def train_cfg(tmp_path, data_file, *overrides, run_name="run"):
    """The real ``train`` config on ``data_file`` with every output under ``tmp_path``; (cfg, run dir)."""
    out = tmp_path / "outputs" / "train" / run_name
    cfg = compose_run(
        "train",
        [
            f"data.sources=[{{path: {data_file}}}]",
            f"paths.root_dir={tmp_path}",
            f"run_name={run_name}",
            *overrides,
        ],
        out,
    )
    return cfg, out


def run(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "VLA_LAB_ROOT": str(cwd)}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def cli(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


HAVE_CHROMIUM = Path(os.environ.get("VLA_LAB_CHROMIUM") or DEFAULT_CHROMIUM).is_file()
HAVE_MODULES = (WEB_ROOT / "node_modules" / "three").is_dir() and (
    WEB_ROOT / "node_modules" / "@dimforge"
).is_dir()
HAVE_NODE = shutil.which("node") is not None

BROWSER_MISSING = "headless Chromium or the simulator's npm packages are missing; run `make sim-deps`"


@pytest.fixture
def _browser_required():
    # In CI a missing browser is a broken set-up, not a reason to pass without the simulator.
    if not (HAVE_CHROMIUM and HAVE_MODULES):
        if os.environ.get("CI") == "true":
            pytest.fail(BROWSER_MISSING + " (CI=true: a failure, not a skip)")
        pytest.skip(BROWSER_MISSING)


needs_browser = pytest.mark.usefixtures("_browser_required")
