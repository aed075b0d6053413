"""``vla-data``: inspect, validate and compute statistics of demonstration files.

PATH is a file, a directory (every .hdf5 inside, e.g. a LIBERO suite folder) or a glob.
Exit codes: 0 ok, 1 the data has problems (validate), 2 the command could not run (bad path, ...).
"""

from __future__ import annotations

import argparse
import json
import sys

from vla_lab.data.errors import DataError
from vla_lab.data.reader import DemoSource, expand_paths


def _sources(path: str) -> list[DemoSource]:
    return [DemoSource(p) for p in expand_paths(path)]


def cmd_inspect(args) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))
    summary = []
    for src in _sources(args.path):
        with src.open() as f:
            shapes = {}
            if src.episodes:
                first = src.episodes[0].demo
                shapes = {cam: tuple(src.image_dataset(f, first, cam).shape[1:]) for cam in src.cameras}
                proprio = {k: src.read_proprio(f, first, [k]).shape[1] for k in src.proprio_keys}
            else:
                proprio = {}
        eps = src.episodes
        info = {
            "file": src.path,
            "format": src.format,
            "demos": len(eps),
            "steps": sum(e.length for e in eps),
            "successes": sum(e.success for e in eps),
            "cameras": {k: list(v) for k, v in shapes.items()},
            "proprio": proprio,
            "action_dim": src.action_space.dim,
            "instructions": sorted({e.instruction for e in eps}),
        }
        summary.append(info)
        if args.json:
            continue
        console.print(
            f"[bold]{src.path}[/bold]  format={src.format}  demos={info['demos']}  "
            f"steps={info['steps']}  successes={info['successes']}/{info['demos']}"
        )
        console.print(
            f"  cameras: {', '.join(f'{k} {v}' for k, v in shapes.items()) or '-'}   "
            f"proprio: {', '.join(f'{k}({d})' for k, d in proprio.items()) or '-'}   "
            f"actions: {src.action_space.dim}-D {src.action_space.names}"
        )
        table = Table("demo", "steps", "success", "task", "env", "instruction", box=None, pad_edge=False)
        for e in eps[: args.max_rows]:
            table.add_row(
                e.demo, str(e.length), "yes" if e.success else "no", e.task, e.environment, e.instruction
            )
        console.print(table)
        if len(eps) > args.max_rows:
            console.print(f"  ... {len(eps) - args.max_rows} more demos")
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        total = sum(s["demos"] for s in summary)
        console.print(
            f"[bold]{len(summary)} file(s), {total} demos, {sum(s['steps'] for s in summary)} steps[/bold]"
        )
    return 0


def cmd_validate(args) -> int:
    from vla_lab.data.validate import validate_file

    problems, files = [], expand_paths(args.path)
    for p in files:
        problems += validate_file(p, deep=not args.quick)
    for prob in problems:
        print(prob)
    if problems:
        print(f"{len(problems)} problem(s) in {len(files)} file(s)", file=sys.stderr)
        return 1
    print(f"ok: {len(files)} file(s) valid")
    return 0


def cmd_stats(args) -> int:
    from vla_lab.data.filter import filter_episodes
    from vla_lab.data.stats import compute_stats

    sources = {s.path: s for s in _sources(args.path)}
    episodes = [e for s in sources.values() for e in s.episodes]
    if args.filter:
        episodes = filter_episodes(sources, episodes).kept
    if not episodes:
        raise DataError("no demos to compute statistics over", file=args.path)
    keys = {tuple(s.proprio_keys) for s in sources.values()}
    if len(keys) > 1:
        raise DataError(f"files declare different proprio keys {sorted(keys)}", file=args.path)
    stats = compute_stats(sources, episodes, list(keys.pop()))
    payload = stats.to_dict()
    if args.json:
        print(json.dumps(payload, allow_nan=False))
    else:
        print(f"{payload['num_demos']} demos, {payload['num_transitions']} transitions")
        for part in ("action", "proprio"):
            if payload[part]:
                print(f"{part}:")
                for name, values in payload[part].items():
                    print(f"  {name:5s} " + " ".join(f"{v:+.4f}" for v in values))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vla-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="table of demos, steps, instructions, cameras, format")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.add_argument("--max-rows", type=int, default=20, help="demos listed per file")
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("validate", help="check schema and contents; exit 1 with one line per problem")
    p.add_argument("path")
    p.add_argument(
        "--quick",
        action="store_true",
        help="skip decoding the image frames (structure and low-dim arrays only)",
    )
    # decoding every frame is the default now; the flag stays accepted for existing scripts
    p.add_argument("--deep", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("stats", help="normalization statistics (mean, std, min, max, q01, q99)")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print JSON to stdout")
    p.add_argument("--filter", action="store_true", help="apply the default quality filter first")
    p.set_defaults(func=cmd_stats)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DataError as err:
        print(f"vla-data: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `vla-data inspect ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
