/**
 * A seeded pseudo-random number generator for the deterministic simulator.
 *
 * It is hand-written on purpose: a failing seed must replay identically forever, so the stream
 * must not change when a dependency is upgraded. The generator is xoshiro128** 1.1 (Blackman &
 * Vigna), whose 128-bit state is filled from the seed by splitmix64, as its authors recommend.
 *
 * Stream contract, pinned by known-answer tests: for a given seed the sequence of `nextUint32`
 * values never changes, and `float`, `chance` and `exponential` each consume exactly one
 * `nextUint32` whatever their argument, so changing a probability or a mean does not shift the
 * draws that follow. `int` consumes one draw per attempt (two when the range exceeds 2^32) and
 * retries only to stay unbiased.
 *
 * @module
 */

/** 2^32, the number of distinct `nextUint32` values. */
const UINT32_RANGE = 0x1_0000_0000;

/** 2^-32: scales a 32-bit draw into [0, 1). */
const UINT32_SCALE = 1 / UINT32_RANGE;

/** 2^53, the number of distinct values drawn by the wide path of `int`. */
const UINT53_RANGE = 0x20_0000_0000_0000;

/** The widest span `max - min` that `int` accepts, so that the range count stays exact. */
const INT_SPAN_LIMIT = Number.MAX_SAFE_INTEGER;

/** splitmix64's increment, the 64-bit golden ratio. */
const GOLDEN_GAMMA = 0x9e3779b97f4a7c15n;

/** splitmix64's first and second finalizer multipliers. */
const MIX_MULTIPLIER_1 = 0xbf58476d1ce4e5b9n;
const MIX_MULTIPLIER_2 = 0x94d049bb133111ebn;

/**
 * Salt mixed into a seed before it derives fork seeds, so that a fork's seed is unrelated to the
 * splitmix64 sequence that filled the parent's own state.
 */
const FORK_SALT = 0x5eed_f0a4_c0ff_ee00n;

/** 2^64 - 1, the mask that keeps BigInt arithmetic in unsigned 64-bit. */
const UINT64_MASK = 0xffff_ffff_ffff_ffffn;

/** splitmix64's finalizer: a bijection on 64-bit values with good avalanche. */
function mix64(value: bigint): bigint {
  let z = value & UINT64_MASK;
  z = ((z ^ (z >> 30n)) * MIX_MULTIPLIER_1) & UINT64_MASK;
  z = ((z ^ (z >> 27n)) * MIX_MULTIPLIER_2) & UINT64_MASK;
  return z ^ (z >> 31n);
}

/** A safe integer as an unsigned 64-bit value (two's complement for negatives). */
function toUint64(value: number, what: string): bigint {
  if (!Number.isSafeInteger(value)) {
    throw new RangeError(`Prng: ${what} must be a safe integer, got ${value}`);
  }
  return BigInt.asUintN(64, BigInt(value));
}

/** A deterministic xoshiro128** generator; see the module documentation for the contract. */
export class Prng {
  // The four 32-bit state words, kept as plain numbers (uint32 after each step) because field
  // access is cheaper than typed-array access in the hot path.
  #s0 = 0;
  #s1 = 0;
  #s2 = 0;
  #s3 = 0;
  /** The 64-bit seed this stream was built from; `fork` derives from it, never from the state. */
  #seed64 = 0n;

  /** `seed` is any safe integer; negative seeds and seeds above 2^32 give distinct streams. */
  constructor(seed: number) {
    this.#init(toUint64(seed, "seed"));
  }

  /** The next 32-bit unsigned integer of the stream: one xoshiro128** step. */
  nextUint32(): number {
    const s0 = this.#s0;
    const s1 = this.#s1;
    let s2 = this.#s2;
    let s3 = this.#s3;
    const product = Math.imul(s1, 5);
    const result = Math.imul((product << 7) | (product >>> 25), 9) >>> 0;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    this.#s1 = (s1 ^ s2) >>> 0;
    this.#s0 = (s0 ^ s3) >>> 0;
    s2 ^= t;
    this.#s2 = s2 >>> 0;
    this.#s3 = ((s3 << 11) | (s3 >>> 21)) >>> 0;
    return result;
  }

