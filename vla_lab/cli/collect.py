"""``vla-collect``: scripted-expert demonstrations, or rollouts of a trained policy, into an HDF5 file.

    vla-collect tasks=[pick_block,stack_blocks] environment=workshop episodes_per_task=20 out=demos.hdf5 seed=0
    vla-collect policy.checkpoint=<run>/final policy.label=expert out=demos.hdf5 append=true   # DAgger

Composes ``conf/collect.yaml`` (+ the ``sim/`` group); prints per-task success counts at the end.
Exit codes: 0 every task reached its episode count, 1 some task fell short, 2 bad configuration.
"""

from __future__ import annotations

import json
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from vla_lab.cli.hydra_app import HydraApp
from vla_lab.config import CONF_DIR
from vla_lab.rollout.config import register_configs

register_configs()

# hydra.main discards the task function's return value; the exit status travels through here.
_exit_code = [0]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="collect")
def _main(cfg: DictConfig) -> None:
    from vla_lab.rollout.collect import collect
    from vla_lab.sim.config import env_kwargs

    try:
        summary = collect(
            tasks=list(cfg.tasks),
            environment=cfg.environment,
            episodes_per_task=cfg.episodes_per_task,
            out=cfg.out,
            seed=cfg.seed,
            env_kwargs=env_kwargs(cfg.sim),
            noise_std=cfg.expert.noise_std,
            random_action_prob=cfg.expert.random_action_prob,
            label=cfg.expert.label,
            keep_failures=cfg.keep_failures,
            max_attempts_factor=cfg.max_attempts_factor,
            append=cfg.append,
            progress=cfg.progress,
            policy=OmegaConf.to_object(cfg.policy),
            max_steps=cfg.max_steps,
            record_object_pos=cfg.record_object_pos,
            action_kind=cfg.action_space,
            resume=cfg.resume,
        )
    except KeyboardInterrupt:
        print(
            f"vla-collect: interrupted; the finished demos are kept: rerun with resume=true to continue {cfg.out}",
            file=sys.stderr,
        )
        _exit_code[0] = 130
        return
    except ValueError as e:
        print(f"vla-collect: {e}", file=sys.stderr)
        _exit_code[0] = 2
        return
    print(f"wrote {summary.out}")
    print(f"{'task':<22}{'kept':>6}{'success':>10}{'attempts':>10}")
    short = False
    for task, c in summary.per_task.items():
        print(f"{task:<22}{c.kept:>6}{c.successes:>10}{c.attempts:>10}")
        short |= c.kept < cfg.episodes_per_task
    print(json.dumps(summary.as_dict()))
    _exit_code[0] = 1 if short else 0


def main() -> None:
    HydraApp("vla-collect").run(_main)
    sys.exit(_exit_code[0])


if __name__ == "__main__":
    main()
