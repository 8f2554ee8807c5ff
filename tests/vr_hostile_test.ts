/**
 * The protocol core against messages that a buggy or hostile peer could send: every message here
 * passes the codec's checks (`src/transport/codec.ts`: shapes and the consistency of a message's
 * own fields), yet says something false about the sender or the group. The core must never fail
 * an assertion on such a message, nor let it into an unsafe or unrecoverable state: it drops it,
 * with a reason. One regression test per hole found, then a property-based fuzz of a small group.
 *
 * VR tolerates crashes, not lies: a forged Prepare that claims to come from the real primary of
 * the current view with invented entries can break agreement, and no check can stop it. What the
 * fuzz checks is what the core can promise: no exception, every replica's own invariants hold, and
 * once the forged messages stop, the group is live again.
 */
import { strict as assert } from "node:assert";
import { sha256 } from "../src/lib/sha256.ts";
import fc from "fast-check";
import { KvStore } from "../src/app/kv.ts";
import { bytesEqual } from "../src/lib/bytes.ts";
import { CHUNK_INDEX_LIMIT, EPOCH_MAX } from "../src/transport/codec.ts";
import { FRAME_BODY_BYTES_MAX } from "../src/transport/frame.ts";
import { CHECKPOINT_METADATA_BYTES, encodeCheckpointMetadata } from "../src/vr/checkpoint.ts";
import {
  CHECKPOINT_CHUNKS_PER_REQUEST_MAX,
  OP_NUMBER_MAX,
  VIEW_NUMBER_MAX,
  VIEW_NUMBER_STEP_MAX,
} from "../src/vr/constants.ts";
import {
  type LogEntry,
  type Message,
  REPLICA_MESSAGE_TYPES,
  type ReplicaMessage,
} from "../src/vr/message.ts";
import { initialMembership } from "../src/vr/membership.ts";
import { type DurableState, type Effect, Replica, type Superblock } from "../src/vr/replica.ts";
import { MemoryDisk, type PersistEffect } from "../src/sim/memory_disk.ts";
import { Cluster, kvGet, kvSet } from "./_harness.ts";

// ------------------------------------------------------------------ helpers for one replica

/** Replica `index` of a group of 3; restarted from `durable` when given. */
function makeReplica(index: number, durable?: DurableState, log?: string[]): Replica {
  return new Replica({
    chunkHash: sha256,
    replicaIndex: index,
    addresses: ["test:0", "test:1", "test:2"],
    app: new KvStore(),
    seed: 42 + index,
    durable,
    timing: { primaryTimeoutJitterTicks: 0 },
    limits: { quietPrepareBackups: 3 },
    log: log === undefined ? undefined : (level, text) => log.push(`${level} ${text}`),
  });
}

/** Hand `message` to the replica, complete every persist it asks for; all effects. */
function deliver(replica: Replica, message: Message): Effect[] {
  replica.onMessage(message);
  const effects = replica.drainEffects();
  for (let last = lastPersistId(effects); last > 0;) {
    replica.onPersisted(last);
    const more = replica.drainEffects();
    effects.push(...more);
    last = lastPersistId(more);
  }
  return effects;
}

function lastPersistId(effects: readonly Effect[]): number {
  let last = 0;
  for (const effect of effects) {
    if (effect.type === "persist_log" || effect.type === "persist_superblock") last = effect.id;
  }
  return last;
}

function sentTypes(effects: readonly Effect[]): string[] {
  return effects.flatMap((e) => e.type === "send" ? [`${e.message.type}>${e.to}`] : []);
}

function entry(opNumber: number, viewNumber: number, timestamp = 0): LogEntry {
  return {
    opNumber,
    viewNumber,
    clientId: 7,
    requestNumber: opNumber,
    operation: kvSet(`k${opNumber}`, `v${opNumber}.${viewNumber}`),
    timestamp,
  };
}

function entries(from: number, to: number, viewNumber: number): LogEntry[] {
  const out: LogEntry[] = [];
  for (let op = from; op <= to; op++) out.push(entry(op, viewNumber));
  return out;
}

function superblock(viewNumber: number, lastNormalView = viewNumber): Superblock {
  return { epoch: 0, viewNumber, lastNormalView, recovering: false };
}

/** Commit `count` SETs of client 1 through r0 and let the backups execute them. */
function commitSome(cluster: Cluster, count: number): void {
  for (let s = 1; s <= count; s++) {
    cluster.request(0, 1, s, kvSet(`key${s}`, `value${s}`));
    cluster.run();
  }
  cluster.tick(0, 5); // A heartbeat carries the commit-number to the backups.
  cluster.run();
}

/** The group commits a new request of a fresh client, sent to every replica, within a bound. */
function assertLive(cluster: Cluster, clientId: number): void {
  let rounds = 0;
  cluster.settleUntil(() => {
    if (cluster.resultsTo(clientId).length > 0) return true;
    // The client sends, and re-sends after a client timeout.
    if (rounds++ % 20 === 0) cluster.requestAll(clientId, 1, kvSet(`live${clientId}`, "yes"));
    return false;
  }, 2_000);
}

// ------------------------------------------------------------------ view numbers

Deno.test("hostile StartViewChange of view 2^53 - 1 is ignored and the group still changes views", () => {
  const cluster = new Cluster();
  commitSome(cluster, 2);
  // A forged view 2^53 - 1 once moved the group there; the next view change, to 2^53 + 1, is
  // 2^53 in floating point and every replica failed "a view change must move to a later view".
  for (const to of [0, 1, 2]) {
    cluster.inject((to + 1) % 3, to, {
      type: "start_view_change",
      epoch: 0,
      viewNumber: Number.MAX_SAFE_INTEGER,
      replica: (to + 1) % 3,
    });
  }
  cluster.run();
  assert.deepEqual([0, 1, 2].map((i) => cluster.replica(i).viewNumber), [0, 0, 0]);
  // The primary fails: the backups change views as usual.
  cluster.crash(0);
  cluster.settleUntil(() => cluster.replica(1).status === "normal" && cluster.replica(1).isPrimary);
  assert.equal(cluster.replica(1).viewNumber, 1);
  assertLive(cluster, 50);
});

Deno.test("hostile StartViewChange beyond VIEW_NUMBER_MAX is ignored", () => {
  const log: string[] = [];
  const backup = makeReplica(1, undefined, log);
  const effects = deliver(backup, {
    type: "start_view_change",
    epoch: 0,
    viewNumber: VIEW_NUMBER_MAX + 1,
    replica: 2,
  });
  assert.deepEqual(effects, []);
  assert.equal(backup.viewNumber, 0);
  assert.equal(backup.status, "normal");
  assert.ok(log.some((line) => line.startsWith("warn ") && line.includes("VIEW_NUMBER_MAX")));
});

