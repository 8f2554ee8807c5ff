/**
 * Real processes, real faults (docs: verification, part 3). Three replica processes behind a
 * fault-injecting proxy serve concurrent clients while a nemesis kills replicas with SIGKILL
 * (one, and all at once) and restarts them on their data directories, pauses the primary with
 * SIGSTOP, isolates it, cuts it off from its backups while clients still reach it, cuts one
 * direction of a link, cuts the clients off the primary, and slows every link. The clients'
 * history, with every unanswered request counted as indefinite, must be linearizable; after each
 * fault heals the group must serve again; at the end every replica must be normal in one view at
 * the same op-number and commit-number, with the same state digest.
 *
 * Fault durations are the nemesis's schedule, not waits for a result: every check waits for a
 * condition with a deadline.
 */
import { strict as assert } from "node:assert";
import { ClientError } from "../src/client/client.ts";
import { KvClient, KvError } from "../src/client/kv_client.ts";
import { renderConfig } from "../src/config.ts";
import { Prng } from "../src/lib/prng.ts";
import {
  checkLinearizable,
  type HistoryOperation,
  type KvCall,
} from "../src/sim/linearizability.ts";
import { FaultNetwork } from "./_proxy.ts";
import {
  OutputCollector,
  primaryRow,
  signalChild,
  statusRows,
  vstampArgs,
  waitFor,
} from "./_process.ts";

const REPLICAS = 3;
const CLIENTS = 4;
const KEYS = ["a", "b", "c"];
/** How long each fault stays in place. */
const FAULT_MS = 700;
/** After a fault heals, the clients must complete this many more operations... */
const PROGRESS_OPS = 15;
/** ...within this long. */
const RECOVERY_TIMEOUT_MS = 30_000;
/** A request unanswered for this long is given up (and recorded as indefinite). */
const REQUEST_DEADLINE_MS = 1_500;
const START_TIMEOUT_MS = 30_000;
const SEED = 20261130;

type Fault =
  | "kill"
  | "kill-primary"
  | "kill-all"
  | "pause-primary"
  | "isolate"
  | "primary-without-backups"
  | "one-way"
  | "cut-clients"
  | "delay";

const FAULTS: readonly Fault[] = [
  "kill-primary",
  "isolate",
  "primary-without-backups",
  "kill-all",
  "one-way",
  "pause-primary",
  "cut-clients",
  "kill",
  "delay",
];

/** One replica process, restartable on the same data directory behind the same proxy. */
class ReplicaProcess {
  #process: Deno.ChildProcess | undefined;
  #stdin: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #stderr: OutputCollector | undefined;

  constructor(
    readonly index: number,
    readonly configPath: string,
    readonly dataDir: string,
    readonly network: FaultNetwork,
  ) {}

  get stderr(): string {
    return this.#stderr?.text ?? "";
  }

