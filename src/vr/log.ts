/**
 * The replicated log: entries baseOpNumber+1..opNumber, in memory. The entries up to the base
 * left the log after a checkpoint covered them (§5.1: `dropThrough`, `reset`).
 *
 * Entries the replica has committed never change again, so the log packs them, in batches, into
 * large byte arenas. A packed entry costs its operation's bytes plus 44 (its header, and its place
 * in the index), and gives the garbage collector nothing to trace; a live entry costs a JavaScript
 * object, a typed-array view and the received buffer the view keeps alive (several hundred bytes
 * for a 64-byte SET). `entry` and the slices rebuild packed entries on demand (state transfer and
 * view changes read old entries; the hot path reads only recent ones).
 *
 * @module
 */
import { assert } from "./assert.ts";
import type { LogEntry } from "./message.ts";

/** Packed entries are written into arenas of this many bytes (or one entry's size, if larger). */
const ARENA_BYTES = 1024 * 1024;
/** A packed entry: view, client id, request number, timestamp (f64 each), operation length (u32). */
const PACKED_HEADER_BYTES = 4 * 8 + 4;
/** A packed entry's place: arena index times this, plus its offset in the arena. */
const ARENA_STRIDE = 2 ** 32;

export class Log {
  /** Entries up to here are gone (a checkpoint covers them). */
  #base = 0;
  /** The timestamp of the entry at `#base` (0 if unknown): later entries have at least it. */
  #baseTimestamp = 0;
  /** The view of the entry at `#base` (-1 if unknown): an entry there must have it. */
  #baseViewNumber = -1;
  /** Entries #base+1..#packedCount live in the arenas; the rest, in order, in `#recent`. */
  #packedCount = 0;
  #recent: LogEntry[] = [];
  #arenas: Uint8Array[] = [];
  #arenaViews: DataView[] = [];
  /** Bytes used in the last arena. */
  #arenaUsed = 0;
  /** Per packed entry after the base, its place (see `ARENA_STRIDE`), from `#placesStart` on. */
  #places = new Float64Array(1024);
  #placesStart = 0;
  #lastTimestamp = 0;

  /** The op-number of the last entry; the base when empty. */
  get opNumber(): number {
    return this.#packedCount + this.#recent.length;
  }

  /** The log holds no entry at or below this op-number. */
  get baseOpNumber(): number {
    return this.#base;
  }

  /** Entries up to here are packed. */
  get packedOpNumber(): number {
    return this.#packedCount;
  }

  /** The timestamp of the last entry (the base's, when empty). */
  get lastTimestamp(): number {
    return this.#lastTimestamp;
  }