Deno.test("hostile StartViewChange far ahead moves a replica one step only, and the group follows", () => {
  const cluster = new Cluster();
  commitSome(cluster, 2);
  cluster.inject(2, 1, {
    type: "start_view_change",
    epoch: 0,
    viewNumber: VIEW_NUMBER_MAX,
    replica: 2,
  });
  cluster.deliver();
  assert.equal(cluster.replica(1).viewNumber, VIEW_NUMBER_STEP_MAX);
  assert.equal(cluster.replica(1).status, "view_change");
  // Its StartViewChange for that view is within a step of the others: the group changes views.
  cluster.settleUntil(() =>
    [0, 1, 2].every((i) => cluster.replica(i).status === "normal") &&
    cluster.replica(0).viewNumber === VIEW_NUMBER_STEP_MAX
  );
  assertLive(cluster, 53);
});

Deno.test("a replica that raced far ahead alone pulls the group along a step at a time", () => {
  // r2 was cut off for a week: its own timeouts took it 2^21 views ahead.
  const cluster = new Cluster();
  commitSome(cluster, 2);
  cluster.crash(2);
  const ahead = 2 * VIEW_NUMBER_STEP_MAX + 7;
  cluster.disks[2]!.superblock = {
    epoch: 0,
    viewNumber: ahead,
    lastNormalView: 0,
    recovering: false,
  };
  cluster.restart(2);
  cluster.settleUntil(() =>
    [0, 1, 2].every((i) => cluster.replica(i).status === "normal") &&
    cluster.replica(0).viewNumber >= ahead
  );
  assertLive(cluster, 54);
});

Deno.test("a straggler far behind a silent primary gets the primary's view in answer to its StartViewChange", () => {
  // The group is in view 2^20 (one forged StartViewChange took it there), whose primary is r1.
  const cluster = new Cluster();
  commitSome(cluster, 2);
  cluster.inject(0, 1, {
    type: "start_view_change",
    epoch: 0,
    viewNumber: VIEW_NUMBER_MAX,
    replica: 0,
  });
  cluster.settleUntil(() => cluster.replica(1).status === "normal" && cluster.replica(1).isPrimary);
  assert.equal(cluster.replica(1).viewNumber, VIEW_NUMBER_STEP_MAX);
  // r2 goes down; r0 comes back with the superblock of view 0 (its later writes lost). r1 hears
  // no backup and falls silent, and r0's view changes, a view at a time, would not reach 2^20.
  cluster.crash(2);
  cluster.crash(0);
  cluster.settle(50); // r1 falls silent: no heartbeat will tell r0 of view 2^20.
  assert.equal(cluster.inFlight.length, 0);
  cluster.disks[0]!.superblock = superblock(0);
  cluster.restart(0);
  // (r1, silent for a second timeout, starts a view change itself: the group may be a view or
  // two past 2^20 by then.)
  cluster.settleUntil(() => {
    const r0 = cluster.replica(0);
    return r0.status === "normal" && r0.viewNumber >= VIEW_NUMBER_STEP_MAX &&
      r0.viewNumber === cluster.replica(1).viewNumber;
  }, 500);
  assertLive(cluster, 55);
});

Deno.test("hostile StartView of view 2^53 - 1 from that view's primary is ignored", () => {
  const backup = makeReplica(2);
  const viewNumber = Number.MAX_SAFE_INTEGER; // Its primary is replica 1.
  deliver(backup, {
    type: "start_view",
    epoch: 0,
    viewNumber,
    anchorOpNumber: 0,
    entries: [],
    opNumber: 0,
    commitNumber: 0,
    replica: viewNumber % 3,
  });
  assert.equal(backup.viewNumber, 0);
  assert.equal(backup.status, "normal");
});

Deno.test("a replica whose own timeouts reach VIEW_NUMBER_MAX stays there instead of overflowing", () => {
  // A superblock at the last view (written by a group that really got there, or before the bound).
  const log: string[] = [];
  const backup = makeReplica(2, {
    superblock: superblock(VIEW_NUMBER_MAX),
    log: [],
    commitNumber: 0,
    logTrusted: true,
  }, log);
  assert.equal(backup.status, "normal");
  for (let t = 1; t <= 200; t++) backup.tick(t * 10);
  backup.drainEffects();
  assert.equal(backup.viewNumber, VIEW_NUMBER_MAX);
  assert.ok(log.some((line) => line.includes("beyond VIEW_NUMBER_MAX")));
  assert.ok(log.filter((line) => line.startsWith("warn ")).length <= 10, "one warning a timeout");
});

// ------------------------------------------------------------------ sender roles

Deno.test("hostile Prepare from a replica that is not the primary of its view appends nothing", () => {
  const backup = makeReplica(1);
  const effects = deliver(backup, {
    type: "prepare",
    epoch: 0,
    viewNumber: 0,
    entries: [entry(1, 0)],
    commitNumber: 1,
    replica: 2,
  });
  assert.equal(backup.opNumber, 0);
  assert.equal(backup.commitNumber, 0);
  assert.deepEqual(sentTypes(effects), []);
});

Deno.test("hostile Commit from a replica that is not the primary of its view commits nothing", () => {
  const backup = makeReplica(1);
  deliver(backup, {
    type: "prepare",
    epoch: 0,
    viewNumber: 0,
    entries: entries(1, 3, 0),
    commitNumber: 0,
    replica: 0,
  });
  assert.equal(backup.opNumber, 3);
  deliver(backup, {
    type: "commit",
    epoch: 0,
    viewNumber: 0,
    commitNumber: 2,
    replica: 2,
    readRound: 0,
  });
  assert.equal(backup.commitNumber, 0);
  deliver(backup, {
    type: "commit",
    epoch: 0,
    viewNumber: 0,
    commitNumber: 2,
    replica: 0,
    readRound: 0,
  });
  assert.equal(backup.commitNumber, 2, "the primary's Commit still commits");
});

Deno.test("hostile DoViewChange sent to a replica that is not the new primary does not move its view", () => {
  const backup = makeReplica(2);
  deliver(backup, {
    type: "do_view_change",
    epoch: 0,
    viewNumber: 1, // Its primary is replica 1.
    lastNormalView: 0,
    opNumber: 0,
    commitNumber: 0,
    entries: [],
    replica: 0,
  });
  assert.equal(backup.viewNumber, 0);
  assert.equal(backup.status, "normal");
});

