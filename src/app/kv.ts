/**
 * A replicated key-value store: the service the protocol replicates, with commands in the style
 * of Redis (`SET`, `GET`, `DEL`, `SIZE`). Keys and values are arbitrary bytes.
 *
 * Wire format (plain msgpack, no extension types):
 * - an operation is the array `[command, ...arguments]`, the command a string and every key or
 *   value a msgpack bin;
 * - a result is nil, a bin, an integer, or the map `{ error: string }`.
 *
 * @module
 */

import { Packr, Unpackr } from "msgpackr";
import {
  binHeaderAt,
  MsgpackReader,
  sizeBin,
  sizeBinHeader,
  writeBin,
  writeBinHeader,
} from "../lib/msgpack_fast.ts";
import type { ApplyContext, StateMachine } from "./state_machine.ts";

/** The largest key, in bytes. */
export const KEY_SIZE_MAX = 64 * 1024;
/** The largest value, in bytes. */
export const VALUE_SIZE_MAX = 1024 * 1024;

/**
 * The deepest nesting of msgpack arrays and maps accepted from untrusted bytes. Valid operations
 * and results nest one level and snapshots two; the bound keeps the recursive decoder far from the
 * stack limit, which differs between machines and would otherwise make replicas disagree.
 */
const MSGPACK_DEPTH_MAX = 8;
/** How many characters of an unknown command an error message quotes. */
const COMMAND_DISPLAY_LENGTH_MAX = 32;
/** Characters per `String.fromCharCode` call, well below engines' argument-count limits. */
const CHAR_CODE_CHUNK_SIZE = 8 * 1024;

/** One command of the store, decoded. */
export type KvOperation =
  | { readonly command: "SET"; readonly key: Uint8Array; readonly value: Uint8Array }
  | { readonly command: "GET"; readonly key: Uint8Array }
  | { readonly command: "DEL"; readonly key: Uint8Array }
  | { readonly command: "SIZE" };

/** What a command returns to the client. */
export type KvResult =
  | { readonly kind: "nil" }
  | { readonly kind: "bytes"; readonly value: Uint8Array }
  | { readonly kind: "integer"; readonly value: number }
  | { readonly kind: "error"; readonly message: string };

// Records, structured cloning and the extra types are msgpackr extensions that other msgpack
// implementations cannot read; turning them off keeps the wire format plain msgpack. A variable
// map size makes `{ error }` a fixmap instead of msgpackr's default map16.
const packr = new Packr({
  useRecords: false,
  moreTypes: false,
  structuredClone: false,
  variableMapSize: true,
});
// Maps decode as `Map` so that a map with non-string keys is data to reject, not an exception
// thrown by msgpackr while it builds a plain object.
const unpackr = new Unpackr({
  useRecords: false,
  moreTypes: false,
  structuredClone: false,
  mapsAsObjects: false,
});

/**
 * msgpackr returns subarrays of a pooled Node Buffer; a copy gives callers a plain Uint8Array
 * that owns its memory and does not pin the pool.
 */
function packPlain(value: unknown): Uint8Array {
  return new Uint8Array(packr.pack(value));
}

