"""The figures table of docs/reliability.md from the fuzzers' JSON reports.

    VLA_ROBUSTNESS_REPORT=outputs/robustness .venv/bin/python -m pytest tests/robustness -m ""
    .venv/bin/python -m tests.robustness.table outputs/robustness

One row per fuzzer, from its long run when there is one (else its short run).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = ["tried", "clear_error", "accepted", "crash", "hang", "data_lost", "wrong_answer"]
HEADER = "| fuzzer | run (seed) | tried | clear errors | accepted | crashes | hangs | data lost | wrong answers | known gaps |"


def rows(directory: Path) -> list[dict]:
    reports: dict[str, dict] = {}
    for path in sorted(directory.glob("*.json")):
        report = json.loads(path.read_text())
        kept = reports.get(report["fuzzer"])
        if kept is None or (kept["size"] == "short" and report["size"] == "long"):
            reports[report["fuzzer"]] = report
    return list(reports.values())


def table(reports: list[dict]) -> str:
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    for r in reports:
        gaps = ", ".join(f"{n}: {k}" for n, k in sorted(r.get("known_gap", {}).items())) or "–"
        cells = [f"`{r['fuzzer']}`", f"{r['size']} ({r['seed']})", *(str(r[c]) for c in COLUMNS), gaps]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    reports = rows(Path(argv[0]))
    if not reports:
        print(f"no reports in {argv[0]}", file=sys.stderr)
        return 2
    print(table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