Deno.test("hostile StartViewChange claiming to come from the replica itself does not count", () => {
  // r2 changes to view 1 by its own timeout; with f = 1 it needs a StartViewChange from one other
  // replica before it sends its DoViewChange to r1. One "from" itself is forged.
  const replica = makeReplica(2);
  for (let t = 1; t <= 25; t++) replica.tick(t * 10);
  replica.onPersisted(lastPersistId(replica.drainEffects()));
  replica.drainEffects();
  assert.equal(replica.status, "view_change");
  const forged = deliver(replica, {
    type: "start_view_change",
    epoch: 0,
    viewNumber: 1,
    replica: 2,
  });
  assert.deepEqual(sentTypes(forged), []);
  const genuine = deliver(replica, {
    type: "start_view_change",
    epoch: 0,
    viewNumber: 1,
    replica: 0,
  });
  assert.deepEqual(sentTypes(genuine), ["do_view_change>1"]);
});

Deno.test("hostile RecoveryResponse claiming isPrimary from a backup of its view is not installed", () => {
  const log: string[] = [];
  const recovering = makeReplica(2, {
    superblock: superblock(0),
    log: [],
    commitNumber: 0,
    logTrusted: false,
  }, log);
  const effects = recovering.drainEffects();
  recovering.onPersisted(lastPersistId(effects));
  const recovery = [...effects, ...recovering.drainEffects()].find((e) =>
    e.type === "send" && e.message.type === "recovery"
  );
  assert.ok(recovery !== undefined && recovery.type === "send");
  assert.ok(recovery.message.type === "recovery");
  const nonce = recovery.message.nonce;
  const response = (replica: number, isPrimary: boolean): Message => ({
    type: "recovery_response",
    epoch: 0,
    viewNumber: 0, // Its primary is replica 0.
    nonce,
    isPrimary,
    anchorOpNumber: 0,
    entries: isPrimary ? [entry(1, 0)] : [],
    opNumber: isPrimary ? 1 : 0,
    commitNumber: isPrimary ? 1 : 0,
    replica,
  });
  deliver(recovering, response(1, true));
  deliver(recovering, response(0, false));
  assert.equal(recovering.status, "recovering", "r1's claim is not a response of the primary");
  assert.equal(recovering.opNumber, 0);
  deliver(recovering, response(1, false));
  assert.equal(recovering.status, "recovering", "no response from the primary of view 0 yet");
  deliver(recovering, response(0, true));
  assert.equal(recovering.status, "normal", "the genuine primary's state is installed");
  assert.equal(recovering.opNumber, 1);
});

// ------------------------------------------------------------------ contradictions

Deno.test("hostile DoViewChange with a commit-number beyond the chosen log does not crash the new primary", () => {
  // r1 restarts as a backup of view 3 holding ops 1..2, committed; a StartViewChange moves it to
  // view 4, whose primary it is, and it sends itself its DoViewChange (last normal view 3).
  const log: string[] = [];
  const primary = makeReplica(1, {
    superblock: superblock(3),
    log: entries(1, 2, 3),
    commitNumber: 2,
    logTrusted: true,
  }, log);
  deliver(primary, { type: "start_view_change", epoch: 0, viewNumber: 4, replica: 2 });
  assert.equal(primary.status, "view_change");
  assert.equal(primary.viewNumber, 4);
  // A DoViewChange from an older normal view claims op 5 is committed: the chosen log (ours, of
  // view 3) ends at op 2. It used to fail "the chosen log lacks committed entries".
  deliver(primary, {
    type: "do_view_change",
    epoch: 0,
    viewNumber: 4,
    lastNormalView: 1,
    opNumber: 5,
    commitNumber: 5,
    entries: [],
    replica: 2,
  });
  assert.equal(primary.status, "view_change");
  assert.equal(primary.commitNumber, 2);
  assert.ok(log.some((line) => line.startsWith("warn ") && line.includes("op 5 is committed")));
  // The genuine DoViewChange of r2 (re-sent every retry) completes the view change.
  deliver(primary, {
    type: "do_view_change",
    epoch: 0,
    viewNumber: 4,
    lastNormalView: 3,
    opNumber: 2,
    commitNumber: 2,
    entries: [],
    replica: 2,
  });
  // Its own DoViewChange, dropped with the forged one, goes to itself again at the next retry.
  for (let t = 1; t <= 20; t++) {
    primary.tick(t * 10);
    primary.onPersisted(lastPersistId(primary.drainEffects()));
    primary.drainEffects();
  }
  assert.equal(primary.status, "normal");
  assert.equal(primary.viewNumber, 4);
  assert.equal(primary.opNumber, 2);
});

Deno.test("hostile DoViewChange whose log contradicts a committed entry is not chosen", () => {
  const log: string[] = [];
  const primary = makeReplica(1, {
    superblock: superblock(0),
    log: entries(1, 3, 0),
    commitNumber: 2,
    logTrusted: true,
  }, log);
  deliver(primary, { type: "start_view_change", epoch: 0, viewNumber: 1, replica: 2 });
  // Last normal in view 0 too, with a longer log, so the paper's choice; but its op 2, created in
  // view 1, is not the committed op 2 of view 0. It used to fail "committed op 2 differs".
  deliver(primary, {
    type: "do_view_change",
    epoch: 0,
    viewNumber: 1,
    lastNormalView: 0,
    opNumber: 4,
    commitNumber: 1,
    entries: [entry(2, 1), entry(3, 1), entry(4, 1)],
    replica: 2,
  });
  assert.ok(log.some((line) => line.includes("contradicts committed op 2: not chosen")));
  // The message still counts in the quorum: the view starts with the best other log, its own.
  assert.equal(primary.status, "normal");
  assert.equal(primary.viewNumber, 1);
  assert.equal(primary.opNumber, 3);
  assert.deepEqual([1, 2, 3].map((op) => primary.logEntry(op)!.viewNumber), [0, 0, 0]);
});

Deno.test("hostile StartView contradicting a committed entry is ignored and the backup keeps working", () => {
  const cluster = new Cluster();
  commitSome(cluster, 3);
  assert.equal(cluster.replica(2).commitNumber, 3);
  // "From" r1, the primary of view 1: op 2 created in view 1, though op 2 of view 0 is committed.
  cluster.inject(1, 2, {
    type: "start_view",
    epoch: 0,
    viewNumber: 1,
    anchorOpNumber: 0,
    entries: [entry(1, 0), entry(2, 1), entry(3, 1)],
    opNumber: 3,
    commitNumber: 1,
    replica: 1,
  });
  cluster.run();
  const r2 = cluster.replica(2);
  assert.equal(r2.viewNumber, 0);
  assert.equal(r2.status, "normal");
  assert.equal(r2.logEntry(2)!.viewNumber, 0);
  assertLive(cluster, 51);
  cluster.settle(10); // A heartbeat carries the commit to the backups.
  assert.equal(cluster.replica(2).commitNumber, 4);
});

