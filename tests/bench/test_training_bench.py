"""The framework-overhead benchmark's two sides run (so `make bench` cannot rot unnoticed)."""

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
