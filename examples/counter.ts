/**
 * A replicated counter service: named counters that only the log changes. Small enough to read
 * in a minute, and a template for your own app:
 *
 *   deno task vstamp cluster up -n 3 --app examples/counter.ts --repl
 *   > INCR visits 5
 *   (integer) 5
 *
 * Operations and results are JSON text: `{"op":"incr","name":"visits","by":5}` gives
 * `{"value":5}`, and a bad operation `{"error":"..."}`, the same on every replica.
 *
 * @module
 */
import { type ApplyContext, defineApp, type StateMachine } from "../mod.ts";

/** The largest magnitude a counter may reach: beyond it doubles lose integers. */
const VALUE_MAX = Number.MAX_SAFE_INTEGER;
/** The longest counter name, in characters. */
const NAME_LENGTH_MAX = 256;

type CounterOp =
  | { readonly op: "incr"; readonly name: string; readonly by: number }
  | { readonly op: "get"; readonly name: string }
  | { readonly op: "reset"; readonly name: string };

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

function json(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

/** The operation in `bytes`, or why it is not one: untrusted bytes never throw. */
function decode(bytes: Uint8Array): CounterOp | { readonly error: string } {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(bytes));
  } catch {
    return { error: "operation is not JSON" };
  }
  const op = value as Partial<Record<string, unknown>> | null;
  if (typeof op !== "object" || op === null) return { error: "operation is not an object" };
  if (typeof op.name !== "string" || op.name.length > NAME_LENGTH_MAX) {
    return { error: `name must be a string of at most ${NAME_LENGTH_MAX} characters` };
  }
  if (op.op === "get" || op.op === "reset") return { op: op.op, name: op.name };
  // (Not echoing the op back: a result must stay small whatever a client sends.)
  if (op.op !== "incr") return { error: 'op must be "incr", "get" or "reset"' };
  if (!Number.isSafeInteger(op.by)) return { error: "by must be an integer" };
  return { op: "incr", name: op.name, by: op.by as number };
}

/** The counters. Deterministic: it reads nothing but its state and the operation. */
export class Counters implements StateMachine {
  #values = new Map<string, number>();

  /** The counters need no context: nothing here depends on time or on who asked. */
  apply(operation: Uint8Array, _context?: ApplyContext): Uint8Array {
    const op = decode(operation);
    if ("error" in op) return json(op);
    if (op.op === "get") return this.query(operation);
    if (op.op === "reset") {
      this.#values.delete(op.name);
      return json({ value: 0 });
    }
    const value = (this.#values.get(op.name) ?? 0) + op.by;
    if (Math.abs(value) > VALUE_MAX) return json({ error: `${op.name} would overflow` });
    if (value === 0) this.#values.delete(op.name); // 0 and absent are one state.
    else this.#values.set(op.name, value);
    return json({ value });
  }

  /** GET only reads: the primary may answer it without a log entry (§6.3). */
  readOnly(operation: Uint8Array): boolean {
    const op = decode(operation);
    return !("error" in op) && op.op === "get";
  }

  query(operation: Uint8Array): Uint8Array {
    const op = decode(operation);
    if ("error" in op || op.op !== "get") return json({ error: "not a get" });
    return json({ value: this.#values.get(op.name) ?? 0 });
  }

  /** Sorted by name, so that equal states give equal bytes whatever order built them. */
  snapshot(): Uint8Array {
    return json([...this.#values].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }

  restore(snapshot: Uint8Array): void {
    const pairs: unknown = JSON.parse(decoder.decode(snapshot));
    if (
      !Array.isArray(pairs) ||
      !pairs.every((p) =>
        Array.isArray(p) && typeof p[0] === "string" && Number.isSafeInteger(p[1]) && p[1] !== 0
      )
    ) {
      throw new Error("not a counters snapshot");
    }
    this.#values = new Map(pairs as [string, number][]);
  }

  /** The snapshot itself: a small state can afford it, and it depends only on the state. */
  digest(): string {
    return decoder.decode(this.snapshot());
  }
}

/** The REPL's view of a result: `(integer) n` or `(error) message`. */
function format(result: Uint8Array): string {
  const value = JSON.parse(decoder.decode(result)) as { value?: number; error?: string };
  return value.error !== undefined ? `(error) ${value.error}` : `(integer) ${value.value}`;
}

/** The counter app: INCR, GET and RESET. */
export const app = defineApp({
  name: "counter",
  version: "1",
  createStateMachine: () => new Counters(),
  commands: [
    {
      name: "INCR",
      usage: "INCR name [by]",
      help: "Add by (default 1, may be negative) to the counter; replies with its new value.",
      example: "INCR visits 5",
      encode([name, by = "1", ...rest]) {
        if (name === undefined || rest.length > 0) return { error: "usage: INCR name [by]" };
        const n = Number(by);
        if (!/^-?\d+$/.test(by) || !Number.isSafeInteger(n)) {
          return { error: `by must be an integer, got ${by}` };
        }
        return json({ op: "incr", name, by: n });
      },
      format,
    },
    {
      name: "GET",
      usage: "GET name",
      help: "Reply with the counter's value (0 if it was never changed).",
      readOnly: true,
      encode: ([name, ...rest]) =>
        name === undefined || rest.length > 0
          ? { error: "usage: GET name" }
          : json({ op: "get", name }),
      format,
    },
    {
      name: "RESET",
      usage: "RESET name",
      help: "Set the counter back to 0.",
      encode: ([name, ...rest]) =>
        name === undefined || rest.length > 0
          ? { error: "usage: RESET name" }
          : json({ op: "reset", name }),
      format,
    },
  ],
  /** For `vstamp sim`: random commands on a few counters, so that they collide. */
  workload(random) {
    const name = `c${random.int(1, 4)}`;
    const roll = random.int(0, 9);
    const op = roll < 6
      ? { op: "incr", name, by: random.int(-3, 5) }
      : roll < 9
      ? { op: "get", name }
      : { op: "reset", name };
    return { operation: json(op) };
  },
});