Deno.test("hostile Prepare whose entry is stamped before the log's last entry is ignored", () => {
  const backup = makeReplica(1);
  deliver(backup, {
    type: "prepare",
    epoch: 0,
    viewNumber: 0,
    entries: [entry(1, 0, 1_000)],
    commitNumber: 0,
    replica: 0,
  });
  // Each message's timestamps are in order (the codec checks), but op 2 goes back from op 1.
  deliver(backup, {
    type: "prepare",
    epoch: 0,
    viewNumber: 0,
    entries: [entry(2, 0, 500)],
    commitNumber: 0,
    replica: 0,
  });
  assert.equal(backup.opNumber, 1);
});

Deno.test("hostile NewState whose entry is stamped before the log's last entry is ignored", () => {
  const backup = makeReplica(1);
  deliver(backup, {
    type: "prepare",
    epoch: 0,
    viewNumber: 0,
    entries: [entry(1, 0, 1_000)],
    commitNumber: 0,
    replica: 0,
  });
  deliver(backup, {
    type: "new_state",
    epoch: 0,
    viewNumber: 0,
    normal: true,
    anchorOpNumber: 1,
    entries: [entry(2, 0, 500)],
    opNumber: 2,
    commitNumber: 2,
    replica: 0,
  });
  assert.equal(backup.opNumber, 1);
  assert.equal(backup.commitNumber, 1);
});

Deno.test("hostile NewState with committed entries stamped before the log's last entry is ignored", () => {
  // r1, the new primary of view 1, fetches the committed op 2 that the chosen log starts after;
  // the answer's op 2 goes back in time from r1's op 1.
  const other = makeReplica(1, {
    superblock: superblock(0),
    log: [entry(1, 0, 5_000)],
    commitNumber: 1,
    logTrusted: true,
  });
  deliver(other, { type: "start_view_change", epoch: 0, viewNumber: 1, replica: 2 });
  deliver(other, {
    type: "do_view_change",
    epoch: 0,
    viewNumber: 1,
    lastNormalView: 0,
    opNumber: 3,
    commitNumber: 2,
    entries: [entry(3, 0, 6_000)],
    replica: 2,
  });
  deliver(other, {
    type: "new_state",
    epoch: 0,
    viewNumber: 0,
    normal: true,
    anchorOpNumber: 1,
    entries: [entry(2, 0, 100)],
    opNumber: 2,
    commitNumber: 2,
    replica: 2,
  });
  assert.equal(other.commitNumber, 1);
  assert.equal(other.status, "view_change");
});

Deno.test("hostile Commit naming an op-number beyond OP_NUMBER_MAX asks for no state", () => {
  const backup = makeReplica(1);
  const message = { type: "commit", epoch: 0, viewNumber: 0, replica: 0, readRound: 0 } as const;
  const effects = deliver(backup, { ...message, commitNumber: OP_NUMBER_MAX + 1 });
  assert.deepEqual(effects, []);
  // Within the bound, a Commit beyond the log is a reason to fetch state (§5.2).
  assert.deepEqual(sentTypes(deliver(backup, { ...message, commitNumber: 5 })), [
    "prepare_ok>0",
    "get_state>0",
  ]);
});

// ------------------------------------------------------------------ restarts

Deno.test("restart from disk with 3,000 uncommitted entries beyond the stored commit-number starts and commits", () => {
  // The stored commit-number is a lower bound: a backup's log may hold far more uncommitted
  // entries than the primary's pipeline. Such a data directory used to fail "uncommitted suffix
  // too long" on every start.
  const cluster = new Cluster();
  for (const i of [0, 1, 2]) cluster.crash(i);
  const log = entries(1, 3_000, 0);
  for (const i of [0, 1, 2]) {
    const disk = cluster.disks[i]!;
    disk.superblock = superblock(0);
    disk.log = log.slice();
    disk.commitNumber = i === 1 ? 0 : 3_000;
    disk.logIntact = true;
  }
  const r1 = cluster.restart(1);
  assert.equal(r1.status, "normal");
  assert.equal(r1.opNumber - r1.commitNumber, 3_000);
  cluster.tick(1);
  // r0 restarts as the primary of view 0 and starts view 1, whose primary is r1.
  cluster.restart(0);
  cluster.restart(2);
  cluster.settleUntil(() => r1.status === "normal" && r1.isPrimary && r1.commitNumber === 3_000);
  assert.equal(r1.viewNumber, 1);
  assertLive(cluster, 52);
  assert.equal(cluster.kvGet(1, "live52"), "yes");
});

// ------------------------------------------------------------------ fuzz

/**
 * Runs of each fuzz property: a few seconds in all. FUZZ_RUNS=10000 searches harder; a failure
 * prints fast-check's seed and path (pass them to `fc.assert` to replay it), and FUZZ_TRACE=1
 * prints every message delivered and every line the cores log.
 */
const FUZZ_RUNS = Number(Deno.env.get("FUZZ_RUNS") ?? 1_000);
const FUZZ_TRACE = Deno.env.get("FUZZ_TRACE") === "1";

/**
 * A group of three cores with their disks, in memory, run by hand: no Checker, since forged
 * messages may legitimately break the global invariants (agreement) that it checks. Persists
 * complete at once unless a disk is slow (`slowDisk`). After every step the stepped replica's own
 * invariants are checked.
 */
class FuzzGroup {
  readonly replicas: Replica[] = [];
  readonly disks: MemoryDisk[] = [];
  inFlight: { to: number; message: ReplicaMessage }[] = [];
  /** Client-ids that got a `reply`. */
  readonly replied = new Set<number>();
  /** The nonce of the latest Recovery each replica sent: a forged response may carry it. */
  readonly recoveryNonces = [0, 0, 0];
  nowMs = 0;
  readonly #incarnations = [0, 0, 0];
  readonly #slow = [false, false, false];
  #pending: PersistEffect[][] = [[], [], []];
  /** Per replica, in this incarnation: its view and commit-number, and the committed entries. */
  readonly #seen: { viewNumber: number; commitNumber: number; committed: LogEntry[] }[] = [];

  constructor() {
    for (let i = 0; i < 3; i++) {
      this.disks.push(new MemoryDisk());
    }
    for (let i = 0; i < 3; i++) this.#start(i, true);
  }

  /** Crash replica `i` (losing its log when `diskless`) and restart it from its disk. */
  restart(i: number, diskless: boolean): void {
    const disk = this.disks[i]!;
    this.#pending[i] = []; // Writes not yet durable are lost: the replica acknowledged none.
    if (diskless) disk.loseLog();
    this.#start(i, false);
  }

  tickAll(): void {
    this.nowMs += 10;
    for (let i = 0; i < 3; i++) this.#step(i, (replica) => replica.tick(this.nowMs));
  }

  send(to: number, message: Message): void {
    if (FUZZ_TRACE) {
      console.log(
        `${this.nowMs} -> r${to}: ${
          JSON.stringify(message, (_k, v) => v instanceof Uint8Array ? v.length : v)
        }`,
      );
    }
    this.#step(to, (replica) => replica.onMessage(message));
  }

