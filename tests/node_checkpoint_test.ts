/**
 * §5.1 in a live replica (`src/transport/node.ts` over `DataDir`): checkpoints written as the log
 * grows, the log truncated behind them, a restart from the newest checkpoint that replays only the
 * log after it, and a replica that was away past the retained suffix fetching a checkpoint from
 * its peers and installing it. In this process, with small limits so that a few hundred
 * operations reach them.
 */
import { strict as assert } from "node:assert";
import { KvStore } from "../src/app/kv.ts";
import { KvClient } from "../src/client/kv_client.ts";
import { parseConfig, renderConfig, type ServerConfig } from "../src/config.ts";
import { DataDir, DataDirError, logSegmentFileName } from "../src/storage/data_dir.ts";
import { ReplicaNode } from "../src/transport/node.ts";
import type { Limits } from "../src/vr/constants.ts";
import type { LogEntry } from "../src/vr/message.ts";
import { kvSet } from "./_harness.ts";
import { waitFor } from "./_process.ts";

const DEADLINE_MS = 20_000;
/** A checkpoint every 50 ops, 20 entries kept before it: a few hundred SETs reach both. */
const LIMITS: Partial<Limits> = {
  checkpointOpsInterval: 50,
  // Every multiple of 50, however small the operations beside the state.
  checkpointWriteAmplificationMax: 1_000_000,
  logRetainOps: 20,
  checkpointChunkBytes: 1024,
};
/** About 25 single-SET records per segment, so that truncations delete whole segments. */
const LOG_SEGMENT_BYTES = 2048;

interface Group {
  readonly config: ServerConfig;
  readonly dataDirs: readonly string[];
  readonly root: string;
  /** Each replica's log lines, as "level text", debug lines left out; kept across restarts. */
  readonly lines: string[][];
  /** Per replica, the listener bound for its first start (a restart binds its port again). */
  readonly listeners: (Deno.Listener | undefined)[];
}

/** Replicas on ports the kernel picked. */
async function makeGroup(size: number): Promise<Group> {
  const listeners: Deno.Listener[] = [];
  for (let index = 0; index < size; index++) {
    listeners.push(Deno.listen({ hostname: "127.0.0.1", port: 0 }));
  }
  const ports = listeners.map((listener) => (listener.addr as Deno.NetAddr).port);
  const root = await Deno.makeTempDir({ prefix: "vstamp_node_checkpoint_test_" });
  const config = parseConfig(
    renderConfig(ports.map((port) => `127.0.0.1:${port}`)),
    "test.yaml",
  );
  return {
    config,
    root,
    dataDirs: ports.map((_, index) => `${root}/replica-${index}`),
    lines: ports.map(() => []),
    listeners,
  };
}

async function startReplica(
  group: Group,
  index: number,
  limits: Partial<Limits> = LIMITS,
): Promise<ReplicaNode> {
  const { host, port } = group.config.addresses[index]!;
  let listener = group.listeners[index];
  group.listeners[index] = undefined;
  // The port of a replica closed a moment ago may take a moment to be free again.
  listener ??= await waitFor(
    () => {
      try {
        return Deno.listen({ hostname: host, port });
      } catch (error) {
        if (error instanceof Deno.errors.AddrInUse) return undefined;
        throw error;
      }
    },
    DEADLINE_MS,
    `port ${port} free again`,
  );
  try {
    return await ReplicaNode.start({
      config: group.config,
      index,
      dataDir: group.dataDirs[index]!,
      sync: "none",
      app: new KvStore(),
      listener,
      limits,
      logSegmentBytes: LOG_SEGMENT_BYTES,
      log: (level, text) => {
        if (level !== "debug") group.lines[index]!.push(`${level} ${text}`);
      },
    });
  } catch (error) {
    // A listener handed over stays the caller's when the start fails (as in `vstamp server`).
    listener.close();
    throw error;
  }
}

async function names(path: string, pattern: RegExp): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(path)) {
    if (pattern.test(entry.name)) found.push(entry.name);
  }
  return found.sort();
}

