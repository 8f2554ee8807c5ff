/**
 * The simulator's invariants, checked after every event (docs/verification.md):
 * 1. Agreement: one global committed sequence; every replica's commits match or extend it.
 * 2. Durability: the primary of the newest view holds the whole committed sequence when it
 *    enters status normal; an acknowledged op is committed and stays so (by 1).
 * 3. Monotonicity: within one incarnation, view-number and commit-number never go back.
 * 4. Exactly once: each (client-id, request-number) appears at most once in the sequence.
 * 5. Replies are right: every reply equals the result of a plain model executing the sequence;
 *    a read answered without the log (§6.3) equals the model's answer at the commit-number it
 *    names, which must be committed.
 * 6. Replicas at the same commit-number have the same state digest (the model's), and the same
 *    client table (the one a model table implies): also a replica that jumped there by installing
 *    a checkpoint (§5.1), or restarted from one.
 * 7. (Linearizability of the clients' history is checked by the simulator at the end.)
 * 8. §5.1 No entry leaves a replica's log before a checkpoint covers it, and a checkpoint a
 *    replica installs holds only committed ops.
 *
 * @module
 */
import { GROUP_CLIENT_ID } from "../vr/membership.ts";
import {
  decodeKvBatch,
  decodeKvBatchResult,
  decodeKvOperation,
  decodeKvResult,
  encodeKvResult,
  type KvOperation,
  type KvResult,
  KvStore,
} from "../app/kv.ts";
import { bytesEqual } from "../lib/bytes.ts";
import { crc32c } from "../lib/crc32c.ts";
import { LIMITS_DEFAULT } from "../vr/constants.ts";
import type { StateMachine } from "../app/state_machine.ts";
import { sameEntry } from "../vr/log.ts";
import type { LogEntry, Reply, Request } from "../vr/message.ts";
import type { Replica, Status } from "../vr/replica.ts";

/** A broken invariant: the run fails with this message. */
export class InvariantViolation extends Error {
  override name = "InvariantViolation";
}

interface ReplicaTrack {
  /** §7 Views are of an epoch: (epoch, view) never goes back. */
  epoch: number;
  viewNumber: number;
  commitNumber: number;
  status: Status;
  /**
   * While recovering (§4.3): how many ops were committed when this recovery began, which is when
   * the replica started (`onStart`: a replica runs recovery only as it restarts). Every
   * RecoveryResponse carrying this recovery's nonce was sent after that moment, and one of them
   * comes from the primary of the latest view, whose log holds every op committed before it
   * answered; so the recovered log must hold all of them. A response from an earlier recovery
   * (the nonce check skipped) can be older and lack some.
   */
  readonly committedAtRecoveryStart: number;
}

export class Checker {
  readonly #committed: LogEntry[] = [];
  /** The plain model: a fresh state machine of the app, applying the committed sequence. */
  readonly #model: StateMachine;
  /** The model when it is the key-value store, whose reads and sizes are also checked. */
  readonly #kv: KvStore | undefined;
  readonly #results: Uint8Array[] = [];
  /** The model's digest after each op; index 0 is the empty state. */
  readonly #digests: string[] = [];
  readonly #requests = new Map<string, number>();
  /**
   * The operation of every request clients sent, by "clientId:requestNumber:checksum" (a
   * restarted client may reuse a number for another operation), and how many ops were committed
   * when it was first sent.
   */
  readonly #operations = new Map<string, { operation: Uint8Array; committedBefore: number }>();
  /** Per key (one character per byte): the ops that set (value) or deleted (null) it, in order. */
  readonly #keyWrites = new Map<string, { op: number; value: Uint8Array | null }[]>();
  /** The number of keys after each op; index 0 is the empty state. */
  readonly #sizes: number[] = [0];
  /**
   * The client table the committed sequence implies (a model of its own, not `ClientTable`, so
   * that a bug there shows), and its digest after each op.
   */
  readonly #clientTable: ClientTableModel;
  readonly #clientTableDigests: string[] = ["floor=0"];
  /** How many replies were reads answered without the log. */
  readsChecked = 0;
  readonly #tracks: (ReplicaTrack | undefined)[];
  /** The latest (epoch, view) some replica was normal in. */
  #maxNormalEpoch = 0;
  #maxNormalView = 0;
  viewChanges = 0;
  /**
   * Another app's reads without the log: a fresh machine of the app, and the model's snapshot
   * after each of the last `APP_SNAPSHOTS_KEPT` ops (index: op-number), to rebuild the state a
   * read was answered in.
   */
  readonly #createModel: (() => StateMachine) | undefined;
  readonly #appSnapshots = new Map<number, Uint8Array>();

