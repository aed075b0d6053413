"""One entry per policy family: its config schema, the checkpoint types it loads, its policy class
(which builds and loads, see ``vla_lab.policies.pretrained``) and its memory planner.

Each family registers itself in its folder's ``__init__.py``; every sub-package of
``vla_lab.policies`` is imported on the first lookup, so a new family is one new folder. Code
outside a family's folder (``make_policy``, ``load_policy``, the config schemas, ``vla-model``,
the vision warm-up) asks this registry instead of naming families.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_FAMILIES: dict[str, PolicyFamily] = {}
_discovered = False


def _resolve(ref: Any) -> Any:
    """``"package.module:attribute"`` → the attribute (imported on first use: keeps the registry
    light to import); anything else is returned as is."""
    if not isinstance(ref, str):
        return ref
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class PolicyFamily:
    #: ``model.family`` in configs, e.g. ``"openvla"``.
    name: str
    #: The config dataclass (the Hydra schema ``<name>_schema`` of ``conf/model/`` presets).
    config_class: type
    #: The ``PretrainedPolicy`` subclass, or ``"module:Class"`` to import it on first use.
    policy: type | str
    #: ``model_type`` / ``type`` values of the config.json files it loads; empty: ``(name,)``.
    model_types: tuple[str, ...] = ()
    #: ``plan(config, peft_spec, planner_spec) -> dict`` for ``vla-model``, or ``"module:function"``.
    planner: Callable[..., dict[str, Any]] | str | None = None
    #: Whether its vision towers can be warmed up alone (``vla_lab.training.vision_pretrain``).
    vision_warmup: bool = False
    loads: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "loads", tuple(self.model_types) or (self.name,))

    def policy_class(self) -> type:
        return _resolve(self.policy)

    def make(self, config: Any, **data: Any) -> Any:
        """A policy ready to train (``data``: ``corpus``, ``norm_stats``, ``action_chunks``)."""
        return self.policy_class().build(config, **data)

    def load(self, directory: str | Path, **kwargs: Any) -> Any:
        return self.policy_class().from_pretrained(directory, **kwargs)

    def plan(self, config: Any, spec: Any, planner: Any) -> dict[str, Any]:
        if self.planner is None:
            raise ValueError(f"policy family {self.name!r} has no memory planner")
        return _resolve(self.planner)(config, spec, planner)


def register_family(family: PolicyFamily) -> PolicyFamily:
    """Adds ``family``; registering an equal entry again is a no-op, a different one under a taken
    name or ``model_type`` is an error."""
    if _FAMILIES.get(family.name) == family:
        return family
    if family.name in _FAMILIES:
        raise ValueError(f"policy family {family.name!r} is already registered")
    taken = {t: f.name for f in _FAMILIES.values() for t in f.loads}
    clash = {t: taken[t] for t in family.loads if t in taken}
    if clash:
        raise ValueError(f"policy family {family.name!r}: model types already loaded by {clash}")
    _FAMILIES[family.name] = family
    return family


def unregister_family(name: str) -> None:
    _FAMILIES.pop(name, None)


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.ispkg:
            importlib.import_module(f"{__package__}.{info.name}")
    _discovered = True


def families() -> list[PolicyFamily]:
    _discover()
    return list(_FAMILIES.values())


def find_family(name: str | None) -> PolicyFamily | None:
    _discover()
    return _FAMILIES.get(name) if name is not None else None


def get_family(name: str | None) -> PolicyFamily:
    family = find_family(name)
    if family is None:
        raise ValueError(f"model.family must be one of {sorted(_FAMILIES)}, got {name!r}")
    return family


def family_for_model_type(model_type: str | None) -> PolicyFamily | None:
    _discover()
    return next((f for f in _FAMILIES.values() if model_type in f.loads), None)
