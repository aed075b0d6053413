"""`vla-demo`'s own logic: shards, side-by-side stages and the comparison table (the stages
themselves are the CLIs tested elsewhere)."""

from __future__ import annotations

import json
import subprocess

import pytest

from vla_lab.cli.demo import final_closed_loop, run_side_by_side, shard_sizes, table


@pytest.mark.parametrize(("total", "shards"), [(700, 2), (151, 2), (5, 3), (1, 4), (9, 1)])
def test_shards_split_every_episode_and_none_is_empty(total, shards):
    sizes = shard_sizes(total, shards)
    assert sum(sizes) == total
    assert len(sizes) == min(total, shards) and min(sizes) >= 1
    assert max(sizes) - min(sizes) <= 1


def test_side_by_side_prints_each_output_whole_in_order(tmp_path, capsys):
    files = []
    for i in range(2):
        f = tmp_path / f"{i}.json"
        f.write_text(json.dumps({"shard": i}))
        files.append(str(f))
    run_side_by_side("two", "json.tool", [["--compact", f] for f in files])
    out = capsys.readouterr().out
    assert out.index('{"shard":0}') < out.index('{"shard":1}')
    assert "--- two:" in out


def test_side_by_side_fails_when_one_job_fails(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text("{}")
    with pytest.raises(subprocess.CalledProcessError) as err:
        run_side_by_side("one bad", "json.tool", [[str(good)], [str(tmp_path / "missing.json")]])
    assert str(tmp_path / "missing.json") in err.value.cmd
    assert "--- one bad:" not in capsys.readouterr().out


def _rows(successes: dict[str, int], episodes: int) -> list[dict]:
    return [
        {"task": t, "successes": k, "episodes": episodes, "success_rate": k / episodes}
        for t, k in successes.items()
    ]


def test_table_reports_rates_averages_and_intervals(capsys):
    evals = {
        "zero_shot": _rows({"pick_block": 0, "reach_target": 2}, 20),
        "fine_tuned": _rows({"pick_block": 17, "reach_target": 20}, 20),
    }
    results = table(evals, 20)
    assert results["episodes_per_task"] == 20
    assert results["fine_tuned"] == {"pick_block": 0.85, "reach_target": 1.0}
    assert results["average"] == pytest.approx({"zero_shot": 0.05, "fine_tuned": 0.925})
    out = capsys.readouterr().out
    assert "| pick_block | 0/20 = 0% [0.00, 0.16] | 17/20 = 85% [0.64, 0.95] |" in out


def test_a_run_without_closed_loop_evaluation_is_named(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"closed_loop": []}))
    with pytest.raises(RuntimeError, match="summary.json.*no closed-loop evaluation"):
        final_closed_loop(tmp_path)
