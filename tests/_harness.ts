/**
 * A small deterministic harness around N protocol cores (`Replica`), for handler-level tests and
 * scripted scenarios. No randomness and no time of its own: the test decides which message is
 * delivered, dropped or held, when a replica ticks, crashes or restarts, and when a persist
 * completes. Every step goes through the simulator's `Checker`, so every scenario also checks the
 * global invariants (agreement, durability of the new primary's log, monotonicity, exactly once,
 * replies equal the model's, digests).
 *
 * Modelled on `src/sim/simulator.ts`: per-replica durable storage like its SimDisk (superblock,
 * log, commit-number, logIntact), restarts built from that storage with `durable`.
 *
 * @module
 */
import { sha256 } from "../src/lib/sha256.ts";
import {
  decodeKvResult,
  encodeKvOperation,
  type KvOperation,
  type KvResult,
  KvStore,
} from "../src/app/kv.ts";
import type { StateMachine } from "../src/app/state_machine.ts";
import { Checker } from "../src/sim/checker.ts";
import { MemoryDisk, type PersistEffect } from "../src/sim/memory_disk.ts";
import type { Limits, Timing } from "../src/vr/constants.ts";
import {
  type ClientMessage,
  type ClientReplyMessage,
  describeMessage,
  type LogEntry,
  type ReplicaMessage,
} from "../src/vr/message.ts";
import { type PlantedBug, Replica } from "../src/vr/replica.ts";

/** Milliseconds of the harness clock per tick (the node driver's TICK_MS). */
export const HARNESS_TICK_MS = 10;

/** What survives a crash of one replica: the simulator's disk. */
export type Disk = MemoryDisk;

/** A replica-to-replica message on its way. */
export interface Envelope {
  readonly seq: number;
  readonly from: number;
  readonly to: number;
  readonly message: ReplicaMessage;
}

export type MessageFilter = (envelope: Envelope) => boolean;

export interface HarnessOptions {
  /** The number of replicas (odd); 3 unless told. */
  readonly replicas?: number;
  readonly plantedBug?: PlantedBug | undefined;
  /** Defaults to the core's timing with no jitter, so tick counts in tests are exact. */
  readonly timing?: Partial<Timing>;
  /**
   * Defaults to the core's limits, except that every Prepare goes to every backup at once
   * (`quietPrepareBackups`): scripted scenarios count on it. Spares are tested on their own.
   */
  readonly limits?: Partial<Limits>;
  /** The state machine of each replica; a fresh KvStore unless told. */
  readonly app?: (replicaIndex: number) => StateMachine;
  /** Per-replica offsets added to the harness clock (§4.4: primaries with different clocks). */
  readonly clockOffsetMs?: readonly number[];
  /**
   * Print one line per event to the console (for debugging a scenario); defaults to whether the
   * environment variable HARNESS_TRACE is "1".
   */
  readonly trace?: boolean;
}

export class Cluster {
  readonly n: number;
  readonly f: number;
  readonly addresses: readonly string[];
  readonly checker: Checker;
  readonly disks: Disk[] = [];
  /** Messages sent and neither delivered nor dropped yet, oldest first. */
  inFlight: Envelope[] = [];
  /** Every replica-to-replica message ever sent (whatever became of it), oldest first. */
  readonly sent: Envelope[] = [];
  /** Everything replicas sent to clients, per client-id, in order. */
  readonly replies = new Map<number, ClientReplyMessage[]>();
  readonly trace: string[] = [];
  /** §7 The replicas that emitted `shut_down`, in order. */
  readonly shutDowns: number[] = [];
  /** The harness clock; each replica sees it plus its offset. */
  nowMs = 0;

  readonly #replicas: (Replica | undefined)[] = [];
  readonly #incarnations: number[] = [];
  readonly #pendingPersists: PersistEffect[][] = [];
  readonly #persistHeld: boolean[] = [];
  readonly #cuts = new Set<string>();
  #holds: MessageFilter[] = [];
  #seq = 0;
  readonly #options: HarnessOptions;
  readonly #timing: Partial<Timing>;

