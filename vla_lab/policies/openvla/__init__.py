"""OpenVLA (Prismatic) and its OpenVLA-OFT extensions: configuration, network, heads, processor,
checkpoint adaptation and memory planner. Registered here as the ``openvla`` policy family."""

from vla_lab.policies.openvla.configuration_openvla import OpenVLAConfig
from vla_lab.policies.registry import PolicyFamily, register_family

register_family(
    PolicyFamily(
        name="openvla",
        config_class=OpenVLAConfig,
        policy="vla_lab.policies.openvla.modeling_openvla:OpenVLAPolicy",
        model_types=("openvla", "prismatic"),
        planner="vla_lab.policies.openvla.planning_openvla:plan_openvla",
        vision_warmup=True,
    )
)
