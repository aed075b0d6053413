"""Everything the data consumers read from a demonstration file (`vla-data validate`, `vla-data stats`,
and training's reads through DemoSource), run in a worker process: the HDF5 library can loop forever
on a damaged file while holding the GIL, which no signal or thread in this process could interrupt.
A read that does not return within the bound is killed and reported, with the Python stack the
worker was in."""

from __future__ import annotations

import contextlib
import faulthandler
import io
import multiprocessing
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla_lab.cli.data import main as vla_data
from vla_lab.data.errors import DataError
from vla_lab.data.reader import DemoSource


@dataclass
class DataView:
    """(exit status, output) of validate and of stats, and ("ok", contents) or ("error", message)
    of reading the file as training does."""

    validate: tuple[int, str]
    stats: tuple[int, str]
    load: tuple[str, object]


def vla_data_cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = vla_data(list(argv))
    return rc, out.getvalue() + err.getvalue()


def _load_everything(path: Path) -> dict:
    """What training reads: header, demo list, actions, proprio and every frame (DemoDataset's calls)."""
    src = DemoSource(path)
    header = (src.action_space.to_json(), src.cameras, src.proprio_keys, src.flip_images)
    demos = {}
    with src.open() as f:
        for ep in src.episodes:
            frames = [src.read_frame(f, ep.demo, cam, t) for cam in src.cameras for t in range(ep.length)]
            demos[ep.demo] = (
                (ep.length, ep.instruction, ep.success, ep.task, ep.environment),
                src.read_actions(f, ep.demo),
                src.read_proprio(f, ep.demo, src.proprio_keys, steps=ep.length),
                np.stack(frames) if frames else np.zeros(0),
            )
    return {"header": header, "demos": demos}


def read_demos(path: Path) -> DataView:
    validate = vla_data_cli("validate", str(path))
    stats = vla_data_cli("stats", "--json", str(path))
    try:
        load: tuple[str, object] = ("ok", _load_everything(path))
    except DataError as e:
        load = ("error", str(e))
    return DataView(validate, stats, load)


def _serve(conn, stack_file: str, bound: float) -> None:
    """The worker: reads each path it is sent; the stack goes to ``stack_file`` if one never ends."""
    with open(stack_file, "w") as stacks:
        while (path := conn.recv()) is not None:
            faulthandler.dump_traceback_later(bound * 0.8, file=stacks)
            try:
                conn.send(("view", read_demos(Path(path))))
            except Exception as e:  # reported to the fuzzer, which counts it as a crash
                conn.send(("crash", f"{type(e).__name__}: {e}"[:300]))
            faulthandler.cancel_dump_traceback_later()


class IsolatedReader:
    """``read(path)`` in a spawned worker: ("view", DataView), ("crash", message) or
    ("hang", the worker's stack)."""

    def __init__(self, bound: float = 20.0):
        self.bound = bound
        self.ctx = multiprocessing.get_context("spawn")  # no fork of a process with live threads
        fd, self.stack_file = tempfile.mkstemp(suffix=".stack")
        os.close(fd)  # the worker opens it for its own stack dumps
        self._start()

    def _start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_serve, args=(child, self.stack_file, self.bound), daemon=True)
        self.proc.start()

    def read(self, path: Path) -> tuple[str, object]:
        self.conn.send(str(path))
        if self.conn.poll(self.bound):
            return self.conn.recv()
        self.proc.kill()
        self.proc.join()
        stack = Path(self.stack_file).read_text()
        self._start()
        return "hang", stack

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(10)
        Path(self.stack_file).unlink(missing_ok=True)
