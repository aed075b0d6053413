import numpy as np

from vla_lab.eval.safety import SafetyConfig, SafetyWrapper

WORKSPACE = {"x": [-0.3, 0.3], "y": [-0.3, 0.3], "z": [0.02, 0.35]}


def test_disabled_wrapper_passes_actions_through():
    w = SafetyWrapper(SafetyConfig(enabled=False), WORKSPACE)
    a = np.array([5, 0, 0, 0, 0, 0, 1], np.float32)
    assert w(a, {"ee_pos": np.zeros(3)}) is a and w.interventions == 0


def test_clips_large_steps_and_counts_it():
    w = SafetyWrapper(SafetyConfig(enabled=True, max_delta=0.5), WORKSPACE)
    out = w(np.array([1.0, -0.2, 0, 0, 0, 0.9, 0], np.float32), {"ee_pos": np.zeros(3)})
    np.testing.assert_allclose(out, [0.5, -0.2, 0, 0, 0, 0.5, 0])
    assert w.interventions == 1
    w(np.array([0.1, 0, 0, 0, 0, 0, 1], np.float32), {"ee_pos": np.zeros(3)})
    assert w.interventions == 1


def test_workspace_fence_stops_motion_outwards_only():
    w = SafetyWrapper(SafetyConfig(enabled=True), WORKSPACE, max_translation=0.02)
    at_edge = {"ee_pos": np.array([0.295, 0.0, 0.1])}
    out = w(np.array([1.0, 0.5, 0, 0, 0, 0, 1], np.float32), at_edge)
    assert out[0] == 0.0 and out[1] == 0.5
    back = w(np.array([-1.0, 0, 0, 0, 0, 0, 1], np.float32), at_edge)
    assert back[0] == -1.0
    assert w.interventions == 1


def test_stuck_robot_gets_a_lift_recovery():
    cfg = SafetyConfig(enabled=True, stuck_window=3, stuck_distance=0.01, recovery_steps=2)
    w = SafetyWrapper(cfg, WORKSPACE)
    still = {"ee_pos": np.array([0.0, 0.0, 0.1])}
    push = np.array([0, 0, -1.0, 0, 0, 0, 0], np.float32)
    assert w(push, still)[2] == -1.0 and w(push, still)[2] == -1.0
    lifts = [w(push, still) for _ in range(2)]  # third still step triggers, then one more recovery step
    assert all(a[2] == 1.0 and a[6] == 1.0 for a in lifts)
    assert w.interventions == 2
    assert w(push, still)[2] == -1.0  # recovery over, window restarted
    w.reset()
    assert w.interventions == 0
