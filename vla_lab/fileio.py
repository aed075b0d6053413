"""Atomic file writes: everything is written beside its final name and renamed into place, so a
crash never leaves a half-written dataset, statistics file or run record behind."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def temp_file_beside(path: Path, suffix: str = ".tmp") -> Path:
    """A new empty hidden file with a unique name in ``path``'s directory. Created like a plain
    ``open`` (mode 0666 less the umask): ``mkstemp``'s owner-only mode would survive the rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


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