  /** The entry at `opNumber`, or undefined when the log does not hold it. */
  entry(opNumber: number): LogEntry | undefined {
    if (opNumber > this.#packedCount) return this.#recent[opNumber - this.#packedCount - 1];
    if (opNumber <= this.#base || !Number.isInteger(opNumber)) return undefined;
    return this.#unpack(opNumber);
  }

  /** The timestamp of the entry at `opNumber`, of the base entry at the base, else undefined. */
  timestampAt(opNumber: number): number | undefined {
    if (opNumber === this.#base) return this.#baseTimestamp;
    return this.entry(opNumber)?.timestamp;
  }

  /**
   * Whether `entry` may be the entry at the base, which left the log (its view and timestamp are
   * kept); true when they are unknown (op 0, or a base of a log restored without them).
   */
  matchesBase(entry: LogEntry): boolean {
    return this.#baseViewNumber < 0 ||
      (entry.viewNumber === this.#baseViewNumber && entry.timestamp === this.#baseTimestamp);
  }

  /**
   * §5.1 Empty the log and start it after `baseOpNumber`, whose entry had `baseTimestamp`: a
   * checkpoint of that op-number replaced the state.
   */
  reset(baseOpNumber: number, baseTimestamp: number, baseViewNumber: number): void {
    this.#base = baseOpNumber;
    this.#baseTimestamp = baseTimestamp;
    this.#baseViewNumber = baseViewNumber;
    this.#packedCount = baseOpNumber;
    this.#recent = [];
    this.#arenas = [];
    this.#arenaViews = [];
    this.#arenaUsed = 0;
    this.#places = new Float64Array(1024);
    this.#placesStart = 0;
    this.#lastTimestamp = baseTimestamp;
  }

  /**
   * §5.1 Entries up to `opNumber` leave the log (a checkpoint covers them; they are committed),
   * and so does their memory: arenas holding only such entries are released.
   */
  dropThrough(opNumber: number): void {
    if (opNumber <= this.#base) return;
    assert(opNumber <= this.opNumber, () => `drop through ${opNumber} beyond ${this.opNumber}`);
    this.packThrough(opNumber);
    const last = this.#unpack(opNumber);
    this.#baseTimestamp = last.timestamp;
    this.#baseViewNumber = last.viewNumber;
    this.#placesStart += opNumber - this.#base;
    this.#base = opNumber;
    const live = this.#packedCount - this.#base;
    // The arenas before the first one still in use go, and the places are renumbered to match:
    // arena indexes stay small however long the replica runs (a place is exact only while
    // index × ARENA_STRIDE stays below 2^53).
    const firstArena = live === 0
      ? this.#arenas.length - 1
      : Math.floor(this.#places[this.#placesStart]! / ARENA_STRIDE);
    if (firstArena > 0) {
      this.#arenas.splice(0, firstArena);
      this.#arenaViews.splice(0, firstArena);
      const shift = firstArena * ARENA_STRIDE;
      for (let slot = this.#placesStart; slot < this.#placesStart + live; slot++) {
        this.#places[slot] = this.#places[slot]! - shift;
      }
    }
    // Compact the places once the dropped ones are most of the array.
    if (this.#placesStart > live && this.#placesStart > 1024) {
      const places = new Float64Array(Math.max(1024, 2 * live));
      places.set(this.#places.subarray(this.#placesStart, this.#placesStart + live));
      this.#places = places;
      this.#placesStart = 0;
    }
  }

  append(entry: LogEntry): void {
    assert(
      entry.opNumber === this.opNumber + 1,
      () => `log append out of order: op ${entry.opNumber} after ${this.opNumber}`,
    );
    assert(
      this.#lastTimestamp <= entry.timestamp,
      () => `log timestamps must not go back: op ${entry.opNumber}`,
    );
    this.#recent.push(entry);
    this.#lastTimestamp = entry.timestamp;
  }

  /** Drop every entry after `opNumber`; packed entries are committed and stay. */
  truncateAfter(opNumber: number): void {
    assert(
      opNumber >= this.#packedCount && opNumber <= this.opNumber,
      () =>
        `bad truncation ${opNumber}: the log holds ${this.opNumber}, packed ${this.#packedCount}`,
    );
    this.#recent.length = opNumber - this.#packedCount;
    this.#lastTimestamp = this.timestampAt(opNumber)!;
  }

  /**
   * Pack the entries up to `opNumber`, which the caller has committed: they must never be
   * truncated again.
   */
  packThrough(opNumber: number): void {
    assert(opNumber <= this.opNumber, () => `pack through ${opNumber} beyond ${this.opNumber}`);
    const count = opNumber - this.#packedCount;
    if (count <= 0) return;
    for (let index = 0; index < count; index++) this.#pack(this.#recent[index]!);
    this.#recent = this.#recent.slice(count);
  }

  /** Entries `fromOpNumber .. toOpNumber`, inclusive. */
  slice(fromOpNumber: number, toOpNumber: number): LogEntry[] {
    assert(fromOpNumber > this.#base && toOpNumber <= this.opNumber, "bad log slice");
    if (fromOpNumber > this.#packedCount) {
      return this.#recent.slice(
        fromOpNumber - this.#packedCount - 1,
        toOpNumber - this.#packedCount,
      );
    }
    const out: LogEntry[] = [];
    for (let op = fromOpNumber; op <= toOpNumber; op++) out.push(this.entry(op)!);
    return out;
  }

  /**
   * Entries after `afterOpNumber`, at most `opsMax` of them and at most `bytesMax` bytes of
   * operations (but always at least one when there is one).
   */
  sliceBounded(afterOpNumber: number, opsMax: number, bytesMax: number): LogEntry[] {
    assert(afterOpNumber >= this.#base, "log slice from before the base");
    const out: LogEntry[] = [];
    let bytes = 0;
    for (let op = afterOpNumber + 1; op <= this.opNumber && out.length < opsMax; op++) {
      const entry = this.entry(op)!;
      bytes += entry.operation.length;
      if (out.length > 0 && bytes > bytesMax) break;
      out.push(entry);
    }
    return out;
  }

  #pack(entry: LogEntry): void {
    const length = entry.operation.byteLength;
    const size = PACKED_HEADER_BYTES + length;
    let arena = this.#arenas[this.#arenas.length - 1];
    if (arena === undefined || this.#arenaUsed + size > arena.byteLength) {
      arena = new Uint8Array(Math.max(ARENA_BYTES, size));
      this.#arenas.push(arena);
      this.#arenaViews.push(new DataView(arena.buffer));
      this.#arenaUsed = 0;
    }
    const view = this.#arenaViews[this.#arenaViews.length - 1]!;
    const at = this.#arenaUsed;
    view.setFloat64(at, entry.viewNumber, true);
    view.setFloat64(at + 8, entry.clientId, true);
    view.setFloat64(at + 16, entry.requestNumber, true);
    view.setFloat64(at + 24, entry.timestamp, true);
    view.setUint32(at + 32, length, true);
    arena.set(entry.operation, at + PACKED_HEADER_BYTES);
    this.#arenaUsed = at + size;
    const slot = this.#placesStart + this.#packedCount - this.#base;
    if (slot === this.#places.length) {
      const places = new Float64Array(2 * this.#places.length);
      places.set(this.#places);
      this.#places = places;
    }
    this.#places[slot] = (this.#arenas.length - 1) * ARENA_STRIDE + at;
    this.#packedCount++;
  }

  #unpack(opNumber: number): LogEntry {
    const place = this.#places[this.#placesStart + opNumber - this.#base - 1]!;
    const arenaIndex = Math.floor(place / ARENA_STRIDE);
    const at = place - arenaIndex * ARENA_STRIDE;
    const view = this.#arenaViews[arenaIndex]!;
    const start = at + PACKED_HEADER_BYTES;
    return {
      opNumber,
      viewNumber: view.getFloat64(at, true),
      clientId: view.getFloat64(at + 8, true),
      requestNumber: view.getFloat64(at + 16, true),
      operation: this.#arenas[arenaIndex]!.subarray(start, start + view.getUint32(at + 32, true)),
      timestamp: view.getFloat64(at + 24, true),
    };
  }
}

/** Whether two entries are the same entry: same op-number and the same view created it. */
export function sameEntry(a: LogEntry, b: LogEntry): boolean {
  return a.opNumber === b.opNumber && a.viewNumber === b.viewNumber;
}
