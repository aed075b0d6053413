import numpy as np
import pytest
import torch

from vla_lab.config import keys
from vla_lab.config.errors import ConfigError
from vla_lab.data.datamodule import DemoDataModule, LiberoDataModule, split_episodes
from vla_lab.data.errors import DataError, EmptyDatasetError
from vla_lab.data.format import ActionSpace
from vla_lab.data.reader import DemoSource
from vla_lab.data.synthetic import make_demo_file

NO_AUG = {"crop": {"enabled": False}, "color_jitter": {"enabled": False}}


def _dm(path, **kw):
    cfg = dict(sources=[{"path": str(path)}], image_size=24, num_workers=0, batch_size=4, augmentation=NO_AUG)
    cfg.update(kw)
    dm = DemoDataModule(**cfg)
    dm.setup()
    return dm


def test_batch_contract(demo_file):
    dm = _dm(demo_file, chunk_size=3, augmentation=None)
    batch = next(iter(dm.train_dataloader()))
    img = batch[keys.image_key("agentview")]
    assert img.shape == (4, 3, 24, 24) and img.dtype == torch.float32 and img.min() >= 0 and img.max() <= 1
    assert batch[keys.ACTION].shape == (4, 3, 7) and batch[keys.ACTION].dtype == torch.float32
    assert batch[keys.ACTION_IS_PAD].shape == (4, 3) and batch[keys.ACTION_IS_PAD].dtype == torch.bool
    assert batch[keys.STATE].shape == (4, 7)
    assert len(batch[keys.TASK]) == 4 and all(isinstance(t, str) for t in batch[keys.TASK])
    assert batch[keys.ACTION][..., :6].abs().max() <= 1.0  # bounds_q99 clips to [-1, 1]


def test_chunks_pad_with_the_last_action_and_flag_it(demo_file):
    dm = _dm(demo_file, chunk_size=5, val_fraction=0.0)
    ds = dm.train_set
    ep = ds.episodes[0]
    src = DemoSource(demo_file)
    with src.open() as f:
        raw = dm.normalizer.normalize_action(src.read_actions(f, ep.demo))
    last = ep.length - 2  # two real actions, three pads
    sample = ds[last]
    assert sample[keys.FRAME_INDEX] == last
    assert sample[keys.ACTION_IS_PAD].tolist() == [False, False, True, True, True]
    np.testing.assert_allclose(sample[keys.ACTION][:2], raw[last : last + 2], atol=1e-6)
    np.testing.assert_allclose(sample[keys.ACTION][2:], np.repeat(raw[-1:], 3, 0), atol=1e-6)
    first = ds[0]
    assert not first[keys.ACTION_IS_PAD].any()
    np.testing.assert_allclose(first[keys.ACTION], raw[:5], atol=1e-6)


def test_split_is_by_episode_and_deterministic(demo_file):
    a, b = _dm(demo_file, val_fraction=0.34, split_seed=3), _dm(demo_file, val_fraction=0.34, split_seed=3)
    train_eps = {e.demo for e in a.train_set.episodes}
    val_eps = {e.demo for e in a.val_set.episodes}
    assert len(val_eps) == 2 and not train_eps & val_eps and len(train_eps | val_eps) == 6
    assert val_eps == {e.demo for e in b.val_set.episodes}
    others = {tuple(split_episodes(6, 0.34, seed)[1]) for seed in range(5)}
    assert len(others) > 1  # the seed does pick the split
    frames = {(e.demo, t) for e in a.val_set.episodes for t in range(e.length)}
    assert len(a.val_set) == len(frames)


def test_split_edges():
    train, val = split_episodes(1, 0.5, 0)
    assert len(train) == 1 and len(val) == 0
    train, val = split_episodes(10, 0.01, 0)
    assert len(val) == 1 and len(train) == 9


def test_stats_come_from_training_episodes_only(demo_file):
    dm = _dm(demo_file, val_fraction=0.5)
    src = DemoSource(demo_file)
    with src.open() as f:
        acts = np.concatenate([src.read_actions(f, e.demo) for e in dm.train_set.episodes])
    np.testing.assert_allclose(dm.stats.action.q99, np.quantile(acts.astype(np.float64), 0.99, axis=0))
    assert dm.state_dict()["normalizer"]["mode"] == "bounds_q99"


