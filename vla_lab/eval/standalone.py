"""``evaluate_checkpoint(cfg)``: load a checkpoint, run the evaluation plan, write the results."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vla_lab.config.schemas import to_schema
from vla_lab.eval.actor import read_processor_spec
from vla_lab.eval.config import EvalConfig
from vla_lab.eval.evaluate import evaluate_policy
from vla_lab.eval.metrics import format_table, overall

log = logging.getLogger(__name__)


def load_checkpoint(directory: str | Path):
    """Policy and the data-side processor spec saved with it."""
    from vla_lab.policies.factory import load_policy

    spec = read_processor_spec(directory)
    policy = load_policy(Path(directory))
    policy.eval()
    return policy, spec


def evaluate_checkpoint(cfg: DictConfig) -> dict:
    eval_cfg: EvalConfig = to_schema(EvalConfig, cfg.eval, where="eval")
    eval_cfg.check_names()
    policy, spec = load_checkpoint(cfg.checkpoint)
    out_dir = Path(cfg.paths.output_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    out = evaluate_policy(
        policy, spec, eval_cfg, run_dir=out_dir, unnorm_key=cfg.get("unnorm_key"), progress=True
    )
    table = format_table(out["summaries"])
    result = {
        "checkpoint": str(cfg.checkpoint),
        "overall": out["overall"],
        # per environment (per suite for LIBERO): mean over its tasks, pooled Wilson interval
        "environments": {
            e: overall([s for s in out["summaries"] if s.environment == e])
            for e in sorted({s.environment for s in out["summaries"]})
        },
        "tasks": [asdict(s) for s in out["summaries"]],
        "episodes": [r.to_row() for r in out["results"]],
        "config": OmegaConf.to_container(cfg.eval, resolve=True),
    }
    (out_dir / "eval_results.json").write_text(json.dumps(result, indent=2))
    (out_dir / "eval_table.md").write_text(table + "\n")
    print(table)
    o = out["overall"]
    print(
        f"\noverall: {o['success_rate']:.1%} over {o['episodes']} episodes "
        f"(pooled 95% CI [{o['ci_low']:.2f}, {o['ci_high']:.2f}]); results in {out_dir}"
    )
    return result
