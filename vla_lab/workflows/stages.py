"""The one way a pipeline runs its stages: each stage is a vla_lab command run as a subprocess, exactly
as a user would type it (``vla-collect ...`` = ``python -m vla_lab.cli.collect ...``).

A :class:`Stage` names its command, its Hydra overrides, where its output goes (the console, or a log
file of its own), a time limit and the exit codes that count as done. :class:`StageRunner` runs one
stage, or several runs of one command side by side (e.g. collection shards, one simulator each);
with ``dry_run`` it prints the commands instead. A stage that fails or runs out of time raises
:class:`StageFailed`, which names the stage and its command and carries the end of its output.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: lines of a failed stage's output quoted in its StageFailed
TAIL_LINES = 25


def module_of(command: str) -> str:
    """``collect`` -> ``vla_lab.cli.collect``; a dotted name is already a module."""
    return command if "." in command else f"vla_lab.cli.{command}"


def shell_word(arg: str) -> str:
    """``arg`` as one shell word, in the most readable quoting that keeps it one word."""
    if re.fullmatch(r"[\w@%+=:,./-]+", arg):
        return arg
    if "'" not in arg:
        return f"'{arg}'"
    if not re.search(r'["$`\\!]', arg):
        return f'"{arg}"'
    return shlex.quote(arg)


@dataclass(frozen=True)
class Stage:
    #: shown in headers, dry runs and errors, e.g. ``round 0 train``
    name: str
    #: a vla_lab command (``collect``, ``train``, ``eval``, ...) or a dotted module run with ``python -m``
    command: str
    overrides: tuple[str, ...] = ()
    #: the file the output goes to; None = the console
    log: Path | None = None
    #: seconds before the stage is stopped; None = no limit
    timeout_s: float | None = None
    #: exit codes that mean the stage did its job (vla-collect exits 1 when a task fell short)
    ok_exit_codes: tuple[int, ...] = (0,)

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", module_of(self.command), *self.overrides]

    @property
    def display(self) -> str:
        """The command line a user would type."""
        program = "vla-" + self.command if "." not in self.command else f"python -m {self.command}"
        return " ".join([program, *map(shell_word, self.overrides)])


@dataclass(frozen=True)
class StageResult:
    stage: Stage
    #: None in a dry run
    exit_code: int | None
    seconds: float


class StageFailed(RuntimeError):
    """A stage exited with a code it does not count as done, or ran out of time."""

    def __init__(self, stage: Stage, reason: str, tail: str = "", exit_code: int | None = None):
        self.stage, self.reason, self.tail, self.exit_code = stage, reason, tail, exit_code
        where = f"; log {stage.log}" if stage.log else ""
        text = f"{stage.name} failed ({reason}){where}\n$ {stage.display}"
        super().__init__(text + (f"\n{tail}" if tail else ""))


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


class _Launched:
    """One started stage: its process and where its output goes."""

    def __init__(self, stage: Stage, capture: bool):
        self.stage = stage
        self.sink: IO[str] | None = None
        if stage.log is not None:
            stage.log.parent.mkdir(parents=True, exist_ok=True)
            self.sink = stage.log.open("w")
            self.sink.write(f"$ {stage.display}\n")
            self.sink.flush()
            out = self.sink
        else:
            out = subprocess.PIPE if capture else None
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            stage.argv, stdout=out, stderr=subprocess.STDOUT if out is not None else None, text=True
        )

    def wait(self, deadline: float | None) -> tuple[int | None, str]:
        """(exit code or None on timeout, captured output) once the process ended or was stopped."""
        try:
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            output, _ = self.proc.communicate(timeout=left)
            code: int | None = self.proc.returncode
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate()
            code = None
        if self.sink is not None:
            self.sink.close()
        return code, output or ""

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def failure(self, code: int | None, output: str) -> StageFailed | None:
        stage = self.stage
        if code in stage.ok_exit_codes:
            return None
        if stage.log is not None:
            output = stage.log.read_text(errors="replace")
        reason = f"exit {code}" if code is not None else f"no result within {stage.timeout_s:g}s"
        return StageFailed(stage, reason, tail(output), code)


class StageRunner:
    """Runs stages one at a time or side by side; prints each command, or only prints it (dry run).

    ``commands`` (a file) gets every command before it runs, under a ``# <stage name>`` line.
    """

    def __init__(
        self,
        *,
        dry_run: bool = False,
        commands: Path | None = None,
        echo: Callable[[str], None] | None = None,
    ):
        self.dry_run = dry_run
        self.commands = commands
        self.echo = echo or (lambda text: print(text, flush=True))

    def run(self, stage: Stage) -> StageResult:
        """Run ``stage``; raises StageFailed unless it ends with one of its ok exit codes."""
        if self.dry_run:
            self.echo(f"[{stage.name}] {stage.display}")
            return StageResult(stage, None, 0.0)
        self.echo(f"\n=== {stage.name} ===\n$ {stage.display}")
        self._record(stage)
        launched = _Launched(stage, capture=False)
        code, output = launched.wait(self._deadline(stage.timeout_s))
        seconds = launched.seconds()
        self.echo(f"--- {stage.name}: exit {code}, {seconds:.0f}s" + _log_note(stage))
        failure = launched.failure(code, output)
        if failure is not None:
            raise failure
        return StageResult(stage, code, seconds)

    def run_side_by_side(self, title: str, stages: Sequence[Stage]) -> list[StageResult]:
        """Several stages at once. An output not going to a log is printed whole when its stage ends,
        in the stages' order. Every stage runs to its end (or its time limit); the first that failed
        is raised then. A simulator keeps about one core busy, so two shards on two cores collect in
        about half the time of one."""
        if self.dry_run:
            for stage in stages:
                self.echo(f"[{stage.name}] {stage.display} &")
            return [StageResult(stage, None, 0.0) for stage in stages]
        self.echo(f"\n=== {title} ===")
        started = time.perf_counter()
        launched = []
        for stage in stages:
            self.echo(f"$ {stage.display} &")
            self._record(stage)
            launched.append(_Launched(stage, capture=True))
        results, failures = [], []
        for run in launched:
            code, output = run.wait(self._deadline(run.stage.timeout_s, run.started))
            if output:
                self.echo(output.rstrip("\n"))
            results.append(StageResult(run.stage, code, run.seconds()))
            failure = run.failure(code, output)
            if failure is not None:
                failures.append(failure)
        if failures:
            raise failures[0]
        self.echo(f"--- {title}: {time.perf_counter() - started:.0f}s")
        return results

    def _record(self, stage: Stage) -> None:
        if self.commands is not None:
            with self.commands.open("a") as fh:
                fh.write(f"# {stage.name}\n{stage.display}\n")

    @staticmethod
    def _deadline(timeout_s: float | None, started: float | None = None) -> float | None:
        if timeout_s is None:
            return None
        return (started if started is not None else time.perf_counter()) + timeout_s


def _log_note(stage: Stage) -> str:
    return f" (log: {stage.log})" if stage.log else ""


__all__ = ["Stage", "StageFailed", "StageResult", "StageRunner", "module_of", "shell_word"]
