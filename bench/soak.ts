/**
 * §5.1 measurements on a real 3-replica group (`vstamp cluster up`), with the default checkpoint
 * limits unless told otherwise:
 *
 * - `soak`: `--ops` 64-byte SETs over 1,000 keys from 64 clients (`vstamp bench`), sampling every
 *   `--every` seconds each replica's resident memory and data directory (the disk blocks its
 *   files take), and printing them as a table: with a bounded log both stay flat.
 * - `restart`: loads `--keys` distinct keys, kills a backup with SIGKILL, restarts it, and times
 *   until it serves again (normal, at the primary's commit-number), with its own account of the
 *   checkpoint it restored.
 * - `load`: loads `--keys` keys, then measures `--ops` SETs over them (`vstamp bench`).
 * - `catchup`: kills a backup, runs `--ops` SETs, restarts it and times until it has caught up
 *   (by a checkpoint from another replica, then the log after it).
 *
 * Usage:
 *   deno run -A bench/soak.ts soak [--ops 10000000] [--every 10] [--sync none]
 *   deno run -A bench/soak.ts restart [--keys 1000000]
 *   deno run -A bench/soak.ts catchup [--ops 2000000] [--keys 1000000]
 *   deno run -A bench/soak.ts load [--ops 2000000] [--keys 1000000] [--checkpoint-interval N]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { KvClient } from "../src/client/kv_client.ts";
import {
  type Cluster,
  primaryRow,
  type RunningProcess,
  startCluster,
  startServer,
  statusRows,
  vstampArgs,
  waitFor,
} from "../tests/_process.ts";

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    ops: { type: "string" },
    keys: { type: "string", default: "1000000" },
    every: { type: "string", default: "10" },
    sync: { type: "string", default: "none" },
    "checkpoint-interval": { type: "string" },
    "log-retain": { type: "string" },
  },
});
const mode = positionals[0] ?? "soak";
const sync = values.sync === "fsync" ? "fsync" : "none";
const clusterArgs: string[] = [];
if (values["checkpoint-interval"] !== undefined) {
  clusterArgs.push("--checkpoint-interval", values["checkpoint-interval"]);
}
if (values["log-retain"] !== undefined) clusterArgs.push("--log-retain", values["log-retain"]);

function residentMiB(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? "0") / 1024;
  } catch {
    return NaN;
  }
}

/** The disk blocks the files of `dir` take, in MiB, and the newest checkpoint's size. */
function diskMiB(dir: string): { total: number; checkpoint: number } {
  let total = 0;
  let checkpoint = 0;
  let newest = "";
  for (const entry of Deno.readDirSync(dir)) {
    if (!entry.isFile) continue;
    const stat = Deno.statSync(`${dir}/${entry.name}`);
    total += (stat.blocks ?? 0) * 512;
    if (/^checkpoint\.\d{16}$/.test(entry.name) && entry.name > newest) {
      newest = entry.name;
      checkpoint = stat.size;
    }
  }
  return { total: total / 2 ** 20, checkpoint: checkpoint / 2 ** 20 };
}

/** `vstamp bench` against the group, as a child: resolves with its JSON line. */
function runBench(cluster: Cluster, requests: number, keys: number): Promise<string> {
  const args = ["bench", "--config", cluster.configPath, "--clients", "64", "--keys", String(keys)];
  args.push("--requests", String(requests), "--warmup", "0", "--json");
  const child = new Deno.Command(Deno.execPath(), {
    args: vstampArgs(args),
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  return child.output().then((output) => new TextDecoder().decode(output.stdout).trim());
}

async function pidsOf(cluster: Cluster): Promise<number[]> {
  return (await statusRows(cluster.configPath)).map((row) => row.pid ?? cluster.pids[row.index]!);
}

/** Loads `count` distinct 64-byte values, key-0 .. key-(count-1), from 64 clients at once. */
async function loadKeys(cluster: Cluster, count: number): Promise<void> {
  const value = "v".repeat(64);
  const workers = 64;
  let next = 0;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      const client = await KvClient.connect({ addresses: cluster.addresses, deadlineMs: 30_000 });
      try {
        for (let key = next++; key < count; key = next++) await client.set(`key-${key}`, value);
      } finally {
        client.close();
      }
    }),
  );
}

/** Kills backup `index`, runs `during`, restarts it and times until it serves at the primary's commit. */
async function restartTimed(
  cluster: Cluster,
  index: number,
  during: () => Promise<void>,
): Promise<{ ms: number; stderr: string; process: RunningProcess }> {
  await cluster.killReplica(index);
  await during();
  const started = performance.now();
  const process = startServer(index, cluster.configPath, cluster.replicaDataDir(index), {
    cwd: cluster.dir,
    sync,
    logLevel: "info",
  });
  await waitFor(
    async () => {
      const rows = await statusRows(cluster.configPath);
      const primary = primaryRow(rows);
      const row = rows[index]!;
      return primary !== undefined && row.reachable && row.pid === process.process.pid &&
        row.status === "normal" && row.commitNumber === primary.commitNumber;
    },
    600_000,
    () => `replica ${index} to serve; its stderr:\n${process.output().stderr}`,
    5,
  );
  return { ms: performance.now() - started, stderr: process.output().stderr, process };
}

