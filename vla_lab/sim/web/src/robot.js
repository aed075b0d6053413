// The robot: a free-floating parallel-jaw gripper driven by delta end-effector actions.
// Single source of the action scaling, limits and gripper geometry (exported in the manifest).

export const ROBOT = {
  name: "parallel_jaw_ee",
  action_names: ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"],
  // An action component of +/-1 moves the tool centre point by at most this much per step (metres).
  max_translation_per_step: 0.02,
  // An action component of +/-1 changes roll/pitch/yaw by at most this much per step (radians).
  max_rotation_per_step: 0.1,
  // gripper in [0, 1]: commanded jaw opening as a fraction of max_width (1 = open, 0 = closed).
  gripper_convention: "0_closed_1_open",
  max_width: 0.085,
  // The jaws move at most this much per step, so a full close takes about 6 steps.
  gripper_speed_per_step: 0.015,
  // Tool-centre-point workspace in the base frame (metres).
  workspace: { x: [-0.3, 0.3], y: [-0.38, 0.38], z: [0.021, 0.35] },
  // Roll and pitch are limited so the jaws can never point upwards.
  orientation_limits: { roll: [-0.6, 0.6], pitch: [-0.6, 0.6], yaw: [-Math.PI, Math.PI] },
  home: { pos: [0.0, 0.0, 0.2], ori: [0.0, 0.0, 0.0], width: 0.085 },
  finger: { half_x: 0.01, half_y: 0.006, half_z: 0.025, offset_z: 0.005 },
  palm: { half_x: 0.02, half_y: 0.065, half_z: 0.01, offset_z: 0.04 },
  control_dt: 0.05,
  physics_substeps: 3,
};

// Orientation convention for ee_ori: [roll, pitch, yaw] in radians, R = Rz(yaw) Ry(pitch) Rx(roll)
// (rotations about the fixed base axes x, then y, then z). At [0, 0, 0] the jaws point straight down
// (-z) and open along the base y axis.
export const ORIENTATION_CONVENTION = "rpy_extrinsic_xyz_rad";
