"""Fixtures of the fuzzing/crash suite: the serve tests' tiny checkpoint (openvla_tiny, l1_chunk head,
56 px, with its data_processor.json) and policy engine, shared rather than rebuilt, and a server on
loopback with short time-outs, so that stalled probes are answered within a bound."""

import pytest

from tests.serve.conftest import _one_thread, checkpoint, engine, serve_config  # noqa: F401  (shared)

MAX_BODY = 200_000


@pytest.fixture(scope="module")
def fuzz_server(engine):  # noqa: F811  (the imported fixture)
    from vla_lab.serve.server import BackgroundServer

    cfg = serve_config(max_body_bytes=MAX_BODY, header_timeout_s=1.0, read_timeout_s=1.0)
    with BackgroundServer(cfg, engine) as srv:
        yield srv
