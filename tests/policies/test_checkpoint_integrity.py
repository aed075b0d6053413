"""A damaged checkpoint is refused with an error naming the file and what is wrong with it."""

from __future__ import annotations

import json

import pytest
import torch

from tests.policies.conftest import INSTRUCTIONS, norm_entry, peft_cfg, tiny_cfg
from vla_lab.policies.checkpoint import MANIFEST
from vla_lab.policies.factory import load_policy, make_policy


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    policy = make_policy(tiny_cfg(), corpus=INSTRUCTIONS, norm_stats={"sim": norm_entry()})
    directory = tmp_path_factory.mktemp("ckpt") / "best"
    policy.save_pretrained(directory)
    return directory


@pytest.fixture
def copy(saved, tmp_path):
    import shutil

    return shutil.copytree(saved, tmp_path / "best")


def test_manifest_lists_every_file_with_size_and_hash(saved):
    files = json.loads((saved / MANIFEST).read_text())["files"]
    assert {"config.json", "model.safetensors", "processor_config.json"} <= set(files)
    assert files["model.safetensors"]["bytes"] == (saved / "model.safetensors").stat().st_size
    assert all(len(f["sha256"]) == 64 for f in files.values())
    load_policy(saved)  # intact: loads


def _flip_byte(path, offset_from_end=100):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000]),
            "model.safetensors: 1000 bytes, checkpoint_manifest.json says",
        ),
        (
            lambda d: _flip_byte(d / "model.safetensors"),
            "model.safetensors: contents differ from checkpoint_manifest.json",
        ),
        (
            lambda d: (d / "model.safetensors").unlink(),
            "model.safetensors: listed in checkpoint_manifest.json but missing",
        ),
        (lambda d: (d / "config.json").write_text("{not json"), "config.json: 9 bytes"),
    ],
    ids=["truncated", "bit-flip", "missing", "edited-config"],
)
def test_damaged_files_are_refused_naming_them(copy, damage, message):
    damage(copy)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
        load_policy(copy)
    assert str(copy) in str(err.value)


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda d: (d / "model.safetensors").write_bytes(b""),
            "model.safetensors: not a readable safetensors file",
        ),
        (
            lambda d: (d / "model.safetensors").write_bytes(b"\x00garbage" * 50),
            "model.safetensors: not a readable safetensors file",
        ),
        (lambda d: (d / "config.json").write_text("{not json"), "config.json: not valid JSON"),
        (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json: expected a JSON object"),
    ],
    ids=["empty", "garbage", "unparseable-config", "config-not-an-object"],
)
def test_without_a_manifest_unreadable_files_still_name_themselves(copy, damage, message):
    """Checkpoints from elsewhere carry no manifest: their damage is still reported by file."""
    (copy / MANIFEST).unlink()
    damage(copy)
    with pytest.raises(ValueError, match=message) as err:
        load_policy(copy)
    assert str(copy) in str(err.value)


def test_adapter_checkpoints_check_their_base_too(tmp_path):
    torch.manual_seed(0)
    policy = make_policy(
        tiny_cfg(), peft_cfg("lora_light"), corpus=INSTRUCTIONS, norm_stats={"sim": norm_entry()}
    )
    directory = tmp_path / "adapted"
    policy.save_pretrained(directory)
    load_policy(directory)
    _flip_byte(directory / "base" / "model.safetensors")
    with pytest.raises(ValueError, match=r"base/model.safetensors: contents differ"):
        load_policy(directory)
