// Environments: visual themes of the same tabletop (table material, background, lighting, camera
// pose). Physics and task geometry are identical across themes, so a policy trained in one can be
// fine-tuned or evaluated in another. Pure data, exported in the manifest.

export const ENVIRONMENTS = {
  studio: {
    description: "light oak table, pale grey-blue backdrop, soft warm key light, camera in front and above",
    table: { color: 0xc8a27a, pattern: "wood", pattern_color: 0xa57c55 },
    background: { color: 0xd9e2ec, floor: 0x9aa5b1 },
    lights: { ambient: 0.55, ambient_sky: 0xffffff, ambient_ground: 0x8d7b68, key: 1.6, key_color: 0xfff1dc, key_dir: [0.4, 0.6, 1.0] },
    camera: { pos: [0.5, 0.0, 0.7], look_at: [-0.02, 0.0, 0.02], fov: 44 },
  },
  workshop: {
    description: "dark slate table with a tile grid, deep navy backdrop, cool dim light from the side, camera from the front-left",
    table: { color: 0x4a5560, pattern: "tiles", pattern_color: 0x3a434c },
    background: { color: 0x1b2433, floor: 0x2b2b2b },
    lights: { ambient: 0.4, ambient_sky: 0xbfd7ff, ambient_ground: 0x202020, key: 1.9, key_color: 0xd6e6ff, key_dir: [-0.2, 0.9, 0.7] },
    camera: { pos: [0.42, 0.34, 0.62], look_at: [-0.02, 0.0, 0.02], fov: 47 },
  },
  kitchen: {
    description: "white laminate counter with speckles, warm beige wall, bright overhead light, higher camera",
    table: { color: 0xeeeeea, pattern: "speckle", pattern_color: 0xb8b8b0 },
    background: { color: 0xe8d3b0, floor: 0xc9b28c },
    lights: { ambient: 0.7, ambient_sky: 0xfff6e6, ambient_ground: 0x9c8c70, key: 1.2, key_color: 0xffffff, key_dir: [0.1, -0.2, 1.0] },
    camera: { pos: [0.36, -0.12, 0.8], look_at: [-0.03, 0.0, 0.02], fov: 46 },
  },
};

export function environmentManifest() {
  return Object.entries(ENVIRONMENTS).map(([name, e]) => ({ name, description: e.description, camera: e.camera }));
}