  /**
   * `model`: a fresh state machine of the app the replicas run (their digests must be its); the
   * key-value store by default, whose reads without the log are checked too. `createModel`, for
   * another app whose replicas answer reads without the log: makes fresh machines of it, to check
   * those reads (see `#checkAppRead`).
   */
  constructor(
    replicaCount: number,
    clientsMax: number = LIMITS_DEFAULT.clientsMax,
    model?: StateMachine,
    createModel?: () => StateMachine,
  ) {
    this.#createModel = createModel;
    this.#kv = model === undefined ? new KvStore() : undefined;
    this.#model = model ?? this.#kv!;
    this.#clientTable = new ClientTableModel(clientsMax);
    this.#tracks = new Array<ReplicaTrack | undefined>(replicaCount).fill(undefined);
    this.#digests.push(this.#model.digest());
  }

  get committedCount(): number {
    return this.#committed.length;
  }

  committedEntry(opNumber: number): LogEntry | undefined {
    return this.#committed[opNumber - 1];
  }

  /** Room to track machines with ids up to `count - 1` (new members of later epochs). */
  grow(count: number): void {
    while (this.#tracks.length < count) this.#tracks.push(undefined);
  }

  onStart(index: number, replica: Replica): void {
    // A restart from disk replays its committed prefix: it must agree with everyone's.
    this.#checkCommits(index, replica, 0);
    this.#tracks[index] = {
      epoch: replica.epoch,
      viewNumber: replica.viewNumber,
      commitNumber: replica.commitNumber,
      status: replica.status,
      committedAtRecoveryStart: this.#committed.length,
    };
  }

  onCrash(index: number): void {
    this.#tracks[index] = undefined;
  }

