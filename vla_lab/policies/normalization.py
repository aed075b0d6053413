"""Selection of the saved normalization statistics that un-normalize a policy's actions.

Checkpoints keep ``norm_stats`` as ``{unnorm_key: stats}``. ``stats`` is either
``vla_lab.data.normalize.Normalizer.to_dict()`` or the official OpenVLA layout
(``{"action": {"q01", "q99", "mask", ...}, "proprio": ...}``, always ``bounds_q99``), which is
converted to the same ``Normalizer`` so there is one inverse for both.
"""

from __future__ import annotations

from typing import Any

from vla_lab.data.normalize import Normalizer
from vla_lab.data.stats import ArrayStats

_STAT_FIELDS = ("mean", "std", "min", "max", "q01", "q99")


def check_unnorm_key(norm_stats: dict[str, Any] | None, unnorm_key: str | None) -> str:
    available = sorted(norm_stats or {})
    if not available:
        raise ValueError(
            "this policy carries no normalization statistics (norm_stats is empty): "
            "it cannot un-normalize actions"
        )
    if unnorm_key is None:
        if len(available) > 1:
            raise ValueError(
                f"unnorm_key is ambiguous: the policy was trained on several datasets; "
                f"pass one of {available}"
            )
        return available[0]
    if unnorm_key not in norm_stats:
        raise KeyError(f"unnorm_key {unnorm_key!r} not in the saved statistics; available: {available}")
    return unnorm_key


def normalizer_from_entry(entry: dict[str, Any]) -> Normalizer:
    if "mode" in entry:
        return Normalizer.from_dict(entry)
    if "action" in entry and "q01" in entry["action"]:
        return _from_openvla_layout(entry)
    raise ValueError(f"unrecognised normalization statistics with fields {sorted(entry)}")


def _from_openvla_layout(entry: dict[str, Any]) -> Normalizer:
    def stats(d: dict[str, Any]) -> ArrayStats:
        dim = len(d["q01"])
        return ArrayStats(**{f: list(d.get(f, [0.0] * dim)) for f in _STAT_FIELDS})

    action = entry["action"]
    proprio = entry.get("proprio")
    return Normalizer(
        stats(action), stats(proprio) if proprio else None, "bounds_q99", action_mask=action.get("mask")
    )
