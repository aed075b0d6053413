"""Closed-loop evaluation: episode runner, execution strategies, safety wrapper, metrics."""