const checkpointFiles = (path: string) => names(path, /^checkpoint\.\d{16}$/);
const logSegments = (path: string) => names(path, /^log\.\d{6,}$/);

/** The op-numbers of the checkpoints in place in `path`. */
async function checkpointOps(path: string): Promise<number[]> {
  return (await checkpointFiles(path)).map((name) => Number(name.slice("checkpoint.".length)));
}

async function setAll(address: string, from: number, to: number): Promise<void> {
  const kv = await KvClient.connect({ addresses: [address], deadlineMs: DEADLINE_MS });
  try {
    for (let i = from; i < to; i++) await kv.set(`key-${i}`, `value-${i}`);
  } finally {
    kv.close();
  }
}

async function expectAll(address: string, count: number): Promise<void> {
  const kv = await KvClient.connect({ addresses: [address], deadlineMs: DEADLINE_MS });
  try {
    for (let i = 0; i < count; i++) {
      assert.equal(await kv.getString(`key-${i}`), `value-${i}`, `key-${i}`);
    }
    assert.equal(await kv.size(), count);
  } finally {
    kv.close();
  }
}

/** Warnings and errors a replica logged, which a healthy run has none of. */
function complaints(lines: readonly string[]): string[] {
  return lines.filter((line) => !line.startsWith("info "));
}

Deno.test("ReplicaNode checkpoints, truncates its log, and restarts from the checkpoint replaying only the log after it", async () => {
  const group = await makeGroup(1);
  const address = group.config.addressTexts[0]!;
  const dataDir = group.dataDirs[0]!;
  const count = 500;
  let node: ReplicaNode | undefined = await startReplica(group, 0);
  try {
    await setAll(address, 0, count);
    const committed = node.replica.commitNumber;
    assert.ok(committed >= count, `commit ${committed}`);
    // Checkpoints were written as the log grew (at multiples of the interval; one that comes
    // while another is being written is skipped), and the log before them, less the retained
    // suffix, went: the first segment among the first.
    await waitFor(
      async () =>
        node!.status().checkpointOpNumber >= 2 * LIMITS.checkpointOpsInterval! &&
        !(await logSegments(dataDir)).includes(logSegmentFileName(1)),
      DEADLINE_MS,
      () => `checkpoints and a truncation: ${JSON.stringify(node!.status())}`,
    );
    assert.deepEqual(complaints(group.lines[0]!), []);
    const opNumber = node.replica.opNumber;
    await node.close();
    node = undefined;

    // On disk: the newest two checkpoints, at multiples of the interval, and the log from at
    // most the retained suffix before the newest on.
    const ops = await checkpointOps(dataDir);
    assert.equal(ops.length, 2, `checkpoints ${ops}`);
    const newest = ops[1]!;
    assert.ok(ops.every((op) => op > 0 && op % LIMITS.checkpointOpsInterval! === 0), `${ops}`);
    const segments = await logSegments(dataDir);
    assert.ok(segments.length >= 2 && segments[0] !== logSegmentFileName(1), `${segments}`);

    node = await startReplica(group, 0);
    // The state came from the newest checkpoint, and only the log after it was replayed.
    const restored = group.lines[0]!.filter((line) =>
      line.startsWith(`info restored the checkpoint of op ${newest} from `)
    );
    assert.equal(restored.length, 1, group.lines[0]!.join("\n"));
    const match = /the log on disk holds ops (\d+) to (\d+), (\d+) of them after the checkpoint$/
      .exec(restored[0]!);
    assert.ok(match !== null, restored[0]);
    const logStart = Number(match[1]);
    assert.equal(logStart, node.status().logStartOpNumber);
    assert.ok(
      logStart > 1 && logStart <= newest - LIMITS.logRetainOps! + 1,
      `the retained suffix stays: the log starts at op ${logStart}`,
    );
    assert.equal(Number(match[2]), opNumber);
    assert.equal(Number(match[3]), opNumber - newest);
    // The core holds no entry the checkpoint covers: it replayed the ops after it, no more.
    assert.equal(node.replica.logBaseOpNumber, newest);
    assert.equal(node.replica.checkpointOpNumber, newest);
    assert.equal(node.replica.opNumber, opNumber);
    // Restarted as primary, it starts the next view, which commits what the disk held.
    await waitFor(
      () => node!.replica.status === "normal" && node!.replica.commitNumber >= committed,
      DEADLINE_MS,
      () => `the replica serving: ${JSON.stringify(node!.status())}`,
    );
    await expectAll(address, count);
    // And it goes on: more writes, more checkpoints.
    await setAll(address, count, count + 60);
    await waitFor(
      () => node!.status().checkpointOpNumber > newest,
      DEADLINE_MS,
      () => `a checkpoint after op ${newest}: ${JSON.stringify(node!.status())}`,
    );
    assert.deepEqual(complaints(group.lines[0]!), []);
  } finally {
    await node?.close();
    for (const listener of group.listeners) listener?.close();
    await Deno.remove(group.root, { recursive: true });
  }
});

