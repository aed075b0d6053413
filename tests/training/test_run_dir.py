"""Run-directory files survive a crash while they are rewritten."""

from __future__ import annotations

import os

import pytest

from vla_lab.training.run_dir import CsvLog


def test_truncating_a_log_on_resume_is_atomic(tmp_path, monkeypatch):
    log = CsvLog(tmp_path / "training_log.csv", ["step", "loss"])
    log.write({"step": s, "loss": 1.0 / (s + 1)} for s in range(10))
    before = log.path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        log.truncate_after(4)
    assert log.path.read_bytes() == before  # the old log, whole
    assert [p.name for p in tmp_path.iterdir()] == ["training_log.csv"]  # no temp file left
    monkeypatch.undo()
    log.truncate_after(4)
    assert [int(r["step"]) for r in log.read()] == [0, 1, 2, 3, 4]
