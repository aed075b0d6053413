"""HF-style weight files: sharded safetensors + index, strict loading with a readable diff, and a
manifest (``checkpoint_manifest.json``: each file's size and sha256) written last at save and checked
at load, so a truncated, replaced or bit-flipped file is refused naming it instead of loading
silently."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
MANIFEST = "checkpoint_manifest.json"


def save_state_dict(
    state: dict[str, torch.Tensor], directory: Path, max_shard_bytes: int = 5 * 2**30
) -> None:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor.detach().contiguous().cpu()
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(directory / WEIGHTS), metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, fname))
    total = sum(t.numel() * t.element_size() for t in state.values())
    (directory / INDEX).write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )


def load_state_dict_files(directory: Path) -> dict[str, torch.Tensor]:
    if (directory / WEIGHTS).exists():
        return _load_safetensors(directory / WEIGHTS)
    if (directory / INDEX).exists():
        weight_map = read_json(directory / INDEX)["weight_map"]
        state: dict[str, torch.Tensor] = {}
        for fname in sorted(set(weight_map.values())):
            state.update(_load_safetensors(directory / fname))
        return state
    raise FileNotFoundError(f"no {WEIGHTS} or {INDEX} in {directory}")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing weight file") from None
    except Exception as e:  # safetensors raises its own error type, without the path
        raise ValueError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from e


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; an unreadable or unparseable file is an error naming it."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path) -> None:
    """Size and sha256 of every file under ``directory`` (written last, after the checkpoint)."""
    from vla_lab.fileio import atomic_write_text

    files = {
        str(p.relative_to(directory)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    atomic_write_text(directory / MANIFEST, json.dumps({"version": 1, "files": files}, indent=1))


def verify_manifest(directory: Path) -> None:
    """Refuses a checkpoint whose files differ from its manifest (checkpoints without one, such as
    upstream releases, load unchecked)."""
    path = directory / MANIFEST
    if not path.exists():
        return
    files = read_json(path).get("files")
    if not isinstance(files, dict):
        raise ValueError(f"{path}: no 'files' table")
    for name, want in files.items():
        # an edited manifest is as damaged as an edited weight file: refuse it naming the entry
        if (
            not isinstance(want, dict)
            or type(want.get("bytes")) is not int
            or not isinstance(want.get("sha256"), str)
        ):
            raise ValueError(f"{path}: entry {name!r} is not {{bytes, sha256}}: {str(want)[:80]}")
        file = directory / name
        if not file.is_file():
            raise FileNotFoundError(f"{file}: listed in {MANIFEST} but missing")
        size = file.stat().st_size
        if size != want.get("bytes"):
            raise ValueError(
                f"{file}: {size} bytes, {MANIFEST} says {want.get('bytes')} (truncated or replaced)"
            )
        if _sha256(file) != want.get("sha256"):
            raise ValueError(
                f"{file}: contents differ from {MANIFEST} (sha256 mismatch: corrupted or edited)"
            )


def _listing(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Loads ``state`` into ``module`` (which may live on the meta device); any missing, unexpected or
    mis-shaped tensor is an error that lists them, never a warning."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_listing(shapes)}")
    if problems:
        raise ValueError(f"{what} does not match the model architecture/size:\n  " + "\n  ".join(problems))
    module.load_state_dict(state, strict=True, assign=True)
