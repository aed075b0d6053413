"""`vla-sim info` prints the registry exported from the simulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vla_lab.sim import list_environments, list_tasks

VLA_SIM = str(Path(sys.executable).with_name("vla-sim"))


def test_info_lists_tasks_with_instructions_and_environments():
    res = subprocess.run([VLA_SIM, "info"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    for t in list_tasks():
        assert t["name"] in res.stdout
        for template in t["instruction_templates"]:
            assert template in res.stdout
    for e in list_environments():
        assert e["name"] in res.stdout
    assert "1 = open, 0 = closed" in res.stdout


def test_info_json_round_trips():
    res = subprocess.run([VLA_SIM, "info", "--json"], capture_output=True, text=True, timeout=60)
    data = json.loads(res.stdout)
    assert data["tasks"] == list_tasks() and data["environments"] == list_environments()


def test_view_rejects_unknown_task():
    res = subprocess.run([VLA_SIM, "view", "--task", "juggle"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "unknown task 'juggle'" in res.stderr and "pick_block" in res.stderr
