// One tabletop simulator instance: Rapier physics + a Three.js scene, driven by 7-D delta actions.
// Several instances may share one WebGL renderer (vectorised environments in one page).

import * as THREE from "three";
import RAPIER from "@dimforge/rapier3d-compat";
import { ROBOT } from "./robot.js";
import { Rng } from "./rng.js";
import { TASKS, startPosition, validateRandomization, BLOCK_COLORS, CONTAINER_COLORS, ZONE_COLORS, TARGET_COLORS, wrapAngle } from "./tasks.js";
import { ENVIRONMENTS } from "./envs.js";

import { CAMERAS } from "./manifest.js";
export { CAMERAS };
const GRASP_RELEASE_MARGIN = 0.004;

// Colours are display (sRGB) values end to end; see shadedMaterial.
THREE.ColorManagement.enabled = false;

let physicsReady = null;
export function initPhysics() {
  physicsReady = physicsReady || RAPIER.init();
  return physicsReady;
}

export class SimError extends Error {
  constructor(message, code = "bad_request") {
    super(message);
    this.code = code;
  }
}

// Shared renderer that reads pixels back as RGBA rows, bottom row first.
export class PixelRenderer {
  constructor(canvas) {
    this.canvas = canvas || new OffscreenCanvas(224, 224);
    this.renderer = new THREE.WebGLRenderer({ canvas: this.canvas, antialias: false, alpha: false, preserveDrawingBuffer: false, powerPreference: "high-performance" });
    this.renderer.setPixelRatio(1);
    this.renderer.outputColorSpace = THREE.LinearSRGBColorSpace;
    this.gl = this.renderer.getContext();
    this.w = 0;
    this.h = 0;
  }

  setSize(w, h) {
    if (w !== this.w || h !== this.h) {
      this.renderer.setSize(w, h, false);
      this.w = w;
      this.h = h;
    }
  }

  // Renders `scenes` in order into the frame target (the first clears) and reads it back.
  read(scenes, camera, w, h, out) {
    const r = this.renderer;
    r.setRenderTarget(this._frame(w, h));
    scenes.forEach((sc, i) => {
      r.autoClear = i === 0;
      r.render(sc, camera);
    });
    r.autoClear = true;
    this.gl.readPixels(0, 0, w, h, this.gl.RGBA, this.gl.UNSIGNED_BYTE, out);
    return out;
  }

  _target(size) {
    return new THREE.WebGLRenderTarget(size, size, { depthBuffer: true, stencilBuffer: false, generateMipmaps: false, minFilter: THREE.NearestFilter, magFilter: THREE.NearestFilter });
  }

  _frame(w, h) {
    if (!this.frame || this.frame.width !== w || this.frame.height !== h) {
      if (this.frame) this.frame.dispose();
      this.frame = this._target(w);
    }
    return this.frame;
  }

  // Software rasterization time goes mostly into the large backdrop surfaces (table, floor). For the
  // fixed agent-view camera they are drawn once per episode; each frame starts from a copy of that
  // image and draws the rest on top. Nothing is ever behind the backdrop (objects stay above the
  // table top), so the result equals drawing everything at once.
  renderStatic(scene, camera, size) {
    const target = this._target(size);
    this.renderer.setRenderTarget(target);
    this.renderer.render(scene, camera);
    return target;
  }

  readLayered(staticTarget, scene, camera, size, out) {
    const r = this.renderer, gl = this.gl;
    const frame = this._frame(size, size);
    r.setRenderTarget(frame); // three creates and binds the frame's framebuffer
    const frameFb = r.properties.get(frame).__webglFramebuffer;
    gl.bindFramebuffer(gl.READ_FRAMEBUFFER, r.properties.get(staticTarget).__webglFramebuffer);
    gl.blitFramebuffer(0, 0, size, size, 0, 0, size, size, gl.COLOR_BUFFER_BIT, gl.NEAREST);
    // Restore the binding three's state cache believes in (the frame, for read and draw).
    gl.bindFramebuffer(gl.FRAMEBUFFER, frameFb);
    r.autoClear = false;
    r.clearDepth();
    r.render(scene, camera);
    r.autoClear = true;
    gl.readPixels(0, 0, size, size, gl.RGBA, gl.UNSIGNED_BYTE, out);
    return out;
  }

}

// Procedural table textures, deterministic per theme (no image files to load).
const textureCache = new Map();
export const TABLE_PATTERNS = ["wood", "tiles", "speckle"];

