"""What every policy processor shares: ordered steps, the statistics it un-normalizes with, and
persistence as ``processor_config.json`` + tokenizer files beside the weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vla_lab.policies.normalization import check_unnorm_key, normalizer_from_entry
from vla_lab.policies.text_tokenizer import load_tokenizer

PROCESSOR_FILE = "processor_config.json"


class StepProcessor:
    def __init__(
        self, tokenizer, steps: list[dict[str, Any]], norm_stats: dict[str, Any] | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self.steps = steps
        self.norm_stats = dict(norm_stats or {})

    @classmethod
    def from_config(cls, config, tokenizer, norm_stats=None):
        raise NotImplementedError

    def unnormalize(self, actions, unnorm_key: str | None = None):
        key = check_unnorm_key(self.norm_stats, unnorm_key)
        return normalizer_from_entry(self.norm_stats[key]).unnormalize_action(actions)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(directory))
        payload = {"processor_class": type(self).__name__, "steps": self.steps, "norm_stats": self.norm_stats}
        (directory / PROCESSOR_FILE).write_text(json.dumps(payload, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path, config, norm_stats: dict[str, Any] | None = None):
        directory = Path(directory)
        tokenizer = load_tokenizer(directory)
        path = directory / PROCESSOR_FILE
        if not path.exists():
            # Official checkpoints ship no processor steps: derive them from the model config.
            return cls.from_config(config, tokenizer, norm_stats)
        payload = json.loads(path.read_text())
        # Statistics given by the caller (a new dataset when fine-tuning) join the saved ones.
        return cls(tokenizer, payload["steps"], {**(payload.get("norm_stats") or {}), **(norm_stats or {})})
