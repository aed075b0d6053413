"""Multi-stage pipelines (``make demo``, ``vla-iterate``) read from ``conf/pipeline/*.yaml``.

Every stage is a vla_lab command run as a subprocess, as a user would run it, through the one runner
in :mod:`vla_lab.workflows.stages`; :mod:`vla_lab.workflows.pipeline` turns a pipeline's config into
stages; :mod:`~vla_lab.workflows.demo` and :mod:`~vla_lab.workflows.iterate` are the two drivers.
"""

from __future__ import annotations


def register_configs() -> None:
    """Register ``vla-iterate``'s typed schema and the pipelines' resolvers (idempotent)."""
    from vla_lab.workflows.iterate import register_configs as register_iterate
    from vla_lab.workflows.pipeline import register_resolvers

    register_resolvers()
    register_iterate()
