// The task registry: names, instruction templates, layouts, success predicates, distance-to-goal
// measures and scripted experts. Pure JavaScript (no Three.js, no Rapier) so that Node can load it to
// export the manifest that Python reads; the browser page uses the very same module.
//
// Frame: base frame = world frame, origin at the table centre on its surface, x away from the robot,
// y to the robot's left, z up. Units: metres, radians.

import { ROBOT } from "./robot.js";

export const BLOCK_COLORS = {
  red: 0xd62828, green: 0x2a9d3f, blue: 0x1f5fd1, yellow: 0xf2c81b, purple: 0x7b3fb5, orange: 0xf07c1a,
};
export const CONTAINER_COLORS = { white: 0xe6e6e6, black: 0x262626, brown: 0x7a4a26 };
export const ZONE_COLORS = { pink: 0xff6fb5, cyan: 0x26c6da, lime: 0xa6e22e };
export const TARGET_COLORS = { magenta: 0xe040fb, teal: 0x00a59b, gold: 0xffb300 };

// Objects are laid out on a grid of cells so that any layout is collision-free by construction and
// sampling needs no unbounded rejection loop.
export const CELL = 0.15;
export const CELL_CENTERS_X = [-0.15, 0.0, 0.15];
export const CELL_CENTERS_Y = [-0.225, -0.075, 0.075, 0.225];

export const CONTAINER = { inner_half: 0.062, wall_height: 0.04, wall_thickness: 0.008, floor: 0.006 };
export const ZONE_RADIUS = 0.05;
export const TARGET_RADIUS = 0.015;
export const LIFT_HEIGHT = 0.05;
const REST_SPEED = 0.05;
const HOVER_Z = 0.11;

// Defaults give the canonical (un-randomized but still seed-dependent layout) scenes.
export const RANDOMIZATION_DEFAULTS = {
  position_jitter: 1.0,
  shuffle_layout: true,
  yaw_range: 0.785,
  size_variation: 1.0,
  color_jitter: 0.0,
  num_distractors: 1,
  background_jitter: 0.0,
  table_color_jitter: 0.0,
  texture_shuffle: false,
  light_intensity_jitter: 0.0,
  light_direction_jitter: 0.0,
  camera_position_jitter: 0.0,
  camera_rotation_jitter: 0.0,
  paraphrase: true,
  start_jitter: 0.0,
  grid_targets: false,
  object_scale: 1.0,
};

// [kind, min, max] for validation of the knobs; documented in the manifest.
export const RANDOMIZATION_SPEC = {
  position_jitter: ["number", 0, 1, "fraction of each grid cell's free margin used to jitter object positions"],
  shuffle_layout: ["boolean", null, null, "objects take random grid cells (false: fixed cell order)"],
  yaw_range: ["number", 0, Math.PI, "object yaw drawn uniformly in [-yaw_range, yaw_range] rad"],
  size_variation: ["number", 0, 1, "fraction of the block size range used (0: every block 4 cm)"],
  color_jitter: ["number", 0, 0.3, "perturbation of object colours (hue/lightness), names stay valid"],
  num_distractors: ["integer", 0, 4, "extra blocks in colours not named by the instruction"],
  background_jitter: ["number", 0, 1, "perturbation of the background colour"],
  table_color_jitter: ["number", 0, 1, "perturbation of the table colour"],
  texture_shuffle: ["boolean", null, null, "the table gets a random surface pattern (wood, tiles, speckle) instead of its theme's"],
  light_intensity_jitter: ["number", 0, 1, "relative perturbation of the light intensities"],
  light_direction_jitter: ["number", 0, 1, "perturbation of the key light direction (rad)"],
  camera_position_jitter: ["number", 0, 0.1, "agentview camera position jitter (m)"],
  camera_rotation_jitter: ["number", 0, 0.2, "agentview look-at jitter (rad)"],
  paraphrase: ["boolean", null, null, "draw one of several instruction templates (false: the first)"],
  start_jitter: ["number", 0, 1, "the gripper starts up to this fraction of (15, 20, 6) cm from home in x, y, z (0: always at home)"],
  grid_targets: ["boolean", null, null, "the reach sphere floats 14 cm above a grid cell like the blocks' (jittered by position_jitter) instead of anywhere in the workspace"],
  object_scale: ["number", 0.5, 1.5, "blocks and the reach sphere are this many times their usual size (success criteria unchanged)"],
};

