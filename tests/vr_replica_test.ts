/**
 * Handler-level tests of the protocol core, one per rule of *Viewstamped Replication Revisited*
 * (Liskov & Cowling, 2012), named after the section they check. Some drive one `Replica` by hand
 * and look at its effects; others use the deterministic harness (tests/_harness.ts), whose
 * Checker also checks the global invariants after every step.
 */
import { sha256 } from "../src/lib/sha256.ts";
import { strict as assert } from "node:assert";
import { encodeKvOperation, KvStore } from "../src/app/kv.ts";
import type { ApplyContext, StateMachine } from "../src/app/state_machine.ts";
import type { Limits, Timing } from "../src/vr/constants.ts";
import type {
  DoViewChange,
  LogEntry,
  Message,
  RecoveryResponse,
  ReplicaMessage,
} from "../src/vr/message.ts";
import { type Effect, type PlantedBug, Replica } from "../src/vr/replica.ts";
import {
  Cluster,
  from,
  kvDel,
  kvGet,
  kvSet,
  ofType,
  requestName,
  resultOf,
  to,
} from "./_harness.ts";

// ------------------------------------------------------------------ helpers for one replica

interface ReplicaSetup {
  readonly n?: number;
  readonly plantedBug?: PlantedBug;
  readonly timing?: Partial<Timing>;
  readonly limits?: Partial<Limits>;
  readonly app?: StateMachine;
}

function makeReplica(index: number, setup: ReplicaSetup = {}): Replica {
  const n = setup.n ?? 3;
  return new Replica({
    chunkHash: sha256,
    replicaIndex: index,
    addresses: Array.from({ length: n }, (_, i) => `test:${i}`),
    app: setup.app ?? new KvStore(),
    seed: 42 + index,
    timing: { primaryTimeoutJitterTicks: 0, ...setup.timing },
    // Every Prepare to every backup at once, unless a test is about spares.
    limits: { quietPrepareBackups: n, ...setup.limits },
    plantedBug: setup.plantedBug,
  });
}

/** Hand `message` to the replica and return the effects of that one step (no persist done). */
function step(replica: Replica, message: Message): Effect[] {
  replica.onMessage(message);
  return replica.drainEffects();
}

/** Complete every persist among `effects` and return what the replica does then. */
function persist(replica: Replica, effects: readonly Effect[]): Effect[] {
  let last = 0;
  for (const effect of effects) {
    if (effect.type === "persist_log" || effect.type === "persist_superblock") last = effect.id;
  }
  if (last === 0) return [];
  replica.onPersisted(last);
  return replica.drainEffects();
}

/** Step, then complete the persists the step asked for; all effects of both. */
function stepDurable(replica: Replica, message: Message): Effect[] {
  const effects = step(replica, message);
  return [...effects, ...persist(replica, effects)];
}

function sendsOf<T extends ReplicaMessage["type"]>(
  effects: readonly Effect[],
  type?: T,
): { to: number; message: Extract<ReplicaMessage, { type: T }> }[] {
  const out: { to: number; message: Extract<ReplicaMessage, { type: T }> }[] = [];
  for (const effect of effects) {
    if (effect.type !== "send") continue;
    if (type !== undefined && effect.message.type !== type) continue;
    out.push({ to: effect.to, message: effect.message as Extract<ReplicaMessage, { type: T }> });
  }
  return out;
}

function repliesOf(effects: readonly Effect[]) {
  return effects.flatMap((e) => e.type === "reply" ? [e.message] : []);
}

function entry(opNumber: number, viewNumber: number, clientId = 7): LogEntry {
  return {
    opNumber,
    viewNumber,
    clientId,
    requestNumber: opNumber,
    operation: kvSet(`k${opNumber}`, `v${opNumber}.${viewNumber}`),
    timestamp: 0,
  };
}

function request(clientId: number, requestNumber: number, operation: Uint8Array): Message {
  return { type: "request", clientId, requestNumber, operation };
}

/** A KvStore that records the context of every operation it executes. */
class RecordingKv implements StateMachine {
  readonly kv = new KvStore();
  readonly seen: ApplyContext[] = [];
  apply(operation: Uint8Array, context: ApplyContext): Uint8Array {
    this.seen.push(context);
    return this.kv.apply(operation, context);
  }
  digest(): string {
    return this.kv.digest();
  }
  snapshot(): Uint8Array {
    return this.kv.snapshot();
  }
  restore(snapshot: Uint8Array): void {
    this.kv.restore(snapshot);
  }
}

/** Commit `count` SET requests of client 1 through the primary r0 and let every backup execute. */
function commitSome(cluster: Cluster, count: number, clientId = 1, firstRequest = 1): void {
  for (let s = firstRequest; s < firstRequest + count; s++) {
    cluster.request(0, clientId, s, kvSet(`key${s}`, `value${s}`));
    cluster.run();
  }
  // A heartbeat carries the commit-number to the backups.
  cluster.tick(0, 5);
  cluster.run();
}

// ------------------------------------------------------------------ §4.1 normal operation

Deno.test("§4.1 primary assigns consecutive op-numbers and sends one Prepare for requests of one turn", () => {
  const primary = makeReplica(0);
  primary.onMessage(request(101, 1, kvSet("a", "1")));
  primary.onMessage(request(102, 1, kvSet("b", "2")));
  const effects = primary.drainEffects();
  assert.equal(primary.opNumber, 2);
  assert.deepEqual(
    [primary.logEntry(1)!.opNumber, primary.logEntry(2)!.opNumber],
    [1, 2],
  );
  assert.equal(primary.logEntry(1)!.clientId, 101);
  assert.equal(primary.logEntry(2)!.clientId, 102);
  // The log write comes first, then one Prepare per backup carrying both entries.
  assert.equal(effects[0]!.type, "persist_log");
  const prepares = sendsOf(effects, "prepare");
  assert.deepEqual(prepares.map((p) => p.to), [1, 2]);
  for (const { message } of prepares) {
    assert.equal(message.viewNumber, 0);
    assert.equal(message.commitNumber, 0);
    assert.deepEqual(message.entries.map((e) => e.opNumber), [1, 2]);
    assert.deepEqual(message.entries.map((e) => e.viewNumber), [0, 0]);
  }
  // The next turn's request gets the next op-number, in a Prepare of its own.
  const next = step(primary, request(101, 2, kvSet("a", "3")));
  assert.equal(primary.opNumber, 3);
  const again = sendsOf(next, "prepare");
  assert.equal(again.length, 2);
  assert.deepEqual(again[0]!.message.entries.map((e) => e.opNumber), [3]);
});

Deno.test("§4.1 backup accepts a Prepare only in order and asks for state on a gap", () => {
  const backup = makeReplica(1);
  const prepare = (entries: LogEntry[], commitNumber = 0): Message => ({
    type: "prepare",
    epoch: 0,
    viewNumber: 0,
    entries,
    commitNumber,
    replica: 0,
  });
  // Op 1 in order: appended, acknowledged only once durable.
  const first = step(backup, prepare([entry(1, 0)]));
  assert.equal(backup.opNumber, 1);
  assert.equal(first.filter((e) => e.type === "persist_log").length, 1);
  assert.equal(sendsOf(first, "prepare_ok").length, 0, "no PrepareOk before the entry is durable");
  const oks = sendsOf(persist(backup, first), "prepare_ok");
  assert.deepEqual(oks, [{
    to: 0,
    message: { type: "prepare_ok", epoch: 0, viewNumber: 0, opNumber: 1, replica: 1, readRound: 0 },
  }]);

  // Op 3 with op 2 missing: not appended; the backup asks its primary for the state after op 1.
  const gap = stepDurable(backup, prepare([entry(3, 0)]));
  assert.equal(backup.opNumber, 1);
  assert.equal(backup.logEntry(3), undefined);
  assert.deepEqual(sendsOf(gap, "get_state"), [{
    to: 0,
    message: { type: "get_state", epoch: 0, viewNumber: 0, opNumber: 1, replica: 1 },
  }]);
  assert.deepEqual(
    sendsOf(gap, "prepare_ok").map((s) => s.message.opNumber),
    [1],
    "it acknowledges only what it holds in order",
  );

  // Op 2 then op 3 (the primary re-sends from the gap): appended in order; the piggybacked
  // commit-number makes the backup execute op 1.
  const fill = stepDurable(backup, prepare([entry(2, 0), entry(3, 0)], 1));
  assert.equal(backup.opNumber, 3);
  assert.equal(backup.commitNumber, 1);
  assert.deepEqual(sendsOf(fill, "prepare_ok").map((s) => s.message.opNumber), [3]);
  assert.equal(repliesOf(fill).length, 0, "a backup never replies to clients");

  // A re-sent Prepare of entries it holds: nothing appended, the PrepareOk is re-sent (the
  // primary may have lost it).
  const again = stepDurable(backup, prepare([entry(3, 0)]));
  assert.equal(backup.opNumber, 3);
  assert.deepEqual(sendsOf(again, "prepare_ok").map((s) => s.message.opNumber), [3]);
});