  afterStep(index: number, replica: Replica, cause: string): void {
    const track = this.#tracks[index];
    if (track === undefined) throw new InvariantViolation(`r${index} stepped while down`);
    if (replica.epoch < track.epoch) {
      this.#fail(index, cause, `epoch went back from ${track.epoch} to ${replica.epoch}`);
    }
    if (replica.epoch === track.epoch && replica.viewNumber < track.viewNumber) {
      this.#fail(index, cause, `view went back from ${track.viewNumber} to ${replica.viewNumber}`);
    }
    if (replica.commitNumber < track.commitNumber) {
      this.#fail(index, cause, `commit went back from ${track.commitNumber}`);
    }
    if (replica.commitNumber > replica.opNumber) this.#fail(index, cause, "commit beyond op");
    if (
      replica.status === "normal" && replica.isMember &&
      replica.commitNumber < replica.membership.opNumber
    ) {
      // §7 A member of an epoch executed the Reconfiguration that began it.
      this.#fail(
        index,
        cause,
        `normal in epoch ${replica.epoch} with commit ${replica.commitNumber}, before the ` +
          `Reconfiguration at op ${replica.membership.opNumber} that began it`,
      );
    }
    if (replica.commitNumber !== track.commitNumber) {
      this.#checkCommits(index, replica, track.commitNumber);
    }
    const enteredNormal = replica.status === "normal" &&
      (track.status !== "normal" || track.viewNumber !== replica.viewNumber);
    const covered = Math.max(replica.checkpointOpNumber, replica.installingCheckpointOpNumber);
    if (replica.logBaseOpNumber > covered) {
      this.#fail(
        index,
        cause,
        `its log starts after op ${replica.logBaseOpNumber}, beyond its checkpoint of op ${covered}`,
      );
    }
    if (enteredNormal && track.status === "recovering") {
      // Durability through recovery: see `committedAtRecoveryStart`. (A recovery that ended
      // with a Reconfiguration, §7, enters the new epoch's first view as any member does: it
      // promised nothing there, and catches up like a slow backup; but it holds every op up to
      // the Reconfiguration that was committed before it began.)
      const upTo = track.epoch === replica.epoch
        ? track.committedAtRecoveryStart
        : Math.min(track.committedAtRecoveryStart, replica.membership.opNumber);
      for (let op = replica.logBaseOpNumber + 1; op <= upTo; op++) {
        const entry = replica.logEntry(op);
        if (entry === undefined || !sameEntry(entry, this.#committed[op - 1]!)) {
          this.#fail(
            index,
            cause,
            `recovered in view ${replica.viewNumber} without op ${op}, committed before its recovery began`,
          );
        }
      }
    }
    const latest = replica.epoch > this.#maxNormalEpoch ||
      (replica.epoch === this.#maxNormalEpoch && replica.viewNumber >= this.#maxNormalView);
    if (enteredNormal) {
      if (replica.isPrimary && latest) {
        if (replica.viewNumber > replica.membership.startViewNumber) this.viewChanges++;
        // Durability: the new primary's log holds every committed op.
        for (let op = replica.logBaseOpNumber + 1; op <= this.#committed.length; op++) {
          const entry = replica.logEntry(op);
          if (entry === undefined || !sameEntry(entry, this.#committed[op - 1]!)) {
            this.#fail(
              index,
              cause,
              `new primary of view ${replica.viewNumber} lacks committed op ${op}`,
            );
          }
        }
      }
      if (latest) {
        this.#maxNormalEpoch = replica.epoch;
        this.#maxNormalView = replica.viewNumber;
      }
    }
    track.epoch = replica.epoch;
    track.viewNumber = replica.viewNumber;
    track.commitNumber = replica.commitNumber;
    track.status = replica.status;
  }

  /** A client sent `request`: its operation is needed to check a read's reply. */
  onRequest(request: Request): void {
    const key = operationKey(request.clientId, request.requestNumber, crc32c(request.operation));
    if (!this.#operations.has(key)) {
      this.#operations.set(key, {
        operation: request.operation,
        committedBefore: this.#committed.length,
      });
    }
  }

  /** Invariant 5: a reply carries the model's result for that request, at its op-number. */
  onReplySent(reply: Reply | { readonly type: string }): void {
    if (reply.type !== "reply") return;
    const message = reply as Reply;
    const op = this.#requests.get(`${message.clientId}:${message.requestNumber}`);
    // The request a reply answers is the one with its client, number and operation: a restarted
    // client may have reused the number of a logged request for a read, or for another write.
    if (
      op === undefined ||
      crc32c(this.#committed[op - 1]!.operation) !== message.operationChecksum
    ) {
      return this.#checkRead(message);
    }
    if (op !== message.opNumber) {
      throw new InvariantViolation(
        `reply to c=${message.clientId} s=${message.requestNumber} names op ${message.opNumber}, committed at ${op}`,
      );
    }
    if (!bytesEqual(this.#results[op - 1]!, message.result)) {
      throw new InvariantViolation(
        `reply to c=${message.clientId} s=${message.requestNumber} differs from the model's`,
      );
    }
  }

  /** At the end: every replica holds exactly the committed sequence. */
  checkFinal(replicas: readonly Replica[]): void {
    replicas.forEach((replica, index) => {
      if (replica.commitNumber !== this.#committed.length) {
        this.#fail(index, "final", `commit ${replica.commitNumber} != ${this.#committed.length}`);
      }
      this.#checkCommits(index, replica, 0);
    });
  }

  /** Invariants 1, 4, 6 for the commits of `replica` after `from`. */
  #checkCommits(index: number, replica: Replica, from: number): void {
    const base = replica.logBaseOpNumber;
    if (base > from) {
      // Ops up to the base came with a checkpoint (§5.1): the state and client table are checked
      // below; the ops themselves must have been committed before anyone checkpointed them.
      if (base > this.#committed.length) {
        this.#fail(
          index,
          "commit",
          `holds a checkpoint of op ${base}, but only ${this.#committed.length} ops are committed`,
        );
      }
      from = base;
    }
    for (let op = from + 1; op <= replica.commitNumber; op++) {
      const entry = replica.logEntry(op);
      if (entry === undefined) this.#fail(index, "commit", `committed op ${op} not in its log`);
      const known = this.#committed[op - 1];
      if (known !== undefined) {
        if (
          !sameEntry(known, entry) || known.clientId !== entry.clientId ||
          known.requestNumber !== entry.requestNumber || known.timestamp !== entry.timestamp ||
          !bytesEqual(known.operation, entry.operation)
        ) {
          this.#fail(
            index,
            "commit",
            `agreement: op ${op} committed as v${entry.viewNumber} c=${entry.clientId} s=${entry.requestNumber}, ` +
              `but before as v${known.viewNumber} c=${known.clientId} s=${known.requestNumber}`,
          );
        }
        continue;
      }
      if (op !== this.#committed.length + 1) this.#fail(index, "commit", `hole before op ${op}`);
      if (entry.clientId === GROUP_CLIENT_ID) {
        // §7 The group's own entry: the state machine and the client table never see it.
        this.#committed.push(entry);
        this.#results.push(new Uint8Array());
        this.#digests.push(this.#digests[this.#digests.length - 1]!);
        this.#sizes.push(this.#sizes[this.#sizes.length - 1]!);
        this.#clientTableDigests.push(
          this.#clientTableDigests[this.#clientTableDigests.length - 1]!,
        );
        continue;
      }
      const key = `${entry.clientId}:${entry.requestNumber}`;
      const earlier = this.#requests.get(key);
      if (earlier !== undefined) {
        this.#fail(
          index,
          "commit",
          `exactly once: c=${entry.clientId} s=${entry.requestNumber} committed at op ${earlier} and ${op}`,
        );
      }
      this.#requests.set(key, op);
      this.#committed.push(entry);
      this.#results.push(this.#model.apply(entry.operation, {
        opNumber: op,
        timestamp: entry.timestamp,
        clientId: entry.clientId,
        requestNumber: entry.requestNumber,
      }));
      this.#digests.push(this.#model.digest());
      if (this.#createModel !== undefined) {
        this.#appSnapshots.set(op, this.#model.snapshot());
        this.#appSnapshots.delete(op - APP_SNAPSHOTS_KEPT);
      }
      this.#sizes.push(this.#kv?.size ?? 0);
      this.#clientTable.onExecute(entry, this.#results[op - 1]!, crc32c(entry.operation));
      this.#clientTableDigests.push(this.#clientTable.digest());
      const decoded = this.#kv === undefined
        ? { error: "not the key-value store" }
        : kvOperations(entry.operation);
      // A batch the store stopped early (its results' size) executed only its first ones.
      const ran = "error" in decoded ? 0 : resultsOf(decoded, this.#results[op - 1]!).length;
      for (const operation of "error" in decoded ? [] : decoded.operations.slice(0, ran)) {
        if (operation.command !== "SET" && operation.command !== "DEL") continue;
        // A batch's writes in its order: the last one of a key is the one its op-number leaves.
        const key = keyString(operation.key);
        let writes = this.#keyWrites.get(key);
        if (writes === undefined) this.#keyWrites.set(key, writes = []);
        writes.push({ op, value: operation.command === "SET" ? operation.value : null });
      }
    }
    const digest = this.#digests[replica.commitNumber];
    if (digest !== undefined && replica.app.digest() !== digest) {
      this.#fail(
        index,
        "commit",
        `state digest at op ${replica.commitNumber} differs from the model`,
      );
    }
    const table = this.#clientTableDigests[replica.commitNumber];
    if (table !== undefined && replica.clientTableDigest() !== table) {
      this.#fail(
        index,
        "commit",
        `client table at op ${replica.commitNumber} differs from the model's: ` +
          `${replica.clientTableDigest()} != ${table}`,
      );
    }
  }

  /** A reply to a request not in the log: a read, answered at the commit-number it names. */
  #checkRead(reply: Reply): void {
    const name = `reply to c=${reply.clientId} s=${reply.requestNumber}`;
    const sent = this.#operations.get(
      operationKey(reply.clientId, reply.requestNumber, reply.operationChecksum),
    );
    if (sent === undefined) {
      throw new InvariantViolation(`${name}: answers an operation no client sent under it`);
    }
    if (this.#kv === undefined && this.#createModel !== undefined) {
      return this.#checkAppRead(reply, sent, name);
    }
    // Another app's reads without the log are checked above: without `createModel` they all go
    // through the log, and a reply to a request not in the log is a reply to nothing committed.
    const decoded = this.#kv === undefined
      ? { error: "not the key-value store" }
      : kvOperations(sent.operation);
    if (
      "error" in decoded ||
      decoded.operations.some((operation) =>
        operation.command !== "GET" && operation.command !== "SIZE"
      )
    ) {
      throw new InvariantViolation(`${name} for an uncommitted request`);
    }
    if (reply.opNumber > this.#committed.length) {
      throw new InvariantViolation(`${name}: a read at op ${reply.opNumber}, not yet committed`);
    }
    // A primary answers only once f+1 replicas were in its view after the read arrived, so no
    // later view had formed before then, and its log held every op committed before the read was
    // sent; it answers at or after that op-number. An older state is stale.
    if (reply.opNumber < sent.committedBefore) {
      throw new InvariantViolation(
        `${name}: a stale read at op ${reply.opNumber}; op ${sent.committedBefore} was ` +
          `committed before it was sent`,
      );
    }
    const expected = decoded.operations.map((operation) => {
      if (operation.command !== "GET") {
        return encodeKvResult({ kind: "integer", value: this.#sizes[reply.opNumber]! });
      }
      const writes = this.#keyWrites.get(keyString(operation.key)) ?? [];
      let value: Uint8Array | null = null;
      for (let index = writes.length - 1; index >= 0; index--) {
        if (writes[index]!.op <= reply.opNumber) {
          value = writes[index]!.value;
          break;
        }
      }
      return encodeKvResult(value === null ? { kind: "nil" } : { kind: "bytes", value });
    });
    // One read: its bytes as sent (a batch's results, re-encoded one by one).
    const answered = decoded.batch
      ? resultsOf(decoded, reply.result).map(encodeKvResult)
      : [reply.result];
    if (
      answered.length !== expected.length ||
      answered.some((result, index) => !bytesEqual(expected[index]!, result))
    ) {
      throw new InvariantViolation(
        `${name}: the read differs from the model's at op ${reply.opNumber}`,
      );
    }
    this.readsChecked++;
  }

  /**
   * Another app's read answered without the log (`readOnly`, `query`), at `reply.opNumber`: the
   * reply must be what `apply` gives in the state after that op (the model's, rebuilt from its
   * snapshot), and that `apply` must leave the state as it was: an operation that changes the
   * state answered without the log would be lost.
   */
  #checkAppRead(
    reply: Reply,
    sent: { readonly operation: Uint8Array; readonly committedBefore: number },
    name: string,
  ): void {
    const at = reply.opNumber;
    if (at > this.#committed.length) {
      throw new InvariantViolation(`${name}: a read at op ${at}, not yet committed`);
    }
    if (at < sent.committedBefore) {
      throw new InvariantViolation(
        `${name}: a stale read at op ${at}; op ${sent.committedBefore} was committed before it ` +
          "was sent",
      );
    }
    const machine = this.#createModel!();
    if (at > 0) {
      const snapshot = this.#appSnapshots.get(at);
      if (snapshot === undefined) return; // Older than the snapshots kept: not checked.
      machine.restore(snapshot);
    }
    const before = machine.digest();
    const expected = machine.apply(sent.operation, {
      opNumber: at + 1,
      timestamp: this.#committed[at - 1]?.timestamp ?? 0,
      clientId: reply.clientId,
      requestNumber: reply.requestNumber,
    });
    if (machine.digest() !== before) {
      throw new InvariantViolation(
        `${name}: answered without the log, but apply changes the state (readOnly accepted a ` +
          "write)",
      );
    }
    if (!bytesEqual(expected, reply.result)) {
      throw new InvariantViolation(
        `${name}: the read answered without the log differs from apply's result at op ${at} ` +
          "(query must answer what apply would)",
      );
    }
    this.readsChecked++;
  }

  #fail(index: number, cause: string, text: string): never {
    throw new InvariantViolation(`r${index} after ${cause}: ${text}`);
  }
}

