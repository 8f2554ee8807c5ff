/**
 * §7 on real processes: a group of three under continuous writes has one member replaced by a new
 * process, grows to five, then shrinks to three on entirely new processes. No acknowledged write
 * is lost, the clients' history is linearizable, the old processes exit by themselves (§7.3), and
 * each step's write stall is measured and printed.
 */
import { strict as assert } from "node:assert";
import { Client, ClientError } from "../src/client/client.ts";
import { loadAccess, loadConfig, renderConfig } from "../src/config.ts";
import { ReconfigureError, reconfigureGroup } from "../src/cli/reconfigure.ts";
import { checkLinearizable, type HistoryOperation } from "../src/sim/linearizability.ts";
import {
  OutputCollector,
  processGone,
  type RunningProcess,
  signalChild,
  startServer,
  statusRows,
  vstampArgs,
  waitFor,
  withCluster,
} from "./_process.ts";
import { kvRequest } from "./_kv.ts";
import { decodeKvResult, encodeKvOperation } from "../src/app/kv.ts";

const STEP_TIMEOUT_MS = 30_000;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A `server --join` on a port of its own choosing, told its configuration once it has one. */
interface Joiner {
  readonly address: string;
  readonly process: Deno.ChildProcess;
  readonly stderr: OutputCollector;
  /**
   * Hand the process its configuration file: a joining replica takes only its own address from
   * it (at `--index` 0 here) and the group's identity; the group tells it the rest.
   */
  configure(): Promise<void>;
  stop(): Promise<void>;
}

