"""The package's layering (README, "Architecture"): each layer imports only the layers below it.

Every ``import`` counts, at module level and inside functions alike (a deferred import is still a
dependency), and so does ``importlib.import_module("vla_lab...")`` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vla_lab"

#: rank of each top-level part of vla_lab; a module may import a part of strictly lower rank (or its
#: own part). Equal ranks are siblings that must not know each other (sim / policies,
#: training / serve, workflows / bench).
RANK = {
    "__init__": 0,
    "config": 0,
    "fileio": 0,
    "seeding": 0,
    "data": 1,
    "sim": 2,
    "policies": 2,
    "eval": 3,
    "rollout": 4,
    "training": 5,
    "serve": 5,
    "workflows": 6,
    "bench": 6,
    "cli": 7,
}
#: the base utilities every layer shares, and which must import nothing of the rest
BASE = ("config", "fileio", "seeding")

#: files allowed past the length limit, each with the reason it is one unit
LONG_FILES: dict[str, str] = {}
MAX_LINES = 500


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "node_modules" not in p.parts)


def part_of(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def dotted(path: Path, package: Path = PACKAGE) -> list[str]:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported_parts(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, top-level part of vla_lab) for every vla_lab import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = dotted(path, root) if path.name == "__init__.py" else dotted(path, root)[:-1]
    found: list[tuple[int, str]] = []

    def add(line: int, name: str) -> None:
        bits = name.split(".")
        if bits[0] == "vla_lab" and len(bits) > 1:
            found.append((line, bits[1]))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "vla_lab":  # `from vla_lab import x`: x is the part
                for alias in node.names:
                    add(node.lineno, f"vla_lab.{alias.name}")
            else:
                add(node.lineno, target)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            add(node.lineno, node.args[0].value)
    return found


def test_every_part_has_a_rank():
    parts = {part_of(p) for p in modules()}
    unranked = sorted(parts - set(RANK))
    assert not unranked, f"give these parts of vla_lab a layer in RANK: {unranked}"


def violations(path: Path, root: Path = PACKAGE) -> list[str]:
    here = part_of(path, root)
    if here not in RANK:
        return [f"vla_lab.{here} has no layer in RANK"]
    bad = []
    for line, there in imported_parts(path, root):
        if there == here:
            continue
        if there not in RANK:
            bad.append(f"line {line}: vla_lab.{there} (not a part of vla_lab)")
        elif here in BASE:
            if there not in BASE:
                bad.append(f"line {line}: vla_lab.{there} (the base utilities import nothing above them)")
        elif RANK[there] >= RANK[here]:
            bad.append(f"line {line}: vla_lab.{there} (layer {RANK[there]} >= {here}'s {RANK[here]})")
    return bad


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_lower_layers(path):
    bad = violations(path)
    assert not bad, f"{path.relative_to(PACKAGE.parent)} imports upward or sideways:\n" + "\n".join(bad)


def test_the_checker_notices_violations(tmp_path):
    """A sim module importing the policies inside a function, a relative import into cli, and
    import_module of training are all caught; an import of data is not."""
    root = tmp_path / "vla_lab"
    (root / "sim").mkdir(parents=True)
    module = root / "sim" / "bad.py"
    module.write_text(
        "import importlib\n"
        "from vla_lab.data import writer\n"
        "def f():\n"
        "    from vla_lab.policies.factory import load_policy\n"
        "    from ..cli import train\n"
        "    return importlib.import_module('vla_lab.training.train')\n"
    )
    assert imported_parts(module, root) == [(2, "data"), (4, "policies"), (5, "cli"), (6, "training")]
    assert [v.split(":")[0] for v in violations(module, root)] == ["line 4", "line 5", "line 6"]


def test_files_stay_short():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
        and str(p.relative_to(PACKAGE)) not in LONG_FILES
    }
    assert not long, f"split these files by job, or state in LONG_FILES why each is one unit: {long}"
