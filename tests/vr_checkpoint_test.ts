/**
 * §5.1 on the deterministic harness (tests/_harness.ts): checkpoints, a bounded log, restart from
 * a checkpoint, and state transfer by checkpoint, with the simulator's Checker on every step (its
 * invariants include the state digest and the client table against a model's).
 */
import { strict as assert } from "node:assert";
import type { Limits } from "../src/vr/constants.ts";
import type { CheckpointChunk } from "../src/vr/message.ts";
import { KvStore } from "../src/app/kv.ts";
import { Cluster, kvSet, ofType, resultOf } from "./_harness.ts";

/** Small limits: a checkpoint every 10 ops, and 5 entries kept before it. */
const SMALL: Partial<Limits> = {
  checkpointOpsInterval: 10,
  logRetainOps: 5,
  // Every multiple of 10, however small the operations beside the state.
  checkpointWriteAmplificationMax: 1_000_000,
  checkpointChunkBytes: 200,
  checkpointChunksInFlight: 2,
};

/**
 * Commit `count` SETs from client `clientId` through the primary, numbered from `first`, to `keys`
 * keys named after `key`.
 */
function commitSets(
  cluster: Cluster,
  clientId: number,
  first: number,
  count: number,
  key = "k",
  keys = 40,
) {
  for (let number = first; number < first + count; number++) {
    const primary = [...Array(cluster.n).keys()].find((i) =>
      cluster.isUp(i) && cluster.replica(i).status === "normal" && cluster.replica(i).isPrimary
    )!;
    cluster.request(primary, clientId, number, kvSet(`${key}${number % keys}`, `v${number}`));
    cluster.run();
    cluster.nowMs += 10;
    cluster.tickAll();
    cluster.run();
  }
}

function converged(cluster: Cluster, up: readonly number[]): boolean {
  const committed = cluster.checker.committedCount;
  return up.every((i) => {
    const r = cluster.replica(i);
    return r.status === "normal" && r.commitNumber === committed && r.opNumber === committed;
  });
}

Deno.test("checkpoints: every replica checkpoints at the same op-numbers and its log stays bounded", () => {
  const cluster = new Cluster({ limits: SMALL });
  commitSets(cluster, 1, 1, 95);
  cluster.settleUntil(() => converged(cluster, [0, 1, 2]));
  for (let i = 0; i < 3; i++) {
    const r = cluster.replica(i);
    assert.equal(r.checkpointOpNumber, 90, `r${i} checkpoint`);
    // The retained 5 entries, and back to the previous checkpoint (80): a replica that fetched
    // that one can still get the log after it.
    assert.equal(r.logBaseOpNumber, 80, `r${i} log base`);
    assert.equal(r.logEntry(80), undefined);
    assert.ok(r.logEntry(81) !== undefined);
    const disk = cluster.disks[i]!;
    assert.equal(disk.logStartOpNumber, 81, `r${i} disk log start`);
    assert.deepEqual(disk.checkpoints.map((c) => c.checkpoint.opNumber), [80, 90]);
  }
  // Same op-numbers, same state, same chunks: any replica can serve any chunk.
  const hashes = (i: number) =>
    cluster.disks[i]!.checkpoints[1]!.checkpoint.chunks.map((c) => c.hash.join(","));
  assert.deepEqual(hashes(0), hashes(1));
  assert.deepEqual(hashes(0), hashes(2));
});

Deno.test("checkpoints: a replica restarts from its checkpoint and replays only the log after it", () => {
  const cluster = new Cluster({ limits: SMALL });
  commitSets(cluster, 1, 1, 47);
  cluster.settleUntil(() => converged(cluster, [0, 1, 2]));
  cluster.crash(2);
  const restarted = cluster.restart(2);
  // Restored at op 40 (the newest checkpoint), the seven entries after it replayed from disk.
  assert.equal(restarted.logBaseOpNumber, 40);
  assert.equal(restarted.checkpointOpNumber, 40);
  assert.equal(restarted.opNumber, 47);
  cluster.settleUntil(() => converged(cluster, [0, 1, 2]));
  assert.equal(cluster.kvGet(2, "k7"), "v47");
});

