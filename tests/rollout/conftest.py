"""Fixtures of the rollout tests: the simulator tests' headless Chromium, shared per module."""

from tests.sim.conftest import needs_browser, sim_env

__all__ = ["needs_browser", "sim_env"]
