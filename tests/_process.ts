/**
 * Helpers for tests that run real `vstamp` processes: a local cluster (`cluster up`), single
 * servers, one-shot commands, and polling with a deadline instead of sleeping.
 *
 * Every process is started with `Deno.execPath()` on this repository's `main.ts`, with the same
 * permissions as `deno task vstamp`, and in a temporary directory so that nothing lands in the
 * working tree. Everything binds port 0, so these tests can run in parallel with any others.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { loadConfig } from "../src/config.ts";
import { collectStatus, type StatusRow } from "../src/cli/status.ts";
import { RUN_PERMISSIONS } from "../src/cli/cluster.ts";

/** The CLI entry point, as an absolute path. */
export const MAIN_PATH: string = fileURLToPath(new URL("../main.ts", import.meta.url));

/** Polling interval of `waitFor`. */
const POLL_MS = 25;
/** How long `cluster up` may take to print its table. */
const CLUSTER_START_TIMEOUT_MS = 30_000;
/** How long a process gets to stop after SIGTERM before it is killed. */
const STOP_TIMEOUT_MS = 8_000;
/** How long a one-shot command may run. */
const RUN_TIMEOUT_MS = 20_000;
/** Output kept per stream for diagnostics. */
const OUTPUT_CHARS_MAX = 64 * 1024;

/** The arguments of `deno` that run `vstamp <args>`. */
export function vstampArgs(args: readonly string[]): string[] {
  return ["run", ...RUN_PERMISSIONS, MAIN_PATH, ...args];
}

/**
 * Polls `condition` every few tens of milliseconds until it returns a truthy value, which it
 * returns; throws after `timeoutMs`, naming what was awaited and the last value or error seen.
 */