/** A plain Uint8Array view of `bytes`, which msgpackr may hand back as a Buffer. */
function plainView(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

// ---------------------------------------------------------------- strict msgpack framing

type ScanResult = { readonly ok: true } | { readonly ok: false; readonly error: string };

/**
 * Checks that `bytes` hold exactly one msgpack value, without extension types and nested at most
 * `MSGPACK_DEPTH_MAX` deep, before msgpackr sees them. msgpackr decodes its built-in extensions
 * whatever the options (a typed-array extension even yields a Uint8Array indistinguishable from a
 * bin), accepts the never-used byte 0xc1, and reports trailing bytes with an unspecific message.
 * The scan is iterative and each step consumes at least one byte, so it is linear in the input.
 */
function scanMsgpack(bytes: Uint8Array, what: string): ScanResult {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const length = bytes.byteLength;
  if (length === 0) return { ok: false, error: `${what} is empty` };
  const truncated: ScanResult = { ok: false, error: `${what} is truncated msgpack` };
  // The number of values still expected inside each open array or map, innermost last.
  const open: number[] = [];
  let position = 0;
  for (;;) {
    if (position >= length) return truncated;
    const byte = view.getUint8(position);
    let headerSize = 1;
    let bodySize = 0;
    let children = 0;
    if (byte <= 0x7f || byte >= 0xe0 || byte === 0xc0 || byte === 0xc2 || byte === 0xc3) {
      // A fixint, nil or boolean: the byte is the whole value.
    } else if (byte <= 0x8f) {
      children = 2 * (byte & 0x0f);
    } else if (byte <= 0x9f) {
      children = byte & 0x0f;
    } else if (byte <= 0xbf) {
      bodySize = byte & 0x1f;
    } else if (byte === 0xc1) {
      return { ok: false, error: `${what} holds byte 0xc1 at ${position}, never used in msgpack` };
    } else if (
      (byte >= 0xc4 && byte <= 0xc6) || (byte >= 0xd9 && byte <= 0xdb) ||
      (byte >= 0xdc && byte <= 0xdf)
    ) {
      // bin 8/16/32, str 8/16/32, array 16/32 and map 16/32 carry a big-endian length.
      const lengthSize = byte <= 0xc6 ? 1 << (byte - 0xc4) : byte <= 0xdb ? 1 << (byte - 0xd9) : 0;
      const countSize = byte === 0xdc || byte === 0xde ? 2 : byte === 0xdd || byte === 0xdf ? 4 : 0;
      const fieldSize = lengthSize + countSize;
      if (position + 1 + fieldSize > length) return truncated;
      const field = fieldSize === 1
        ? view.getUint8(position + 1)
        : fieldSize === 2
        ? view.getUint16(position + 1)
        : view.getUint32(position + 1);
      headerSize = 1 + fieldSize;
      if (lengthSize > 0) bodySize = field;
      else children = byte >= 0xde ? 2 * field : field;
    } else if (byte >= 0xca && byte <= 0xd3) {
      // float 32/64, uint 8/16/32/64 and int 8/16/32/64.
      const sizes = [4, 8, 1, 2, 4, 8, 1, 2, 4, 8] as const;
      bodySize = sizes[byte - 0xca] ?? 0;
    } else {
      // What remains is ext 8/16/32 (0xc7..0xc9) and fixext (0xd4..0xd8).
      return {
        ok: false,
        error: `${what} holds a msgpack extension type at byte ${position}, which is not allowed`,
      };
    }
    position += headerSize + bodySize;
    if (position > length) return truncated;
    if (children > 0) {
      if (open.length >= MSGPACK_DEPTH_MAX) {
        return { ok: false, error: `${what} nests deeper than ${MSGPACK_DEPTH_MAX} levels` };
      }
      open.push(children);
      continue;
    }
    // A value is complete: close every container it completes.
    for (;;) {
      const innermost = open.length - 1;
      if (innermost < 0) {
        if (position < length) {
          const trailing = length - position;
          return {
            ok: false,
            error: `${what} has ${trailing} trailing byte${trailing === 1 ? "" : "s"}`,
          };
        }
        return { ok: true };
      }
      const remaining = (open[innermost] ?? 0) - 1;
      if (remaining > 0) {
        open[innermost] = remaining;
        break;
      }
      open.pop();
    }
  }
}

type DecodeResult = { readonly ok: true; readonly value: unknown } | {
  readonly ok: false;
  readonly error: string;
};

/** Decodes untrusted bytes holding one plain msgpack value; never throws. */
function decodeStrict(bytes: Uint8Array, what: string): DecodeResult {
  const scan = scanMsgpack(bytes, what);
  if (!scan.ok) return scan;
  try {
    return { ok: true, value: unpackr.unpack(bytes) };
  } catch (error) {
    // The scan leaves little for msgpackr to reject; this is a last line of defence.
    return { ok: false, error: `${what} is malformed msgpack: ${errorMessage(error)}` };
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Names a decoded msgpack value's type for error messages. */
function describeType(value: unknown): string {
  if (value === null || value === undefined) return "nil";
  if (value instanceof Uint8Array) return "binary";
  if (Array.isArray(value)) return "array";
  if (value instanceof Map) return "map";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "float";
  if (typeof value === "bigint") return "integer";
  return typeof value;
}

// ---------------------------------------------------------------- operations

const ARGUMENT_NAMES = {
  SET: ["key", "value"],
  GET: ["key"],
  DEL: ["key"],
  SIZE: [],
} as const satisfies Record<KvOperation["command"], readonly string[]>;

type Command = keyof typeof ARGUMENT_NAMES;

function isCommand(name: string): name is Command {
  return Object.hasOwn(ARGUMENT_NAMES, name);
}

/**
 * Encodes an operation. Limits are not checked here: the replicas' decoder enforces them.
 *
 * Written by hand, byte for byte what msgpackr writes (a test checks): this runs for every
 * request, and msgpackr's general path costs several times as much for these fixed shapes.
 */
export function encodeKvOperation(operation: KvOperation): Uint8Array {
  if (operation.command === "SIZE") return Uint8Array.of(0x91, 0xa4, 0x53, 0x49, 0x5a, 0x45);
  const key = operation.key;
  const value = operation.command === "SET" ? operation.value : undefined;
  const size = 5 + sizeBin(key) + (value === undefined ? 0 : sizeBin(value));
  const out = new Uint8Array(size);
  out[0] = value === undefined ? 0x92 : 0x93;
  out[1] = 0xa3;
  const name = COMMAND_CODES[operation.command];
  out[2] = name[0];
  out[3] = name[1];
  out[4] = name[2];
  let position = writeBin(out, 5, key);
  if (value !== undefined) position = writeBin(out, position, value);
  return out;
}

/** The three ASCII codes of each three-letter command. */
const COMMAND_CODES = {
  SET: [0x53, 0x45, 0x54],
  GET: [0x47, 0x45, 0x54],
  DEL: [0x44, 0x45, 0x4c],
} as const;

/**
 * The operations every client sends, in the exact form `encodeKvOperation` writes, decoded without
 * msgpackr; undefined for anything else, which then takes the general path. Both paths give the
 * same answer for every input this one accepts, so replicas agree whichever path they take.
 */
function decodeKvOperationFast(bytes: Uint8Array): KvOperation | undefined {
  const head = bytes[0];
  if (head === 0x91) {
    return bytes.byteLength === 6 && bytes[1] === 0xa4 && bytes[2] === 0x53 &&
        bytes[3] === 0x49 && bytes[4] === 0x5a && bytes[5] === 0x45
      ? { command: "SIZE" }
      : undefined;
  }
  if ((head !== 0x92 && head !== 0x93) || bytes[1] !== 0xa3 || bytes.byteLength < 7) {
    return undefined;
  }
  const c0 = bytes[2];
  const c1 = bytes[3];
  const c2 = bytes[4];
  let command: "SET" | "GET" | "DEL";
  if (c0 === 0x53 && c1 === 0x45 && c2 === 0x54) command = "SET";
  else if (c0 === 0x47 && c1 === 0x45 && c2 === 0x54) command = "GET";
  else if (c0 === 0x44 && c1 === 0x45 && c2 === 0x4c) command = "DEL";
  else return undefined;
  if ((command === "SET") !== (head === 0x93)) return undefined;
  const reader = new MsgpackReader(bytes, 5);
  const key = reader.bin();
  if (key === undefined || key.byteLength > KEY_SIZE_MAX) return undefined;
  if (command !== "SET") return reader.done ? { command, key } : undefined;
  const value = reader.bin();
  if (value === undefined || value.byteLength > VALUE_SIZE_MAX || !reader.done) return undefined;
  return { command, key, value };
}

/** Checks one binary argument; returns an error message or the argument as a plain view. */
function binaryArgument(
  name: "key" | "value",
  argument: unknown,
  sizeMax: number,
): Uint8Array | string {
  if (!(argument instanceof Uint8Array)) {
    return `${name} must be binary (msgpack bin), got ${describeType(argument)}`;
  }
  if (argument.byteLength > sizeMax) {
    return `${name} is ${argument.byteLength} bytes, the limit is ${sizeMax}`;
  }
  return plainView(argument);
}

/**
 * Decodes an operation from untrusted bytes: returns an error description instead of throwing.
 * Keys and values are views into `bytes`, not copies.
 */
export function decodeKvOperation(bytes: Uint8Array): KvOperation | { readonly error: string } {
  return decodeKvOperationFast(bytes) ?? decodeKvOperationGeneral(bytes);
}

/**
 * The general decoder behind `decodeKvOperation`, through msgpackr: every input the fast path
 * declines, and (in tests) every input, to show both paths agree.
 */
export function decodeKvOperationGeneral(
  bytes: Uint8Array,
): KvOperation | { readonly error: string } {
  const decoded = decodeStrict(bytes, "operation");
  if (!decoded.ok) return { error: decoded.error };
  const value = decoded.value;
  if (!Array.isArray(value)) {
    return {
      error: `operation must be an array [command, ...arguments], got ${describeType(value)}`,
    };
  }
  if (value.length === 0) {
    return { error: "operation is an empty array, expected [command, ...arguments]" };
  }
  const [command, ...args] = value as unknown[];
  if (typeof command !== "string") {
    return { error: `command must be a string, got ${describeType(command)}` };
  }
  if (!isCommand(command)) {
    const shown = command.length > COMMAND_DISPLAY_LENGTH_MAX
      ? `${command.slice(0, COMMAND_DISPLAY_LENGTH_MAX)}…`
      : command;
    return {
      error: `unknown command ${JSON.stringify(shown)}, expected one of ${
        Object.keys(ARGUMENT_NAMES).join(", ")
      }`,
    };
  }
  const names: readonly string[] = ARGUMENT_NAMES[command];
  if (args.length !== names.length) {
    const expected = `${names.length} argument${names.length === 1 ? "" : "s"}`;
    const listed = names.length > 0 ? ` (${names.join(", ")})` : "";
    return { error: `${command} expects ${expected}${listed}, got ${args.length}` };
  }
  if (command === "SIZE") return { command };
  const key = binaryArgument("key", args[0], KEY_SIZE_MAX);
  if (typeof key === "string") return { error: key };
  if (command === "GET" || command === "DEL") return { command, key };
  const setValue = binaryArgument("value", args[1], VALUE_SIZE_MAX);
  if (typeof setValue === "string") return { error: setValue };
  return { command, key, value: setValue };
}

// ---------------------------------------------------------------- results

/** Encodes a result. Throws a RangeError if an integer result is not a safe integer. */
export function encodeKvResult(result: KvResult): Uint8Array {
  switch (result.kind) {
    case "nil":
      return Uint8Array.of(0xc0);
    case "bytes": {
      // By hand, as msgpackr writes it: one allocation instead of a pack and a copy.
      const value = result.value;
      const out = new Uint8Array(sizeBin(value));
      writeBin(out, 0, value);
      return out;
    }
    case "integer":
      if (!Number.isSafeInteger(result.value)) {
        throw new RangeError(`integer result ${result.value} is not a safe integer`);
      }
      // A positive fixint, as msgpackr writes small counts (DEL's 0 and 1).
      if (result.value >= 0 && result.value <= 0x7f) return Uint8Array.of(result.value);
      return packPlain(result.value);
    case "error":
      return packPlain({ error: result.message });
  }
}

function malformedResult(reason: string): KvResult {
  return { kind: "error", message: `malformed result: ${reason}` };
}

/**
 * Decodes a result from untrusted bytes (a client decoding a reply): malformed input gives an
 * error result whose message starts with "malformed result:"; never throws. A bytes value is a
 * view into `bytes`, not a copy.
 */
export function decodeKvResult(bytes: Uint8Array): KvResult {
  // The common results, as `encodeKvResult` writes them, without msgpackr.
  const head = bytes[0];
  if (bytes.byteLength === 1 && head !== undefined && head <= 0x7f) {
    return { kind: "integer", value: head };
  }
  if (bytes.byteLength === 1 && head === 0xc0) return { kind: "nil" };
  if (head === 0xc4 || head === 0xc5 || head === 0xc6) {
    const reader = new MsgpackReader(bytes);
    const value = reader.bin();
    if (value !== undefined && value.byteLength <= VALUE_SIZE_MAX && reader.done) {
      return { kind: "bytes", value };
    }
  }
  const decoded = decodeStrict(bytes, "result");
  if (!decoded.ok) return malformedResult(decoded.error);
  const value = decoded.value;
  if (value === null) return { kind: "nil" };
  if (value instanceof Uint8Array) {
    if (value.byteLength > VALUE_SIZE_MAX) {
      return malformedResult(`value is ${value.byteLength} bytes, the limit is ${VALUE_SIZE_MAX}`);
    }
    return { kind: "bytes", value: plainView(value) };
  }
  // msgpackr decodes uint64 and int64 as bigint even when they are small.
  if (typeof value === "bigint") {
    const integer = Number(value);
    if (!Number.isSafeInteger(integer)) return malformedResult(`integer ${value} is out of range`);
    return { kind: "integer", value: integer };
  }
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) {
      return malformedResult(`number ${value} is not a safe integer`);
    }
    return { kind: "integer", value };
  }
  if (value instanceof Map) {
    const message: unknown = value.get("error");
    if (value.size !== 1 || typeof message !== "string") {
      return malformedResult("a map result must be exactly { error: string }");
    }
    return { kind: "error", message };
  }
  return malformedResult(`unexpected ${describeType(value)}`);
}

const UTF8_STRICT = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Characters printed raw could drive the terminal (escape sequences) or break the one-line
 * output; text holding any of them is shown quoted and escaped instead.
 */
// deno-lint-ignore no-control-regex
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/;

/** The redis-cli escaping of a byte string: `"\xff\x00a"`. */
function quoteBytes(bytes: Uint8Array): string {
  let out = '"';
  for (const byte of bytes) {
    switch (byte) {
      case 0x5c:
        out += "\\\\";
        break;
      case 0x22:
        out += '\\"';
        break;
      case 0x0a:
        out += "\\n";
        break;
      case 0x0d:
        out += "\\r";
        break;
      case 0x09:
        out += "\\t";
        break;
      case 0x07:
        out += "\\a";
        break;
      case 0x08:
        out += "\\b";
        break;
      default:
        out += byte >= 0x20 && byte <= 0x7e
          ? String.fromCharCode(byte)
          : `\\x${byte.toString(16).padStart(2, "0")}`;
    }
  }
  return `${out}"`;
}

/**
 * Formats a result the way redis-cli does: `(nil)`, `(integer) 1`, `(error) message`, and a value
 * bare when it is printable UTF-8 text, otherwise quoted with escapes. The empty value prints as
 * `""` so that it is visible.
 */
export function formatKvResult(result: KvResult): string {
  switch (result.kind) {
    case "nil":
      return "(nil)";
    case "integer":
      return `(integer) ${result.value}`;
    case "error":
      return `(error) ${result.message}`;
    case "bytes": {
      if (result.value.byteLength === 0) return '""';
      let text: string;
      try {
        text = UTF8_STRICT.decode(result.value);
      } catch {
        return quoteBytes(result.value);
      }
      return CONTROL_CHARACTER.test(text) ? quoteBytes(result.value) : text;
    }
  }
}

// ---------------------------------------------------------------- keys, values and digests

/**
 * Maps bytes (a key, a short value) to a string with one character per byte (code 0..255).
 * Unlike a "latin1" TextDecoder, which is windows-1252 and remaps 0x80..0x9f, this is a
 * bijection.
 */
function bytesToString(bytes: Uint8Array): string {
  let out = "";
  for (let start = 0; start < bytes.byteLength; start += CHAR_CODE_CHUNK_SIZE) {
    // `apply` with a typed array, not spread syntax: spreading goes through the iterator
    // protocol and costs four times as much, on every operation.
    out += String.fromCharCode.apply(
      null,
      bytes.subarray(start, start + CHAR_CODE_CHUNK_SIZE) as unknown as number[],
    );
  }
  return out;
}

/** The inverse of `bytesToString`. */
function stringToBytes(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let index = 0; index < text.length; index++) bytes[index] = text.charCodeAt(index);
  return bytes;
}

