"""Benchmarks: each module exposes ``run(out_dir) -> dict``; ``python -m vla_lab.bench`` runs them all."""