Deno.test("checkpoints: a retried request answered before a checkpoint is not executed again after a restart from it", () => {
  const cluster = new Cluster({ limits: SMALL });
  commitSets(cluster, 7, 1, 3, "once");
  commitSets(cluster, 1, 1, 30);
  cluster.settleUntil(() => converged(cluster, [0, 1, 2]));
  // Every replica restarts from its checkpoint of op 30: client 7's request 3 is only in it.
  for (const i of [0, 1, 2]) cluster.crash(i);
  for (const i of [0, 1, 2]) cluster.restart(i);
  cluster.settleUntil(() =>
    [0, 1, 2].some((i) => cluster.replica(i).isPrimary && converged(cluster, [0, 1, 2]))
  );
  const committed = cluster.checker.committedCount;
  const primary = [0, 1, 2].find((i) => cluster.replica(i).isPrimary)!;
  cluster.request(primary, 7, 3, kvSet("once3", "v3"));
  cluster.run();
  const replies = cluster.resultsTo(7).filter((reply) => reply.requestNumber === 3);
  assert.equal(replies.length, 2, "the stored reply, sent again");
  assert.equal(resultOf(replies[1]!), "v3");
  assert.equal(replies[1]!.opNumber, 3);
  assert.equal(cluster.checker.committedCount, committed, "nothing executed again");
});

Deno.test("checkpoints: a replica kept down past the retained suffix catches up by checkpoint", () => {
  const cluster = new Cluster({ limits: SMALL });
  commitSets(cluster, 1, 1, 5);
  cluster.settleUntil(() => converged(cluster, [0, 1, 2]));
  cluster.crash(2);
  commitSets(cluster, 1, 6, 60);
  assert.ok(cluster.replica(0).logBaseOpNumber > 5, "the others truncated past what r2 holds");
  const r2 = cluster.restart(2);
  cluster.settleUntil(() => converged(cluster, [0, 1, 2]));
  assert.equal(r2.checkpointStats.installed, 1);
  assert.equal(r2.checkpointOpNumber, 60);
  assert.equal(cluster.kvGet(2, "k25"), "v65");
  // The checkpoint is on its disk, and its log continues after it.
  assert.equal(cluster.disks[2]!.newestCheckpointOpNumber, 60);
  cluster.crash(2);
  assert.equal(cluster.restart(2).logBaseOpNumber, 60);
  cluster.settleUntil(() => converged(cluster, [0, 1, 2]));
});

Deno.test("checkpoints: a replica away briefly fetches only the chunks its own state lacks", () => {
  // 400 keys in chunks of about 200 bytes: about 40 chunks, of which a few changed meanwhile.
  const cluster = new Cluster({ limits: { ...SMALL, checkpointOpsInterval: 50 } });
  for (let number = 1; number <= 400; number++) {
    cluster.request(0, 1, number, kvSet(`key${number}`, "x".repeat(20)));
    if (number % 20 === 0) {
      cluster.run();
      cluster.nowMs += 10;
      cluster.tickAll();
    }
  }
  cluster.settleUntil(() => converged(cluster, [0, 1, 2]));
  cluster.crash(2);
  commitSets(cluster, 2, 1, 120, "key", 3); // Changes key0, key1 and key2 only.
  const r2 = cluster.restart(2);
  cluster.settleUntil(() => converged(cluster, [0, 1, 2]));
  const stats = r2.checkpointStats;
  assert.equal(stats.installed, 1);
  assert.ok(stats.chunksReused > 3 * stats.chunksFetched, JSON.stringify(stats));
});