  /** Deliver the message in flight at `index` (modulo their number), if any. */
  deliver(index: number): void {
    if (this.inFlight.length === 0) return;
    const [envelope] = this.inFlight.splice(index % this.inFlight.length, 1);
    this.send(envelope!.to, envelope!.message);
  }

  /** Deliver everything in flight, oldest first, until the network is quiet (or `max`). */
  deliverAll(max = 20_000): void {
    for (let count = 0; this.inFlight.length > 0 && count < max; count++) this.deliver(0);
  }

  /** The committed entries of replica `i` never change within an incarnation (§4.1). */
  checkCommitted(i: number): void {
    const replica = this.replicas[i]!;
    const seen = this.#seen[i]!;
    for (const [index, entry] of seen.committed.entries()) {
      const now = replica.logEntry(index + 1);
      assert.ok(
        now !== undefined && now.viewNumber === entry.viewNumber &&
          now.timestamp === entry.timestamp && now.clientId === entry.clientId &&
          now.requestNumber === entry.requestNumber,
        `r${i}: committed op ${index + 1} changed`,
      );
    }
    for (let op = seen.committed.length + 1; op <= replica.commitNumber; op++) {
      seen.committed.push(replica.logEntry(op)!);
    }
  }

  #start(i: number, fresh: boolean): void {
    const disk = this.disks[i]!;
    this.#incarnations[i]!++;
    const app = new KvStore();
    const replica = new Replica({
      chunkHash: sha256,
      replicaIndex: i,
      addresses: ["fuzz:0", "fuzz:1", "fuzz:2"],
      app,
      seed: 1_000 * (i + 1) + this.#incarnations[i]!,
      log: FUZZ_TRACE
        ? (level, text) => console.log(`${this.nowMs} r${i} ${level} ${text}`)
        : undefined,
      debug: FUZZ_TRACE,
      durable: fresh ? undefined : disk.load(app),
    });
    this.replicas[i] = replica;
    this.#seen[i] = { viewNumber: replica.viewNumber, commitNumber: 0, committed: [] };
    this.#afterStep(i);
  }

  #step(i: number, action: (replica: Replica) => void): void {
    action(this.replicas[i]!);
    this.#afterStep(i);
  }

  /** A slow disk holds its writes back (not durable) until it is made fast again. */
  slowDisk(i: number, slow: boolean): void {
    this.#slow[i] = slow;
    if (!slow) this.#afterStep(i);
  }

  #afterStep(i: number): void {
    const replica = this.replicas[i]!;
    for (;;) {
      for (const effect of replica.drainEffects()) {
        if (effect.type === "send") {
          // A forged StartEpoch or NewEpoch may name members beyond the group's three: nothing
          // answers at their addresses, as on a network.
          if (effect.to >= this.replicas.length) continue;
          this.inFlight.push({ to: effect.to, message: effect.message });
          if (effect.message.type === "recovery") this.recoveryNonces[i] = effect.message.nonce;
        } else if (effect.type === "reply") {
          if (effect.message.type === "reply") this.replied.add(effect.clientId);
        } else if (effect.type === "checkpoint") {
          replica.onCheckpointed(this.disks[i]!.writeCheckpoint(effect));
        } else if (effect.type === "truncate_log") {
          this.disks[i]!.truncateBefore(effect.beforeOpNumber);
        } else if (effect.type === "send_checkpoint_chunks") {
          // The fuzz group's replicas never checkpoint (the default interval): nothing to send.
        } else if (effect.type === "shut_down") {
          // Only a replica that left the group shuts down, and the fuzz group never reconfigures:
          // no forged message may make one leave.
          assert.fail(`r${i} shut down in epoch ${effect.epoch}, yet no reconfiguration ran`);
        } else {
          this.#pending[i]!.push(effect);
        }
      }
      const pending = this.#pending[i]!;
      if (this.#slow[i] || pending.length === 0) break;
      for (const effect of pending) this.#write(i, effect);
      this.#pending[i] = [];
      replica.onPersisted(pending[pending.length - 1]!.id);
    }
    this.#checkInvariants(i);
  }

  #write(i: number, effect: PersistEffect): void {
    this.disks[i]!.apply(effect);
  }

  /** Each replica's own invariants (the core asserts more of them itself after every step). */
  #checkInvariants(i: number): void {
    const replica = this.replicas[i]!;
    const seen = this.#seen[i]!;
    const state = `r${i} [${replica.status} v${replica.viewNumber} op${replica.opNumber} ` +
      `k${replica.commitNumber}]`;
    assert.ok(replica.viewNumber <= VIEW_NUMBER_MAX, `${state}: view beyond VIEW_NUMBER_MAX`);
    assert.ok(replica.viewNumber >= seen.viewNumber, `${state}: view went back`);
    assert.ok(replica.commitNumber >= seen.commitNumber, `${state}: commit went back`);
    assert.ok(replica.commitNumber <= replica.opNumber, `${state}: commit beyond op`);
    assert.ok(replica.lastNormalView <= replica.viewNumber, `${state}: last normal view ahead`);
    assert.ok(
      replica.status !== "normal" || replica.lastNormalView === replica.viewNumber,
      `${state}: normal outside its last normal view`,
    );
    assert.ok(replica.logDurableOpNumber <= replica.opNumber, `${state}: durable beyond op`);
    seen.viewNumber = replica.viewNumber;
    seen.commitNumber = replica.commitNumber;
  }
}

/** A number of a forged message: an edge value, or one relative to what its target holds. */
type NumberSpec =
  | { readonly kind: "value"; readonly value: number }
  | { readonly kind: "relative"; readonly base: NumberBase; readonly delta: number };

/** What a relative number is relative to: the target's view, op-number... or the sender's. */
type NumberBase =
  | "view"
  | "view_step"
  | "op"
  | "commit"
  | "sender_view"
  | "sender_last_normal_view"
  | "sender_op"
  | "sender_commit";

const EDGE_VALUES = [
  0,
  1,
  2,
  VIEW_NUMBER_STEP_MAX,
  VIEW_NUMBER_STEP_MAX + 1,
  VIEW_NUMBER_MAX - 1,
  VIEW_NUMBER_MAX,
  VIEW_NUMBER_MAX + 1,
  OP_NUMBER_MAX,
  OP_NUMBER_MAX + 1,
  Number.MAX_SAFE_INTEGER - 1,
  Number.MAX_SAFE_INTEGER,
];