def test_mixture_weights_set_sampling_proportions(tmp_path):
    small = make_demo_file(tmp_path / "small.hdf5", num_demos=2, length=(10, 10), image_size=8, seed=2)
    big = make_demo_file(tmp_path / "big.hdf5", num_demos=8, length=(10, 10), image_size=8, seed=3)
    dm = _dm(
        None,
        sources=[{"path": str(big), "weight": 1.0}, {"path": str(small), "weight": 3.0}],
        val_fraction=0.0,
        samples_per_epoch=4000,
        batch_size=500,
        image_size=8,
    )
    seen = torch.cat([b[keys.SOURCE_INDEX] for b in dm.train_dataloader()])
    assert len(seen) == 4000
    share_small = (seen == 1).float().mean().item()
    assert abs(share_small - 0.75) < 0.04  # weight 3 vs 1, whatever the sizes (16 vs 80 frames)


def test_glob_and_directory_sources(tmp_path):
    for i in range(3):
        make_demo_file(tmp_path / "many" / f"part{i}.hdf5", num_demos=2, image_size=8, seed=i)
    by_glob = _dm(
        None, sources=[{"path": str(tmp_path / "many" / "part*.hdf5")}], val_fraction=0, image_size=8
    )
    by_dir = _dm(None, sources=[{"path": str(tmp_path / "many")}], val_fraction=0, image_size=8)
    assert len(by_glob.train_set.episodes) == len(by_dir.train_set.episodes) == 6


def test_worker_processes_open_their_own_handles(demo_file):
    dm = _dm(demo_file, num_workers=2, batch_size=8, val_fraction=0.0)
    loader = dm.train_dataloader()
    seen = sum(len(b[keys.TASK]) for b in loader)
    assert seen == len(dm.train_set)
    seen_again = sum(len(b[keys.TASK]) for b in loader)  # persistent workers, second epoch
    assert seen_again == seen
    dm.teardown()


def test_filter_report_and_empty_result(tmp_path):
    path = make_demo_file(tmp_path / "d.hdf5", num_demos=4, failures=1, still=1, length=(5, 30), image_size=8)
    dm = _dm(path, filter={"min_length": 3, "min_motion_std": 1e-3}, image_size=8)
    assert dm.filter_report.reasons == {"not successful": 1, "barely moved (position std < 0.001)": 1}
    assert len(dm.filter_report.kept) == 3
    with pytest.raises(
        EmptyDatasetError,
        match=r"no demos left after filtering: kept 0/5 demos \(dropped: 5 longer than 2 steps\)",
    ):
        _dm(path, filter={"max_length": 2}, image_size=8)


def test_bad_data_fails_at_setup_naming_file_demo_and_key(demo_file):
    import h5py

    with h5py.File(demo_file, "a") as f:
        acts = f["data/demo_3/actions"][:]
        acts[0, 0] = np.nan
        f["data/demo_3/actions"][:] = acts
    with pytest.raises(DataError, match=rf"{demo_file}:demo_3:actions: NaN or inf at steps \[0\]"):
        _dm(demo_file)


def test_corrupt_frame_in_a_worker_surfaces_as_a_clear_error(demo_file):
    import h5py

    with h5py.File(demo_file) as f:
        offset = f["data/demo_0/obs/agentview_rgb"].id.get_chunk_info(0).byte_offset
    with open(demo_file, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * 32)
    dm = _dm(demo_file, num_workers=1, val_fraction=0.0, batch_size=200)
    with pytest.raises(Exception, match=r"demo_0:obs/agentview_rgb\[0\]: cannot read") as err:
        next(iter(dm.train_dataloader()))
    assert "DataFormatError" in str(err.value) or type(err.value).__name__ == "DataFormatError"
    with pytest.raises(DataError, match=r"demo_0:obs/agentview_rgb\[0\]: unreadable frame"):
        _dm(demo_file, deep_validation=True)


