"""``vla-compare RUN_DIR... [--out DIR]``: config differences and metrics of several runs, side by side
(markdown + CSV), plus loss_comparison.png and success_rates.png."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vla-compare", description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("outputs/compare"))
    args = parser.parse_args(argv)
    from vla_lab.training.compare import compare

    try:
        result = compare(args.runs, args.out)
    except FileNotFoundError as err:
        print(f"vla-compare: error: {err}", file=sys.stderr)
        return 2
    print(result["markdown"])
    print(f"\nwritten: {args.out}/comparison.md, comparison.csv, loss_comparison.png, success_rates.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
