"""Serving trained policies: ``vla-serve`` (HTTP + WebSocket, micro-batched), its Python client and
closed-loop episodes through it. Imports stay lazy: ``vla_lab.serve.config`` is read by every CLI.

    from vla_lab.serve.client import PolicyClient
    PolicyClient("http://127.0.0.1:8000").predict(image, "pick up the red block")  # (K, A)
"""
