"""What every fuzzer of this suite shares: the outcome of one probe, the counts of a run, their JSON
report (for docs/reliability.md) and the two sizes each fuzzer runs at.

Outcomes: ``clear_error`` (refused with an error naming the problem), ``accepted`` (valid, or
harmless), ``crash`` (a 5xx, a dead server, a traceback in a log, an exception of a kind the code
promises not to raise, an error that does not name its file), ``hang`` (no answer within the bound),
``data_lost`` (a corrupted or interrupted artifact read back as if intact), ``wrong_answer`` (a valid
input refused, or an invalid one accepted).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

OUTCOMES = ("clear_error", "accepted", "crash", "hang", "data_lost", "wrong_answer")
#: ``wrong_answer``: a valid input refused, or an invalid one accepted (checked where the fuzzer
#: knows which the input is)
FAILURES = ("crash", "hang", "data_lost", "wrong_answer")
#: directory the JSON reports go to (unset: none written)
REPORT_ENV = "VLA_ROBUSTNESS_REPORT"
#: overrides every fuzzer's seed, to explore beyond the recorded runs
SEED_ENV = "VLA_ROBUSTNESS_SEED"
#: how many failing probes a report describes in full
EXAMPLES = 20

#: the short run is part of `make test`; the long one (`make test-full`) gives the docs' figures
SIZES = [pytest.param("short", id="short"), pytest.param("long", id="long", marks=pytest.mark.slow)]


def seed(default: int) -> int:
    return int(os.environ.get(SEED_ENV, default))


def pick(rng, options: list):
    """One of ``options``, drawn from ``rng`` (a numpy Generator)."""
    return options[int(rng.integers(len(options)))]


@dataclass
class FuzzRun:
    """The counts of one fuzzer run; ``add`` each probe's outcome, then ``finish``."""

    fuzzer: str
    size: str
    seed: int
    counts: Counter = field(default_factory=Counter)
    #: what went wrong, for the probes that failed (the first EXAMPLES)
    failures: list[str] = field(default_factory=list)
    #: a few clear errors, to show what the user reads
    samples: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    #: failures of a kind whose fix lies outside this suite's reach, each pinned by a strict xfail
    #: test: counted and reported, not asserted ({gap name: count})
    known_gaps: Counter = field(default_factory=Counter)

    def add(self, outcome: str, what: str, detail: str = "", gap: str | None = None) -> None:
        """``gap``: the name of a known gap this failure is an instance of (see known_gaps)."""
        assert outcome in OUTCOMES, outcome
        line = f"{what}: {detail}"[:400]
        if gap is not None and outcome in FAILURES:
            self.known_gaps[gap] += 1
            self.counts["known_gap"] += 1
            return
        self.counts[outcome] += 1
        if outcome in FAILURES and len(self.failures) < EXAMPLES:
            self.failures.append(f"{outcome}: {line}")
        elif outcome == "clear_error" and len(self.samples) < 5:
            self.samples.append(line)

    @property
    def tried(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict:
        return {
            "fuzzer": self.fuzzer,
            "size": self.size,
            "seed": self.seed,
            "tried": self.tried,
            **{k: self.counts[k] for k in OUTCOMES},
            "known_gap": dict(self.known_gaps),
            "wall_s": round(time.monotonic() - self.started, 1),
            "failures": self.failures,
            "samples": self.samples,
        }

    def finish(self, min_tried: int = 1) -> dict:
        """Writes the report (when asked for) before asserting, so a failing run is recorded too."""
        summary = self.summary()
        out = os.environ.get(REPORT_ENV)
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            path = Path(out) / f"{self.fuzzer}-{self.size}.json"
            path.write_text(json.dumps(summary, indent=1) + "\n")
        assert self.tried >= min_tried, summary
        bad = {k: summary[k] for k in FAILURES if summary[k]}
        assert not bad, f"{self.fuzzer}: {bad}\n" + "\n".join(self.failures)
        return summary
