"""``vla-serve checkpoint=<dir>``: serve a trained policy over HTTP and WebSocket (docs/serving.md).

    vla-serve checkpoint=outputs/train/<run>/best port=0 ws_port=0          # free ports, printed
    VLA_SERVE_TOKEN=secret vla-serve checkpoint=...                         # bearer-token auth
    vla-serve mode=episodes client.url=http://127.0.0.1:8000 eval=quick     # sim episodes through it
    vla-serve mode=episodes checkpoint=<dir> client.viewer=true             # …served in-process, live view

Exit codes: 0 stopped by SIGINT/SIGTERM (serve) or episodes done, 2 bad configuration or checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import hydra
from omegaconf import DictConfig

from vla_lab.cli.hydra_app import HydraApp, register_all
from vla_lab.config import CONF_DIR

register_all()
log = logging.getLogger("vla_lab.serve")

# hydra.main discards the task function's return value; the exit status travels through here.
_exit_code = [0]


def _load(cfg):
    import torch

    from vla_lab.serve.engine import PolicyEngine

    cfg.check_serving()
    # websockets logs every connection at INFO: one line per client is noise in a server's log
    logging.getLogger("websockets").setLevel(logging.WARNING)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    return PolicyEngine(cfg.checkpoint, unnorm_key=cfg.unnorm_key, device=cfg.device)


def _banner(server) -> None:
    info = server.engine.info()
    print(
        f"vla-serve: {info['model_family']} from {info['checkpoint']} "
        f"(chunk {info['chunk_size']} x {info['action_dim']}, cameras {info['cameras']}, "
        f"image {info['image_size']} px, unnorm_key {info['unnorm_key']!r}, "
        f"auth {'on' if server.token else 'off'})",
        flush=True,
    )
    print(f"vla-serve: listening on {server.url} and {server.ws_url}", flush=True)


def serve(cfg) -> None:
    from vla_lab.serve.server import serve_until_stopped

    engine = _load(cfg)
    if not cfg.loopback:
        log.warning(
            "host=%s is not a loopback address: the policy is reachable from the network%s",
            cfg.host,
            "" if cfg.auth_token else " WITHOUT authentication (set auth_token or $VLA_SERVE_TOKEN)",
        )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_until_stopped(cfg, engine, _banner, stop)

    asyncio.run(run())
    print("vla-serve: stopped", flush=True)


def episodes(cfg) -> None:
    from contextlib import ExitStack
    from dataclasses import replace

    from vla_lab.eval.metrics import format_table
    from vla_lab.serve.client import PolicyClient
    from vla_lab.serve.remote import run_remote_episodes
    from vla_lab.serve.server import BackgroundServer

    c = cfg.client
    with ExitStack() as stack:
        url = c.url
        if url is None:  # serve the checkpoint here, on free loopback ports
            local = replace(cfg, host="127.0.0.1", port=0, ws_port=0)
            server = stack.enter_context(BackgroundServer(local, _load(cfg)))
            _banner(server.server)
            url = server.url
        probe = stack.enter_context(PolicyClient(url, cfg.auth_token, timeout=c.timeout_s))
        info = probe.health()
        host = probe.host
        url = (
            f"ws://{host}:{info['ws_port']}"
            if c.transport.startswith("ws")
            else f"http://{host}:{info['port']}"
        )
        client = stack.enter_context(
            PolicyClient(url, cfg.auth_token, timeout=c.timeout_s, binary=not c.transport.endswith("json"))
        )
        print(f"vla-serve: episodes through {url} ({c.transport})", flush=True)
        out = run_remote_episodes(client, cfg.eval, viewer=c.viewer)
    print(format_table(out["summaries"]))
    o = out["overall"]
    print(
        f"\noverall: {o['success_rate']:.1%} over {o['episodes']} episodes "
        f"(pooled 95% CI [{o['ci_low']:.2f}, {o['ci_high']:.2f}])"
    )


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="serve")
def _main(dcfg: DictConfig) -> None:
    from vla_lab.config.errors import ConfigError
    from vla_lab.config.schemas import to_schema
    from vla_lab.serve.config import ServeConfig

    try:
        cfg: ServeConfig = to_schema(ServeConfig, dcfg, where="vla-serve")
        if cfg.mode == "episodes":
            episodes(cfg)
        else:
            serve(cfg)
    except (ConfigError, FileNotFoundError, KeyError, ValueError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"vla-serve: {msg}", file=sys.stderr)
        _exit_code[0] = 2


def main() -> None:
    HydraApp("vla-serve").run(_main)
    sys.exit(_exit_code[0])


if __name__ == "__main__":
    main()
