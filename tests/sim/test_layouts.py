"""Layout sampling of every task (the JS registry, run in Node): collision-free, inside the workspace,
distractors never share the instruction's colours, seeds reproduce."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.sim.conftest import HAVE_NODE
from vla_lab.sim.manifest import WEB_ROOT

pytestmark = pytest.mark.skipif(not HAVE_NODE, reason="node is not installed")

SCRIPT = """
import { TASKS, validateRandomization } from "./src/tasks.js";
import { Rng } from "./src/rng.js";
import { ROBOT } from "./src/robot.js";
const problems = [];
let layouts = 0;
for (const [name, task] of Object.entries(TASKS)) {
  for (const knobs of [
    validateRandomization({ num_distractors: 4, yaw_range: Math.PI }),
    validateRandomization({ position_jitter: 0, shuffle_layout: false, num_distractors: 0 }),
    validateRandomization({ num_distractors: 4, yaw_range: Math.PI, object_scale: 1.5 }),
  ]) {
    for (let seed = 0; seed < 300; seed++) {
      const a = task.sample(new Rng(seed), knobs), b = task.sample(new Rng(seed), knobs);
      if (JSON.stringify(a) !== JSON.stringify(b)) problems.push(`${name}/${seed}: not reproducible`);
      layouts++;
      const items = a.objects.map((o) => ({ n: o.name, p: o.pos, r: Math.hypot(o.half[0], o.half[1]) }));
      const f = a.fixtures;
      if (f.container) items.push({ n: "container", p: f.container.pos, r: Math.SQRT2 * (f.container.inner_half + f.container.wall_thickness) });
      if (f.zone) items.push({ n: "zone", p: f.zone.pos, r: f.zone.radius });
      for (let i = 0; i < items.length; i++) {
        const it = items[i];
        if (Math.abs(it.p[0]) > ROBOT.workspace.x[1] || Math.abs(it.p[1]) > ROBOT.workspace.y[1]) problems.push(`${name}/${seed}: ${it.n} outside the workspace`);
        for (let j = i + 1; j < items.length; j++) {
          const o = items[j];
          // Containers are squares: compare along the axes, not by their circumscribed circle.
          const sq = (x) => x.n === "container" ? x.r / Math.SQRT2 : x.r;
          const dx = Math.abs(it.p[0] - o.p[0]), dy = Math.abs(it.p[1] - o.p[1]);
          const gap = Math.max(dx - sq(it) - sq(o), dy - sq(it) - sq(o), Math.hypot(dx, dy) - it.r - o.r);
          if (gap < 0.005) problems.push(`${name}/${seed}: ${it.n} and ${o.n} overlap (gap ${gap.toFixed(4)})`);
        }
      }
      const named = Object.values(a.vars);
      for (const o of a.objects) if (o.role === "distractor" && named.includes(o.color)) problems.push(`${name}/${seed}: distractor shares colour ${o.color}`);
    }
  }
}
let bad = null;
try { validateRandomization({ num_distractors: 2.5 }); } catch (e) { bad = e.message; }
console.log(JSON.stringify({ layouts, problems: problems.slice(0, 20), count: problems.length, bad }));
"""


def run_node(script: str) -> dict:
    """Runs a module script in the simulator's web root; returns the JSON it prints."""
    res = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        cwd=WEB_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_layouts_are_collision_free_reproducible_and_unambiguous():
    out = run_node(SCRIPT)
    assert out["layouts"] == 6 * 3 * 300
    assert out["count"] == 0, out["problems"]
    assert "must be an integer" in out["bad"]


GRID_TARGET_SCRIPT = """
import { TASKS, validateRandomization, CELL_CENTERS_X, CELL_CENTERS_Y } from "./src/tasks.js";
import { Rng } from "./src/rng.js";
const rows = [];
for (const jitter of [0, 0.25, 1]) {
  const knobs = validateRandomization({ grid_targets: true, position_jitter: jitter, num_distractors: 4 });
  for (let seed = 0; seed < 200; seed++) {
    const scene = TASKS.reach_target.sample(new Rng(seed), knobs);
    const t = scene.fixtures.target.pos;
    let best = Infinity;
    for (const x of CELL_CENTERS_X) for (const y of CELL_CENTERS_Y) best = Math.min(best, Math.max(Math.abs(t[0] - x), Math.abs(t[1] - y)));
    const gap = Math.min(...scene.objects.map((o) => Math.hypot(o.pos[0] - t[0], o.pos[1] - t[1])));
    rows.push({ jitter, off_cell: best, z: t[2], block_gap: gap, n: scene.objects.length });
  }
}
const free = TASKS.reach_target.sample(new Rng(3), validateRandomization({}));
console.log(JSON.stringify({ rows, free: free.fixtures.target.pos }));
"""


def test_grid_targets_put_the_reach_sphere_over_a_free_cell_sized_by_position_jitter():
    out = run_node(GRID_TARGET_SCRIPT)
    by_jitter = {j: [r for r in out["rows"] if r["jitter"] == j] for j in (0, 0.25, 1)}
    for jitter, rows in by_jitter.items():
        assert max(r["off_cell"] for r in rows) <= 0.075 * jitter + 1e-9
        assert all(abs(r["z"] - 0.14) <= 0.06 * jitter + 1e-9 for r in rows)
        # the sphere takes its cell: the four distractors stand in other cells, a cell apart or more
        assert all(r["n"] == 4 and r["block_gap"] >= 0.15 - 2 * 0.075 * jitter - 1e-9 for r in rows)
    assert {r["z"] for r in by_jitter[0]} == {0.14}
    assert len({round(r["off_cell"], 6) for r in by_jitter[1]}) > 100  # jittered, not snapped
    # the default keeps the free-floating sphere: any height in [6, 22] cm, not on the grid's plane
    assert 0.06 <= out["free"][2] <= 0.22 and out["free"][2] != 0.14


SCALE_SCRIPT = """
import { TASKS, validateRandomization } from "./src/tasks.js";
import { Rng } from "./src/rng.js";
const sizes = {};
for (const scale of [1, 1.5]) {
  const knobs = validateRandomization({ object_scale: scale, grid_targets: true, size_variation: 0 });
  sizes[scale] = {
    block: TASKS.pick_block.sample(new Rng(4), knobs).objects.map((o) => o.half),
    sphere: TASKS.reach_target.sample(new Rng(4), knobs).fixtures.target.radius,
  };
}
let bad = null;
try { validateRandomization({ object_scale: 3 }); } catch (e) { bad = e.message; }
console.log(JSON.stringify({ sizes, bad }));
"""


def test_object_scale_enlarges_blocks_and_the_sphere():
    out = run_node(SCALE_SCRIPT)
    small, big = out["sizes"]["1"], out["sizes"]["1.5"]
    assert small["sphere"] == pytest.approx(0.015) and big["sphere"] == pytest.approx(0.0225)
    for a, b in zip(small["block"], big["block"], strict=True):
        assert a == pytest.approx([0.02, 0.02, 0.02]) and b == pytest.approx([0.03, 0.03, 0.03])
    assert "outside [0.5, 1.5]" in out["bad"]