Deno.test("§4.1 PrepareOk is cumulative and the primary commits after f of them", () => {
  const primary = makeReplica(0, { n: 5 }); // f = 2
  for (let c = 1; c <= 3; c++) primary.onMessage(request(100 + c, 1, kvSet(`k${c}`, `v${c}`)));
  persist(primary, primary.drainEffects());
  const ok = (opNumber: number, replica: number): Message => ({
    type: "prepare_ok",
    epoch: 0,
    viewNumber: 0,
    opNumber,
    replica,
    readRound: 0,
  });
  // One backup holds everything: not enough (f = 2 backups are needed).
  assert.deepEqual(repliesOf(step(primary, ok(3, 1))), []);
  assert.equal(primary.commitNumber, 0);
  // The same backup again does not count twice.
  step(primary, ok(3, 1));
  assert.equal(primary.commitNumber, 0);
  // A second backup holding ops 1..2 (cumulative: no PrepareOk for op 1 needed) commits 1..2.
  const replies = repliesOf(step(primary, ok(2, 2)));
  assert.equal(primary.commitNumber, 2);
  assert.deepEqual(
    replies.map((r) => r.type === "reply" ? [r.clientId, r.opNumber, r.viewNumber] : []),
    [[101, 1, 0], [102, 2, 0]],
  );
  // A third backup at op 3 commits op 3.
  const third = repliesOf(step(primary, ok(3, 3)));
  assert.equal(primary.commitNumber, 3);
  assert.equal(third.length, 1);

  // The primary counts itself only once the entry is on its own disk.
  const effects = step(primary, request(104, 1, kvSet("k4", "v4")));
  step(primary, ok(4, 1));
  step(primary, ok(4, 2));
  assert.equal(primary.commitNumber, 3, "committed before its own log write was durable");
  persist(primary, effects);
  assert.equal(primary.commitNumber, 4);
});

Deno.test("§4.1 primary re-sends the stored reply for a duplicate of the latest request", () => {
  const cluster = new Cluster();
  cluster.request(0, 5, 1, kvDel("gone"));
  cluster.request(0, 5, 2, kvSet("x", "1"));
  cluster.run();
  const first = cluster.resultsTo(5);
  assert.equal(first.length, 2);
  const sentBefore = cluster.sent.length;
  cluster.request(0, 5, 2, kvSet("x", "1"));
  const all = cluster.resultsTo(5);
  assert.equal(all.length, 3);
  assert.deepEqual(all[2], all[1], "the re-sent reply is the stored one");
  assert.equal(all[2]!.opNumber, 2);
  assert.equal(resultOf(all[2]!), "1");
  assert.equal(cluster.replica(0).opNumber, 2, "no new log entry for a duplicate");
  assert.equal(cluster.sent.length, sentBefore, "no new Prepare for a duplicate");

  // A duplicate of a request still in progress is neither appended again nor answered.
  cluster.request(0, 6, 1, kvSet("y", "1"));
  cluster.request(0, 6, 1, kvSet("y", "1"));
  assert.equal(cluster.replica(0).opNumber, 3);
  cluster.run();
  assert.equal(cluster.resultsTo(6).length, 1);
  assert.deepEqual(cluster.committedRequests(), ["c5.s1", "c5.s2", "c6.s1"]);
});

Deno.test("§4.1 primary rejects an older request as stale, executing nothing", () => {
  const cluster = new Cluster();
  cluster.request(0, 5, 1, kvSet("x", "1"));
  cluster.request(0, 5, 2, kvSet("x", "2"));
  cluster.run();
  assert.equal(cluster.resultsTo(5).length, 2);
  cluster.request(0, 5, 1, kvSet("x", "1"));
  cluster.run();
  const replies = cluster.repliesTo(5);
  assert.equal(replies.filter((m) => m.type === "reply").length, 2, "no reply to an older one");
  assert.deepEqual(replies.at(-1), {
    type: "rejected",
    clientId: 5,
    requestNumber: 1,
    reason: "stale",
    floor: 2,
    replica: 0,
  });
  assert.equal(cluster.replica(0).opNumber, 2);
  assert.equal(cluster.kvGet(0, "x"), "2");
});

Deno.test("a request reusing an executed request's number with another operation is rejected", () => {
  // A client restarted with the same id reused a number (the group's answer to its query
  // undercounted): before, it got the old request's stored reply and its own never ran.
  const cluster = new Cluster();
  cluster.request(0, 5, 7, kvSet("x", "old"));
  cluster.run();
  cluster.request(0, 5, 7, kvSet("x", "new"));
  cluster.run();
  const last = cluster.repliesTo(5).at(-1)!;
  assert.ok(last.type === "rejected" && last.reason === "conflict", JSON.stringify(last));
  assert.equal(cluster.kvGet(0, "x"), "old");
  // The same request again (a true retry) still gets its stored reply.
  cluster.request(0, 5, 7, kvSet("x", "old"));
  cluster.run();
  assert.equal(cluster.repliesTo(5).at(-1)!.type, "reply");
  // The planted bug answers the new request with the old one's stored reply; the harness's
  // checker sees that the reply answers an operation that was never executed under it.
  const buggy = new Cluster({ plantedBug: "reply_by_number_only" });
  buggy.request(0, 5, 7, kvSet("x", "old"));
  buggy.run();
  assert.throws(
    () => buggy.request(0, 5, 7, kvSet("x", "new")),
    /reply to c=5 s=7 for an uncommitted request/,
  );
});

Deno.test("a request reusing the number of one still in the log waits, then is a conflict", () => {
  // While the first request is uncommitted it may yet be lost in a view change, and a copy of
  // the second still on its way would then execute under that number: renumbering it now could
  // execute it twice. So it waits; once the first executes, the second is told "conflict".
  const cluster = new Cluster();
  cluster.isolate(1);
  cluster.isolate(2); // Nothing commits: the first request stays in the primary's log.
  cluster.request(0, 5, 7, kvSet("x", "old"));
  cluster.run();
  cluster.request(0, 5, 7, kvSet("x", "new"));
  cluster.run();
  assert.deepEqual(cluster.repliesTo(5), [], "no answer while the first is in progress");
  assert.equal(cluster.replica(0).opNumber, 1, "not appended");
  cluster.heal();
  cluster.settleUntil(() => cluster.replica(0).commitNumber === 1);
  cluster.request(0, 5, 7, kvSet("x", "new"));
  cluster.run();
  const last = cluster.repliesTo(5).at(-1)!;
  assert.ok(last.type === "rejected" && last.reason === "conflict", JSON.stringify(last));
  assert.equal(cluster.kvGet(0, "x"), "old");
});

Deno.test("a request-number more than a day ahead of the primary's clock is rejected", () => {
  // One client sending 2^53 - 1 once made its id unusable and, evicted, raised the floor past
  // every new client's numbers.
  const cluster = new Cluster();
  cluster.request(0, 5, Number.MAX_SAFE_INTEGER, kvSet("x", "1"));
  cluster.run();
  const last = cluster.repliesTo(5).at(-1)!;
  assert.ok(last.type === "rejected" && last.reason === "ahead", JSON.stringify(last));
  assert.equal(cluster.replica(0).opNumber, 0);
  // A number within a day of the clock is fine.
  cluster.request(0, 5, 1_000, kvSet("x", "1"));
  cluster.run();
  assert.equal(cluster.kvGet(0, "x"), "1");
});