function tableTexture(theme) {
  const key = `${theme.pattern}:${theme.color}:${theme.pattern_color}`;
  if (textureCache.has(key)) return textureCache.get(key);
  const n = 128;
  const data = new Uint8Array(n * n * 4);
  const rng = new Rng(1234);
  const base = new THREE.Color(0xffffff);
  const dark = new THREE.Color(theme.pattern_color).multiplyScalar(1 / Math.max(1e-3, new THREE.Color(theme.color).getHSL({}).l * 1.6));
  for (let y = 0; y < n; y++) {
    const rowNoise = rng.uniform(-0.06, 0.06);
    for (let x = 0; x < n; x++) {
      let t = 0;
      if (theme.pattern === "wood") t = 0.35 + 0.3 * Math.sin((y + 2 * Math.sin(x / 23)) * 0.7) + rowNoise;
      else if (theme.pattern === "tiles") t = x % 32 < 2 || y % 32 < 2 ? 1 : 0.08 * rng.next();
      else t = rng.next() < 0.05 ? 0.9 : 0.05 * rng.next();
      t = Math.min(1, Math.max(0, t)) * 0.55;
      const c = base.clone().lerp(dark, t);
      const i = (y * n + x) * 4;
      data[i] = Math.round(255 * Math.min(1, c.r));
      data[i + 1] = Math.round(255 * Math.min(1, c.g));
      data[i + 2] = Math.round(255 * Math.min(1, c.b));
      data[i + 3] = 255;
    }
  }
  const tex = new THREE.DataTexture(data, n, n, THREE.RGBAFormat);
  tex.wrapS = tex.wrapT = THREE.RepeatWrapping;
  tex.repeat.set(2, 2);
  tex.magFilter = THREE.LinearFilter;
  // Mipmapped sampling costs about a millisecond per frame in software rendering; the mild
  // minification of this low-contrast texture does not need it.
  tex.minFilter = THREE.LinearFilter;
  tex.generateMipmaps = false;
  tex.colorSpace = THREE.NoColorSpace;
  tex.needsUpdate = true;
  textureCache.set(key, tex);
  return tex;
}

// Lighting is evaluated per vertex (exact for flat faces under directional and hemisphere light) and
// colours are used as display values without colour-space conversion. Software rendering spends its
// time in fragment shaders; three.js's per-fragment Lambert with sRGB output costs about three times
// as much per frame for no visible gain at 224 px.
const VERTEX_SHADER = `
uniform vec3 uKeyDir;
uniform vec3 uKeyColor;
uniform vec3 uSky;
uniform vec3 uGround;
uniform vec3 uEmissive;
uniform vec2 uRepeat;
varying vec3 vLight;
varying vec2 vUv;
void main() {
  vec3 n = normalize(mat3(modelMatrix) * normal);
  vLight = mix(uGround, uSky, 0.5 + 0.5 * n.z) + uKeyColor * max(dot(n, uKeyDir), 0.0) + uEmissive;
  vUv = uv * uRepeat;
  gl_Position = projectionMatrix * modelViewMatrix * vec4(position, 1.0);
}`;
const FRAGMENT_SHADER = `
uniform vec3 uColor;
varying vec3 vLight;
varying vec2 vUv;
#ifdef USE_TABLE_MAP
uniform sampler2D uMap;
#endif
void main() {
  vec3 c = uColor;
#ifdef USE_TABLE_MAP
  c *= texture2D(uMap, vUv).rgb;
#endif
  gl_FragColor = vec4(min(c * vLight, vec3(1.0)), 1.0);
}`;

function shadedMaterial(lights, color, { map = null, emissive = 0, polygonOffset = false } = {}) {
  const uniforms = {
    ...lights,
    uColor: { value: new THREE.Color(color) },
    uEmissive: { value: new THREE.Vector3(emissive, emissive, emissive) },
    uRepeat: { value: new THREE.Vector2(map ? map.repeat.x : 1, map ? map.repeat.y : 1) },
  };
  const defines = {};
  if (map) {
    uniforms.uMap = { value: map };
    defines.USE_TABLE_MAP = "";
  }
  const m = new THREE.ShaderMaterial({ uniforms, defines, vertexShader: VERTEX_SHADER, fragmentShader: FRAGMENT_SHADER });
  if (polygonOffset) {
    m.polygonOffset = true;
    m.polygonOffsetFactor = -2;
    m.polygonOffsetUnits = -2;
  }
  return m;
}

// Contact shadows: a soft dark disc on the table straight below each movable thing. Without them a
// single camera cannot tell a floating sphere's or the gripper's height from its distance (both move
// it along the same image axis); with them, the shadow fixes (x, y) and the object's image fixes z.
// They are drawn in the dynamic layer (after the static backdrop), blended over the table.
const SHADOW_VERTEX = `
varying vec2 vUv;
void main() {
  vUv = uv;
  gl_Position = projectionMatrix * modelViewMatrix * vec4(position, 1.0);
}`;
const SHADOW_FRAGMENT = `
uniform float uOpacity;
varying vec2 vUv;
void main() {
  float d = length(vUv - 0.5) * 2.0;
  gl_FragColor = vec4(0.0, 0.0, 0.0, uOpacity * (1.0 - smoothstep(0.55, 1.0, d)));
}`;
const SHADOW_OPACITY = 0.55;
const SHADOW_Z = 0.0008;

