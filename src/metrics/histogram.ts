/**
 * A fixed-bucket histogram for the Prometheus exposition format: cumulative counts at fixed upper
 * bounds (`le`), a sum and a count.
 *
 * Why not `src/bench/histogram.ts`: its log-linear buckets answer percentiles to within 0.8%, but
 * their edges fall between Prometheus's `le` bounds, so a cumulative count at `le="0.001"` would
 * be approximate. Prometheus sums buckets across replicas and over time, which needs the same
 * exact bounds everywhere; 17 numbers per histogram also keep a scrape small.
 *
 * @module
 */

/**
 * Upper bounds in seconds, from 50 µs (a warm request on one machine) to 10 s (a view change
 * under load, a stalled disk): about three buckets per decade.
 */
export const DURATION_BUCKETS_SECONDS: readonly number[] = [
  0.00005,
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

export class PromHistogram {
  readonly bounds: readonly number[];
  /** Per bucket, the samples in it alone (not cumulative); the last one is above every bound. */
  readonly #counts: Float64Array;
  #sum = 0;
  #count = 0;

  constructor(bounds: readonly number[] = DURATION_BUCKETS_SECONDS) {
    for (let i = 1; i < bounds.length; i++) {
      if (!(bounds[i]! > bounds[i - 1]!)) throw new Error("histogram bounds must increase");
    }
    this.bounds = bounds;
    this.#counts = new Float64Array(bounds.length + 1);
  }

  /** Record one value (seconds); a value equal to a bound belongs to that bound's bucket. */
  observe(value: number): void {
    if (!Number.isFinite(value)) return;
    const v = Math.max(0, value);
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && v > bounds[i]!) i++;
    this.#counts[i]!++;
    this.#sum += v;
    this.#count++;
  }

  get count(): number {
    return this.#count;
  }

  get sum(): number {
    return this.#sum;
  }

  /** Cumulative counts per bound, then the total for `+Inf`. */
  cumulative(): number[] {
    const out: number[] = [];
    let running = 0;
    for (const count of this.#counts) out.push(running += count);
    return out;
  }
}