export async function waitFor<T>(
  condition: () => T | Promise<T>,
  timeoutMs: number,
  describe: string | (() => string),
  pollMs = POLL_MS,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await condition();
      if (value) return value as NonNullable<T>;
      last = value;
    } catch (error) {
      last = error;
    }
    if (Date.now() >= deadline) {
      const what = typeof describe === "string" ? describe : describe();
      const seen = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${seen})`);
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

/** Whether a process no longer runs: no such pid, or a zombie nobody has reaped yet. */
export function processGone(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return true;
    throw error;
  }
  try {
    // /proc/<pid>/stat: "pid (comm) state ..."; comm may hold spaces and parentheses.
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "Z";
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return true; // Gone between the two looks.
    if (!(error instanceof Deno.errors.NotCapable)) throw error;
  }
  // Deno lets only --allow-all read /proc; the suite runs with vstamp's permissions. ps can.
  const output = new Deno.Command("ps", { args: ["-o", "stat=", "-p", String(pid)] })
    .outputSync();
  const state = new TextDecoder().decode(output.stdout).trim();
  return state === "" || state.startsWith("Z");
}

/** Sends a signal to a process, ignoring one that is already gone. */
export function signal(pid: number, sig: Deno.Signal): void {
  try {
    Deno.kill(pid, sig);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

/**
 * Sends a signal to a child process unless it has exited: unlike `signal(pid)`, this never hits
 * another process that reused the pid after the child was reaped.
 */
export function signalChild(process: Deno.ChildProcess, sig: Deno.Signal): void {
  try {
    process.kill(sig);
  } catch (error) {
    if (!(error instanceof TypeError) && !(error instanceof Deno.errors.NotFound)) throw error;
  }
}

/** Collects a byte stream as text in the background, keeping the last `OUTPUT_CHARS_MAX`. */
export class OutputCollector {
  text = "";
  readonly done: Promise<void>;
  #listeners: (() => void)[] = [];

  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = (async () => {
      const decoder = new TextDecoder();
      try {
        for await (const chunk of stream) {
          this.text += decoder.decode(chunk, { stream: true });
          if (this.text.length > OUTPUT_CHARS_MAX) this.text = this.text.slice(-OUTPUT_CHARS_MAX);
          for (const listener of this.#listeners) listener();
        }
      } catch {
        // The process is gone.
      }
      for (const listener of this.#listeners) listener();
    })();
  }

  /** Resolves when the text contains `needle`; rejects at end of stream or after `timeoutMs`. */
  waitForText(needle: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      let finished = false;
      const check = (ended: boolean) => {
        if (finished) return;
        if (this.text.includes(needle)) {
          finished = true;
        } else if (ended) {
          finished = true;
          reject(new Error(`output ended without ${JSON.stringify(needle)}:\n${this.text}`));
          return;
        } else {
          return;
        }
        clearTimeout(timer);
        this.#listeners = this.#listeners.filter((l) => l !== listener);
        resolve();
      };
      const listener = () => check(false);
      const timer = setTimeout(() => {
        if (finished) return;
        finished = true;
        this.#listeners = this.#listeners.filter((l) => l !== listener);
        reject(new Error(`no ${JSON.stringify(needle)} within ${timeoutMs} ms:\n${this.text}`));
      }, timeoutMs);
      this.#listeners.push(listener);
      this.done.then(() => check(true));
      check(false);
    });
  }
}

/** A running process started by these helpers. */
export interface RunningProcess {
  readonly process: Deno.ChildProcess;
  /** Its stdout and stderr so far (the tail, for diagnostics). */
  output(): { stdout: string; stderr: string };
  /** SIGTERM, then SIGKILL after a deadline; waits for the exit. Idempotent. */
  stop(): Promise<Deno.CommandStatus>;
}

function spawnVstamp(args: readonly string[], cwd: string) {
  const process = new Deno.Command(Deno.execPath(), {
    args: vstampArgs(args),
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new OutputCollector(process.stdout);
  const stderr = new OutputCollector(process.stderr);
  let stopping: Promise<Deno.CommandStatus> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      signalChild(process, "SIGTERM");
      const timer = setTimeout(() => signalChild(process, "SIGKILL"), STOP_TIMEOUT_MS);
      try {
        const status = await process.status;
        await Promise.all([stdout.done, stderr.done]);
        return status;
      } finally {
        clearTimeout(timer);
      }
    })();
    return stopping;
  };
  return { process, stdout, stderr, stop };
}

/** A local group started with `vstamp cluster up`. */
export interface Cluster extends RunningProcess {
  /** The temporary directory holding the configuration and the data; removed by `stop`. */
  readonly dir: string;
  readonly configPath: string;
  /** Replica i keeps its data in `${dataDir}/replica-${i}`. */
  readonly dataDir: string;
  readonly addresses: readonly string[];
  /** The pid of each replica's server process, from the table `cluster up` prints. */
  readonly pids: readonly number[];
  /** The data directory of replica `index`. */
  replicaDataDir(index: number): string;
  /** SIGKILL the server process of replica `index` and wait until it is gone. */
  killReplica(index: number): Promise<void>;
}

/** Parses the PID column of the table `cluster up` prints (INDEX | ADDRESS | PID | ...). */
export function parseClusterTable(text: string, n: number): number[] {
  const pids: number[] = [];
  for (const line of text.split("\n")) {
    const cells = line.split("|").map((cell) => cell.trim());
    // "| 0 | 127.0.0.1:1234 | 4321 | yes | ..." splits into ["", "0", address, pid, ...].
    if (cells.length < 4 || !/^\d+$/.test(cells[1]!)) continue;
    pids[Number(cells[1])] = Number(cells[3]);
  }
  if (pids.length !== n || pids.some((pid) => !Number.isSafeInteger(pid) || pid <= 0)) {
    throw new Error(`cannot read ${n} pids from the cluster table:\n${text}`);
  }
  return pids;
}

/**
 * Runs `vstamp cluster up -n <n>` in a new temporary directory and returns once it printed
 * "configuration written" (every replica reachable and normal). Call `stop` in a `finally`.
 */
export async function startCluster(
  n: number,
  options: { sync?: "fsync" | "none"; tls?: boolean; args?: readonly string[] } = {},
): Promise<Cluster> {
  const dir = await Deno.makeTempDir({ prefix: "vstamp-test-" });
  const configPath = `${dir}/cluster.yaml`;
  const dataDir = `${dir}/data`;
  const args = ["cluster", "up", "-n", String(n), "--config-out", configPath];
  args.push("--data-dir", dataDir, "--sync", options.sync ?? "fsync");
  if (options.tls === true) args.push("--tls");
  args.push(...options.args ?? []);
  const spawned = spawnVstamp(args, dir);
  let pids: number[] = [];
  const killed = new Set<number>();
  let exited = false;
  spawned.process.status.then(() => exited = true);
  let stopping: Promise<Deno.CommandStatus> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      // Kill the children first: a server started by `cluster up` does not exit on SIGTERM while
      // its stdin is open, so a plain SIGTERM to the cluster costs its 5 s stop timeout. While the
      // cluster runs, a child's pid stays the child's until the cluster reaps it; a child killed
      // earlier was reaped, so its pid is skipped.
      if (!exited) {
        for (const [index, pid] of pids.entries()) if (!killed.has(index)) signal(pid, "SIGKILL");
      }
      const status = await spawned.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      return status;
    })();
    return stopping;
  };
  try {
    await spawned.stdout.waitForText("configuration written", CLUSTER_START_TIMEOUT_MS);
    pids = parseClusterTable(spawned.stdout.text, n);
    const config = await loadConfig(configPath);
    return {
      process: spawned.process,
      output: () => ({ stdout: spawned.stdout.text, stderr: spawned.stderr.text }),
      stop,
      dir,
      configPath,
      dataDir,
      addresses: config.addressTexts,
      pids,
      replicaDataDir: (index) => `${dataDir}/replica-${index}`,
      killReplica: async (index) => {
        const pid = pids[index]!;
        if (killed.has(index)) return;
        killed.add(index);
        signal(pid, "SIGKILL");
        await waitFor(
          () => processGone(pid),
          STOP_TIMEOUT_MS,
          `replica ${index} (pid ${pid}) to die`,
        );
      },
    };
  } catch (error) {
    // The cluster stops the children it started; any it leaves stop when their stdin closes.
    await stop();
    throw new Error(
      `cluster up failed: ${error instanceof Error ? error.message : String(error)}\n` +
        `stderr:\n${spawned.stderr.text}`,
    );
  }
}

/**
 * Runs `body` with a fresh `cluster up -n <n>` (options as `startCluster`'s), stopped (every
 * process) whatever happens; the cluster's stderr is printed if `body` fails.
 */
export async function withCluster(
  n: number,
  body: (cluster: Cluster) => Promise<void>,
  options: Parameters<typeof startCluster>[1] = {},
): Promise<void> {
  const cluster = await startCluster(n, options);
  try {
    await body(cluster);
  } catch (error) {
    const { stderr } = cluster.output();
    if (stderr.length > 0) console.error(`cluster stderr:\n${stderr}`);
    throw error;
  } finally {
    await cluster.stop();
  }
}

/**
 * Runs `vstamp server --index <index> --config <configPath> --data-dir <dataDir>` (to restart a
 * replica of a cluster). It does not wait for the server to serve: poll `statusRows` for that.
 */
export function startServer(
  index: number,
  configPath: string,
  dataDir: string,
  options: {
    sync?: "fsync" | "none";
    cwd?: string;
    logLevel?: "info" | "warn";
    /** More arguments for `server` (`--app m`, say). */
    args?: readonly string[];
  } = {},
): RunningProcess {
  const args = ["server", "--index", String(index), "--config", configPath];
  args.push("--data-dir", dataDir, "--sync", options.sync ?? "fsync");
  args.push("--log-level", options.logLevel ?? "warn", ...options.args ?? []);
  const spawned = spawnVstamp(args, options.cwd ?? Deno.cwd());
  return {
    process: spawned.process,
    output: () => ({ stdout: spawned.stdout.text, stderr: spawned.stderr.text }),
    stop: spawned.stop,
  };
}

/** The outcome of a one-shot command. */
export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `vstamp <args>` to completion, feeding `stdin` if given (else stdin is empty), in `cwd`
 * (default: the current directory). Killed after `timeoutMs`.
 */
export async function runVstamp(
  args: readonly string[],
  options: { stdin?: string; cwd?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  const process = new Deno.Command(Deno.execPath(), {
    args: vstampArgs(args),
    cwd: options.cwd ?? Deno.cwd(),
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(
    () => signalChild(process, "SIGKILL"),
    options.timeoutMs ?? RUN_TIMEOUT_MS,
  );
  try {
    const writer = process.stdin.getWriter();
    try {
      if (options.stdin !== undefined) await writer.write(new TextEncoder().encode(options.stdin));
      await writer.close();
    } catch {
      // The process exited without reading all of its input (as after QUIT).
    }
    const output = await process.output();
    const decoder = new TextDecoder();
    return {
      code: output.code,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** The rows `vstamp status --config <configPath>` would show, from the library directly. */
export async function statusRows(
  configOrAddresses: string | readonly string[],
  options: Parameters<typeof collectStatus>[1] = {},
): Promise<StatusRow[]> {
  const addresses = typeof configOrAddresses === "string"
    ? (await loadConfig(configOrAddresses)).addressTexts
    : configOrAddresses;
  return await collectStatus(addresses, options);
}

/** The single reachable normal primary with the highest view, if any. */
export function primaryRow(rows: readonly StatusRow[]): StatusRow | undefined {
  let primary: StatusRow | undefined;
  for (const row of rows) {
    if (!row.reachable || row.role !== "primary" || row.status !== "normal") continue;
    if (primary === undefined || row.viewNumber! > primary.viewNumber!) primary = row;
  }
  return primary;
}

/**
 * Runs `cluster up -n <replicas> --repl <args…>` of 3 replicas (no fsync) in a new temporary
 * directory, typing `script` (one command a line) at its prompt; the directory is removed after.
 * The configuration the cluster wrote is read before that, for tests that check it.
 */
export async function runClusterRepl(
  script: readonly string[],
  args: readonly string[] = [],
  timeoutMs = 90_000,
): Promise<RunResult & { readonly addressCount: number }> {
  const dir = await Deno.makeTempDir({ prefix: "vstamp-test-" });
  try {
    const result = await runVstamp([
      "cluster",
      "up",
      "-n",
      "3",
      "--repl",
      ...args,
      "--config-out",
      `${dir}/cluster.yaml`,
      "--data-dir",
      `${dir}/data`,
      "--sync",
      "none",
    ], { stdin: [...script, ""].join("\n"), cwd: dir, timeoutMs });
    const addressCount = await loadConfig(`${dir}/cluster.yaml`).then(
      (config) => config.addressTexts.length,
      () => 0,
    );
    return { ...result, addressCount };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