Deno.test("an evicted client's retry of an executed request is rejected, not run again", () => {
  const cluster = new Cluster({ limits: { clientsMax: 2 } });
  cluster.request(0, 1, 100, kvSet("counter", "a")); // Client 1's request 100 executes...
  cluster.run();
  cluster.request(0, 2, 1, kvSet("k2", "v"));
  cluster.request(0, 3, 1, kvSet("k3", "v")); // ...and the full table evicts client 1.
  cluster.run();
  cluster.request(0, 1, 100, kvSet("counter", "a")); // Its retry.
  cluster.run();
  const last = cluster.repliesTo(1).at(-1)!;
  assert.deepEqual(last, {
    type: "rejected",
    clientId: 1,
    requestNumber: 100,
    reason: "evicted",
    floor: 100,
    replica: 0,
  });
  assert.equal(cluster.replica(0).opNumber, 3, "not appended again");
  // Above the floor the client is served again (as a new client).
  cluster.request(0, 1, 101, kvSet("counter", "b"));
  cluster.run();
  assert.equal(cluster.kvGet(0, "counter"), "b");
  // A client the table never knew numbers its requests above the floor (Configuration).
  cluster.clientSend(0, { type: "locate", clientId: 9 });
  const located = cluster.repliesTo(9).at(-1)!;
  assert.equal(located.type === "configuration" && located.requestNumberFloor, 100);
});

Deno.test("§4.1 backup answers a request with not_primary naming the view", () => {
  const cluster = new Cluster();
  cluster.request(2, 9, 1, kvSet("x", "1"));
  assert.deepEqual(cluster.repliesTo(9), [{
    type: "not_primary",
    clientId: 9,
    requestNumber: 1,
    viewNumber: 0,
    replica: 2,
  }]);
  assert.equal(cluster.replica(2).opNumber, 0);
  assert.equal(cluster.inFlight.length, 0);
});

Deno.test("§4.1 idle primary sends Commit as a heartbeat and backups execute up to it", () => {
  const cluster = new Cluster();
  cluster.request(0, 1, 1, kvSet("x", "1"));
  cluster.run();
  assert.equal(cluster.replica(0).commitNumber, 1);
  assert.equal(cluster.replica(1).commitNumber, 0, "the backup has not heard of the commit yet");
  assert.equal(cluster.replica(1).opNumber, 1);
  cluster.tick(0, 4);
  assert.equal(cluster.inFlight.length, 0, "no heartbeat before heartbeatTicks");
  cluster.tick(0, 1);
  const commits = cluster.peek(ofType("commit"));
  assert.deepEqual(commits.map((e) => [e.to, e.message]), [
    [1, { type: "commit", epoch: 0, viewNumber: 0, commitNumber: 1, replica: 0, readRound: 0 }],
    [2, { type: "commit", epoch: 0, viewNumber: 0, commitNumber: 1, replica: 0, readRound: 0 }],
  ]);
  cluster.run();
  for (const i of [1, 2]) {
    assert.equal(cluster.replica(i).commitNumber, 1);
    assert.equal(cluster.kvGet(i, "x"), "1");
  }
  assert.equal(cluster.repliesTo(1).length, 1, "backups send no replies");
  // Heartbeats keep the backups from starting a view change.
  cluster.settle(100);
  assert.deepEqual([0, 1, 2].map((i) => cluster.replica(i).viewNumber), [0, 0, 0]);
});

// ------------------------------------------------------------------ §4.2 view change

Deno.test("§4.2 backup that hears nothing starts a view change and persists the view before sending", () => {
  const backup = makeReplica(1);
  for (let t = 1; t < 25; t++) {
    backup.tick(t);
    assert.deepEqual(backup.drainEffects(), []);
  }
  assert.equal(backup.status, "normal");
  backup.tick(25);
  const effects = backup.drainEffects();
  assert.equal(backup.status, "view_change");
  assert.equal(backup.viewNumber, 1);
  assert.deepEqual(effects.map((e) => e.type), ["persist_superblock"], "nothing sent yet");
  const superblock = effects[0]!;
  assert.ok(superblock.type === "persist_superblock");
  assert.deepEqual(superblock.superblock, {
    epoch: 0,
    viewNumber: 1,
    lastNormalView: 0,
    recovering: false,
  });
  // Messages produced meanwhile are held too.
  const meanwhile = step(backup, {
    type: "start_view_change",
    epoch: 0,
    viewNumber: 1,
    replica: 2,
  });
  assert.deepEqual(meanwhile, []);
  backup.onPersisted(superblock.id);
  const after = backup.drainEffects();
  assert.deepEqual(
    sendsOf(after).map((s) => [s.to, s.message.type]),
    [[0, "start_view_change"], [2, "start_view_change"]],
  );
  // With f = 1 StartViewChange from another replica, it also sends DoViewChange: r1 is the new
  // primary of view 1, so it keeps its own; nothing else goes out.
  assert.equal(sendsOf(after, "do_view_change").length, 0);
});

Deno.test("§4.2 new primary picks the log with the latest last-normal view, then the largest op-number", () => {
  const doViewChange = (
    replica: number,
    lastNormalView: number,
    entries: LogEntry[],
  ): DoViewChange => ({
    type: "do_view_change",
    epoch: 0,
    viewNumber: 2,
    lastNormalView,
    opNumber: entries.length,
    commitNumber: 0,
    entries,
    replica,
  });
  /** r2 is the primary of view 2 in a group of 5 (f = 2): three DoViewChanges with its own. */
  const runViewChange = (a: DoViewChange, b: DoViewChange, plantedBug?: PlantedBug) => {
    const primary = makeReplica(2, { n: 5, ...(plantedBug ? { plantedBug } : {}) });
    const effects = [...stepDurable(primary, a), ...stepDurable(primary, b)];
    assert.equal(primary.status, "view_change");
    effects.push(
      ...stepDurable(primary, { type: "start_view_change", epoch: 0, viewNumber: 2, replica: 3 }),
    );
    effects.push(
      ...stepDurable(primary, { type: "start_view_change", epoch: 0, viewNumber: 2, replica: 4 }),
    );
    assert.equal(primary.status, "normal");
    assert.equal(primary.viewNumber, 2);
    return { primary, effects };
  };
  const log = (p: Replica) =>
    Array.from({ length: p.opNumber }, (_, i) => `${i + 1}@v${p.logEntry(i + 1)!.viewNumber}`);

  // Latest last-normal view wins over a longer log from an older view.
  const newer = doViewChange(0, 1, [entry(1, 0), entry(2, 1)]);
  const longer = doViewChange(1, 0, [entry(1, 0), entry(2, 0), entry(3, 0)]);
  const { primary, effects } = runViewChange(longer, newer);
  assert.deepEqual(log(primary), ["1@v0", "2@v1"]);
  const startViews = sendsOf(effects, "start_view");
  assert.deepEqual(startViews.map((s) => s.to), [0, 1, 3, 4]);
  for (const { message } of startViews) {
    assert.equal(message.viewNumber, 2);
    assert.equal(message.opNumber, 2);
    assert.deepEqual(message.entries.map((e) => e.viewNumber), [0, 1]);
  }
  // The planted bug (choose by op-number only) takes the stale longer log instead.
  assert.deepEqual(
    log(runViewChange(longer, newer, "do_view_change_log_by_op_number").primary),
    ["1@v0", "2@v0", "3@v0"],
  );

  // Same last-normal view: the largest op-number wins.
  const short = doViewChange(0, 1, [entry(1, 0), entry(2, 1)]);
  const long = doViewChange(1, 1, [entry(1, 0), entry(2, 1), entry(3, 1)]);
  assert.deepEqual(log(runViewChange(long, short).primary), ["1@v0", "2@v1", "3@v1"]);
  assert.deepEqual(log(runViewChange(short, long).primary), ["1@v0", "2@v1", "3@v1"]);
});

Deno.test("§4.2 StartView installs the log and backups PrepareOk uncommitted entries", () => {
  const backup = makeReplica(1);
  const effects = step(backup, {
    type: "start_view",
    epoch: 0,
    viewNumber: 2,
    anchorOpNumber: 0,
    entries: [entry(1, 0), entry(2, 0), entry(3, 1)],
    opNumber: 3,
    commitNumber: 1,
    replica: 2,
  });
  assert.equal(backup.status, "normal");
  assert.equal(backup.viewNumber, 2);
  assert.equal(backup.lastNormalView, 2);
  assert.equal(backup.opNumber, 3);
  assert.equal(backup.commitNumber, 1, "committed entries are executed");
  assert.deepEqual(
    effects.map((e) => e.type),
    ["persist_log", "persist_superblock"],
    "nothing is sent before the new view is durable",
  );
  const superblock = effects[1]!;
  assert.ok(superblock.type === "persist_superblock");
  assert.deepEqual(superblock.superblock, {
    epoch: 0,
    viewNumber: 2,
    lastNormalView: 2,
    recovering: false,
  });
  const after = persist(backup, effects);
  assert.deepEqual(sendsOf(after), [{
    to: 2,
    message: { type: "prepare_ok", epoch: 0, viewNumber: 2, opNumber: 3, replica: 1, readRound: 0 },
  }]);
  // A StartView from a replica that is not the view's primary is ignored.
  const other = makeReplica(1);
  step(other, {
    type: "start_view",
    epoch: 0,
    viewNumber: 2,
    anchorOpNumber: 0,
    entries: [entry(1, 0)],
    opNumber: 1,
    commitNumber: 0,
    replica: 0,
  });
  assert.equal(other.viewNumber, 0);
  assert.equal(other.opNumber, 0);
});

