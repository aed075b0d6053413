"""Typed schemas for the data and augmentation config groups.

Registered in Hydra's ConfigStore (``register_configs``) and used as the first default of every file
in ``conf/data`` and ``conf/augmentation``, so a wrong type or an unknown key fails at compose time
naming the field. Range checks that types cannot express live in ``__post_init__`` and run when the
config is turned into objects (``to_schema``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from vla_lab.config.errors import ConfigError

#: see vla_lab.data.normalize
NORMALIZATION_MODES = ("bounds_q99", "bounds", "mean_std", "identity")


def _check(cond: bool, field_name: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{field_name}: {message}")


# -- augmentation ------------------------------------------------------------------------------
@dataclass
class CropConfig:
    enabled: bool = True
    #: Area fraction range of RandomResizedCrop; evaluation center-crops the mean of this range.
    scale: list[float] = field(default_factory=lambda: [0.9, 0.9])
    ratio: list[float] = field(default_factory=lambda: [1.0, 1.0])

    def __post_init__(self):
        _check(
            len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1] <= 1,
            "augmentation.crop.scale",
            f"must be [lo, hi] with 0 < lo <= hi <= 1, got {self.scale}",
        )
        _check(
            len(self.ratio) == 2 and 0 < self.ratio[0] <= self.ratio[1],
            "augmentation.crop.ratio",
            f"must be [lo, hi] with 0 < lo <= hi, got {self.ratio}",
        )


@dataclass
class ColorJitterConfig:
    enabled: bool = True
    brightness: float = 0.2
    contrast: list[float] = field(default_factory=lambda: [0.8, 1.2])
    saturation: list[float] = field(default_factory=lambda: [0.8, 1.2])
    hue: float = 0.05
    #: ``linear``: one affine colour map per sample (hue as a rotation about the gray axis), ~10x
    #: faster on CPU; ``torchvision``: ``T.ColorJitter`` (HSV hue shift), bit-for-bit the reference.
    impl: str = "linear"

    def __post_init__(self):
        _check(
            self.impl in ("linear", "torchvision"),
            "augmentation.color_jitter.impl",
            f"must be linear or torchvision, got {self.impl!r}",
        )
        _check(0 <= self.hue <= 0.5, "augmentation.color_jitter.hue", f"must be in [0, 0.5], got {self.hue}")
        _check(self.brightness >= 0, "augmentation.color_jitter.brightness", "must be >= 0")


@dataclass
class NoiseConfig:
    enabled: bool = False
    std: float = 0.02


@dataclass
class BlurConfig:
    enabled: bool = False
    kernel_size: int = 5
    sigma: list[float] = field(default_factory=lambda: [0.1, 1.0])
    p: float = 0.5

    def __post_init__(self):
        _check(self.kernel_size % 2 == 1, "augmentation.blur.kernel_size", "must be odd")


@dataclass
class FlipConfig:
    """Left-right mirror; the action dims listed in the dataset's ``mirror_negate`` change sign."""

    enabled: bool = False
    p: float = 0.5


@dataclass
class RotateConfig:
    """Image rotation, allowed only for top-down cameras (dataset declares ``planar_dims``)."""

    enabled: bool = False
    degrees: float = 10.0