// Start pose of the gripper. From a fixed home, where the gripper is after a few steps tells which way
// the expert went, and a policy can copy that from its proprio instead of looking at the scene;
// varied starts take that shortcut away.
export const START_JITTER_SCALE = [0.15, 0.2, 0.06];
export function startPosition(rng, knobs) {
  return ROBOT.home.pos.map((v, i) => v + rng.uniform(-1, 1) * knobs.start_jitter * START_JITTER_SCALE[i]);
}

export function validateRandomization(r) {
  const out = { ...RANDOMIZATION_DEFAULTS };
  if (r === undefined || r === null) return out;
  if (typeof r !== "object" || Array.isArray(r)) throw new Error("options.randomization must be an object");
  for (const [k, v] of Object.entries(r)) {
    const spec = RANDOMIZATION_SPEC[k];
    if (!spec) {
      throw new Error(`unknown randomization knob '${k}'; valid: ${Object.keys(RANDOMIZATION_SPEC).join(", ")}`);
    }
    const [kind, lo, hi] = spec;
    if (kind === "boolean") {
      if (typeof v !== "boolean") throw new Error(`randomization.${k} must be a boolean, got ${JSON.stringify(v)}`);
    } else {
      if (typeof v !== "number" || !Number.isFinite(v)) throw new Error(`randomization.${k} must be a finite number, got ${JSON.stringify(v)}`);
      if (kind === "integer" && !Number.isInteger(v)) throw new Error(`randomization.${k} must be an integer, got ${v}`);
      if (v < lo || v > hi) throw new Error(`randomization.${k}=${v} is outside [${lo}, ${hi}]`);
    }
    out[k] = v;
  }
  return out;
}

// ---------------------------------------------------------------- small vector helpers
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const sub = (a, b) => a.map((v, i) => v - b[i]);
const norm = (a) => Math.hypot(...a);
const dist2d = (a, b) => Math.hypot(a[0] - b[0], a[1] - b[1]);
export const wrapAngle = (a) => Math.atan2(Math.sin(a), Math.cos(a));

// ---------------------------------------------------------------- layout
function sampleBlock(rng, knobs, color, name) {
  const v = knobs.size_variation, k = knobs.object_scale;
  const h = k * (0.02 + v * rng.uniform(-0.004, 0.002));
  const hz = k * (0.02 + v * rng.uniform(-0.004, 0.004));
  return { name, kind: "block", color, half: [h, h, hz], yaw: rng.uniform(-knobs.yaw_range, knobs.yaw_range) };
}

function cellList() {
  const cells = [];
  for (const x of CELL_CENTERS_X) for (const y of CELL_CENTERS_Y) cells.push([x, y]);
  return cells;
}

function jitterIn(rng, knobs, cell, radius) {
  const m = Math.max(0, CELL / 2 - radius - 0.008) * knobs.position_jitter;
  return [cell[0] + rng.uniform(-m, m), cell[1] + rng.uniform(-m, m)];
}

const itemRadius = (it) => (it.half ? Math.hypot(it.half[0], it.half[1]) : it.radius);

// items: [{...item, radius?}] in priority order; `constraint(pos, placed)` may veto a cell for
// distractors (push paths). Returns items with pos [x, y].
function placeItems(rng, knobs, items, distractors, constraint) {
  const cells = knobs.shuffle_layout ? rng.shuffle(cellList()) : cellList();
  const placed = [];
  let c = 0;
  for (const it of items) {
    placed.push({ ...it, pos: jitterIn(rng, knobs, cells[c++], itemRadius(it)) });
  }
  for (const d of distractors) {
    while (c < cells.length) {
      const pos = jitterIn(rng, knobs, cells[c++], itemRadius(d));
      if (!constraint || constraint(pos, placed)) {
        placed.push({ ...d, pos });
        break;
      }
    }
  }
  return placed;
}

