/**
 * The simulated network: delays, reordering, loss, duplication, bounded links, crashed nodes and
 * (possibly one-way) partitions, every random choice drawn from one seeded `Prng`.
 *
 * Nodes are integers in [0, NODE_ID_LIMIT). Messages are opaque: the network never inspects them.
 *
 * The network does not own the event queue. `send` hands each copy of a message to the `schedule`
 * callback given to the constructor, the simulator wraps it into its own event type, and when it
 * pops that event it calls `onDeliver`, which says whether to hand the message to the node. The
 * rules for when a message is dropped:
 *
 * - at send time: the sender is down ("down"), the directed link is cut ("partition"), the message
 *   is lost ("loss"), or the link already carries `linkCapacity` messages ("overflow");
 * - at arrival time: the receiver is down ("down"), or the directed link is cut ("partition"), so a
 *   partition that starts while a message is in flight catches it. A sender that crashes after
 *   sending does not recall its messages, and a receiver that restarts before a message arrives
 *   receives it, as with real packets.
 *
 * Accounting invariant: `sent + duplicated === delivered + (sum of dropped) + in flight`.
 *
 * Delivery delays are `delayMin` plus the exponential extra delay rounded to a whole number of time
 * units. Rounding keeps event times readable and makes a replay insensitive to the last bit of
 * `Math.log`, and whole-unit times make ties common, which the event queue breaks by insertion
 * order, deterministically.
 *
 * @module
 */

import type { Prng } from "../lib/prng.ts";

/**
 * Node identifiers must be integers below this limit. It keeps every directed-link key
 * `from * NODE_ID_LIMIT + to` below 2^30, a small integer for the JavaScript engine, so link
 * lookups neither allocate nor hash doubles.
 */
export const NODE_ID_LIMIT = 0x8000;

export interface NetworkOptions {
  /** The smallest delivery delay, in time units; finite and >= 1. */
  readonly delayMin: number;
  /**
   * The mean of the exponential extra delay added to `delayMin` (0 = constant delay). Distinct
   * extra delays are what reorder messages.
   */
  readonly delayMean: number;
  /** The probability, in [0, 1], that a sent message is lost. */
  readonly lossProbability: number;
  /**
   * The probability, in [0, 1], that a sent message is delivered a second time, with its own
   * delay. The copy occupies the link like any message, so it is only made if the link has room.
   */
  readonly duplicateProbability: number;
  /**
   * The largest number of messages in flight on one directed link (a non-negative integer, or
   * Infinity for unbounded); a send beyond it is dropped as "overflow".
   */
  readonly linkCapacity: number;
  /**
   * The probability, in [0, 1], that a message is held up for a long time (a stalled TCP
   * retransmission, a paused process): such stragglers deliver stale messages long after the fact.
   */
  readonly slowProbability?: number | undefined;
  /** The longest extra delay of a straggler, in time units. */
  readonly slowDelayMax?: number | undefined;
}

export type DropReason = "loss" | "partition" | "overflow" | "down";

export interface NetworkStats {
  /** Calls to `send`, whatever became of them. */
  sent: number;
  /** Arrivals handed to the receiver (a duplicated message can count twice). */
  delivered: number;
  dropped: Record<DropReason, number>;
  /** Extra copies scheduled by duplication. */
  duplicated: number;
  /** Partition operations that cut at least one link that was not already cut. */
  partitions: number;
}

/** One copy of a message on its way; a duplicate shares the object of the original. */
export interface Delivery<M> {
  readonly from: number;
  readonly to: number;
  readonly message: M;
}

/** How the network asks the simulator to call `onDeliver(delivery)` at `time`. */
export type ScheduleDelivery<M> = (time: number, delivery: Delivery<M>) => void;

/** Throw unless `node` is a valid node identifier. */
function checkNode(node: number, what: string): void {
  if (!(node >= 0 && node < NODE_ID_LIMIT && (node | 0) === node)) {
    throw new RangeError(
      `Network: ${what} must be an integer in [0, ${NODE_ID_LIMIT}), got ${node}`,
    );
  }
}

function checkProbability(value: number, what: string): void {
  if (!(value >= 0 && value <= 1)) {
    throw new RangeError(`Network: ${what} must be in [0, 1], got ${value}`);
  }
}

export class Network<M> {
  readonly stats: NetworkStats = {
    sent: 0,
    delivered: 0,
    dropped: { loss: 0, partition: 0, overflow: 0, down: 0 },
    duplicated: 0,
    partitions: 0,
  };

