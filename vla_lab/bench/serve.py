"""Serving latency and throughput of ``vla-serve`` on a tiny checkpoint (openvla_tiny, ``l1_chunk``
head, chunk 8, 224 px images as the simulator renders them): p50/p95 round trip of HTTP JSON (base64
PNG), HTTP binary, WebSocket JSON and WebSocket binary from one client, next to the bare forward pass;
then requests/s and mean batch size with 1, 4 and 8 concurrent clients.
``python -m vla_lab.bench.serve [--out DIR]``."""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from vla_lab.fileio import atomic_write_text

CHUNK, SIZE, REQUESTS, WARMUP = 8, 224, 30, 3
CLIENTS, THROUGHPUT_S = (1, 4, 8), 4.0
INSTRUCTION = "pick up the red block"


def _checkpoint(directory: Path) -> Path:
    """A freshly initialised checkpoint laid out as training writes one."""
    import torch

    from vla_lab.config.compose import compose
    from vla_lab.data.normalize import Normalizer
    from vla_lab.data.stats import ArrayStats
    from vla_lab.policies.config import register_configs
    from vla_lab.policies.factory import make_policy
    from vla_lab.rollout.processor import write_data_processor

    register_configs()
    torch.manual_seed(0)
    cfg = compose("model", ["model=openvla_tiny", "model.action_head=l1_chunk", f"model.chunk_size={CHUNK}"])
    lo, hi = [-1.0] * 7, [1.0] * 7
    stats = ArrayStats(mean=[0.0] * 7, std=[0.5] * 7, min=lo, max=hi, q01=lo, q99=hi)
    norm = {"bench": Normalizer(stats, mode="bounds_q99", action_mask=[True] * 6 + [False]).to_dict()}
    policy = make_policy(cfg.model, corpus=[INSTRUCTION, "reach the green target"], norm_stats=norm)
    out = directory / "best"
    policy.save_pretrained(out)
    processor = {
        "cameras": ["agentview"],
        "image_size": SIZE,
        "eval_crop_area": 1.0,
        "proprio_keys": [],
        "unnorm_key": "bench",
    }
    write_data_processor(out, processor)
    return out


def _percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
        "mean_ms": round(float(a.mean()), 2),
        "n": len(ms),
    }


def _latency(client, image: np.ndarray) -> dict:
    for _ in range(WARMUP):
        client.predict(image, INSTRUCTION)
    ms = []
    for _ in range(REQUESTS):
        start = time.perf_counter()
        client.predict(image, INSTRUCTION)
        ms.append(1000 * (time.perf_counter() - start))
    return _percentiles(ms)


def _direct(engine, image: np.ndarray) -> dict:
    from vla_lab.serve.protocol import Request

    req = Request(images={"agentview": image}, instruction=INSTRUCTION)
    for _ in range(WARMUP):
        engine.predict([engine.prepare(req)])
    ms = []
    for _ in range(REQUESTS):
        start = time.perf_counter()
        engine.predict([engine.prepare(req)])
        ms.append(1000 * (time.perf_counter() - start))
    return _percentiles(ms)


def _throughput(server, n_clients: int, image: np.ndarray) -> dict:
    from vla_lab.serve.client import PolicyClient

    before = server.stats()
    counts, errors = [0] * n_clients, []
    stop_at = time.perf_counter() + THROUGHPUT_S

    def loop(i: int) -> None:
        try:
            with PolicyClient(server.ws_url, timeout=60) as client:
                while time.perf_counter() < stop_at:
                    client.predict(image, INSTRUCTION)
                    counts[i] += 1
        except Exception as e:  # reported in the result, not swallowed
            errors.append(f"{type(e).__name__}: {e}")

    start = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(THROUGHPUT_S + 120)
    elapsed = time.perf_counter() - start
    after = server.stats()
    batches = after["batches"] - before["batches"]
    served = after["batched_requests"] - before["batched_requests"]
    return {
        "clients": n_clients,
        "requests_per_s": round(sum(counts) / elapsed, 1),
        "mean_batch_size": round(served / batches, 2) if batches else 0.0,
        "errors": errors,
    }


def run(out_dir: Path) -> dict:
    from vla_lab.serve.client import PolicyClient
    from vla_lab.serve.config import ServeConfig
    from vla_lab.serve.engine import PolicyEngine
    from vla_lab.serve.server import BackgroundServer

    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = _checkpoint(Path(tmp))
        engine = PolicyEngine(ckpt)
        cfg = ServeConfig(checkpoint=str(ckpt), port=0, ws_port=0)
        result = {
            "model": f"openvla_tiny l1_chunk, chunk {CHUNK}, {SIZE}x{SIZE} images",
            "max_batch_size": cfg.max_batch_size,
            "max_wait_ms": cfg.max_wait_ms,
            "direct_forward": _direct(engine, image),
            "latency": {},
        }
        with BackgroundServer(cfg, engine) as server:
            for name, url, binary in (
                ("http_json", server.url, False),
                ("http_binary", server.url, True),
                ("ws_json", server.ws_url, False),
                ("ws_binary", server.ws_url, True),
            ):
                with PolicyClient(url, binary=binary) as client:
                    result["latency"][name] = _latency(client, image)
            result["throughput_ws_binary"] = [_throughput(server, n, image) for n in CLIENTS]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args.out)
    atomic_write_text(args.out / "serve.json", json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