// LIBERO-style initial-state regions for the reach sphere: it takes a grid cell as a block would (so
// no distractor sits under it) and floats at GRID_TARGET_Z; position_jitter sizes the region around
// the cell centre in x, y and height alike.
const GRID_TARGET_Z = 0.14;
const GRID_TARGET_Z_RANGE = 0.06;
function sampleGridTarget(rng, knobs, color) {
  const radius = TARGET_RADIUS * knobs.object_scale;
  const sphere = { kind: "target", radius };
  const [t, ...rest] = placeItems(rng, knobs, [sphere], distractorBlocks(rng, knobs, []));
  const z = GRID_TARGET_Z + rng.uniform(-1, 1) * GRID_TARGET_Z_RANGE * knobs.position_jitter;
  const target = { pos: [t.pos[0], t.pos[1], z], color, radius };
  return finish(rest, { target }, { vars: { target: color } });
}

function pickColors(rng, palette, n) {
  return rng.shuffle(Object.keys(palette)).slice(0, n);
}

function distractorBlocks(rng, knobs, used) {
  const free = rng.shuffle(Object.keys(BLOCK_COLORS).filter((c) => !used.includes(c)));
  const out = [];
  for (let i = 0; i < Math.min(knobs.num_distractors, free.length); i++) {
    out.push({ ...sampleBlock(rng, knobs, free[i], `block_${free[i]}`), role: "distractor" });
  }
  return out;
}

// Splits a layout into the scene description consumed by the world builder.
function finish(placed, fixtures, extra) {
  const objects = [];
  for (const p of placed) {
    if (p.kind === "block") objects.push({ name: p.name, kind: "block", color: p.color, half: p.half, yaw: p.yaw, pos: [p.pos[0], p.pos[1], p.half[2]], role: p.role });
    else if (p.kind === "container") fixtures.container = { pos: [p.pos[0], p.pos[1], 0], color: p.color, ...CONTAINER };
    else if (p.kind === "zone") fixtures.zone = { pos: [p.pos[0], p.pos[1], 0], color: p.color, radius: ZONE_RADIUS };
  }
  return { objects, fixtures, ...extra };
}

// ---------------------------------------------------------------- predicates
const isResting = (o) => o.speed < REST_SPEED;

export function inContainer(o, c, grasped) {
  if (!c || grasped) return false;
  const lim = c.inner_half - 0.004;
  return Math.abs(o.pos[0] - c.pos[0]) <= lim && Math.abs(o.pos[1] - c.pos[1]) <= lim && o.pos[2] - o.half[2] < c.floor + 0.02;
}

function inZone(o, z, grasped) {
  return !grasped && dist2d(o.pos, z.pos) <= z.radius && o.pos[2] < o.half[2] + 0.01;
}

function onTopOf(a, b, grasped) {
  if (grasped) return false;
  const dz = a.pos[2] - b.pos[2] - (a.half[2] + b.half[2]);
  return dist2d(a.pos, b.pos) <= 0.6 * Math.min(b.half[0], b.half[1]) + 0.004 && Math.abs(dz) < 0.012;
}

// ---------------------------------------------------------------- expert building blocks
const T = ROBOT.max_translation_per_step;
const R = ROBOT.max_rotation_per_step;

// Every expert acts through this: the delta command towards a goal pose. The pose itself rides along
// as `a.target` ([x, y, z, roll, pitch, yaw, gripper]), published as `expert_target`: the label of
// datasets recorded in target-pose actions (the step towards it is this very delta).
function moveAction(state, goal, yaw, grip) {
  const a = [0, 0, 0, 0, 0, 0, grip];
  for (let i = 0; i < 3; i++) a[i] = clamp((goal[i] - state.ee.pos[i]) / T, -1, 1);
  a[3] = clamp(-state.ee.ori[0] / R, -1, 1);
  a[4] = clamp(-state.ee.ori[1] / R, -1, 1);
  a[5] = clamp(wrapAngle(yaw - state.ee.ori[2]) / R, -1, 1);
  a.target = [goal[0], goal[1], goal[2], 0, 0, wrapAngle(yaw), grip];
  return a;
}