  constructor(options: HarnessOptions = {}) {
    this.#options = { trace: Deno.env.get("HARNESS_TRACE") === "1", ...options };
    this.n = options.replicas ?? 3;
    this.f = (this.n - 1) / 2;
    this.#timing = { primaryTimeoutJitterTicks: 0, ...options.timing };
    const addresses: string[] = [];
    for (let i = 0; i < this.n; i++) addresses.push(`test:${i}`);
    this.addresses = addresses;
    this.checker = new Checker(this.n, options.limits?.clientsMax);
    for (let i = 0; i < this.n; i++) {
      this.disks.push(new MemoryDisk());
      this.#incarnations.push(0);
      this.#pendingPersists.push([]);
      this.#persistHeld.push(false);
      this.#replicas.push(undefined);
    }
    for (let i = 0; i < this.n; i++) this.#start(i, true);
  }

  // ---------------------------------------------------------------- inspection

  /** Replica `i`; throws if it is down. */
  replica(i: number): Replica {
    const replica = this.#replicas[i];
    if (replica === undefined) throw new Error(`r${i} is down`);
    return replica;
  }

  isUp(i: number): boolean {
    return this.#replicas[i] !== undefined;
  }

  /** The log of replica `i`: the entries after its base (§5.1) up to its op-number. */
  logOf(i: number): LogEntry[] {
    const replica = this.replica(i);
    const entries: LogEntry[] = [];
    for (let op = replica.logBaseOpNumber + 1; op <= replica.opNumber; op++) {
      entries.push(replica.logEntry(op)!);
    }
    return entries;
  }

  /** The global committed sequence the checker keeps. */
  committed(): LogEntry[] {
    const entries: LogEntry[] = [];
    for (let op = 1; op <= this.checker.committedCount; op++) {
      entries.push(this.checker.committedEntry(op)!);
    }
    return entries;
  }

  /** `c<clientId>.s<requestNumber>` for each committed entry: easy to compare in assertions. */
  committedRequests(): string[] {
    return this.committed().map(requestName);
  }

  /** The value of `key` in replica `i`'s state machine (a KvStore), or null when absent. */
  kvGet(i: number, key: string): string | null {
    const copy = new KvStore();
    copy.restore(this.replica(i).app.snapshot());
    const result = decodeKvResult(copy.apply(kvGet(key), ctxZero));
    if (result.kind === "nil") return null;
    if (result.kind !== "bytes") throw new Error(`GET ${key}: ${JSON.stringify(result)}`);
    return decoder.decode(result.value);
  }

  repliesTo(clientId: number): ClientReplyMessage[] {
    return this.replies.get(clientId) ?? [];
  }

  /** The `reply` messages sent to `clientId` (not hints). */
  resultsTo(clientId: number): Extract<ClientReplyMessage, { type: "reply" }>[] {
    return this.repliesTo(clientId).filter((m) => m.type === "reply") as Extract<
      ClientReplyMessage,
      { type: "reply" }
    >[];
  }

