"""Schema registration of the Hydra entry points: every layer's typed schemas, as each console
script needs them before composing (composition itself: :mod:`vla_lab.config.compose`)."""

from __future__ import annotations

from vla_lab.config.compose import register_resolvers


def register_all() -> None:
    """Register every layer's typed schemas in Hydra's ConfigStore and the resolvers (idempotent)."""
    register_resolvers()
    from vla_lab.config.schemas import register_configs as register_data
    from vla_lab.eval.config import register_configs as register_eval
    from vla_lab.policies.config import register_configs as register_policies
    from vla_lab.rollout.config import register_configs as register_collect
    from vla_lab.serve.config import register_configs as register_serve
    from vla_lab.training.config import register_configs as register_training
    from vla_lab.workflows import register_configs as register_workflows

    register_data()
    register_policies()
    register_collect()
    register_eval()
    register_training()
    register_workflows()
    register_serve()