const numberSpec: fc.Arbitrary<NumberSpec> = fc.oneof(
  {
    weight: 2,
    arbitrary: fc.constantFrom(...EDGE_VALUES).map((value) => ({ kind: "value" as const, value })),
  },
  { weight: 1, arbitrary: fc.nat({ max: 40 }).map((value) => ({ kind: "value" as const, value })) },
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant("relative"),
      base: fc.constantFrom<NumberBase>(
        "view",
        "view_step",
        "op",
        "commit",
        "sender_view",
        "sender_last_normal_view",
        "sender_op",
        "sender_commit",
      ),
      delta: fc.integer({ min: -2, max: 3 }),
    }),
  },
);

/** A forged replica message, built against the state of its target when it is injected. */
interface MessageSpec {
  readonly type: ReplicaMessage["type"];
  readonly from: number;
  readonly numbers: readonly NumberSpec[];
  readonly flags: readonly boolean[];
  readonly entryCount: number;
  /**
   * Copy entries from this replica's log where it holds them: 0..2, or 3 for the claimed sender's
   * log; -1 invents them all.
   */
  readonly entrySource: number;
  readonly entryView: NumberSpec;
  readonly timestampStep: number;
}

const messageSpec: fc.Arbitrary<MessageSpec> = fc.record({
  type: fc.constantFrom(...REPLICA_MESSAGE_TYPES),
  from: fc.integer({ min: 0, max: 2 }),
  numbers: fc.array(numberSpec, { minLength: 4, maxLength: 4 }),
  flags: fc.array(fc.boolean(), { minLength: 2, maxLength: 2 }),
  entryCount: fc.integer({ min: 0, max: 4 }),
  entrySource: fc.integer({ min: -1, max: 3 }),
  entryView: numberSpec,
  timestampStep: fc.constantFrom(0, 1, 10_000, Number.MAX_SAFE_INTEGER),
});

type Action =
  | { readonly kind: "deliver"; readonly count: number; readonly pick: number }
  | { readonly kind: "tick"; readonly count: number }
  | { readonly kind: "drop"; readonly pick: number }
  | {
    readonly kind: "request";
    readonly to: number;
    readonly client: number;
    readonly read: boolean;
  }
  | { readonly kind: "restart"; readonly replica: number; readonly diskless: boolean }
  | { readonly kind: "slow_disk"; readonly replica: number; readonly slow: boolean }
  | { readonly kind: "inject"; readonly to: number; readonly spec: MessageSpec };

const action: fc.Arbitrary<Action> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      kind: fc.constant("deliver"),
      count: fc.integer({ min: 1, max: 10 }),
      pick: fc.nat(),
    }),
  },
  {
    weight: 5,
    arbitrary: fc.record({ kind: fc.constant("tick"), count: fc.integer({ min: 1, max: 30 }) }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("drop"), pick: fc.nat() }) },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("request"),
      to: fc.integer({ min: 0, max: 2 }),
      client: fc.integer({ min: 1, max: 3 }),
      read: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("restart"),
      replica: fc.integer({ min: 0, max: 2 }),
      diskless: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("slow_disk"),
      replica: fc.integer({ min: 0, max: 2 }),
      slow: fc.boolean(),
    }),
  },
  {
    weight: 8,
    arbitrary: fc.record({
      kind: fc.constant("inject"),
      to: fc.integer({ min: 0, max: 2 }),
      spec: messageSpec,
    }),
  },
);

function resolve(spec: NumberSpec, target: Replica, sender: Replica): number {
  if (spec.kind === "value") return spec.value;
  const bases: { readonly [base in NumberBase]: number } = {
    view: target.viewNumber,
    view_step: target.viewNumber + VIEW_NUMBER_STEP_MAX,
    op: target.opNumber,
    commit: target.commitNumber,
    sender_view: sender.viewNumber,
    sender_last_normal_view: sender.lastNormalView,
    sender_op: sender.opNumber,
    sender_commit: sender.commitNumber,
  };
  return Math.min(Math.max(bases[spec.base] + spec.delta, 0), Number.MAX_SAFE_INTEGER);
}

/** The entries `from .. to` of `replica`'s log. */
function copies(replica: Replica, from: number, to: number): LogEntry[] {
  const out: LogEntry[] = [];
  for (let op = from; op <= to; op++) out.push(replica.logEntry(op)!);
  return out;
}

/**
 * The message `spec` describes, sent to `to`: well-formed as the codec checks it (entries
 * consecutive, created in views up to the message's, timestamps in order; commit-numbers within
 * op-numbers; a suffix ending where the message says), and otherwise arbitrary.
 */
