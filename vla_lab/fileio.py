"""Atomic file writes: everything is written beside its final name and renamed into place, so a
crash never leaves a half-written dataset, statistics file or run record behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def temp_file_beside(path: Path, suffix: str = ".tmp") -> Path:
    """An empty hidden file in ``path``'s directory, with the permissions a plain ``open`` would
    give (``mkstemp`` alone makes it owner-only, and the rename would carry that over)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _umask_mode())
    return Path(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = temp_file_beside(Path(path))
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
