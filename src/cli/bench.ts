/**
 * `vstamp bench`: load a running group (or one it starts) with concurrent logical clients and
 * report throughput, latency percentiles and the servers' CPU time.
 *
 * @module
 */
import process from "node:process";
import { Command, InvalidArgumentError, Option } from "commander";
import { encodeKvOperation } from "../app/kv.ts";
import { Histogram } from "../bench/histogram.ts";
import { Client, ClientError, ClientTransport } from "../client/client.ts";
import { ConfigError, type GroupAccess, loadAccess, loadConfig, parseAddress } from "../config.ts";
import { vstampCommand } from "./cluster.ts";
import { type App, appTag } from "../app/app.ts";
import { kvApp } from "../app/kv_app.ts";
import { Prng } from "../lib/prng.ts";
import { absoluteAppSpecifier, appOption, withApp } from "./app_option.ts";
import { parseCount } from "./sim.ts";
import { fetchStatus } from "../client/status.ts";
import type { NodeCounters } from "../transport/node.ts";

interface BenchFlags {
  config?: string;
  cluster?: number;
  clients: number;
  connections?: number;
  duration?: number;
  requests?: number;
  valueSize: number;
  keys: number;
  readRatio: number;
  warmup: number;
  json?: boolean;
  sync: "fsync" | "none";
  tls?: boolean;
  app?: string;
}

/** Logical clients at most: each holds its own connections. */
export const BENCH_CLIENTS_MAX = 1024;

function parseRatio(value: string): number {
  const n = Number(value);
  if (!(n >= 0 && n <= 1)) {
    throw new InvalidArgumentError(`--read-ratio must be in 0..1, got "${value}"`);
  }
  return n;
}

function parseSeconds(name: string) {
  return (value: string) => {
    const n = Number(value);
    if (!(n >= 0 && n <= 3600)) {
      throw new InvalidArgumentError(`${name} must be 0..3600 seconds, got "${value}"`);
    }
    return n;
  };
}

export function benchCommand(): Command {
  return new Command("bench")
    .description(
      "Measure throughput and latency against a group (--config) or a fresh local one (--cluster n).",
    )
    .option("--config <file>", "benchmark the running group of this configuration file")
    .option(
      "--cluster <n>",
      "start n replicas (separate processes) just for this run",
      parseCount("--cluster"),
    )
    .option(
      "--clients <c>",
      "concurrent logical clients, one request in flight each",
      parseCount("--clients"),
      1,
    )
    .option(
      "--connections <n>",
      `connections to each replica, shared by the clients (default: one per ${BENCH_CLIENTS_PER_CONNECTION} clients)`,
      parseCount("--connections"),
    )
    .option(
      "--duration <s>",
      "measure for this many seconds (default 10)",
      parseSeconds("--duration"),
    )
    .option("--requests <n>", "or: measure this many requests in total", parseCount("--requests"))
    .option("--value-size <b>", "bytes per value", parseCount("--value-size"), 64)
    .option("--keys <k>", "distinct keys", parseCount("--keys"), 1000)
    .option("--read-ratio <r>", "share of GETs (the rest are SETs)", parseRatio, 0)
    .option("--warmup <s>", "seconds of load before measuring", parseSeconds("--warmup"), 1)
    .addOption(
      new Option("--sync <mode>", "with --cluster: as for `server`").choices(["fsync", "none"])
        .default("fsync"),
    )
    .option("--tls", "with --cluster: TLS on every connection (as `cluster up --tls`)")
    .addOption(appOption())
    .option("--json", "print one JSON line (fields as the etcd and Redis baselines print)")
    .addHelpText(
      "after",
      `
Examples:
  vstamp bench --cluster 3 --clients 64 --duration 10 --json
  vstamp bench --config c.yaml --clients 1 --requests 20000`,
    )
    .action(async (flags: BenchFlags, command: Command) => {
      if ((flags.config === undefined) === (flags.cluster === undefined)) {
        command.error("error: give exactly one of --config <file> or --cluster <n>", {
          exitCode: 2,
        });
      }
      if (flags.duration !== undefined && flags.requests !== undefined) {
        command.error("error: give at most one of --duration or --requests", { exitCode: 2 });
      }
      if (flags.clients < 1 || flags.clients > BENCH_CLIENTS_MAX) {
        command.error(`error: --clients must be 1..${BENCH_CLIENTS_MAX}`, { exitCode: 2 });
      }
      if (flags.keys < 1) command.error("error: --keys must be at least 1", { exitCode: 2 });
      if (flags.connections !== undefined && flags.connections < 1) {
        command.error("error: --connections must be at least 1", { exitCode: 2 });
      }
      Deno.exitCode = await withApp(flags.app, (app) => {
        if (app.workload === undefined) {
          console.error(
            `--app ${flags.app}: app ${appTag(app)} has no \`workload\`, which bench needs to ` +
              'draw operations (see README, "Your own app")',
          );
          return 2;
        }
        return runBench(flags, app);
      });
    });
}

