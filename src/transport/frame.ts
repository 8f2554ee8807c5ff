/**
 * Framing of messages on a byte stream. A frame is
 *
 * ```text
 * u32 big-endian body length | u32 big-endian CRC-32C of the body | body
 * ```
 *
 * The length comes first so that a reader knows how much to wait for; the checksum catches
 * corruption that TCP's weak checksum lets through and, more often, bugs that desynchronise the
 * stream, which would otherwise decode garbage as a message.
 *
 * @module
 */

import { crc32c } from "../lib/crc32c.ts";

export { crc32c };

/** The length and checksum words that precede every body. */
export const FRAME_HEADER_BYTES = 8;

/**
 * The largest body accepted. It must exceed the largest message the core can produce: a state
 * transfer of 12 MiB of operations (`LIMITS_DEFAULT.transferBytesMax`, which holds any log suffix
 * beyond a commit-number) and its entries' fields fit, and a length beyond it is a
 * desynchronised or hostile stream, refused before buffering (the node checks the core's limits
 * against it when it starts).
 */
export const FRAME_BODY_BYTES_MAX = 16 * 1024 * 1024;

/**
 * How many consumed chunks the decoder lets accumulate at the head of its list before dropping
 * them, so that 1-byte chunks cost amortised O(1) each instead of an O(n) shift per frame.
 */
const CONSUMED_CHUNKS_COMPACT_MIN = 64;

function writeUint32(out: Uint8Array, offset: number, value: number): void {
  out[offset] = value >>> 24;
  out[offset + 1] = (value >>> 16) & 0xff;
  out[offset + 2] = (value >>> 8) & 0xff;
  out[offset + 3] = value & 0xff;
}

function checkBodySize(body: Uint8Array): void {
  if (body.byteLength > FRAME_BODY_BYTES_MAX) {
    throw new RangeError(
      `frame body of ${body.byteLength} bytes exceeds the limit of ${FRAME_BODY_BYTES_MAX}`,
    );
  }
}

/**
 * Writes the frame of `body` into `out` at `offset`, so that several frames can be batched into
 * one buffer without intermediate copies; returns the offset after the frame. Throws a RangeError
 * if the body exceeds `FRAME_BODY_BYTES_MAX` or `out` lacks room: both are bugs in the caller.
 */
export function writeFrame(out: Uint8Array, offset: number, body: Uint8Array): number {
  checkBodySize(body);
  const end = offset + FRAME_HEADER_BYTES + body.byteLength;
  if (!Number.isSafeInteger(offset) || offset < 0 || end > out.byteLength) {
    throw new RangeError(
      `a frame of ${FRAME_HEADER_BYTES + body.byteLength} bytes does not fit at offset ${offset} ` +
        `of a ${out.byteLength}-byte buffer`,
    );
  }
  writeUint32(out, offset, body.byteLength);
  writeUint32(out, offset + 4, crc32c(body));
  out.set(body, offset + FRAME_HEADER_BYTES);
  return end;
}

/**
 * Completes a frame in place: `framed` holds `FRAME_HEADER_BYTES` bytes of room, then the body.
 * An encoder that can leave room before what it writes (msgpackr's `RESERVE_START_SPACE`) thus
 * frames a message without a copy. Returns `framed`. Throws a RangeError if the body is too large.
 */
export function sealFrame(framed: Uint8Array): Uint8Array {
  const body = framed.subarray(FRAME_HEADER_BYTES);
  checkBodySize(body);
  writeUint32(framed, 0, body.byteLength);
  writeUint32(framed, 4, crc32c(body));
  return framed;
}

/** The frame of `body` in a new buffer. Throws a RangeError if the body is too large. */
export function encodeFrame(body: Uint8Array): Uint8Array {
  checkBodySize(body);
  const out = new Uint8Array(FRAME_HEADER_BYTES + body.byteLength);
  writeFrame(out, 0, body);
  return out;
}

/** Fills the list slot of a consumed chunk, so that the list keeps one element type. */
const EMPTY = new Uint8Array(0);

/** Why a stream of frames cannot be decoded; the connection must be closed. */
export type FrameError = { readonly error: string };

/**
 * Splits a byte stream into frame bodies, checking each body's length and checksum.
 *
 * Ownership: `push` takes ownership of each chunk; the caller must not modify a chunk after
 * pushing it (a chunk read from a `ReadableStream` is fresh each time, which satisfies this).
 * A returned body is a subarray view into the pushed chunk when the whole body lies within one
 * chunk, and a fresh copy when it spans chunks; either way nothing the decoder does later
 * overwrites it.
 *
 * The decoder keeps a list of unconsumed chunks rather than appending them to one growing
 * buffer, so that every byte is copied at most once (only bodies that span chunks are copied) and
 * throughput is linear in the bytes received.
 */
export class FrameDecoder {
  #bodyBytesMax: number;
  /** Chunks not yet fully consumed, from index `#head` on; earlier slots are consumed. */
  #chunks: Uint8Array[] = [];
  #head = 0;
  /** How many bytes of `#chunks[#head]` are consumed. */
  #headOffset = 0;
  #buffered = 0;
  #error: FrameError | undefined;
  /** The header of the frame being waited for, read once so that small chunks cost O(1). */
  #pendingLength = -1;
  #pendingChecksum = 0;

  /** `bodyBytesMax` may lower the limit for a connection that expects only small messages. */
  constructor(bodyBytesMax: number = FRAME_BODY_BYTES_MAX) {
    this.#bodyBytesMax = checkedLimit(bodyBytesMax);
  }