/**
 * r1, the primary of view 1, holds a DoViewChange quorum saying ops 1..2 are committed and asks
 * r2 for them. r2 answers from a later view, where ops 3..4 were committed as well.
 */
function primaryFetchingCommitsMeetsLaterView(normal: boolean) {
  const r1 = makeReplica(1);
  persist(r1, r1.drainEffects());
  stepDurable(r1, { type: "start_view_change", epoch: 0, viewNumber: 1, replica: 2 });
  const fetch = stepDurable(r1, {
    type: "do_view_change",
    epoch: 0,
    viewNumber: 1,
    lastNormalView: 0,
    opNumber: 2,
    commitNumber: 2,
    entries: [],
    replica: 2,
  });
  assert.equal(sendsOf(fetch, "get_state").length, 1, "the new primary fetches ops 1..2");
  const effects = stepDurable(r1, {
    type: "new_state",
    epoch: 0,
    viewNumber: 3,
    normal,
    anchorOpNumber: 0,
    entries: [entry(1, 0), entry(2, 0), entry(3, 2), entry(4, 2)],
    opNumber: 4,
    commitNumber: 4,
    replica: 2,
  });
  return { r1, effects };
}

Deno.test("§4.2 a new primary answered from a later normal view joins that view", () => {
  const { r1, effects } = primaryFetchingCommitsMeetsLaterView(true);
  assert.equal(r1.status, "view_change");
  assert.equal(r1.viewNumber, 1, "the view is adopted only with its state (§5.2 correction)");
  assert.deepEqual(sendsOf(effects, "request_start_view").map((s) => s.to), [0]);
  assert.equal(sendsOf(effects, "start_view").length, 0, "view 1 must not start");
});

Deno.test("§4.2 a new primary answered from a later view change joins that view change", () => {
  const { r1, effects } = primaryFetchingCommitsMeetsLaterView(false);
  assert.equal(r1.status, "view_change");
  assert.equal(r1.viewNumber, 3);
  assert.equal(sendsOf(effects, "start_view").length, 0, "view 1 must not start");
  assert.ok(sendsOf(effects, "start_view_change").length > 0);
});

Deno.test("§4.2 a stalled view change moves on to the next view", () => {
  const cluster = new Cluster();
  commitSome(cluster, 1);
  cluster.crash(0);
  cluster.crash(1); // more than f down: view 1 (primary r1) cannot start
  cluster.tickUntil(2, (r) => r.status === "view_change");
  assert.equal(cluster.replica(2).viewNumber, 1);
  cluster.tick(2, 50); // viewChangeTimeoutTicks
  assert.equal(cluster.replica(2).viewNumber, 2);
  assert.equal(cluster.disks[2]!.superblock.viewNumber, 2);
});

// ------------------------------------------------------------------ §4.3 recovery

Deno.test("§4.3 recovering replica takes part in nothing until f+1 responses with its nonce", () => {
  const cluster = new Cluster();
  commitSome(cluster, 2);
  cluster.crash(2, { diskless: true });
  const r2 = cluster.restart(2);
  assert.equal(r2.status, "recovering");
  assert.equal(cluster.disks[2]!.superblock.recovering, true);
  const recoveries = cluster.peek(ofType("recovery", 2));
  assert.deepEqual(recoveries.map((e) => e.to), [0, 1]);
  cluster.hold(ofType("recovery_response"));
  cluster.run();
  const responses = cluster.peek(ofType("recovery_response"));
  assert.deepEqual(responses.map((e) => e.from), [0, 1]);

  // Meanwhile it ignores every other message and every request.
  const sentBefore = cluster.sent.filter(from(2)).length;
  const extra: ReplicaMessage[] = [
    {
      type: "prepare",
      epoch: 0,
      viewNumber: 0,
      entries: [entry(3, 0)],
      commitNumber: 2,
      replica: 0,
    },
    { type: "commit", epoch: 0, viewNumber: 0, commitNumber: 2, replica: 0, readRound: 0 },
    { type: "start_view_change", epoch: 0, viewNumber: 1, replica: 1 },
    {
      type: "do_view_change",
      epoch: 0,
      viewNumber: 2,
      lastNormalView: 0,
      opNumber: 0,
      commitNumber: 0,
      entries: [],
      replica: 1,
    },
    {
      type: "start_view",
      epoch: 0,
      viewNumber: 1,
      anchorOpNumber: 0,
      entries: [],
      opNumber: 0,
      commitNumber: 0,
      replica: 1,
    },
    { type: "get_state", epoch: 0, viewNumber: 0, opNumber: 0, replica: 1 },
  ];
  for (const message of extra) cluster.inject(message.replica, 2, message);
  cluster.run(to(2));
  cluster.request(2, 44, 1, kvSet("z", "1"));
  cluster.tick(2, 5);
  assert.equal(r2.status, "recovering");
  assert.equal(r2.viewNumber, 0);
  assert.equal(r2.opNumber, 0);
  assert.equal(
    cluster.sent.filter(from(2)).length,
    sentBefore,
    "a recovering replica sends nothing",
  );
  assert.deepEqual(cluster.repliesTo(44), []);

  // One response (f = 1 ... it needs f+1 = 2): still recovering.
  cluster.release();
  cluster.deliver((e) => e.message.type === "recovery_response" && e.from === 1);
  assert.equal(r2.status, "recovering");
  // The primary's: recovered, with the primary's log.
  cluster.deliver((e) => e.message.type === "recovery_response" && e.from === 0);
  assert.equal(r2.status, "normal");
  assert.equal(r2.viewNumber, 0);
  assert.equal(r2.opNumber, 2);
  assert.equal(r2.commitNumber, 2);
  assert.equal(cluster.kvGet(2, "key2"), "value2");
  assert.equal(cluster.disks[2]!.superblock.recovering, false);

  // In a group of 5, f+1 responses without the primary's are not enough.
  const five = new Cluster({ replicas: 5 });
  five.request(0, 1, 1, kvSet("a", "1"));
  five.run();
  five.crash(4, { diskless: true });
  const r4 = five.restart(4);
  five.hold(ofType("recovery_response", 0));
  five.run();
  assert.equal(r4.status, "recovering", "three backup responses without the primary's");
  five.release();
  five.run();
  assert.equal(r4.status, "normal");
  assert.equal(r4.opNumber, 1);
});

Deno.test("§4.3 recovery ignores responses with another nonce", () => {
  const scenario = (plantedBug?: PlantedBug) => {
    const cluster = new Cluster(plantedBug ? { plantedBug } : {});
    commitSome(cluster, 1);
    cluster.crash(2, { diskless: true });
    const r2 = cluster.restart(2);
    cluster.hold(ofType("recovery_response"));
    cluster.run();
    const genuine = cluster.drop(ofType("recovery_response"));
    cluster.release();
    assert.equal(genuine.length, 2);
    for (const envelope of genuine) {
      const response = envelope.message as RecoveryResponse;
      cluster.inject(envelope.from, 2, { ...response, nonce: response.nonce + 1 });
    }
    cluster.run();
    const statusAfterForged = r2.status;
    for (const envelope of genuine) cluster.inject(envelope.from, 2, envelope.message);
    cluster.run();
    return { statusAfterForged, status: r2.status, opNumber: r2.opNumber };
  };
  assert.deepEqual(scenario(), {
    statusAfterForged: "recovering",
    status: "normal",
    opNumber: 1,
  });
  // The planted bug accepts them: the test can tell.
  assert.equal(scenario("recovery_without_nonce_check").statusAfterForged, "normal");
});

// ------------------------------------------------------------------ §4.4 timestamps