async function startJoiner(
  dir: string,
  name: string,
  write: (addresses: readonly string[]) => Promise<string>,
): Promise<Joiner> {
  const process = new Deno.Command(Deno.execPath(), {
    args: vstampArgs([
      "server",
      "--join",
      "--bind",
      "127.0.0.1:0",
      "--index",
      "0",
      "--data-dir",
      `${dir}/${name}`,
      "--sync",
      "none",
      "--log-level",
      "warn",
    ]),
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new OutputCollector(process.stdout);
  const stderr = new OutputCollector(process.stderr);
  await stdout.waitForText("listening ", 20_000);
  const port = Number(/listening (\d+)/.exec(stdout.text)![1]);
  const stdin = process.stdin.getWriter();
  const address = `127.0.0.1:${port}`;
  return {
    address,
    process,
    stderr,
    configure: async () => {
      await stdin.write(encoder.encode(`${await write([address])}\n`));
    },
    stop: async () => {
      signalChild(process, "SIGKILL");
      await process.status;
      await stdin.close().catch(() => {});
      await Promise.all([stdout.done, stderr.done]);
    },
  };
}

/** A client that writes and reads a few keys back to back, recording what it saw. */
class Worker {
  readonly history: HistoryOperation[] = [];
  /** Every acknowledged write of a key of its own: it must be there at the end. */
  readonly acknowledged = new Map<string, string>();
  /** Each operation's latency, with the time it returned. */
  readonly latencies: { at: number; ms: number }[] = [];
  stopped = false;
  done: Promise<void> = Promise.resolve();

  constructor(readonly client: Client, readonly name: string) {}

  start(): void {
    this.done = (async () => {
      let n = 0;
      while (!this.stopped) {
        n++;
        const shared = `k${n % 3}`;
        const own = `${this.name}-${n}`;
        const value = `${this.name}.${n}`;
        await this.#run(shared, n % 2 === 0 ? { kind: "get" } : { kind: "set", value });
        await this.#run(own, { kind: "set", value });
      }
    })();
  }

  async #run(key: string, call: HistoryOperation["call"]): Promise<void> {
    const invokeTime = performance.now();
    const operation = call.kind === "get"
      ? encodeKvOperation({ command: "GET", key: encoder.encode(key) })
      : encodeKvOperation({
        command: "SET",
        key: encoder.encode(key),
        value: encoder.encode((call as { value: string }).value),
      });
    let output: string | null = null;
    let returnTime: number | undefined;
    try {
      const result = decodeKvResult(await this.client.request(operation));
      returnTime = performance.now();
      output = result.kind === "bytes" ? decoder.decode(result.value) : null;
    } catch (error) {
      if (!(error instanceof ClientError)) throw error;
      // Timed out: its outcome is unknown (it stays open in the history).
    }
    this.history.push({
      clientId: this.client.clientId,
      key,
      call,
      invokeTime,
      returnTime,
      output,
    });
    if (returnTime !== undefined) {
      this.latencies.push({ at: returnTime, ms: returnTime - invokeTime });
      if (call.kind === "set" && key.startsWith(this.name)) this.acknowledged.set(key, call.value);
    }
  }

  /** The longest an operation that returned in [from, to] waited. */
  stall(from: number, to: number): number {
    let worst = 0;
    for (const { at, ms } of this.latencies) {
      if (at >= from && at <= to) worst = Math.max(worst, ms);
    }
    return worst;
  }
}

Deno.test({
  name: "§7 replace one replica, grow to five, shrink to three new ones, under writes",
  // The processes' children and timers outlive the body's awaits by design.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withCluster(3, async (cluster) => {
      const config = await loadConfig(cluster.configPath);
      const access = await loadAccess(config);
      let files = 0;
      const write = async (addresses: readonly string[]) => {
        const path = `${cluster.dir}/config-${files++}.yaml`;
        await Deno.writeTextFile(
          path,
          renderConfig(addresses, {
            clusterId: config.clusterId,
            ...(config.secretFile !== undefined ? { secretFile: config.secretFile } : {}),
          }),
        );
        return path;
      };
      const joiners: Joiner[] = [];
      let restarted: RunningProcess | undefined;
      const workers: Worker[] = [];
      try {
        for (const name of ["a", "b"]) {
          const client = await Client.connect({
            addresses: cluster.addresses,
            deadlineMs: 20_000,
            ...access,
          });
          const worker = new Worker(client, name);
          workers.push(worker);
          worker.start();
        }
        // Some writes before the first step.
        await waitFor(
          () => workers.every((w) => w.acknowledged.size >= 20),
          STEP_TIMEOUT_MS,
          "writes",
        );
        const stalls: string[] = [];
        const step = async (label: string, current: readonly string[], target: string[]) => {
          const started = performance.now();
          const result = await reconfigureGroup(current, target, access, {
            log: () => {},
            timeoutMs: STEP_TIMEOUT_MS,
          });
          if (result.stillUp.length > 0) {
            const rows = await statusRows(result.stillUp, access);
            for (const joiner of joiners) {
              console.error(`${joiner.address}:\n${joiner.stderr.text}`);
            }
            assert.fail(`${label}: old replicas still up: ${JSON.stringify(rows)}`);
          }
          // A few more writes in the new group, then measure the step's stall.
          const counts = workers.map((w) => w.latencies.length);
          await waitFor(
            () => workers.every((w, i) => w.latencies.length >= counts[i]! + 20),
            STEP_TIMEOUT_MS,
            `${label}: writes in the new group`,
          );
          const stall = Math.max(...workers.map((w) => w.stall(started, performance.now())));
          stalls.push(
            `${label}: longest write ${Math.round(stall)} ms (committed in ` +
              `${Math.round(result.committedMs)} ms, checked in ${
                Math.round(result.checkedMs)
              } ms)`,
          );
        };
        const a = cluster.addresses;

        // 1. Replace replica 2 by a new process.
        const n1 = await startJoiner(cluster.dir, "n1", write);
        joiners.push(n1);
        const first = [a[0]!, a[1]!, n1.address];
        await n1.configure();
        await step("replace one", a, first);
        await waitFor(() => processGone(cluster.pids[2]!), STEP_TIMEOUT_MS, "replica 2 to exit");
        // Replica 0 restarted with the old configuration file: it says so, and serves in the
        // epoch its data directory names.
        await cluster.killReplica(0);
        restarted = startServer(0, cluster.configPath, cluster.replicaDataDir(0), {
          logLevel: "warn",
        });
        await waitFor(
          async () => {
            const [row] = await statusRows([a[0]!], access);
            return row!.reachable && row!.status === "normal" && row!.epoch === 1 &&
              row!.pid === restarted!.process.pid;
          },
          STEP_TIMEOUT_MS,
          () => `replica 0 back in epoch 1; stderr:\n${restarted!.output().stderr}`,
        );
        assert.match(
          restarted.output().stderr,
          /the configuration file lists .*, but the group is in epoch 1 with .*: using that/,
        );

        // 2. Grow to five.
        const n2 = await startJoiner(cluster.dir, "n2", write);
        const n3 = await startJoiner(cluster.dir, "n3", write);
        joiners.push(n2, n3);
        const second = [...first, n2.address, n3.address];
        await n2.configure();
        await n3.configure();
        await step("grow to five", first, second);

        // 3. Shrink to three entirely new processes.
        const fresh = [];
        for (const name of ["n4", "n5", "n6"]) {
          fresh.push(await startJoiner(cluster.dir, name, write));
        }
        joiners.push(...fresh);
        const third = fresh.map((joiner) => joiner.address);
        for (const joiner of fresh) await joiner.configure();
        await step("shrink to three new", second, third);
        // Every process of the groups before exits by itself.
        await waitFor(
          () => processGone(cluster.pids[1]!),
          STEP_TIMEOUT_MS,
          "replica 1 to exit",
        );
        assert.equal((await restarted.process.status).code, 0, restarted.output().stderr);
        for (const joiner of [n1, n2, n3]) {
          const status = await joiner.process.status;
          assert.equal(
            status.code,
            0,
            `${joiner.address} exit code; stderr:\n${joiner.stderr.text}`,
          );
        }

        for (const worker of workers) worker.stopped = true;
        await Promise.all(workers.map((w) => w.done));
        // No acknowledged write is lost: each is in the final group.
        const reader = await Client.connect({ addresses: third, deadlineMs: 10_000, ...access });
        try {
          for (const worker of workers) {
            for (const [key, value] of worker.acknowledged) {
              const result = await kvRequest(reader, { command: "GET", key: encoder.encode(key) });
              assert.equal(
                result.kind === "bytes" ? decoder.decode(result.value) : null,
                value,
                key,
              );
            }
          }
        } finally {
          reader.close();
        }
        const history = workers.flatMap((w) => w.history).filter((op) => op.key.startsWith("k"));
        const linearizable = checkLinearizable(history);
        assert.ok(linearizable.ok, linearizable.ok ? "" : linearizable.message);
        const rows = await statusRows(third, access);
        assert.ok(rows.every((row) => row.reachable && row.epoch === 3), JSON.stringify(rows));
        console.log(
          `reconfiguration stalls (3 -> replace -> 5 -> 3 new):\n  ${stalls.join("\n  ")}`,
        );
      } finally {
        for (const worker of workers) {
          worker.stopped = true;
          worker.client.close();
        }
        for (const joiner of joiners) await joiner.stop();
        await restarted?.stop();
      }
    });
  },
});

Deno.test("§7 reconfigure refuses an even configuration and unreachable new replicas", async () => {
  await withCluster(3, async (cluster) => {
    const access = await loadAccess(await loadConfig(cluster.configPath));
    const a = cluster.addresses;
    await assert.rejects(
      reconfigureGroup(a, [a[0]!, a[1]!], access, { log: () => {} }),
      (error: unknown) => error instanceof ReconfigureError && /odd number/.test(error.message),
    );
    await assert.rejects(
      reconfigureGroup(a, [a[0]!, a[0]!, a[1]!], access, { log: () => {} }),
      (error: unknown) => error instanceof ReconfigureError && /twice/.test(error.message),
    );
    // A port nothing listens on (bound, then closed).
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close();
    await assert.rejects(
      reconfigureGroup(a, [a[0]!, a[1]!, `127.0.0.1:${port}`], access, { log: () => {} }),
      (error: unknown) =>
        error instanceof ReconfigureError && /does not answer/.test(error.message),
    );
    // Nothing changed: the group is still in epoch 0.
    const rows = await statusRows(cluster.configPath);
    assert.ok(rows.every((row) => row.epoch === 0), JSON.stringify(rows));
  });
});
