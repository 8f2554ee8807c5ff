/**
 * The key-value store (`kv.ts`) as an app module: the default app of every subcommand, and a
 * model for your own (see `examples/` for two smaller ones).
 *
 * @module
 */
import { kvCommandHelp, wrongArguments } from "../cli/repl_parse.ts";
import { type App, type AppCommand, defineApp } from "./app.ts";
import {
  decodeKvResult,
  encodeKvOperation,
  formatKvResult,
  type KvOperation,
  KvStore,
} from "./kv.ts";

const encoder = new TextEncoder();

/** A command of the store, its arguments made into an operation by `make`. */
function kvCommand(
  name: "SET" | "GET" | "DEL" | "SIZE",
  make: (raw: readonly Uint8Array[]) => KvOperation,
): AppCommand {
  const { arity, ...help } = kvCommandHelp(name);
  return {
    name,
    ...help,
    readOnly: name === "GET" || name === "SIZE",
    encode: (_args, raw) =>
      raw.length === arity ? encodeKvOperation(make(raw)) : wrongArguments(name),
    format: (result) => formatKvResult(decodeKvResult(result)),
  };
}

/** The key-value store: SET, GET, DEL and SIZE, keys and values any bytes. */
export const kvApp: App = defineApp({
  name: "kv",
  // 2: BATCH, which version 1 answered with an error result (replicas of both would diverge).
  version: "2",
  // The status digest is computed from a snapshot when asked (ReplicaNode), so the store need not
  // keep one up to date on every SET (about 0.7 us per replica per SET). The simulator, which
  // digests after every step, makes its own stores.
  createStateMachine: () => new KvStore({ incrementalDigest: false }),
  commands: [
    kvCommand("SET", ([key, value]) => ({ command: "SET", key: key!, value: value! })),
    kvCommand("GET", ([key]) => ({ command: "GET", key: key! })),
    kvCommand("DEL", ([key]) => ({ command: "DEL", key: key! })),
    kvCommand("SIZE", () => ({ command: "SIZE" })),
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