Deno.test("§4.4 the primary fixes timestamps that never go back", () => {
  const apps: RecordingKv[] = [];
  // r0's clock runs 5 s ahead of r1's and r2's.
  const cluster = new Cluster({
    app: (i) => (apps[i] = new RecordingKv()),
    clockOffsetMs: [5_000, 0, 0],
  });
  cluster.tickAll(1); // every replica reads the clock: r0 sees 5010 ms, the others 10 ms
  cluster.request(0, 1, 1, kvSet("a", "1"));
  cluster.run();
  assert.equal(cluster.replica(0).logEntry(1)!.timestamp, 5_010);
  // r0 fails; r1, whose clock is behind, becomes primary.
  cluster.crash(0);
  cluster.settleUntil(() => cluster.replica(1).status === "normal" && cluster.replica(1).isPrimary);
  assert.ok(cluster.nowMs < 5_010);
  cluster.request(1, 1, 2, kvSet("a", "2"));
  cluster.run();
  assert.equal(
    cluster.replica(1).logEntry(2)!.timestamp,
    5_010,
    "a timestamp never goes back along the log",
  );
  cluster.nowMs = 20_000;
  cluster.tick(1);
  cluster.request(1, 1, 3, kvSet("a", "3"));
  cluster.run();
  cluster.tick(1, 5);
  cluster.run();
  assert.equal(cluster.replica(1).logEntry(3)!.timestamp, 20_010);
  // Every replica's state machine saw the primary's timestamps, the same on each.
  for (const i of [1, 2]) {
    assert.deepEqual(
      apps[i]!.seen.map((c) => [c.opNumber, c.timestamp, c.clientId, c.requestNumber]),
      [[1, 5_010, 1, 1], [2, 5_010, 1, 2], [3, 20_010, 1, 3]],
    );
  }
});

// ------------------------------------------------------------------ §4.5 client recovery

Deno.test("§4.5 request_number_query answers the latest request-number", () => {
  const cluster = new Cluster();
  cluster.request(0, 3, 1, kvSet("a", "1"));
  cluster.request(0, 3, 2, kvSet("a", "2"));
  cluster.run();
  cluster.hold(ofType("prepare"));
  cluster.request(0, 3, 5, kvSet("a", "5")); // in the log, not yet committed
  assert.equal(cluster.replica(0).commitNumber, 2);
  const query = (i: number, clientId: number) => {
    cluster.clientSend(i, { type: "request_number_query", clientId, nonce: 77 });
    return cluster.repliesTo(clientId).at(-1);
  };
  assert.deepEqual(query(0, 3), {
    type: "request_number_reply",
    clientId: 3,
    nonce: 77,
    requestNumber: 5,
    replica: 0,
  });
  // A backup answers from what it holds; an unknown client gets 0.
  assert.equal((query(1, 3) as { requestNumber: number }).requestNumber, 2);
  assert.equal((query(0, 12) as { requestNumber: number }).requestNumber, 0);
  // A replica that is not normal does not answer.
  cluster.release();
  cluster.drop();
  cluster.tickUntil(2, (r) => r.status === "view_change");
  const before = cluster.repliesTo(3).length;
  cluster.clientSend(2, { type: "request_number_query", clientId: 3, nonce: 78 });
  assert.equal(cluster.repliesTo(3).length, before);
});

// ------------------------------------------------------------------ §5 pragmatics

Deno.test("§5.2 a lagging backup catches up by GetState/NewState", () => {
  const cluster = new Cluster();
  cluster.cut(0, 2);
  for (let s = 1; s <= 3; s++) {
    cluster.request(0, 1, s, kvSet(`k${s}`, `v${s}`));
    cluster.run();
  }
  assert.equal(cluster.replica(0).commitNumber, 3);
  assert.equal(cluster.replica(2).opNumber, 0);
  cluster.heal();
  cluster.request(0, 1, 4, kvSet("k4", "v4"));
  // r2 gets a Prepare for op 4 only: it asks for the state after op 0.
  cluster.deliver(ofType("prepare", 0, 2));
  assert.equal(cluster.replica(2).opNumber, 0);
  const getState = cluster.peek(ofType("get_state", 2));
  assert.deepEqual(getState.map((e) => [e.to, e.message]), [[0, {
    type: "get_state",
    epoch: 0,
    viewNumber: 0,
    opNumber: 0,
    replica: 2,
  }]]);
  cluster.deliver(ofType("get_state"));
  const newState = cluster.peek(ofType("new_state", 0, 2));
  assert.equal(newState.length, 1);
  const message = newState[0]!.message;
  assert.ok(message.type === "new_state");
  assert.deepEqual(message.entries.map((e) => e.opNumber), [1, 2, 3, 4]);
  assert.equal(message.commitNumber, 3);
  cluster.deliver(ofType("new_state"));
  assert.equal(cluster.replica(2).opNumber, 4);
  assert.equal(cluster.replica(2).commitNumber, 3);
  cluster.run();
  cluster.tick(0, 5);
  cluster.run();
  assert.equal(cluster.replica(2).commitNumber, 4);
  assert.deepEqual(cluster.logOf(2), cluster.logOf(0));
  assert.equal(cluster.kvGet(2, "k1"), "v1");
  assert.equal(cluster.kvGet(2, "k4"), "v4");
});

Deno.test("§5.3 DoViewChange carries only the uncommitted suffix", () => {
  const cluster = new Cluster();
  commitSome(cluster, 2);
  assert.deepEqual([1, 2].map((i) => cluster.replica(i).commitNumber), [2, 2]);
  // Op 3 reaches r2 only, then the primary fails.
  cluster.request(0, 1, 3, kvSet("key3", "value3"));
  cluster.deliver(ofType("prepare", 0, 2));
  cluster.drop();
  cluster.crash(0);
  cluster.tickUntil(1, (r) => r.status === "view_change");
  cluster.deliver(ofType("start_view_change", 1, 2));
  const dvc = cluster.peek(ofType("do_view_change", 2, 1));
  assert.equal(dvc.length, 1);
  const message = dvc[0]!.message;
  assert.ok(message.type === "do_view_change");
  assert.equal(message.commitNumber, 2);
  assert.equal(message.opNumber, 3);
  assert.deepEqual(message.entries.map((e) => e.opNumber), [3], "only the uncommitted suffix");
  cluster.run();
  assert.equal(cluster.replica(1).status, "normal");
  assert.deepEqual(cluster.logOf(1).map(requestName), ["c1.s1", "c1.s2", "c1.s3"]);
  assert.equal(cluster.replica(1).commitNumber, 3, "r2's StartView PrepareOk commits op 3");

  // A new primary that lacks committed entries fetches them before it starts the view.
  const lagging = new Cluster();
  lagging.cut(0, 1);
  commitSome(lagging, 2);
  assert.equal(lagging.replica(1).opNumber, 0);
  lagging.crash(0);
  lagging.heal();
  lagging.tickUntil(1, (r) => r.status === "view_change");
  lagging.run();
  const fetch = lagging.sent.filter(ofType("get_state", 1, 2));
  assert.equal(fetch.length, 1);
  assert.deepEqual(fetch[0]!.message, {
    type: "get_state",
    epoch: 0,
    viewNumber: 1,
    opNumber: 0,
    replica: 1,
  });
  assert.equal(lagging.replica(1).status, "normal");
  assert.equal(lagging.replica(1).viewNumber, 1);
  assert.deepEqual(lagging.logOf(1).map(requestName), ["c1.s1", "c1.s2"]);
  assert.equal(lagging.kvGet(1, "key2"), "value2");
});

Deno.test("§5.2 a duplicated NewState never adds a GetState in flight (seed 788778535)", () => {
  // A recovering replica fetches the committed prefix two entries at a time, and every NewState
  // it receives arrives twice. Only the NewStates that bring news may ask for more: were the
  // duplicates to ask too, requests in flight would double at every part.
  const cluster = new Cluster({ limits: { transferOpsMax: 2, pipelineOpsMax: 2 } });
  commitSome(cluster, 9);
  cluster.crash(2, { diskless: true });
  const r2 = cluster.restart(2);
  const toR2 = ofType("new_state", undefined, 2);
  let parts = 0;
  for (let round = 0; round < 50 && r2.status !== "normal"; round++) {
    cluster.hold(toR2);
    cluster.run();
    cluster.release();
    const held = cluster.peek(toR2);
    parts += held.length;
    for (const envelope of held) cluster.inject(envelope.from, envelope.to, envelope.message);
    cluster.deliver(toR2);
  }
  cluster.run();
  assert.equal(r2.status, "normal");
  assert.equal(r2.commitNumber, 9);
  assert.equal(cluster.kvGet(2, "key9"), "value9");
  const getStates = cluster.sent.filter(ofType("get_state", 2)).length;
  // Nine committed ops, two per part: five parts, hence five GetStates and five NewStates (each
  // delivered twice). Had the duplicates asked too, there would be 31 of each.
  assert.equal(getStates, 5);
  assert.equal(parts, 5);
});

