"""Closed-loop evaluation's vocabulary: config and presets, metrics, the safety wrapper, the LIBERO
adapter and episode videos. The episodes themselves run in :mod:`vla_lab.rollout`."""
