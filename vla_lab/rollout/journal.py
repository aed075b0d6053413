"""What a collection has finished, kept on disk as it goes, so that no crash loses it.

While ``vla-collect`` runs, every kept episode is committed at once as a one-episode part file
(written beside its name and renamed into place) in a journal directory next to the output
(``.<out name>.collecting/``), and the per-task counts (attempts, kept, successes, steps) are
rewritten atomically after every episode. A collection killed at any moment (SIGKILL, Ctrl-C, a
dead renderer) leaves finished episodes and the counts that say where to go on; ``resume=true``
continues from them with the very episode seeds an uninterrupted run would have used, and when
every task is done the parts are merged into the output (atomically) and the journal removed.

A part written just before a crash that the counts do not list yet is dropped on resume: its
episode runs again with the same seed, so the data is what an uninterrupted run writes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py

from vla_lab.data import format as fmt
from vla_lab.fileio import atomic_write_text

STATE_FILE = "state.json"


class JournalError(ValueError):
    """The journal belongs to another collection, or there is none to resume."""


def journal_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.collecting"


class CollectJournal:
    def __init__(self, out: Path, params: dict[str, Any], tasks: list[str], *, resume: bool):
        """Opens the journal of ``out``: continues it with ``resume`` (its ``params`` must match),
        otherwise starts afresh (a stale journal of an abandoned run is discarded)."""
        self.out, self.dir, self.params = out, journal_dir(out), params
        if resume:
            self.counts, self.parts = self._load(tasks)
        else:
            if self.dir.exists():
                shutil.rmtree(self.dir)
            self.counts = {t: {"kept": 0, "attempts": 0, "successes": 0, "steps": 0} for t in tasks}
            self.parts: list[str] = []
            self.dir.mkdir(parents=True)
            self._save()

    def _load(self, tasks: list[str]) -> tuple[dict[str, dict[str, int]], list[str]]:
        state_file = self.dir / STATE_FILE
        if not state_file.is_file():
            raise JournalError(
                f"resume=true: no interrupted collection of {self.out} to resume ({state_file})"
            )
        state = json.loads(state_file.read_text())
        differ = sorted(
            k for k in set(self.params) | set(state["params"]) if self.params.get(k) != state["params"].get(k)
        )
        if differ:
            detail = ", ".join(
                f"{k}: {state['params'].get(k)!r} then, {self.params.get(k)!r} now" for k in differ
            )
            raise JournalError(f"resume=true: {self.out} was being collected with other settings ({detail})")
        listed = set(state["parts"])
        for leftover in self.dir.iterdir():  # temp files and parts the counts never recorded
            if leftover.name != STATE_FILE and leftover.name not in listed:
                leftover.unlink()
        counts = {
            t: state["counts"].get(t, {"kept": 0, "attempts": 0, "successes": 0, "steps": 0}) for t in tasks
        }
        return counts, list(state["parts"])

    def _save(self) -> None:
        state = {"params": self.params, "counts": self.counts, "parts": self.parts}
        atomic_write_text(self.dir / STATE_FILE, json.dumps(state, indent=1))

    def next_part(self) -> Path:
        return self.dir / f"part-{len(self.parts):06d}.hdf5"

    def record(self, task: str, *, steps: int, success: bool, part: Path | None) -> None:
        """One finished attempt of ``task``; ``part`` is the committed file of a kept episode."""
        c = self.counts[task]
        c["attempts"] += 1
        c["successes"] += int(success)
        c["steps"] += steps
        if part is not None:
            c["kept"] += 1
            self.parts.append(part.name)
        self._save()

    def episodes(self) -> Iterator[h5py.Group]:
        """The kept episodes in the order they were collected (each part holds one)."""
        for name in self.parts:
            with h5py.File(self.dir / name, "r") as f:
                yield f[fmt.DATA_GROUP][fmt.demo_key(0)]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
