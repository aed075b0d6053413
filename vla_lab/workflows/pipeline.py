"""Pipelines as configuration: ``conf/pipeline/<name>.yaml`` lists a pipeline's stages and their overrides.

A stage entry (``pipeline.stages.<key>``)::

    pretrain:
      name: 2. pretrain the base on A      # headers, dry runs, errors (default: the key)
      command: train                       # vla-train = python -m vla_lab.cli.train
      overrides:                           # key: value, rendered as key=value in this order;
        experiment: demo_pretrain          # a null value leaves the key out (the command's default)
        trainer.max_epochs: ${pipeline.pretrain_epochs}
      extra: []                            # overrides appended as typed, e.g. [+trainer.limit_val_batches=1]
      log: null                            # a file for the output; null = the console
      timeout_s: null
      ok_exit_codes: [0]

Values interpolate the rest of the config (``${seed}``, ``${pipeline.out}``). A driver that runs a
stage several times (each collection shard, each round) first sets a context node of the pipeline
(``pipeline.shard``, ``pipeline.round``) that the stage's values refer to; the pipeline file declares
that node with null placeholders. A pipeline's ``driver`` names the Python side that runs it
(``demo``, ``iterate``, or ``stages``: every stage once, in order).

A pipeline composes under the root config of its name when there is one (``conf/iterate.yaml``: the
options of ``vla-iterate``), else under ``conf/pipeline.yaml`` (``seed``, ``dry_run``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from vla_lab.config import CONF_DIR
from vla_lab.config.errors import ConfigError
from vla_lab.workflows.stages import Stage, StageResult, StageRunner

GENERIC_ROOT = "pipeline"
_PLAIN = re.compile(r"[\w./+-]+")
_NOT_A_STRING = re.compile(r"(?i)true|false|null|nan|[+-]?inf|[+-]?[\d_]+(\.[\d_]*)?(e[+-]?\d+)?")


def register_resolvers() -> None:
    """``${vla.sum:a,b}``, ``${vla.dirname:path}``, ``${vla.basename:path}`` (idempotent)."""
    resolvers = {
        "vla.sum": lambda *values: sum(values),
        "vla.dirname": lambda path: str(Path(path).parent),
        "vla.basename": lambda path: Path(path).name,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def pipeline_names() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "pipeline").glob("*.yaml"))


def root_of(name: str) -> str:
    """The root config a pipeline composes under."""
    if name not in pipeline_names():
        raise ConfigError(f"pipeline: no conf/pipeline/{name}.yaml; valid: {', '.join(pipeline_names())}")
    return name if (CONF_DIR / f"{name}.yaml").is_file() else GENERIC_ROOT


def compose_pipeline(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/pipeline/<name>.yaml`` composed under its root config, with command-line ``overrides``."""
    from vla_lab.config.compose import compose
    from vla_lab.workflows import register_configs

    register_configs()
    root = root_of(name)
    selection = [f"pipeline={name}"] if root == GENERIC_ROOT else []
    return compose(root, [*selection, *overrides])


def render_value(value: Any) -> str:
    """A value in Hydra's override syntax: lists ``[a,b]``, dicts ``{k: v}``, strings bare when plain
    and quoted (every character literal) otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {render_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(render_value(v) for v in value) + "]"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and not _NOT_A_STRING.fullmatch(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_overrides(sections: Iterable[Mapping[str, Any] | None], extra: Sequence[str] = ()) -> list[str]:
    """``key=value`` for every non-null value of the sections, in order, then ``extra`` as typed."""
    out = []
    for section in sections:
        for key, value in (section or {}).items():
            if value is not None:
                out.append(f"{key}={render_value(value)}")
    return [*out, *extra]


def set_context(cfg: DictConfig, node: str, values: Mapping[str, Any]) -> None:
    """Set ``pipeline.<node>``, the values a stage's overrides refer to for one of its runs."""
    with open_dict(cfg):
        cfg.pipeline[node] = dict(values)


def stage_of(cfg: DictConfig, key: str, sections: Sequence[str] = ("overrides",)) -> Stage:
    """The stage ``pipeline.stages.<key>`` of a composed config, resolved now. ``sections``: the
    override mappings of the entry applied in order (a driver may add its own, e.g. round 0's)."""
    stages = cfg.pipeline.get("stages") or {}
    if key not in stages:
        raise ConfigError(f"pipeline.stages.{key}: no such stage; valid: {', '.join(stages)}")
    spec = OmegaConf.to_container(stages[key], resolve=True)
    if not spec.get("command"):
        raise ConfigError(f"pipeline.stages.{key}.command: missing (collect, train, eval, ...)")
    log = spec.get("log")
    return Stage(
        name=str(spec.get("name") or key),
        command=spec["command"],
        overrides=tuple(render_overrides((spec.get(s) for s in sections), spec.get("extra") or ())),
        log=Path(log) if log else None,
        timeout_s=spec.get("timeout_s"),
        ok_exit_codes=tuple(spec.get("ok_exit_codes") or (0,)),
    )


def run_stages(cfg: DictConfig) -> list[StageResult]:
    """The ``stages`` driver: every stage of the pipeline once, in the order the file lists them."""
    runner = StageRunner(dry_run=bool(cfg.get("dry_run", False)))
    return [runner.run(stage_of(cfg, key)) for key in cfg.pipeline.stages]


__all__ = [
    "compose_pipeline",
    "pipeline_names",
    "register_resolvers",
    "render_overrides",
    "render_value",
    "root_of",
    "run_stages",
    "set_context",
    "stage_of",
]
