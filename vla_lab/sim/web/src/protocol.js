// Wire protocol between the Python side and the page (version PROTOCOL_VERSION).
//
// Every WebSocket message, both directions, is one binary frame:
//   uint32 little-endian N | N bytes of UTF-8 JSON header | payload bytes
// The header always carries {"v": PROTOCOL_VERSION, "type": ...}. Replies echo the request "id".
// Image blobs are described in the header (name, offset into the payload, shape, dtype) and travel
// as raw RGBA rows, bottom row first (WebGL readPixels order); the Python side flips and drops alpha.

export const PROTOCOL_VERSION = 1;
export const MAX_HEADER_BYTES = 1 << 20;

export class ProtocolError extends Error {
  constructor(message, code = "bad_request") {
    super(message);
    this.code = code;
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

// `scratch` (optional) is a reusable { buf } holder: allocating a fresh 200 kB buffer per frame keeps
// the garbage collector busy for more time than everything else in the page. The returned view is
// only valid until the next call with the same holder (WebSocket.send copies it).
export function encodeMessage(header, payloads = [], scratch = null) {
  const h = enc.encode(JSON.stringify({ v: PROTOCOL_VERSION, ...header }));
  let total = 4 + h.length;
  for (const p of payloads) total += p.byteLength;
  let out;
  if (scratch) {
    if (!scratch.buf || scratch.buf.byteLength < total) scratch.buf = new Uint8Array(Math.ceil(total * 1.25));
    out = scratch.buf.subarray(0, total);
  } else {
    out = new Uint8Array(total);
  }
  new DataView(out.buffer, out.byteOffset).setUint32(0, h.length, true);
  out.set(h, 4);
  let o = 4 + h.length;
  for (const p of payloads) {
    out.set(p instanceof Uint8Array ? p : new Uint8Array(p.buffer, p.byteOffset, p.byteLength), o);
    o += p.byteLength;
  }
  return out;
}

export function decodeMessage(data) {
  if (!(data instanceof ArrayBuffer)) throw new ProtocolError("expected a binary frame (4-byte header length, JSON header, payload)");
  if (data.byteLength < 4) throw new ProtocolError(`frame of ${data.byteLength} bytes is shorter than the 4-byte header length`);
  const n = new DataView(data).getUint32(0, true);
  if (n > MAX_HEADER_BYTES || 4 + n > data.byteLength) {
    throw new ProtocolError(`header length ${n} does not fit in a frame of ${data.byteLength} bytes`);
  }
  let header;
  try {
    header = JSON.parse(dec.decode(new Uint8Array(data, 4, n)));
  } catch (e) {
    throw new ProtocolError(`header is not valid UTF-8 JSON: ${e.message}`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) throw new ProtocolError("header must be a JSON object");
  if (header.v !== PROTOCOL_VERSION) {
    throw new ProtocolError(`unsupported protocol version ${JSON.stringify(header.v)}; this simulator speaks ${PROTOCOL_VERSION}`, "version");
  }
  if (typeof header.type !== "string") throw new ProtocolError("header.type must be a string");
  return { header, payload: new Uint8Array(data, 4 + n) };
}

const REQUEST_FIELDS = {
  reset: { task: "string", environment: "string", seed: "integer", options: "object?", env: "integer?" },
  step: { action: "array", env: "integer?" },
  batch: { items: "array" },
  ping: {},
  close: {},
};

function checkType(v, t, where) {
  const opt = t.endsWith("?");
  const base = opt ? t.slice(0, -1) : t;
  if (v === undefined) {
    if (opt) return;
    throw new ProtocolError(`${where} is missing`);
  }
  const ok = {
    string: typeof v === "string",
    integer: Number.isInteger(v),
    object: v !== null && typeof v === "object" && !Array.isArray(v),
    array: Array.isArray(v),
  }[base];
  if (!ok) throw new ProtocolError(`${where} must be ${/^[aeiou]/.test(base) ? "an" : "a"} ${base}, got ${JSON.stringify(v)}`);
}

// Structural validation of a request header; semantic checks (task names, ranges) happen where the
// request is executed and are reported the same way.
export function validateRequest(h, where = "header") {
  const spec = REQUEST_FIELDS[h.type];
  if (!spec) throw new ProtocolError(`unknown message type '${h.type}'; valid: ${Object.keys(REQUEST_FIELDS).join(", ")}`);
  const allowed = new Set(["v", "type", "id", ...Object.keys(spec)]);
  for (const k of Object.keys(h)) if (!allowed.has(k)) throw new ProtocolError(`${where} has unknown field '${k}' for type '${h.type}'`);
  if (h.id !== undefined && !Number.isInteger(h.id)) throw new ProtocolError(`${where}.id must be an integer`);
  for (const [k, t] of Object.entries(spec)) checkType(h[k], t, `${where}.${k}`);
  if (h.type === "step") {
    if (h.action.length !== 7) throw new ProtocolError(`${where}.action must have 7 numbers [dx, dy, dz, droll, dpitch, dyaw, gripper], got ${h.action.length}`);
    h.action.forEach((a, i) => {
      if (typeof a !== "number" || !Number.isFinite(a)) throw new ProtocolError(`${where}.action[${i}] must be a finite number, got ${JSON.stringify(a)}`);
    });
  }
  if (h.type === "batch") {
    if (h.items.length === 0) throw new ProtocolError(`${where}.items must not be empty`);
    h.items.forEach((it, i) => {
      checkType(it, "object", `${where}.items[${i}]`);
      if (it.type !== "reset" && it.type !== "step") throw new ProtocolError(`${where}.items[${i}].type must be 'reset' or 'step'`);
      validateRequest({ v: h.v, ...it }, `${where}.items[${i}]`);
    });
  }
  return h;
}
