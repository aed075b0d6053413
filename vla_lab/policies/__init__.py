"""Policies behind one contract (``vla_lab.policies.contract``): OpenVLA and SmolVLA."""
