// The manifest: everything the Python side needs to know about the simulator, generated from the
// registries themselves (tasks, environments, robot, randomization knobs, protocol).

import { ROBOT, ORIENTATION_CONVENTION } from "./robot.js";
import { taskManifest, RANDOMIZATION_DEFAULTS, RANDOMIZATION_SPEC } from "./tasks.js";
import { environmentManifest } from "./envs.js";
import { PROTOCOL_VERSION } from "./protocol.js";

export const SIM_VERSION = "0.1.0";
export const CAMERAS = ["agentview", "wrist"];
export const DEFAULT_IMAGE_SIZE = 224;

export function manifest() {
  const randomization = {};
  for (const [k, [type, min, max, description]] of Object.entries(RANDOMIZATION_SPEC)) {
    randomization[k] = { type, min, max, default: RANDOMIZATION_DEFAULTS[k], description };
  }
  return {
    sim_version: SIM_VERSION,
    protocol_version: PROTOCOL_VERSION,
    robot: ROBOT,
    orientation_convention: ORIENTATION_CONVENTION,
    cameras: CAMERAS,
    default_image_size: DEFAULT_IMAGE_SIZE,
    tasks: taskManifest(),
    environments: environmentManifest(),
    randomization,
  };
}
