/**
 * Hand-written MessagePack for the few fixed shapes on the hot path (requests, replies, Prepares,
 * log records): byte for byte what msgpackr writes for the same values, but without building
 * intermediate arrays or going through msgpackr's general dispatch. msgpackr stays the encoder
 * and decoder of everything else, and the reference: tests compare the two on random values.
 *
 * The writer works in two passes, so that every output is one exact allocation: `size*`
 * functions say how many bytes a value takes, `write*` functions write it at a position and
 * return the position after it. The reader decodes only the canonical forms msgpackr writes
 * and reports anything else as "not mine" (`undefined`), for the general decoder to judge.
 *
 * @module
 */

/** msgpackr writes integers of 2^32 and more as float64; so do we. */
const UINT32_LIMIT = 0x1_0000_0000;

/**
 * The bytes `writeUint` takes for `value`, or NaN when `value` is not a non-negative safe integer
 * (which `writeUint` cannot write): NaN makes any size summed from it NaN, so a caller checks its
 * total once (`size >= 0`) instead of every field.
 */
export function sizeUint(value: number): number {
  if (!(Number.isSafeInteger(value) && value >= 0)) return NaN;
  if (value < 0x80) return 1;
  if (value < 0x100) return 2;
  if (value < 0x10000) return 3;
  if (value < UINT32_LIMIT) return 5;
  return 9;
}

/** Writes a non-negative safe integer as msgpackr does: fixint, uint 8/16/32, else float64. */
export function writeUint(out: Uint8Array, position: number, value: number): number {
  let p = position;
  if (value < 0x80) {
    out[p++] = value;
  } else if (value < 0x100) {
    out[p++] = 0xcc;
    out[p++] = value;
  } else if (value < 0x10000) {
    out[p++] = 0xcd;
    out[p++] = value >>> 8;
    out[p++] = value & 0xff;
  } else if (value < UINT32_LIMIT) {
    out[p++] = 0xce;
    out[p++] = value >>> 24;
    out[p++] = (value >>> 16) & 0xff;
    out[p++] = (value >>> 8) & 0xff;
    out[p++] = value & 0xff;
  } else {
    out[p++] = 0xcb;
    FLOAT_VIEW.setFloat64(0, value);
    // Byte by byte: `set` of eight bytes costs more than the loop (request-numbers, which start
    // from the clock in microseconds, take this path on every request, entry and reply).
    for (let i = 0; i < 8; i++) out[p++] = FLOAT_BYTES[i]!;
  }
  return p;
}

const FLOAT_BYTES = new Uint8Array(8);
const FLOAT_VIEW = new DataView(FLOAT_BYTES.buffer);

/** The bytes of a bin header for `length` bytes (bin 8, 16 or 32). */
export function sizeBinHeader(length: number): number {
  return length < 0x100 ? 2 : length < 0x10000 ? 3 : 5;
}

/** The bytes `writeBin` takes for `bytes`: header and data. */
export function sizeBin(bytes: Uint8Array): number {
  return sizeBinHeader(bytes.byteLength) + bytes.byteLength;
}

/** Writes `bytes` as a msgpack bin. */
export function writeBin(out: Uint8Array, position: number, bytes: Uint8Array): number {
  const p = writeBinHeader(out, position, bytes.byteLength);
  out.set(bytes, p);
  return p + bytes.byteLength;
}

/** Writes the header of a bin of `length` bytes; the bytes go right after it. */
export function writeBinHeader(out: Uint8Array, position: number, length: number): number {
  let p = position;
  if (length < 0x100) {
    out[p++] = 0xc4;
    out[p++] = length;
  } else if (length < 0x10000) {
    out[p++] = 0xc5;
    out[p++] = length >>> 8;
    out[p++] = length & 0xff;
  } else {
    out[p++] = 0xc6;
    out[p++] = length >>> 24;
    out[p++] = (length >>> 16) & 0xff;
    out[p++] = (length >>> 8) & 0xff;
    out[p++] = length & 0xff;
  }
  return p;
}

