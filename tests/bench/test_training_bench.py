"""The training benchmarks' sides run (so `make bench` cannot rot unnoticed)."""

from __future__ import annotations

import pytest

from vla_lab.bench.training import _framework_seconds, _measure
from vla_lab.data.synthetic import make_demo_file


@pytest.mark.slow  # ~30 s: two trainings at 224 px; run by `make test-full`
@pytest.mark.timeout(300)
def test_both_sides_of_the_overhead_benchmark_train(tmp_path):
    data = make_demo_file(tmp_path / "demos.hdf5", num_demos=4, length=(10, 12), image_size=32, seed=0)
    vla_train = _framework_seconds(data, tmp_path / "framework", 2)
    assert vla_train > 0
    summaries = list((tmp_path / "framework").rglob("summary.json"))
    assert len(summaries) == 1 and '"global_step": 2' in summaries[0].read_text()
    bare = _measure("bare", data, tmp_path / "bare", 2)  # in a fresh interpreter, as the benchmark does
    assert bare > 0 and list((tmp_path / "bare").glob("bare_2/*.safetensors"))


@pytest.mark.slow  # ~40 s: two short demo-recipe trainings
@pytest.mark.timeout(300)
def test_both_sides_of_the_demo_pretrain_benchmark_train(tmp_path, monkeypatch):
    from vla_lab.bench import demo_pretrain

    monkeypatch.setattr(demo_pretrain, "STEPS", 2)
    data = make_demo_file(tmp_path / "demos.hdf5", num_demos=4, length=(10, 12), image_size=128, seed=0)
    for side in demo_pretrain.SIDES:
        summary = demo_pretrain._train(side, data, tmp_path / side, f"{side}_0")
        assert summary["global_step"] == 2 and summary["train_samples_per_s"] > 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mfu_counts_the_flops_of_forward_and_backward():
    """A training step (forward and backward) counts about three times the forward's FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    from vla_lab.bench import mfu

    policy, batch = mfu._policy("openvla_tiny").train(), mfu._batch()
    total = mfu.flops_per_sample(policy, batch)
    with FlopCounterMode(display=False) as forward:
        policy(batch)  # no backward: the forward's FLOPs alone
    assert 2.5 < total / (forward.get_total_flops() / len(batch["task"])) < 3.5
