/**
 * The key-value store (`kv.ts`) as an app module: the default app of every subcommand, and a
 * model for your own (see `examples/` for two smaller ones).
 *
 * @module
 */
import { wrongArguments } from "../cli/repl_parse.ts";
import { kvCommandHelp } from "../cli/repl_parse.ts";
import { type App, type AppCommand, defineApp } from "./app.ts";
import {
  decodeKvResult,
  encodeKvOperation,
  formatKvResult,
  type KvOperation,
  KvStore,
} from "./kv.ts";

const encoder = new TextEncoder();

/** A command of the store: `arity` arguments, made into an operation by `make`. */
function kvCommand(
  name: "SET" | "GET" | "DEL" | "SIZE",
  arity: number,
  make: (raw: readonly Uint8Array[]) => KvOperation,
): AppCommand {
  return {
    name,
    ...kvCommandHelp(name),
    readOnly: name === "GET" || name === "SIZE",
    encode: (_args, raw) =>
      raw.length === arity ? encodeKvOperation(make(raw)) : wrongArguments(name),
    format: (result) => formatKvResult(decodeKvResult(result)),
  };
}

/** The key-value store: SET, GET, DEL and SIZE, keys and values any bytes. */
export const kvApp: App = defineApp({
  name: "kv",
  version: "1",
  // The status digest is computed from a snapshot when asked (ReplicaNode), so the store need not
  // keep one up to date on every SET (about 0.7 us per replica per SET). The simulator, which
  // digests after every step, makes its own stores.
  createStateMachine: () => new KvStore({ incrementalDigest: false }),
  commands: [
    kvCommand("SET", 2, ([key, value]) => ({ command: "SET", key: key!, value: value! })),
    kvCommand("GET", 1, ([key]) => ({ command: "GET", key: key! })),
    kvCommand("DEL", 1, ([key]) => ({ command: "DEL", key: key! })),
    kvCommand("SIZE", 0, () => ({ command: "SIZE" })),
  ],
  workload(random) {
    const key = encoder.encode(`k${random.int(1, 8)}`);
    const roll = random.int(0, 9);
    const operation: KvOperation = roll < 4
      ? { command: "GET", key }
      : roll < 8
      ? { command: "SET", key, value: encoder.encode(`v${random.int(0, 999)}`) }
      : roll < 9
      ? { command: "DEL", key }
      : { command: "SIZE" };
    return { operation: encodeKvOperation(operation) };
  },
});