function contactShadow(halfX, halfY) {
  const m = new THREE.ShaderMaterial({
    uniforms: { uOpacity: { value: SHADOW_OPACITY } },
    vertexShader: SHADOW_VERTEX,
    fragmentShader: SHADOW_FRAGMENT,
    transparent: true,
    depthWrite: false,
  });
  return new THREE.Mesh(new THREE.PlaneGeometry(2 * halfX, 2 * halfY), m);
}

const quatFromRpy = (rpy) => new THREE.Quaternion().setFromEuler(new THREE.Euler(rpy[0], rpy[1], rpy[2], "ZYX"));
const v3 = (a) => new THREE.Vector3(a[0], a[1], a[2]);
const arr3 = (v) => [v.x, v.y, v.z];
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

function jitterColor(hex, rng, amount) {
  const c = new THREE.Color(hex);
  if (amount > 0) {
    const hsl = c.getHSL({});
    c.setHSL((hsl.h + rng.uniform(-amount, amount) * 0.15 + 1) % 1, clamp(hsl.s + rng.uniform(-amount, amount), 0, 1), clamp(hsl.l + rng.uniform(-amount, amount) * 0.5, 0.02, 0.98));
  }
  return c;
}

export class TabletopSim {
  constructor(pixels) {
    this.pixels = pixels;
    this.world = null;
    this.scene = null;
    this.ready = false;
  }

  // ------------------------------------------------------------ episode set-up
  reset(taskName, envName, seed, options = {}) {
    const task = TASKS[taskName];
    if (!task) throw new SimError(`unknown task '${taskName}'; valid: ${Object.keys(TASKS).join(", ")}`, "unknown_task");
    const theme = ENVIRONMENTS[envName];
    if (!theme) throw new SimError(`unknown environment '${envName}'; valid: ${Object.keys(ENVIRONMENTS).join(", ")}`, "unknown_environment");
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new SimError(`seed must be an integer in [0, 2^32), got ${seed}`);
    const opts = options || {};
    const allowed = new Set(["randomization", "cameras", "image_size", "max_steps"]);
    for (const k of Object.keys(opts)) if (!allowed.has(k)) throw new SimError(`unknown reset option '${k}'; valid: ${[...allowed].join(", ")}`);
    let knobs;
    try {
      knobs = validateRandomization(opts.randomization);
    } catch (e) {
      throw new SimError(e.message);
    }
    const cameras = opts.cameras ?? ["agentview"];
    if (!Array.isArray(cameras) || cameras.length === 0 || cameras.some((c) => !CAMERAS.includes(c)) || new Set(cameras).size !== cameras.length) {
      throw new SimError(`options.cameras must be a non-empty list of distinct names from ${CAMERAS.join(", ")}, got ${JSON.stringify(cameras)}`);
    }
    const size = opts.image_size ?? 224;
    if (!Number.isInteger(size) || size < 16 || size > 1024) throw new SimError(`options.image_size must be an integer in [16, 1024], got ${JSON.stringify(size)}`);
    const maxSteps = opts.max_steps ?? task.max_steps;
    if (!Number.isInteger(maxSteps) || maxSteps < 1 || maxSteps > 100000) throw new SimError(`options.max_steps must be a positive integer, got ${JSON.stringify(maxSteps)}`);

    this.dispose();
    this.taskName = taskName;
    this.task = task;
    this.envName = envName;
    this.theme = theme;
    this.seed = seed;
    this.knobs = knobs;
    this.cameras = cameras;
    this.size = size;
    this.maxSteps = maxSteps;
    const rng = new Rng(seed);
    const layoutRng = rng.fork("layout");
    this.layout = task.sample(layoutRng, knobs);
    this.instruction = this.layout.instruction || this._instruction(rng.fork("instruction"));
    this.mem = {};
    this.expertMem = {};
    this.stepCount = 0;
    this.grasp = null;
    this.ee = { pos: startPosition(rng.fork("start"), knobs), ori: ROBOT.home.ori.slice(), width: ROBOT.home.width, target: ROBOT.home.width };
    this._buildPhysics();
    this._buildScene(rng.fork("visual"));
    this._syncVisuals();
    this.initial = {};
    for (const [n, o] of this.objects) this.initial[n] = arr3(o.body.translation());
    this.ready = true;
    this._finishStep();
    return this.result;
  }

  _instruction(rng) {
    const t = this.knobs.paraphrase ? rng.choice(this.task.templates) : this.task.templates[0];
    return t.replace(/\{(\w+)\}/g, (_, k) => {
      if (!(k in this.layout.vars)) throw new SimError(`template variable '${k}' missing in task '${this.taskName}'`, "internal");
      return this.layout.vars[k];
    });
  }

