"""Typed schema of ``vla-serve`` (``conf/serve.yaml``), registered in Hydra's ConfigStore as
``_serve_schema``: a wrong type or an unknown key fails at composition, naming the field."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from vla_lab.config.errors import ConfigError
from vla_lab.eval.config import EvalConfig

MODES = ("serve", "episodes")
TRANSPORTS = ("http", "http-json", "ws", "ws-json")


@dataclass
class ClientConfig:
    """``mode=episodes``: closed-loop simulator episodes driven through a policy server."""

    #: a running server (http://… or ws://…); null = serve ``checkpoint`` in this process
    url: str | None = None
    #: http / ws send the binary form, http-json / ws-json the JSON form
    transport: str = "ws"
    #: seconds to wait for one reply
    timeout_s: float = 30.0
    #: run the episodes in the live viewer page (prints a loopback URL to open) instead of headless
    viewer: bool = False


@dataclass
class ServeConfig:
    #: serve = answer requests until interrupted; episodes = run ``eval`` episodes through a server
    mode: str = "serve"
    #: checkpoint directory of a training run (best/, final/, checkpoints/checkpoint-<step>/)
    checkpoint: str | None = None
    #: statistics key inside the checkpoint; null = the one it was trained with
    unnorm_key: str | None = None
    device: str = "cpu"
    #: torch intra-op threads of the inference worker; null = torch's default
    torch_threads: int | None = None
    #: loopback by default: another address exposes the policy to the network
    host: str = "127.0.0.1"
    #: HTTP port; 0 = a free one (printed at start)
    port: int = 8000
    #: WebSocket port; 0 = a free one (printed at start, and in GET /health)
    ws_port: int = 8001
    #: bearer token every request must carry; null = no authentication (conf: $VLA_SERVE_TOKEN)
    auth_token: str | None = None
    #: requests answered by one forward pass at most
    max_batch_size: int = 8
    #: how long the first request of a batch waits for others to join it
    max_wait_ms: float = 2.0
    #: requests waiting for the model before new ones are refused with 503
    max_pending: int = 64
    #: largest request body or WebSocket message accepted
    max_body_bytes: int = 8 * 1024 * 1024
    #: largest image height or width accepted (the policy resizes to its own size anyway)
    max_image_side: int = 1024
    max_instruction_chars: int = 1000
    #: a request body not fully received within this many seconds is answered 408
    read_timeout_s: float = 30.0
    #: a connection that has not completed a request's headers (or sits idle between requests)
    #: this long is closed, so half-sent requests cannot hold connections open
    header_timeout_s: float = 10.0
    #: Host names served besides the loopback names and ``host`` itself; a request whose Host (or
    #: Origin) names another is refused with 403, which stops DNS-rebinding pages reaching the policy
    allowed_hosts: list[str] = field(default_factory=list)
    client: ClientConfig = field(default_factory=ClientConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"mode: must be one of {MODES}, got {self.mode!r}")
        for name in ("port", "ws_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ConfigError(f"{name}: must be in [0, 65535] (0 = a free port), got {value}")
        if self.port and self.port == self.ws_port:
            raise ConfigError(f"ws_port: must differ from port, both are {self.port}")
        for name in ("max_batch_size", "max_pending", "max_body_bytes", "max_image_side"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms: must be >= 0, got {self.max_wait_ms}")
        for name in ("read_timeout_s", "header_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.auth_token is not None and not self.auth_token.strip():
            raise ConfigError("auth_token: empty; set a token or null for no authentication")
        if self.client.transport not in TRANSPORTS:
            raise ConfigError(f"client.transport: must be one of {TRANSPORTS}, got {self.client.transport!r}")

    def served_hosts(self) -> set[str]:
        """Host names (without port) a request may address."""
        names = {"127.0.0.1", "localhost", "::1", self.host.strip("[]").lower()}
        return names | {h.strip("[]").lower() for h in self.allowed_hosts}

    def check_serving(self) -> None:
        if not self.checkpoint:
            raise ConfigError("checkpoint: required (a checkpoint directory, e.g. outputs/train/<run>/best)")

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def register_configs() -> None:
    ConfigStore.instance().store(name="_serve_schema", node=ServeConfig)