function forge(group: FuzzGroup, to: number, spec: MessageSpec): ReplicaMessage {
  const target = group.replicas[to]!;
  const sender = group.replicas[spec.from]!;
  const [n0, n1, n2, n3] = spec.numbers.map((n) => resolve(n, target, sender)) as [
    number,
    number,
    number,
    number,
  ];
  const replica = spec.from;
  const count = spec.entryCount;
  /** `count` entries from `first` on, created in views up to `viewNumber`. */
  const makeEntries = (first: number, viewNumber: number): LogEntry[] => {
    const out: LogEntry[] = [];
    let timestamp = 0;
    for (let op = first; op < first + count; op++) {
      const source = spec.entrySource < 0
        ? undefined
        : group.replicas[spec.entrySource === 3 ? spec.from : spec.entrySource]!.logEntry(op);
      const invented: LogEntry = {
        opNumber: op,
        viewNumber: Math.min(viewNumber, resolve(spec.entryView, target, sender)),
        clientId: 100 + (op % 5),
        requestNumber: op,
        operation: kvSet(`forged${op % 7}`, `${op}`),
        timestamp: Math.min(timestamp + spec.timestampStep, Number.MAX_SAFE_INTEGER),
      };
      const entry = source !== undefined && source.viewNumber <= viewNumber ? source : invented;
      timestamp = Math.max(timestamp, entry.timestamp);
      out.push({ ...entry, timestamp });
    }
    return out;
  };
  /** A first op-number after which `count` entries still have safe op-numbers. */
  const room = (opNumber: number) => Math.min(opNumber, Number.MAX_SAFE_INTEGER - count);
  /** Chunk `index` of a forged checkpoint: the same bytes in its manifest and its chunk. */
  const forgedChunk = (index: number) => kvSet(`forged chunk ${index}`, `${n3}`);
  switch (spec.type) {
    case "prepare": {
      const first = Math.max(1, room(n2));
      return {
        type: "prepare",
        epoch: 0,
        viewNumber: n0,
        entries: makeEntries(first, n0),
        commitNumber: n1,
        replica,
      };
    }
    case "prepare_ok":
      return { type: "prepare_ok", epoch: 0, viewNumber: n0, opNumber: n1, replica, readRound: n2 };
    case "commit":
      return { type: "commit", epoch: 0, viewNumber: n0, commitNumber: n1, replica, readRound: n2 };
    case "start_view_change":
      return { type: "start_view_change", epoch: 0, viewNumber: n0, replica };
    case "do_view_change": {
      if (spec.flags[1]) {
        // The sender's own DoViewChange, for any view and any commit-number up to its own.
        const commitNumber = Math.min(n2, sender.commitNumber);
        return {
          type: "do_view_change",
          epoch: 0,
          viewNumber: Math.max(n0, sender.lastNormalView + 1),
          lastNormalView: sender.lastNormalView,
          opNumber: sender.opNumber,
          commitNumber,
          entries: copies(sender, commitNumber + 1, sender.opNumber),
          replica,
        };
      }
      const commitNumber = room(n2);
      return {
        type: "do_view_change",
        epoch: 0,
        viewNumber: n0,
        lastNormalView: Math.min(n1, n0),
        opNumber: commitNumber + count,
        commitNumber,
        entries: makeEntries(commitNumber + 1, n0),
        replica,
      };
    }
    case "start_view": {
      const anchor = room(n1);
      return {
        type: "start_view",
        epoch: 0,
        viewNumber: n0,
        anchorOpNumber: anchor,
        entries: makeEntries(anchor + 1, n0),
        opNumber: anchor + count,
        commitNumber: Math.min(n2, anchor + count),
        replica,
      };
    }
    case "request_start_view":
      return { type: "request_start_view", epoch: 0, viewNumber: n0, commitNumber: n1, replica };
    case "recovery":
      return { type: "recovery", epoch: 0, nonce: n0, commitNumber: n1, replica };
    case "recovery_response": {
      const nonce = spec.flags[1] ? group.recoveryNonces[to]! : n3;
      if (spec.flags[0]) {
        const anchor = room(n1);
        return {
          type: "recovery_response",
          epoch: 0,
          viewNumber: n0,
          nonce,
          isPrimary: true,
          anchorOpNumber: anchor,
          entries: makeEntries(anchor + 1, n0),
          opNumber: anchor + count,
          commitNumber: Math.min(n2, anchor + count),
          replica,
        };
      }
      return {
        type: "recovery_response",
        epoch: 0,
        viewNumber: n0,
        nonce,
        isPrimary: false,
        anchorOpNumber: n1,
        entries: [],
        opNumber: n2,
        commitNumber: Math.min(n1, n2),
        replica,
      };
    }
    case "get_state":
      return { type: "get_state", epoch: 0, viewNumber: n0, opNumber: n1, replica };
    case "new_state": {
      if (spec.flags[1]) {
        // Entries of the sender's log after any anchor within it, up to `count` of them.
        const anchor = Math.min(n1, sender.opNumber);
        const last = Math.min(anchor + count, sender.opNumber);
        return {
          type: "new_state",
          epoch: 0,
          viewNumber: n0,
          normal: spec.flags[0]!,
          anchorOpNumber: anchor,
          entries: copies(sender, anchor + 1, last),
          opNumber: sender.opNumber,
          commitNumber: Math.min(n3, sender.commitNumber),
          replica,
        };
      }
      const anchor = room(n1);
      const opNumber = count > 0 ? Math.max(n2, anchor + count) : n2;
      return {
        type: "new_state",
        epoch: 0,
        viewNumber: n0,
        normal: spec.flags[0]!,
        anchorOpNumber: anchor,
        entries: makeEntries(anchor + 1, n0),
        opNumber,
        commitNumber: Math.min(n3, opNumber),
        replica,
      };
    }
    case "checkpoint_manifest": {
      // `count + 1` chunks (a manifest has at least one), their lengths true unless flags[0].
      const chunks = Array.from({ length: count + 1 }, (_, index) => {
        const bytes = forgedChunk(index);
        const length = spec.flags[0] ? Math.min(n2, FRAME_BODY_BYTES_MAX) : bytes.byteLength;
        return { hash: sha256(bytes), length };
      });
      // Metadata that decodes, for the checkpoint's op-number, unless flags[1]: arbitrary bytes.
      const metadata = spec.flags[1]
        ? new Uint8Array(CHECKPOINT_METADATA_BYTES + 16).fill(n3 % 256)
        : encodeCheckpointMetadata({
          opNumber: n1,
          entryViewNumber: Math.min(n0, resolve(spec.entryView, target, sender)),
          entryTimestamp: spec.timestampStep,
          requestNumberFloor: 0,
          tableChunkCount: Math.min(n2, count + 1),
          membership: initialMembership(["fuzz:0", "fuzz:1", "fuzz:2"]),
        });
      return {
        type: "checkpoint_manifest",
        epoch: 0,
        viewNumber: n0,
        opNumber: n1,
        metadata,
        chunks,
        replica,
      };
    }
    case "get_checkpoint_chunks": {
      const indexes = new Set([n2 % CHUNK_INDEX_LIMIT]);
      for (let index = 0; index < count; index++) indexes.add(index);
      return {
        type: "get_checkpoint_chunks",
        epoch: 0,
        opNumber: n1,
        indexes: [...indexes].slice(0, CHECKPOINT_CHUNKS_PER_REQUEST_MAX),
        replica,
      };
    }
    case "checkpoint_chunk": {
      // A chunk of the forged checkpoint above (its hash matches), or of none at all.
      const index = spec.flags[1] ? n2 % CHUNK_INDEX_LIMIT : count;
      const bytes = spec.flags[0] ? forgedChunk(index) : kvGet(`not a chunk ${n3}`);
      return { type: "checkpoint_chunk", epoch: 0, opNumber: n1, index, bytes, replica };
    }
    case "start_epoch":
    case "new_epoch": {
      // A membership of some epoch (the next one unless flags[0]) that keeps the group's
      // addresses and adds `count` new ones; its members are one to three of them.
      const epoch = spec.flags[0] ? Math.min(n0, EPOCH_MAX) : 1;
      const addresses = ["fuzz:0", "fuzz:1", "fuzz:2"];
      for (let index = 0; index < count; index++) addresses.push(`fuzz:${3 + index}`);
      const members = [...new Set([n3 % addresses.length, addresses.length - 1, 0])];
      return {
        type: spec.type,
        epoch,
        opNumber: Math.min(n1, OP_NUMBER_MAX),
        startViewNumber: Math.min(n2, VIEW_NUMBER_MAX),
        addresses,
        members: spec.flags[1] ? members : members.slice(0, 1),
        previousMembers: epoch === 0 ? [] : [0, 1, 2],
        replica,
      };
    }
    case "epoch_started":
      return { type: "epoch_started", epoch: spec.flags[0] ? Math.min(n0, EPOCH_MAX) : 1, replica };
  }
}

/** Rounds (a tick of every replica, then every message delivered) for the group to commit. */
const LIVENESS_ROUNDS_MAX = 3_000;

