"""vla_lab: fine-tune Vision-Language-Action policies and evaluate them closed-loop."""

__version__ = "0.1.0"
