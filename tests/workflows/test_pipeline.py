"""Pipelines as configuration: every conf/pipeline/*.yaml composes into runnable stages, overrides
render in Hydra's syntax, collection recipes are a config group, and `vla-pipeline` runs a pipeline
by name."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from vla_lab.cli.pipeline import main as vla_pipeline
from vla_lab.config import CONF_DIR
from vla_lab.config.compose import compose
from vla_lab.config.errors import ConfigError
from vla_lab.workflows.pipeline import (
    compose_pipeline,
    pipeline_names,
    render_overrides,
    render_value,
    stage_of,
)

COLLECTIONS = sorted(p.stem for p in (CONF_DIR / "collection").glob("*.yaml"))


def test_there_are_pipelines_and_collections():
    assert {"demo", "iterate"} <= set(pipeline_names())
    assert {"expert", "demo_dart"} <= set(COLLECTIONS)


@pytest.mark.parametrize("name", pipeline_names())
def test_every_pipeline_composes_into_stages_of_vla_lab_commands(name):
    cfg = compose_pipeline(name)
    assert cfg.pipeline.driver in ("demo", "iterate", "stages")
    for key in cfg.pipeline.stages:
        stage = stage_of(cfg, key)
        assert stage.command in ("collect", "train", "eval") and stage.overrides
        assert all("=" in o for o in stage.overrides)


def test_an_unknown_pipeline_or_stage_is_named():
    with pytest.raises(ConfigError, match="no conf/pipeline/juggle.yaml; valid: .*demo"):
        compose_pipeline("juggle")
    with pytest.raises(ConfigError, match=r"pipeline.stages.nope: no such stage"):
        stage_of(compose_pipeline("demo"), "nope")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (["reach_target", "pick_block"], "[reach_target,pick_block]"),
        ([{"path": "/data/a b"}], "[{path: '/data/a b'}]"),
        ([{"path": "/data/studio"}], "[{path: /data/studio}]"),
        (True, "true"),
        (0.25, "0.25"),
        ("none", "none"),
        ("2024", "'2024'"),  # a string that would read as a number stays a string
        ("it's", "'it\\'s'"),
    ],
)
def test_values_render_in_hydras_override_syntax(value, text):
    assert render_value(value) == text


def test_null_values_leave_their_key_out_and_extras_come_last():
    rendered = render_overrides([{"a": 1, "b": None}, {"c.d": "x"}, None], ["+e=2"])
    assert rendered == ["a=1", "c.d=x", "+e=2"]


def _collect_job(overrides: list[str]) -> dict:
    cfg = compose("collect", overrides, return_hydra_config=True)
    return OmegaConf.to_container(cfg, resolve=False) | {"hydra": None}


def test_collection_expert_is_vla_collects_plain_default():
    assert _collect_job(["collection=expert"]) == _collect_job([])
    job = _collect_job([])
    assert job["expert"]["noise_std"] == 0.0 and job["action_space"] == "delta_ee"


def test_collection_demo_dart_is_make_demos_recipe_and_command_line_overrides_win():
    spelled = [
        "sim=demo",
        "expert.noise_std=0.3",
        "expert.random_action_prob=0.05",
        "record_object_pos=true",
        "action_space=target_ee",
    ]
    assert _collect_job(["collection=demo_dart"]) == _collect_job(spelled)
    assert _collect_job(["collection=demo_dart"])["sim"]["image_size"] == 128
    mixed = _collect_job(["collection=demo_dart", "expert.noise_std=0.1", "sim=default"])
    assert mixed["expert"]["noise_std"] == 0.1 and mixed["sim"]["image_size"] == 224


def test_vla_pipeline_dry_runs_a_pipeline_by_name(capsys, tmp_path):
    assert vla_pipeline(["demo", f"pipeline.out={tmp_path / 'd'}", "seed=2", "dry_run=true"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7 and lines[0].startswith("[1. demonstrations") and " seed=8 " in lines[0]
    assert vla_pipeline(["iterate", f"out={tmp_path / 'it'}", "rounds=2", "dry_run=true"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("]")[0] for line in lines] == [
        f"[round {k} {stage}" for k in range(2) for stage in ("collect", "train", "eval")
    ]
    assert not (tmp_path / "d").exists() and not (tmp_path / "it").exists()


def test_vla_pipeline_refuses_an_unknown_name_or_key(capsys):
    assert vla_pipeline(["juggle"]) == 2
    assert "conf/pipeline/juggle.yaml" in capsys.readouterr().err
    assert vla_pipeline(["demo", "pipeline.no_such_key=1"]) == 2
    assert "no_such_key" in capsys.readouterr().err