  _buildPhysics() {
    const world = new RAPIER.World({ x: 0, y: 0, z: -9.81 });
    world.timestep = ROBOT.control_dt / ROBOT.physics_substeps;
    // Objects are a few centimetres across. With the default (1 m) length unit the 2 cm predictive
    // contact margin lets jaws passing a block's corner shove it without touching it.
    world.lengthUnit = 0.1;
    this.world = world;
    const table = world.createRigidBody(RAPIER.RigidBodyDesc.fixed().setTranslation(0, 0, -0.025));
    world.createCollider(RAPIER.ColliderDesc.cuboid(0.5, 0.65, 0.025).setFriction(0.6), table);

    this.objects = new Map();
    for (const spec of this.layout.objects) {
      const q = quatFromRpy([0, 0, spec.yaw]);
      const body = world.createRigidBody(
        RAPIER.RigidBodyDesc.dynamic().setTranslation(spec.pos[0], spec.pos[1], spec.pos[2] + 0.0005)
          .setRotation({ x: q.x, y: q.y, z: q.z, w: q.w }).setLinearDamping(0.3).setAngularDamping(0.5)
          // A sleeping body ignores the kinematic jaws moving into it; a handful of blocks never need to sleep.
          .setCanSleep(false),
      );
      world.createCollider(RAPIER.ColliderDesc.cuboid(...spec.half).setFriction(0.8).setDensity(500).setRestitution(0), body);
      this.objects.set(spec.name, { spec, body });
    }
    const c = this.layout.fixtures.container;
    if (c) {
      const body = world.createRigidBody(RAPIER.RigidBodyDesc.fixed().setTranslation(c.pos[0], c.pos[1], 0));
      const o = c.inner_half + c.wall_thickness;
      const t = c.wall_thickness / 2;
      world.createCollider(RAPIER.ColliderDesc.cuboid(o, o, c.floor / 2).setTranslation(0, 0, c.floor / 2).setFriction(0.8), body);
      const hz = c.wall_height / 2;
      world.createCollider(RAPIER.ColliderDesc.cuboid(t, o, hz).setTranslation(c.inner_half + t, 0, hz), body);
      world.createCollider(RAPIER.ColliderDesc.cuboid(t, o, hz).setTranslation(-c.inner_half - t, 0, hz), body);
      world.createCollider(RAPIER.ColliderDesc.cuboid(c.inner_half, t, hz).setTranslation(0, c.inner_half + t, hz), body);
      world.createCollider(RAPIER.ColliderDesc.cuboid(c.inner_half, t, hz).setTranslation(0, -c.inner_half - t, hz), body);
    }
    const kin = () => world.createRigidBody(RAPIER.RigidBodyDesc.kinematicPositionBased().setCanSleep(false));
    const f = ROBOT.finger, p = ROBOT.palm;
    this.fingerBodies = [kin(), kin()];
    for (const b of this.fingerBodies) world.createCollider(RAPIER.ColliderDesc.cuboid(f.half_x, f.half_y, f.half_z).setFriction(1.0), b);
    this.palmBody = kin();
    world.createCollider(RAPIER.ColliderDesc.cuboid(p.half_x, p.half_y, p.half_z).setFriction(0.5), this.palmBody);
    this._placeGripper(this.ee, true);
  }

  // Gripper part poses for an end-effector pose; `teleport` sets them directly (episode start).
  _gripperPoses(ee) {
    const q = quatFromRpy(ee.ori);
    const tcp = v3(ee.pos);
    const f = ROBOT.finger, p = ROBOT.palm;
    const part = (x, y, z) => new THREE.Vector3(x, y, z).applyQuaternion(q).add(tcp);
    return {
      q,
      tcp,
      fingers: [part(0, ee.width / 2 + f.half_y, f.offset_z), part(0, -ee.width / 2 - f.half_y, f.offset_z)],
      palm: part(0, 0, p.offset_z),
    };
  }

  _placeGripper(ee, teleport) {
    const g = this._gripperPoses(ee);
    const rq = { x: g.q.x, y: g.q.y, z: g.q.z, w: g.q.w };
    const set = (body, v) => {
      if (teleport) {
        body.setTranslation({ x: v.x, y: v.y, z: v.z }, true);
        body.setRotation(rq, true);
      } else {
        body.setNextKinematicTranslation({ x: v.x, y: v.y, z: v.z });
        body.setNextKinematicRotation(rq);
      }
    };
    set(this.fingerBodies[0], g.fingers[0]);
    set(this.fingerBodies[1], g.fingers[1]);
    set(this.palmBody, g.palm);
    if (this.grasp) {
      const o = this.objects.get(this.grasp.name);
      const pos = this.grasp.relPos.clone().applyQuaternion(g.q).add(g.tcp);
      const rot = g.q.clone().multiply(this.grasp.relQuat);
      if (teleport) {
        o.body.setTranslation({ x: pos.x, y: pos.y, z: pos.z }, true);
        o.body.setRotation({ x: rot.x, y: rot.y, z: rot.z, w: rot.w }, true);
      } else {
        o.body.setNextKinematicTranslation({ x: pos.x, y: pos.y, z: pos.z });
        o.body.setNextKinematicRotation({ x: rot.x, y: rot.y, z: rot.z, w: rot.w });
      }
    }
  }

