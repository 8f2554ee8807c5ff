/**
 * An app module: what vstamp needs to run a service and talk to it. The module exports an `App`
 * (as `app` or as its default export): a factory for the service's `StateMachine`, the commands
 * a person can type in the REPL, and optionally a workload for the simulator. `vstamp server`,
 * `cluster up`, `repl` and `sim` take `--app <module>`; the key-value store (`kv_app.ts`) is the
 * default.
 *
 * Nothing here trusts the module: `loadApp` checks its shape and that a fresh state machine can
 * be made and digested, with one-line errors, and `guardStateMachine` turns a throwing `apply`
 * into a deterministic error result, so that a bug in an app never crashes a replica.
 *
 * @module
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { ApplyContext, StateMachine } from "./state_machine.ts";

/**
 * One command of an app's REPL. The REPL splits a line into arguments (redis-cli quoting), finds
 * the command by its name (case-insensitive), and sends what `encode` returns.
 */
export interface AppCommand {
  /** The word that starts the command; matched without regard to ASCII case. */
  readonly name: string;
  /** How to call it, e.g. `TRANSFER from to amount`. */
  readonly usage: string;
  /**
   * What it does: the first line is the summary `help` lists; `help <name>` shows all of it.
   */
  readonly help: string;
  /** An example line for `help <name>`. */
  readonly example?: string;
  /** Whether the command only reads (for documentation; the state machine's `readOnly` decides). */
  readonly readOnly?: boolean;
  /**
   * The operation for these arguments (after the name), or an error to show instead of sending
   * anything. `args` are the arguments as text (invalid UTF-8 replaced), `raw` the same
   * arguments as the bytes typed (`\xHH` escapes give any byte), for apps that take binary.
   */
  encode(
    args: readonly string[],
    raw: readonly Uint8Array[],
  ): Uint8Array | { readonly error: string };
  /** The result of the command's operation as the REPL prints it. Must not throw. */
  format(result: Uint8Array): string;
}

/** The random numbers a workload draws from: the simulator's seeded generator. */
export interface WorkloadRandom {
  /** An integer from `min` to `max`, both included. */
  int(min: number, max: number): number;
  /** True with probability `probability`. */
  chance(probability: number): boolean;
  /** One of `items`, which must not be empty. */
  pick<T>(items: readonly T[]): T;
}

/** One operation a workload draws. */
export interface WorkloadOperation {
  /** The operation's bytes, as a client would send them. */
  readonly operation: Uint8Array;
}

/** A service vstamp can replicate: see the module documentation and the README. */
export interface App {
  /** A short name (printable ASCII, no spaces, at most `APP_NAME_BYTES_MAX` bytes). */
  readonly name: string;
  /**
   * The version of its operations and state. Replicas of one group must run the same name and
   * version: they refuse each other's connections otherwise.
   */
  readonly version: string;
  /**
   * A fresh, empty state machine. Called once per replica process (and by the simulator for
   * every replica it starts and for its model), so every call must give an equal state.
   */
  createStateMachine(): StateMachine;
  /** The REPL's commands (HELP and QUIT are the REPL's own). */
  readonly commands: readonly AppCommand[];
  /**
   * Draws a random operation for `vstamp sim` (and `bench`): the simulator has no other way to
   * exercise a service it does not know. Without it, `sim --app` refuses the app.
   */
  workload?(random: WorkloadRandom): WorkloadOperation;
}

/** The longest app name or version, in bytes: they travel in every connection's hello. */
export const APP_NAME_BYTES_MAX = 48;

/** A module that cannot be used as an app; the message is one line naming what is wrong. */
export class AppError extends Error {
  /** "AppError". */
  override name = "AppError";
}

/**
 * The first bytes of the result the guard returns when `apply` threw: `error: apply threw: `
 * followed by the error's message. A REPL prints such a result as `(error) apply threw: ...`.
 */
export const APPLY_THREW_PREFIX = "error: apply threw: ";
/** How many characters of a thrown error's message the error result keeps. */
const THROWN_MESSAGE_CHARS_MAX = 200;
/**
 * The largest result the guard passes on (1 MiB, as the key-value store's largest value): every
 * replica keeps the last result of each client in its client table, and a reply must fit in a
 * frame, so a larger one becomes the error result `error: apply threw: result of N bytes ...`.
 */
