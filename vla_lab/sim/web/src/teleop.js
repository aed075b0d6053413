// Keyboard teleoperation: held keys → a 7-D action. Pure (no DOM), so the mapping is testable and
// documented in one place; the viewer page feeds it keyboard events.

export const TELEOP_KEYS = {
  KeyW: [0, +1, "forward (+x, away from the robot)"],
  KeyS: [0, -1, "back (-x)"],
  KeyA: [1, +1, "left (+y)"],
  KeyD: [1, -1, "right (-y)"],
  KeyR: [2, +1, "up (+z)"],
  KeyF: [2, -1, "down (-z)"],
  KeyQ: [5, +1, "yaw left"],
  KeyE: [5, -1, "yaw right"],
};

export const COMMAND_KEYS = {
  Space: "toggle the gripper (open/closed)",
  Enter: "start recording a new episode (resets the scene with the next seed)",
  KeyK: "stop and keep the episode as a success",
  KeyJ: "stop and keep the episode as a failure",
  KeyX: "stop and discard the episode",
  KeyT: "next task",
  KeyV: "next environment",
  ShiftLeft: "hold for slow, precise motion (x0.25)",
};

export class Teleop {
  constructor() {
    this.held = new Set();
    this.gripper = 1;
  }

  keyDown(code) {
    if (code === "Space") this.gripper = this.gripper > 0.5 ? 0 : 1;
    this.held.add(code);
  }

  keyUp(code) {
    this.held.delete(code);
  }

  action() {
    const a = [0, 0, 0, 0, 0, 0, this.gripper];
    const scale = this.held.has("ShiftLeft") || this.held.has("ShiftRight") ? 0.25 : 1;
    for (const code of this.held) {
      const m = TELEOP_KEYS[code];
      if (m) a[m[0]] = Math.max(-1, Math.min(1, a[m[0]] + m[1] * scale));
    }
    return a;
  }
}
