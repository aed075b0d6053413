"""The task registry lives in the JavaScript simulator; Python reads the manifest generated from it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tests.sim.conftest import HAVE_NODE
from vla_lab.sim import list_environments, list_tasks, load_manifest
from vla_lab.sim.config import RandomizationConfig
from vla_lab.sim.manifest import (
    MANIFEST_PATH,
    check_environment,
    check_randomization,
    check_task,
    generate_manifest,
)


@pytest.mark.skipif(not HAVE_NODE, reason="node is not installed")
def test_manifest_file_matches_the_js_registry():
    loaded = load_manifest()  # regenerates manifest.json first if a registry source is newer
    assert generate_manifest() == loaded == json.loads(MANIFEST_PATH.read_text())


def test_tasks_and_environments_are_listed_with_instructions():
    tasks = {t["name"]: t for t in list_tasks()}
    assert {
        "reach_target",
        "pick_block",
        "place_in_container",
        "push_to_zone",
        "stack_blocks",
        "put_in_order",
    } <= set(tasks)
    for t in tasks.values():
        assert t["max_steps"] > 0
        assert len(t["instruction_templates"]) >= 2
        assert t["success_criterion"] and t["distance_to_goal"]
    envs = [e["name"] for e in list_environments()]
    assert len(envs) >= 2 and "studio" in envs


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown task 'fly'.*pick_block"):
        check_task("fly")
    with pytest.raises(ValueError, match="unknown environment 'moon'.*studio"):
        check_environment("moon")
    with pytest.raises(ValueError, match="unknown randomization knob 'fog'"):
        check_randomization({"fog": 1.0})
    with pytest.raises(ValueError, match=r"num_distractors=9 is outside \[0, 4\]"):
        check_randomization({"num_distractors": 9})
    with pytest.raises(ValueError, match="paraphrase must be a boolean"):
        check_randomization({"paraphrase": 1})


def test_hydra_schema_mirrors_the_simulator_knobs():
    knobs = load_manifest()["randomization"]
    fields = {f.name: f.default for f in dataclasses.fields(RandomizationConfig)}
    assert fields == {k: v["default"] for k, v in knobs.items()}