/**
 * Run `actions`, then the group without faults. Throws if a step throws or breaks a replica's
 * invariants, or, unless `lies` are let in (see `liesAboutItsLog`), if the group does not commit
 * a new request within `LIVENESS_ROUNDS_MAX` rounds.
 */
function runFuzz(actions: readonly Action[], lies: boolean): void {
  const group = new FuzzGroup();
  const requestNumbers = [0, 0, 0, 0];
  for (const step of actions) {
    for (let i = 0; i < 3; i++) group.checkCommitted(i);
    switch (step.kind) {
      case "deliver":
        for (let k = 0; k < step.count; k++) group.deliver(step.pick + k);
        break;
      case "tick":
        for (let k = 0; k < step.count; k++) {
          group.tickAll();
          group.deliver(k);
        }
        break;
      case "drop":
        if (group.inFlight.length > 0) group.inFlight.splice(step.pick % group.inFlight.length, 1);
        break;
      case "request": {
        const requestNumber = ++requestNumbers[step.client]!;
        group.send(step.to, {
          type: "request",
          clientId: step.client,
          requestNumber,
          operation: step.read
            ? kvGet(`key${requestNumber % 3}`)
            : kvSet(`key${requestNumber % 3}`, `${step.client}.${requestNumber}`),
        });
        break;
      }
      case "restart": {
        // At most f = 1 replica may be without its log at a time: two lost logs are two faults.
        // A replica has its log back once a superblock saying so is durable.
        const othersRecovering = group.replicas.some((r, i) =>
          i !== step.replica &&
          (r.status === "recovering" || group.disks[i]!.superblock.recovering ||
            !group.disks[i]!.logIntact)
        );
        group.restart(step.replica, step.diskless && !othersRecovering);
        break;
      }
      case "slow_disk":
        group.slowDisk(step.replica, step.slow);
        break;
      case "inject": {
        const message = forge(group, step.to, step.spec);
        if (!lies && liesAboutItsLog(group, message)) break;
        group.send(step.to, message);
        break;
      }
    }
  }
  for (let i = 0; i < 3; i++) {
    group.slowDisk(i, false);
    group.checkCommitted(i);
  }
  // Fault-free from here on: a fresh client's request must commit.
  const clientId = 999;
  const operation = kvSet("live", "yes");
  for (let round = 0; !group.replied.has(clientId); round++) {
    if (round >= LIVENESS_ROUNDS_MAX) {
      if (lies) break; // Lies may leave the group stuck; the steps above must not have thrown.
      const states = group.replicas.map((r, i) =>
        `r${i}[${r.status} v${r.viewNumber} op${r.opNumber} k${r.commitNumber}]`
      );
      throw new Error(`not live after ${LIVENESS_ROUNDS_MAX} rounds: ${states.join(" ")}`);
    }
    if (round % 20 === 0) {
      for (let i = 0; i < 3; i++) {
        group.send(i, { type: "request", clientId, requestNumber: 1, operation });
      }
    }
    group.tickAll();
    group.deliverAll();
  }
  for (let i = 0; i < 3; i++) group.checkCommitted(i);
}

/**
 * Whether `message` lies about its claimed sender's own log, which no crashing or slow replica
 * does: entries the sender does not hold, commits beyond its own, a log that is not its own (a
 * DoViewChange's last-normal view and op-number, a primary's op-number), or a status it is not in
 * (normal primary of the view, for a Prepare, Commit, StartView or RecoveryResponse of the
 * view's primary; normal in the view, for a NewState that says so). Such a lie can make a replica
 * commit an entry no other replica holds, after which the group may never agree again: VR
 * tolerates crashes, not lies. Lies about views, senders, receivers, anchors, nonces and
 * acknowledgements stay in: those the core must survive and recover from.
 */
function liesAboutItsLog(group: FuzzGroup, message: ReplicaMessage): boolean {
  const sender = group.replicas[message.replica]!;
  const holds = (entries: readonly LogEntry[]) =>
    entries.every((entry) => {
      const ours = sender.logEntry(entry.opNumber);
      return ours !== undefined && ours.viewNumber === entry.viewNumber &&
        ours.clientId === entry.clientId && ours.requestNumber === entry.requestNumber &&
        ours.timestamp === entry.timestamp && bytesEqual(ours.operation, entry.operation);
    });
  const normalIn = (viewNumber: number) =>
    sender.status === "normal" && sender.viewNumber === viewNumber;
  const primaryOf = (viewNumber: number) => viewNumber % 3 === message.replica;
  switch (message.type) {
    case "prepare":
      return primaryOf(message.viewNumber) &&
        !(normalIn(message.viewNumber) && holds(message.entries) &&
          message.commitNumber <= sender.commitNumber);
    case "commit":
      return primaryOf(message.viewNumber) &&
        !(normalIn(message.viewNumber) && message.commitNumber <= sender.commitNumber);
    case "start_view":
    case "recovery_response":
      if (!primaryOf(message.viewNumber)) return false;
      if (message.type === "recovery_response" && !message.isPrimary) return false;
      return !(normalIn(message.viewNumber) && holds(message.entries) &&
        message.opNumber === sender.opNumber && message.commitNumber <= sender.commitNumber);
    case "new_state":
      return !(holds(message.entries) && message.commitNumber <= sender.commitNumber &&
        (!message.normal || normalIn(message.viewNumber)));
    case "do_view_change":
      return !(holds(message.entries) && message.lastNormalView === sender.lastNormalView &&
        message.opNumber === sender.opNumber && message.commitNumber <= sender.commitNumber);
    case "checkpoint_manifest":
      // The fuzz's replicas make no checkpoint (`LIMITS_DEFAULT.checkpointOpsInterval` ops are
      // far away): every manifest describes committed state its sender does not hold.
      return true;
    case "start_epoch":
    case "new_epoch":
      // The fuzz group never reconfigures: every membership names an epoch its sender is not in
      // (epoch 0 has no StartEpoch), or one it is in with members it does not have.
      return true;
    case "epoch_started":
      // No replica is in an epoch after 0 to have started it.
      return message.epoch !== 0;
    case "prepare_ok":
    case "start_view_change":
    case "request_start_view":
    case "recovery":
    case "get_state":
    case "get_checkpoint_chunks":
    // A chunk is checked against a manifest's hash; with no lying manifest, none matches.
    case "checkpoint_chunk":
      return false;
  }
}

const actions = fc.array(action, { minLength: 1, maxLength: 80, size: "max" });

Deno.test("fuzz: forged replica messages never throw and every replica's invariants hold", () => {
  fc.assert(fc.property(actions, (list) => runFuzz(list, true)), { numRuns: FUZZ_RUNS });
});

Deno.test("fuzz: after forged messages that tell no lies about their sender's log, the group is live", () => {
  fc.assert(fc.property(actions, (list) => runFuzz(list, false)), { numRuns: FUZZ_RUNS });
});