  /** One line per replica: status, view, op-number, commit-number. */
  describe(): string {
    return this.#replicas.map((replica, i) =>
      replica === undefined ? `r${i}:down` : `r${i}:${state(replica)}`
    ).join(" ");
  }

  // ---------------------------------------------------------------- network

  /** Cut the link from `from` to `to`, and back too unless `oneWay`. */
  cut(from: number, to: number, oneWay = false): void {
    this.#cuts.add(`${from}>${to}`);
    if (!oneWay) this.#cuts.add(`${to}>${from}`);
    this.#log(`CUT r${from} ${oneWay ? "-/->" : "<-/->"} r${to}`);
  }

  /** Cut every link between `i` and the others. */
  isolate(i: number): void {
    for (let j = 0; j < this.n; j++) if (j !== i) this.cut(i, j);
  }

  /** Restore every link. Messages dropped meanwhile stay dropped. */
  heal(): void {
    this.#cuts.clear();
    this.#log("HEAL");
  }

  isCut(from: number, to: number): boolean {
    return this.#cuts.has(`${from}>${to}`);
  }

  /** Keep messages matching `filter` in flight: `run`/`deliver` skip them until `release`. */
  hold(filter: MessageFilter): void {
    this.#holds.push(filter);
  }

  release(): void {
    this.#holds = [];
  }

  /** Remove messages matching `filter` from the network; returns them. */
  drop(filter: MessageFilter = all): Envelope[] {
    const dropped = this.inFlight.filter(filter);
    this.inFlight = this.inFlight.filter((envelope) => !filter(envelope));
    for (const envelope of dropped) this.#log(`DROP ${describeEnvelope(envelope)}`);
    return dropped;
  }

  /** Messages in flight matching `filter`, without touching them. */
  peek(filter: MessageFilter = all): Envelope[] {
    return this.inFlight.filter(filter);
  }

  /** Put a message into the network as if `from` had sent it (a forged or replayed message). */
  inject(from: number, to: number, message: ReplicaMessage): void {
    this.#enqueue(from, to, message);
  }

  /**
   * Deliver, oldest first, the messages now in flight that match `filter` and are not held (one
   * pass: what they cause stays in flight). Returns how many were handed to a replica.
   */
  deliver(filter: MessageFilter = all): number {
    const batch = this.inFlight.filter((e) => filter(e) && !this.#held(e));
    const chosen = new Set(batch);
    this.inFlight = this.inFlight.filter((envelope) => !chosen.has(envelope));
    let count = 0;
    for (const envelope of batch) if (this.#deliverOne(envelope)) count++;
    return count;
  }

  /** Deliver matching, non-held messages until none is left. Returns how many were delivered. */
  run(filter: MessageFilter = all, stepsMax = 10_000): number {
    let total = 0;
    for (;;) {
      const index = this.inFlight.findIndex((e) => filter(e) && !this.#held(e));
      if (index < 0) return total;
      const [envelope] = this.inFlight.splice(index, 1);
      if (this.#deliverOne(envelope!)) total++;
      if (total > stepsMax) throw new Error(`run: not quiescent after ${stepsMax} deliveries`);
    }
  }

  // ---------------------------------------------------------------- time

  /** Tick replica `i` `count` times; the clock advances one tick each time. */
  tick(i: number, count = 1): void {
    for (let t = 0; t < count; t++) {
      this.nowMs += HARNESS_TICK_MS;
      this.#tickOne(i);
    }
  }

  /** Tick every up replica `count` times. */
  tickAll(count = 1): void {
    for (let t = 0; t < count; t++) {
      this.nowMs += HARNESS_TICK_MS;
      for (let i = 0; i < this.n; i++) if (this.isUp(i)) this.#tickOne(i);
    }
  }

  /** Tick `i` until `done` holds (checked before each tick); throws after `ticksMax`. */
  tickUntil(i: number, done: (replica: Replica) => boolean, ticksMax = 500): number {
    for (let t = 0; t < ticksMax; t++) {
      if (done(this.replica(i))) return t;
      this.tick(i);
    }
    if (done(this.replica(i))) return ticksMax;
    throw new Error(`r${i} did not reach the condition in ${ticksMax} ticks: ${this.describe()}`);
  }

  /** Alternate one tick of every replica with `run(filter)`, `rounds` times. */
  settle(rounds: number, filter: MessageFilter = all): void {
    for (let r = 0; r < rounds; r++) {
      this.tickAll();
      this.run(filter);
    }
  }

  /** `settle` until `done` holds; throws after `roundsMax`. Returns the rounds used. */
  settleUntil(done: () => boolean, roundsMax = 1_000, filter: MessageFilter = all): number {
    for (let r = 0; r < roundsMax; r++) {
      if (done()) return r;
      this.tickAll();
      this.run(filter);
    }
    if (done()) return roundsMax;
    throw new Error(`not settled after ${roundsMax} rounds: ${this.describe()}`);
  }

  // ---------------------------------------------------------------- persistence

  /** Persists of `i` stay pending (not durable, not acknowledged) until `releasePersists`. */
  holdPersists(i: number): void {
    this.#persistHeld[i] = true;
  }

  /** Complete `i`'s pending persists (all, or those up to `upToId`) and stop holding them. */
  releasePersists(i: number, upToId = Infinity): void {
    if (upToId === Infinity) this.#persistHeld[i] = false;
    this.#completePersists(i, upToId);
  }

  pendingPersists(i: number): readonly PersistEffect[] {
    return this.#pendingPersists[i]!;
  }

  // ---------------------------------------------------------------- faults

  /**
   * Crash replica `i`. Pending persists complete (the kernel wrote them) unless `loseUnsynced`;
   * `diskless` loses the log, so the restart runs §4.3 recovery.
   */
  crash(i: number, options: { diskless?: boolean; loseUnsynced?: boolean } = {}): void {
    const replica = this.replica(i);
    if (options.loseUnsynced !== true) {
      for (const effect of this.#pendingPersists[i]!) this.#applyWrite(i, effect);
    }
    this.#pendingPersists[i] = [];
    const disk = this.disks[i]!;
    if (options.diskless === true) disk.loseLog();
    this.#log(
      `CRASH r${i} ${state(replica)} ${
        options.diskless === true ? "losing its log" : "keeping its disk"
      }`,
    );
    this.#replicas[i] = undefined;
    this.#incarnations[i]!++;
    this.checker.onCrash(i);
  }

  /** Restart `i` from its disk (`durable`), as the simulator does. */
  restart(i: number): Replica {
    if (this.isUp(i)) throw new Error(`r${i} is up`);
    this.#start(i, false);
    return this.replica(i);
  }

  // ---------------------------------------------------------------- clients

  /** A client's request, handed at once to replica `i`. */
  request(
    i: number,
    clientId: number,
    requestNumber: number,
    operation: KvOperation | Uint8Array,
  ): void {
    const bytes = operation instanceof Uint8Array ? operation : encodeKvOperation(operation);
    this.clientSend(i, { type: "request", clientId, requestNumber, operation: bytes });
  }

  /** §4.1 A client whose request timed out re-sends it to every replica that is up. */
  requestAll(
    clientId: number,
    requestNumber: number,
    operation: KvOperation | Uint8Array,
  ): void {
    for (let i = 0; i < this.n; i++) {
      if (this.isUp(i)) this.request(i, clientId, requestNumber, operation);
    }
  }

  /** Hand any client message to replica `i` (dropped if it is down). */
  clientSend(i: number, message: ClientMessage): void {
    if (message.type === "request") this.checker.onRequest(message);
    const replica = this.#replicas[i];
    if (replica === undefined) return;
    this.#log(`r${i} ${state(replica)} <- client: ${describeMessage(message)}`);
    replica.onMessage(message);
    this.#afterStep(i, message.type);
  }

  // ---------------------------------------------------------------- internals

  #start(i: number, fresh: boolean): void {
    this.#incarnations[i]!++;
    const disk = this.disks[i]!;
    const app = this.#options.app?.(i) ?? new KvStore();
    const durable = fresh ? undefined : disk.load(app);
    this.#pendingPersists[i] = [];
    const replica = new Replica({
      chunkHash: sha256,
      replicaIndex: i,
      addresses: this.addresses,
      app,
      seed: 1_000 * (i + 1) + this.#incarnations[i]!,
      durable,
      plantedBug: this.#options.plantedBug,
      timing: this.#timing,
      limits: { quietPrepareBackups: this.addresses.length, ...this.#options.limits },
      log: this.#options.trace === true
        ? (level, text) => this.#log(`r${i} ${level} ${text}`)
        : undefined,
    });
    this.#replicas[i] = replica;
    this.checker.onStart(i, replica);
    if (!fresh) this.#log(`START r${i} ${state(replica)}`);
    this.#afterStep(i, "start");
  }

  #tickOne(i: number): void {
    const replica = this.#replicas[i];
    if (replica === undefined) return;
    replica.tick(this.nowMs + (this.#options.clockOffsetMs?.[i] ?? 0));
    this.#afterStep(i, "tick");
  }

  #held(envelope: Envelope): boolean {
    return this.#holds.some((filter) => filter(envelope));
  }

  #deliverOne(envelope: Envelope): boolean {
    const replica = this.#replicas[envelope.to];
    if (replica === undefined || this.isCut(envelope.from, envelope.to)) {
      this.#log(`LOST ${describeEnvelope(envelope)}`);
      return false;
    }
    this.#log(`r${envelope.to} ${state(replica)} <- ${describeEnvelope(envelope)}`);
    replica.onMessage(envelope.message);
    this.#afterStep(envelope.to, envelope.message.type);
    return true;
  }

  #enqueue(from: number, to: number, message: ReplicaMessage): void {
    const envelope: Envelope = { seq: this.#seq++, from, to, message };
    this.sent.push(envelope);
    if (this.isCut(from, to)) {
      this.#log(`CUT-DROP ${describeEnvelope(envelope)}`);
      return;
    }
    this.inFlight.push(envelope);
  }

  /** Carry out what replica `i` asked for after one step, then check the invariants. */
  #afterStep(i: number, cause: string): void {
    const replica = this.#replicas[i]!;
    const effects = replica.drainEffects();
    // Check first, so that replies are checked against the commits of this very step.
    this.checker.afterStep(i, replica, cause);
    for (const effect of effects) {
      switch (effect.type) {
        case "send":
          this.#enqueue(i, effect.to, effect.message);
          break;
        case "reply": {
          this.checker.onReplySent(effect.message);
          let list = this.replies.get(effect.clientId);
          if (list === undefined) this.replies.set(effect.clientId, list = []);
          list.push(effect.message);
          this.#log(`r${i} -> client ${effect.clientId}: ${describeMessage(effect.message)}`);
          break;
        }
        case "checkpoint": {
          // Written at once: the harness's disk is always ready.
          replica.onCheckpointed(this.disks[i]!.writeCheckpoint(effect));
          break;
        }
        case "truncate_log":
          this.disks[i]!.truncateBefore(effect.beforeOpNumber);
          break;
        case "send_checkpoint_chunks": {
          const chunks = this.disks[i]!.chunksOf(effect.opNumber, effect.indexes) ?? [];
          chunks.forEach((bytes, position) =>
            this.#enqueue(i, effect.to, {
              type: "checkpoint_chunk",
              epoch: replica.epoch,
              opNumber: effect.opNumber,
              index: effect.indexes[position]!,
              bytes,
              replica: i,
            })
          );
          break;
        }
        case "install_checkpoint":
        case "persist_log":
        case "persist_superblock":
        case "persist_membership":
          this.#pendingPersists[i]!.push(effect);
          break;
        case "shut_down":
          this.shutDowns.push(i);
          break;
      }
    }
    if (!this.#persistHeld[i]) this.#completePersists(i, Infinity);
  }

  #completePersists(i: number, upToId: number): void {
    const pending = this.#pendingPersists[i]!;
    let last = 0;
    while (pending.length > 0 && pending[0]!.id <= upToId) {
      const effect = pending.shift()!;
      this.#applyWrite(i, effect);
      last = effect.id;
    }
    if (last === 0 || this.#replicas[i] === undefined) return;
    this.#replicas[i]!.onPersisted(last);
    this.#afterStep(i, "persisted");
  }

  #applyWrite(i: number, effect: PersistEffect): void {
    this.disks[i]!.apply(effect);
  }

  #log(text: string): void {
    const line = `${String(this.nowMs).padStart(6)} ${text}`;
    this.trace.push(line);
    if (this.#options.trace === true) console.log(line);
  }
}