  _buildScene(rng) {
    const theme = this.theme, knobs = this.knobs;
    // Two scenes: the backdrop (table, floor, flat zone markings), which nothing can ever be behind and
    // which is drawn once per episode for the fixed agent-view camera (see PixelRenderer.readLayered),
    // and everything standing on the table.
    const scene = new THREE.Scene();
    const statics = new THREE.Scene();
    const bg = jitterColor(theme.background.color, rng.fork("bg"), knobs.background_jitter * 0.5);
    statics.background = bg;
    this.scene = scene;
    this.staticScene = statics;
    this.staticDirty = true;
    const L = theme.lights;
    const lr = rng.fork("light");
    const li = () => 1 + lr.uniform(-1, 1) * knobs.light_intensity_jitter * 0.5;
    const amb = L.ambient * li();
    const keyI = L.key * 0.35 * li();
    const dir = v3(L.key_dir).normalize();
    const dj = knobs.light_direction_jitter;
    dir.applyEuler(new THREE.Euler(lr.uniform(-dj, dj), lr.uniform(-dj, dj), lr.uniform(-dj, dj)));
    // Shared uniform objects: every material of this scene sees the same lights.
    const lights = {
      uKeyDir: { value: dir },
      uKeyColor: { value: new THREE.Color(L.key_color).multiplyScalar(keyI) },
      uSky: { value: new THREE.Color(L.ambient_sky).multiplyScalar(amb) },
      uGround: { value: new THREE.Color(L.ambient_ground).multiplyScalar(amb) },
    };
    const lam = (color, extra = {}) => shadedMaterial(lights, color, extra);

    const pattern = knobs.texture_shuffle ? rng.fork("texture").choice(TABLE_PATTERNS) : theme.table.pattern;
    const tableTheme = { ...theme.table, pattern };
    const tableMat = lam(jitterColor(theme.table.color, rng.fork("table"), knobs.table_color_jitter * 0.4), { map: tableTexture(tableTheme) });
    const table = new THREE.Mesh(new THREE.BoxGeometry(1.0, 1.3, 0.05), tableMat);
    table.position.set(0, 0, -0.025);
    statics.add(table);
    const floor = new THREE.Mesh(new THREE.PlaneGeometry(8, 8), lam(theme.background.floor));
    floor.position.set(0, 0, -0.75);
    statics.add(floor);


    const cr = rng.fork("objects");
    this.meshes = new Map();
    this.shadows = new Map();
    for (const [name, o] of this.objects) {
      const spec = o.spec;
      const m = new THREE.Mesh(new THREE.BoxGeometry(2 * spec.half[0], 2 * spec.half[1], 2 * spec.half[2]), lam(jitterColor(BLOCK_COLORS[spec.color], cr, knobs.color_jitter)));
      scene.add(m);
      this.meshes.set(name, m);
      const shadow = contactShadow(spec.half[0] * 1.25, spec.half[1] * 1.25);
      scene.add(shadow);
      this.shadows.set(name, shadow);
    }
    const fx = this.layout.fixtures;
    if (fx.container) {
      const c = fx.container;
      const g = new THREE.Group();
      const mat = lam(jitterColor(CONTAINER_COLORS[c.color], cr, knobs.color_jitter));
      const o = c.inner_half + c.wall_thickness, t = c.wall_thickness;
      const box = (sx, sy, sz, x, y, z) => {
        const m = new THREE.Mesh(new THREE.BoxGeometry(sx, sy, sz), mat);
        m.position.set(x, y, z);
        g.add(m);
      };
      box(2 * o, 2 * o, c.floor, 0, 0, c.floor / 2);
      box(t, 2 * o, c.wall_height, c.inner_half + t / 2, 0, c.wall_height / 2);
      box(t, 2 * o, c.wall_height, -c.inner_half - t / 2, 0, c.wall_height / 2);
      box(2 * c.inner_half, t, c.wall_height, 0, c.inner_half + t / 2, c.wall_height / 2);
      box(2 * c.inner_half, t, c.wall_height, 0, -c.inner_half - t / 2, c.wall_height / 2);
      g.position.set(c.pos[0], c.pos[1], 0);
      scene.add(g);
    }
    if (fx.zone) {
      const z = fx.zone;
      const m = new THREE.Mesh(new THREE.CircleGeometry(z.radius, 40), lam(jitterColor(ZONE_COLORS[z.color], cr, knobs.color_jitter), { polygonOffset: true }));
      m.position.set(z.pos[0], z.pos[1], 0.0005);
      statics.add(m);
    }
    if (fx.target) {
      const t = fx.target;
      const m = new THREE.Mesh(new THREE.SphereGeometry(t.radius, 20, 14), lam(TARGET_COLORS[t.color], { emissive: 0.35 }));
      m.position.set(...t.pos);
      scene.add(m);
      const shadow = contactShadow(t.radius * 1.3, t.radius * 1.3);
      shadow.position.set(t.pos[0], t.pos[1], SHADOW_Z);
      scene.add(shadow);
    }

    // Gripper: palm, two jaws and a column standing for the arm.
    const f = ROBOT.finger, p = ROBOT.palm;
    const metal = lam(0x9aa0a6), dark = lam(0x3c4043);
    this.gripper = new THREE.Group();
    this.palmMesh = new THREE.Mesh(new THREE.BoxGeometry(2 * p.half_x, 2 * p.half_y, 2 * p.half_z), dark);
    this.palmMesh.position.set(0, 0, p.offset_z);
    this.gripper.add(this.palmMesh);
    const column = new THREE.Mesh(new THREE.CylinderGeometry(0.018, 0.022, 0.6, 16), metal);
    column.rotation.x = Math.PI / 2;
    column.position.set(0, 0, p.offset_z + p.half_z + 0.3);
    this.gripper.add(column);
    this.fingerMeshes = [0, 1].map(() => {
      const m = new THREE.Mesh(new THREE.BoxGeometry(2 * f.half_x, 2 * f.half_y, 2 * f.half_z), metal);
      this.gripper.add(m);
      return m;
    });
    scene.add(this.gripper);
    this.gripperShadow = contactShadow(p.half_x * 1.4, p.half_y * 1.1);
    scene.add(this.gripperShadow);

    const cam = theme.camera;
    const cj = rng.fork("camera");
    const pj = knobs.camera_position_jitter, rj = knobs.camera_rotation_jitter;
    this.agentCam = new THREE.PerspectiveCamera(cam.fov, 1, 0.01, 10);
    this.agentCam.up.set(0, 0, 1);
    this.agentCam.position.set(cam.pos[0] + cj.uniform(-pj, pj), cam.pos[1] + cj.uniform(-pj, pj), cam.pos[2] + cj.uniform(-pj, pj));
    const look = v3(cam.look_at);
    const dist = this.agentCam.position.distanceTo(look);
    look.add(new THREE.Vector3(cj.uniform(-rj, rj) * dist, cj.uniform(-rj, rj) * dist, cj.uniform(-rj, rj) * dist));
    this.agentCam.lookAt(look);
    // Wrist camera: on the palm, looking down between the jaws.
    this.wristCam = new THREE.PerspectiveCamera(75, 1, 0.005, 5);
    this.wristCam.up.set(1, 0, 0);
    this.wristCam.position.set(-0.035, 0, p.offset_z);
    this.wristCam.lookAt(new THREE.Vector3(0.0, 0, -0.08));
    this.gripper.add(this.wristCam);
  }

