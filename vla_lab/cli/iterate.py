"""``vla-iterate``: continuous learning, rounds of collect → fine-tune → closed-loop evaluate.

    vla-iterate rounds=3 tasks=[reach_target] environment=studio collect.expert_episodes=20 \\
                collect.episodes=10 train.epochs=4 eval.episodes=10 out=outputs/iterate/reach

Composes ``conf/iterate.yaml`` (schema ``IterateConfig``, see ``vla_lab.workflows.iterate``) and the
stages of a round, ``conf/pipeline/iterate.yaml``.
Exit codes: 0 every round ran, 1 a stage failed (its log is named), 2 bad configuration.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from vla_lab.cli.hydra_app import HydraApp
from vla_lab.config import CONF_DIR
from vla_lab.config.errors import ConfigError
from vla_lab.workflows import register_configs
from vla_lab.workflows.iterate import StageFailed, iterate

register_configs()

# hydra.main discards the task function's return value; the exit status travels through here.
_exit_code = [0]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="iterate")
def _main(cfg: DictConfig) -> None:
    try:
        iterate(cfg)
    except ConfigError as e:
        print(f"vla-iterate: {e}", file=sys.stderr)
        _exit_code[0] = 2
    except StageFailed as e:
        print(f"vla-iterate: {e}", file=sys.stderr)
        _exit_code[0] = 1


def main() -> None:
    HydraApp("vla-iterate").run(_main)
    sys.exit(_exit_code[0])


if __name__ == "__main__":
    main()