  /** Starts the server on a free port and points the proxy at it. */
  async start(): Promise<void> {
    const args = ["server", "--index", String(this.index), "--bind", "127.0.0.1:0"];
    args.push("--data-dir", this.dataDir, "--sync", "none", "--log-level", "warn");
    const process = new Deno.Command(Deno.execPath(), {
      args: vstampArgs(args),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#process = process;
    const stdout = new OutputCollector(process.stdout);
    this.#stderr = new OutputCollector(process.stderr);
    // The server stops when its stdin closes: the writer stays open while it runs.
    this.#stdin = process.stdin.getWriter();
    await stdout.waitForText("\n", START_TIMEOUT_MS);
    const port = Number(/listening (\d+)/.exec(stdout.text)?.[1]);
    assert.ok(Number.isInteger(port) && port > 0, `replica ${this.index} printed ${stdout.text}`);
    await this.#stdin.write(new TextEncoder().encode(`${this.configPath}\n`));
    this.network.setUpstream(this.index, port);
  }

  async kill(): Promise<void> {
    const process = this.#process;
    if (process === undefined) return;
    this.#process = undefined;
    this.network.setUpstream(this.index, undefined);
    signalChild(process, "SIGKILL");
    await process.status;
    await this.#stdin?.close().catch(() => {});
    this.#stdin = undefined;
  }

  async restart(): Promise<void> {
    await this.kill();
    await this.start();
  }

  signal(sig: Deno.Signal): void {
    if (this.#process !== undefined) signalChild(this.#process, sig);
  }
}

Deno.test({
  name: "real replicas stay linearizable through kills, restarts, pauses and partitions",
  fn: async () => {
    const prng = new Prng(SEED);
    const dir = await Deno.makeTempDir({ prefix: "vstamp-nemesis-" });
    const network = FaultNetwork.start(REPLICAS);
    const configPath = `${dir}/config.yaml`;
    await Deno.writeTextFile(configPath, renderConfig(network.addresses));
    const replicas = Array.from(
      { length: REPLICAS },
      (_, i) => new ReplicaProcess(i, configPath, `${dir}/replica-${i}`, network),
    );
    const history: HistoryOperation[] = [];
    const clients: KvClient[] = [];
    let completed = 0;
    let stop = false;
    let clientFailure: unknown;
    const diagnostics = () =>
      replicas.map((r) => `replica ${r.index} stderr:\n${r.stderr.slice(-2000)}`).join("\n");

    const record = async (client: KvClient, clientId: number, key: string, call: KvCall) => {
      const invokeTime = performance.now();
      try {
        let output: string | number | null;
        if (call.kind === "set") {
          await client.set(key, call.value);
          output = call.value;
        } else if (call.kind === "get") {
          output = await client.getString(key);
        } else {
          output = (await client.del(key)) ? 1 : 0;
        }
        history.push({ clientId, key, call, invokeTime, returnTime: performance.now(), output });
        completed++;
      } catch (error) {
        // An error result is a bug; a request that got no answer in time may or may not happen.
        if (error instanceof KvError || !(error instanceof ClientError)) throw error;
        history.push({ clientId, key, call, invokeTime, returnTime: undefined, output: null });
      }
    };

    const clientLoop = async (clientId: number) => {
      const random = prng.fork(clientId);
      const client = await KvClient.connect({
        addresses: network.addresses,
        deadlineMs: REQUEST_DEADLINE_MS,
      });
      clients.push(client);
      let written = 0;
      while (!stop) {
        const key = KEYS[random.int(0, KEYS.length - 1)]!;
        const draw = random.float();
        const call: KvCall = draw < 0.5
          ? { kind: "set", value: `c${clientId}-${written++}` }
          : draw < 0.9
          ? { kind: "get" }
          : { kind: "del" };
        await record(client, clientId, key, call);
      }
    };

    const awaitProgress = async (why: string) => {
      const target = completed + PROGRESS_OPS;
      await waitFor(
        () => completed >= target || clientFailure !== undefined,
        RECOVERY_TIMEOUT_MS,
        () => `${PROGRESS_OPS} operations to complete ${why}\n${diagnostics()}`,
      );
      if (clientFailure !== undefined) throw clientFailure;
    };

    const primaryIndex = async (): Promise<number> => {
      const primary = primaryRow(await statusRows(configPath));
      return primary?.index ?? prng.int(0, REPLICAS - 1);
    };

    let loops: Promise<void>[] = [];
    try {
      await Promise.all(replicas.map((r) => r.start()));
      loops = Array.from(
        { length: CLIENTS },
        (_, i) => clientLoop(i + 1).catch((error) => void (clientFailure ??= error)),
      );
      await awaitProgress("at the start");

      for (const fault of FAULTS) {
        // Isolating or cutting the clients off a backup would change little: aim at the primary.
        const atPrimary = fault !== "kill" && fault !== "kill-all" && fault !== "one-way" &&
          fault !== "delay";
        const victim = atPrimary ? await primaryIndex() : prng.int(0, REPLICAS - 1);
        switch (fault) {
          case "kill":
          case "kill-primary":
            await replicas[victim]!.kill();
            break;
          case "kill-all":
            await Promise.all(replicas.map((r) => r.kill()));
            break;
          case "pause-primary":
            replicas[victim]!.signal("SIGSTOP");
            break;
          case "isolate":
            network.isolate(victim, REPLICAS);
            break;
          case "primary-without-backups":
            // Clients still reach it: it must not answer what its backups never acknowledged.
            network.cutFromReplicas(victim, REPLICAS);
            break;
          case "one-way": {
            const other = (victim + 1 + prng.int(0, REPLICAS - 2)) % REPLICAS;
            network.cut(victim, other);
            break;
          }
          case "cut-clients":
            network.cut("client", victim);
            break;
          case "delay":
            // Above the client's retry period and near the backups' primary timeout.
            network.delay(200);
            break;
        }
        const refusedBefore = network.refused;
        await new Promise((resolve) => setTimeout(resolve, FAULT_MS));
        if (fault === "isolate" || fault === "primary-without-backups" || fault === "one-way") {
          assert.ok(network.refused > refusedBefore, `${fault} of ${victim} closed nothing`);
        }
        network.heal();
        if (fault === "kill" || fault === "kill-primary") await replicas[victim]!.restart();
        if (fault === "kill-all") await Promise.all(replicas.map((r) => r.restart()));
        if (fault === "pause-primary") replicas[victim]!.signal("SIGCONT");
        await awaitProgress(`after ${fault} of replica ${victim} healed`);
      }
      stop = true;
      await Promise.all(loops);
      if (clientFailure !== undefined) throw clientFailure;

      // Every key read once more, after the faults: these answers must be the final values.
      const reader = await KvClient.connect({ addresses: network.addresses });
      clients.push(reader);
      for (const key of KEYS) await record(reader, CLIENTS + 1, key, { kind: "get" });
      for (const op of history.slice(-KEYS.length)) {
        assert.ok(op.returnTime !== undefined, `the final read of ${op.key} got no answer`);
      }

      const result = checkLinearizable(history);
      assert.ok(result.ok, result.ok ? "" : result.message);

      // The group converges: every replica normal, in one view, with the same op and commit.
      const rows = await waitFor(
        async () => {
          const rows = await statusRows(configPath, { digest: true });
          const primary = primaryRow(rows);
          return primary !== undefined &&
              rows.every((row) =>
                row.reachable && row.status === "normal" &&
                row.viewNumber === primary.viewNumber &&
                row.opNumber === primary.opNumber && row.commitNumber === primary.commitNumber &&
                row.lag === 0
              )
            ? rows
            : undefined;
        },
        RECOVERY_TIMEOUT_MS,
        () => `every replica to converge\n${diagnostics()}`,
      );
      assert.ok(rows[0]!.viewNumber! > 0, "the faults caused no view change");
      // At one commit-number every replica has executed the same ops: the same state.
      assert.ok(rows[0]!.digest !== undefined && rows[0]!.digest !== "", "no digest in status");
      assert.deepEqual(
        rows.map((row) => row.digest),
        rows.map(() => rows[0]!.digest),
        `the replicas' states differ at commit ${rows[0]!.commitNumber}`,
      );
    } finally {
      stop = true;
      await Promise.allSettled(loops);
      for (const client of clients) client.close();
      for (const replica of replicas) {
        replica.signal("SIGCONT");
        await replica.kill();
      }
      network.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
