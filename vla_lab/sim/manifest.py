"""The simulator's manifest: tasks, environments, robot constants and randomization knobs.

The registries live in the JavaScript simulator (``web/src``); ``web/tools/manifest.mjs`` prints them as
JSON. ``web/manifest.json`` is that output, regenerated with Node whenever a registry source is newer,
so Python never keeps its own copy of task names or instructions.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from vla_lab.fileio import atomic_write_text
from vla_lab.sim.errors import SimError

WEB_ROOT = Path(__file__).resolve().parent / "web"
MANIFEST_PATH = WEB_ROOT / "manifest.json"
_GENERATOR = WEB_ROOT / "tools" / "manifest.mjs"


def generate_manifest() -> dict[str, Any]:
    """Runs the Node generator and returns its manifest (does not write it)."""
    node = shutil.which("node")
    if node is None:
        raise SimError("node is needed to read the simulator's task registry; install Node.js (>= 18)")
    proc = subprocess.run([node, str(_GENERATOR)], capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise SimError(f"manifest generator failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def _stale() -> bool:
    if not MANIFEST_PATH.exists():
        return True
    mtime = MANIFEST_PATH.stat().st_mtime
    sources = [*(WEB_ROOT / "src").glob("*.js"), _GENERATOR]
    return any(p.stat().st_mtime > mtime for p in sources)


@functools.cache
def load_manifest() -> dict[str, Any]:
    if _stale() and shutil.which("node") is not None:
        data = generate_manifest()
        # Written under a unique temporary name: several processes may regenerate at once.
        try:
            atomic_write_text(MANIFEST_PATH, json.dumps(data, indent=2) + "\n")
        except OSError:
            return data  # a read-only install: the in-memory manifest is just as good
        return data
    if not MANIFEST_PATH.exists():
        raise SimError(f"{MANIFEST_PATH} is missing and node is not available to generate it")
    return json.loads(MANIFEST_PATH.read_text())


def list_tasks() -> list[dict[str, Any]]:
    """Every task: name, description, max_steps, instruction_templates, success_criterion, ..."""
    return [dict(t) for t in load_manifest()["tasks"]]


def list_environments() -> list[dict[str, Any]]:
    """Every environment (scene theme): name, description, camera pose."""
    return [dict(e) for e in load_manifest()["environments"]]


def task_names() -> list[str]:
    return [t["name"] for t in load_manifest()["tasks"]]


def environment_names() -> list[str]:
    return [e["name"] for e in load_manifest()["environments"]]


def robot() -> dict[str, Any]:
    return dict(load_manifest()["robot"])


def check_task(name: str) -> dict[str, Any]:
    for t in load_manifest()["tasks"]:
        if t["name"] == name:
            return t
    raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(task_names())}")


def check_environment(name: str) -> dict[str, Any]:
    for e in load_manifest()["environments"]:
        if e["name"] == name:
            return e
    raise ValueError(f"unknown environment {name!r}; valid environments: {', '.join(environment_names())}")


def check_randomization(knobs: dict[str, Any] | None) -> dict[str, Any]:
    """Validates knob names, types and ranges against the manifest (the page checks them again)."""
    spec = load_manifest()["randomization"]
    out: dict[str, Any] = {}
    for k, v in (knobs or {}).items():
        if k not in spec:
            raise ValueError(f"unknown randomization knob {k!r}; valid: {', '.join(spec)}")
        s = spec[k]
        if s["type"] == "boolean":
            if not isinstance(v, bool):
                raise ValueError(f"randomization.{k} must be a boolean, got {v!r}")
        else:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError(f"randomization.{k} must be a number, got {v!r}")
            if s["type"] == "integer" and int(v) != v:
                raise ValueError(f"randomization.{k} must be an integer, got {v!r}")
            if not s["min"] <= v <= s["max"]:
                raise ValueError(f"randomization.{k}={v} is outside [{s['min']}, {s['max']}]")
            v = int(v) if s["type"] == "integer" else float(v)
        out[k] = v
    return out