/** Waits until no replica's CPU time grows by more than 5% of a core over a second. */
async function quiet(cluster: Cluster): Promise<void> {
  const cpu = async () =>
    (await statusRows(cluster.configPath)).map((row) =>
      (row.counters?.cpuUserSeconds ?? 0) + (row.counters?.cpuSystemSeconds ?? 0)
    );
  let before = await cpu();
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const now = await cpu();
    if (now.every((seconds, index) => seconds - before[index]! < 0.05)) return;
    before = now;
  }
}

async function backupIndex(cluster: Cluster): Promise<number> {
  return (await statusRows(cluster.configPath)).find((row) => row.role === "backup")!.index;
}

const cluster = await startCluster(3, { sync, args: clusterArgs });
try {
  if (mode === "soak") {
    const ops = Number(values.ops ?? 10_000_000);
    const every = Number(values.every) * 1000;
    const pids = await pidsOf(cluster);
    const samples: string[] = [];
    const sample = async () => {
      const rows = await statusRows(cluster.configPath);
      const commit = primaryRow(rows)?.commitNumber ?? 0;
      const cells = pids.map((pid, index) => {
        const disk = diskMiB(cluster.replicaDataDir(index));
        return `${residentMiB(pid).toFixed(0).padStart(5)} ${disk.total.toFixed(1).padStart(6)} ` +
          `${disk.checkpoint.toFixed(2).padStart(6)}`;
      });
      const line = `| ${String(commit).padStart(9)} | ${cells.join(" | ")} |`;
      samples.push(line);
      console.log(line);
    };
    console.log(
      `soak: ${ops} SETs of 64 bytes over 1000 keys, 64 clients, sync ${sync}; per replica: ` +
        "resident MiB, data directory MiB (disk blocks), newest checkpoint MiB",
    );
    console.log(
      `| ops       | ${["r0", "r1", "r2"].map((r) => `${r}: rss   disk  ckpt`).join(" | ")} |`,
    );
    await sample();
    const bench = runBench(cluster, ops, 1000);
    let done = false;
    bench.then(() => done = true);
    while (!done) {
      await new Promise((resolve) => setTimeout(resolve, every));
      await sample();
    }
    console.log(`bench: ${await bench}`);
  } else if (mode === "restart") {
    const keys = Number(values.keys);
    const loadStarted = performance.now();
    await loadKeys(cluster, keys);
    console.log(
      `loaded ${keys} keys in ${((performance.now() - loadStarted) / 1000).toFixed(1)} s`,
    );
    // Let the group finish the checkpoints the load started (two cores: their work would slow the
    // restart), so that the restart is measured alone.
    await quiet(cluster);
    const index = await backupIndex(cluster);
    const result = await restartTimed(cluster, index, async () => {});
    const restored = /restored the checkpoint[^\n]*/.exec(result.stderr)?.[0] ??
      "(no checkpoint line)";
    console.log(
      `restart of replica ${index} with ${keys} keys: serving after ${
        result.ms.toFixed(0)
      } ms; ${restored}`,
    );
    await result.process.stop();
  } else if (mode === "load") {
    // Throughput with a large state, where checkpoints cost the most: compare runs with and
    // without `--checkpoint-interval 1073741824` (a checkpoint only every 2^30 ops).
    const keys = Number(values.keys);
    await loadKeys(cluster, keys);
    await quiet(cluster);
    console.log(`${keys} keys: ${await runBench(cluster, Number(values.ops ?? 2_000_000), keys)}`);
  } else if (mode === "catchup") {
    const keys = Number(values.keys);
    const ops = Number(values.ops ?? 2_000_000);
    await loadKeys(cluster, keys);
    const index = await backupIndex(cluster);
    let bench = "";
    const result = await restartTimed(cluster, index, async () => {
      bench = await runBench(cluster, ops, keys);
    });
    console.log(`while replica ${index} was down: ${bench}`);
    const installed = /installed the checkpoint[^\n]*/.exec(result.stderr)?.[0] ??
      "(no install line: caught up by the log)";
    console.log(
      `catch-up of replica ${index} after ${ops} ops: serving after ${
        result.ms.toFixed(0)
      } ms; ${installed}`,
    );
    await result.process.stop();
  } else {
    throw new Error(`unknown mode ${mode}: soak, restart or catchup`);
  }
} finally {
  await cluster.stop();
}