// ------------------------------------------------------------------ helpers for tests

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const ctxZero = { opNumber: 0, timestamp: 0, clientId: 0, requestNumber: 0 };

/** Every message. */
export const all: MessageFilter = () => true;

/** Messages of one type (and optionally from/to given replicas). */
export function ofType(
  type: ReplicaMessage["type"],
  from?: number,
  to?: number,
): MessageFilter {
  return (e) =>
    e.message.type === type && (from === undefined || e.from === from) &&
    (to === undefined || e.to === to);
}

/** Messages between replicas of `group` only (both ends in it). */
export function within(...group: number[]): MessageFilter {
  return (e) => group.includes(e.from) && group.includes(e.to);
}

export function from(...senders: number[]): MessageFilter {
  return (e) => senders.includes(e.from);
}

export function to(...receivers: number[]): MessageFilter {
  return (e) => receivers.includes(e.to);
}

export function kvSet(key: string, value: string): Uint8Array {
  return encodeKvOperation({
    command: "SET",
    key: encoder.encode(key),
    value: encoder.encode(value),
  });
}

export function kvGet(key: string): Uint8Array {
  return encodeKvOperation({ command: "GET", key: encoder.encode(key) });
}

export function kvDel(key: string): Uint8Array {
  return encodeKvOperation({ command: "DEL", key: encoder.encode(key) });
}

/** A reply's result, decoded; byte values as strings. */
export function resultOf(reply: { readonly result: Uint8Array }): string | number | null {
  const result: KvResult = decodeKvResult(reply.result);
  switch (result.kind) {
    case "nil":
      return null;
    case "bytes":
      return decoder.decode(result.value);
    case "integer":
      return result.value;
    case "error":
      throw new Error(`error result: ${result.message}`);
  }
}

export function requestName(entry: LogEntry): string {
  return `c${entry.clientId}.s${entry.requestNumber}`;
}

export function state(replica: Replica): string {
  return `[${replica.status} v${replica.viewNumber} op${replica.opNumber} k${replica.commitNumber}]`;
}

export function describeEnvelope(envelope: Envelope): string {
  return `r${envelope.from}->r${envelope.to}: ${describeMessage(envelope.message)}`;
}
