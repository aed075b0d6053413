"""RemotePolicyActor: the rollout Actor protocol over the server, executing chunks the way
the policy's own ``select_action`` does; closed-loop simulator episodes through it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.serve.conftest import CHUNK, INSTRUCTIONS, random_image
from vla_lab.eval.config import ExecutionConfig
from vla_lab.serve.client import PolicyClient
from vla_lab.serve.remote import RemotePolicyActor

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("transport", ["http", "ws"])
def test_remote_actor_executes_like_the_local_actor(server, reference, transport):
    execution = ExecutionConfig(n_action_steps=2)
    reference.runtime.configure(execution)
    url = server.url if transport == "http" else server.ws_url
    with PolicyClient(url) as client:
        remote = RemotePolicyActor(client, execution)
        try:
            for episode in range(2):
                remote.reset(episode)
                reference.reset(episode)
                for step in range(5):
                    obs = {"agentview": random_image(10 * episode + step)}
                    info = {"instruction": INSTRUCTIONS[episode]}
                    np.testing.assert_array_equal(remote.act(obs, info), reference.act(obs, info))
        finally:
            reference.runtime.configure(ExecutionConfig())


def test_remote_actor_checks_the_execution_settings(server):
    with PolicyClient(server.url) as client, pytest.raises(ValueError, match="n_action_steps"):
        RemotePolicyActor(client, ExecutionConfig(n_action_steps=CHUNK + 1))
    with PolicyClient(server.url) as client:
        actor = RemotePolicyActor(client, ExecutionConfig(temporal_ensemble_coeff=0.1))
        a = actor.act({"agentview": random_image(0)}, {"instruction": INSTRUCTIONS[0]})
        assert a.shape == (7,) and actor.n_action_steps == 1


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_closed_loop_episodes_through_the_server(server):
    from vla_lab.eval.config import EvalConfig
    from vla_lab.serve.remote import run_remote_episodes

    cfg = EvalConfig(tasks=["reach_target"], episodes_per_task=2, max_steps=6, render_size=64)
    with PolicyClient(server.ws_url) as client:
        out = run_remote_episodes(client, cfg, progress=False)
    results = out["results"]
    assert len(results) == 2 and all(r.steps == 6 or r.success for r in results)
    assert all(not r.failure.startswith("Sim") for r in results)
    assert out["overall"]["episodes"] == 2