/** The key-value operations of `bytes`: one, or a BATCH's in its order. */
function kvOperations(
  bytes: Uint8Array,
): { readonly operations: KvOperation[]; readonly batch: boolean } | { readonly error: string } {
  const batch = decodeKvBatch(bytes);
  if (batch === undefined) {
    const operation = decodeKvOperation(bytes);
    return "error" in operation ? operation : { operations: [operation], batch: false };
  }
  if ("error" in batch) return batch;
  const operations: KvOperation[] = [];
  for (const encoded of batch) {
    const operation = decodeKvOperation(encoded);
    if ("error" in operation) return operation;
    operations.push(operation);
  }
  return { operations, batch: true };
}

/**
 * The results `result` holds for `decoded`: one, or a batch's (fewer than its operations when the
 * store stopped it early; none when the whole batch was refused).
 */
function resultsOf(decoded: { readonly batch: boolean }, result: Uint8Array): KvResult[] {
  if (!decoded.batch) return [decodeKvResult(result)];
  const results = decodeKvBatchResult(result);
  return Array.isArray(results) ? results : [];
}

/** How many of the model's latest snapshots another app's reads may be checked against. */
const APP_SNAPSHOTS_KEPT = 1024;

function operationKey(clientId: number, requestNumber: number, checksum: number): string {
  return `${clientId}:${requestNumber}:${checksum}`;
}

