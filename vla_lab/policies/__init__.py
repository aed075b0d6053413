"""Policies behind one contract (``vla_lab.policies.contract``), one folder per family (OpenVLA,
SmolVLA) registered in ``vla_lab.policies.registry``; checkpoints and adapters in ``pretrained``."""
