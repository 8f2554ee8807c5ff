/**
 * The Prometheus text exposition format (version 0.0.4): `# HELP` and `# TYPE` before each
 * metric's samples, label values escaped. Built once per scrape, never on the replica's hot path.
 *
 * @module
 */
import type { PromHistogram } from "./histogram.ts";

export type Labels = Readonly<Record<string, string>>;
export type MetricType = "counter" | "gauge" | "histogram";

/** The media type a scraper expects for this format. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const NAME_PATTERN = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_PATTERN = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Collects metrics, each with its help and type, and renders them in the text format. */
export class PrometheusText {
  readonly #lines: string[] = [];
  readonly #names = new Set<string>();
  readonly #common: Labels;

  /** `common` labels go on every sample (a replica's `replica="i"`). */
  constructor(common: Labels = {}) {
    this.#common = common;
  }

  counter(name: string, help: string, samples: readonly (readonly [Labels, number])[]): this {
    return this.#metric(name, help, "counter", samples);
  }

  gauge(name: string, help: string, samples: readonly (readonly [Labels, number])[]): this {
    return this.#metric(name, help, "gauge", samples);
  }

  histogram(name: string, help: string, samples: readonly (readonly [Labels, PromHistogram])[]) {
    this.#head(name, help, "histogram");
    for (const [labels, histogram] of samples) {
      const cumulative = histogram.cumulative();
      histogram.bounds.forEach((bound, i) => {
        this.#sample(`${name}_bucket`, { ...labels, le: formatValue(bound) }, cumulative[i]!);
      });
      this.#sample(`${name}_bucket`, { ...labels, le: "+Inf" }, cumulative[cumulative.length - 1]!);
      this.#sample(`${name}_sum`, labels, histogram.sum);
      this.#sample(`${name}_count`, labels, histogram.count);
    }
    return this;
  }

  render(): string {
    return this.#lines.join("\n") + "\n";
  }

  #metric(
    name: string,
    help: string,
    type: MetricType,
    samples: readonly (readonly [Labels, number])[],
  ): this {
    this.#head(name, help, type);
    for (const [labels, value] of samples) this.#sample(name, labels, value);
    return this;
  }

  #head(name: string, help: string, type: MetricType): void {
    // Our own names: a bad one is a bug, not input.
    if (!NAME_PATTERN.test(name) || this.#names.has(name)) {
      throw new Error(`bad or repeated metric name ${name}`);
    }
    this.#names.add(name);
    this.#lines.push(`# HELP ${name} ${help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`);
    this.#lines.push(`# TYPE ${name} ${type}`);
  }

  #sample(name: string, labels: Labels, value: number): void {
    const all = { ...this.#common, ...labels };
    const pairs = Object.entries(all).map(([key, text]) => {
      if (!LABEL_PATTERN.test(key)) throw new Error(`bad label name ${key}`);
      return `${key}="${text.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`;
    });
    const labelText = pairs.length === 0 ? "" : `{${pairs.join(",")}}`;
    this.#lines.push(`${name}${labelText} ${formatValue(value)}`);
  }
}

/** A sample value as Prometheus writes it: integers exactly, `+Inf`, `-Inf`, `NaN`. */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}