Deno.test("ReplicaNode that was away past the retained suffix fetches a checkpoint from its peers and installs it", async () => {
  const group = await makeGroup(3);
  const nodes: (ReplicaNode | undefined)[] = [];
  try {
    for (let index = 0; index < 3; index++) nodes.push(await startReplica(group, index));
    const addresses = group.config.addressTexts;
    const kvAddress = addresses[0]!;
    await setAll(kvAddress, 0, 60);
    // Replica 2 (a backup in view 0) goes away; the other two go on far past what they keep.
    const away = nodes[2]!.replica.opNumber;
    await nodes[2]!.close();
    nodes[2] = undefined;
    await setAll(kvAddress, 60, 300);
    const primary = nodes[0]!;
    const committed = primary.replica.commitNumber;
    for (const index of [0, 1]) {
      await waitFor(
        () => nodes[index]!.status().logStartOpNumber > away + 1,
        DEADLINE_MS,
        () =>
          `replica ${index} checkpointed and truncated: ${JSON.stringify(nodes[index]!.status())}`,
      );
    }

    // Back: its log ends before what its peers' logs start at, so it needs a checkpoint.
    nodes[2] = await startReplica(group, 2);
    const back = nodes[2];
    await waitFor(
      () => back.replica.checkpointStats.installed >= 1 && back.replica.commitNumber >= committed,
      DEADLINE_MS,
      () =>
        `replica 2 installed a checkpoint and caught up: ${JSON.stringify(back.status())}\n` +
        group.lines[2]!.join("\n"),
    );
    await waitFor(
      () => back.replica.app.digest() === primary.replica.app.digest(),
      DEADLINE_MS,
      "replica 2's state equal to the primary's",
    );
    // On its disk, once the install's persist is done: the checkpoint in place, the log rebased
    // onto it (the segments it held before gone).
    const dataDir = group.dataDirs[2]!;
    await waitFor(
      () => back.status().logStartOpNumber > away + 1,
      DEADLINE_MS,
      () => `replica 2's log rebased: ${JSON.stringify(back.status())}`,
    );
    const installed = (await checkpointOps(dataDir)).filter((op) => op > away);
    assert.ok(installed.length >= 1, `checkpoints ${await checkpointOps(dataDir)}`);
    assert.ok(!(await logSegments(dataDir)).includes(logSegmentFileName(1)));
    assert.deepEqual(await names(dataDir, /\.(tmp|install)$/), []);
    assert.deepEqual(
      complaints(group.lines[2]!).filter((line) => !line.includes("lost connection")),
      [],
    );

    // And it restarts from what it installed.
    await back.close();
    nodes[2] = await startReplica(group, 2);
    const restoredOps = group.lines[2]!.flatMap((line) => {
      const match = /^info restored the checkpoint of op (\d+) from /.exec(line);
      return match === null ? [] : [Number(match[1])];
    });
    assert.ok(restoredOps.at(-1)! >= installed.at(-1)!, group.lines[2]!.join("\n"));
    const again = nodes[2];
    await setAll(kvAddress, 300, 310);
    await waitFor(
      () =>
        again.replica.commitNumber >= primary.replica.commitNumber &&
        again.replica.app.digest() === primary.replica.app.digest(),
      DEADLINE_MS,
      "replica 2 follows again",
    );
    await expectAll(kvAddress, 310);
  } finally {
    for (const node of nodes) await node?.close();
    for (const listener of group.listeners) listener?.close();
    await Deno.remove(group.root, { recursive: true });
  }
});

