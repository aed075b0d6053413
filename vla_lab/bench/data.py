"""DemoDataModule throughput: 50 demos of 224x224 images, default augmentation, 2 workers."""

from __future__ import annotations

import time
from pathlib import Path

from vla_lab.data.synthetic import make_demo_file


def _dataset(cache: Path, num_demos: int, length: int, size: int) -> Path:
    path = cache / f"bench_{num_demos}x{length}_{size}.hdf5"
    if not path.exists():
        make_demo_file(path, num_demos=num_demos, length=(length, length), image_size=size, seed=0)
    return path


def measure(
    path: Path,
    *,
    num_workers: int,
    batch_size: int,
    warmup: int,
    batches: int,
    augmentation: str = "default",
    chunk_size: int = 1,
) -> dict:
    from vla_lab.config.compose import compose
    from vla_lab.data.datamodule import DemoDataModule
    from vla_lab.training.config import register_configs

    register_configs()
    aug = compose("train", [f"augmentation={augmentation}"]).augmentation
    dm = DemoDataModule(
        sources=[{"path": str(path)}],
        image_size=224,
        num_workers=num_workers,
        batch_size=batch_size,
        val_fraction=0.0,
        samples_per_epoch=batch_size * (warmup + batches),
        augmentation=aug,
        chunk_size=chunk_size,
    )
    dm.setup()
    it = iter(dm.train_dataloader())
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    elapsed = time.perf_counter() - start
    dm.teardown()
    return {
        "samples_per_s": round(batches * batch_size / elapsed, 1),
        "num_workers": num_workers,
        "batch_size": batch_size,
        "augmentation": augmentation,
        "batches": batches,
    }


def run(out_dir: Path) -> dict:
    cache = Path(out_dir) / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    path = _dataset(cache, num_demos=50, length=60, size=224)
    gen_s = time.perf_counter() - t0
    results = {
        "dataset": {
            "demos": 50,
            "steps_per_demo": 60,
            "image": [224, 224, 3],
            "file_mb": round(path.stat().st_size / 2**20),
            "generate_s": round(gen_s, 1),
        },
        "default_aug_2_workers": measure(path, num_workers=2, batch_size=32, warmup=5, batches=40),
        "no_aug_2_workers": measure(
            path, num_workers=2, batch_size=32, warmup=5, batches=40, augmentation="none"
        ),
        "default_aug_0_workers": measure(path, num_workers=0, batch_size=32, warmup=2, batches=10),
    }
    results["target_samples_per_s"] = 400
    results["meets_target"] = results["default_aug_2_workers"]["samples_per_s"] >= 400
    return results
