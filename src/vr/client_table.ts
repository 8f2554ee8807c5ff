/**
 * §4.5 The client table: for each client, the latest request executed and its result, so that a
 * re-sent request gets the stored reply instead of a second execution; plus the latest request of
 * each client that is in the log but not yet executed, so that a re-sent in-progress request is
 * not appended twice.
 *
 * A request is identified by its client-id and request-number and, where two could share them,
 * by its operation: the table names the op-number of each recorded request, so that the replica
 * can compare a re-sent request with the one in its log (a client restarted with the same id that
 * reused a number gets told so, not another request's reply).
 *
 * The table holds at most `clientsMax` clients. Evicting one must not let a retry of its executed
 * request run again, so the table keeps `requestNumberFloor`, the largest request-number of any
 * evicted client: a client the table does not know whose request-number is at or below the floor
 * may have been evicted, and the primary refuses its request rather than executing it again
 * (the client learns that the outcome of that request is unknown). Clients number their requests
 * from their clock (see `src/client/client.ts`), so a new client starts above the floor.
 *
 * Everything here depends only on the sequence of appended and executed entries, so every replica
 * holds the same table at the same op-number.
 *
 * @module
 */
import { GROUP_CLIENT_ID } from "./membership.ts";
import type { LogEntry } from "./message.ts";

export interface ClientRecord {
  readonly requestNumber: number;
  readonly opNumber: number;
  /**
   * The CRC-32C of the request's operation: a re-sent request is told from another one under the
   * same number by it, also once the entry has left the log (§5.1).
   */
  readonly operationChecksum: number;
  readonly result: Uint8Array;
}

/** A request in the log after the commit-number. */
export interface PendingRequest {
  readonly requestNumber: number;
  readonly opNumber: number;
}

/** A record updated in place on every execution: no allocation, no map reordering per op. */
interface MutableRecord {
  requestNumber: number;
  opNumber: number;
  operationChecksum: number;
  result: Uint8Array;
}

export class ClientTable {
  /** Executed requests, one record per client. */
  readonly #executed = new Map<number, MutableRecord>();
  /** clientId → the request with the largest request-number in the log after the commit-number. */
  readonly #pending = new Map<number, PendingRequest>();
  readonly #clientsMax: number;
  #requestNumberFloor = 0;

  constructor(clientsMax: number) {
    this.#clientsMax = clientsMax;
  }

  get size(): number {
    return this.#executed.size;
  }

  /** The largest request-number of a client this table evicted; 0 when none was. */
  get requestNumberFloor(): number {
    return this.#requestNumberFloor;
  }

  /** The client's latest executed request. Read it at once: the next execution updates it. */
  executed(clientId: number): ClientRecord | undefined {
    return this.#executed.get(clientId);
  }

  pending(clientId: number): PendingRequest | undefined {
    return this.#pending.get(clientId);
  }

  /** The largest request-number of `clientId` this replica knows of (executed or in the log). */
  latestRequestNumber(clientId: number): number {
    return Math.max(
      this.#executed.get(clientId)?.requestNumber ?? 0,
      this.#pending.get(clientId)?.requestNumber ?? 0,
    );
  }

  /** Record that `entry` was appended to the log (not yet executed). */
  onAppend(entry: LogEntry): void {
    if (entry.clientId === GROUP_CLIENT_ID) return; // The group's own entries (§7).
    const pending = this.#pending.get(entry.clientId);
    if (pending === undefined || pending.requestNumber < entry.requestNumber) {
      this.#pending.set(entry.clientId, {
        requestNumber: entry.requestNumber,
        opNumber: entry.opNumber,
      });
    }
  }

  /**
   * Record the execution of `entry`. When the table is full, a new client evicts the one whose
   * latest execution is the oldest (the smallest op-number), and the floor rises to that client's
   * latest request-number.
   */
  onExecute(entry: LogEntry, result: Uint8Array, operationChecksum: number): void {
    const clientId = entry.clientId;
    if (this.#pending.get(clientId)?.requestNumber === entry.requestNumber) {
      this.#pending.delete(clientId);
    }
    const previous = this.#executed.get(clientId);
    if (previous !== undefined) {
      if (previous.requestNumber > entry.requestNumber) return;
      previous.requestNumber = entry.requestNumber;
      previous.opNumber = entry.opNumber;
      previous.operationChecksum = operationChecksum;
      previous.result = result;
      return;
    }
    if (this.#executed.size >= this.#clientsMax) this.#evictOldest();
    this.#executed.set(clientId, {
      requestNumber: entry.requestNumber,
      opNumber: entry.opNumber,
      operationChecksum,
      result,
    });
  }

  /**
   * The floor and the executed records, in client-id order, as text: equal tables, equal text
   * (the simulator compares every replica's with a model's).
   */
  digest(): string {
    const records = [...this.#executed].sort((a, b) => a[0] - b[0]);
    let text = `floor=${this.#requestNumberFloor}`;
    for (const [clientId, record] of records) {
      text += ` ${clientId}:${record.requestNumber}@${record.opNumber}/${record.operationChecksum}`;
    }
    return text;
  }

  /** The executed records, for a checkpoint (§5.1); in no particular order. */
  records(): IterableIterator<[number, ClientRecord]> {
    return this.#executed.entries();
  }

  /**
   * Replace the executed records and the floor by a checkpoint's (§5.1); the pending requests are
   * the caller's to rebuild (`rebuildPending`). Eviction picks the record with the smallest
   * op-number, so the order of `records` does not matter.
   */
  restore(requestNumberFloor: number, records: Iterable<[number, ClientRecord]>): void {
    this.#executed.clear();
    this.#pending.clear();
    this.#requestNumberFloor = requestNumberFloor;
    for (const [clientId, record] of records) this.#executed.set(clientId, { ...record });
    // A table from a replica with a larger `clientsMax` shrinks as this one's would have.
    while (this.#executed.size > this.#clientsMax) this.#evictOldest();
  }

  /** Rebuild the pending part from the uncommitted log suffix (after the log was replaced). */
  rebuildPending(uncommitted: readonly LogEntry[]): void {
    this.#pending.clear();
    for (const entry of uncommitted) this.onAppend(entry);
  }

  /** A scan, but only when a new client arrives at a full table. */
  #evictOldest(): void {
    let victim: number | undefined;
    let oldest = Infinity;
    for (const [clientId, record] of this.#executed) {
      if (record.opNumber < oldest) {
        oldest = record.opNumber;
        victim = clientId;
      }
    }
    if (victim === undefined) return;
    const floor = this.#executed.get(victim)!.requestNumber;
    if (floor > this.#requestNumberFloor) this.#requestNumberFloor = floor;
    this.#executed.delete(victim);
  }
}
