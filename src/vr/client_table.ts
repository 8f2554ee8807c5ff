/**
 * §4.5 The client table: for each client, the latest request executed and its result, so that a
 * re-sent request gets the stored reply instead of a second execution; plus the latest request of
 * each client that is in the log but not yet executed, so that a re-sent in-progress request is
 * not appended twice.
 *
 * @module
 */
import type { LogEntry } from "./message.ts";

export interface ClientRecord {
  readonly requestNumber: number;
  readonly opNumber: number;
  readonly result: Uint8Array;
}

export class ClientTable {
  /** Executed requests. Map order is recency of execution: the first key is the eviction victim. */
  readonly #executed = new Map<number, ClientRecord>();
  /** clientId → the largest request-number in the log after the commit-number. */
  readonly #pending = new Map<number, number>();
  readonly #clientsMax: number;

  constructor(clientsMax: number) {
    this.#clientsMax = clientsMax;
  }

  get size(): number {
    return this.#executed.size;
  }

  executed(clientId: number): ClientRecord | undefined {
    return this.#executed.get(clientId);
  }

  pending(clientId: number): number | undefined {
    return this.#pending.get(clientId);
  }

  /** The largest request-number of `clientId` this replica knows of (executed or in the log). */
  latestRequestNumber(clientId: number): number {
    return Math.max(
      this.#executed.get(clientId)?.requestNumber ?? 0,
      this.#pending.get(clientId) ?? 0,
    );
  }

  /** Record that `entry` was appended to the log (not yet executed). */
  onAppend(entry: LogEntry): void {
    const pending = this.#pending.get(entry.clientId);
    if (pending === undefined || pending < entry.requestNumber) {
      this.#pending.set(entry.clientId, entry.requestNumber);
    }
  }

  /**
   * Record the execution of `entry`. Eviction is deterministic (it depends only on the sequence
   * of executed entries), so every replica evicts the same client.
   */
  onExecute(entry: LogEntry, result: Uint8Array): void {
    const clientId = entry.clientId;
    if (this.#pending.get(clientId) === entry.requestNumber) this.#pending.delete(clientId);
    const previous = this.#executed.get(clientId);
    if (previous !== undefined && previous.requestNumber > entry.requestNumber) return;
    this.#executed.delete(clientId);
    this.#executed.set(clientId, {
      requestNumber: entry.requestNumber,
      opNumber: entry.opNumber,
      result,
    });
    if (this.#executed.size > this.#clientsMax) {
      const victim = this.#executed.keys().next().value;
      if (victim !== undefined) this.#executed.delete(victim);
    }
  }

  /** Rebuild the pending part from the uncommitted log suffix (after the log was replaced). */
  rebuildPending(uncommitted: readonly LogEntry[]): void {
    this.#pending.clear();
    for (const entry of uncommitted) this.onAppend(entry);
  }
}