@dataclass
class AugmentationConfig:
    crop: CropConfig = field(default_factory=CropConfig)
    color_jitter: ColorJitterConfig = field(default_factory=ColorJitterConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    blur: BlurConfig = field(default_factory=BlurConfig)
    flip: FlipConfig = field(default_factory=FlipConfig)
    rotate: RotateConfig = field(default_factory=RotateConfig)


# -- data ----------------------------------------------------------------------------------------
@dataclass
class SourceConfig:
    #: A file, a directory of .hdf5 files, or a glob.
    path: str = "???"
    #: Relative sampling weight of this source in a mixture.
    weight: float = 1.0
    #: ``auto`` detects the layout; or one of vla_lab, libero, libero_no_noops.
    format: str = "auto"

    def __post_init__(self):
        _check(self.weight > 0, "data.sources.weight", f"must be > 0, got {self.weight} for {self.path}")
        _check(
            self.format in ("auto", "vla_lab", "libero", "libero_no_noops"),
            "data.sources.format",
            f"unknown format {self.format!r}",
        )


@dataclass
class FilterConfig:
    min_length: int = 2
    max_length: int | None = None
    require_success: bool = True
    #: Demos whose end-effector position std (largest axis) is below this are dropped; 0 disables.
    min_motion_std: float = 1e-3


@dataclass
class EmphasisConfig:
    """Draws training frames by how far an ``aux_keys`` entry is from zero. In a pick demonstration
    the gripper sits at the object for most frames (descend, close, lift), so a policy sees few of
    the approach frames where the image decides the action; with ``key: object_offset`` those are
    drawn more often. Weight = floor + (1 - floor) * min(1, |key[dims]| / saturation)."""

    #: an ``aux_keys`` entry; null: every frame equally likely
    key: str | None = None
    dims: list[int] = field(default_factory=lambda: [0, 1])
    #: the norm (key's units) from which a frame gets full weight
    saturation: float = 0.05
    #: the weight of a frame where the key is zero
    floor: float = 0.25

    def __post_init__(self):
        _check(self.saturation > 0, "data.emphasis.saturation", f"must be > 0, got {self.saturation}")
        _check(0 < self.floor <= 1, "data.emphasis.floor", f"must be in (0, 1], got {self.floor}")
        _check(bool(self.dims), "data.emphasis.dims", "needs at least one dimension")


@dataclass
class DataConfig:
    _target_: str = "vla_lab.data.datamodule.DemoDataModule"
    sources: list[SourceConfig] = field(default_factory=list)
    #: Cameras fed to the policy; the first is the primary view.
    cameras: list[str] = field(default_factory=lambda: ["agentview"])
    #: Proprio datasets concatenated into ``observation.state``; null = the file's declared keys.
    proprio_keys: list[str] | None = None
    #: Privileged per-frame obs datasets (e.g. ``object_pos`` from ``vla-collect record_object_pos=true``)
    #: delivered as ``aux.<key>`` training targets for auxiliary losses; never fed to the policy.
    aux_keys: list[str] = field(default_factory=list)
    #: Frame weighting by an aux key (off by default; EmphasisConfig says why).
    emphasis: EmphasisConfig = field(default_factory=EmphasisConfig)
    image_size: int = 224
    #: Actions per sample (the current and the next K-1); padded with the last action at episode end.
    chunk_size: int = 1
    batch_size: int = 8
    num_workers: int = 2
    #: Decoded frames kept in memory per loader process (an episode at a time, on first use) up to
    #: this many bytes; later episodes stream from their files. Forked workers share what the
    #: parent holds; each fills its own. 0 streams every frame.
    cache_bytes: int = 4 * 2**30
    #: Loader requests whole batches (per-sample random draws, the colour jitter applied once per
    #: batch); false assembles them sample by sample (the same batches, ~3x more loader time).
    batch_fetch: bool = True
    val_fraction: float = 0.1
    split_seed: int = 0
    normalization: str = "bounds_q99"
    state_normalization: str | None = None
    #: Fixed number of training samples per epoch (with replacement); null = one pass over the data.
    samples_per_epoch: int | None = None
    stats_cache: bool = True
    #: Also decode every image frame at setup (finds corrupt chunks before training; slower).
    deep_validation: bool = False
    pin_memory: bool = False
    filter: FilterConfig = field(default_factory=FilterConfig)
    #: Usually ``${augmentation}``: the top-level group (typed by ``AugmentationConfig``) so that
    #: ``augmentation=none`` works on the command line; converted and checked on instantiation.
    augmentation: Any = None

    def __post_init__(self):
        if not isinstance(self.augmentation, AugmentationConfig):
            self.augmentation = to_schema(AugmentationConfig, self.augmentation, where="augmentation")
        _check(self.image_size >= 8, "data.image_size", f"must be >= 8, got {self.image_size}")
        _check(self.chunk_size >= 1, "data.chunk_size", f"must be >= 1, got {self.chunk_size}")
        _check(self.batch_size >= 1, "data.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.num_workers >= 0, "data.num_workers", f"must be >= 0, got {self.num_workers}")
        _check(self.cache_bytes >= 0, "data.cache_bytes", f"must be >= 0, got {self.cache_bytes}")
        _check(0 <= self.val_fraction < 1, "data.val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        _check(bool(self.cameras), "data.cameras", "needs at least one camera")
        _check(
            self.emphasis.key is None or self.emphasis.key in self.aux_keys,
            "data.emphasis.key",
            f"{self.emphasis.key!r} is not in data.aux_keys {self.aux_keys}",
        )
        for name in ("normalization", "state_normalization"):
            mode = getattr(self, name)
            _check(
                mode in NORMALIZATION_MODES or (mode is None and name == "state_normalization"),
                f"data.{name}",
                f"{mode!r} not in {NORMALIZATION_MODES}",
            )


@dataclass
class LiberoDataConfig(DataConfig):
    _target_: str = "vla_lab.data.datamodule.LiberoDataModule"
    #: libero_spatial, libero_object, libero_goal, libero_10 or libero_90.
    suite: str = "libero_spatial"
    #: Directory holding ``<suite>/`` (raw) and/or ``<suite>_no_noops/`` (regenerated) folders.
    root: str = "???"
    #: auto (prefer no_noops), raw or no_noops.
    variant: str = "auto"
    proprio_keys: list[str] | None = field(default_factory=lambda: ["ee_states", "gripper_states"])

    def __post_init__(self):
        super().__post_init__()
        _check(
            self.variant in ("auto", "raw", "no_noops"), "data.variant", f"unknown variant {self.variant!r}"
        )


def to_schema(schema: type, cfg: Any, *, where: str = "data"):
    """Merge a dict/DictConfig onto a schema and return the validated dataclass instance."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg if cfg is not None else {})
        return OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except Exception as exc:  # OmegaConf's ValidationError/ConfigKeyError carry the full key
        raise ConfigError(f"{where}: {exc}") from exc


def as_plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def register_configs() -> None:
    """Register the schemas under ``<group>/_schema`` (the name config files list as a default)."""
    cs = ConfigStore.instance()
    cs.store(group="data", name="_demo_schema", node=DataConfig)
    cs.store(group="data", name="_libero_schema", node=LiberoDataConfig)
    cs.store(group="augmentation", name="_schema", node=AugmentationConfig)