// ------------------------------------------------------------------ §6.2 batching

Deno.test("§6.2 requests arriving together go out in one Prepare; a lone request goes out at once", () => {
  const primary = makeReplica(0);
  // A lone request: its Prepare leaves in the same step, without waiting for a tick.
  const lone = step(primary, request(1, 1, kvSet("a", "1")));
  assert.deepEqual(sendsOf(lone, "prepare").map((s) => s.message.entries.length), [1, 1]);
  // Three requests in one turn: one Prepare per backup with all three.
  for (let c = 2; c <= 4; c++) primary.onMessage(request(c, 1, kvSet(`k${c}`, "v")));
  const batch = primary.drainEffects();
  assert.deepEqual(
    sendsOf(batch, "prepare").map((s) => [s.to, s.message.entries.map((e) => e.opNumber)]),
    [[1, [2, 3, 4]], [2, [2, 3, 4]]],
  );
  assert.equal(batch.filter((e) => e.type === "persist_log").length, 1, "one log write too");
  // A batch never exceeds batchOpsMax.
  const small = makeReplica(0, { limits: { batchOpsMax: 2 } });
  for (let c = 1; c <= 3; c++) small.onMessage(request(c, 1, kvSet(`k${c}`, "v")));
  assert.deepEqual(
    sendsOf(small.drainEffects(), "prepare").filter((s) => s.to === 1).map((s) =>
      s.message.entries.map((e) => e.opNumber)
    ),
    [[1, 2], [3]],
  );
});

/** Each Prepare among `effects` as [to, op-numbers]. */
function preparesSent(effects: readonly Effect[]): [number, number[]][] {
  return sendsOf(effects, "prepare").map((s) => [s.to, s.message.entries.map((e) => e.opNumber)]);
}

/** Tick `replica` `count` times; the Prepares each tick sent, by tick, for ticks that sent any. */
function preparesOverTicks(replica: Replica, count: number): [number, [number, number[]][]][] {
  const out: [number, [number, number[]][]][] = [];
  for (let t = 1; t <= count; t++) {
    replica.tick(t * 10);
    const sent = preparesSent(replica.drainEffects());
    if (sent.length > 0) out.push([t, sent]);
  }
  return out;
}

Deno.test("§6.2 at low load a Prepare wakes only the f backups a commit needs; the spare gets its entries in one batch", () => {
  const primary = makeReplica(0, {
    limits: { quietPrepareBackups: 1 },
    timing: { spareCatchUpTicks: 5 },
  });
  for (let op = 1; op <= 2; op++) {
    // A lone request goes to backup 1 only, and its PrepareOk alone commits it (f = 1).
    assert.deepEqual(preparesSent(stepDurable(primary, request(1, op, kvSet("a", `${op}`)))), [
      [1, [op]],
    ]);
    const ok = step(primary, {
      type: "prepare_ok",
      epoch: 0,
      viewNumber: 0,
      opNumber: op,
      replica: 1,
      readRound: 0,
    });
    assert.equal(primary.commitNumber, op);
    assert.equal(repliesOf(ok).length, 1);
  }
  // Backup 2, the spare, gets both entries in one Prepare at the catch-up tick, not before.
  assert.deepEqual(preparesOverTicks(primary, 5), [[5, [[2, [1, 2]]]]]);

  // With quietPrepareBackups at 2f every backup gets every Prepare at once.
  const eager = makeReplica(0, { limits: { quietPrepareBackups: 2 } });
  assert.deepEqual(preparesSent(stepDurable(eager, request(1, 1, kvSet("a", "1")))), [
    [1, [1]],
    [2, [1]],
  ]);
  // Five replicas (f = 2): the two backups after the primary are prompt, the other two spares.
  const five = makeReplica(0, { n: 5, limits: { quietPrepareBackups: 1 } });
  assert.deepEqual(preparesSent(stepDurable(five, request(1, 1, kvSet("a", "1")))), [
    [1, [1]],
    [2, [1]],
  ]);
  // The catch-up comes no later than an idle heartbeat, which would otherwise commit entries the
  // spare lacks and make it ask for state.
  assert.throws(
    () => makeReplica(0, { timing: { spareCatchUpTicks: 6, heartbeatTicks: 5 } }),
    /spareCatchUpTicks \(6\) must not exceed heartbeatTicks \(5\)/,
  );
});

Deno.test("§6.2 as the load rises the spare gets every Prepare again, after what it missed", () => {
  const primary = makeReplica(0, { limits: { quietPrepareBackups: 1 } });
  assert.deepEqual(preparesSent(stepDurable(primary, request(1, 1, kvSet("a", "1")))), [[1, [1]]]);
  // A second request while op 1 is in flight: not low load. Backup 2 gets op 1 first, no gap.
  assert.deepEqual(preparesSent(stepDurable(primary, request(2, 1, kvSet("b", "1")))), [
    [1, [2]],
    [2, [1, 2]],
  ]);
  step(primary, {
    type: "prepare_ok",
    epoch: 0,
    viewNumber: 0,
    opNumber: 2,
    replica: 2,
    readRound: 0,
  });
  assert.equal(primary.commitNumber, 2);
  // Nothing is left for a catch-up tick to send.
  assert.deepEqual(preparesOverTicks(primary, 5), []);
});

/** Spares whose catch-up (every 5 ticks) comes later than a swap (after 2 ticks). */
const SLOW_CATCH_UP = {
  limits: { quietPrepareBackups: 1 },
  timing: { spareCatchUpTicks: 5 },
} as const;

Deno.test("§6.2 a prompt backup that stops acknowledging trades places with the spare", () => {
  const primary = makeReplica(0, SLOW_CATCH_UP);
  assert.equal(primary.timing.spareSwapTicks, 2);
  assert.equal(primary.timing.spareCatchUpTicks, 5);
  assert.deepEqual(preparesSent(stepDurable(primary, request(1, 1, kvSet("a", "1")))), [[1, [1]]]);
  // Backup 1 is down from the start. The spare gets op 1 at its catch-up and acknowledges it: op 1
  // commits.
  assert.deepEqual(preparesOverTicks(primary, 5), [[5, [[2, [1]]]]]);
  step(primary, {
    type: "prepare_ok",
    epoch: 0,
    viewNumber: 0,
    opNumber: 1,
    replica: 2,
    readRound: 0,
  });
  assert.equal(primary.commitNumber, 1);
  // At the next tick backup 1, which holds op 1 unacknowledged, becomes the spare: later lone
  // requests go to backup 2 at once.
  primary.tick(60);
  primary.drainEffects();
  assert.equal(primary.spareSwaps, 1);
  assert.deepEqual(preparesSent(stepDurable(primary, request(1, 2, kvSet("a", "2")))), [[2, [2]]]);
  // Backup 1 down with op 1 unacknowledged, while the spare answered a heartbeat: at the swap the
  // spare is sent op 1 at once, without waiting for its catch-up.
  const down = makeReplica(0, SLOW_CATCH_UP);
  step(down, {
    type: "prepare_ok",
    epoch: 0,
    viewNumber: 0,
    opNumber: 0,
    replica: 2,
    readRound: 0,
  });
  stepDurable(down, request(1, 1, kvSet("a", "1")));
  assert.deepEqual(preparesOverTicks(down, 2), [[2, [[2, [1]]]]]);
  assert.equal(down.spareSwaps, 1);
  // A prompt backup merely far away (slower than spareSwapTicks to answer) keeps its place while
  // the spare has acknowledged no more than it.
  const far = makeReplica(0, SLOW_CATCH_UP);
  for (const replica of [1, 2]) {
    step(far, { type: "prepare_ok", epoch: 0, viewNumber: 0, opNumber: 0, replica, readRound: 0 });
  }
  stepDurable(far, request(1, 1, kvSet("a", "1")));
  assert.deepEqual(preparesOverTicks(far, 4), []);
  step(far, { type: "prepare_ok", epoch: 0, viewNumber: 0, opNumber: 1, replica: 1, readRound: 0 });
  assert.equal(far.commitNumber, 1);
  assert.equal(far.spareSwaps, 0);
});