/** Whether `bytes` holds at `position` the header `writeBinHeader` writes for `length`. */
export function binHeaderAt(bytes: Uint8Array, position: number, length: number): boolean {
  if (length < 0x100) return bytes[position] === 0xc4 && bytes[position + 1] === length;
  if (length < 0x10000) {
    return bytes[position] === 0xc5 && bytes[position + 1] === length >>> 8 &&
      bytes[position + 2] === (length & 0xff);
  }
  return bytes[position] === 0xc6 && bytes[position + 1] === length >>> 24 &&
    bytes[position + 2] === ((length >>> 16) & 0xff) &&
    bytes[position + 3] === ((length >>> 8) & 0xff) && bytes[position + 4] === (length & 0xff);
}

/** The bytes of an array header for `count` elements (fixarray, array 16 or 32). */
export function sizeArrayHeader(count: number): number {
  return count < 0x10 ? 1 : count < 0x10000 ? 3 : 5;
}

export function writeArrayHeader(out: Uint8Array, position: number, count: number): number {
  let p = position;
  if (count < 0x10) {
    out[p++] = 0x90 | count;
  } else if (count < 0x10000) {
    out[p++] = 0xdc;
    out[p++] = count >>> 8;
    out[p++] = count & 0xff;
  } else {
    out[p++] = 0xdd;
    out[p++] = count >>> 24;
    out[p++] = (count >>> 16) & 0xff;
    out[p++] = (count >>> 8) & 0xff;
    out[p++] = count & 0xff;
  }
  return p;
}

/**
 * One buffer reused for whatever is written and consumed before the next `take` (a record written
 * to disk at once, frames gathered for the one socket write in flight): a fresh typed array costs
 * about 1.5 µs in Deno. It grows on demand up to `bytesMax`; a larger request gets a buffer of its
 * own, so that one huge batch does not keep its size in memory.
 */
export class ScratchBuffer {
  readonly #bytesMax: number;
  #buffer = new Uint8Array(0);

  constructor(bytesMax: number) {
    this.#bytesMax = bytesMax;
  }

  /** `length` bytes, valid until the next call (stale contents: write every byte). */
  take(length: number): Uint8Array {
    if (length > this.#bytesMax) return new Uint8Array(length);
    if (this.#buffer.length < length) {
      this.#buffer = new Uint8Array(
        Math.min(this.#bytesMax, Math.max(length, 2 * this.#buffer.length, 64 * 1024)),
      );
    }
    return this.#buffer.subarray(0, length);
  }
}

/**
 * Carves buffers out of large blocks, so that the many small buffers of the hot path do not each
 * pay for an allocation of their own (a fresh typed array costs about a microsecond in Deno).
 * A buffer keeps its block alive as long as it lives: use it for buffers that are dropped soon
 * (frames on their way to a socket), not for what is kept.
 */
export class Slab {
  readonly #blockBytes: number;
  #block: Uint8Array;
  #used = 0;

  constructor(blockBytes = 64 * 1024) {
    this.#blockBytes = blockBytes;
    this.#block = new Uint8Array(blockBytes);
  }

  /** A zeroed-or-stale view of `length` bytes that nothing else will be handed. */
  take(length: number): Uint8Array {
    if (length > this.#blockBytes / 4) return new Uint8Array(length);
    if (this.#used + length > this.#block.byteLength) {
      this.#block = new Uint8Array(this.#blockBytes);
      this.#used = 0;
    }
    const start = this.#used;
    // Eight-byte alignment keeps copies of these buffers on the fast path.
    this.#used = (start + length + 7) & ~7;
    return this.#block.subarray(start, start + length);
  }
}

/** The big-endian u16 at `at` (the caller checked the bytes are there). */
function readUint16(bytes: Uint8Array, at: number): number {
  return (bytes[at]! << 8) | bytes[at + 1]!;
}

/** The big-endian u32 at `at` (the caller checked the bytes are there). */
function readUint32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) >>> 0) + ((bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) |
    bytes[at + 3]!);
}

/**
 * Reads the canonical forms msgpackr writes. Every method returns `undefined` (or -1 for counts)
 * for anything else, and the caller then gives the whole body to the general decoder, which
 * either accepts it (a peer that encodes differently) or names what is wrong with it.
 */
export class MsgpackReader {
  readonly bytes: Uint8Array;
  position: number;

  constructor(bytes: Uint8Array, position = 0) {
    this.bytes = bytes;
    this.position = position;
  }

  get done(): boolean {
    return this.position === this.bytes.byteLength;
  }

