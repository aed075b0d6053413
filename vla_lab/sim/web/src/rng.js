// Seeded pseudo-random numbers. Every random choice in the simulator goes through one of these so
// that a seed fully determines an episode (Math.random would break reproducibility).

export class Rng {
  constructor(seed) {
    // splitmix32 on the seed decorrelates neighbouring seeds (seed 1 and 2 give unrelated streams).
    let s = (Number(seed) >>> 0) ^ 0x9e3779b9;
    s = Math.imul(s ^ (s >>> 16), 0x85ebca6b);
    s = Math.imul(s ^ (s >>> 13), 0xc2b2ae35);
    this.state = (s ^ (s >>> 16)) >>> 0;
  }

  // mulberry32: tiny, fast and good enough for layout sampling.
  next() {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  uniform(lo, hi) {
    return lo + (hi - lo) * this.next();
  }

  int(n) {
    return Math.min(n - 1, Math.floor(this.next() * n));
  }

  choice(arr) {
    return arr[this.int(arr.length)];
  }

  shuffle(arr) {
    const out = arr.slice();
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  }

  // A child stream, so that adding a draw in one subsystem (e.g. lighting) does not shift the
  // layout of every later episode component.
  fork(tag) {
    let h = this.state ^ 0x7f4a7c15;
    for (let i = 0; i < tag.length; i++) h = Math.imul(h ^ tag.charCodeAt(i), 0x01000193);
    return new Rng(h >>> 0);
  }
}
