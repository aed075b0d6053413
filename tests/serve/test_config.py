"""``conf/serve.yaml`` composes into the typed schema; bad values fail naming the field."""

from __future__ import annotations

import pytest

from vla_lab.config.compose import compose
from vla_lab.config.errors import ConfigError
from vla_lab.config.schemas import to_schema
from vla_lab.serve.config import ServeConfig


def _cfg(*overrides: str) -> ServeConfig:
    return to_schema(ServeConfig, compose("serve", list(overrides)), where="vla-serve")


def test_defaults_are_loopback_without_token(monkeypatch):
    monkeypatch.delenv("VLA_SERVE_TOKEN", raising=False)
    cfg = _cfg("checkpoint=some/best")
    assert cfg.host == "127.0.0.1" and cfg.loopback and cfg.auth_token is None
    assert cfg.mode == "serve" and cfg.eval.tasks and cfg.client.transport == "ws"


@pytest.mark.parametrize(
    "override, message",
    [
        ("port=70000", "port: must be in [0, 65535]"),
        ("max_batch_size=0", "max_batch_size: must be >= 1"),
        ("max_wait_ms=-1", "max_wait_ms: must be >= 0"),
        ("mode=train", "mode: must be one of"),
        ("client.transport=grpc", "client.transport: must be one of"),
        ("auth_token=' '", "auth_token: empty"),
    ],
)
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _cfg(override)


def test_serving_needs_a_checkpoint():
    with pytest.raises(ConfigError, match="checkpoint: required"):
        _cfg().check_serving()