/** Ops 1..`count`, each a SET of `key-<i>` by one client, as a replica's log holds them. */
function setEntries(count: number): LogEntry[] {
  return Array.from({ length: count }, (_, i) => ({
    opNumber: i + 1,
    viewNumber: 0,
    clientId: 77,
    requestNumber: i + 1,
    operation: kvSet(`key-${i}`, `value-${i}`),
    timestamp: 1_700_000_000_000 + i,
  }));
}

Deno.test("ReplicaNode with a checkpoint that does not restore: starts from the log if it starts at op 1, else refuses naming the file", async () => {
  const group = await makeGroup(1);
  const dataDir = group.dataDirs[0]!;
  try {
    // A directory whose newest checkpoint checks out on disk (every checksum right) but is not a
    // checkpoint of the core's: its metadata is not the core's.
    const opened = await DataDir.open(dataDir, { logSegmentBytes: LOG_SEGMENT_BYTES });
    const log = setEntries(120);
    // In batches, as a replica writes them: several segments, which a truncation can delete.
    for (let from = 1; from <= 120; from += 10) {
      await opened.dataDir.persist([{
        type: "persist_log",
        id: from,
        fromOpNumber: from,
        entries: log.slice(from - 1, from + 9),
        commitNumber: from + 9,
      }]);
    }
    const bogus = await opened.dataDir.writeCheckpoint(
      { opNumber: 100, viewNumber: 0, metadata: new TextEncoder().encode("not the core's") },
      [new Uint8Array([1, 2, 3])],
    );
    await opened.dataDir.close();

    // The log still starts at op 1: it alone rebuilds the state. (With the default limits, so
    // that no checkpoint of the replica's own replaces the one under test.)
    let node: ReplicaNode | undefined = await startReplica(group, 0, {});
    try {
      const warnings = complaints(group.lines[0]!);
      assert.equal(warnings.length, 1, warnings.join("\n"));
      assert.match(
        warnings[0]!,
        new RegExp(
          `^warn ${bogus.path}: cannot restore the checkpoint of op 100 \\(.+\\): starting ` +
            "without it, from the log, which starts at op 1$",
        ),
      );
      assert.equal(node.replica.checkpointOpNumber, 0);
      await waitFor(() => node!.replica.status === "normal", DEADLINE_MS, "the replica serving");
      await expectAll(group.config.addressTexts[0]!, 120);
    } finally {
      await node.close();
      node = undefined;
    }

    // Once the log before it is gone, the replica cannot start from this disk.
    const truncated = await DataDir.open(dataDir, {
      logSegmentBytes: LOG_SEGMENT_BYTES,
      allowTruncatedLog: true,
    });
    await truncated.dataDir.loadCheckpoint();
    const { deleted } = await truncated.dataDir.truncateBefore(101);
    assert.ok(deleted.length >= 1, "the log before the checkpoint went");
    const logStart = truncated.dataDir.logStartOpNumber;
    await truncated.dataDir.close();
    await assert.rejects(
      startReplica(group, 0, {}),
      (error: unknown) =>
        error instanceof DataDirError &&
        new RegExp(
          `^${bogus.path}: cannot restore the checkpoint of op 100 \\(.+\\), and the log on ` +
            `disk starts at op ${logStart}: the replica cannot start without it$`,
        ).test(error.message),
    );
  } finally {
    for (const listener of group.listeners) listener?.close();
    await Deno.remove(group.root, { recursive: true });
  }
});
