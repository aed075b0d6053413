"""Index of a multirun sweep: one row per job, comparison figures, the best job.

``SweepIndex`` is a Hydra callback (``hydra.callbacks.sweep_index`` in ``conf/hydra/default.yaml``).
After every job it writes ``job.json`` into the job's run directory (number, overrides, status,
returned metric, error); it does so inside the job's process, so it works with any launcher (local,
submitit). When the sweep ends it writes, into the sweep directory:

```
sweep_index.csv  sweep_index.md   job, status, overrides, optimised metric, val_loss, success_rate,
                                  wall_time_s, run_dir, error (failed jobs are listed with their error)
comparison.md/.csv  loss_comparison.png  success_rates.png   vla-compare over the jobs that finished
```

``python -m vla_lab.training.sweep SWEEP_DIR`` rebuilds the index of a sweep directory (e.g. after
re-running a failed job by hand).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from vla_lab.fileio import atomic_write_text
from vla_lab.training.run_dir import FAILED_MARKER, csv_text, write_json

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
INDEX_COLUMNS = [
    "job",
    "status",
    "overrides",
    "metric",
    "metric_value",
    "val_loss",
    "success_rate",
    "wall_time_s",
    "run_dir",
    "error",
]


class SweepIndex(Callback):
    """Hydra callback: ``job.json`` per job, ``sweep_index.{csv,md}`` and figures per sweep."""

    def __init__(self, enabled: bool = True, figures: bool = True):
        self.enabled, self.figures = enabled, figures

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        from vla_lab.training.distributed import is_global_zero_process

        hydra_cfg = config.hydra
        # under SLURM every task of a multi-GPU job runs the job; rank 0 reports it
        if not self.enabled or hydra_cfg.mode != RunMode.MULTIRUN or not is_global_zero_process():
            return
        out = Path(hydra_cfg.runtime.output_dir)
        record = {
            "job": int(hydra_cfg.job.num),
            "overrides": list(job_return.overrides or []),
            "status": "ok",
            "return_value": None,
            "error": "",
        }
        value = getattr(job_return, "_return_value", None)
        if job_return.status == JobStatus.FAILED:
            record["status"], record["error"] = "failed", f"{type(value).__name__}: {value}"
        else:
            record["return_value"] = _float(value)
            failed = _read_json(out / FAILED_MARKER)
            if failed is not None:
                record["status"], record["error"] = "failed", failed.get("error", "failed")
        write_json(out / JOB_FILE, record)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        metric = config.get("optimized_metric")
        direction = OmegaConf.select(config, "hydra.sweeper.direction", default=None)
        if isinstance(direction, list | tuple) or OmegaConf.is_list(direction):
            direction = direction[0] if len(direction) else None
        try:
            index = write_sweep_index(sweep_dir, metric=metric, direction=direction, figures=self.figures)
        except Exception:  # the jobs ran; a broken index must not turn the sweep into a failure
            log.exception("could not write the index of %s", sweep_dir)
            return
        log.info(
            "sweep index: %s (%d jobs, %d failed)",
            sweep_dir / "sweep_index.md",
            len(index["rows"]),
            sum(r["status"] != "ok" for r in index["rows"]),
        )


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _job_dirs(sweep_dir: Path) -> list[Path]:
    dirs = [
        p
        for p in sweep_dir.iterdir()
        if p.is_dir() and ((p / JOB_FILE).exists() or (p / ".hydra" / "overrides.yaml").exists())
    ]
    return sorted(dirs, key=lambda p: (int(p.name) if p.name.isdigit() else math.inf, p.name))


def infer_direction(metric: str | None) -> str:
    return "maximize" if metric and any(w in metric for w in ("success", "accuracy")) else "minimize"


def job_row(job_dir: Path, metric: str | None) -> dict[str, Any]:
    record = _read_json(job_dir / JOB_FILE) or {}
    overrides = record.get("overrides")
    if overrides is None and (job_dir / ".hydra" / "overrides.yaml").exists():
        overrides = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
    summary = _read_json(job_dir / "summary.json") or {}
    failed = _read_json(job_dir / FAILED_MARKER)
    final = summary.get("final", {})
    status, error = record.get("status", "ok"), record.get("error", "")
    if failed is not None:
        status, error = "failed", failed.get("error", error)
    elif not summary:
        status, error = "failed", error or "no summary.json (the job did not finish)"
    value = (summary.get("optimized_metric") or {}).get("value")
    if value is None and metric:
        value = final.get(metric, record.get("return_value"))
    nan = math.nan
    return {
        "job": record.get("job", job_dir.name),
        "status": status,
        "overrides": " ".join(overrides or []),
        "override_list": list(overrides or []),
        "metric": metric or "",
        "metric_value": nan if value is None else float(value),
        "val_loss": final.get("val/loss", nan),
        "success_rate": final.get("eval/success_rate", nan),
        "wall_time_s": summary.get("wall_time_s", nan),
        "run_dir": str(job_dir),
        "error": error,
    }


def _split(overrides: list[str]) -> dict[str, str]:
    out = {}
    for item in overrides:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def varying_overrides(rows: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """Override keys whose value differs between jobs (the swept ones) and those shared by all."""
    parsed = [_split(r["override_list"]) for r in rows]
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    varying = [k for k in keys if len({p.get(k) for p in parsed}) > 1]
    common = {k: parsed[0][k] for k in keys if k not in varying and k in parsed[0]}
    return varying, common


def best_row(rows: list[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    scored = [r for r in rows if r["status"] == "ok" and not math.isnan(r["metric_value"])]
    if not scored:
        return None
    pick = max if direction == "maximize" else min
    return pick(scored, key=lambda r: r["metric_value"])


def write_sweep_index(
    sweep_dir: str | Path, *, metric: str | None = None, direction: str | None = None, figures: bool = True
) -> dict[str, Any]:
    """Write ``sweep_index.csv``/``.md`` (and comparison figures) for the jobs under ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    job_dirs = _job_dirs(sweep_dir)
    if metric is None:  # rebuilding by hand: take the metric the jobs recorded
        for d in job_dirs:
            metric = ((_read_json(d / "summary.json") or {}).get("optimized_metric") or {}).get("name")
            if metric:
                break
    direction = direction or infer_direction(metric)
    rows = [job_row(d, metric) for d in job_dirs]

    atomic_write_text(sweep_dir / "sweep_index.csv", csv_text(INDEX_COLUMNS, rows))

    best = best_row(rows, direction)
    ok = [r for r in rows if r["status"] == "ok"]
    compared = False
    if figures and ok:
        from vla_lab.training.compare import compare

        try:
            compare([Path(r["run_dir"]) for r in ok], sweep_dir)
            compared = True
        except Exception:
            log.exception("comparison figures for %s failed", sweep_dir)

    varying, common = varying_overrides(rows)

    def swept(r: dict[str, Any]) -> str:
        parsed = _split(r["override_list"])
        return " ".join(f"{k}={parsed[k]}" for k in varying if k in parsed)

    md = [
        f"# Sweep `{sweep_dir.name}`",
        "",
        f"{len(rows)} jobs: {len(ok)} ok, {len(rows) - len(ok)} failed. "
        f"Optimised metric: `{metric or '-'}` ({direction}).",
    ]
    if best is not None:
        md.append(f"Best: job {best['job']} (`{swept(best)}`), {metric} = {best['metric_value']:.4g}.")
    if common:
        md.append("Shared by every job: `" + " ".join(f"{k}={v}" for k, v in common.items()) + "`.")
    md += [
        "",
        "| job | status | overrides | " + (metric or "metric") + " | val_loss | success_rate | wall_time_s "
        "| run_dir | error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            r["job"],
            r["status"],
            f"`{swept(r)}`" if swept(r) else "",
            _cell(r["metric_value"]),
            _cell(r["val_loss"]),
            _cell(r["success_rate"]),
            _cell(r["wall_time_s"]),
            Path(r["run_dir"]).name,
            _cell(r["error"].splitlines()[0][:200] if r["error"] else ""),
        ]
        md.append("| " + " | ".join(str(c) for c in cells) + " |")
    if compared:
        md += [
            "",
            "Finished jobs side by side: [comparison.md](comparison.md), "
            "![training loss](loss_comparison.png) ![success rates](success_rates.png)",
        ]
    atomic_write_text(sweep_dir / "sweep_index.md", "\n".join(md) + "\n")
    return {"rows": rows, "best": best, "metric": metric, "direction": direction}


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    return str(v).replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="(Re)build sweep_index.csv/.md of a multirun directory")
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", default=None, help="default: the optimized_metric the jobs recorded")
    parser.add_argument("--direction", choices=["minimize", "maximize"], default=None)
    parser.add_argument("--no-figures", action="store_true")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"{args.sweep_dir}: no such directory")
        return 2
    index = write_sweep_index(
        args.sweep_dir, metric=args.metric, direction=args.direction, figures=not args.no_figures
    )
    print((args.sweep_dir / "sweep_index.md").read_text())
    return 0 if index["rows"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