function keyString(key: Uint8Array): string {
  return String.fromCharCode(...key);
}

/**
 * §4.5 as the checker reads it: per client, its latest executed request (number, op-number,
 * operation checksum); past `clientsMax` clients, the one executed longest ago leaves and the
 * floor rises to its request-number. The digest is `ClientTable.digest`'s format.
 */
class ClientTableModel {
  readonly #records = new Map<number, { request: number; op: number; checksum: number }>();
  #floor = 0;

  constructor(readonly clientsMax: number) {}

  onExecute(entry: LogEntry, _result: Uint8Array, checksum: number): void {
    const known = this.#records.get(entry.clientId);
    if (known !== undefined && known.request > entry.requestNumber) return;
    this.#records.set(entry.clientId, {
      request: entry.requestNumber,
      op: entry.opNumber,
      checksum,
    });
    if (this.#records.size > this.clientsMax) {
      let oldest: number | undefined;
      for (const [clientId, record] of this.#records) {
        if (oldest === undefined || record.op < this.#records.get(oldest)!.op) oldest = clientId;
      }
      this.#floor = Math.max(this.#floor, this.#records.get(oldest!)!.request);
      this.#records.delete(oldest!);
    }
  }

  digest(): string {
    const ids = [...this.#records.keys()].sort((a, b) => a - b);
    let text = `floor=${this.#floor}`;
    for (const id of ids) {
      const record = this.#records.get(id)!;
      text += ` ${id}:${record.request}@${record.op}/${record.checksum}`;
    }
    return text;
  }
}