const holdAction = (state, grip) => moveAction(state, state.ee.pos, state.ee.ori[2], grip);

// The block's faces repeat every 90 degrees; pick the jaw yaw closest to the current one.
function graspYaw(state, o) {
  const cur = state.ee.ori[2];
  const k = Math.round(wrapAngle(cur - o.yaw) / (Math.PI / 2));
  return wrapAngle(o.yaw + (k * Math.PI) / 2);
}

const graspZ = (o) => Math.max(ROBOT.workspace.z[0], o.pos[2]);
const near = (a, b, tol) => norm(sub(a, b)) <= tol;

function setPhase(mem, phase) {
  mem.phase = phase;
  mem.timer = 0;
}

// A pick (and optionally place) skill as a small state machine. `place(state)` returns the release
// point for the tool centre point, or null to only lift. Each branch re-reads the privileged state, so
// the expert recovers from perturbations (noise injection) and from dropped objects.
function pickPlaceSkill(state, mem, objName, place) {
  if (!mem.phase) setPhase(mem, "approach");
  mem.timer += 1;
  const o = state.objects[objName];
  const held = state.grasped === objName;
  const openW = Math.min(ROBOT.max_width, 2 * Math.max(o.half[0], o.half[1]) * 1.42 + 0.02);
  const gOpen = openW / ROBOT.max_width;
  // The descent starts once the gripper is within half the block's half-size of the hover point and
  // keeps centring on the way down; the jaws still grasp at 0.8 half-sizes off. A start within 6 mm
  // taught imitating policies, whose estimate of the block is rarely better than a centimetre, to
  // hover above it for good.
  const alignTol = Math.max(0.006, Math.min(o.half[0], o.half[1]) / 2);
  switch (mem.phase) {
    case "approach": {
      const yaw = graspYaw(state, o);
      const goal = [o.pos[0], o.pos[1], HOVER_Z];
      if (held) { setPhase(mem, "lift"); return holdAction(state, 0); }
      if (dist2d(state.ee.pos, goal) < alignTol && Math.abs(state.ee.pos[2] - HOVER_Z) < 0.03 &&
          Math.abs(wrapAngle(yaw - state.ee.ori[2])) < 0.04 && state.ee.width > openW - 0.01) {
        setPhase(mem, "descend");
      }
      return moveAction(state, goal, yaw, gOpen);
    }
    case "descend": {
      const goal = [o.pos[0], o.pos[1], graspZ(o)];
      if (dist2d(state.ee.pos, goal) > alignTol + 0.009 || mem.timer > 30) { setPhase(mem, "approach"); return holdAction(state, gOpen); }
      if (Math.abs(state.ee.pos[2] - goal[2]) < 0.003) setPhase(mem, "close");
      return moveAction(state, goal, graspYaw(state, o), gOpen);
    }
    case "close": {
      if (held) { setPhase(mem, "lift"); return holdAction(state, 0); }
      if (state.ee.width < 0.004 || mem.timer > 15) setPhase(mem, "reopen");
      return holdAction(state, 0);
    }
    case "reopen": {
      if (state.ee.width > openW - 0.005) setPhase(mem, "approach");
      return moveAction(state, [state.ee.pos[0], state.ee.pos[1], HOVER_Z], state.ee.ori[2], gOpen);
    }
    case "lift": {
      if (!held) { setPhase(mem, "reopen"); return holdAction(state, gOpen); }
      const goal = [state.ee.pos[0], state.ee.pos[1], HOVER_Z + 0.02];
      if (state.ee.pos[2] > HOVER_Z + 0.01 && place) setPhase(mem, "carry");
      return moveAction(state, goal, state.ee.ori[2], 0);
    }
    case "carry": {
      if (!held) { setPhase(mem, "reopen"); return holdAction(state, gOpen); }
      const p = place(state);
      const goal = [p[0], p[1], HOVER_Z + 0.02];
      if (dist2d(state.ee.pos, goal) < 0.006) setPhase(mem, "lower");
      return moveAction(state, goal, state.ee.ori[2], 0);
    }
    case "lower": {
      if (!held) { setPhase(mem, "reopen"); return holdAction(state, gOpen); }
      const p = place(state);
      // Hysteresis against noisy actions: re-centre from above only when clearly off.
      if (dist2d(state.ee.pos, p) > 0.02) { setPhase(mem, "carry"); return holdAction(state, 0); }
      if (Math.abs(state.ee.pos[2] - p[2]) < 0.003 || mem.timer > 25) setPhase(mem, "release");
      return moveAction(state, p, state.ee.ori[2], 0);
    }
    case "release": {
      if (!held && state.ee.width > openW - 0.01) setPhase(mem, "retreat");
      return holdAction(state, gOpen);
    }
    case "retreat": {
      const goal = [state.ee.pos[0], state.ee.pos[1], HOVER_Z];
      if (state.ee.pos[2] > HOVER_Z - 0.005) setPhase(mem, "done");
      return moveAction(state, goal, state.ee.ori[2], gOpen);
    }
    default:
      return holdAction(state, gOpen);
  }
}

