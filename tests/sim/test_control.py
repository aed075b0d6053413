"""Target-pose actions (position control) on top of the robot's delta commands."""

from __future__ import annotations

import numpy as np
import pytest

from vla_lab.sim import control


def test_a_target_is_approached_at_the_robots_speed_and_deltas_round_trip():
    ee, ori = np.array([0.0, 0.1, 0.2]), np.array([0.05, 0.0, 3.1])
    # 10 cm away saturates, 1 cm is half a step; yaw goes the short way round (3.1 -> -3.1 rad)
    delta = control.target_to_delta([0.1, 0.11, 0.2, 0.0, 0.0, -3.1, 0.3], ee, ori)
    np.testing.assert_allclose(delta, [1.0, 0.5, 0.0, -0.5, 0.0, 0.83185, 0.3], atol=1e-4)
    for d in ([0.3, -1.0, 0.7, 0.2, -0.4, 1.0, 0.0], [-1, 1, -1, 1, -1, -1, 1]):
        target = control.delta_to_target(d, ee, ori)
        np.testing.assert_allclose(control.target_to_delta(target, ee, ori), d, atol=1e-5)
    with pytest.raises(ValueError, match="7 finite numbers"):
        control.target_to_delta([0.0, np.nan, 0, 0, 0, 0, 1], ee, ori)
    assert control.action_space(control.TARGET).names[:3] == ["x", "y", "z"]
    with pytest.raises(ValueError, match="delta_ee"):
        control.action_space("joint")