  _syncVisuals() {
    const g = this._gripperPoses(this.ee);
    this.gripper.position.copy(g.tcp);
    this.gripper.quaternion.copy(g.q);
    const f = ROBOT.finger;
    this.fingerMeshes[0].position.set(0, this.ee.width / 2 + f.half_y, f.offset_z);
    this.fingerMeshes[1].position.set(0, -this.ee.width / 2 - f.half_y, f.offset_z);
    for (const [name, o] of this.objects) {
      const t = o.body.translation(), r = o.body.rotation();
      const m = this.meshes.get(name);
      m.position.set(t.x, t.y, t.z);
      m.quaternion.set(r.x, r.y, r.z, r.w);
      const s = this.shadows.get(name);
      s.position.set(t.x, t.y, SHADOW_Z);
      s.rotation.set(0, 0, Math.atan2(2 * (r.w * r.z + r.x * r.y), 1 - 2 * (r.y * r.y + r.z * r.z)));
    }
    this.gripperShadow.position.set(g.tcp.x, g.tcp.y, SHADOW_Z);
    this.gripperShadow.rotation.set(0, 0, this.ee.ori[2]);
    this.gripper.updateMatrixWorld(true);
  }

  // ------------------------------------------------------------ stepping
  step(action) {
    if (!this.ready) throw new SimError("step before reset: call reset first", "not_reset");
    if (!Array.isArray(action) || action.length !== 7) throw new SimError(`action must have 7 numbers, got ${JSON.stringify(action)}`);
    const a = action.map((x, i) => {
      if (typeof x !== "number" || !Number.isFinite(x)) throw new SimError(`action[${i}] must be a finite number, got ${JSON.stringify(x)}`);
      return i < 6 ? clamp(x, -1, 1) : clamp(x, 0, 1);
    });
    const clippedDims = [];
    for (let i = 0; i < 7; i++) if (a[i] !== action[i]) clippedDims.push(i);

    const W = ROBOT.workspace, O = ROBOT.orientation_limits;
    const prev = { pos: this.ee.pos.slice(), ori: this.ee.ori.slice(), width: this.ee.width };
    const want = [0, 1, 2].map((i) => prev.pos[i] + a[i] * ROBOT.max_translation_per_step);
    const lims = [W.x, W.y, W.z.slice()];
    if (this.grasp) {
      // Keep a held block above the table: the tool centre point may only go as low as the block allows.
      const o = this.objects.get(this.grasp.name);
      const bottom = o.body.translation().z - this._halfAlong(o, new THREE.Vector3(0, 0, 1));
      lims[2][0] = Math.max(lims[2][0], prev.pos[2] - (bottom - 0.002));
      lims[2][0] = Math.min(lims[2][0], prev.pos[2]);
    }
    const pos = want.map((v, i) => clamp(v, lims[i][0], lims[i][1]));
    const workspaceLimited = pos.some((v, i) => Math.abs(v - want[i]) > 1e-9);
    const ori = [
      clamp(prev.ori[0] + a[3] * ROBOT.max_rotation_per_step, O.roll[0], O.roll[1]),
      clamp(prev.ori[1] + a[4] * ROBOT.max_rotation_per_step, O.pitch[0], O.pitch[1]),
      clamp(prev.ori[2] + a[5] * ROBOT.max_rotation_per_step, O.yaw[0], O.yaw[1]),
    ];
    const target = a[6] * ROBOT.max_width;
    let width = prev.width + clamp(target - prev.width, -ROBOT.gripper_speed_per_step, ROBOT.gripper_speed_per_step);
    const next = { pos, ori, width, target };

    if (this.grasp) {
      if (target > this.grasp.width + GRASP_RELEASE_MARGIN) this._release();
      else next.width = this.grasp.width;
    } else if (width < prev.width) {
      const g = this._findGrasp(next, prev.width);
      if (g) next.width = g.width;
    }

    // Substeps interpolate the gripper motion so that contacts see a smooth kinematic path.
    const n = ROBOT.physics_substeps;
    for (let s = 1; s <= n; s++) {
      const t = s / n;
      const ee = {
        pos: prev.pos.map((v, i) => v + (next.pos[i] - v) * t),
        ori: prev.ori.map((v, i) => v + (next.ori[i] - v) * t),
        width: prev.width + (next.width - prev.width) * t,
      };
      this._placeGripper(ee, false);
      this.world.step();
    }
    this.ee = { pos: next.pos, ori: next.ori, width: next.width, target };
    this.stepCount += 1;
    this._syncVisuals();
    this._finishStep(clippedDims, workspaceLimited);
    return this.result;
  }

