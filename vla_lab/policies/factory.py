"""Build or load any policy from its config (dataclass or Hydra node) or checkpoint directory; the
family comes from ``vla_lab.policies.registry``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vla_lab.policies import registry
from vla_lab.policies.checkpoint import verify_manifest
from vla_lab.policies.config import model_config_from, peft_spec_from
from vla_lab.policies.pretrained import model_type_of, read_config


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
    spec = peft_spec_from(peft)
    family = registry.get_family(config.family)
    policy = family.make(config, corpus=corpus, norm_stats=norm_stats, action_chunks=action_chunks)
    return policy.apply_peft(spec)


def load_policy(directory: str | Path, **kwargs: Any):
    """Loads a checkpoint directory written by ``save_pretrained`` (or an official one); ``kwargs``
    go to ``PretrainedPolicy.from_pretrained``."""
    directory = Path(directory)
    verify_manifest(directory)  # before any file of it is read
    model_type = model_type_of(read_config(directory))
    family = registry.family_for_model_type(model_type)
    if family is None:
        raise ValueError(
            f"{directory}/config.json has model_type {model_type!r}: not a policy vla_lab can load"
        )
    return family.load(directory, verify=False, **kwargs)
