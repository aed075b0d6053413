"""vla_lab: fine-tune Vision-Language-Action policies and evaluate them closed-loop."""

import os

# Passive OpenMP waiting: on small CPU machines the training process shares its cores with data
# workers and the simulator's browser, and spinning OpenMP threads then stall each other (a 2-thread
# training step measured 11 s instead of 0.5 s). Must be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
