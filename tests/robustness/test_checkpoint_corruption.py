"""Seeded random damage to a saved checkpoint (the serve tests' tiny one: weights, configs, tokenizer,
manifest, data_processor.json): truncation, bit flips, deleted, emptied or overwritten files, junk
appended, JSON values of another type. Loading it as vla-serve and vla-eval do must refuse with a
ValueError or FileNotFoundError naming the checkpoint and the damaged file, never raise anything
else, and never load a policy that differs from the one saved.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.robustness.damage import FILE_DAMAGE, WEIRD, truncate
from tests.robustness.fuzz import SIZES, FuzzRun, pick, seed
from vla_lab.policies.checkpoint import MANIFEST

PROBES = {"short": 40, "long": 1500}


def _edit_json(rng, path: Path) -> str:
    """One value of a JSON file set to something of another type or size (or the file cut short)."""
    try:
        tree = json.loads(path.read_text())
    except ValueError:
        return truncate(rng, path)
    paths = _json_paths(tree)
    if not paths:
        return truncate(rng, path)
    where = pick(rng, paths)
    node = tree
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = pick(rng, WEIRD)
    path.write_text(json.dumps(tree))
    return f"set {'.'.join(map(str, where))[:60]}"


def _json_paths(node, prefix=()) -> list[tuple]:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    out = []
    for k, v in list(items)[:200]:  # tokenizer vocabularies are long: a sample of their entries will do
        out.append((*prefix, k))
        out += _json_paths(v, (*prefix, k))
    return out


def damage_checkpoint(rng, directory: Path) -> tuple[str, str]:
    """Damages one file of a checkpoint directory; (its name, what was done)."""
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    target = pick(rng, files)
    damage = (
        pick(rng, [*FILE_DAMAGE, _edit_json, _edit_json])
        if target.suffix == ".json"
        else pick(rng, FILE_DAMAGE)
    )
    return target.relative_to(directory).as_posix(), damage(rng, target)


def load_checkpoint(directory: Path):
    """What vla-serve, vla-eval and rollouts do with a checkpoint directory."""
    from vla_lab.rollout.runtime import PolicyRuntime

    return PolicyRuntime.from_checkpoint(directory)


def _runtime_state(runtime) -> dict:
    """What a loaded checkpoint is: its weights, its processing spec and its statistics."""
    state = {k: v.detach().clone() for k, v in runtime.policy.state_dict().items()}
    return {"weights": state, "spec": dict(runtime.spec), "norm": runtime.normalizer.to_dict()}


def _same_state(a: dict, b: dict) -> bool:
    import torch

    same_weights = a["weights"].keys() == b["weights"].keys() and all(
        torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"]
    )
    return same_weights and a["spec"] == b["spec"] and a["norm"] == b["norm"]


#: data_processor.json is written after save_pretrained wrote the manifest, so the manifest does not
#: cover it (an edit that still parses loads silently), and reading it checks neither its encoding
#: nor its fields' types (UnicodeDecodeError, TypeError or KeyError without the file's name). The
#: fixes belong where training writes it and where rollouts read it (vla_lab/training/callbacks.py,
#: vla_lab/rollout/processor.py, runtime.py); pinned by test_a_damaged_data_processor_json_is_refused.
PROCESSOR_GAP = "checkpoint-data-processor-unchecked"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("size", SIZES)
def test_damaged_checkpoints_are_refused_naming_the_file(checkpoint, tmp_path, size):
    run = FuzzRun("checkpoint-corruption", size, seed(20260304))
    rng = np.random.default_rng(run.seed)
    intact = _runtime_state(load_checkpoint(checkpoint))
    for i in range(PROBES[size]):
        copy = shutil.copytree(checkpoint, tmp_path / f"{i}" / checkpoint.name)
        name, what = damage_checkpoint(rng, copy)
        outcome, detail = _checkpoint_outcome(copy, name, intact)
        gap = PROCESSOR_GAP if name == "data_processor.json" else None  # a failure of it is the gap
        run.add(outcome, f"{name}: {what}", detail, gap=gap)
        shutil.rmtree(copy.parent)
    run.finish(min_tried=PROBES[size])


def _checkpoint_outcome(directory: Path, name: str, intact: dict) -> tuple[str, str]:
    try:
        runtime = load_checkpoint(directory)
    except (ValueError, FileNotFoundError) as e:  # the promised kinds (CheckpointDirError is both)
        named = str(directory) in str(e) and Path(name).name in str(e)
        return ("clear_error" if named else "wrong_answer"), f"{type(e).__name__}: {e}"[:300]
    except Exception as e:  # the point of the test: any other exception is a finding
        return "crash", f"{type(e).__name__}: {e}"[:300]
    if _same_state(_runtime_state(runtime), intact):
        return "accepted", "loads exactly what was saved"
    return "data_lost", "loaded a different policy without an error"


def _edit_processor(directory: Path, edit) -> None:
    path = directory / "data_processor.json"
    path.write_bytes(edit(path.read_bytes()))


@pytest.mark.xfail(strict=True, reason=f"known gap {PROCESSOR_GAP}: data_processor.json is unchecked")
@pytest.mark.parametrize(
    "edit",
    [
        lambda raw: raw.replace(b'"eval_crop_area": 0.9', b'"eval_crop_area": 0.5'),  # loads silently
        lambda raw: raw + b"\xff",  # UnicodeDecodeError, not naming the file
        lambda raw: raw.replace(b'"sim_demo"', b'["sim_demo"]'),  # TypeError: unhashable type
    ],
    ids=["edited-value", "not-utf8", "mistyped-field"],
)
def test_a_damaged_data_processor_json_is_refused(checkpoint, tmp_path, edit):
    copy = shutil.copytree(checkpoint, tmp_path / checkpoint.name)
    _edit_processor(copy, edit)
    with pytest.raises(ValueError, match="data_processor.json"):
        load_checkpoint(copy)


def test_the_manifest_covers_every_weight_and_config_file(checkpoint):
    """What the fuzzer relies on for everything but data_processor.json."""
    listed = set(json.loads((checkpoint / MANIFEST).read_text())["files"])
    present = {p.name for p in checkpoint.iterdir()} - {MANIFEST}
    assert present - listed == {"data_processor.json"}