Deno.test("checkpoints: a transfer whose sender crashes midway goes on from another replica", () => {
  const cluster = new Cluster({ replicas: 5, limits: { ...SMALL, checkpointChunksInFlight: 1 } });
  commitSets(cluster, 1, 1, 3);
  cluster.settleUntil(() => converged(cluster, [0, 1, 2, 3, 4]));
  cluster.crash(4);
  commitSets(cluster, 1, 4, 40);
  const r4 = cluster.restart(4);
  // Let r4 learn of a checkpoint and receive one chunk, then crash whoever sends it chunks.
  for (let round = 0; !(r4.fetchingCheckpoint && r4.checkpointStats.chunksFetched >= 1); round++) {
    assert.ok(round < 500, `r4 fetched no chunk: ${cluster.describe()}`);
    cluster.nowMs += 10;
    cluster.tickAll();
    cluster.deliver();
  }
  const sender = cluster.sent.findLast((e) => e.to === 4 && e.message.type === "checkpoint_chunk")!
    .from;
  cluster.crash(sender);
  const up = [0, 1, 2, 3, 4].filter((i) => i !== sender);
  cluster.settleUntil(() => converged(cluster, up), 2_000);
  assert.equal(r4.checkpointStats.installed, 1);
  const senders = new Set(
    cluster.sent.filter((e) => e.to === 4 && e.message.type === "checkpoint_chunk").map((e) =>
      e.from
    ),
  );
  assert.ok(senders.size >= 2, `chunks came from ${[...senders]}`);
  cluster.restart(sender);
  cluster.settleUntil(() => converged(cluster, [0, 1, 2, 3, 4]));
});

Deno.test("checkpoints: a chunk that is not the one its manifest names is refused", () => {
  const cluster = new Cluster({ limits: SMALL });
  commitSets(cluster, 1, 1, 3);
  cluster.settleUntil(() => converged(cluster, [0, 1, 2]));
  cluster.crash(2);
  commitSets(cluster, 1, 4, 30);
  const r2 = cluster.restart(2);
  // Every chunk r2 is sent is damaged on the way (one bit), for a while.
  const forged = new WeakSet<object>();
  cluster.hold((e) => e.message.type === "checkpoint_chunk" && !forged.has(e.message));
  let damaged = 0;
  for (let round = 0; round < 300 && damaged < 3; round++) {
    cluster.nowMs += 10;
    cluster.tickAll();
    cluster.run();
    for (const envelope of cluster.drop(ofType("checkpoint_chunk"))) {
      const message = envelope.message as CheckpointChunk;
      if (forged.has(message)) continue;
      const bytes = message.bytes.slice();
      bytes[0] = bytes[0]! ^ 1;
      const copy: CheckpointChunk = { ...message, bytes };
      forged.add(copy);
      cluster.inject(envelope.from, envelope.to, copy);
      damaged++;
    }
    cluster.run();
  }
  cluster.release();
  assert.ok(damaged >= 3);
  assert.equal(r2.checkpointStats.installed, 0);
  assert.equal(r2.checkpointStats.chunksFetched, 0);
  cluster.settleUntil(() => converged(cluster, [0, 1, 2]));
  assert.equal(r2.checkpointStats.installed, 1);
});

