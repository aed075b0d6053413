"""The vla_lab tabletop simulator: Three.js + Rapier in headless Chromium, driven over a WebSocket."""

from vla_lab.sim.env import SimEnv
from vla_lab.sim.errors import (
    SimActionError,
    SimCrashedError,
    SimError,
    SimProtocolError,
    SimRequestError,
    SimStateError,
    SimTimeoutError,
)
from vla_lab.sim.manifest import list_environments, list_tasks, load_manifest
from vla_lab.sim.vector import VectorSimEnv

#: gymnasium id: ``gymnasium.make("vla_lab/Tabletop-v0", task="stack_blocks", environment="workshop")``
GYM_ID = "vla_lab/Tabletop-v0"


def _register_with_gymnasium() -> None:
    import gymnasium

    if GYM_ID not in gymnasium.registry:
        gymnasium.register(id=GYM_ID, entry_point="vla_lab.sim.env:SimEnv")


_register_with_gymnasium()

__all__ = [
    "GYM_ID",
    "SimEnv",
    "VectorSimEnv",
    "SimError",
    "SimTimeoutError",
    "SimCrashedError",
    "SimProtocolError",
    "SimRequestError",
    "SimStateError",
    "SimActionError",
    "list_tasks",
    "list_environments",
    "load_manifest",
]
