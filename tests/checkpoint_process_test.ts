/**
 * §5.1 on real processes: checkpoints under kill -9, a replica that was down far longer than the
 * retained suffix, and a whole group killed and restarted from its checkpoints.
 */
import { strict as assert } from "node:assert";
import { Client } from "../src/client/client.ts";
import {
  type Cluster,
  primaryRow,
  type RunningProcess,
  startServer,
  statusRows,
  waitFor,
  withCluster,
} from "./_process.ts";
import { get, set } from "./_kv.ts";

const REQUEST_DEADLINE_MS = 8_000;
const SETTLE_TIMEOUT_MS = 30_000;
/** Checkpoints every 50 ops, 20 entries kept before the newest: small, so that tests reach them. */
const SMALL = ["--checkpoint-interval", "50", "--log-retain", "20"];

/** The op-numbers of the checkpoint files in a data directory, and whether a temporary is there. */
async function checkpointFiles(dir: string): Promise<{ ops: number[]; tmp: boolean }> {
  const ops: number[] = [];
  let tmp = false;
  for await (const entry of Deno.readDir(dir)) {
    const match = /^checkpoint\.(\d{16})(\.tmp)?$/.exec(entry.name);
    if (match === null) continue;
    if (match[2] !== undefined) tmp = true;
    else ops.push(Number(match[1]));
  }
  return { ops: ops.sort((a, b) => a - b), tmp };
}

/** Waits until replica `index` is normal at the primary's commit-number; returns the rows. */
async function caughtUp(cluster: Cluster, index: number, process: RunningProcess) {
  return await waitFor(
    async () => {
      const rows = await statusRows(cluster.configPath);
      const primary = primaryRow(rows);
      const row = rows[index]!;
      return primary !== undefined && row.reachable && row.pid === process.process.pid &&
          row.status === "normal" && row.commitNumber === primary.commitNumber && row.lag === 0
        ? rows
        : undefined;
    },
    SETTLE_TIMEOUT_MS,
    () => `replica ${index} to catch up; its stderr:\n${process.output().stderr}`,
  );
}

Deno.test("a replica kept down past the retained suffix catches up by checkpoint", async () => {
  await withCluster(3, async (cluster) => {
    const client = await Client.connect({
      addresses: cluster.addresses,
      deadlineMs: REQUEST_DEADLINE_MS,
    });
    let restarted: RunningProcess | undefined;
    try {
      for (let i = 0; i < 10; i++) await set(client, `before-${i}`, `${i}`);
      const backup = (await statusRows(cluster.configPath)).find((row) => row.role === "backup")!;
      await cluster.killReplica(backup.index);
      // 300 ops: six checkpoints, and the others' logs now start far after what it holds.
      for (let i = 0; i < 300; i++) await set(client, `down-${i % 30}`, `${i}`);
      restarted = startServer(
        backup.index,
        cluster.configPath,
        cluster.replicaDataDir(backup.index),
        {
          cwd: cluster.dir,
        },
      );
      const rows = await caughtUp(cluster, backup.index, restarted);
      const row = rows[backup.index]!;
      assert.ok(row.commitNumber! >= 310, `commit ${row.commitNumber}`);
      // It holds a checkpoint it could only have fetched (it was down when the others took it),
      // once its disk follows its state: the checkpoint in place, the log after it (a rebase).
      const dir = cluster.replicaDataDir(backup.index);
      await waitFor(
        async () => (await checkpointFiles(dir)).ops.some((op) => op >= 300) || undefined,
        SETTLE_TIMEOUT_MS,
        () => `a checkpoint file of op 300 or later in ${dir}`,
      );
      const after = (await statusRows(cluster.configPath))[backup.index]!;
      assert.ok(after.logStartOpNumber! > 10, `its log starts at op ${after.logStartOpNumber}`);
      // Same state as the primary, by digest at one commit-number.
      const digests = await waitFor(
        async () => {
          const withDigest = await statusRows(cluster.configPath, { digest: true });
          const commits = new Set(withDigest.map((r) => r.commitNumber));
          return commits.size === 1 ? withDigest : undefined;
        },
        SETTLE_TIMEOUT_MS,
        "the replicas to agree on a commit-number",
      );
      assert.equal(new Set(digests.map((r) => r.digest)).size, 1, JSON.stringify(digests));
    } finally {
      client.close();
      await restarted?.stop();
    }
  }, { args: SMALL });
});

