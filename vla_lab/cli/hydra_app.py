"""Schema registration of the Hydra entry points: every layer's typed schemas, as each console
script needs them before composing (composition itself: :mod:`vla_lab.config.compose`)."""

from __future__ import annotations

import functools
import os
import sys

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


#: exceptions that mean the user's input (config, data, checkpoint path) is wrong, not the program
def input_errors() -> tuple[type[BaseException], ...]:
    from omegaconf.errors import OmegaConfBaseException

    from vla_lab.config.errors import ConfigError
    from vla_lab.data.errors import DataError

    return (ConfigError, DataError, FileNotFoundError, FileExistsError, OmegaConfBaseException)


def full_errors() -> bool:
    """``HYDRA_FULL_ERROR=1`` asks for tracebacks instead of one-line errors."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


class HydraApp:
    """Runs a ``@hydra.main`` task so that bad input ends in one line on stderr and exit status 2:
    errors raised by the task (``input_errors()``) and overrides Hydra refuses while composing
    (Hydra prints those itself, then exits 1 before the task starts). Other failures keep Hydra's
    report and status 1."""

    def __init__(self, prog: str):
        self.prog, self.started = prog, False

    def task(self, fn):
        @functools.wraps(fn)
        def wrapped(cfg):
            self.started = True
            try:
                return fn(cfg)
            except input_errors() as e:
                if full_errors():
                    raise
                print(f"{self.prog}: error: {e}", file=sys.stderr)
                raise SystemExit(2) from None

        return wrapped

    def run(self, hydra_main) -> None:
        try:
            hydra_main()
        except SystemExit as e:
            if e.code == 1 and not self.started:
                raise SystemExit(2) from None  # the overrides did not compose: bad input
            raise
