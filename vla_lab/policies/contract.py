"""The policy contract every vla_lab policy implements, and the observation checks they share.

``forward(batch) -> (loss, logs)`` trains; ``predict_action_chunk(obs) -> (B, K, A)`` returns
*normalized* actions (the policy's processor un-normalizes them); ``select_action(obs) -> (B, A)``
serves one action per control step from a queue over the chunk, or — with
``temporal_ensemble_coeff`` set — re-plans every step and blends the overlapping chunks with
exponential weights ``w_i = exp(-coeff * i)`` (i = 0 for the oldest prediction, as in ACT);
``reset()`` clears that state between episodes.
"""

from __future__ import annotations

import abc
import copy
from collections import deque
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from vla_lab.config import keys

Batch = Mapping[str, object]


class TemporalEnsembler:
    """Blends every chunk predicted so far that covers the current step."""

    def __init__(self, coeff: float, chunk_size: int) -> None:
        self.coeff = float(coeff)
        self.chunk_size = int(chunk_size)
        self.weights = torch.exp(-self.coeff * torch.arange(chunk_size, dtype=torch.float64))
        self.cum_weights = torch.cumsum(self.weights, dim=0)
        self.reset()

    def reset(self) -> None:
        self._avg: torch.Tensor | None = None  # (B, L, A): running weighted mean for the next L steps
        self._count: torch.Tensor | None = None  # (L,): how many chunks contributed to each step

    def update(self, chunk: torch.Tensor) -> torch.Tensor:
        chunk = chunk.to(torch.float64)
        if self._avg is None:
            self._avg = chunk.clone()
            self._count = torch.ones(chunk.shape[1], dtype=torch.long)
        else:
            n = self._count
            w_prev = self.cum_weights[n - 1].view(1, -1, 1)
            w_new = self.weights[n].view(1, -1, 1)
            overlap = self._avg.shape[1]
            self._avg = (self._avg * w_prev + chunk[:, :overlap] * w_new) / (w_prev + w_new)
            self._count = torch.clamp(n + 1, max=self.chunk_size - 1)
            self._avg = torch.cat([self._avg, chunk[:, overlap:]], dim=1)
            self._count = torch.cat([self._count, torch.ones(chunk.shape[1] - overlap, dtype=torch.long)])
        action, self._avg, self._count = self._avg[:, 0], self._avg[:, 1:], self._count[1:]
        return action.to(torch.float32)