Deno.test("checkpoints: a checkpoint waits until the log beneath it is durable (a restart never finds it above an older view's log)", () => {
  // r2 holds an older view's entries 4..30 durably; it rejoins view 1, whose log replaces them,
  // and commits past op 10 while that rewrite is not durable. A checkpoint of op 10 durable then
  // would leave, after a crash, the checkpoint above the older view's entries 11..30.
  const cluster = new Cluster({
    limits: {
      preparesInFlightMax: 64,
      checkpointOpsInterval: 10,
      checkpointWriteAmplificationMax: 1_000_000,
      logRetainOps: 40,
      checkpointChunkBytes: 200,
    },
  });
  const primary = () =>
    [0, 1, 2].find((i) =>
      cluster.isUp(i) && cluster.replica(i).status === "normal" && cluster.replica(i).isPrimary
    )!;
  for (let number = 1; number <= 3; number++) {
    cluster.request(0, 1, number, kvSet(`k${number}`, `v${number}`));
    cluster.run();
    cluster.nowMs += 10;
    cluster.tickAll();
    cluster.run();
  }
  cluster.settleUntil(() => [0, 1, 2].every((i) => cluster.replica(i).commitNumber === 3));
  cluster.cut(0, 1);
  cluster.cut(2, 0, true);
  cluster.holdPersists(0);
  for (let n = 4; n <= 30; n++) cluster.request(0, 100 + n, 1, kvSet(`s${n}`, `stale${n}`));
  cluster.run();
  cluster.crash(0, { loseUnsynced: true });
  cluster.heal();
  cluster.isolate(2);
  cluster.restart(0);
  cluster.releasePersists(0);
  cluster.settleUntil(() =>
    cluster.replica(primary() ?? 0).viewNumber >= 1 && primary() !== undefined
  );
  for (let number = 1; number <= 12; number++) {
    cluster.nowMs += 1000;
    cluster.request(primary(), 3, number, kvSet(`n${number}`, `new${number}`));
    cluster.run();
    cluster.tickAll();
    cluster.run();
  }
  cluster.settleUntil(() =>
    cluster.replica(0).commitNumber >= 15 && cluster.replica(1).commitNumber >= 15
  );
  cluster.holdPersists(2);
  cluster.heal();
  for (let round = 0; round < 300 && cluster.replica(2).commitNumber < 15; round++) {
    cluster.tickAll();
    cluster.run();
  }
  assert.ok(cluster.replica(2).commitNumber >= 15, cluster.describe());
  assert.equal(cluster.replica(2).checkpointOpNumber, 0, "no checkpoint before its log is durable");
  cluster.crash(2, { loseUnsynced: true });
  cluster.restart(2);
  cluster.settleUntil(() => converged(cluster, [0, 1, 2]));
  assert.equal(cluster.kvGet(2, "n12"), "new12");
});

Deno.test("checkpoints: a state large beside the operations is checkpointed less often", () => {
  // 40 keys of 200 bytes (a state of about 8 KB) and SETs of about 220 bytes: a checkpoint is due
  // every 10 ops, but each is taken only once 8 KB / 2 of operations were committed since the last.
  const cluster = new Cluster({ limits: { ...SMALL, checkpointWriteAmplificationMax: 2 } });
  for (let number = 1; number <= 200; number++) {
    cluster.request(0, 1, number, kvSet(`key${number % 40}`, "x".repeat(200)));
    cluster.run();
    cluster.nowMs += 10;
    cluster.tickAll();
    cluster.run();
  }
  cluster.settleUntil(() => converged(cluster, [0, 1, 2]));
  const taken = cluster.replica(0).checkpointStats.taken;
  assert.ok(taken >= 4 && taken <= 10, `${taken} checkpoints of the 20 due`);
  // The replicas took the same ones.
  assert.deepEqual(
    [1, 2].map((i) => cluster.replica(i).checkpointOpNumber),
    [cluster.replica(0).checkpointOpNumber, cluster.replica(0).checkpointOpNumber],
  );
});

Deno.test("a state machine whose snapshot throws gets no checkpoint, and its replicas go on serving", () => {
  let throwing = true;
  // The key-value store, but its snapshot throws while `throwing` (an app's bug).
  const cluster = new Cluster({
    limits: SMALL,
    app: () => {
      const store = new KvStore();
      const begin = store.beginSnapshot.bind(store);
      return Object.assign(store, {
        beginSnapshot: (chunkBytesTarget: number) => {
          if (throwing) throw new Error("snapshot bug");
          return begin(chunkBytesTarget);
        },
      });
    },
  });
  commitSets(cluster, 1, 1, 25);
  cluster.settleUntil(() => converged(cluster, [0, 1, 2]));
  for (let i = 0; i < 3; i++) {
    assert.equal(cluster.replica(i).checkpointOpNumber, 0, `r${i} took no checkpoint`);
    assert.equal(cluster.replica(i).commitNumber, 25);
  }
  // Fixed, the next interval checkpoints as usual.
  throwing = false;
  commitSets(cluster, 1, 26, 10);
  cluster.settleUntil(() => converged(cluster, [0, 1, 2]));
  for (let i = 0; i < 3; i++) assert.equal(cluster.replica(i).checkpointOpNumber, 30);
});