  /** A float in [0, 1) with 32 random bits, from exactly one draw. */
  float(): number {
    return this.nextUint32() * UINT32_SCALE;
  }

  /** A uniform integer in [min, max], both inclusive; unbiased (rejection sampling). */
  int(min: number, max: number): number {
    if (!Number.isSafeInteger(min) || !Number.isSafeInteger(max) || min > max) {
      throw new RangeError(`Prng.int: need safe integers with min <= max, got [${min}, ${max}]`);
    }
    const span = max - min;
    if (span > INT_SPAN_LIMIT) {
      throw new RangeError(`Prng.int: span ${span} exceeds ${INT_SPAN_LIMIT}`);
    }
    if (span < UINT32_RANGE) {
      const range = span + 1;
      if (range === UINT32_RANGE) return min + this.nextUint32();
      // Draws at or above the largest multiple of `range` would favour small results; retry them.
      const limit = UINT32_RANGE - (UINT32_RANGE % range);
      let draw = this.nextUint32();
      while (draw >= limit) draw = this.nextUint32();
      return min + (draw % range);
    }
    // Ranges wider than 2^32 take 53 bits from two draws, with the same rejection rule.
    const range = span + 1;
    const limit = UINT53_RANGE - (UINT53_RANGE % range);
    let draw = this.#nextUint53();
    while (draw >= limit) draw = this.#nextUint53();
    return min + (draw % range);
  }

  /** True with the given probability: 0 never, 1 always. Consumes one draw either way. */
  chance(probability: number): boolean {
    if (!(probability >= 0 && probability <= 1)) {
      throw new RangeError(`Prng.chance: probability must be in [0, 1], got ${probability}`);
    }
    return this.float() < probability;
  }

  /** A uniformly chosen element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError("Prng.pick: items must not be empty");
    return items[this.int(0, items.length - 1)] as T;
  }

  /**
   * An exponentially distributed value with the given mean (0 gives 0). Consumes one draw
   * either way. With 32-bit floats the largest possible value is about 22.2 times the mean.
   */
  exponential(mean: number): number {
    if (!(mean >= 0 && mean < Infinity)) {
      throw new RangeError(`Prng.exponential: mean must be finite and >= 0, got ${mean}`);
    }
    const u = this.float();
    if (mean === 0) return 0;
    // 1 - u lies in (0, 1], so the logarithm is finite.
    return -mean * Math.log(1 - u);
  }

  /** Shuffle `items` in place (Fisher–Yates); every permutation is equally likely. */
  shuffle<T>(items: T[]): void {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(0, i);
      const held = items[i] as T;
      items[i] = items[j] as T;
      items[j] = held;
    }
  }

  /**
   * An independent stream derived from this stream's original seed and `label` (any safe
   * integer) only. It does not depend on how many numbers were drawn here, so adding draws to one
   * stream never changes another. Distinct labels give distinct child seeds.
   */
  fork(label: number): Prng {
    const derived = mix64(mix64(this.#seed64 ^ FORK_SALT) ^ toUint64(label, "fork label"));
    const child = new Prng(0);
    child.#init(derived);
    return child;
  }

  /** Fill the state from a 64-bit seed with two splitmix64 outputs. */
  #init(seed64: bigint): void {
    this.#seed64 = seed64;
    const first = mix64(seed64 + GOLDEN_GAMMA);
    const second = mix64(seed64 + 2n * GOLDEN_GAMMA);
    // splitmix64 outputs are a bijection of consecutive distinct states, so `first` and `second`
    // cannot both be zero and the state is never the all-zero fixed point of xoshiro.
    this.#s0 = Number(first & 0xffff_ffffn);
    this.#s1 = Number(first >> 32n);
    this.#s2 = Number(second & 0xffff_ffffn);
    this.#s3 = Number(second >> 32n);
  }

  /** A uniform integer in [0, 2^53) from two draws: 21 high bits, then 32 low bits. */
  #nextUint53(): number {
    const high = this.nextUint32() >>> 11;
    return high * UINT32_RANGE + this.nextUint32();
  }
}
