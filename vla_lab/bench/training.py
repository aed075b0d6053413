"""Framework overhead: the marginal cost of one optimizer step inside ``vla-train`` (Lightning, the
run directory's callbacks and loggers, the data loader) versus a bare PyTorch loop over the same
DataModule, policy and optimizer.

Each side runs for ``SHORT`` and ``LONG`` steps; the difference of the wall times divided by the
difference of the step counts is the per-step cost with start-up, the first step's allocations and
the final checkpoint cancelled out. Both sides use one epoch (no validation or epoch-end checkpoint in
between), the same seed and the same batches. Every measurement runs in a fresh process and the sides
alternate over ``REPEATS`` rounds; the overhead is the median of the rounds' ratios, with their
spread (max - min): measured in one process one after the other, whichever side ran first was up to
30 % faster, whichever it was.

The demo's pretraining (:mod:`vla_lab.bench.demo_pretrain`) and MFU (:mod:`vla_lab.bench.mfu`) are
reported in the same ``training.json``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SHORT, LONG, BATCH, REPEATS = 4, 24, 16, 5
MODEL = "openvla_tiny"


def _overrides(data: Path, root: Path, steps: int) -> list[str]:
    return [
        f"model={MODEL}",
        "peft=none",
        f"data.sources=[{{path: {data}}}]",
        f"data.batch_size={BATCH}",
        "data.num_workers=2",
        "data.val_fraction=0.0",
        "eval.enabled=false",
        f"+trainer.max_steps={steps}",
        "trainer.max_epochs=1",
        "callbacks.progress_bar=false",
        "callbacks.checkpoint.every_n_epochs=0",
        "optimized_metric=null",
        f"paths.root_dir={root}",
        f"run_name=overhead_{steps}",
    ]


def _compose(data: Path, root: Path, steps: int, run_dir: Path):
    from vla_lab.config.compose import compose_run
    from vla_lab.training.config import register_configs

    register_configs()
    return compose_run("train", _overrides(data, root, steps), run_dir)


def _framework_seconds(data: Path, root: Path, steps: int) -> float:
    from vla_lab.training.train import train

    cfg = _compose(data, root, steps, root / f"run_{steps}")
    start = time.perf_counter()
    train(cfg)
    return time.perf_counter() - start


def _bare_seconds(data: Path, root: Path, steps: int) -> float:
    """The same DataModule, policy and AdamW, stepped by hand: what vla-train adds is the rest."""
    import lightning as L
    from hydra.utils import instantiate

    from vla_lab.training.train import build_policy

    cfg = _compose(data, root, steps, root / f"bare_run_{steps}")
    start = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    policy = build_policy(cfg, dm).train()
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=float(cfg.optim.lr))
    loader = iter(dm.train_dataloader())
    for _ in range(steps):
        loss, _ = policy(next(loader))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)  # vla-train clips too
        opt.step()
    policy.save_pretrained(root / f"bare_{steps}")  # vla-train saves final/ as well
    dm.teardown("fit")
    return time.perf_counter() - start


SIDES = {"bare": _bare_seconds, "vla_train": _framework_seconds}


def _measure(side: str, data: Path, root: Path, steps: int) -> float:
    """Seconds for ``steps`` steps of ``side``, in a fresh interpreter."""
    code = (
        "import sys; from pathlib import Path; from vla_lab.bench.training import SIDES; "
        "print('SECONDS', SIDES[sys.argv[1]](Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])))"
    )
    root.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [sys.executable, "-c", code, side, str(data), str(root), str(steps)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("SECONDS ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{side} with {steps} steps failed (rc {out.returncode}):\n{out.stderr[-3000:]}")
    return float(lines[-1].split()[1])


def framework_overhead() -> dict:
    from vla_lab.data.synthetic import make_demo_file

    rounds: dict[str, list[float]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="vla_bench_train_") as tmp:
        root = Path(tmp)
        # enough frames that LONG steps stay inside one epoch
        data = make_demo_file(root / "demos.hdf5", num_demos=40, length=(16, 24), image_size=224, seed=0)
        for r in range(REPEATS):
            for side in SIDES:
                t = {n: _measure(side, data, root / f"{side}_{r}", n) for n in (SHORT, LONG)}
                rounds[side].append((t[LONG] - t[SHORT]) / (LONG - SHORT))
    ratios = [f / b - 1 for f, b in zip(rounds["vla_train"], rounds["bare"], strict=True)]
    overhead = statistics.median(ratios)
    per_step = {side: statistics.median(v) for side, v in rounds.items()}
    return {
        "model": MODEL,
        "batch_size": BATCH,
        "image_size": 224,
        "steps": [SHORT, LONG],
        "rounds": REPEATS,
        "bare_s_per_step": round(per_step["bare"], 4),
        "vla_train_s_per_step": round(per_step["vla_train"], 4),
        "framework_overhead": round(overhead, 4),
        "framework_overhead_spread": round(max(ratios) - min(ratios), 4),
        "overhead_by_round": [round(x, 4) for x in ratios],
        "target_overhead": 0.05,
        "meets_target": overhead <= 0.05,
        "s_per_step_by_round": {side: [round(x, 4) for x in v] for side, v in rounds.items()},
    }


def run(out_dir: Path) -> dict:
    from vla_lab.bench import demo_pretrain, mfu

    overhead = framework_overhead()
    demo = demo_pretrain.run()
    flops = mfu.run()
    return {
        "demo_pretrain": demo,
        "mfu": {name: r["mfu"] for name, r in flops["models"].items()},
        "mfu_details": flops,
        "framework_overhead": overhead["framework_overhead"],
        "framework_overhead_spread": overhead["framework_overhead_spread"],
        "framework_overhead_details": overhead,
        "peak_rss_mb": round(max(demo["peak_rss_mb"], _children_peak_rss_mb()), 1),
    }


def _children_peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
