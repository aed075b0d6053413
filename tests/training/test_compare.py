"""vla-compare on run directories written by hand: per-task closed-loop cells and validation columns."""

from __future__ import annotations

import csv
import json

from vla_lab.training.compare import compare

EVAL_HEADER = ["step", "task", "environment", "episodes", "successes", "success_rate", "ci_low", "ci_high",
               "avg_steps_success", "final_position_error", "interventions", "faults"]  # fmt: skip


def _run(root, name, lr, evals, direction):
    run = root / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"optim": {"lr": lr}, "run_name": name}))
    with open(run / "eval_log.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(EVAL_HEADER)
        for step, task, env, k, err in evals:
            w.writerow([step, task, env, 10, k, k / 10, 0, 1, "nan", err, 0, 0])
    with open(run / "validation_log.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "epoch", "val_loss", "direction_accuracy", "position_l1"])
        w.writerow([10, 0, 0.5, 0.5, 0.4])
        w.writerow([20, 1, 0.3, direction, 0.3])
    return run


def test_per_task_cells_come_from_the_last_evaluation(tmp_path):
    a = _run(tmp_path, "a", 1e-3, [(10, "reach", "studio", 1, 0.2), (20, "reach", "studio", 7, 0.03),
                                   (20, "pick", "workshop", 2, 0.05)], 0.8)  # fmt: skip
    b = _run(tmp_path, "b", 1e-4, [(20, "reach", "studio", 0, 0.25)], 0.6)
    result = compare([a, b], tmp_path / "cmp")
    header, rows = (
        result["header"],
        {r[0]: dict(zip(result["header"], r, strict=True)) for r in result["rows"]},
    )
    assert result["differences"] == ["optim.lr"]
    assert rows["a"]["success reach@studio"] == "7/10" and rows["a"]["final_error_m reach@studio"] == 0.03
    assert rows["a"]["success pick@workshop"] == "2/10"
    assert rows["b"]["success pick@workshop"] == ""  # never evaluated there
    assert rows["a"]["val_direction_accuracy"] == 0.8 and rows["b"]["val_direction_accuracy"] == 0.6
    assert rows["a"]["success_rate"] == (0.7 + 0.2) / 2
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "success reach@studio" in md and "7/10" in md and "| b |" in md
    assert header.index("success pick@workshop") < header.index("success reach@studio")
