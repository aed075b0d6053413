"""SmolVLA (lerobot's layout): configuration, network, processor and memory planner. Registered
here as the ``smolvla`` policy family."""

from vla_lab.policies.registry import PolicyFamily, register_family
from vla_lab.policies.smolvla.configuration_smolvla import SmolVLAConfig

register_family(
    PolicyFamily(
        name="smolvla",
        config_class=SmolVLAConfig,
        policy="vla_lab.policies.smolvla.modeling_smolvla:SmolVLAPolicy",
        model_types=("smolvla",),
        planner="vla_lab.policies.smolvla.planning_smolvla:plan_smolvla",
    )
)
