"""Episode outcomes and their aggregation: success rates with Wilson 95 % intervals."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well-behaved at 0/n and n/n)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class EpisodeResult:
    task: str
    environment: str
    seed: int
    success: bool
    steps: int
    final_distance: float = float("nan")
    interventions: int = 0
    #: why the episode ended badly: "" on success, "timeout" at the step budget, or a fault's message
    failure: str = ""
    frames: list = field(default_factory=list, repr=False)

    def to_row(self) -> dict:
        row = asdict(self)
        row.pop("frames")
        return row


@dataclass
class TaskSummary:
    task: str
    environment: str
    episodes: int
    successes: int
    success_rate: float
    ci_low: float
    ci_high: float
    avg_steps_success: float
    final_position_error: float
    interventions: int
    faults: int


def summarize(results: Iterable[EpisodeResult]) -> list[TaskSummary]:
    groups: dict[tuple[str, str], list[EpisodeResult]] = defaultdict(list)
    for r in results:
        groups[(r.task, r.environment)].append(r)
    out = []
    for (task, env), rs in sorted(groups.items()):
        k, n = sum(r.success for r in rs), len(rs)
        lo, hi = wilson_interval(k, n)
        steps = [r.steps for r in rs if r.success]
        dists = [r.final_distance for r in rs if not math.isnan(r.final_distance)]
        out.append(
            TaskSummary(
                task,
                env,
                n,
                k,
                k / n,
                lo,
                hi,
                sum(steps) / len(steps) if steps else float("nan"),
                sum(dists) / len(dists) if dists else float("nan"),
                sum(r.interventions for r in rs),
                sum(1 for r in rs if r.failure not in ("", "timeout")),
            )
        )
    return out


def overall(summaries: list[TaskSummary]) -> dict:
    """Mean success over tasks (each task weighted equally, as benchmark tables report)."""
    if not summaries:
        return {"success_rate": float("nan"), "episodes": 0}
    k, n = sum(s.successes for s in summaries), sum(s.episodes for s in summaries)
    lo, hi = wilson_interval(k, n)
    return {
        "success_rate": sum(s.success_rate for s in summaries) / len(summaries),
        "episodes": n,
        "successes": k,
        "ci_low": lo,
        "ci_high": hi,
    }


def format_table(summaries: list[TaskSummary]) -> str:
    """Markdown table of per-task results."""
    lines = [
        "| task | environment | success | 95% CI | avg steps (succ.) | final error | interventions |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.task} | {s.environment} | {s.successes}/{s.episodes} ({s.success_rate:.0%}) | "
            f"[{s.ci_low:.2f}, {s.ci_high:.2f}] | {s.avg_steps_success:.1f} | "
            f"{s.final_position_error:.3f} | {s.interventions} |"
        )
    return "\n".join(lines)
