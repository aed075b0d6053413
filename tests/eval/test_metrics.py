import math

import pytest

from vla_lab.eval.metrics import EpisodeResult, format_table, overall, summarize, wilson_interval


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [
        (0, 20, 0.0, 0.1611),  # reference values of the Wilson score interval (z = 1.96)
        (20, 20, 0.8389, 1.0),
        (10, 20, 0.2993, 0.7007),
        (18, 20, 0.6990, 0.9721),
    ],
)
def test_wilson_interval_reference_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_interval_no_trials():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_summarize_groups_by_task_and_environment():
    results = [
        EpisodeResult("pick", "studio", 0, True, 30, 0.01),
        EpisodeResult("pick", "studio", 1, False, 80, 0.20, interventions=2, failure="timeout"),
        EpisodeResult("pick", "studio", 2, False, 5, failure="simulator crashed"),
        EpisodeResult("reach", "studio", 0, True, 10, 0.0),
    ]
    pick, reach = summarize(results)
    assert (pick.task, pick.episodes, pick.successes, pick.interventions, pick.faults) == ("pick", 3, 1, 2, 1)
    assert pick.avg_steps_success == 30 and pick.final_position_error == pytest.approx(0.105)
    assert pick.success_rate == pytest.approx(1 / 3)
    assert reach.success_rate == 1.0 and reach.ci_high == 1.0
    total = overall([pick, reach])
    assert total["success_rate"] == pytest.approx((1 / 3 + 1) / 2) and total["episodes"] == 4
    table = format_table([pick, reach])
    assert "| pick | studio | 1/3 (33%) |" in table and table.count("\n") == 3
    assert math.isnan(summarize([EpisodeResult("x", "y", 0, False, 3)])[0].avg_steps_success)