  /**
   * The largest body accepted from the next frame header on: a connection raises it once the
   * peer has said who it is (see `HANDSHAKE_BODY_BYTES_MAX`).
   */
  set bodyBytesMax(bodyBytesMax: number) {
    this.#bodyBytesMax = checkedLimit(bodyBytesMax);
  }

  /** The bytes received but not yet returned as bodies, including a partial header. */
  get bufferedBytes(): number {
    // The header of the frame being waited for is consumed but its body is not yet returned.
    return this.#buffered + (this.#pendingLength < 0 ? 0 : FRAME_HEADER_BYTES);
  }

  /**
   * Feeds the bytes that arrived, with any chunk boundaries. Returns the bodies completed, in
   * order, or an error after which the decoder is poisoned: every later call returns the same
   * error, and the bodies completed in the failing call are dropped with the connection. Never
   * throws.
   */
  push(chunk: Uint8Array): Uint8Array[] | FrameError {
    const bodies: Uint8Array[] = [];
    const error = this.pushEach(chunk, (body) => bodies.push(body));
    return error ?? bodies;
  }

  /**
   * As `push`, but hands each body to `onBody` as soon as it is complete, before the next header
   * is read, so that `onBody` may change `bodyBytesMax` for the frames after it, or stop the
   * decoding by returning false: the rest stays buffered, and a later call (with an empty chunk,
   * to add nothing) goes on from there. Returns an error as `push` does, else undefined. Never
   * throws unless `onBody` does.
   */
  pushEach(chunk: Uint8Array, onBody: (body: Uint8Array) => unknown): FrameError | undefined {
    if (this.#error !== undefined) return this.#error;
    if (chunk.byteLength > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.byteLength;
    }
    for (;;) {
      if (this.#pendingLength < 0) {
        if (this.#buffered < FRAME_HEADER_BYTES) break;
        const header = this.#take(FRAME_HEADER_BYTES);
        const length = readUint32(header, 0);
        if (length > this.#bodyBytesMax) {
          return this.#poison(
            `frame body of ${length} bytes exceeds the limit of ${this.#bodyBytesMax}`,
          );
        }
        this.#pendingLength = length;
        this.#pendingChecksum = readUint32(header, 4);
      }
      if (this.#buffered < this.#pendingLength) break;
      const body = this.#take(this.#pendingLength);
      if (crc32c(body) !== this.#pendingChecksum) return this.#poison("frame checksum mismatch");
      this.#pendingLength = -1;
      if (onBody(body) === false || this.#error !== undefined) break;
    }
    this.#compact();
    return this.#error;
  }

  /** Poisons the decoder from outside (the connection is closing): later pushes return `error`. */
  fail(error: string): void {
    if (this.#error === undefined) this.#poison(error);
  }

  #poison(error: string): FrameError {
    this.#error = { error };
    // Release the buffered bytes: nothing will read them.
    this.#chunks = [];
    this.#head = 0;
    this.#headOffset = 0;
    this.#buffered = 0;
    return this.#error;
  }

  /**
   * Consumes `length` buffered bytes (the caller checked they are there): a view when they lie in
   * the head chunk, else a copy gathered from consecutive chunks.
   */
  #take(length: number): Uint8Array {
    // An empty body may follow a header that ended the last chunk: there is no head chunk.
    if (length === 0) return new Uint8Array(0);
    this.#buffered -= length;
    const first = this.#chunks[this.#head] as Uint8Array;
    const start = this.#headOffset;
    if (start + length <= first.byteLength) {
      this.#advanceWithin(first, start + length);
      return first.subarray(start, start + length);
    }
    const out = new Uint8Array(length);
    let filled = 0;
    while (filled < length) {
      const chunk = this.#chunks[this.#head] as Uint8Array;
      const from = this.#headOffset;
      const count = Math.min(chunk.byteLength - from, length - filled);
      out.set(chunk.subarray(from, from + count), filled);
      filled += count;
      this.#advanceWithin(chunk, from + count);
    }
    return out;
  }

  /** Moves the read position to `offset` in the head chunk, dropping the chunk once consumed. */
  #advanceWithin(chunk: Uint8Array, offset: number): void {
    if (offset < chunk.byteLength) {
      this.#headOffset = offset;
      return;
    }
    // Drop the reference so that a consumed chunk is not kept alive by the list.
    this.#chunks[this.#head] = EMPTY;
    this.#head++;
    this.#headOffset = 0;
  }

  /** Drops consumed slots once they are many and at least half the list. */
  #compact(): void {
    if (this.#head === this.#chunks.length) {
      this.#chunks.length = 0;
      this.#head = 0;
    } else if (
      this.#head >= CONSUMED_CHUNKS_COMPACT_MIN && this.#head * 2 >= this.#chunks.length
    ) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#head = 0;
    }
  }
}

function checkedLimit(bodyBytesMax: number): number {
  if (!Number.isSafeInteger(bodyBytesMax) || bodyBytesMax < 0) {
    throw new RangeError(`bodyBytesMax must be a non-negative integer, got ${bodyBytesMax}`);
  }
  return bodyBytesMax;
}

function readUint32(bytes: Uint8Array, offset: number): number {
  return (
    (((bytes[offset] as number) << 24) | ((bytes[offset + 1] as number) << 16) |
      ((bytes[offset + 2] as number) << 8) | (bytes[offset + 3] as number)) >>> 0
  );
}