/** The most bytes of operations the benchmark encodes in advance (see `load`). */
const PREENCODED_BYTES_MAX = 64 * 1024 * 1024;

/** Logical clients per connection when `--connections` is not given. */
export const BENCH_CLIENTS_PER_CONNECTION = 32;

function defaultConnections(clients: number): number {
  return Math.ceil(clients / BENCH_CLIENTS_PER_CONNECTION);
}

interface Cluster {
  readonly configPath: string;
  stop(): Promise<void>;
}

async function startCluster(
  replicas: number,
  sync: "fsync" | "none",
  tls: boolean,
  app: string | undefined,
): Promise<Cluster> {
  const dir = await Deno.makeTempDir({ prefix: "vstamp-bench-" });
  const configPath = `${dir}/cluster.yaml`;
  const { command, args } = vstampCommand([
    "cluster",
    "up",
    "-n",
    String(replicas),
    "--config-out",
    configPath,
    "--data-dir",
    `${dir}/data`,
    "--sync",
    sync,
    ...(tls ? ["--tls"] : []),
    ...(app === undefined ? [] : ["--app", absoluteAppSpecifier(app)]),
    "--log-level",
    "error",
  ]);
  const process = new Deno.Command(command, { args, stdout: "piped", stderr: "inherit" }).spawn();
  const reader = process.stdout.getReader();
  const decoder = new TextDecoder();
  let text = "";
  while (!text.includes("configuration written")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("cluster up exited before the group was serving");
    text += decoder.decode(value, { stream: true });
  }
  (async () => {
    try {
      while (!(await reader.read()).done) { /* discard */ }
    } catch {
      // Gone.
    }
  })();
  return {
    configPath,
    stop: async () => {
      try {
        process.kill("SIGTERM");
      } catch {
        // Already gone.
      }
      await process.status;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** Each replica's counters (CPU time, messages, persists), or undefined if it did not answer. */
function fetchCounters(
  addresses: readonly string[],
  access: GroupAccess,
): Promise<(NodeCounters | undefined)[]> {
  return Promise.all(addresses.map(async (text) => {
    const address = parseAddress(text);
    if ("error" in address) return undefined;
    const answer = await fetchStatus(address, undefined, access);
    return "error" in answer ? undefined : answer.counters;
  }));
}

async function runBench(flags: BenchFlags, app: App): Promise<number> {
  let cluster: Cluster | undefined;
  let configPath = flags.config;
  try {
    if (flags.cluster !== undefined) {
      cluster = await startCluster(flags.cluster, flags.sync, flags.tls === true, flags.app);
      configPath = cluster.configPath;
    }
    const config = await loadConfig(configPath!);
    const access = await loadAccess(config);
    const addresses = [...config.addressTexts];
    // Logical clients share connections, as an application's would; several connections keep
    // groups of clients out of step, so that one group's batch is in flight while another's is
    // being executed (see `--connections`).
    const connections = Math.min(
      flags.connections ?? defaultConnections(flags.clients),
      flags.clients,
    );
    const transports = Array.from(
      { length: connections },
      () => new ClientTransport({ ...access, app: appTag(app) }),
    );
    const clients = await Promise.all(
      Array.from(
        { length: flags.clients },
        (_, i) => Client.connect({ addresses, transport: transports[i % connections] }),
      ),
    );
    // Another app's operations come from its workload (the key-value store keeps its own
    // options: --keys, --value-size, --read-ratio).
    const prng = new Prng(crypto.getRandomValues(new Uint32Array(1))[0]!);
    const draw = app === kvApp ? undefined : () => app.workload!(prng).operation;
    const result = await load(clients, flags, addresses, connections, access, draw);
    for (const client of clients) client.close();
    for (const transport of transports) transport.close();
    report(flags, config.addresses.length, result, app);
    return 0;
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      return error.exitCode;
    }
    if (error instanceof ClientError) {
      console.error(`bench: ${error.message}`);
      return 1;
    }
    throw error;
  } finally {
    await cluster?.stop();
  }
}

interface LoadResult {
  readonly histogram: Histogram;
  readonly ops: number;
  readonly errors: number;
  readonly seconds: number;
  /** What each server did during the measurement. */
  readonly servers: readonly (NodeCounters | undefined)[];
  /** CPU time of this process (the clients). */
  readonly clientCpuSeconds: number;
  readonly connections: number;
}

function subtractCounters(end: NodeCounters, start: NodeCounters): NodeCounters {
  const out = { ...end };
  for (const key of Object.keys(out) as (keyof NodeCounters)[]) out[key] = end[key] - start[key];
  return out;
}

function cpuSecondsOf(counters: NodeCounters | undefined): number | undefined {
  return counters === undefined ? undefined : counters.cpuUserSeconds + counters.cpuSystemSeconds;
}

async function load(
  clients: readonly Client[],
  flags: BenchFlags,
  addresses: readonly string[],
  connections: number,
  access: GroupAccess,
  draw?: (() => Uint8Array) | undefined,
): Promise<LoadResult> {
  const value = new Uint8Array(flags.valueSize).fill(0x78);
  const keys: Uint8Array[] = [];
  const encoder = new TextEncoder();
  for (let i = 0; i < flags.keys; i++) keys.push(encoder.encode(`key:${i}`));
  // Operations are encoded once per key when they fit in PREENCODED_BYTES_MAX, as
  // redis-benchmark prepares its commands: the load generator should spend its time on requests.
  const preencode = flags.keys * (flags.valueSize + 64) <= PREENCODED_BYTES_MAX;
  const setOperations: Uint8Array[] = [];
  const getOperations: Uint8Array[] = [];
  const setOperation = (index: number): Uint8Array => {
    if (!preencode) return encodeKvOperation({ command: "SET", key: keys[index]!, value });
    return setOperations[index] ??= encodeKvOperation({ command: "SET", key: keys[index]!, value });
  };
  const getOperation = (index: number): Uint8Array => {
    if (!preencode) return encodeKvOperation({ command: "GET", key: keys[index]! });
    return getOperations[index] ??= encodeKvOperation({ command: "GET", key: keys[index]! });
  };
  const histogram = new Histogram();
  let measuring = false;
  let ops = 0;
  let errors = 0;
  let issued = 0;
  const requestsMax = flags.requests;
  const durationMs = (flags.duration ?? (requestsMax === undefined ? 10 : 0)) * 1000;
  let stop = false;
  let seed = 0x9e3779b9;
  const random = () => {
    // A tiny xorshift: the benchmark needs spread, not quality.
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 0x100000000;
  };
  const worker = async (client: Client) => {
    while (!stop) {
      if (measuring && requestsMax !== undefined && issued >= requestsMax) break;
      const index = Math.floor(random() * keys.length);
      const operation = draw !== undefined
        ? draw()
        : random() < flags.readRatio
        ? getOperation(index)
        : setOperation(index);
      if (measuring) issued++;
      const counted = measuring;
      const started = performance.now();
      try {
        await client.request(operation);
        if (counted && measuring) {
          histogram.record((performance.now() - started) * 1000);
          ops++;
        }
      } catch (error) {
        if (!(error instanceof ClientError)) throw error;
        if (counted) errors++;
      }
    }
  };
  const workers = clients.map((client) => worker(client));
  if (flags.warmup > 0) await new Promise((resolve) => setTimeout(resolve, flags.warmup * 1000));
  // The servers' counters first, then the measurement: nothing done while they are fetched counts.
  const before = await fetchCounters(addresses, access);
  const clientCpuBefore = process.cpuUsage();
  measuring = true;
  const started = performance.now();
  const interactive = Deno.stderr.isTerminal();
  let lastOps = 0;
  const progress = setInterval(() => {
    const elapsed = (performance.now() - started) / 1000;
    const line = `  ${elapsed.toFixed(0)} s  ${ops - lastOps} ops/s`;
    lastOps = ops;
    if (flags.json) return;
    if (interactive) Deno.stderr.writeSync(encoder.encode(`\r${line}   `));
    else console.error(line);
  }, 1000);
  if (durationMs > 0) {
    const deadline = setTimeout(() => (stop = true), durationMs);
    await Promise.all(workers);
    clearTimeout(deadline);
  } else {
    await Promise.all(workers);
  }
  stop = true;
  const seconds = (performance.now() - started) / 1000;
  clearInterval(progress);
  if (interactive && !flags.json) Deno.stderr.writeSync(encoder.encode("\r"));
  const clientCpu = process.cpuUsage(clientCpuBefore);
  const after = await fetchCounters(addresses, access);
  const servers = after.map((end, i) => {
    const start = before[i];
    return end === undefined || start === undefined ? undefined : subtractCounters(end, start);
  });
  return {
    histogram,
    ops,
    errors,
    seconds,
    servers,
    clientCpuSeconds: (clientCpu.user + clientCpu.system) / 1e6,
    connections,
  };
}

function report(flags: BenchFlags, replicas: number, result: LoadResult, app: App): void {
  const h = result.histogram;
  const ms = (us: number) => Math.round(us) / 1000;
  const opsPerSecond = Math.round(result.ops / result.seconds);
  if (flags.json) {
    console.log(JSON.stringify({
      system: "vstamp",
      app: appTag(app),
      replicas,
      clients: flags.clients,
      connections: result.connections,
      value_size: flags.valueSize,
      sync: flags.cluster !== undefined ? flags.sync : undefined,
      ops_s: opsPerSecond,
      p50_ms: ms(h.percentileUs(0.5)),
      p90_ms: ms(h.percentileUs(0.9)),
      p99_ms: ms(h.percentileUs(0.99)),
      p999_ms: ms(h.percentileUs(0.999)),
      max_ms: ms(h.maxUs),
      ops: result.ops,
      errors: result.errors,
      seconds: Math.round(result.seconds * 100) / 100,
      client_cpu_s: Math.round(result.clientCpuSeconds * 100) / 100,
      server_cpu_s: result.servers.map((c) => {
        const s = cpuSecondsOf(c);
        return s === undefined ? null : Math.round(s * 100) / 100;
      }),
    }));
    return;
  }
  console.log(
    `vstamp bench: ${replicas} replicas, ${flags.clients} clients on ${result.connections} connection${
      result.connections === 1 ? "" : "s"
    }, ${
      app === kvApp
        ? `${flags.valueSize}-byte values, ${flags.keys} keys, ${
          Math.round(flags.readRatio * 100)
        }% reads`
        : `app ${appTag(app)}, operations from its workload`
    }`,
  );
  console.log(
    `throughput: ${opsPerSecond} ops/s (${result.ops} ops in ${
      result.seconds.toFixed(1)
    } s, ${result.errors} errors)`,
  );
  console.log(
    `latency ms: p50 ${ms(h.percentileUs(0.5))}  p90 ${ms(h.percentileUs(0.9))}  p99 ${
      ms(h.percentileUs(0.99))
    }  p99.9 ${ms(h.percentileUs(0.999))}  max ${ms(h.maxUs)}`,
  );
  console.log(
    `server cpu s: ${
      result.servers.map((c, i) => {
        const s = cpuSecondsOf(c);
        return `r${i} ${s === undefined ? "?" : s.toFixed(2)}`;
      }).join("  ")
    }`,
  );
  const ops = Math.max(1, result.ops);
  console.log(
    `client cpu s: ${result.clientCpuSeconds.toFixed(2)} (${
      (result.clientCpuSeconds * 1e6 / ops).toFixed(1)
    } us/op)`,
  );
  for (const [i, c] of result.servers.entries()) {
    if (c === undefined) continue;
    const cpu = cpuSecondsOf(c)!;
    const perOp = (value: number) => (value / ops).toFixed(2);
    console.log(
      `  r${i}: ${(cpu * 1e6 / ops).toFixed(1)} us cpu/op; per op: ${perOp(c.reads)} reads, ${
        perOp(c.writes)
      } writes, ${perOp(c.persists)} persists; ${
        c.prepares > 0 ? (c.preparedEntries / c.prepares).toFixed(1) : "-"
      } entries/prepare`,
    );
  }
}
