// Agent page: hosts one or more simulator instances and serves requests from the Python side over a
// WebSocket. The canvas is never attached to the document: nothing is composited, only read back.

import { initPhysics, PixelRenderer, TabletopSim, SimError } from "./world.js";
import { encodeMessage, decodeMessage, validateRequest, ProtocolError } from "./protocol.js";
import { manifest } from "./manifest.js";

const MAX_ENVS = 64;

export class AgentHost {
  constructor(pixels) {
    this.pixels = pixels;
    this.sims = [];
    this.buffers = new Map();
    this.scratch = {};
  }

  sim(index, create) {
    if (!Number.isInteger(index) || index < 0 || index >= MAX_ENVS) throw new SimError(`env index must be an integer in [0, ${MAX_ENVS}), got ${index}`);
    if (!this.sims[index]) {
      if (!create) throw new SimError(`step before reset: environment ${index} has not been reset`, "not_reset");
      this.sims[index] = new TabletopSim(this.pixels);
    }
    return this.sims[index];
  }

  // Runs one reset/step and appends its images to `blobs`; returns the per-env reply header.
  run(item, blobs, offset) {
    const index = item.env ?? 0;
    let result;
    const t0 = performance.now();
    const sim = this.sim(index, item.type === "reset");
    if (item.type === "reset") result = sim.reset(item.task, item.environment, item.seed, item.options);
    else result = sim.step(item.action);
    const images = [];
    const t1 = performance.now();
    for (const cam of sim.cameras) {
      const n = sim.size * sim.size * 4;
      const key = `${index}:${cam}:${n}`;
      let buf = this.buffers.get(key);
      if (!buf) {
        buf = new Uint8Array(n);
        this.buffers.set(key, buf);
      }
      sim.render(cam, buf);
      images.push({ name: cam, offset, nbytes: n, height: sim.size, width: sim.size, channels: 4, rows: "bottom_up" });
      blobs.push(buf);
      offset += n;
    }
    const timing = { sim_ms: t1 - t0, render_ms: performance.now() - t1 };
    return { header: { env: index, timing, reward: result.reward, terminated: result.terminated, truncated: result.truncated, success: result.success, proprio: result.proprio, info: result.info, images }, offset };
  }

  handle(data) {
    let id;
    try {
      const { header } = decodeMessage(data);
      id = header.id;
      validateRequest(header);
      switch (header.type) {
        case "ping": {
          // Resource counts let callers check that nothing accumulates over episodes.
          const mem = this.pixels.renderer.info.memory;
          const heap = performance.memory ? performance.memory.usedJSHeapSize : null;
          return encodeMessage({ type: "pong", id, resources: { geometries: mem.geometries, textures: mem.textures, programs: this.pixels.renderer.info.programs.length, js_heap_bytes: heap, sims: this.sims.filter(Boolean).length } });
        }
        case "close":
          this.dispose();
          return encodeMessage({ type: "closed", id });
        case "reset":
        case "step": {
          const blobs = [];
          const { header: h } = this.run(header, blobs, 0);
          return encodeMessage({ type: "obs", id, ...h }, blobs, this.scratch);
        }
        case "batch": {
          const blobs = [];
          const items = [];
          let offset = 0;
          header.items.forEach((it, i) => {
            try {
              const r = this.run(it, blobs, offset);
              items.push(r.header);
              offset = r.offset;
            } catch (e) {
              e.message = `items[${i}]: ${e.message}`;
              throw e;
            }
          });
          return encodeMessage({ type: "batch", id, items }, blobs, this.scratch);
        }
        default:
          throw new ProtocolError(`unhandled message type '${header.type}'`);
      }
    } catch (e) {
      const known = e instanceof SimError || e instanceof ProtocolError;
      return encodeMessage({ type: "error", id: Number.isInteger(id) ? id : null, code: known ? e.code : "internal", message: known ? e.message : `${e.name}: ${e.message}` });
    }
  }

  dispose() {
    for (const s of this.sims) if (s) s.dispose();
    this.sims = [];
    this.buffers.clear();
  }
}

export async function runAgent(wsUrl) {
  await initPhysics();
  const pixels = new PixelRenderer();
  const host = new AgentHost(pixels);
  const ws = new WebSocket(wsUrl);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    const gl = pixels.gl;
    ws.send(encodeMessage({ type: "hello", manifest: manifest(), webgl: { version: gl.getParameter(gl.VERSION), renderer: gl.getParameter(gl.RENDERER) } }));
    document.title = "vla_lab sim (connected)";
  };
  ws.onmessage = (ev) => {
    ws.send(host.handle(ev.data));
  };
  // The Python side went away: free the worlds and go idle (no reconnect, no timers left running).
  ws.onclose = () => {
    host.dispose();
    document.title = "vla_lab sim (idle)";
  };
  return host;
}