Deno.test("§6.2 after a view change the spare is the backup furthest after the new primary, and only new entries go out", () => {
  const cluster = new Cluster({ limits: { quietPrepareBackups: 1 } });
  let seen = 0;
  /** The Prepares `primary` sent since the last call, as [to, op-numbers]. */
  const preparesOf = (primary: number) => {
    const sent = cluster.sent.slice(seen);
    seen = cluster.sent.length;
    return sent.flatMap((e) =>
      e.from === primary && e.message.type === "prepare"
        ? [[e.to, e.message.entries.map((x) => x.opNumber)]]
        : []
    );
  };
  // View 0: r1 is the prompt backup, r2 the spare; both end up holding ops 1 and 2.
  commitSome(cluster, 2);
  for (const view of [1, 2]) {
    // The old primary restarts and starts the next view, whose primary has never been primary
    // before: the backup after it becomes prompt, the one after that the spare.
    cluster.crash(view - 1);
    cluster.restart(view - 1);
    cluster.run();
    const [primary, prompt, spare] = [view, (view + 1) % 3, (view + 2) % 3];
    const inView = (i: number) =>
      cluster.replica(i).status === "normal" && cluster.replica(i).viewNumber === view;
    assert.ok([0, 1, 2].every(inView) && cluster.replica(primary).isPrimary, cluster.describe());
    preparesOf(primary);
    // A lone request goes to the prompt backup alone and commits on its PrepareOk; the Prepare
    // carries the new op only, not the log that every backup already holds.
    const op = view + 2;
    cluster.request(primary, 2, view, kvSet("after", `view ${view}`));
    assert.deepEqual(preparesOf(primary), [[prompt, [op]]]);
    cluster.run();
    assert.equal(cluster.replica(primary).commitNumber, op);
    // The spare gets the op at the primary's first catch-up tick, and nothing else is re-sent.
    cluster.tick(primary, cluster.replica(primary).timing.spareCatchUpTicks);
    assert.deepEqual(preparesOf(primary), [[spare, [op]]]);
    cluster.run();
    assert.equal(cluster.replica(spare).opNumber, op);
  }
});

Deno.test("§6.2 at most preparesInFlightMax Prepares await their commit; later requests wait and go out together", () => {
  const primary = makeReplica(0);
  const preparedTo1 = (effects: readonly Effect[]) =>
    sendsOf(effects, "prepare").filter((s) => s.to === 1).map((s) =>
      s.message.entries.map((e) => e.opNumber)
    );
  assert.equal(primary.limits.preparesInFlightMax, 2);
  assert.deepEqual(preparedTo1(stepDurable(primary, request(1, 1, kvSet("a", "1")))), [[1]]);
  assert.deepEqual(preparedTo1(stepDurable(primary, request(2, 1, kvSet("b", "1")))), [[2]]);
  // Two Prepares await their commit: these requests are logged but wait.
  assert.deepEqual(preparedTo1(stepDurable(primary, request(3, 1, kvSet("c", "1")))), []);
  assert.deepEqual(preparedTo1(stepDurable(primary, request(4, 1, kvSet("d", "1")))), []);
  assert.equal(primary.opNumber, 4);
  // Op 1 commits: ops 3 and 4 go out in one Prepare.
  const ok = step(primary, {
    type: "prepare_ok",
    epoch: 0,
    viewNumber: 0,
    opNumber: 1,
    replica: 1,
    readRound: 0,
  });
  assert.equal(primary.commitNumber, 1);
  assert.deepEqual(preparedTo1(ok), [[3, 4]]);
  // A cumulative PrepareOk commits everything: the next request goes out at once.
  step(primary, {
    type: "prepare_ok",
    epoch: 0,
    viewNumber: 0,
    opNumber: 4,
    replica: 1,
    readRound: 0,
  });
  assert.equal(primary.commitNumber, 4);
  assert.deepEqual(preparedTo1(stepDurable(primary, request(5, 1, kvSet("e", "1")))), [[5]]);
  // The limit is a positive integer.
  assert.throws(
    () => makeReplica(0, { limits: { preparesInFlightMax: 0 } }),
    /preparesInFlightMax/,
  );
});

Deno.test("§6.2 Prepares left in flight in an old view never hold back a later view's requests", () => {
  const cluster = new Cluster();
  // r0, primary of view 0, is cut off: its two Prepares stay in flight, uncommitted.
  cluster.isolate(0);
  cluster.request(0, 1, 1, kvSet("lost1", "v"));
  cluster.run();
  cluster.request(0, 2, 1, kvSet("lost2", "v"));
  cluster.run();
  assert.equal(cluster.replica(0).opNumber, 2);
  // The others move on without those ops; r0 rejoins as a backup and drops them.
  const inView = (v: number, ...group: number[]) => () =>
    group.every((i) =>
      cluster.replica(i).status === "normal" && cluster.replica(i).viewNumber === v
    );
  cluster.settleUntil(inView(1, 1, 2));
  cluster.heal();
  cluster.settleUntil(inView(1, 0, 1, 2));
  assert.equal(cluster.replica(0).opNumber, 0);
  // Views 2 and 3 make r0 primary again, with a log shorter than its old Prepares.
  cluster.isolate(1);
  cluster.settleUntil(inView(2, 0, 2));
  cluster.heal();
  cluster.isolate(2);
  cluster.settleUntil(inView(3, 0, 1));
  assert.ok(cluster.replica(0).isPrimary);
  cluster.request(0, 3, 1, kvSet("new", "v"));
  cluster.settleUntil(() => cluster.replica(0).commitNumber === 1, 50);
  assert.equal(cluster.kvGet(0, "new"), "v");
});

// ------------------------------------------------------------------ restarts from disk

Deno.test("restart from disk as backup resumes normal", () => {
  const cluster = new Cluster();
  commitSome(cluster, 3);
  cluster.crash(1);
  assert.equal(cluster.disks[1]!.log.length, 3);
  const r1 = cluster.restart(1);
  assert.equal(r1.status, "normal");
  assert.equal(r1.viewNumber, 0);
  assert.equal(r1.opNumber, 3);
  assert.ok(r1.commitNumber <= 3 && r1.commitNumber >= 2, `commit ${r1.commitNumber}`);
  assert.equal(cluster.kvGet(1, "key2"), "value2", "committed entries replayed from disk");
  // It takes part at once: a new request commits with its PrepareOk alone (r2 cut off).
  cluster.isolate(2);
  cluster.request(0, 1, 4, kvSet("key4", "value4"));
  cluster.run();
  assert.equal(cluster.replica(0).commitNumber, 4);
  cluster.tick(0, 5);
  cluster.run();
  assert.equal(r1.commitNumber, 4);
  assert.equal(cluster.kvGet(1, "key4"), "value4");
  assert.equal(cluster.resultsTo(1).at(-1)!.opNumber, 4);
});

Deno.test("restart of a former primary starts the next view", () => {
  const cluster = new Cluster();
  commitSome(cluster, 2);
  cluster.crash(0);
  const r0 = cluster.restart(0);
  assert.equal(r0.status, "view_change");
  assert.equal(r0.viewNumber, 1);
  assert.equal(cluster.disks[0]!.superblock.viewNumber, 1, "the new view is durable");
  cluster.run();
  assert.equal(cluster.replica(1).status, "normal");
  assert.ok(cluster.replica(1).isPrimary);
  assert.equal(r0.status, "normal");
  assert.equal(r0.viewNumber, 1);
  assert.equal(r0.isPrimary, false);
  assert.deepEqual(cluster.logOf(0).map(requestName), ["c1.s1", "c1.s2"]);
  cluster.request(1, 1, 3, kvSet("key3", "value3"));
  cluster.run();
  assert.deepEqual(cluster.committedRequests(), ["c1.s1", "c1.s2", "c1.s3"]);
  assert.equal(cluster.resultsTo(1).at(-1)!.viewNumber, 1);
  // The old primary's requests are now answered by the new one.
  cluster.request(0, 2, 1, kvGet("key3"));
  assert.equal(cluster.repliesTo(2).at(-1)!.type, "not_primary");
});

// ------------------------------------------------------------------ §6.3 reads without the log

/** A PrepareOk from `replica` echoing read round `readRound`. */
function echo(replica: number, opNumber: number, readRound: number): Message {
  return { type: "prepare_ok", epoch: 0, viewNumber: 0, opNumber, replica, readRound };
}