def test_config_fields_are_typed_and_checked(demo_file):
    with pytest.raises(ConfigError, match="batch_size"):
        DemoDataModule(sources=[{"path": str(demo_file)}], batch_size="eight")
    with pytest.raises(ConfigError, match="Key 'bach_size' not in 'DataConfig'"):
        DemoDataModule(sources=[{"path": str(demo_file)}], bach_size=8)
    with pytest.raises(ConfigError, match=r"data.val_fraction: must be in \[0, 1\)"):
        DemoDataModule(sources=[{"path": str(demo_file)}], val_fraction=1.5)
    with pytest.raises(ConfigError, match="augmentation.crop.scale"):
        DemoDataModule(sources=[{"path": str(demo_file)}], augmentation={"crop": {"scale": [0.9, 0.5]}})
    with pytest.raises(EmptyDatasetError, match="data.sources is empty"):
        DemoDataModule().setup()


def test_mixture_of_different_action_spaces_is_refused(tmp_path):
    a = make_demo_file(tmp_path / "a.hdf5", num_demos=2, image_size=8)
    b = make_demo_file(
        tmp_path / "b.hdf5", num_demos=2, image_size=8, action_space=ActionSpace(gripper_dims=[5])
    )
    with pytest.raises(DataError, match="a mixture needs one action space"):
        _dm(None, sources=[{"path": str(a)}, {"path": str(b)}], image_size=8)


def test_libero_datamodule_reads_both_variants(libero_root):
    for suite, _variant in (("libero_spatial", "raw"), ("libero_10", "no_noops")):
        dm = LiberoDataModule(
            suite=suite,
            root=str(libero_root),
            num_workers=0,
            image_size=16,
            augmentation=NO_AUG,
            batch_size=2,
            chunk_size=2,
        )
        dm.setup()
        batch = next(iter(dm.train_dataloader()))
        assert batch[keys.STATE].shape == (2, 8)  # ee_states (6) + gripper_states (2)
        assert batch[keys.image_key("agentview")].shape == (2, 3, 16, 16)
        assert len(dm.instructions) == 2
        # Framework gripper convention: 1 = open, 0 = closed (gripper dim is not normalized).
        assert set(torch.unique(batch[keys.ACTION][..., 6]).tolist()) <= {0.0, 1.0}
    with pytest.raises(DataError, match="unknown LIBERO suite"):
        LiberoDataModule(suite="libero_100", root=str(libero_root)).setup()
    with pytest.raises(ConfigError, match="data.variant"):
        LiberoDataModule(suite="libero_10", root=str(libero_root), variant="newest")


def test_training_order_depends_only_on_seed_and_epoch(demo_file):
    from vla_lab.data.sampler import EpochSampler

    a, b = EpochSampler(50, seed=3), EpochSampler(50, seed=3)
    first = list(a)
    assert sorted(i for i, _ in first) == list(range(50))  # a permutation: every frame once per epoch
    assert len({seed for _, seed in first}) == 50  # and a seed per sample for its augmentation
    a.set_epoch(1)
    second = list(a)
    assert second != first
    b.set_epoch(1)
    assert list(b) == second  # a fresh sampler (a resumed run) at epoch 1 draws the same order
    dm = _dm(demo_file, val_fraction=0.0)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(2)
    order = list(loader.sampler)
    loader2 = _dm(demo_file, val_fraction=0.0).train_dataloader()
    loader2.sampler.set_epoch(2)
    assert list(loader2.sampler) == order


def test_augmentation_is_a_function_of_the_sample_seed(demo_file):
    dm = _dm(demo_file, augmentation=None, val_fraction=0.0)
    ds = dm.train_set
    key = keys.image_key("agentview")
    a, b, c = ds[(3, 11)][key], ds[(3, 11)][key], ds[(3, 12)][key]
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(0)
    d = ds[(3, 11)][key]
    assert torch.equal(a, d)  # global random state plays no part


def test_processor_config_records_the_camera_resolution(demo_file):
    """Evaluation renders at the resolution the training images had, so crop and resize match."""
    dm = _dm(demo_file, image_size=24)
    cfg = dm.processor_config()
    assert cfg["camera_size"] == 32 and cfg["image_size"] == 24


def test_aux_keys_arrive_raw_and_a_missing_one_is_named(demo_file):
    import h5py

    dm = _dm(demo_file, aux_keys=["ee_pos"])
    batch = next(iter(dm.train_dataloader()))
    aux = batch[keys.aux_key("ee_pos")]
    assert aux.shape == (4, 3) and aux.dtype == torch.float32
    ds = dm.train_set
    with h5py.File(demo_file) as f:
        for row in range(4):
            ep = ds.episodes[int(batch[keys.EPISODE_INDEX][row])]
            raw = f["data"][ep.demo]["obs/ee_pos"][int(batch[keys.FRAME_INDEX][row])]
            np.testing.assert_array_equal(aux[row].numpy(), raw)  # not normalized: a target, not an input
    assert keys.aux_key("ee_pos") not in _dm(demo_file).train_set[0]
    with pytest.raises(DataError, match="obs/object_yaw"):
        _dm(demo_file, aux_keys=["object_yaw"])


