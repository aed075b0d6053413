import json

import numpy as np
import pytest
import torch

from vla_lab.data.normalize import Normalizer
from vla_lab.data.reader import DemoSource
from vla_lab.data.stats import ArrayStats, RunningStats, compute_stats, load_or_compute_stats


def _all_rows(src: DemoSource, keys):
    with src.open() as f:
        acts = np.concatenate([src.read_actions(f, e.demo) for e in src.episodes])
        prop = np.concatenate([src.read_proprio(f, e.demo, keys) for e in src.episodes])
    return acts.astype(np.float64), prop.astype(np.float64)


def test_streaming_stats_equal_numpy_on_the_whole_array(demo_file):
    src = DemoSource(demo_file)
    stats = compute_stats({src.path: src}, src.episodes, src.proprio_keys)
    acts, prop = _all_rows(src, src.proprio_keys)
    assert stats.num_demos == 6 and stats.num_transitions == len(acts)
    for got, rows in ((stats.action, acts), (stats.proprio, prop)):
        np.testing.assert_allclose(got.mean, rows.mean(0), atol=1e-9)
        np.testing.assert_allclose(got.std, rows.std(0), atol=1e-9)
        np.testing.assert_allclose(got.min, rows.min(0))
        np.testing.assert_allclose(got.max, rows.max(0))
        np.testing.assert_allclose(got.q01, np.quantile(rows, 0.01, axis=0))
        np.testing.assert_allclose(got.q99, np.quantile(rows, 0.99, axis=0))


def test_reservoir_bounds_memory_and_stays_close():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(200_000, 2))
    rs = RunningStats(2, reservoir_rows=20_000)
    for chunk in np.array_split(data, 97):
        rs.update(chunk)
    assert rs._reservoir.shape == (20_000, 2)
    out = rs.finalize()
    np.testing.assert_allclose(out.mean, data.mean(0), atol=1e-9)
    np.testing.assert_allclose(out.q99, np.quantile(data, 0.99, axis=0), atol=0.05)
    np.testing.assert_allclose(out.q01, np.quantile(data, 0.01, axis=0), atol=0.05)


def test_cache_is_keyed_by_content(demo_file):
    src = DemoSource(demo_file)
    sources = {src.path: src}
    first = load_or_compute_stats(sources, src.episodes, src.proprio_keys)
    cache = list((demo_file.parent / ".vla_stats").glob("*.json"))
    assert len(cache) == 1
    # A doctored cache entry is what a hit returns: proves the second call reads it.
    doctored = json.loads(cache[0].read_text())
    doctored["action"]["mean"][0] = 123.0
    cache[0].write_text(json.dumps(doctored))
    assert load_or_compute_stats(sources, src.episodes, src.proprio_keys).action.mean[0] == 123.0
    # Different content (a subset of demos) hashes differently and is computed afresh.
    subset = load_or_compute_stats(sources, src.episodes[:3], src.proprio_keys)
    assert subset.num_demos == 3 and subset.action.mean[0] != 123.0 and first.action.mean[0] != 123.0
    assert len(list((demo_file.parent / ".vla_stats").glob("*.json"))) == 2


def _stats(lo, hi):
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    mid = (lo + hi) / 2
    return ArrayStats(mid.tolist(), (hi - lo).tolist(), lo.tolist(), hi.tolist(), lo.tolist(), hi.tolist())


def test_bounds_q99_matches_openvla_formula_and_inverts():
    stats = _stats([-1, 0, 2, 0, 0, 0, 0], [1, 4, 2, 1, 1, 1, 1])  # dim 2 is constant
    norm = Normalizer(stats, mode="bounds_q99", action_mask=[True] * 6 + [False])
    x = np.array([[0.5, 1.0, 2.0, 0.25, 2.0, -3.0, 1.0]], np.float32)
    y = norm.normalize_action(x)
    lo, hi = stats.array("q01"), stats.array("q99")
    ref = np.clip(2 * (x - lo) / (hi - lo + 1e-8) - 1, -1, 1)
    ref[:, 2] = 0.0  # zero range -> 0
    ref[:, 6] = x[:, 6]  # gripper unnormalized
    np.testing.assert_allclose(y, ref, atol=1e-6)
    inside = np.array([[0.5, 1.0, 2.0, 0.25, 0.9, 0.1, 0.0]], np.float32)
    np.testing.assert_allclose(norm.unnormalize_action(norm.normalize_action(inside)), inside, atol=1e-6)


def test_normalizer_torch_numpy_agree_and_serialise():
    stats = _stats([-2] * 7, [3] * 7)
    norm = Normalizer(stats, stats, mode="bounds_q99", action_mask=[True] * 6 + [False])
    x = np.random.default_rng(0).uniform(-2, 3, (4, 3, 7)).astype(np.float32)
    t = norm.normalize_action(torch.from_numpy(x))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), norm.normalize_action(x), atol=1e-6)
    clone = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_allclose(clone.unnormalize_action(t).numpy(), x, atol=1e-5)
    np.testing.assert_allclose(clone.normalize_state(x), norm.normalize_state(x))


@pytest.mark.parametrize("mode", ["bounds", "mean_std", "identity"])
def test_other_modes_invert(mode):
    stats = _stats([-1] * 7, [2] * 7)
    norm = Normalizer(stats, mode=mode)
    x = np.linspace(-0.9, 1.9, 14, dtype=np.float32).reshape(2, 7)
    np.testing.assert_allclose(norm.unnormalize_action(norm.normalize_action(x)), x, atol=1e-5)


def test_bad_mode_and_mask():
    stats = _stats([0] * 7, [1] * 7)
    with pytest.raises(ValueError, match="not one of"):
        Normalizer(stats, mode="q99")
    with pytest.raises(ValueError, match="mask has 3 entries"):
        Normalizer(stats, action_mask=[True] * 3)
