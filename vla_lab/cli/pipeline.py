"""``vla-pipeline NAME [overrides]``: run the pipeline ``conf/pipeline/NAME.yaml``, each stage the command
a user would type, as a subprocess.

    vla-pipeline demo seed=1 pipeline.eval_episodes=5     = make demo with another seed, fewer episodes
    vla-pipeline demo dry_run=true                         print every command, run nothing
    vla-pipeline iterate rounds=2 out=outputs/iterate/x    = vla-iterate rounds=2 out=...

Exit codes: 0 every stage ran, 1 a stage failed (its command and output are shown), 2 bad configuration.
"""

from __future__ import annotations

import sys

from hydra.errors import HydraException

from vla_lab.config.errors import ConfigError
from vla_lab.workflows.demo import run_demo
from vla_lab.workflows.iterate import iterate
from vla_lab.workflows.pipeline import compose_pipeline, pipeline_names, run_stages
from vla_lab.workflows.stages import StageFailed

DRIVERS = {"demo": run_demo, "iterate": iterate, "stages": run_stages}


def exit_status(prog: str, run) -> int:
    """``run()`` with a workflow's outcomes as exit statuses: 0 done, 1 a stage failed, 2 bad
    configuration; the message goes to stderr."""
    try:
        run()
    except (ConfigError, HydraException) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except StageFailed as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    return 0


def run_pipeline(name: str, overrides: list[str]) -> None:
    cfg = compose_pipeline(name, overrides)
    driver = cfg.pipeline.get("driver", "stages")
    if driver not in DRIVERS:
        raise ConfigError(f"pipeline.driver: unknown driver {driver!r}; valid: {', '.join(DRIVERS)}")
    DRIVERS[driver](cfg)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__ + "\npipelines: " + ", ".join(pipeline_names()))
        return 0 if argv else 2
    return exit_status("vla-pipeline", lambda: run_pipeline(argv[0], argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
