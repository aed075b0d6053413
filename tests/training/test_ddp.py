"""DDP on CPU with gloo: two real processes, one run directory, synchronised weights; the distributed
trainer presets compose with mixed precision, gradient accumulation and QLoRA."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from hydra.utils import instantiate

from vla_lab.config.compose import compose
from vla_lab.data.synthetic import make_demo_file

BATCH = 4
ACCUMULATE = 2


def _train_frames(data_file, tmp_path) -> int:
    """How many training frames the run's DataModule holds (same config, same split)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    cfg = compose(
        "train", [f"data.sources=[{{path: '{data_file}'}}]", "data.num_workers=0"], return_hydra_config=True
    )
    with open_dict(cfg), read_write(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "unused")
    HydraConfig.instance().set_config(cfg)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    return len(dm.train_set)


@pytest.mark.slow  # ~50 s on 2 busy cores: two processes each import torch and build the policy
@pytest.mark.timeout(420)
@pytest.mark.parametrize(
    "peft, accumulate",
    [("none", ACCUMULATE), ("qlora_nf4", 1)],
    ids=["full-bf16-accumulate", "qlora-nf4-bf16"],
)
def test_two_gloo_ranks_train_together_in_one_run_directory(tmp_path, peft, accumulate):
    data_file = make_demo_file(tmp_path / "demos.hdf5", num_demos=6, length=(6, 10), image_size=32, seed=0)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "VLA_LAB_CACHE": str(tmp_path / "cache"),
        "MASTER_ADDR": "127.0.0.1",
    }
    env.pop("MASTER_PORT", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vla_lab.cli.train",
            f"data.sources=[{{path: '{data_file}'}}]",
            f"paths.root_dir={tmp_path}",
            # the default run name carries a timestamp: a child rank resolving it anew would make a second dir
            "trainer=ddp",
            "trainer.precision=bf16-mixed",
            f"trainer.accumulate_grad_batches={accumulate}",
            f"peft={peft}",
            "trainer.max_epochs=1",
            "eval=none",
            f"data.batch_size={BATCH}",
            "data.num_workers=0",
            "callbacks.progress_bar=false",
            "callbacks.log_every_n_steps=1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = [p for p in (tmp_path / "outputs" / "train").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    run = runs[0]
    ranks = [json.loads((run / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["global_rank"] for r in ranks] == [0, 1] and ranks[0]["pid"] != ranks[1]["pid"]
    assert all(r["world_size"] == 2 for r in ranks)

    frames = _train_frames(data_file, tmp_path)
    per_rank = math.ceil(frames / 2)  # DistributedSampler: half the data each (padded to equal shares)
    batches = math.ceil(per_rank / BATCH)
    steps = math.ceil(batches / accumulate)
    assert [r["samples_seen"] for r in ranks] == [per_rank, per_rank]
    assert [r["global_step"] for r in ranks] == [steps, steps]
    # different data on each rank, identical weights after training: the gradients were all-reduced
    assert ranks[0]["param_sum"] == ranks[1]["param_sum"]
    assert ranks[0]["param_sq_sum"] == ranks[1]["param_sq_sum"]

    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == steps
    assert summary["samples_seen"] == 2 * per_rank
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["trainer"]["strategy"]["process_group_backend"] == "gloo"
    assert cfg["trainer"]["precision"] == "bf16-mixed" and cfg["peft"]["method"] == (
        "none" if peft == "none" else "qlora"
    )
    # rank 0 alone writes the logs: one row per logged step, no duplicates from rank 1
    logged = [int(r.split(",")[0]) for r in (run / "training_log.csv").read_text().splitlines()[1:]]
    assert logged == sorted(set(logged)) and logged[-1] == steps
    assert (run / "final" / "data_processor.json").is_file()
    assert (run / "train_rank1.log").is_file()  # the child rank logged into the same directory


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer=ddp", "trainer.precision=bf16-mixed", "trainer.accumulate_grad_batches=4"],
        ["trainer=ddp", "peft=qlora_nf4", "trainer.precision=bf16-mixed"],
        ["trainer=ddp", "trainer.num_nodes=2", "trainer.devices=2"],
        ["trainer=fsdp", "peft=lora_light"],
    ],
    ids=["ddp-bf16-accumulate", "ddp-qlora", "ddp-2-nodes", "fsdp-lora"],
)
def test_distributed_presets_compose(overrides, tmp_path):
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

    cfg = compose("train", [f"paths.root_dir={tmp_path}", *overrides])
    strategy = instantiate(cfg.trainer.strategy)
    if cfg.trainer.accelerator == "cpu":
        assert isinstance(strategy, DDPStrategy) and strategy._process_group_backend == "gloo"
        trainer = instantiate(cfg.trainer, enable_progress_bar=False, logger=False)  # builds, spawns nothing
        assert isinstance(trainer.strategy, DDPStrategy)
        assert trainer.num_devices == 2 and trainer.num_nodes == cfg.trainer.num_nodes
        assert trainer.accumulate_grad_batches == cfg.trainer.accumulate_grad_batches
        assert trainer.precision == cfg.trainer.precision
    else:  # GPU preset: no GPU here, the strategy is checked as built
        assert isinstance(strategy, FSDPStrategy) and cfg.trainer.precision == "bf16-mixed"
        assert strategy.kwargs.get("use_orig_params") is True
    if "peft=qlora_nf4" in overrides:
        assert cfg.peft.method == "qlora" and cfg.peft.quantization == "nf4"