export const APP_RESULT_BYTES_MAX = 1024 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Why `value` is not an App, or undefined when it is one. */
function appProblem(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null) return "is not an object";
  const app = value as Record<string, unknown>;
  for (const field of ["name", "version"]) {
    const text = app[field];
    if (typeof text !== "string" || text === "") return `has no string \`${field}\``;
    if (!/^[\x21-\x7e]+$/.test(text) || text.length > APP_NAME_BYTES_MAX) {
      return `\`${field}\` must be 1 to ${APP_NAME_BYTES_MAX} printable ASCII characters, ` +
        `got ${JSON.stringify(text.slice(0, 60))}`;
    }
  }
  if (typeof app.createStateMachine !== "function") {
    return "has no function `createStateMachine`";
  }
  if (app.workload !== undefined && typeof app.workload !== "function") {
    return "`workload` is not a function";
  }
  if (!Array.isArray(app.commands)) return "has no array `commands`";
  const names = new Set<string>();
  for (const [index, command] of (app.commands as unknown[]).entries()) {
    if (typeof command !== "object" || command === null) {
      return `commands[${index}] is not an object`;
    }
    const c = command as Record<string, unknown>;
    for (const field of ["name", "usage", "help"]) {
      if (typeof c[field] !== "string" || c[field] === "") {
        return `commands[${index}] has no string \`${field}\``;
      }
    }
    for (const field of ["encode", "format"]) {
      if (typeof c[field] !== "function") return `commands[${index}] has no function \`${field}\``;
    }
    const name = (c.name as string).toUpperCase();
    if (!/^[\x21-\x7e]+$/.test(name)) {
      return `commands[${index}]: the name must be printable ASCII without spaces`;
    }
    if (name === "HELP" || name === "QUIT" || name === "EXIT") {
      return `commands[${index}]: ${name} is the REPL's own command`;
    }
    if (names.has(name)) return `two commands are named ${name}`;
    names.add(name);
  }
  return undefined;
}

/**
 * Checks that `app` has the shape of an App and returns it: a module that builds its app with
 * `defineApp` fails where it is defined, with a message naming the field.
 */
export function defineApp(app: App): App {
  const problem = appProblem(app);
  if (problem !== undefined) throw new AppError(`app ${problem}`);
  return app;
}

/** The name and version as one word (`counter@1`), as the hello and error messages show them. */
export function appTag(app: Pick<App, "name" | "version">): string {
  return `${app.name}@${app.version}`;
}

function messageOf(error: unknown, allLines = false): string {
  const text = error instanceof Error ? error.message : String(error);
  // A load error's later lines say where (`at file:///…:1:21`); a throw's first line is its own.
  const line = allLines ? text.replace(/\s*\n\s*/g, " ").trim() : text.split("\n", 1)[0] ?? "";
  return line.length > THROWN_MESSAGE_CHARS_MAX
    ? `${line.slice(0, THROWN_MESSAGE_CHARS_MAX)}...`
    : line;
}

/**
 * Loads the app module at `specifier`: a path (relative to the working directory) or a file URL.
 * The module exports the App as `app` or as its default export. Throws an AppError, one line
 * naming the specifier, when the module cannot be loaded, exports no App, or its state machine
 * cannot be made or digested.
 */
export async function loadApp(specifier: string): Promise<App> {
  const where = `--app ${specifier}`;
  let url: string;
  try {
    url = /^[a-z][a-z0-9+.-]*:/i.test(specifier) && !/^[a-z]:[\\/]/i.test(specifier)
      ? new URL(specifier).href
      : pathToFileURL(resolve(specifier)).href;
  } catch {
    throw new AppError(`${where}: not a path or URL`);
  }
  if (url.startsWith("file:")) {
    try {
      await Deno.stat(new URL(url));
    } catch {
      throw new AppError(`${where}: no such file`);
    }
  }
  let module: Record<string, unknown>;
  try {
    module = await import(url);
  } catch (error) {
    throw new AppError(`${where}: cannot load the module: ${messageOf(error, true)}`);
  }
  const app = module.app ?? module.default;
  if (app === undefined) {
    throw new AppError(
      `${where}: the module exports no app (export an App as \`app\` or as the default export)`,
    );
  }
  let problem: string | undefined;
  try {
    problem = appProblem(app);
  } catch (error) {
    // A getter that throws, a Proxy: the shape cannot be read.
    problem = `cannot be read: ${messageOf(error)}`;
  }
  if (problem !== undefined) throw new AppError(`${where}: the exported app ${problem}`);
  checkStateMachine(app as App, where);
  return app as App;
}

