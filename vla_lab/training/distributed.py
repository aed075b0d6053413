"""One run directory per job, whatever the number of processes.

The run directory is resolved once, in the process that Hydra starts (global rank 0), before any
other process exists. Lightning's ``ddp`` strategy then re-runs the entry point for the other local
ranks; :func:`pin_child_argv` makes those child processes compose the *job's* overrides (not a
multirun's sweep lists) and use the pinned directory, so a run never ends up split over several
directories (the default run name carries a timestamp that a child would otherwise resolve anew).

Processes started by something else (``torchrun``, SLURM ``srun`` with one task per device) each
compose their own config: pin the directory explicitly there (``run_name=...`` or ``hydra.run.dir=...``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: the run directory resolved by global rank 0, inherited by the processes it starts
RUN_DIR_ENV = "VLA_LAB_RUN_DIR"
#: the job's own overrides (JSON list), replayed by child ranks instead of the command line
OVERRIDES_ENV = "VLA_LAB_JOB_OVERRIDES"
#: variables Lightning's subprocess launcher sets in the launching process
_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_RANK_ENV = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def is_global_zero_process() -> bool:
    """Rank zero of the job, judged from the environment (before any process group exists)."""
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in _RANK_ENV)


def is_spawned_child() -> bool:
    """A process started by Lightning's subprocess launcher for a local rank > 0."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0) > 0 and RUN_DIR_ENV in os.environ


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pin_child_argv(argv: list[str] | None = None) -> list[str]:
    """In a child rank: replace the command line by the job's overrides and the pinned run directory.

    Lightning re-runs ``sys.argv`` for every other local rank. Under ``vla-train -m a=1,2`` that
    command line is the whole sweep; the environment says which job this process belongs to.
    Returns the (possibly rewritten) argv; a process that is not a spawned child keeps its own.
    """
    argv = list(sys.argv if argv is None else argv)
    if not is_spawned_child():
        return argv
    overrides = json.loads(os.environ.get(OVERRIDES_ENV, "[]"))
    rank = os.environ.get("LOCAL_RANK", "?")
    return [
        argv[0],
        *overrides,
        f"hydra.run.dir={_quote(os.environ[RUN_DIR_ENV])}",
        "hydra.output_subdir=null",
        f"hydra.job.name=train_rank{rank}",
    ]


@contextmanager
def pinned_run_dir(run_dir: str | os.PathLike, overrides: list[str]) -> Iterator[None]:
    """Export the run directory and job overrides to the processes started inside the block; afterwards
    restore the launcher variables and tear down the process group, so the next job of a sweep in
    this process starts its own processes again."""
    saved = {k: os.environ.get(k) for k in (RUN_DIR_ENV, OVERRIDES_ENV, *_LAUNCHER_ENV)}
    os.environ[RUN_DIR_ENV] = str(run_dir)
    os.environ[OVERRIDES_ENV] = json.dumps(list(overrides))
    try:
        yield
    finally:
        _destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def job_overrides() -> list[str]:
    """The current Hydra job's task overrides (``[]`` outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def rank_report(trainer, module, samples: int) -> dict[str, Any]:
    """What this process did: its rank, steps, samples and a checksum of the trainable weights
    (equal on every rank when gradients were synchronised)."""
    import torch

    with torch.no_grad():
        params = [p.detach().double() for p in module.parameters() if p.requires_grad]
        checksum = float(sum(p.sum() for p in params)) if params else 0.0
        sq = float(sum((p * p).sum() for p in params)) if params else 0.0
    return {
        "global_rank": trainer.global_rank,
        "local_rank": trainer.local_rank,
        "world_size": trainer.world_size,
        "pid": os.getpid(),
        "global_step": trainer.global_step,
        "samples_seen": samples,
        "param_sum": checksum,
        "param_sq_sum": sq,
    }
