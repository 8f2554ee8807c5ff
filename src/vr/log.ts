/**
 * The replicated log: entries 1..opNumber, all in memory.
 *
 * @module
 */
import { assert } from "./assert.ts";
import type { LogEntry } from "./message.ts";

export class Log {
  #entries: LogEntry[] = [];

  /** The op-number of the last entry, 0 when empty. */
  get opNumber(): number {
    return this.#entries.length;
  }

  /** The entry at `opNumber`, or undefined when the log does not hold it. */
  entry(opNumber: number): LogEntry | undefined {
    return this.#entries[opNumber - 1];
  }

  append(entry: LogEntry): void {
    assert(
      entry.opNumber === this.#entries.length + 1,
      () => `log append out of order: op ${entry.opNumber} after ${this.#entries.length}`,
    );
    const last = this.#entries[this.#entries.length - 1];
    assert(
      last === undefined || last.timestamp <= entry.timestamp,
      () => `log timestamps must not go back: op ${entry.opNumber}`,
    );
    this.#entries.push(entry);
  }

  /** Drop every entry after `opNumber`. */
  truncateAfter(opNumber: number): void {
    assert(opNumber >= 0 && opNumber <= this.#entries.length, () => `bad truncation ${opNumber}`);
    this.#entries.length = opNumber;
  }

  /** Entries `fromOpNumber .. toOpNumber`, inclusive. */
  slice(fromOpNumber: number, toOpNumber: number): LogEntry[] {
    assert(fromOpNumber >= 1 && toOpNumber <= this.#entries.length, "bad log slice");
    return this.#entries.slice(fromOpNumber - 1, toOpNumber);
  }

  /**
   * Entries after `afterOpNumber`, at most `opsMax` of them and at most `bytesMax` bytes of
   * operations (but always at least one when there is one).
   */
  sliceBounded(afterOpNumber: number, opsMax: number, bytesMax: number): LogEntry[] {
    const out: LogEntry[] = [];
    let bytes = 0;
    for (let op = afterOpNumber + 1; op <= this.#entries.length && out.length < opsMax; op++) {
      const entry = this.#entries[op - 1]!;
      bytes += entry.operation.length;
      if (out.length > 0 && bytes > bytesMax) break;
      out.push(entry);
    }
    return out;
  }
}

/** Whether two entries are the same entry: same op-number and the same view created it. */
export function sameEntry(a: LogEntry, b: LogEntry): boolean {
  return a.opNumber === b.opNumber && a.viewNumber === b.viewNumber;
}