  _halfAlong(o, axisWorld) {
    const r = o.body.rotation();
    const q = new THREE.Quaternion(r.x, r.y, r.z, r.w);
    const h = o.spec.half;
    let s = 0;
    const axes = [new THREE.Vector3(1, 0, 0), new THREE.Vector3(0, 1, 0), new THREE.Vector3(0, 0, 1)];
    for (let i = 0; i < 3; i++) s += Math.abs(axes[i].applyQuaternion(q).dot(axisWorld)) * h[i];
    return s;
  }

  // Grasp rule: while the jaws close, an object whose extent lies between the jaw pads (overlapping
  // them vertically and along the pad's length) is grasped once the closing jaws reach both of its
  // faces. It is then centred between the pads and rigidly attached until the gripper opens.
  _findGrasp(next, prevWidth) {
    const q = quatFromRpy(next.ori);
    const tcp = v3(next.pos);
    const ax = [new THREE.Vector3(1, 0, 0), new THREE.Vector3(0, 1, 0), new THREE.Vector3(0, 0, 1)].map((v) => v.applyQuaternion(q));
    const f = ROBOT.finger;
    const padLo = f.offset_z - f.half_z, padHi = f.offset_z + f.half_z;
    for (const name of [...this.objects.keys()].sort()) {
      const o = this.objects.get(name);
      const d = v3(arr3(o.body.translation())).sub(tcp);
      const p = ax.map((a) => d.dot(a));
      const h = ax.map((a) => this._halfAlong(o, a));
      if (Math.abs(p[0]) > 0.8 * h[0]) continue;
      if (Math.min(p[2] + h[2], padHi) - Math.max(p[2] - h[2], padLo) < 0.01) continue;
      if (p[1] - h[1] < -prevWidth / 2 - 0.003 || p[1] + h[1] > prevWidth / 2 + 0.003) continue;
      if (next.width > 2 * (Math.abs(p[1]) + h[1])) continue;
      const body = o.body;
      const shift = ax[1].clone().multiplyScalar(-p[1]);
      const t = body.translation();
      const centred = new THREE.Vector3(t.x + shift.x, t.y + shift.y, t.z + shift.z);
      const r = body.rotation();
      const relPos = centred.clone().sub(tcp).applyQuaternion(q.clone().invert());
      const relQuat = q.clone().invert().multiply(new THREE.Quaternion(r.x, r.y, r.z, r.w));
      body.setBodyType(RAPIER.RigidBodyType.KinematicPositionBased, true);
      body.setTranslation({ x: centred.x, y: centred.y, z: centred.z }, true);
      this.grasp = { name, width: 2 * h[1], relPos, relQuat };
      return this.grasp;
    }
    return null;
  }

