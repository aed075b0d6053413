"""A tiny real checkpoint (openvla_tiny, l1_chunk head, chunk 4, 56 px) written the way training writes
one, a reference actor loaded from it independently, and a real server on free loopback ports."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vla_lab.data.normalize import Normalizer
from vla_lab.data.stats import ArrayStats

INSTRUCTIONS = ["pick up the red block", "reach the green target", "push the blue cube to the left"]
IMAGE_SIZE, CHUNK = 56, 4


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # a shared 2-core machine: one intra-op thread is faster for these tiny models
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _norm_stats() -> dict:
    lo, hi = (
        np.array([-2.0, -1.5, -1.0, -0.5, -0.8, -1.2, 0.0]),
        np.array([2.0, 1.0, 1.5, 0.5, 0.8, 1.0, 1.0]),
    )
    stats = ArrayStats(
        mean=((lo + hi) / 2).tolist(),
        std=((hi - lo) / 4).tolist(),
        min=lo.tolist(),
        max=hi.tolist(),
        q01=lo.tolist(),
        q99=hi.tolist(),
    )
    return {"sim_demo": Normalizer(stats, mode="bounds_q99", action_mask=[True] * 6 + [False]).to_dict()}


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    from vla_lab.config.compose import compose
    from vla_lab.policies.config import model_config_from
    from vla_lab.policies.factory import make_policy
    from vla_lab.rollout.processor import write_data_processor

    torch.manual_seed(0)
    cfg = model_config_from(
        compose(
            "model", ["model=openvla_tiny", "model.action_head=l1_chunk", f"model.chunk_size={CHUNK}"]
        ).model
    )
    for v in cfg.vision:
        v.img_size = IMAGE_SIZE
    policy = make_policy(cfg, corpus=INSTRUCTIONS, norm_stats=_norm_stats())
    directory = tmp_path_factory.mktemp("ckpt") / "best"
    policy.save_pretrained(directory)
    processor = {
        "cameras": ["agentview"],
        "image_size": IMAGE_SIZE,
        "eval_crop_area": 0.9,
        "proprio_keys": [],
        "unnorm_key": "sim_demo",
    }
    write_data_processor(directory, processor)
    return directory


@pytest.fixture(scope="session")
def engine(checkpoint):
    from vla_lab.serve.engine import PolicyEngine

    return PolicyEngine(checkpoint)


@pytest.fixture(scope="session")
def reference(checkpoint):
    """What closed-loop evaluation would execute, from its own copy of the checkpoint."""
    from vla_lab.rollout.actors import PolicyActor

    return PolicyActor.from_checkpoint(checkpoint, field="checkpoint")


def reference_chunk(actor, image: np.ndarray, instruction: str) -> np.ndarray:
    """The (K, A) chunk PolicyActor.act executes step by step; its first row is checked against act()."""
    runtime = actor.runtime
    with torch.no_grad():
        chunk = runtime.policy.predict_action_chunk(runtime.batch({"agentview": image}, instruction))
    raw = runtime.normalizer.unnormalize_action(chunk[0].float().numpy())
    raw[:, :6] = np.clip(raw[:, :6], -1.0, 1.0)
    raw[:, 6] = np.clip(raw[:, 6], 0.0, 1.0)
    actor.reset(0)
    first = actor.act({"agentview": image}, {"instruction": instruction})
    np.testing.assert_array_equal(first, raw[0])
    return raw.astype(np.float32)


def random_image(seed: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def serve_config(**overrides):
    from vla_lab.serve.config import ServeConfig

    base = {"checkpoint": "unused-in-process", "port": 0, "ws_port": 0, "max_wait_ms": 30.0}
    return ServeConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def server(engine):
    from vla_lab.serve.server import BackgroundServer

    with BackgroundServer(serve_config(max_body_bytes=1_000_000), engine) as srv:
        yield srv
