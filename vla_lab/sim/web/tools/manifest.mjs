// Prints the simulator manifest (tasks, environments, robot, knobs) as JSON on stdout.
import { manifest } from "../src/manifest.js";

process.stdout.write(JSON.stringify(manifest(), null, 2) + "\n");