Deno.test("a replica killed during a checkpoint write restarts and loses nothing", async () => {
  // Large values make each checkpoint take a while to write: the kill lands while a temporary
  // checkpoint file is in the directory.
  await withCluster(3, async (cluster) => {
    const client = await Client.connect({
      addresses: cluster.addresses,
      deadlineMs: REQUEST_DEADLINE_MS,
    });
    let restarted: RunningProcess | undefined;
    try {
      const value = "x".repeat(20_000);
      for (let i = 0; i < 300; i++) await set(client, `big-${i}`, `${i}:${value}`);
      const backup = (await statusRows(cluster.configPath)).find((row) => row.role === "backup")!;
      const dir = cluster.replicaDataDir(backup.index);
      let writes = 0;
      let caught = false;
      const writer = (async () => {
        while (!caught && writes < 5_000) {
          await set(client, `big-${writes % 300}`, `${writes}:${value}`);
          writes++;
        }
      })();
      await waitFor(
        async () => (await checkpointFiles(dir)).tmp || undefined,
        60_000,
        () => `a temporary checkpoint file in ${dir} (after ${writes} writes)`,
        1,
      );
      await cluster.killReplica(backup.index);
      caught = true;
      await writer;
      restarted = startServer(backup.index, cluster.configPath, dir, { cwd: cluster.dir });
      await caughtUp(cluster, backup.index, restarted);
      // The torn checkpoint was deleted at the restart (a new one may be on its way meanwhile:
      // the replay passes op-numbers it checkpoints again), and the replica checkpoints again.
      const before = (await checkpointFiles(dir)).ops.at(-1) ?? 0;
      await waitFor(
        async () => {
          const files = await checkpointFiles(dir);
          return !files.tmp && (files.ops.at(-1) ?? 0) >= before || undefined;
        },
        SETTLE_TIMEOUT_MS,
        () => `no temporary checkpoint file in ${dir}`,
      );
      // The restart found the write cut short, and said so.
      assert.match(
        restarted.output().stderr,
        /a checkpoint write that never finished \(a crash during it\)/,
        restarted.output().stderr,
      );
      for (let i = 0; i < 300; i += 37) {
        const got = await get(client, `big-${i}`);
        assert.ok(got !== null && got.endsWith(value), `big-${i}`);
      }
    } finally {
      client.close();
      await restarted?.stop();
    }
  }, { args: ["--checkpoint-interval", "40", "--log-retain", "20"] });
});

Deno.test("all three replicas killed and restarted from their checkpoints lose no acknowledged write", async () => {
  await withCluster(3, async (cluster) => {
    const acknowledged = new Map<string, string>();
    let client = await Client.connect({
      addresses: cluster.addresses,
      deadlineMs: REQUEST_DEADLINE_MS,
    });
    const restarted: RunningProcess[] = [];
    try {
      for (let i = 0; i < 230; i++) {
        await set(client, `k${i % 70}`, `${i}`);
        acknowledged.set(`k${i % 70}`, `${i}`);
      }
      client.close();
      for (const index of [0, 1, 2]) await cluster.killReplica(index);
      for (const index of [0, 1, 2]) {
        const files = await checkpointFiles(cluster.replicaDataDir(index));
        assert.ok(files.ops.length > 0, `replica ${index} has no checkpoint`);
        restarted.push(
          startServer(index, cluster.configPath, cluster.replicaDataDir(index), {
            cwd: cluster.dir,
          }),
        );
      }
      client = await Client.connect({
        addresses: cluster.addresses,
        deadlineMs: REQUEST_DEADLINE_MS,
      });
      for (const [key, value] of acknowledged) assert.equal(await get(client, key), value, key);
      const rows = await statusRows(cluster.configPath);
      for (const row of rows) {
        assert.ok(row.reachable, `replica ${row.index} is up`);
        // Each restarted from its newest checkpoint (its log on disk still starts at op 1: a
        // 16 MiB segment goes only whole).
        assert.ok(row.checkpointOpNumber! >= 200, `replica ${row.index}: ${JSON.stringify(row)}`);
      }
    } finally {
      client.close();
      for (const process of restarted) await process.stop();
    }
  }, { args: SMALL });
});
