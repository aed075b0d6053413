"""Build or load any policy from its config (dataclass or Hydra node) or checkpoint directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vla_lab.policies.config import PeftSpec, model_config_from, peft_spec_from


def make_policy(
    model_cfg: Any,
    peft: Any = None,
    corpus: list[str] | None = None,
    norm_stats: dict[str, Any] | None = None,
    action_chunks: Any = None,
):
    """A policy ready to train: ``corpus`` (the dataset's instructions) trains small configs'
    tokenizers; ``norm_stats`` is ``{unnorm_key: Normalizer.to_dict()}``; ``action_chunks`` (the
    training set's normalized chunks, (N, K, A)) fits OpenVLA's FAST tokenizer (``action_head=fast``)."""
    config = model_config_from(model_cfg)
    spec: PeftSpec = peft_spec_from(peft)
    if config.family == "openvla":
        from vla_lab.policies.openvla.modeling_openvla import make_openvla_policy

        policy = make_openvla_policy(config, corpus, norm_stats, action_chunks)
    elif config.family == "smolvla":
        from vla_lab.policies.smolvla.modeling_smolvla import make_smolvla_policy

        policy = make_smolvla_policy(config, corpus, norm_stats)
    else:
        raise ValueError(f"unknown policy family {config.family!r}")
    return policy.apply_peft(spec)


def load_policy(directory: str | Path, **kwargs: Any):
    """Loads a checkpoint directory written by ``save_pretrained`` (or an official one)."""
    directory = Path(directory)
    cfg_path = directory / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{directory} has no config.json: not a checkpoint directory")
    model_type = json.loads(cfg_path.read_text()).get("model_type") or json.loads(cfg_path.read_text()).get(
        "type"
    )
    if model_type in ("openvla", "prismatic"):
        from vla_lab.policies.openvla.modeling_openvla import OpenVLAPolicy

        return OpenVLAPolicy.from_pretrained(directory, **kwargs)
    if model_type == "smolvla":
        from vla_lab.policies.smolvla.modeling_smolvla import SmolVLAPolicy

        return SmolVLAPolicy.from_pretrained(directory, **kwargs)
    raise ValueError(f"{directory}/config.json has model_type {model_type!r}: not a policy vla_lab can load")
