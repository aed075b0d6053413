"""The demo's pretraining (``experiment=demo_pretrain``: openvla_tiny_128_sincos, batch 32, 128 px,
colour jitter, one loader worker) on synthetic demonstrations of the demo's format, today's data path
against the previous one, in interleaved rounds of fresh ``vla-train`` processes.

The previous path is what the same code does with the new options off: samples assembled one by one
(``data.batch_fetch=false``) and every frame streamed from its file (``data.cache_bytes=0``). The model-side changes made at the
same time (the sequence assembled by one gather, images normalized in one pass) are in both sides, so
the speed-up measured here understates the one against the older code.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROUNDS, STEPS, BATCH = 3, 120, 32
SIDES = {
    "baseline": ["data.batch_fetch=false", "data.cache_bytes=0"],
    "current": [],
}


def _train(side: str, data: Path, root: Path, run: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "vla_lab.cli.train",
        "experiment=demo_pretrain",
        f"data.sources=[{{path: {data}}}]",
        f"paths.root_dir={root}",
        f"run_name={run}",
        "eval.enabled=false",
        "vision_pretrain.steps=0",
        f"data.samples_per_epoch={STEPS * BATCH}",
        "data.val_fraction=0.0",
        "trainer.max_epochs=1",
        "optimized_metric=null",
        "callbacks.checkpoint.every_n_epochs=0",
        "callbacks.progress_bar=false",
        *SIDES[side],
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{side} run failed (rc {out.returncode}):\n{out.stderr[-3000:]}")
    summary = next(root.rglob(f"{run}/summary.json"))
    return json.loads(summary.read_text())


def run() -> dict:
    from vla_lab.data.synthetic import make_demo_file

    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    peak = 0.0
    with tempfile.TemporaryDirectory(prefix="vla_bench_demo_") as tmp:
        root = Path(tmp)
        data = make_demo_file(root / "demos.hdf5", num_demos=200, length=(40, 60), image_size=128, seed=0)
        for r in range(ROUNDS):
            for side in SIDES:
                summary = _train(side, data, root, f"{side}_{r}")
                rates[side].append(summary["train_samples_per_s"])
                peak = max(peak, summary.get("peak_memory_mb") or 0.0)
    ratios = [c / b for c, b in zip(rates["current"], rates["baseline"], strict=True)]
    return {
        "baseline_samples_per_s": round(statistics.median(rates["baseline"]), 1),
        "samples_per_s": round(statistics.median(rates["current"]), 1),
        "speedup": round(statistics.median(ratios), 2),
        "speedup_by_round": [round(x, 2) for x in ratios],
        "samples_per_s_by_round": rates,
        "steps": STEPS,
        "batch_size": BATCH,
        "rounds": ROUNDS,
        "peak_rss_mb": round(peak, 1),
    }
