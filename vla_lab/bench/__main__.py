"""Run the benchmarks and write one JSON file per benchmark (plus ``summary.json``) to ``--out``."""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

from vla_lab.data.stats import write_json_atomic

#: Benchmark modules under vla_lab.bench; each exposes ``run(out_dir) -> dict``.
BENCHMARKS = ("data", "sim", "policies", "training", "evaluation", "serve")


def environment() -> dict:
    import os

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "machine": platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vla_lab.bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run a subset")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"environment": environment(), "results": {}}
    for name in args.only or BENCHMARKS:
        print(f"[bench] {name} ...", flush=True)
        start = time.perf_counter()
        result = importlib.import_module(f"vla_lab.bench.{name}").run(args.out)
        result["wall_s"] = round(time.perf_counter() - start, 1)
        write_json_atomic(args.out / f"{name}.json", {"environment": summary["environment"], **result})
        summary["results"][name] = result
        print(json.dumps(result, indent=1), flush=True)
    write_json_atomic(args.out / "summary.json", summary)
    print(f"[bench] results in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
