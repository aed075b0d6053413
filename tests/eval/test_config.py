"""The ``eval`` config: invalid values fail naming the field."""

import pytest

from vla_lab.config.errors import ConfigError
from vla_lab.eval.config import EvalConfig
from vla_lab.sim.config import RandomizationConfig


def test_bad_eval_randomization_names_the_field():
    cfg = EvalConfig(randomization=RandomizationConfig(num_distractors=9))
    with pytest.raises(ConfigError, match=r"eval.randomization: randomization.num_distractors=9"):
        cfg.check_names()