  readonly #delayMin: number;
  readonly #delayMean: number;
  readonly #lossProbability: number;
  readonly #duplicateProbability: number;
  readonly #linkCapacity: number;
  readonly #slowProbability: number;
  readonly #slowDelayMax: number;
  /** In-flight counts are only needed to enforce a finite capacity, so unbounded links skip them. */
  readonly #trackInFlight: boolean;
  readonly #prng: Prng;
  readonly #schedule: ScheduleDelivery<M>;
  #faultsEnabled = true;
  /** Keys `from * NODE_ID_LIMIT + to` of the directed links that are cut. */
  readonly #cuts = new Set<number>();
  /** Directed link key → the time until which the link holds what is sent on it. */
  readonly #stalls = new Map<number, number>();
  /** 1 for a node that is down, indexed by node identifier. */
  readonly #down = new Uint8Array(NODE_ID_LIMIT);
  /** Messages in flight per directed link key; only maintained when `#trackInFlight`. */
  readonly #inFlight = new Map<number, number>();

  /**
   * `prng` should be a stream dedicated to the network (for example a `fork` of the run's seed),
   * so that other components drawing more or fewer numbers do not change the network's choices.
   */
  constructor(options: NetworkOptions, prng: Prng, schedule: ScheduleDelivery<M>) {
    if (!(options.delayMin >= 1 && options.delayMin < Infinity)) {
      throw new RangeError(`Network: delayMin must be finite and >= 1, got ${options.delayMin}`);
    }
    if (!(options.delayMean >= 0 && options.delayMean < Infinity)) {
      throw new RangeError(`Network: delayMean must be finite and >= 0, got ${options.delayMean}`);
    }
    checkProbability(options.lossProbability, "lossProbability");
    checkProbability(options.duplicateProbability, "duplicateProbability");
    const capacity = options.linkCapacity;
    if (!(capacity === Infinity || (Number.isSafeInteger(capacity) && capacity >= 0))) {
      throw new RangeError(
        `Network: linkCapacity must be a non-negative integer or Infinity, got ${capacity}`,
      );
    }
    this.#delayMin = options.delayMin;
    this.#delayMean = options.delayMean;
    this.#lossProbability = options.lossProbability;
    this.#duplicateProbability = options.duplicateProbability;
    this.#linkCapacity = capacity;
    this.#slowProbability = options.slowProbability ?? 0;
    this.#slowDelayMax = options.slowDelayMax ?? 0;
    checkProbability(this.#slowProbability, "slowProbability");
    this.#trackInFlight = capacity !== Infinity;
    this.#prng = prng;
    this.#schedule = schedule;
  }

  /** Send `message` from `from` to `to` at time `now`; see the module documentation for drops. */
  send(from: number, to: number, message: M, now: number): void {
    checkNode(from, "from");
    checkNode(to, "to");
    const stats = this.stats;
    stats.sent++;
    if (this.#down[from] === 1) {
      stats.dropped.down++;
      return;
    }
    const key = from * NODE_ID_LIMIT + to;
    if (this.#cuts.size !== 0 && this.#cuts.has(key)) {
      stats.dropped.partition++;
      return;
    }
    const faults = this.#faultsEnabled;
    if (faults && this.#prng.chance(this.#lossProbability)) {
      stats.dropped.loss++;
      return;
    }
    const track = this.#trackInFlight;
    let inFlight = 0;
    if (track) {
      inFlight = this.#inFlight.get(key) ?? 0;
      if (faults && inFlight >= this.#linkCapacity) {
        stats.dropped.overflow++;
        return;
      }
    }
    const delivery: Delivery<M> = { from, to, message };
    const stalledUntil = this.#stalls.size !== 0 ? this.#stalls.get(key) : undefined;
    this.#schedule(this.#arrival(now, stalledUntil), delivery);
    inFlight++;
    // A duplicate is a second copy on the same link, so it only appears if the link has room;
    // without room no duplicate is made, which is not a drop of anything that was sent.
    if (
      faults && this.#prng.chance(this.#duplicateProbability) &&
      (!track || inFlight < this.#linkCapacity)
    ) {
      this.#schedule(this.#arrival(now, stalledUntil), delivery);
      inFlight++;
      stats.duplicated++;
    }
    if (track) this.#inFlight.set(key, inFlight);
  }

  /**
   * Called by the simulator when a scheduled delivery arrives: true if the message must be handed
   * to `delivery.to`, false if it is dropped at arrival (receiver down, or link cut meanwhile).
   * Call it exactly once per scheduled delivery.
   */
  onDeliver(delivery: Delivery<M>): boolean {
    const from = delivery.from;
    const to = delivery.to;
    const key = from * NODE_ID_LIMIT + to;
    if (this.#trackInFlight) {
      const inFlight = this.#inFlight.get(key) ?? 0;
      if (inFlight <= 0) {
        throw new Error(`Network.onDeliver: no message in flight from ${from} to ${to}`);
      }
      this.#inFlight.set(key, inFlight - 1);
    }
    const stats = this.stats;
    if (this.#down[to] === 1) {
      stats.dropped.down++;
      return false;
    }
    if (this.#cuts.size !== 0 && this.#cuts.has(key)) {
      stats.dropped.partition++;
      return false;
    }
    stats.delivered++;
    return true;
  }

  /** Cut both directions between `node` and every other node of `among`. */
  isolate(node: number, among: readonly number[]): void {
    checkNode(node, "node");
    let changed = false;
    for (const other of among) {
      checkNode(other, "among member");
      if (other === node) continue;
      if (this.#cut(node, other)) changed = true;
      if (this.#cut(other, node)) changed = true;
    }
    if (changed) this.stats.partitions++;
  }

  /**
   * Split `among` (at least two distinct nodes) at random into two non-empty sides, the size of
   * the first side uniform in [1, n - 1], and cut both directions between the sides. Existing
   * cuts stay: call `heal` first for a fresh partition.
   */
  splitHalves(among: readonly number[]): void {
    const count = among.length;
    if (count < 2) {
      throw new RangeError(`Network.splitHalves: need at least two nodes, got ${count}`);
    }
    for (const node of among) checkNode(node, "among member");
    if (new Set(among).size !== count) {
      throw new RangeError("Network.splitHalves: nodes must be distinct");
    }
    const order = among.slice();
    this.#prng.shuffle(order);
    const firstSize = this.#prng.int(1, count - 1);
    let changed = false;
    for (let i = 0; i < firstSize; i++) {
      const a = order[i] as number;
      for (let j = firstSize; j < count; j++) {
        const b = order[j] as number;
        if (this.#cut(a, b)) changed = true;
        if (this.#cut(b, a)) changed = true;
      }
    }
    if (changed) this.stats.partitions++;
  }

  /** Cut the directed link `from` → `to` only: an asymmetric partition. */
  cutOneWay(from: number, to: number): void {
    checkNode(from, "from");
    checkNode(to, "to");
    if (this.#cut(from, to)) this.stats.partitions++;
  }

  /** Remove every cut. Healing is not a partition, so it does not count in `stats.partitions`. */
  heal(): void {
    this.#cuts.clear();
    this.#stalls.clear();
  }

  /**
   * Stall every directed link from `froms` into `to` until time `until`: what is sent on them
   * meanwhile is held, not reordered, and arrives in one burst when the stall ends (a stuck queue
   * in a switch, a stopped process's socket buffer). A node that crashes and restarts behind a
   * stall then receives messages meant for its previous incarnation. Held messages occupy their
   * link, so on a link of finite capacity later ones overflow and are dropped. Counts as one
   * partition in the stats.
   */
  stallInto(to: number, froms: readonly number[], until: number): void {
    checkNode(to, "to");
    for (const from of froms) {
      checkNode(from, "from");
      if (from === to) continue;
      const key = from * NODE_ID_LIMIT + to;
      if ((this.#stalls.get(key) ?? -Infinity) < until) this.#stalls.set(key, until);
    }
    this.stats.partitions++;
  }

  /** Whether the directed link `from` → `to` is cut. */
  isCut(from: number, to: number): boolean {
    checkNode(from, "from");
    checkNode(to, "to");
    return this.#cuts.has(from * NODE_ID_LIMIT + to);
  }

  /**
   * Mark a node up or down (crashed). Messages from a down node are dropped at send, messages to
   * it are dropped at arrival; both count as "down".
   */
  setNodeUp(node: number, up: boolean): void {
    checkNode(node, "node");
    this.#down[node] = up ? 0 : 1;
  }

  /**
   * Turn random faults on or off. Off means no loss, no duplication and no overflow drops, for
   * the liveness phase of a run; delays, partitions and down nodes still apply. Turning faults off
   * also stops the network from drawing loss and duplication numbers.
   */
  setFaultsEnabled(enabled: boolean): void {
    this.#faultsEnabled = enabled;
  }

  /** Cut one directed link; true if it was not cut before. */
  #cut(from: number, to: number): boolean {
    const key = from * NODE_ID_LIMIT + to;
    if (this.#cuts.has(key)) return false;
    this.#cuts.add(key);
    return true;
  }

  /** One delivery delay: `delayMin` plus the rounded exponential extra delay. */
  /** When a message sent at `now` arrives; a stalled link holds it until the stall ends. */
  #arrival(now: number, stalledUntil: number | undefined): number {
    const time = now + this.#delay();
    // Ties keep the order of sending (the event queue breaks them by insertion), so a stalled
    // link delivers its backlog in order.
    return stalledUntil !== undefined && stalledUntil > time ? stalledUntil : time;
  }

  #delay(): number {
    const delay = this.#delayMin + Math.round(this.#prng.exponential(this.#delayMean));
    if (
      this.#slowProbability > 0 && this.#faultsEnabled && this.#prng.chance(this.#slowProbability)
    ) {
      return delay + this.#prng.int(1, Math.max(1, this.#slowDelayMax));
    }
    return delay;
  }
}
