"""The stage runner with real subprocesses: output to the console or a log, side-by-side groups, dry
runs, and the failure and timeout paths (StageFailed naming the stage, its command and output)."""

from __future__ import annotations

import sys
import time

import pytest

from vla_lab.workflows.stages import Stage, StageFailed, StageRunner, shell_word

#: small programs a stage runs as ``python -m probe.<name>`` (from the test's working directory)
PROBES = {
    "echo": "import sys\nprint('echo:', *sys.argv[1:])\n",
    "fail": "import sys\nprint('first line')\nprint('the reason it failed', file=sys.stderr)\nsys.exit(3)\n",
    "short": "import sys\nprint('one task fell short')\nsys.exit(1)\n",
    "sleep": "import sys, time\nprint('started', flush=True)\ntime.sleep(float(sys.argv[1]))\nprint('woke')\n",
    "touch": "import pathlib, sys\npathlib.Path(sys.argv[1]).write_text('ran')\n",
}


@pytest.fixture
def probes(tmp_path, monkeypatch):
    (tmp_path / "probe").mkdir()
    for name, code in PROBES.items():
        (tmp_path / "probe" / f"{name}.py").write_text(code)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def echo_lines() -> tuple[list[str], StageRunner]:
    lines: list[str] = []
    return lines, StageRunner(echo=lines.append)


def test_a_vla_lab_command_runs_as_python_m_its_cli_module():
    stage = Stage("s", "collect", ("tasks=[reach_target,pick_block]", "data.sources=[{path: /a b}]"))
    assert stage.argv == [
        sys.executable,
        "-m",
        "vla_lab.cli.collect",
        "tasks=[reach_target,pick_block]",
        "data.sources=[{path: /a b}]",
    ]
    assert stage.display == "vla-collect 'tasks=[reach_target,pick_block]' 'data.sources=[{path: /a b}]'"


@pytest.mark.parametrize(
    ("arg", "word"),
    [
        ("seed=1", "seed=1"),
        ("a b", "'a b'"),
        ("p=[{path: '/x y'}]", "\"p=[{path: '/x y'}]\""),
        ("it's $x", "'it'\"'\"'s $x'"),
    ],
)
def test_shell_words_keep_one_argument_each(arg, word):
    import shlex

    assert shell_word(arg) == word and shlex.split(word) == [arg]


def test_output_goes_to_the_stage_log_after_its_command_line(probes):
    log = probes / "logs" / "echo.log"
    lines, runner = echo_lines()
    result = runner.run(Stage("say", "probe.echo", ("hello",), log=log))
    assert result.exit_code == 0 and result.seconds > 0
    assert log.read_text() == "$ python -m probe.echo hello\necho: hello\n"
    assert "\n=== say ===\n$ python -m probe.echo hello" in lines
    assert any(line.startswith("--- say: exit 0") and str(log) in line for line in lines)


def test_a_failing_stage_names_itself_its_command_and_the_end_of_its_log(probes):
    log = probes / "fail.log"
    with pytest.raises(StageFailed) as err:
        StageRunner(echo=lambda _: None).run(Stage("round 0 train", "probe.fail", ("x=1",), log=log))
    failed = err.value
    assert failed.exit_code == 3 and failed.stage.name == "round 0 train"
    text = str(failed)
    assert text.startswith(f"round 0 train failed (exit 3); log {log}")
    assert "$ python -m probe.fail x=1" in text and "the reason it failed" in text


def test_exit_codes_a_stage_counts_as_done_are_not_failures(probes):
    stage = Stage("collect", "probe.short", log=probes / "short.log", ok_exit_codes=(0, 1))
    assert StageRunner(echo=lambda _: None).run(stage).exit_code == 1
    with pytest.raises(StageFailed, match=r"exit 1"):
        StageRunner(echo=lambda _: None).run(Stage("collect", "probe.short", log=probes / "short.log"))


def test_a_stage_past_its_time_limit_is_stopped(probes):
    log = probes / "sleep.log"
    started = time.perf_counter()
    with pytest.raises(StageFailed) as err:
        StageRunner(echo=lambda _: None).run(Stage("slow", "probe.sleep", ("60",), log=log, timeout_s=3))
    assert time.perf_counter() - started < 30
    assert err.value.exit_code is None
    assert "slow failed (no result within 3s)" in str(err.value) and "started" in err.value.tail
    assert "woke" not in log.read_text()


def test_side_by_side_runs_at_once_and_prints_each_output_whole_in_order(probes):
    lines, runner = echo_lines()
    stages = [Stage(f"nap {i}", "probe.sleep", ("2",)) for i in range(2)]
    started = time.perf_counter()
    results = runner.run_side_by_side("naps", stages)
    assert time.perf_counter() - started < 3.9  # together, not one after the other
    assert [r.exit_code for r in results] == [0, 0]
    assert lines[0] == "\n=== naps ===" and lines[1] == "$ python -m probe.sleep 2 &"
    assert lines[3:5] == ["started\nwoke", "started\nwoke"]
    assert lines[-1].startswith("--- naps: ")


def test_side_by_side_fails_when_one_run_fails_after_all_ended(probes):
    lines, runner = echo_lines()
    stages = [Stage("bad", "probe.fail"), Stage("good", "probe.touch", (str(probes / "done"),))]
    with pytest.raises(StageFailed) as err:
        runner.run_side_by_side("group", stages)
    assert err.value.stage.name == "bad" and "the reason it failed" in err.value.tail
    assert (probes / "done").read_text() == "ran"
    assert not any(line.startswith("--- group") for line in lines)


def test_a_dry_run_prints_the_commands_and_runs_nothing(probes):
    lines: list[str] = []
    runner = StageRunner(dry_run=True, echo=lines.append)
    marker = probes / "ran"
    runner.run(Stage("one", "probe.touch", (str(marker),)))
    runner.run_side_by_side("group", [Stage("two", "probe.touch", (str(marker),))])
    assert lines == [f"[one] python -m probe.touch {marker}", f"[two] python -m probe.touch {marker} &"]
    assert not marker.exists()


def test_every_command_is_recorded_before_it_runs(probes):
    commands = probes / "commands.txt"
    runner = StageRunner(commands=commands, echo=lambda _: None)
    runner.run(Stage("round 0 collect", "probe.echo", ("a",)))
    with pytest.raises(StageFailed):
        runner.run(Stage("round 0 train", "probe.fail"))
    assert commands.read_text() == (
        "# round 0 collect\npython -m probe.echo a\n# round 0 train\npython -m probe.fail\n"
    )


def test_a_stage_streaming_to_the_console_fails_with_its_command(probes, capfd):
    with pytest.raises(StageFailed, match=r"loud failed \(exit 3\)\n\$ python -m probe.fail"):
        StageRunner().run(Stage("loud", "probe.fail"))
    assert "the reason it failed" in capfd.readouterr().err
