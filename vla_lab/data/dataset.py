"""Frame-level dataset over demonstration files.

Low-dimensional arrays (actions, proprio) of the selected episodes are loaded once at construction
(bytes per transition: 4·(A + P)); images are read through an HDF5 handle that each DataLoader
worker opens for itself on first use, so the dataset is safe with ``num_workers > 0``. An episode's
decoded frames are kept in memory on first use (one read for the whole episode) while the process's
``cache_bytes`` budget lasts; past it, frames stream from the file one by one.

A DataLoader asks for whole batches (``__getitems__``, collated by ``collate_batch``): the per-image
draws stay per sample and seeded as in ``dataset[(i, seed)]``, so a batch is the same as its samples
collated, while the colour jitter runs once over the batch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from vla_lab.config import keys
from vla_lab.data.normalize import Normalizer
from vla_lab.data.reader import DemoSource, EpisodeRef
from vla_lab.data.transforms import BatchAugment, GeometricAugment
from vla_lab.seeding import cpu_rng_seeded


class DemoDataset(Dataset):
    def __init__(
        self,
        sources: dict[str, DemoSource],
        episodes: Sequence[EpisodeRef],
        *,
        cameras: Sequence[str],
        proprio_keys: Sequence[str],
        chunk_size: int,
        normalizer: Normalizer | None,
        image_transform,
        geometric: GeometricAugment | None = None,
        source_ids: Sequence[int] | None = None,
        episode_offset: int = 0,
        aux_keys: Sequence[str] = (),
        cache_bytes: int = 0,
        batch_fetch: bool = True,
    ):
        self.sources, self.episodes = sources, list(episodes)
        self.aux_keys = list(aux_keys)
        self.cameras, self.proprio_keys = list(cameras), list(proprio_keys)
        self.chunk_size, self.normalizer = chunk_size, normalizer
        self.image_transform, self.geometric = image_transform, geometric
        self.source_ids = list(source_ids) if source_ids is not None else [0] * len(self.episodes)
        self.episode_offset = episode_offset
        self._actions, self._states, self._aux = self._load_low_dim()
        lengths = np.array([ep.length for ep in self.episodes], dtype=np.int64)
        self._ep_of = np.repeat(np.arange(len(self.episodes), dtype=np.int32), lengths)
        self._t_of = (
            np.concatenate([np.arange(n, dtype=np.int32) for n in lengths])
            if len(lengths)
            else np.zeros(0, np.int32)
        )
        self._handles: dict[str, h5py.File] = {}
        self._pid = os.getpid()
        self.cache_bytes = cache_bytes
        self._frames: dict[tuple[int, str], np.ndarray] = {}
        self._streamed: set[tuple[int, str]] = set()
        self._cache_free = cache_bytes
        self._batch_augment = (
            BatchAugment(image_transform) if hasattr(image_transform, "transforms") else None
        )

    def _load_low_dim(self) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, list[np.ndarray]]]:
        by_file: dict[str, list[int]] = {}
        for i, ep in enumerate(self.episodes):
            by_file.setdefault(ep.file, []).append(i)
        actions, states = [None] * len(self.episodes), [None] * len(self.episodes)
        aux: dict[str, list[np.ndarray]] = {k: [None] * len(self.episodes) for k in self.aux_keys}
        for path, idx in by_file.items():
            src = self.sources[path]
            with src.open() as f:
                for i in idx:
                    ep = self.episodes[i]
                    actions[i] = src.read_actions(f, ep.demo)
                    states[i] = src.read_proprio(f, ep.demo, self.proprio_keys) if self.proprio_keys else None
                    for k in self.aux_keys:
                        aux[k][i] = src.read_proprio(f, ep.demo, [k])
        return actions, states, aux

    def __len__(self) -> int:
        return len(self._ep_of)

    @property
    def frames_per_episode(self) -> np.ndarray:
        return np.array([ep.length for ep in self.episodes])

    def aux_norms(self, key: str, dims: list[int]) -> np.ndarray:
        """Per sample: the Euclidean norm of aux key ``key`` over ``dims`` at that frame."""
        if key not in self._aux:
            raise KeyError(f"aux key {key!r} is not loaded (data.aux_keys: {list(self._aux)})")
        per_episode = [np.asarray(a, dtype=np.float64) for a in self._aux[key]]
        width = per_episode[0].shape[1] if per_episode else 0
        bad = [d for d in dims if not -width <= d < width]
        if bad:
            raise ValueError(f"data.emphasis.dims {bad} out of range for {key!r} of width {width}")
        values = np.concatenate(per_episode)[:, dims]
        assert len(values) == len(self), "aux arrays and sample index disagree"
        return np.linalg.norm(values, axis=1)

    def sample_source_ids(self) -> np.ndarray:
        """Source index of every sample (for mixture weighting)."""
        return np.asarray(self.source_ids, dtype=np.int64)[self._ep_of]

    def _handle(self, path: str) -> h5py.File:
        # A handle inherited through fork is shared with the parent and unsafe: reopen per process.
        if os.getpid() != self._pid:
            self._handles, self._pid = {}, os.getpid()
        f = self._handles.get(path)
        if f is None:
            f = self._handles[path] = self.sources[path].open()
        return f

    def frame(self, e: int, camera: str, t: int) -> np.ndarray:
        """Frame ``t`` of episode ``e``: from memory when the episode is cached or fits the budget."""
        frames = self._frames.get((e, camera))
        if frames is not None:
            return frames[t]
        ep = self.episodes[e]
        src, f = self.sources[ep.file], self._handle(ep.file)
        # the budget only shrinks: an episode that did not fit once streams from then on, unmeasured
        if (e, camera) not in self._streamed:
            if int(np.prod(src.image_dataset(f, ep.demo, camera).shape)) <= self._cache_free:
                frames = self._frames[(e, camera)] = src.read_frames(f, ep.demo, camera)
                self._cache_free -= frames.nbytes
                return frames[t]
            self._streamed.add((e, camera))
        return src.read_frame(f, ep.demo, camera, t)

    @property
    def cached_bytes(self) -> int:
        return self.cache_bytes - self._cache_free

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """``dataset[i]``, or ``dataset[(i, seed)]`` to draw that sample's augmentation from ``seed``."""
        if isinstance(key, tuple):
            index, seed = key
            with cpu_rng_seeded(seed):
                return self._sample(int(index))
        return self._sample(int(key))

    def __getitems__(self, keys_: list) -> dict:
        """The batch of ``dataset[k] for k in keys_``, collated, with the colour jitter's pixel work
        done once for the whole batch (``BatchAugment``)."""
        if self._batch_augment is None:
            return [self[k] for k in keys_]
        pending = []
        for key in keys_:
            index, seed = key if isinstance(key, tuple) else (key, None)
            with cpu_rng_seeded(seed) if seed is not None else contextlib.nullcontext():
                pending.append(self._sample(int(index), self._batch_augment.prepare))
        image_keys = [keys.image_key(cam) for cam in self.cameras]
        batch = default_collate([{k: v for k, v in s.items() if k not in image_keys} for s in pending])
        for key in image_keys:
            images, factors = zip(*(s[key] for s in pending), strict=True)
            batch[key] = self._batch_augment.finish(list(images), list(factors))
        return batch

    def _sample(self, index: int, transform=None) -> dict:
        e, t = int(self._ep_of[index]), int(self._t_of[index])
        images = {cam: torch.from_numpy(self.frame(e, cam, t)).permute(2, 0, 1) for cam in self.cameras}
        actions, is_pad = self._chunk(self._actions[e], t)
        actions = torch.from_numpy(actions)
        if self.geometric is not None and self.geometric.active:
            images, actions = self.geometric(images, actions)
        transform = transform or self.image_transform
        sample = {keys.image_key(cam): transform(img) for cam, img in images.items()}
        ep = self.episodes[e]
        if self.normalizer is not None:
            actions = self.normalizer.normalize_action(actions)
        sample[keys.ACTION] = actions
        sample[keys.ACTION_IS_PAD] = torch.from_numpy(is_pad)
        if self.proprio_keys:
            state = torch.from_numpy(self._states[e][t])
            sample[keys.STATE] = self.normalizer.normalize_state(state) if self.normalizer else state
        for k in self.aux_keys:
            sample[keys.aux_key(k)] = torch.from_numpy(self._aux[k][e][t])
        sample[keys.TASK] = ep.instruction
        sample[keys.EPISODE_INDEX] = e + self.episode_offset
        sample[keys.FRAME_INDEX] = t
        sample[keys.SOURCE_INDEX] = self.source_ids[e]
        return sample

    def _chunk(self, actions: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        idx = t + np.arange(self.chunk_size)
        is_pad = idx >= len(actions)
        return actions[np.minimum(idx, len(actions) - 1)].copy(), is_pad

    def action_chunks(self, max_chunks: int, seed: int = 0) -> np.ndarray:
        """(N, K, A) float32 normalized chunks (end-of-episode padding as in samples) of at most
        ``max_chunks`` samples drawn without replacement by ``seed``; reads no images."""
        n = len(self)
        if max_chunks < 1 or n == 0:
            raise ValueError(
                f"need max_chunks >= 1 and a non-empty dataset, got {max_chunks} and {n} samples"
            )
        idx = (
            np.arange(n)
            if n <= max_chunks
            else np.sort(np.random.default_rng(seed).choice(n, max_chunks, False))
        )
        chunks = np.stack([self._chunk(self._actions[self._ep_of[i]], int(self._t_of[i]))[0] for i in idx])
        chunks = chunks.astype(np.float32)
        return self.normalizer.normalize_action(chunks) if self.normalizer is not None else chunks

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handles"] = {}  # h5py handles cannot be pickled (spawn start method); workers reopen
        # a spawned worker fills a cache of its own (a forked one shares the parent's pages)
        state["_frames"], state["_streamed"], state["_cache_free"] = {}, set(), self.cache_bytes
        return state

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles = {}


def collate_batch(batch: dict | list[dict]) -> dict:
    """The DataLoader's ``collate_fn``: a dataset's ``__getitems__`` already returns a batch."""
    return batch if isinstance(batch, dict) else default_collate(batch)
