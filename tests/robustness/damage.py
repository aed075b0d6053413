"""Seeded damage to files, shared by the checkpoint and demonstration-data fuzzers: bit flips,
truncation, emptied or deleted files, overwritten blocks, junk appended."""

from __future__ import annotations

from pathlib import Path

#: values of other types and sizes, for JSON fields and HDF5 attributes
WEIRD = [None, True, -1, 0, 10**30, 1.5, "", "x" * 500, [], [1, "a"], {}, {"a": None}]


def _flip_bits(rng, path: Path) -> str:
    data = bytearray(path.read_bytes())
    if not data:
        return "bit flip in an empty file (no change)"
    n = int(rng.integers(1, 9))
    spots = sorted(int(p) for p in rng.integers(0, len(data), n))
    for pos in spots:
        data[pos] ^= 1 << int(rng.integers(8))
    path.write_bytes(bytes(data))
    return f"{n} bit flips at {spots[:3]}"


def truncate(rng, path: Path) -> str:
    size = path.stat().st_size
    cut = int(rng.integers(0, max(size, 1)))
    with open(path, "r+b") as fh:
        fh.truncate(cut)
    return f"truncated to {cut} of {size} bytes"


def _zero_length(rng, path: Path) -> str:
    path.write_bytes(b"")
    return "emptied"


def _delete(rng, path: Path) -> str:
    path.unlink()
    return "deleted"


def _overwrite_block(rng, path: Path) -> str:
    data = bytearray(path.read_bytes())
    n = int(rng.integers(1, 4096))
    start = int(rng.integers(0, max(len(data) - 1, 1)))
    fill = rng.bytes(n) if rng.random() < 0.5 else b"\0" * n
    data[start : start + n] = fill[: len(data) - start]
    path.write_bytes(bytes(data))
    return f"{min(n, len(data) - start)} bytes at {start} overwritten"


def _append(rng, path: Path) -> str:
    with open(path, "ab") as fh:
        fh.write(rng.bytes(int(rng.integers(1, 2000))))
    return "junk appended"


#: what happens to files: each takes (rng, path) and says what it did
FILE_DAMAGE = [_flip_bits, _flip_bits, truncate, _zero_length, _delete, _overwrite_block, _append]
