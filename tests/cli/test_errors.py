"""Bad input to the Hydra commands ends in one line naming the culprit and exit status 2, with no
traceback unless HYDRA_FULL_ERROR=1 asks for one."""

from __future__ import annotations

import pytest

from tests.conftest import cli, run

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize(
    "command, args, message",
    [
        (
            "vla-train",
            ["data.sources=[{path: /nonexistent/demos.hdf5}]"],
            "vla-train: error: /nonexistent/demos.hdf5: no such file",
        ),
        ("vla-train", ["data.batch_size=eight"], "data.batch_size"),
        (
            "vla-eval",
            ["checkpoint=/nonexistent/best"],
            "vla-eval: error: checkpoint=/nonexistent/best: no such directory",
        ),
        ("vla-model", ["model=no_such_model"], "no_such_model"),
        ("vla-collect", ["episodes_per_task=many"], "episodes_per_task"),
    ],
    ids=["train-data", "train-type", "eval-checkpoint", "model-group", "collect-type"],
)
def test_bad_input_is_one_clear_line_and_status_2(tmp_path, command, args, message):
    res = run(
        [cli(command), *args, f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr, res.stderr
    assert "Traceback" not in res.stdout + res.stderr


def test_hydra_full_error_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    res = run(
        [cli("vla-eval"), "checkpoint=/nonexistent/best", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path
    )
    assert res.returncode != 0 and "Traceback" in res.stderr