const MURMUR_SEED = 0x9747b28c;
const MURMUR_SEED_A = 0x3c6ef372;

/** The murmur3 finaliser: spreads every input bit over the whole word. */
function fmix32(hash: number): number {
  let h = hash;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The bytes of a key or value as the store holds them: a `Uint8Array`, or a string of one
 * character per byte (see `bytesToString`). The hashes below read either without converting it,
 * since a conversion would cost an allocation on every SET that overwrites a key.
 */
type ByteSource = Uint8Array | string;

/** One 32-bit block of MurmurHash3 mixed into `h`. */
function murmur3Block(h: number, word: number): number {
  let k = Math.imul(word, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** MurmurHash3 (x86, 32-bit) of `bytes` with `seed`; words are little-endian. */
function murmur3(seed: number, bytes: ByteSource): number {
  const length = bytes.length;
  const blocksEnd = length & ~3;
  let h = seed;
  let k = 0;
  if (typeof bytes === "string") {
    for (let i = 0; i < blocksEnd; i += 4) {
      h = murmur3Block(
        h,
        bytes.charCodeAt(i) | (bytes.charCodeAt(i + 1) << 8) | (bytes.charCodeAt(i + 2) << 16) |
          (bytes.charCodeAt(i + 3) << 24),
      );
    }
    for (let i = length - 1; i >= blocksEnd; i--) k = (k << 8) | bytes.charCodeAt(i);
  } else {
    for (let i = 0; i < blocksEnd; i += 4) {
      h = murmur3Block(
        h,
        bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24),
      );
    }
    for (let i = length - 1; i >= blocksEnd; i--) k = (k << 8) | bytes[i]!;
  }
  // The last one to three bytes, as murmur3's tail.
  if (length > blocksEnd) {
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
  }
  return fmix32(h ^ length);
}

/**
 * A digest as the store keeps it: the sum modulo 2^32, per lane, of two independent 32-bit hashes
 * of every (key, value) pair. The key's length is hashed first (FNV) or fixed by murmur3's own
 * length mixing before it seeds the value's hash, so that the split between key and value is
 * part of the input: ("ab", "c") and ("a", "bc") differ.
 */
class DigestLanes {
  a = 0;
  b = 0;

  /**
   * Add (`sign` 1) or remove (`sign` -1) one pair. Both lanes are murmur3, which mixes a word of
   * four bytes at a time, with different seeds; the key's length goes into lane A's seed. (Every
   * SET hashes two pairs, the old and the new, on every replica: FNV's byte at a time cost twice
   * as much.)
   */
  add(sign: 1 | -1, key: ByteSource, value: ByteSource): void {
    const a = murmur3(murmur3(fmix32(MURMUR_SEED_A ^ key.length), key), value);
    const b = murmur3(murmur3(MURMUR_SEED, key), value);
    this.a = (this.a + sign * a) >>> 0;
    this.b = (this.b + sign * b) >>> 0;
  }

  text(size: number): string {
    return `${hex8(this.a)}${hex8(this.b)}${hex8(size)}`;
  }
}

function hex8(word: number): string {
  return word.toString(16).padStart(8, "0");
}

// ---------------------------------------------------------------- the store

/**
 * The key-value state machine. The digest is a multiset hash: the sum modulo 2^32, per lane, of
 * the hashes of all (key, value) pairs, kept up to date on every change so that `digest()` costs
 * O(1) and depends only on the set of pairs, not on the order of the operations that built it.
 */
export interface KvStoreOptions {
  /**
   * Keep the digest up to date on every change (O(1) `digest()`, as the simulator needs after
   * every step) instead of computing it when asked (cheaper per operation, O(keys) per digest).
   * Both give the same digest. Default true.
   */
  readonly incrementalDigest?: boolean | undefined;
}

/**
 * Values up to this size are kept as strings of one character per byte, like keys: V8 keeps those
 * on its own heap, where allocating one costs a fraction of a typed array's separate backing
 * store (about a microsecond each in Deno, and work for the garbage collector besides).
 */
const STRING_VALUE_BYTES_MAX = 1024;
/**
 * A SET's result is a view of the operation's own bytes (its value, with the bin header before
 * it) when the operation lies in a buffer no larger than this. The client table keeps one result
 * per client, so this bounds what such views can keep alive.
 */
const RESULT_VIEW_BUFFER_BYTES_MAX = 16 * 1024;

type StoredValue = string | Uint8Array;

/** The stored form of `value`, which the store owns (a copy or a string). */
function toStoredValue(value: Uint8Array): StoredValue {
  return value.byteLength <= STRING_VALUE_BYTES_MAX ? bytesToString(value) : value;
}

function bytesOf(stored: StoredValue): Uint8Array {
  return typeof stored === "string" ? stringToBytes(stored) : stored;
}

/** The result of a GET that found `stored`: its bytes as a msgpack bin. */
function storedResult(stored: StoredValue): Uint8Array {
  if (typeof stored !== "string") return encodeKvResult({ kind: "bytes", value: stored });
  const out = new Uint8Array(sizeBinHeader(stored.length) + stored.length);
  const start = writeBinHeader(out, 0, stored.length);
  for (let index = 0; index < stored.length; index++) out[start + index] = stored.charCodeAt(index);
  return out;
}

/**
 * The result of `SET key value`: the value as a msgpack bin. The operation usually holds exactly
 * those bytes (its last field), so the result is a view of them rather than a copy.
 */
function setResult(operation: Uint8Array, value: Uint8Array): Uint8Array {
  const length = value.byteLength;
  const header = sizeBinHeader(length);
  const start = value.byteOffset - operation.byteOffset;
  if (
    value.buffer === operation.buffer &&
    operation.buffer.byteLength <= RESULT_VIEW_BUFFER_BYTES_MAX &&
    start >= header && start + length <= operation.byteLength &&
    binHeaderAt(operation, start - header, length)
  ) {
    return operation.subarray(start - header, start + length);
  }
  const result = new Uint8Array(sizeBin(value));
  writeBin(result, 0, value);
  return result;
}

export class KvStore implements StateMachine {
  /** Key (one character per byte) → value: a string like the key when short, else bytes. */
  #entries = new Map<string, StoredValue>();
  /** The digest of `#entries`, kept up to date when `#incremental`. */
  #lanes = new DigestLanes();
  readonly #incremental: boolean;

  constructor(options: KvStoreOptions = {}) {
    this.#incremental = options.incrementalDigest ?? true;
  }

  /** The number of keys. */
  get size(): number {
    return this.#entries.size;
  }

  apply(operation: Uint8Array, _context: ApplyContext): Uint8Array {
    const decoded = decodeKvOperation(operation);
    if ("error" in decoded) return encodeKvResult({ kind: "error", message: decoded.error });
    switch (decoded.command) {
      case "SET":
        return this.#setValue(operation, decoded.key, decoded.value);
      case "GET":
      case "SIZE":
        return this.#read(decoded);
      case "DEL":
        return encodeKvResult({ kind: "integer", value: this.#delete(decoded.key) ? 1 : 0 });
    }
  }

  /** GET and SIZE, well formed, only read: the primary may answer them without the log (§6.3). */
  readOnly(operation: Uint8Array): boolean {
    // A SET, the only operation of three elements (msgpack 0x93), is decided without decoding:
    // the primary asks this of every write.
    if (operation[0] === 0x93) return false;
    const decoded = decodeKvOperation(operation);
    return !("error" in decoded) && (decoded.command === "GET" || decoded.command === "SIZE");
  }

  query(operation: Uint8Array): Uint8Array {
    const decoded = decodeKvOperation(operation);
    if ("error" in decoded || (decoded.command !== "GET" && decoded.command !== "SIZE")) {
      throw new Error("KvStore.query: not a read-only operation (see readOnly)");
    }
    return this.#read(decoded);
  }

  #read(operation: Extract<KvOperation, { command: "GET" | "SIZE" }>): Uint8Array {
    if (operation.command === "SIZE") {
      return encodeKvResult({ kind: "integer", value: this.#entries.size });
    }
    const value = this.#entries.get(bytesToString(operation.key));
    return value === undefined ? encodeKvResult({ kind: "nil" }) : storedResult(value);
  }

  /** SET: store `value` (a view into `operation`) under `key`; the result is the value. */
  #setValue(operation: Uint8Array, key: Uint8Array, value: Uint8Array): Uint8Array {
    if (value.byteLength <= STRING_VALUE_BYTES_MAX) {
      this.#set(key, bytesToString(value), value);
      return setResult(operation, value);
    }
    // A long value: encode the result once and keep the stored value as a view of it, so that
    // the SET allocates one buffer, not a copy and then a result.
    const result = new Uint8Array(sizeBin(value));
    const stored = result.subarray(writeBinHeader(result, 0, value.byteLength));
    stored.set(value);
    this.#set(key, stored, stored);
    return result;
  }

  /** Store `stored`, the stored form of the bytes `value`, under `key`. */
  #set(key: Uint8Array, stored: StoredValue, value: Uint8Array): void {
    const name = bytesToString(key);
    if (this.#incremental) {
      const previous = this.#entries.get(name);
      if (previous !== undefined) this.#lanes.add(-1, name, previous);
      this.#lanes.add(1, name, value);
    }
    this.#entries.set(name, stored);
  }

  #delete(key: Uint8Array): boolean {
    const name = bytesToString(key);
    const previous = this.#entries.get(name);
    if (previous === undefined) return false;
    this.#entries.delete(name);
    if (this.#incremental) this.#lanes.add(-1, name, previous);
    return true;
  }

  /** 24 hex digits: the two hash lanes, then the number of keys. */
  digest(): string {
    if (!this.#incremental) {
      const lanes = new DigestLanes();
      for (const [name, value] of this.#entries) lanes.add(1, name, value);
      return lanes.text(this.#entries.size);
    }
    return this.#lanes.text(this.#entries.size);
  }

  /** The msgpack array of [key, value] pairs sorted by key bytes: equal states, equal bytes. */
  snapshot(): Uint8Array {
    // Each character stands for one byte, so comparing strings compares key bytes.
    const names = [...this.#entries.keys()].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
    const pairs = names.map((name) => [stringToBytes(name), bytesOf(this.#entries.get(name)!)]);
    return packPlain(pairs);
  }

  /**
   * Replaces the state by a snapshot's. Throws an Error naming the problem if the bytes are not a
   * snapshot, leaving the state unchanged.
   */
  restore(snapshot: Uint8Array): void {
    const decoded = decodeStrict(snapshot, "snapshot");
    if (!decoded.ok) throw new Error(decoded.error);
    const pairs = decoded.value;
    if (!Array.isArray(pairs)) {
      throw new Error(
        `snapshot must be an array of [key, value] pairs, got ${describeType(pairs)}`,
      );
    }
    const restored = new KvStore();
    let previousName: string | undefined;
    for (const [index, pair] of (pairs as unknown[]).entries()) {
      if (!Array.isArray(pair) || pair.length !== 2) {
        throw new Error(`snapshot entry ${index} must be a [key, value] pair`);
      }
      const key = binaryArgument("key", pair[0], KEY_SIZE_MAX);
      if (typeof key === "string") throw new Error(`snapshot entry ${index}: ${key}`);
      const value = binaryArgument("value", pair[1], VALUE_SIZE_MAX);
      if (typeof value === "string") throw new Error(`snapshot entry ${index}: ${value}`);
      const name = bytesToString(key);
      // Strictly increasing keys make the snapshot of a state unique and rule out duplicates.
      if (previousName !== undefined && !(previousName < name)) {
        throw new Error(`snapshot entry ${index} is not in strictly increasing key order`);
      }
      previousName = name;
      // The decoded value is a view into the snapshot bytes, which the caller may reuse.
      const copy = value.slice();
      restored.#set(key, toStoredValue(copy), copy);
    }
    this.#entries = restored.#entries;
    this.#lanes = restored.#lanes;
  }
}
