"""Live view and keyboard teleoperation in a real browser (``vla-sim view``).

Teleoperation: the viewer page runs the simulator itself at the control rate, driven by the keyboard,
and sends each finished episode (frames, actions, proprio) here; this module checks the message and
hands each episode the operator keeps to a sink (the recorder of :mod:`vla_lab.rollout.teleop`
appends it to an HDF5 file at once). Spectating: :class:`vla_lab.sim.SimEnv` with ``viewer=True``
drives the page from Python.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection

from vla_lab.sim import protocol
from vla_lab.sim.errors import SimProtocolError

PROPRIO = {"ee_pos": 3, "ee_ori": 3, "gripper_width": 1}


def episode_arrays(header: dict[str, Any], payload: memoryview) -> dict[str, Any]:
    """Validates a ``teleop_episode`` message and returns the arrays of one demonstration."""
    actions = np.asarray(header.get("actions"), dtype=np.float32)
    if actions.ndim != 2 or actions.shape[1] != 7 or len(actions) == 0:
        raise SimProtocolError(f"actions must be a non-empty (T, 7) list, got shape {actions.shape}")
    t = len(actions)
    images = header.get("images")
    if not isinstance(images, list) or len(images) != 1:
        raise SimProtocolError("teleop_episode must carry exactly one image stream (agentview)")
    im = images[0]
    h, w, n = int(im["height"]), int(im["width"]), int(im["frames"])
    if n != t or int(im["nbytes"]) != t * h * w * 4 or int(im["offset"]) + int(im["nbytes"]) > len(payload):
        raise SimProtocolError(f"image stream of {n} frames ({im['nbytes']} bytes) does not match {t} steps")
    rgba = np.frombuffer(payload, np.uint8, count=t * h * w * 4, offset=int(im["offset"])).reshape(t, h, w, 4)
    proprio = {}
    for key, d in PROPRIO.items():
        arr = np.asarray(header.get("proprio", {}).get(key), dtype=np.float32)
        if arr.shape != (t, d):
            raise SimProtocolError(f"proprio.{key} must have shape ({t}, {d}), got {arr.shape}")
        proprio[key] = arr
    rewards = np.asarray(header.get("rewards"), dtype=np.float32)
    if rewards.shape != (t,):
        raise SimProtocolError(f"rewards must have {t} values, got shape {rewards.shape}")
    if not isinstance(header.get("success"), bool) or not isinstance(header.get("instruction"), str):
        raise SimProtocolError("teleop_episode needs a boolean 'success' and a string 'instruction'")
    return {
        "actions": actions,
        "images": {str(im["name"]): np.ascontiguousarray(rgba[:, ::-1, :, :3])},
        "proprio": proprio,
        "rewards": rewards,
        "dones": np.arange(t) == t - 1,
        "instruction": header["instruction"],
        "success": header["success"],
        "task": str(header.get("task", "")),
        "environment": str(header.get("environment", "")),
        "seed": int(header.get("seed", -1)),
    }


class EpisodeSink(Protocol):
    """Where kept teleoperation episodes go (``vla_lab.rollout.teleop.TeleopRecorder`` writes them
    to HDF5): ``save`` stores one and returns its key, ``path`` names the destination."""

    path: Path | None

    def save(self, ep: dict[str, Any]) -> str: ...


def make_teleop_handler(recorder: EpisodeSink, on_event=None):
    """A WebSocket handler for :class:`vla_lab.sim.server.SimServer` serving teleoperation pages."""

    def handler(conn: ServerConnection) -> None:
        try:
            hello, _ = protocol.decode(conn.recv(timeout=30), protocol.TELEOP_TYPES)
            if hello.get("type") != "hello" or hello.get("mode") != "teleop":
                raise SimProtocolError("the teleoperation page must say hello with mode 'teleop'")
            if on_event:
                on_event("connected", hello)
            while True:
                data = conn.recv()
                try:
                    header, payload = protocol.decode(data, protocol.TELEOP_TYPES)
                    if header["type"] != "teleop_episode":
                        raise SimProtocolError(
                            f"unexpected message '{header['type']}' from the teleoperation page"
                        )
                    ep = episode_arrays(header, payload)
                    key = recorder.save(ep)
                    conn.send(
                        protocol.encode(
                            {
                                "type": "saved",
                                "demo": key,
                                "path": str(recorder.path),
                                "steps": len(ep["actions"]),
                            }
                        )
                    )
                    if on_event:
                        on_event(
                            "saved", {"demo": key, "steps": len(ep["actions"]), "success": ep["success"]}
                        )
                except (SimProtocolError, ValueError, KeyError, TypeError) as e:
                    conn.send(protocol.encode({"type": "error", "code": "bad_request", "message": str(e)}))
        except (ConnectionClosed, TimeoutError, SimProtocolError) as e:
            if on_event:
                on_event("disconnected", {"reason": str(e)})

    return handler