  /** An array header's element count, or -1. */
  arrayHeader(): number {
    const bytes = this.bytes;
    const p = this.position;
    const tag = bytes[p];
    if (tag === undefined) return -1;
    if (tag >= 0x90 && tag <= 0x9f) {
      this.position = p + 1;
      return tag & 0x0f;
    }
    if (tag === 0xdc && p + 3 <= bytes.byteLength) {
      this.position = p + 3;
      return readUint16(bytes, p + 1);
    }
    if (tag === 0xdd && p + 5 <= bytes.byteLength) {
      this.position = p + 5;
      return readUint32(bytes, p + 1);
    }
    return -1;
  }

  /**
   * A non-negative safe integer written as a positive fixint, uint 8/16/32/64 or float64 (as
   * msgpackr writes integers of 2^32 and more), or -1.
   */
  uint(): number {
    const bytes = this.bytes;
    const p = this.position;
    const tag = bytes[p];
    if (tag === undefined) return -1;
    const end = bytes.byteLength;
    if (tag < 0x80) {
      this.position = p + 1;
      return tag;
    }
    if (tag === 0xcc && p + 2 <= end) {
      this.position = p + 2;
      return bytes[p + 1]!;
    }
    if (tag === 0xcd && p + 3 <= end) {
      this.position = p + 3;
      return readUint16(bytes, p + 1);
    }
    if (tag === 0xce && p + 5 <= end) {
      this.position = p + 5;
      return readUint32(bytes, p + 1);
    }
    if (tag === 0xcf && p + 9 <= end) {
      const high = readUint32(bytes, p + 1);
      const low = readUint32(bytes, p + 5);
      if (high > 0x1f_ffff) return -1; // Beyond Number.MAX_SAFE_INTEGER.
      this.position = p + 9;
      return high * UINT32_LIMIT + low;
    }
    if (tag === 0xcb && p + 9 <= end) {
      for (let i = 0; i < 8; i++) FLOAT_BYTES[i] = bytes[p + 1 + i]!;
      const value = FLOAT_VIEW.getFloat64(0);
      if (!(value >= 0 && Number.isSafeInteger(value))) return -1;
      this.position = p + 9;
      return value + 0; // -0 becomes 0, as the general decoder makes it.
    }
    return -1;
  }

  /** A bin's bytes as a plain view into the input, or undefined. */
  bin(): Uint8Array | undefined {
    const bytes = this.bytes;
    const p = this.position;
    const tag = bytes[p];
    let length = -1;
    let start = p;
    if (tag === 0xc4 && p + 2 <= bytes.byteLength) {
      length = bytes[p + 1]!;
      start = p + 2;
    } else if (tag === 0xc5 && p + 3 <= bytes.byteLength) {
      length = readUint16(bytes, p + 1);
      start = p + 3;
    } else if (tag === 0xc6 && p + 5 <= bytes.byteLength) {
      length = readUint32(bytes, p + 1);
      start = p + 5;
    }
    if (length < 0 || start + length > bytes.byteLength) return undefined;
    this.position = start + length;
    return new Uint8Array(bytes.buffer, bytes.byteOffset + start, length);
  }
}

/** The fields of a log entry, as both the wire and the data directory lay them out. */
export interface EntryFields {
  readonly opNumber: number;
  readonly viewNumber: number;
  readonly clientId: number;
  readonly requestNumber: number;
  readonly timestamp: number;
  readonly operation: Uint8Array;
}

/**
 * The bytes of `[opNumber, viewNumber, clientId, requestNumber, timestamp, operation]`; NaN when a
 * number of `entry` cannot be written (see `sizeUint`).
 */
export function sizeEntry(entry: EntryFields): number {
  return 1 + sizeUint(entry.opNumber) + sizeUint(entry.viewNumber) + sizeUint(entry.clientId) +
    sizeUint(entry.requestNumber) + sizeUint(entry.timestamp) + sizeBin(entry.operation);
}

export function writeEntry(out: Uint8Array, position: number, entry: EntryFields): number {
  let p = position;
  out[p++] = 0x96;
  p = writeUint(out, p, entry.opNumber);
  p = writeUint(out, p, entry.viewNumber);
  p = writeUint(out, p, entry.clientId);
  p = writeUint(out, p, entry.requestNumber);
  p = writeUint(out, p, entry.timestamp);
  return writeBin(out, p, entry.operation);
}
