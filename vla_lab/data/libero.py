"""LIBERO suites: where their files live and the conventions to cross in and out of them."""

from __future__ import annotations

from pathlib import Path

from vla_lab.data.errors import DataError, EmptyDatasetError
from vla_lab.data.reader import framework_to_libero_gripper, libero_to_framework_gripper

#: Suite -> (tasks, evaluation max steps after the settle steps), as the LIBERO benchmark defines them.
SUITES: dict[str, tuple[int, int]] = {
    "libero_spatial": (10, 220),
    "libero_object": (10, 280),
    "libero_goal": (10, 300),
    "libero_10": (10, 520),
    "libero_90": (90, 400),
}
VARIANTS = ("auto", "raw", "no_noops")

__all__ = ["SUITES", "suite_files", "libero_to_framework_gripper", "to_libero_gripper"]


def to_libero_gripper(g):
    """Policy output (1 open / 0 closed) -> LIBERO's command (-1 open / +1 close)."""
    return framework_to_libero_gripper(g)


def suite_files(root: str | Path, suite: str, variant: str = "auto") -> list[Path]:
    """The task files of ``suite`` under ``root``: ``<root>/<suite>_no_noops/`` or ``<root>/<suite>/``.

    ``root`` may also be the suite folder itself.
    """
    if suite not in SUITES:
        raise DataError(f"unknown LIBERO suite {suite!r}; valid suites: {', '.join(SUITES)}")
    if variant not in VARIANTS:
        raise DataError(f"unknown LIBERO variant {variant!r}; valid: {', '.join(VARIANTS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError("LIBERO root is not a directory", file=str(root))
    candidates = {"no_noops": [root / f"{suite}_no_noops"], "raw": [root / suite]}
    order = {"auto": ["no_noops", "raw"], "raw": ["raw"], "no_noops": ["no_noops"]}[variant]
    if root.name in (suite, f"{suite}_no_noops"):
        order, candidates = ["self"], {"self": [root]}
    for kind in order:
        for folder in candidates[kind]:
            files = sorted(folder.glob("*.hdf5")) if folder.is_dir() else []
            if files:
                return files
    looked = [str(p) for k in order for p in candidates[k]]
    raise EmptyDatasetError(f"no {suite} task files (*.hdf5) found; looked in {looked}", file=str(root))
