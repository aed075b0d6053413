"""LightningDataModules over demonstration files (ours and LIBERO's).

``setup()`` opens and checks every file (so bad data fails here, with file/demo/key, never inside a
DataLoader worker mid-epoch), filters demos, splits train/val **by episode** deterministically,
computes (or loads cached) normalization statistics on the training episodes and builds the
datasets. The normalizer and the evaluation image transform it produces are what policy processors
save with a checkpoint.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from vla_lab.config.schemas import DataConfig, LiberoDataConfig, to_schema
from vla_lab.data.dataset import DemoDataset, collate_batch
from vla_lab.data.errors import DataError, EmptyDatasetError
from vla_lab.data.filter import FilterReport, filter_episodes
from vla_lab.data.format import ActionSpace
from vla_lab.data.libero import suite_files
from vla_lab.data.normalize import Normalizer
from vla_lab.data.reader import DemoSource, EpisodeRef, expand_paths
from vla_lab.data.sampler import EpochSampler
from vla_lab.data.stats import DatasetStats, load_or_compute_stats
from vla_lab.data.transforms import GeometricAugment, build_image_transform, eval_crop_area
from vla_lab.data.validate import validate_source

log = logging.getLogger(__name__)


def split_episodes(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic episode split; keeps at least one training episode and, if asked, one val."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    n_val = min(max(n_val, 1), n - 1) if val_fraction > 0 and n >= 2 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class DemoDataModule(L.LightningDataModule):
    schema: type = DataConfig

    def __init__(self, **cfg: Any):
        super().__init__()
        cfg.pop("_target_", None)
        self.cfg = to_schema(self.schema, cfg)
        self.save_hyperparameters({"data": cfg_to_dict(self.cfg)})
        self.sources: dict[str, DemoSource] = {}
        self.train_set = self.val_set = None
        self.normalizer: Normalizer | None = None
        self.stats: DatasetStats | None = None
        self.filter_report: FilterReport | None = None

    # -- files ------------------------------------------------------------------------------------
    def source_specs(self) -> list[tuple[list, float, str]]:
        """(files, weight, format) per configured source."""
        if not self.cfg.sources:
            raise EmptyDatasetError("data.sources is empty: give at least one file, directory or glob")
        return [(expand_paths(s.path), s.weight, s.format) for s in self.cfg.sources]

    def _open_sources(self) -> tuple[list[EpisodeRef], list[int], list[float]]:
        episodes, source_ids, weights = [], [], []
        for sid, (files, weight, fmt_hint) in enumerate(self.source_specs()):
            weights.append(weight)
            for path in files:
                src = DemoSource(path, fmt_hint)
                problems = validate_source(src, deep=self.cfg.deep_validation)
                if problems:
                    more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
                    raise DataError(
                        "invalid demonstration file:\n  " + "\n  ".join(map(str, problems[:5])) + more,
                        file=str(path),
                    )
                self.sources[src.path] = src
                episodes += src.episodes
                source_ids += [sid] * len(src.episodes)
        return episodes, source_ids, weights

    # -- setup ------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        episodes, source_ids, self.source_weights = self._open_sources()
        fc = self.cfg.filter
        report = filter_episodes(
            self.sources,
            episodes,
            min_length=fc.min_length,
            max_length=fc.max_length,
            require_success=fc.require_success,
            min_motion_std=fc.min_motion_std,
        )
        self.filter_report = report
        log.info("quality filter: %s", report.summary())
        if not report.kept:
            raise EmptyDatasetError(f"no demos left after filtering: {report.summary()}")
        kept = {id(e) for e in report.kept}
        pairs = [(e, s) for e, s in zip(episodes, source_ids, strict=True) if id(e) in kept]
        self.action_space = self._common_action_space()
        self.proprio_keys = self._resolve_proprio_keys()

        train_idx, val_idx = split_episodes(len(pairs), self.cfg.val_fraction, self.cfg.split_seed)
        train = [pairs[i] for i in train_idx]
        val = [pairs[i] for i in val_idx]
        self.stats = load_or_compute_stats(
            self.sources, [e for e, _ in train], self.proprio_keys, use_cache=self.cfg.stats_cache
        )
        self.normalizer = Normalizer.from_dataset_stats(
            self.stats, self.cfg.normalization, self.action_space.gripper_dims, self.cfg.state_normalization
        )
        aug = self.cfg.augmentation
        geometric = GeometricAugment(aug, self.action_space)
        if (aug.flip.enabled or aug.rotate.enabled) and not geometric.active:
            log.warning(
                "flip/rotate augmentation disabled: the dataset's action space declares no "
                "mirror_negate/planar_dims, so the image change would contradict the actions"
            )
        self.train_set = self._dataset(train, train=True, geometric=geometric)
        self.val_set = self._dataset(val, train=False, offset=len(train)) if val else None

    def _dataset(self, pairs, *, train: bool, geometric=None, offset: int = 0) -> DemoDataset:
        return DemoDataset(
            self.sources,
            [e for e, _ in pairs],
            cameras=self.cfg.cameras,
            proprio_keys=self.proprio_keys,
            aux_keys=self.cfg.aux_keys,
            chunk_size=self.cfg.chunk_size,
            normalizer=self.normalizer,
            image_transform=build_image_transform(self.cfg.augmentation, self.cfg.image_size, train=train),
            geometric=geometric if train else None,
            source_ids=[s for _, s in pairs],
            episode_offset=offset,
            cache_bytes=self.cfg.cache_bytes,
            batch_fetch=self.cfg.batch_fetch,
        )

    def _common_action_space(self) -> ActionSpace:
        spaces = {s.path: s.action_space for s in self.sources.values()}
        first_path, first = next(iter(spaces.items()))
        for path, space in spaces.items():
            if space.names != first.names or space.gripper_dims != first.gripper_dims:
                raise DataError(
                    f"action space {space.names} differs from {first.names} in {first_path}; "
                    "a mixture needs one action space",
                    file=path,
                    key="data.attrs.action_space",
                )
        return first

    def _resolve_proprio_keys(self) -> list[str]:
        if self.cfg.proprio_keys is not None:
            return list(self.cfg.proprio_keys)
        declared = {tuple(s.proprio_keys) for s in self.sources.values()}
        if len(declared) > 1:
            raise DataError(
                f"sources declare different proprio keys {sorted(declared)}; set data.proprio_keys explicitly"
            )
        return list(declared.pop())

    # -- loaders ----------------------------------------------------------------------------------
    def _loader(self, dataset, sampler=None, shuffle=False) -> DataLoader:
        workers = self.cfg.num_workers
        return DataLoader(
            dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            shuffle=shuffle,
            num_workers=workers,
            pin_memory=self.cfg.pin_memory,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            drop_last=False,
            collate_fn=collate_batch,
        )

    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        ds = self.train_set
        weights = None
        if len(set(self.source_weights)) > 1:
            sid = ds.sample_source_ids()
            counts = np.bincount(sid, minlength=len(self.source_weights)).astype(float)
            weights = (
                np.asarray(self.source_weights)[sid] / counts[sid]
            )  # each source gets its weight's share
        emphasis = self.cfg.emphasis
        if emphasis.key is not None:
            norms = ds.aux_norms(emphasis.key, emphasis.dims)
            frame = emphasis.floor + (1 - emphasis.floor) * np.minimum(1.0, norms / emphasis.saturation)
            weights = frame if weights is None else weights * frame
        sampler = EpochSampler(
            len(ds), num_samples=self.cfg.samples_per_epoch, weights=weights, seed=self.cfg.split_seed
        )
        return self._loader(ds, sampler=sampler)

    def val_dataloader(self):
        self._require_setup()
        return self._loader(self.val_set) if self.val_set is not None else []

    def _require_setup(self):
        if self.train_set is None:
            raise RuntimeError("call setup() before asking for dataloaders")

    # -- what policies and checkpoints need -------------------------------------------------------
    def processor_config(self) -> dict[str, Any]:
        """Everything evaluation must reproduce: sizes, cameras, eval crop, normalizer."""
        self._require_setup()
        return {
            "cameras": list(self.cfg.cameras),
            "image_size": self.cfg.image_size,
            "camera_size": self.camera_size(),
            "eval_crop_area": eval_crop_area(self.cfg.augmentation),
            "chunk_size": self.cfg.chunk_size,
            "proprio_keys": self.proprio_keys,
            "action_space": self.action_space.to_json(),
            "normalizer": self.normalizer.to_dict(),
        }

    def camera_size(self) -> int:
        """The recorded images' side length: evaluation renders at it, so crop and resize match training."""
        ep = self.train_set.episodes[0]
        src = self.sources[ep.file]
        with src.open() as f:
            return int(src.image_dataset(f, ep.demo, self.cfg.cameras[0]).shape[1])

    def eval_image_transform(self):
        return build_image_transform(self.cfg.augmentation, self.cfg.image_size, train=False)

    @property
    def instructions(self) -> list[str]:
        self._require_setup()
        eps = self.train_set.episodes + (self.val_set.episodes if self.val_set else [])
        return sorted({e.instruction for e in eps})

    def action_chunks(self, max_chunks: int = 10_000, seed: int = 0) -> np.ndarray:
        """Normalized action chunks (N, K, A) of the training set, as the model's targets before
        augmentation; at most ``max_chunks``, a fixed random subset (fits the FAST tokenizer)."""
        self._require_setup()
        return self.train_set.action_chunks(max_chunks, seed)

    def state_dict(self) -> dict[str, Any]:
        return {"normalizer": self.normalizer.to_dict()} if self.normalizer else {}

    def teardown(self, stage: str | None = None) -> None:
        for ds in (self.train_set, self.val_set):
            if ds is not None:
                ds.close()


class LiberoDataModule(DemoDataModule):
    """A LIBERO suite by name: ``LiberoDataModule(suite="libero_spatial", root=DIR)``."""

    schema = LiberoDataConfig

    def source_specs(self):
        files = suite_files(self.cfg.root, self.cfg.suite, self.cfg.variant)
        return [(files, 1.0, "auto")] + (super().source_specs() if self.cfg.sources else [])


def cfg_to_dict(cfg) -> dict:
    from dataclasses import asdict

    return asdict(cfg)
