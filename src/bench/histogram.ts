/**
 * A latency histogram in the style of HdrHistogram: log-linear buckets with a fixed relative
 * precision, so recording is O(1) and memory is constant however many samples arrive.
 *
 * @module
 */

/** Sub-buckets per power of two: values are kept to within 1/128 (< 0.8%). */
const SUB_BUCKETS = 128;
const SUB_BUCKET_BITS = 7;
const HALF = SUB_BUCKETS / 2;
/** The largest recordable value, in microseconds (100 s); larger values are clamped. */
export const HISTOGRAM_VALUE_US_MAX = 100_000_000;

export class Histogram {
  readonly #counts: Float64Array;
  #total = 0;
  #max = 0;
  #min = Infinity;
  #sum = 0;

  constructor() {
    this.#counts = new Float64Array(this.#index(HISTOGRAM_VALUE_US_MAX) + 1);
  }

  get count(): number {
    return this.#total;
  }

  get maxUs(): number {
    return this.#max;
  }

  get meanUs(): number {
    return this.#total === 0 ? 0 : this.#sum / this.#total;
  }

  /** Record one value in microseconds. */
  record(valueUs: number): void {
    const value = Math.min(HISTOGRAM_VALUE_US_MAX, Math.max(0, Math.round(valueUs)));
    this.#counts[this.#index(value)]!++;
    this.#total++;
    this.#sum += value;
    if (value > this.#max) this.#max = value;
    if (value < this.#min) this.#min = value;
  }

  /** Add every sample of `other`. */
  merge(other: Histogram): void {
    for (let i = 0; i < this.#counts.length; i++) this.#counts[i]! += other.#counts[i]!;
    this.#total += other.#total;
    this.#sum += other.#sum;
    this.#max = Math.max(this.#max, other.#max);
    this.#min = Math.min(this.#min, other.#min);
  }

  /** The value at `quantile` (0..1), in microseconds: the upper bound of its bucket. */
  percentileUs(quantile: number): number {
    if (this.#total === 0) return 0;
    const rank = Math.max(1, Math.ceil(quantile * this.#total));
    let seen = 0;
    for (let i = 0; i < this.#counts.length; i++) {
      seen += this.#counts[i]!;
      if (seen >= rank) return Math.min(this.#max, this.#upperBound(i));
    }
    return this.#max;
  }

  /**
   * Values below SUB_BUCKETS have a bucket each. Above, a value v with
   * 2^(k) <= v < 2^(k+1) (k >= 7) is kept as its top 7 bits: exponent e = k - 6 and mantissa
   * m = floor(v / 2^e) in [64, 128); each exponent adds 64 buckets.
   */
  #index(value: number): number {
    if (value < SUB_BUCKETS) return value;
    const exponent = Math.floor(Math.log2(value)) - (SUB_BUCKET_BITS - 1);
    const mantissa = Math.floor(value / 2 ** exponent);
    return SUB_BUCKETS + (exponent - 1) * HALF + (mantissa - HALF);
  }

  #upperBound(index: number): number {
    if (index < SUB_BUCKETS) return index;
    const exponent = Math.floor((index - SUB_BUCKETS) / HALF) + 1;
    const mantissa = ((index - SUB_BUCKETS) % HALF) + HALF;
    return (mantissa + 1) * 2 ** exponent - 1;
  }
}
