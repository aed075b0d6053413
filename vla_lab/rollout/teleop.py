"""Keyboard teleoperation as a collection: episodes a person kept in the viewer page
(``vla-sim view --record FILE``, protocol side in :mod:`vla_lab.sim.viewer`) appended to an HDF5
file with the project's writer, one at a time, so every saved demo is on disk at once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from vla_lab.data.writer import DemoWriter
from vla_lab.sim.control import action_space
from vla_lab.sim.env import ENV_NAME, PROPRIO_KEYS
from vla_lab.sim.errors import SimProtocolError
from vla_lab.sim.manifest import load_manifest


class TeleopRecorder:
    """Appends kept teleoperation episodes to ``path`` (created on the first one)."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self.saved: list[str] = []
        self._lock = threading.Lock()

    def save(self, ep: dict[str, Any]) -> str:
        if self.path is None:
            raise SimProtocolError("this viewer was started without --record; nothing is saved")
        man = load_manifest()
        with self._lock:
            with DemoWriter(
                self.path,
                mode="a" if self.path.exists() else "w",
                env_name=ENV_NAME,
                robot=man["robot"]["name"],
                action_space=action_space(),
                cameras=list(ep["images"]),
                proprio_keys=PROPRIO_KEYS,
                env_meta={
                    "simulator": "vla_lab three.js tabletop",
                    "sim_version": man["sim_version"],
                    "source": "keyboard teleoperation",
                },
            ) as w:
                key = w.add_episode(meta={"collector": "teleop"}, **ep)
            self.saved.append(key)
        return key
