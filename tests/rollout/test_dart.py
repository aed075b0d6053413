"""DART-style labels: the perturbed action runs, the expert's clean action at that state is recorded."""

from __future__ import annotations

import numpy as np
import pytest

from tests.rollout.conftest import needs_browser
from vla_lab.rollout.recording import run_expert_episode
from vla_lab.sim.expert import ScriptedExpert


class RecordingExpert(ScriptedExpert):
    """The real noisy expert, keeping what it proposed and what it executed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.proposed: list[np.ndarray] = []
        self.executed: list[np.ndarray] = []

    def act(self, info):
        self.proposed.append(self.clean_action(info))
        a = super().act(info)
        self.executed.append(a.copy())
        return a


@pytest.mark.sim
@needs_browser
@pytest.mark.parametrize("label", ["clean", "executed"])
def test_labels_are_clean_actions_at_perturbed_states(sim_env, label):
    expert = RecordingExpert(noise_std=0.4, seed=3)
    ep = run_expert_episode(sim_env, expert, "reach_target", seed=11, label=label)
    proposed, executed = np.stack(expert.proposed), np.stack(expert.executed)
    assert len(ep.actions) == len(proposed) and not np.allclose(proposed, executed)
    np.testing.assert_array_equal(ep.actions, proposed if label == "clean" else executed)


def test_unknown_label_is_refused():
    with pytest.raises(ValueError, match="label must be one of"):
        run_expert_episode(None, ScriptedExpert(), "reach_target", seed=0, label="noisy")
