"""Image augmentation (torchvision.transforms.v2) and the evaluation transform that matches it.

``build_image_transform(aug, size, train=...)`` is the single place both are made, so whatever crop
training uses, evaluation applies its deterministic counterpart: a center crop of the mean area of
the training crop's scale range, resized to the same size (OpenVLA's recipe). Inputs are uint8
``(3, H, W)`` tensors; outputs float32 in [0, 1].

Geometric augmentations that change what an action means (mirror, rotation) act on the whole sample
(images and action chunk) and are enabled only when the dataset's action space declares how.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as F

from vla_lab.config.schemas import AugmentationConfig
from vla_lab.data.format import ActionSpace


class CenterCropFraction(torch.nn.Module):
    """Center crop keeping ``area`` of the image (square side sqrt(area) of the shorter side)."""

    def __init__(self, area: float):
        super().__init__()
        self.area = area

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        side = max(1, round(math.sqrt(self.area) * min(h, w)))
        return F.center_crop(img, [side, side])


def eval_crop_area(aug: AugmentationConfig) -> float:
    return (aug.crop.scale[0] + aug.crop.scale[1]) / 2 if aug.crop.enabled else 1.0


def eval_image_transform(size: int, crop_area: float = 1.0) -> Callable:
    """The deterministic transform evaluation applies: center crop ``crop_area``, resize, to float.

    Saved with checkpoints as ``(size, crop_area)`` so a policy is always evaluated the way it trained.
    """
    steps: list[torch.nn.Module] = [CenterCropFraction(crop_area)] if crop_area < 1.0 else []
    return T.Compose([*steps, T.Resize((size, size), antialias=True), T.ToDtype(torch.float32, scale=True)])


def build_image_transform(aug: AugmentationConfig, size: int, *, train: bool) -> Callable:
    if not train:
        return eval_image_transform(size, eval_crop_area(aug))
    steps: list[torch.nn.Module] = []
    if aug.crop.enabled:
        steps.append(
            T.RandomResizedCrop(
                size, scale=tuple(aug.crop.scale), ratio=tuple(aug.crop.ratio), antialias=True
            )
        )
    else:
        steps.append(T.Resize((size, size), antialias=True))
    steps.append(T.ToDtype(torch.float32, scale=True))
    if aug.color_jitter.enabled:
        cj = aug.color_jitter
        jitter = LinearColorJitter if cj.impl == "linear" else T.ColorJitter
        steps.append(
            jitter(
                brightness=cj.brightness,
                contrast=tuple(cj.contrast),
                saturation=tuple(cj.saturation),
                hue=cj.hue or None,
            )
        )
    if aug.blur.enabled:
        steps.append(
            T.RandomApply([T.GaussianBlur(aug.blur.kernel_size, sigma=tuple(aug.blur.sigma))], p=aug.blur.p)
        )
    if aug.noise.enabled:
        steps.append(T.GaussianNoise(mean=0.0, sigma=aug.noise.std, clip=True))
    return T.Compose(steps)


# torchvision's grayscale weights. The device is explicit: a first import inside a
# `with torch.device("meta")` block (checkpoint loading) would otherwise leave a meta constant.
_GRAY = torch.tensor([0.2989, 0.587, 0.114], device="cpu")


def hue_rotation_matrix(hue: float | torch.Tensor) -> torch.Tensor:
    """Rotation of RGB about the gray axis by ``hue`` turns (W3C Filter Effects ``hue-rotate``):
    (3, 3) for a number, (N, 3, 3) for N hues."""
    turns = 2 * math.pi * torch.as_tensor(hue, dtype=torch.float32)
    c, s = torch.cos(turns), torch.sin(turns)
    rows = [
        [0.213 + c * 0.787 - s * 0.213, 0.715 - c * 0.715 - s * 0.715, 0.072 - c * 0.072 + s * 0.928],
        [0.213 - c * 0.213 + s * 0.143, 0.715 + c * 0.285 + s * 0.140, 0.072 - c * 0.072 - s * 0.283],
        [0.213 - c * 0.213 - s * 0.787, 0.715 - c * 0.715 + s * 0.715, 0.072 + c * 0.928 + s * 0.072],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


class LinearColorJitter(torch.nn.Module):
    """Brightness, contrast, saturation and hue folded into one affine colour map per sample.

    Brightness, contrast and saturation are exactly torchvision's (one clamp at the end instead of
    one per step); hue is a rotation about the gray axis instead of an HSV round trip: the same kind
    of change at ~1/30 of the cost, which is what keeps augmentation off the training's critical path
    on CPU. Factors are drawn as ``T.ColorJitter`` draws them; float (3, H, W) input in [0, 1], or
    (N, 3, H, W) with factors drawn for each image in turn. ``draw`` and ``apply`` split the two, so
    that a batch's factors can come from each sample's own seed and its pixels from one pass.
    """

    def __init__(self, brightness: float = 0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=None):
        super().__init__()
        self.brightness = (max(0.0, 1 - brightness), 1 + brightness)
        self.contrast, self.saturation, self.hue = tuple(contrast), tuple(saturation), hue or 0.0

    @staticmethod
    def _draw(lo: float, hi: float) -> float:
        return float(torch.empty(()).uniform_(lo, hi)) if hi > lo else lo

    def draw(self) -> tuple[float, float, float, float]:
        """One image's (brightness, contrast, saturation, hue) from the CPU generator."""
        return (
            self._draw(*self.brightness),
            self._draw(*self.contrast),
            self._draw(*self.saturation),
            self._draw(-self.hue, self.hue),
        )

    @staticmethod
    def apply(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images, (N, 4) factors from ``draw``: every image's colour map at once."""
        b, c, s, h = factors.to(images.dtype).unbind(-1)
        eye = torch.eye(3, dtype=images.dtype)
        saturate = s[:, None, None] * eye + (1 - s)[:, None, None] * _GRAY.to(images.dtype).expand(3, 3)
        matrix = (c * b)[:, None, None] * saturate  # brightness, contrast, then saturation
        # contrast blends towards the (brightened) image's mean gray: an offset, not a matrix
        offset = ((1 - c) * b * (images.mean((-2, -1)) @ _GRAY.to(images.dtype)))[:, None] * saturate.sum(-1)
        if bool((h != 0).any()):
            rotate = torch.where((h != 0)[:, None, None], hue_rotation_matrix(h), eye)
            matrix, offset = rotate @ matrix, (rotate @ offset[..., None])[..., 0]
        out = torch.einsum("nij,njhw->nihw", matrix, images) + offset[:, :, None, None]
        return out.clamp_(0.0, 1.0)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        images = img[None] if img.dim() == 3 else img
        factors = torch.tensor([self.draw() for _ in range(len(images))])
        out = self.apply(images, factors)
        return out[0] if img.dim() == 3 else out


class BatchAugment:
    """A per-image training transform applied to a batch: each image's random draws come from its
    own seed (the sampler's), exactly as when the images are transformed one by one, but a trailing
    ``LinearColorJitter`` only draws per image and maps the colours of the whole batch in one pass,
    ~10x cheaper per image on CPU. ``prepare`` runs per image (inside that image's seed),
    ``finish`` once per batch."""

    def __init__(self, transform: T.Compose):
        steps = list(transform.transforms)
        self.jitter = steps[-1] if steps and isinstance(steps[-1], LinearColorJitter) else None
        self.steps = steps[:-1] if self.jitter is not None else steps

    def prepare(self, img: torch.Tensor) -> tuple[torch.Tensor, tuple | None]:
        for step in self.steps:
            img = step(img)
        return img, (self.jitter.draw() if self.jitter is not None else None)

    def finish(self, images: list[torch.Tensor], factors: list[tuple | None]) -> torch.Tensor:
        batch = torch.stack(images)
        return batch if self.jitter is None else self.jitter.apply(batch, torch.tensor(factors))


class GeometricAugment:
    """Mirror/rotate every camera of a sample and transform its action chunk to match.

    Mirror: image flipped left-right and the action dims in ``action_space.mirror_negate`` negated.
    Rotation by θ (counter-clockwise in the image): planar dims (image-right, image-up) rotated by θ;
    for absolute action spaces the yaw dim shifts by θ (a delta yaw is invariant). Proprio is not
    changed, so these suit policies that do not read the state.
    """

    def __init__(
        self, aug: AugmentationConfig, action_space: ActionSpace, generator: torch.Generator | None = None
    ):
        self.flip_p = aug.flip.p if aug.flip.enabled and action_space.mirror_negate else 0.0
        self.max_deg = aug.rotate.degrees if aug.rotate.enabled and action_space.planar_dims else 0.0
        self.negate = list(action_space.mirror_negate or [])
        self.planar = list(action_space.planar_dims or [])
        self.yaw = action_space.yaw_dim
        self.absolute = not action_space.kind.startswith("delta")
        self.gen = generator

    @property
    def active(self) -> bool:
        return self.flip_p > 0 or self.max_deg > 0

    def __call__(self, images: dict[str, torch.Tensor], actions: torch.Tensor):
        if self.flip_p > 0 and torch.rand((), generator=self.gen) < self.flip_p:
            images = {k: F.horizontal_flip(v) for k, v in images.items()}
            actions = actions.clone()
            actions[..., self.negate] = -actions[..., self.negate]
        if self.max_deg > 0:
            deg = float((torch.rand((), generator=self.gen) * 2 - 1) * self.max_deg)
            images = {k: F.rotate(v, deg) for k, v in images.items()}
            actions = rotate_planar(actions, self.planar, math.radians(deg))
            if self.absolute and self.yaw is not None:
                actions[..., self.yaw] += math.radians(deg)
        return images, actions


def rotate_planar(actions: torch.Tensor, dims: list[int], theta: float) -> torch.Tensor:
    i, j = dims
    c, s = math.cos(theta), math.sin(theta)
    out = actions.clone()
    out[..., i] = c * actions[..., i] - s * actions[..., j]
    out[..., j] = s * actions[..., i] + c * actions[..., j]
    return out