class VLAPolicy(nn.Module, abc.ABC):
    """Base class: subclasses implement ``forward`` and ``predict_action_chunk``."""

    #: Registry name, e.g. ``"openvla"``.
    name: str = ""

    def __init__(
        self, chunk_size: int, n_action_steps: int | None = None, temporal_ensemble_coeff: float | None = None
    ) -> None:
        super().__init__()
        n_action_steps = chunk_size if n_action_steps is None else n_action_steps
        if not 1 <= n_action_steps <= chunk_size:
            raise ValueError(f"n_action_steps must be in [1, chunk_size={chunk_size}], got {n_action_steps}")
        if temporal_ensemble_coeff is not None and n_action_steps != 1:
            raise ValueError("temporal ensembling re-plans every step: set n_action_steps=1")
        self.chunk_size = chunk_size
        self.n_action_steps = n_action_steps
        self.temporal_ensemble_coeff = temporal_ensemble_coeff
        self._queue: deque[torch.Tensor] = deque()
        self._ensembler = (
            TemporalEnsembler(temporal_ensemble_coeff, chunk_size)
            if temporal_ensemble_coeff is not None
            else None
        )

    def configure_execution(
        self, n_action_steps: int | None = None, temporal_ensemble_coeff: float | None = None
    ) -> None:
        """Choose how ``select_action`` executes chunks (evaluation-time setting; clears the queue)."""
        n_action_steps = self.chunk_size if n_action_steps is None else n_action_steps
        if not 1 <= n_action_steps <= self.chunk_size:
            raise ValueError(
                f"n_action_steps must be in [1, chunk_size={self.chunk_size}], got {n_action_steps}"
            )
        if temporal_ensemble_coeff is not None and n_action_steps != 1:
            n_action_steps = 1  # ensembling re-plans every step by definition
        self.n_action_steps = n_action_steps
        self.temporal_ensemble_coeff = temporal_ensemble_coeff
        self._ensembler = (
            TemporalEnsembler(temporal_ensemble_coeff, self.chunk_size)
            if temporal_ensemble_coeff is not None
            else None
        )
        self.reset()

    @abc.abstractmethod
    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]: ...

    @abc.abstractmethod
    def predict_action_chunk(self, observation: Batch) -> torch.Tensor: ...

    @torch.no_grad()
    def select_action(self, observation: Batch) -> torch.Tensor:
        chunk = self.predict_action_chunk(observation) if self.needs_chunk() else None
        return self.next_action(chunk)

    def needs_chunk(self) -> bool:
        """Whether the next ``select_action`` predicts a chunk (re-planning, or an empty queue)."""
        return self._ensembler is not None or not self._queue

    def next_action(self, chunk: torch.Tensor | None) -> torch.Tensor:
        """The next action: from ``chunk`` (B, K, A) when :meth:`needs_chunk`, from the queue
        otherwise. Several views' chunks can thus come from one batched forward pass."""
        if self._ensembler is not None:
            return self._ensembler.update(chunk)
        if not self._queue:
            self._queue.extend(chunk[:, : self.n_action_steps].transpose(0, 1))
        return self._queue.popleft()

    def reset(self) -> None:
        self._queue.clear()
        if self._ensembler is not None:
            self._ensembler.reset()

    def execution_view(self) -> VLAPolicy:
        """The same policy (shared weights, no copy) with its own action queue and ensembler, so
        several episodes can run concurrently, one view each."""
        view = copy.copy(self)
        view._queue = deque()
        view._ensembler = (
            TemporalEnsembler(self.temporal_ensemble_coeff, self.chunk_size)
            if self.temporal_ensemble_coeff is not None
            else None
        )
        return view


def check_images(observation: Batch, cameras: Sequence[str], size: int) -> list[torch.Tensor]:
    """Returns the images of ``cameras`` in order, after checking dtype, channels and size."""
    images = []
    for cam in cameras:
        key = keys.image_key(cam)
        if key not in observation:
            present = sorted(k for k in observation if k.startswith(keys.IMAGE_PREFIX))
            raise KeyError(f"missing image {key!r}; the observation has {present}")
        img = observation[key]
        if not isinstance(img, torch.Tensor) or img.ndim != 4:
            raise ValueError(
                f"{key} must be a float tensor (B, 3, H, W), got {type(img).__name__} "
                f"{tuple(getattr(img, 'shape', ()))}"
            )
        if img.shape[1] != 3:
            raise ValueError(f"{key} must have 3 channels (B, 3, H, W), got shape {tuple(img.shape)}")
        if tuple(img.shape[-2:]) != (size, size):
            raise ValueError(
                f"{key} must be {size}x{size} (the configured image size), got "
                f"{img.shape[-2]}x{img.shape[-1]}"
            )
        if not img.is_floating_point():
            raise ValueError(f"{key} must be float in [0, 1], got dtype {img.dtype}")
        images.append(img)
    return images


def check_actions(batch: Batch, chunk_size: int, action_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    if keys.ACTION not in batch:
        raise KeyError(f"training batch lacks {keys.ACTION!r}")
    action = batch[keys.ACTION]
    if action.ndim != 3 or action.shape[1] != chunk_size or action.shape[2] != action_dim:
        raise ValueError(f"{keys.ACTION} must be (B, {chunk_size}, {action_dim}), got {tuple(action.shape)}")
    pad = batch.get(keys.ACTION_IS_PAD)
    if pad is None:
        pad = torch.zeros(action.shape[:2], dtype=torch.bool, device=action.device)
    return action, pad.to(torch.bool)


def tasks_of(observation: Batch, batch_size: int) -> list[str]:
    task = observation.get(keys.TASK)
    if task is None:
        raise KeyError(f"observation lacks the instruction {keys.TASK!r}")
    if isinstance(task, str):
        task = [task]
    task = list(task)
    if len(task) != batch_size:
        raise ValueError(f"{keys.TASK} has {len(task)} instructions for a batch of {batch_size}")
    return task
