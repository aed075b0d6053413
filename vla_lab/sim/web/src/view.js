// Viewer page for people: shows the simulator large in a real browser.
//   mode=teleop   the page runs the simulator itself at the control rate, driven by the keyboard, and
//                 sends finished episodes to the Python side for recording.
//   mode=spectate the page is an ordinary agent page driven from Python (a policy or the expert), and
//                 shows every frame it renders.

import { initPhysics, PixelRenderer, TabletopSim } from "./world.js";
import { AgentHost } from "./agent.js";
import { encodeMessage, decodeMessage } from "./protocol.js";
import { manifest } from "./manifest.js";
import { TASKS } from "./tasks.js";
import { ENVIRONMENTS } from "./envs.js";
import { ROBOT } from "./robot.js";
import { Teleop, TELEOP_KEYS, COMMAND_KEYS } from "./teleop.js";
import { socketUrl } from "./session.js";

const $ = (id) => document.getElementById(id);

function makeScreen() {
  const canvas = $("screen");
  const ctx = canvas.getContext("2d");
  return (rgba, size) => {
    if (canvas.width !== size) canvas.width = canvas.height = size;
    // Rows are bottom-up as read back; the canvas is flipped with CSS instead of copying rows.
    ctx.putImageData(new ImageData(new Uint8ClampedArray(rgba.buffer, rgba.byteOffset, size * size * 4), size, size), 0, 0);
  };
}

function connect(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error(`cannot connect to ${url}`));
  });
}

export async function runViewer(params) {
  const mode = params.get("mode") || "teleop";
  await initPhysics();
  const pixels = new PixelRenderer();
  const show = makeScreen();
  const ws = await connect(await socketUrl(params));
  ws.send(encodeMessage({ type: "hello", mode, manifest: manifest() }));
  $("mode").textContent = mode === "spectate" ? "spectator: episodes driven from Python" : "keyboard teleoperation";
  if (mode === "spectate") return spectate(ws, pixels, show);
  if (mode === "teleop") return teleop(ws, pixels, show, params);
  throw new Error(`unknown mode '${mode}'`);
}

function spectate(ws, pixels, show) {
  const host = new AgentHost(pixels);
  ws.onmessage = (ev) => {
    ws.send(host.handle(ev.data));
    const sim = host.sims.find((s) => s && s.ready);
    if (sim) {
      show(host.buffers.get(`${host.sims.indexOf(sim)}:agentview:${sim.size * sim.size * 4}`) || new Uint8Array(0), sim.size);
      $("instruction").textContent = sim.instruction;
      $("status").textContent = `step ${sim.stepCount}  success: ${sim.result.success}`;
    }
  };
  ws.onclose = () => {
    host.dispose();
    $("status").textContent = "disconnected (idle)";
  };
}

function teleop(ws, pixels, show, params) {
  const tasks = Object.keys(TASKS);
  const envs = Object.keys(ENVIRONMENTS);
  let task = tasks.includes(params.get("task")) ? params.get("task") : "pick_block";
  let env = envs.includes(params.get("environment")) ? params.get("environment") : "studio";
  let seed = Number.parseInt(params.get("seed") || "0", 10) || 0;
  const size = 224;
  const sim = new TabletopSim(pixels);
  const keys = new Teleop();
  const frame = new Uint8Array(size * size * 4);
  let episode = null; // recording buffer
  let message = "";

  const help = [...Object.entries(TELEOP_KEYS).map(([k, v]) => [k, v[2]]), ...Object.entries(COMMAND_KEYS)];
  $("keys").innerHTML = help.map(([k, v]) => `<tr><td><code>${k.replace("Key", "")}</code></td><td>${v}</td></tr>`).join("");

  const reset = () => {
    sim.reset(task, env, seed, { image_size: size });
    keys.gripper = 1;
    sim.render("agentview", frame);
    show(frame, size);
  };
  const status = () => {
    $("instruction").textContent = `${task} / ${env} / seed ${seed}: ${sim.instruction}`;
    const rec = episode ? `<span class="rec">● REC</span> ${episode.actions.length} steps` : "not recording (Enter to start)";
    $("status").innerHTML = `${rec} · gripper ${keys.gripper ? "open" : "closed"} · success ${sim.result.success} · ${message}`;
  };
  const finish = (keep, success) => {
    if (!episode) return;
    const ep = episode;
    episode = null;
    if (!keep || ep.actions.length === 0) {
      message = "discarded";
      return;
    }
    const n = size * size * 4;
    const blob = new Uint8Array(ep.frames.length * n);
    ep.frames.forEach((f, i) => blob.set(f, i * n));
    ws.send(encodeMessage({
      type: "teleop_episode", task: ep.task, environment: ep.environment, seed: ep.seed, instruction: ep.instruction,
      success, actions: ep.actions, proprio: ep.proprio, rewards: ep.rewards, dones: ep.actions.map((_, i) => i === ep.actions.length - 1),
      images: [{ name: "agentview", offset: 0, nbytes: blob.byteLength, height: size, width: size, channels: 4, rows: "bottom_up", frames: ep.frames.length }],
    }, [blob]));
    message = "saving…";
  };

  ws.onmessage = (ev) => {
    try {
      const { header } = decodeMessage(ev.data);
      message = header.type === "saved" ? `saved ${header.demo} to ${header.path}` : `error: ${header.message}`;
    } catch (e) {
      message = `bad reply: ${e.message}`;
    }
    status();
  };
  ws.onclose = () => {
    message = "disconnected from Python: recording disabled";
    status();
  };

  window.addEventListener("keydown", (ev) => {
    if (ev.repeat) return;
    const code = ev.code;
    if (code === "Enter") {
      seed += episode ? 0 : 1;
      reset();
      episode = { task, environment: env, seed, instruction: sim.instruction, frames: [], actions: [], rewards: [], proprio: { ee_pos: [], ee_ori: [], gripper_width: [] } };
      message = "recording";
    } else if (code === "KeyK") finish(true, true);
    else if (code === "KeyJ") finish(true, false);
    else if (code === "KeyX") finish(false, false);
    else if (code === "KeyT" && !episode) { task = tasks[(tasks.indexOf(task) + 1) % tasks.length]; reset(); }
    else if (code === "KeyV" && !episode) { env = envs[(envs.indexOf(env) + 1) % envs.length]; reset(); }
    else keys.keyDown(code);
    if (["Space", "Enter"].includes(code)) ev.preventDefault();
    status();
  });
  window.addEventListener("keyup", (ev) => keys.keyUp(ev.code));

  reset();
  status();
  // The robot runs at the control rate whether or not keys are pressed, like a real one.
  setInterval(() => {
    const a = keys.action();
    if (episode) {
      episode.frames.push(frame.slice());
      const r = sim.result.proprio;
      episode.proprio.ee_pos.push(r.ee_pos);
      episode.proprio.ee_ori.push(r.ee_ori);
      episode.proprio.gripper_width.push(r.gripper_width);
      episode.actions.push(a);
    }
    const res = sim.step(a);
    if (episode) episode.rewards.push(res.reward);
    sim.render("agentview", frame);
    show(frame, size);
    status();
  }, ROBOT.control_dt * 1000);
}