function releaseHeightAbove(state, objName, floorZ) {
  const o = state.objects[objName];
  // The tool centre point sits at the grasped block's centre, so release with its bottom ~8 mm above.
  return floorZ + o.half[2] + 0.008;
}

// ---------------------------------------------------------------- the tasks
export const TASKS = {
  reach_target: {
    description: "Move the gripper's tool centre point to a coloured sphere floating above the table.",
    max_steps: 60,
    templates: ["reach the {target} sphere", "move the gripper to the {target} sphere", "touch the {target} ball with the gripper"],
    success_criterion: "tool centre point within 2 cm of the sphere centre",
    distance: "distance (m) between the tool centre point and the sphere centre",
    variations: ["sphere colour and position", "distractor blocks"],
    sample(rng, knobs) {
      const [tc] = pickColors(rng, TARGET_COLORS, 1);
      if (knobs.grid_targets) return sampleGridTarget(rng, knobs, tc);
      const placed = placeItems(rng, knobs, [], distractorBlocks(rng, knobs, []));
      const tp = [rng.uniform(-0.2, 0.2), rng.uniform(-0.26, 0.26), rng.uniform(0.06, 0.22)];
      return finish(placed, { target: { pos: tp, color: tc, radius: TARGET_RADIUS * knobs.object_scale } }, { vars: { target: tc } });
    },
    success: (s) => norm(sub(s.ee.pos, s.fixtures.target.pos)) < 0.02,
    distanceToGoal: (s) => norm(sub(s.ee.pos, s.fixtures.target.pos)),
    expert: (s) => moveAction(s, s.fixtures.target.pos, 0, 1),
  },

  pick_block: {
    description: "Grasp the named block and lift it at least 5 cm off the table.",
    max_steps: 100,
    templates: ["pick up the {A} block", "lift the {A} block", "grab the {A} block and lift it"],
    success_criterion: "the block is held by the gripper with its bottom at least 5 cm above the table",
    distance: "distance (m) between the block centre and the point 5 cm above its start position",
    variations: ["block colour, size, position and yaw", "distractor blocks"],
    sample(rng, knobs) {
      const [a] = pickColors(rng, BLOCK_COLORS, 1);
      const items = [{ ...sampleBlock(rng, knobs, a, "object"), role: "object" }];
      const placed = placeItems(rng, knobs, items, distractorBlocks(rng, knobs, [a]));
      return finish(placed, {}, { vars: { A: a } });
    },
    success: (s) => s.grasped === "object" && s.objects.object.pos[2] - s.objects.object.half[2] >= LIFT_HEIGHT,
    distanceToGoal: (s) => {
      const o = s.objects.object, st = s.initial.object;
      return norm(sub(o.pos, [st[0], st[1], st[2] + LIFT_HEIGHT]));
    },
    expert: (s, mem) => pickPlaceSkill(s, mem, "object", null),
  },

  place_in_container: {
    description: "Put the named block into the tray.",
    max_steps: 160,
    templates: ["put the {A} block in the {C} tray", "place the {A} block into the {C} tray", "move the {A} block into the {C} tray"],
    success_criterion: "the block rests inside the tray's inner area and is not held",
    distance: "distance (m) between the block centre and its resting point at the tray centre",
    variations: ["block colour/size/position/yaw", "tray colour and position", "distractor blocks"],
    sample(rng, knobs) {
      const [a] = pickColors(rng, BLOCK_COLORS, 1);
      const [c] = pickColors(rng, CONTAINER_COLORS, 1);
      const items = [
        { kind: "container", color: c, radius: CONTAINER.inner_half + CONTAINER.wall_thickness },
        { ...sampleBlock(rng, knobs, a, "object"), role: "object" },
      ];
      const placed = placeItems(rng, knobs, items, distractorBlocks(rng, knobs, [a]));
      return finish(placed, {}, { vars: { A: a, C: c } });
    },
    success: (s) => inContainer(s.objects.object, s.fixtures.container, s.grasped === "object") && isResting(s.objects.object),
    distanceToGoal: (s) => {
      const o = s.objects.object, c = s.fixtures.container;
      return norm(sub(o.pos, [c.pos[0], c.pos[1], c.floor + o.half[2]]));
    },
    expert: (s, mem) => pickPlaceSkill(s, mem, "object", (st) => {
      const c = st.fixtures.container;
      return [c.pos[0], c.pos[1], releaseHeightAbove(st, "object", c.floor)];
    }),
  },

  push_to_zone: {
    description: "Push the named block across the table into a coloured circle.",
    max_steps: 200,
    templates: ["push the {A} block into the {Z} circle", "slide the {A} block onto the {Z} circle", "push the {A} block to the {Z} circle"],
    success_criterion: "the block's centre lies inside the circle, on the table, not held",
    distance: "horizontal distance (m) between the block centre and the circle centre",
    variations: ["block colour/size/position/yaw", "circle colour and position (a neighbouring cell)", "distractor blocks off the push path"],
    sample(rng, knobs) {
      const [a] = pickColors(rng, BLOCK_COLORS, 1);
      const [z] = pickColors(rng, ZONE_COLORS, 1);
      const block = { ...sampleBlock(rng, knobs, a, "object"), role: "object" };
      // The circle goes to a cell next to the block's, with the pre-push point inside the workspace.
      const cells = knobs.shuffle_layout ? rng.shuffle(cellList()) : cellList();
      const bc = cells[0];
      const neighbours = cells.filter((cc) => {
        const dx = Math.abs(cc[0] - bc[0]), dy = Math.abs(cc[1] - bc[1]);
        return dx + dy > 1e-6 && dx < CELL + 1e-6 && dy < CELL + 1e-6;
      });
      const zc = neighbours[0];
      const bpos = jitterIn(rng, knobs, bc, itemRadius(block));
      const zpos = jitterIn(rng, knobs, zc, ZONE_RADIUS);
      const placed = [{ ...block, pos: bpos }, { kind: "zone", color: z, pos: zpos }];
      const d = [zpos[0] - bpos[0], zpos[1] - bpos[1]];
      const L = Math.hypot(d[0], d[1]);
      const u = [d[0] / L, d[1] / L];
      const start = [bpos[0] - u[0] * 0.08, bpos[1] - u[1] * 0.08];
      const segDist = (p) => {
        const t = clamp(((p[0] - start[0]) * u[0] + (p[1] - start[1]) * u[1]) / (L + 0.08), 0, 1);
        return Math.hypot(p[0] - start[0] - t * (L + 0.08) * u[0], p[1] - start[1] - t * (L + 0.08) * u[1]);
      };
      const rest = cells.filter((cc) => cc !== bc && cc !== zc);
      for (const dd of distractorBlocks(rng, knobs, [a])) {
        while (rest.length) {
          const pos = jitterIn(rng, knobs, rest.shift(), itemRadius(dd));
          if (segDist(pos) > 0.09) { placed.push({ ...dd, pos }); break; }
        }
      }
      return finish(placed, {}, { vars: { A: a, Z: z } });
    },
    success: (s) => inZone(s.objects.object, s.fixtures.zone, s.grasped === "object"),
    distanceToGoal: (s) => dist2d(s.objects.object.pos, s.fixtures.zone.pos),
    expert(s, mem) {
      if (!mem.phase) setPhase(mem, "pre");
      mem.timer += 1;
      const o = s.objects.object, zc = s.fixtures.zone.pos;
      const d = [zc[0] - o.pos[0], zc[1] - o.pos[1]];
      const L = Math.hypot(d[0], d[1]);
      if (L < 0.02 || mem.phase === "done") {
        setPhase(mem, "done");
        if (mem.phase === "done" && s.ee.pos[2] < HOVER_Z - 0.005) return moveAction(s, [s.ee.pos[0], s.ee.pos[1], HOVER_Z], s.ee.ori[2], 0);
        return holdAction(s, 0);
      }
      const u = [d[0] / L, d[1] / L];
      // The closed jaws form a paddle that is symmetric under a half turn: use the nearer heading.
      const heading = Math.atan2(u[1], u[0]);
      const yaw = wrapAngle(heading + Math.PI * Math.round(wrapAngle(s.ee.ori[2] - heading) / Math.PI));
      const back = Math.hypot(o.half[0], o.half[1]) + ROBOT.finger.half_x + 0.012;
      const pre = [o.pos[0] - u[0] * back, o.pos[1] - u[1] * back];
      const pushZ = Math.max(ROBOT.workspace.z[0], 0.022);
      // Lateral offset of the tool centre point from the block-to-circle line, and how far behind the
      // block it is along that line.
      const rel = [s.ee.pos[0] - o.pos[0], s.ee.pos[1] - o.pos[1]];
      const along = rel[0] * u[0] + rel[1] * u[1];
      const lateral = -rel[0] * u[1] + rel[1] * u[0];
      switch (mem.phase) {
        case "pre": {
          const goal = [pre[0], pre[1], HOVER_Z];
          if (dist2d(s.ee.pos, goal) < 0.005 && Math.abs(wrapAngle(yaw - s.ee.ori[2])) < 0.05) setPhase(mem, "down");
          return moveAction(s, goal, yaw, 0);
        }
        case "down": {
          const goal = [pre[0], pre[1], pushZ];
          if (dist2d(s.ee.pos, goal) > 0.012) { setPhase(mem, "up"); return holdAction(s, 0); }
          if (Math.abs(s.ee.pos[2] - pushZ) < 0.003) setPhase(mem, "push");
          return moveAction(s, goal, yaw, 0);
        }
        case "push": {
          if (Math.abs(lateral) > 0.012 || along > -back + 0.01 + 0.03 || mem.timer > 120) { setPhase(mem, "up"); return holdAction(s, 0); }
          // Advance along the line at reduced speed and steer back onto it.
          const step = Math.min(0.012, L);
          const goal = [s.ee.pos[0] + u[0] * step - (-u[1]) * lateral * 0.5, s.ee.pos[1] + u[1] * step - u[0] * lateral * 0.5, pushZ];
          return moveAction(s, goal, yaw, 0);
        }
        case "up": {
          if (s.ee.pos[2] > HOVER_Z - 0.01) setPhase(mem, "pre");
          return moveAction(s, [s.ee.pos[0], s.ee.pos[1], HOVER_Z], s.ee.ori[2], 0);
        }
        default:
          return holdAction(s, 0);
      }
    },
  },

  stack_blocks: {
    description: "Stack one named block on top of another.",
    max_steps: 180,
    templates: ["stack the {A} block on the {B} block", "put the {A} block on top of the {B} block", "place the {A} block onto the {B} block"],
    success_criterion: "the top block rests centred (within 60% of the lower block's half-width) on the lower block, not held",
    distance: "distance (m) between the top block centre and its stacked resting point",
    variations: ["both blocks' colours/sizes/positions/yaws", "distractor blocks"],
    sample(rng, knobs) {
      const [a, b] = pickColors(rng, BLOCK_COLORS, 2);
      const items = [
        { ...sampleBlock(rng, knobs, a, "object"), role: "object" },
        { ...sampleBlock(rng, knobs, b, "base"), role: "base" },
      ];
      const placed = placeItems(rng, knobs, items, distractorBlocks(rng, knobs, [a, b]));
      return finish(placed, {}, { vars: { A: a, B: b } });
    },
    success: (s) => onTopOf(s.objects.object, s.objects.base, s.grasped === "object") && isResting(s.objects.object),
    distanceToGoal: (s) => {
      const a = s.objects.object, b = s.objects.base;
      return norm(sub(a.pos, [b.pos[0], b.pos[1], b.pos[2] + b.half[2] + a.half[2]]));
    },
    expert: (s, mem) => pickPlaceSkill(s, mem, "object", (st) => {
      const b = st.objects.base;
      return [b.pos[0], b.pos[1], releaseHeightAbove(st, "object", b.pos[2] + b.half[2])];
    }),
  },

  put_in_order: {
    description: "Put two named blocks into the tray, in the stated order.",
    max_steps: 300,
    templates: ["put the {A} block in the {C} tray, then the {B} block", "first place the {A} block in the {C} tray, then the {B} block", "put the {A} block and after it the {B} block into the {C} tray"],
    success_criterion: "both blocks rest inside the tray, not held, and the first-named block entered the tray first (and stayed)",
    distance: "mean distance (m) of the two blocks from their resting points at the tray centre",
    variations: ["block colours/sizes/positions/yaws", "tray colour and position", "distractor blocks"],
    sample(rng, knobs) {
      const [a, b] = pickColors(rng, BLOCK_COLORS, 2);
      const [c] = pickColors(rng, CONTAINER_COLORS, 1);
      const items = [
        { kind: "container", color: c, radius: CONTAINER.inner_half + CONTAINER.wall_thickness },
        { ...sampleBlock(rng, knobs, a, "object"), role: "object" },
        { ...sampleBlock(rng, knobs, b, "second"), role: "second" },
      ];
      const placed = placeItems(rng, knobs, items, distractorBlocks(rng, knobs, [a, b]));
      return finish(placed, {}, { vars: { A: a, B: b, C: c } });
    },
    // Tracks the order in which the blocks enter the tray; a block picked up again is dropped from the
    // order, so a wrong order can be repaired.
    update(s, mem) {
      mem.order = mem.order || [];
      for (const n of ["object", "second"]) {
        const inside = inContainer(s.objects[n], s.fixtures.container, s.grasped === n);
        const idx = mem.order.indexOf(n);
        if (inside && idx < 0) mem.order.push(n);
        // Only picking a block up takes it out of the order: a nudge from the other block while
        // it is placed must not reorder the two.
        if (!inside && idx >= 0 && s.grasped === n) mem.order.splice(idx, 1);
      }
    },
    success: (s, mem) => {
      const c = s.fixtures.container;
      return (mem.order || []).join(",") === "object,second" &&
        inContainer(s.objects.object, c, s.grasped === "object") && inContainer(s.objects.second, c, s.grasped === "second") &&
        isResting(s.objects.object) && isResting(s.objects.second);
    },
    distanceToGoal: (s) => {
      const c = s.fixtures.container;
      const d = (o) => norm(sub(o.pos, [c.pos[0], c.pos[1], c.floor + o.half[2]]));
      return 0.5 * (d(s.objects.object) + d(s.objects.second));
    },
    expert(s, mem) {
      mem.first = mem.first || {};
      mem.second = mem.second || {};
      const c = s.fixtures.container;
      // The two blocks go to opposite halves of the tray, along its longer free direction (y).
      const slot = (sign, name) => (st) => [c.pos[0], c.pos[1] + sign * 0.03, releaseHeightAbove(st, name, c.floor)];
      if (mem.first.phase !== "done") return pickPlaceSkill(s, mem.first, "object", slot(-1, "object"));
      return pickPlaceSkill(s, mem.second, "second", slot(1, "second"));
    },
  },
};

export function taskManifest() {
  return Object.entries(TASKS).map(([name, t]) => ({
    name,
    description: t.description,
    max_steps: t.max_steps,
    instruction_templates: t.templates,
    success_criterion: t.success_criterion,
    distance_to_goal: t.distance,
    variations: t.variations,
  }));
}
