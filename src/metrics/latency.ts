/**
 * The two latencies the metrics show, measured by the node (which has a clock) from the messages
 * it sees pass; the protocol core stays pure. Times are passed in (milliseconds, any origin), so
 * this is testable without a clock. Every map is bounded: an entry whose answer never comes (a
 * client that went away, a backup that is down) is forgotten when the map is full, oldest first.
 *
 * @module
 */
import { PromHistogram } from "./histogram.ts";

/** Requests awaiting their reply at most (one per client id: a client has one outstanding). */
export const PENDING_REQUESTS_MAX = 65_536;
/** Prepares awaiting their PrepareOk per backup at most (a primary keeps two or so in flight). */
export const PENDING_PREPARES_MAX = 64;
/** Backups with a histogram of their own at most (member ids only grow with §7 epochs). */
export const BACKUP_HISTOGRAMS_MAX = 64;

export class LatencyTracker {
  /** Request to reply at the primary, in seconds. */
  readonly requestDuration: PromHistogram = new PromHistogram();
  /** Per backup (member id): a Prepare sent to its first PrepareOk covering it, in seconds. */
  readonly prepareOkDuration: Map<number, PromHistogram> = new Map();
  /** clientId → the request awaiting its reply, oldest first (for eviction). */
  readonly #requests = new Map<number, { requestNumber: number; arrivedMs: number }>();
  /** Per backup: the last op-number of each Prepare sent and not yet acknowledged, ascending. */
  readonly #prepares = new Map<number, { ops: number[]; sentMs: number[] }>();

  /**
   * A client's request arrived at the primary. A re-sent one keeps its first arrival time; a
   * client's next request reuses its entry (one map lookup on the hot path, no allocation).
   */
  requestArrived(clientId: number, requestNumber: number, nowMs: number): void {
    const pending = this.#requests.get(clientId);
    if (pending !== undefined) {
      if (pending.requestNumber === requestNumber) return;
      pending.requestNumber = requestNumber;
      pending.arrivedMs = nowMs;
      return;
    }
    if (this.#requests.size >= PENDING_REQUESTS_MAX) {
      this.#requests.delete(this.#requests.keys().next().value!);
    }
    this.#requests.set(clientId, { requestNumber, arrivedMs: nowMs });
  }

  /** A reply left for a client: the request it answers is done. */
  replied(clientId: number, requestNumber: number, nowMs: number): void {
    const pending = this.#requests.get(clientId);
    if (pending === undefined || pending.requestNumber !== requestNumber) return;
    // Marked done rather than deleted, so the client's next request finds its entry.
    pending.requestNumber = NaN; // Equal to no request-number.
    this.requestDuration.observe((nowMs - pending.arrivedMs) / 1000);
  }

  /**
   * Forget every request awaiting its reply: this replica stopped being primary, and a reply
   * from a later view would time a view change rather than a request.
   */
  forgetRequests(): void {
    this.#requests.clear();
  }

  /** Clients with an entry (awaiting a reply, or answered and kept for their next request). */
  get trackedClients(): number {
    return this.#requests.size;
  }

  /** A Prepare whose entries end at `opNumber` went to `backup`; a re-sent one is not timed again. */
  prepareSent(backup: number, opNumber: number, nowMs: number): void {
    let pending = this.#prepares.get(backup);
    if (pending === undefined) {
      if (this.#prepares.size >= BACKUP_HISTOGRAMS_MAX) return;
      this.#prepares.set(backup, pending = { ops: [], sentMs: [] });
    }
    const last = pending.ops[pending.ops.length - 1];
    if (last !== undefined && opNumber <= last) return;
    if (pending.ops.length >= PENDING_PREPARES_MAX) {
      pending.ops.shift();
      pending.sentMs.shift();
    }
    pending.ops.push(opNumber);
    pending.sentMs.push(nowMs);
  }

  /** `backup` acknowledged every op up to `opNumber` (PrepareOk is cumulative). */
  prepareOkArrived(backup: number, opNumber: number, nowMs: number): void {
    const pending = this.#prepares.get(backup);
    if (pending === undefined || pending.ops.length === 0 || pending.ops[0]! > opNumber) return;
    let histogram = this.prepareOkDuration.get(backup);
    if (histogram === undefined) {
      this.prepareOkDuration.set(backup, histogram = new PromHistogram());
    }
    while (pending.ops.length > 0 && pending.ops[0]! <= opNumber) {
      pending.ops.shift();
      histogram.observe((nowMs - pending.sentMs.shift()!) / 1000);
    }
  }

  /** Forget the Prepares awaiting acknowledgement (a new view numbers its Prepares anew). */
  forgetPrepares(): void {
    for (const pending of this.#prepares.values()) {
      pending.ops.length = 0;
      pending.sentMs.length = 0;
    }
  }
}