  _release() {
    const o = this.objects.get(this.grasp.name);
    o.body.setBodyType(RAPIER.RigidBodyType.Dynamic, true);
    o.body.setLinvel({ x: 0, y: 0, z: 0 }, true);
    o.body.setAngvel({ x: 0, y: 0, z: 0 }, true);
    this.grasp = null;
  }

  // ------------------------------------------------------------ state and results
  state() {
    const objects = {};
    for (const [name, o] of this.objects) {
      const t = o.body.translation(), r = o.body.rotation();
      const v = o.body.isKinematic() ? { x: 0, y: 0, z: 0 } : o.body.linvel();
      const yaw = Math.atan2(2 * (r.w * r.z + r.x * r.y), 1 - 2 * (r.y * r.y + r.z * r.z));
      objects[name] = { pos: [t.x, t.y, t.z], quat: [r.x, r.y, r.z, r.w], yaw, half: o.spec.half, color: o.spec.color, role: o.spec.role || null, speed: Math.hypot(v.x, v.y, v.z) };
    }
    return {
      step: this.stepCount,
      ee: { pos: this.ee.pos.slice(), ori: this.ee.ori.slice(), width: this.ee.width },
      grasped: this.grasp ? this.grasp.name : null,
      objects,
      fixtures: this.layout.fixtures,
      initial: this.initial,
    };
  }

  _finishStep(clippedDims = [], workspaceLimited = false) {
    const s = this.state();
    if (this.task.update) this.task.update(s, this.mem);
    const success = !!this.task.success(s, this.mem);
    const truncated = !success && this.stepCount >= this.maxSteps;
    const raw = this.task.expert(s, this.expertMem);
    const expertAction = raw.map((x, i) => (i < 6 ? clamp(x, -1, 1) : clamp(x, 0, 1)));
    const r = (x) => Math.round(x * 1e6) / 1e6;
    this.result = {
      reward: success ? 1.0 : 0.0,
      terminated: success,
      truncated,
      success,
      proprio: { ee_pos: s.ee.pos, ee_ori: s.ee.ori, gripper_width: [s.ee.width] },
      info: {
        task: this.taskName,
        environment: this.envName,
        seed: this.seed,
        instruction: this.instruction,
        step: this.stepCount,
        max_steps: this.maxSteps,
        success,
        distance_to_goal: this.task.distanceToGoal(s, this.mem),
        clipped: clippedDims.length > 0,
        clipped_dims: clippedDims,
        workspace_limited: workspaceLimited,
        grasped: s.grasped,
        expert_action: expertAction.map(r),
        expert_target: raw.target.map(r),
        expert_phase: this.expertMem.phase || (this.expertMem.second && this.expertMem.second.phase) || null,
        objects: s.objects,
        fixtures: s.fixtures,
      },
    };
  }

  render(camera, out) {
    if (camera === "wrist") return this.pixels.read([this.staticScene, this.scene], this.wristCam, this.size, this.size, out);
    if (this.staticDirty || !this.staticTarget || this.staticTarget.width !== this.size) {
      if (this.staticTarget) this.staticTarget.dispose();
      this.staticTarget = this.pixels.renderStatic(this.staticScene, this.agentCam, this.size);
      this.staticDirty = false;
    }
    return this.pixels.readLayered(this.staticTarget, this.scene, this.agentCam, this.size, out);
  }

  dispose() {
    if (this.world) {
      this.world.free();
      this.world = null;
    }
    if (this.scene) {
      // Geometries hold GPU buffers and are freed. Materials are deliberately not disposed: disposing
      // the last material of a kind deletes its shader program, and recompiling programs in software
      // on every reset costs ~100 ms. Undisposed materials are garbage-collected; their programs are
      // shared, so nothing accumulates.
      for (const sc of [this.scene, this.staticScene]) {
        sc.traverse((o) => {
          if (o.geometry) o.geometry.dispose();
        });
      }
      this.scene = null;
      this.staticScene = null;
    }
    if (this.staticTarget) {
      this.staticTarget.dispose();
      this.staticTarget = null;
    }
    this.ready = false;
  }
}

export { wrapAngle };