/** Make a state machine and digest it once, so that an app broken at the root fails at start. */
export function checkStateMachine(app: App, where: string = `app ${appTag(app)}`): void {
  let machine: unknown;
  try {
    machine = app.createStateMachine();
  } catch (error) {
    throw new AppError(`${where}: createStateMachine() threw: ${messageOf(error)}`);
  }
  if (typeof machine !== "object" || machine === null) {
    throw new AppError(`${where}: createStateMachine() did not return an object`);
  }
  const m = machine as Record<string, unknown>;
  for (const method of ["apply", "digest", "snapshot", "restore"]) {
    if (typeof m[method] !== "function") {
      throw new AppError(`${where}: its state machine has no method \`${method}\``);
    }
  }
  let digest: unknown;
  try {
    digest = (machine as StateMachine).digest();
  } catch (error) {
    throw new AppError(`${where}: digest() threw: ${messageOf(error)}`);
  }
  if (typeof digest !== "string") throw new AppError(`${where}: digest() is not a string`);
  // Snapshot and restore, on the empty state: a machine that cannot would stop at its first
  // checkpoint or state transfer, long after the start.
  try {
    const copy = app.createStateMachine();
    copy.restore((machine as StateMachine).snapshot());
    if (copy.digest() !== digest) {
      throw new Error(`the restored state's digest ${copy.digest()} is not ${digest}`);
    }
  } catch (error) {
    throw new AppError(
      `${where}: restore(snapshot()) of the empty state failed: ${messageOf(error)}`,
    );
  }
}

/** `result`, if it is bytes of at most `APP_RESULT_BYTES_MAX`; else the guard's error result. */
function checkedResult(result: unknown, method: string): Uint8Array {
  if (!(result instanceof Uint8Array)) {
    return applyThrewResult(new Error(`${method} did not return a Uint8Array`));
  }
  if (result.byteLength > APP_RESULT_BYTES_MAX) {
    return applyThrewResult(
      new Error(
        `result of ${result.byteLength} bytes, over the ${APP_RESULT_BYTES_MAX} a reply may carry`,
      ),
    );
  }
  return result;
}

/** The error result the guard gives for a throw in `apply` or `query`. */
export function applyThrewResult(error: unknown): Uint8Array {
  return encoder.encode(`${APPLY_THREW_PREFIX}${messageOf(error)}`);
}

/** The message of a guard's error result, or undefined if `result` is not one. */
export function applyThrewMessage(result: Uint8Array): string | undefined {
  const prefix = encoder.encode(APPLY_THREW_PREFIX);
  if (result.length < prefix.length || prefix.some((byte, i) => result[i] !== byte)) {
    return undefined;
  }
  return decoder.decode(result.subarray(prefix.length));
}

/**
 * `machine` with its `apply` and `query` made total: a throw becomes the result
 * `error: apply threw: <message>` (see `APPLY_THREW_PREFIX`), and a throwing `readOnly` means
 * "not read-only". An app whose `apply` throws deterministically (the same input, the same state,
 * the same throw) then gives the same result on every replica; but whatever `apply` changed
 * before it threw stays changed, so a throw is a bug to fix, not a way to reject an operation.
 * The snapshot methods are passed through unchanged (`restore` throwing is part of the contract).
 */
export function guardStateMachine(machine: StateMachine): StateMachine {
  const guarded: StateMachine = {
    apply(operation: Uint8Array, context: ApplyContext): Uint8Array {
      try {
        return checkedResult(machine.apply(operation, context), "apply");
      } catch (error) {
        return applyThrewResult(error);
      }
    },
    digest: () => machine.digest(),
    snapshot: () => machine.snapshot(),
    restore: (snapshot) => machine.restore(snapshot),
  };
  if (machine.readOnly !== undefined && machine.query !== undefined) {
    guarded.readOnly = (operation) => {
      try {
        return machine.readOnly!(operation) === true;
      } catch {
        return false;
      }
    };
    guarded.query = (operation) => {
      try {
        return checkedResult(machine.query!(operation), "query");
      } catch (error) {
        return applyThrewResult(error);
      }
    };
  }
  if (machine.beginSnapshot !== undefined) {
    guarded.beginSnapshot = (target) => machine.beginSnapshot!(target);
  }
  if (machine.beginRestore !== undefined) guarded.beginRestore = () => machine.beginRestore!();
  return guarded;
}

/** The text the REPL prints for `result`: the guard's error, or the command's own format. */
export function formatResult(command: AppCommand, result: Uint8Array): string {
  const threw = applyThrewMessage(result);
  if (threw !== undefined) return `(error) apply threw: ${threw}`;
  try {
    return command.format(result);
  } catch (error) {
    return `(error) ${command.name}: cannot format the result: ${messageOf(error)}`;
  }
}