def test_emphasis_draws_frames_by_how_far_an_aux_key_is_from_zero(demo_file):
    import h5py

    dm = _dm(demo_file, aux_keys=["ee_pos"], emphasis={"key": "ee_pos", "saturation": 0.1, "floor": 0.2})
    ds = dm.train_set
    sampler = dm.train_dataloader().sampler
    with h5py.File(demo_file) as f:
        xy = np.concatenate([f["data"][ep.demo]["obs/ee_pos"][:, :2] for ep in ds.episodes])
    expected = 0.2 + 0.8 * np.minimum(1.0, np.linalg.norm(xy, axis=1) / 0.1)
    np.testing.assert_allclose(sampler.weights.numpy(), expected, rtol=1e-6)
    assert expected.min() < 0.9 < expected.max()  # the file has frames on both sides
    sampler.num_samples = 20_000
    drawn = np.bincount([i for i, _ in sampler], minlength=len(ds)) / 20_000
    heavy, light = expected > 0.99, expected < 0.5
    assert heavy.any() and light.any()
    # per frame, a full-weight frame comes up more than twice as often as one weighing under half
    assert drawn[heavy].mean() > 2 * drawn[light].mean()


def test_emphasis_key_must_be_an_aux_key(demo_file):
    with pytest.raises(ConfigError, match="data.emphasis.key"):
        _dm(demo_file, aux_keys=[], emphasis={"key": "object_offset"})


@pytest.mark.parametrize(
    "augmentation",
    [
        {"crop": {"enabled": False}},  # the demo's: colour jitter alone, done batch-wide
        {"crop": {"enabled": True, "scale": [0.8, 1.0]}, "noise": {"enabled": True, "std": 0.05}},
        None,
    ],
)
def test_a_loader_batch_is_its_samples_collated(demo_file, augmentation, tmp_path):
    """Batches are assembled whole (one colour-jitter pass per batch), yet every image's random
    draws still come from its own sampler seed: the loader's batch equals dataset[(i, seed)] collated."""
    from torch.utils.data import default_collate

    dm = _dm(demo_file, augmentation=augmentation, batch_size=6, samples_per_epoch=12, image_size=20)
    loader = dm.train_dataloader()
    keys_ = list(loader.sampler)[:6]
    batch = next(iter(loader))
    expected = default_collate([dm.train_set[k] for k in keys_])
    one_by_one = _dm(
        demo_file,
        augmentation=augmentation,
        batch_size=6,
        samples_per_epoch=12,
        image_size=20,
        batch_fetch=False,
    )
    assert_same_batch(next(iter(one_by_one.train_dataloader())), expected)
    assert_same_batch(batch, expected)
    assert dm.train_set.cached_bytes > 0  # the episodes read were kept


def assert_same_batch(batch, expected):
    assert batch.keys() == expected.keys()
    for k, v in expected.items():
        if isinstance(v, torch.Tensor):
            torch.testing.assert_close(batch[k], v, atol=1e-6, rtol=0, msg=k)
        else:
            assert batch[k] == v, k


def test_frame_cache_respects_its_budget_and_streams_past_it(demo_file):
    frame_bytes = 32 * 32 * 3  # the recorded frames (demo_file), whatever the training size
    dm = _dm(demo_file, cache_bytes=0, image_size=20)
    streamed = [dm.train_set[i][keys.image_key("agentview")] for i in range(0, 40, 7)]
    assert dm.train_set.cached_bytes == 0
    one_episode = dm.train_set.episodes[0].length * frame_bytes
    dm_small = _dm(demo_file, cache_bytes=one_episode, image_size=20)
    cached = [dm_small.train_set[i][keys.image_key("agentview")] for i in range(0, 40, 7)]
    assert 0 < dm_small.train_set.cached_bytes <= one_episode
    for a, b in zip(streamed, cached, strict=True):
        assert torch.equal(a, b)
