"""Frame-level dataset over demonstration files.

Low-dimensional arrays (actions, proprio) of the selected episodes are loaded once at construction
(bytes per transition: 4·(A + P)); images are read frame by frame through an HDF5 handle that each
DataLoader worker opens for itself on first use, so the dataset is safe with ``num_workers > 0`` and
its memory does not grow with the number of images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from vla_lab.config import keys
from vla_lab.data.normalize import Normalizer
from vla_lab.data.reader import DemoSource, EpisodeRef
from vla_lab.data.transforms import GeometricAugment
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

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """``dataset[i]``, or ``dataset[(i, seed)]`` to draw that sample's augmentation from ``seed``."""
        if isinstance(key, tuple):
            index, seed = key
            with cpu_rng_seeded(seed):
                return self._sample(int(index))
        return self._sample(int(key))

    def _sample(self, index: int) -> dict:
        e, t = int(self._ep_of[index]), int(self._t_of[index])
        ep = self.episodes[e]
        src, f = self.sources[ep.file], self._handle(ep.file)
        images = {
            cam: torch.from_numpy(src.read_frame(f, ep.demo, cam, t)).permute(2, 0, 1) for cam in self.cameras
        }
        actions, is_pad = self._chunk(self._actions[e], t)
        actions = torch.from_numpy(actions)
        if self.geometric is not None and self.geometric.active:
            images, actions = self.geometric(images, actions)
        sample = {keys.image_key(cam): self.image_transform(img) for cam, img in images.items()}
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
        return state

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles = {}