Deno.test("§6.3 a read is answered without a log entry once f backups echo a round begun after it", () => {
  const primary = makeReplica(0);
  stepDurable(primary, request(1, 1, kvSet("a", "1")));
  step(primary, echo(1, 1, 0));
  assert.equal(primary.commitNumber, 1);

  const effects = step(primary, request(2, 1, kvGet("a")));
  // No entry, no disk write, no Prepare: a Commit asking both backups for read round 1.
  assert.equal(primary.opNumber, 1);
  assert.deepEqual(effects.filter((e) => e.type !== "send"), []);
  assert.deepEqual(
    sendsOf(effects, "commit").map((s) => [s.to, s.message.readRound, s.message.commitNumber]),
    [[1, 1, 1], [2, 1, 1]],
  );
  // A PrepareOk that echoes no round (sent before the read arrived, say) answers nothing.
  assert.deepEqual(repliesOf(step(primary, echo(1, 1, 0))), []);
  const replies = repliesOf(step(primary, echo(2, 1, 1)));
  assert.equal(replies.length, 1);
  const reply = replies[0]! as Extract<(typeof replies)[number], { type: "reply" }>;
  assert.deepEqual([reply.clientId, reply.requestNumber, reply.opNumber], [2, 1, 1]);
  assert.equal(resultOf(reply), "1");
  // SIZE is a read too; SET, DEL and malformed operations go through the log.
  step(primary, request(2, 2, encodeKvOperation({ command: "SIZE" })));
  assert.equal(primary.opNumber, 1);
  stepDurable(primary, request(2, 3, new Uint8Array([0xc1])));
  assert.equal(primary.opNumber, 2);
});

Deno.test("§6.3 an echo of an earlier round does not answer a later read", () => {
  const primary = makeReplica(0);
  assert.deepEqual(sendsOf(step(primary, request(1, 1, kvGet("a"))), "commit").length, 2);
  // Read 2 arrives while round 1 is out: it needs round 2, which begins at the end of its turn.
  const second = step(primary, request(2, 1, kvGet("a")));
  assert.deepEqual(sendsOf(second, "commit").map((s) => s.message.readRound), [2, 2]);
  assert.deepEqual(repliesOf(step(primary, echo(1, 0, 1))).map((r) => r.clientId), [1]);
  assert.deepEqual(repliesOf(step(primary, echo(2, 0, 1))), []);
  assert.deepEqual(repliesOf(step(primary, echo(2, 0, 2))).map((r) => r.clientId), [2]);
  // An echo of a round never begun is bogus: ignored.
  step(primary, request(3, 1, kvGet("a")));
  assert.deepEqual(repliesOf(step(primary, echo(1, 0, 9))), []);
});

Deno.test("§6.3 a read waits until the writes that arrived before it commit", () => {
  const primary = makeReplica(0);
  stepDurable(primary, request(1, 1, kvSet("a", "old")));
  step(primary, echo(1, 1, 0));
  stepDurable(primary, request(1, 2, kvSet("a", "new"))); // op 2: prepared, not committed
  step(primary, request(2, 1, kvGet("a")));
  // The round is confirmed, but op 2 (in the log when the read arrived) is not committed yet.
  assert.deepEqual(repliesOf(step(primary, echo(1, 1, 1))), []);
  const replies = repliesOf(step(primary, echo(2, 2, 1))).filter((r) => r.clientId === 2);
  assert.equal(replies.length, 1);
  assert.equal(resultOf(replies[0]! as { result: Uint8Array }), "new");
});

Deno.test("§6.3 lost read rounds are begun again; a group of one needs none", () => {
  const primary = makeReplica(0);
  step(primary, request(1, 1, kvGet("a")));
  let rounds: number[] = [];
  for (let t = 1; t <= primary.timing.prepareRetryTicks; t++) {
    primary.tick(t * 10);
    rounds = rounds.concat(
      sendsOf(primary.drainEffects(), "commit").map((s) => s.message.readRound),
    );
  }
  assert.ok(rounds.includes(2), `a second round after a retry period, got ${rounds}`);
  // An echo of the new round answers the read that waited for the lost one.
  assert.equal(repliesOf(step(primary, echo(1, 0, 2))).length, 1);

  const alone = makeReplica(0, { n: 1 });
  stepDurable(alone, request(1, 1, kvSet("a", "1")));
  const replies = repliesOf(step(alone, request(1, 2, kvGet("a"))));
  assert.equal(replies.length, 1);
  assert.equal(resultOf(replies[0]! as { result: Uint8Array }), "1");
});

Deno.test("§6.3 a backup echoes the latest read round of its view in every PrepareOk", () => {
  const backup = makeReplica(1);
  const commit = (readRound: number): Message => ({
    type: "commit",
    epoch: 0,
    viewNumber: 0,
    commitNumber: 0,
    replica: 0,
    readRound,
  });
  assert.deepEqual(sendsOf(step(backup, commit(3)), "prepare_ok").map((s) => s.message.readRound), [
    3,
  ]);
  // A plain heartbeat, or a late Commit of an earlier round, does not take the echo back.
  assert.deepEqual(sendsOf(step(backup, commit(0)), "prepare_ok").map((s) => s.message.readRound), [
    3,
  ]);
  assert.deepEqual(sendsOf(step(backup, commit(2)), "prepare_ok").map((s) => s.message.readRound), [
    3,
  ]);
});

Deno.test("§6.3 with f = 2 a read needs the echoes of two backups", () => {
  const primary = makeReplica(0, { n: 5 });
  step(primary, request(1, 1, kvGet("a")));
  assert.deepEqual(repliesOf(step(primary, echo(1, 0, 1))), []);
  assert.deepEqual(
    repliesOf(step(primary, echo(1, 0, 1))),
    [],
    "the same backup twice is one echo",
  );
  assert.equal(repliesOf(step(primary, echo(3, 0, 1))).length, 1);
});

Deno.test("§6.3 a retried read waits once; a restarted client reusing a read's number gets its own answer", () => {
  const primary = makeReplica(0);
  stepDurable(primary, request(1, 1, kvSet("x", "X")));
  stepDurable(primary, request(1, 2, kvSet("y", "Y")));
  step(primary, echo(1, 2, 0));
  step(primary, request(5, 3, kvGet("x")));
  step(primary, request(5, 3, kvGet("x"))); // a retry: no second answer later
  // A query for client 5's latest request-number counts the read waiting here (§4.5).
  const query = step(primary, { type: "request_number_query", clientId: 5, nonce: 1 });
  assert.deepEqual(
    query.flatMap((e) =>
      e.type === "reply" && e.message.type === "request_number_reply"
        ? [e.message.requestNumber]
        : []
    ),
    [3],
  );
  // Client 5, restarted without asking, sends GET y as s=3: only that read is answered.
  step(primary, request(5, 3, kvGet("y")));
  const replies = repliesOf(step(primary, echo(1, 2, 2)));
  assert.deepEqual(replies.map((r) => resultOf(r as { result: Uint8Array })), ["Y"]);
});

Deno.test("§4.2 a view whose uncommitted suffix exceeds 4 MiB installs on every backup", () => {
  // Issue 12: the pipeline let 8 MiB stay uncommitted while StartView and NewState carried at
  // most 4 MiB, and a replica adopting a view installs its uncommitted suffix from one message:
  // with a suffix of more than 4 MiB no backup could install the new view, for good.
  const cluster = new Cluster({ limits: { preparesInFlightMax: 8 } });
  const big = (i: number) => kvSet(`big${i}`, "x".repeat(1024 * 1024 - 64));
  // Every backup gets the Prepares, but no PrepareOk reaches the primary: nothing commits.
  cluster.hold(ofType("prepare_ok"));
  for (let s = 1; s <= 6; s++) {
    cluster.request(0, 1, s, big(s));
    cluster.run();
  }
  assert.equal(cluster.replica(1).opNumber, 6);
  assert.equal(cluster.replica(2).opNumber, 6);
  assert.equal(cluster.replica(0).commitNumber, 0, "6 MiB uncommitted");
  cluster.crash(0);
  cluster.release();
  cluster.drop(ofType("prepare_ok"));
  cluster.settleUntil(() =>
    [1, 2].every((i) => {
      const r = cluster.replica(i);
      return r.status === "normal" && r.viewNumber >= 1 && r.commitNumber === 6;
    })
  );
  assert.equal(cluster.kvGet(2, "big6")?.length, 1024 * 1024 - 64);
});

Deno.test("limits whose transfers cannot carry a view's uncommitted suffix are refused", () => {
  assert.throws(
    () => new Cluster({ limits: { transferBytesMax: 4 * 1024 * 1024 } }),
    /transferBytesMax .* must be at least pipelineOpsMax .* and pipelineBytesMax \+ operationBytesMax/,
  );
});
