/**
 * A replicated key-value store: the service the protocol replicates, with commands in the style
 * of Redis (`SET`, `GET`, `DEL`, `SIZE`). Keys and values are arbitrary bytes.
 *
 * Wire format (plain msgpack, no extension types):
 * - an operation is the array `[command, ...arguments]`, the command a string and every key or
 *   value a msgpack bin;
 * - a result is nil, a bin, an integer, or the map `{ error: string }`;
 * - a batch (see "batches") is the array `["BATCH", operation, ...]`, each operation a bin holding
 *   one encoded operation, and its result an array of bins, each one encoded result;
 * - a snapshot is a sequence of chunks, each an array of `[key, value]` bins (see "snapshots").
 *
 * @module
 */

import { Packr, Unpackr } from "msgpackr";
import {
  binHeaderAt,
  MsgpackReader,
  sizeArrayHeader,
  sizeBin,
  sizeBinHeader,
  writeArrayHeader,
  writeBin,
  writeBinHeader,
} from "../lib/msgpack_fast.ts";
import {
  type ApplyContext,
  checkChunkBytesTarget,
  type SnapshotReader,
  type SnapshotWriter,
  type StateMachine,
} from "./state_machine.ts";

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

// ---------------------------------------------------------------- batches

/**
 * Most operations in one batch. A batch lets a client with one request in flight (VR allows no
 * more per client id, §4.5) have many operations executed in its order, in one log entry: the RESP
 * gateway sends a connection's pipelined commands as one.
 */
export const BATCH_OPERATIONS_MAX = 1024;
/**
 * A batch executes its operations in order and stops once their results reach this many bytes
 * (always executing at least one), so that a batch of large GETs cannot build a reply beyond a
 * frame or keep more than about two values' worth in the client table. The result says how many
 * ran; the client sends the rest again as a new batch.
 */
export const BATCH_RESULT_BYTES_MAX = 1024 * 1024;

/** "BATCH" as msgpack writes it (a fixstr). */
const BATCH_NAME = Uint8Array.of(0xa5, 0x42, 0x41, 0x54, 0x43, 0x48);

/** Encodes `["BATCH", ...operations]`, each operation as `encodeKvOperation` writes it. */
export function encodeKvBatch(operations: readonly KvOperation[]): Uint8Array {
  const encoded = operations.map(encodeKvOperation);
  let size = sizeArrayHeader(encoded.length + 1) + BATCH_NAME.byteLength;
  for (const operation of encoded) size += sizeBin(operation);
  const out = new Uint8Array(size);
  let position = writeArrayHeader(out, 0, encoded.length + 1);
  out.set(BATCH_NAME, position);
  position += BATCH_NAME.byteLength;
  for (const operation of encoded) position = writeBin(out, position, operation);
  return out;
}

/**
 * The operations of a batch, as views into `bytes`; undefined when `bytes` are not a batch (any
 * other operation), an error when they name BATCH but are not a well-formed one. Only the form
 * `encodeKvBatch` writes is a batch: every replica decides alike.
 */
export function decodeKvBatch(
  bytes: Uint8Array,
): Uint8Array[] | { readonly error: string } | undefined {
  const reader = new MsgpackReader(bytes);
  const count = reader.arrayHeader();
  if (count < 1) return undefined;
  for (let i = 0; i < BATCH_NAME.byteLength; i++) {
    if (bytes[reader.position + i] !== BATCH_NAME[i]) return undefined;
  }
  reader.position += BATCH_NAME.byteLength;
  if (count < 2 || count - 1 > BATCH_OPERATIONS_MAX) {
    return { error: `BATCH expects 1 to ${BATCH_OPERATIONS_MAX} operations, got ${count - 1}` };
  }
  const operations: Uint8Array[] = [];
  for (let i = 1; i < count; i++) {
    const operation = reader.bin();
    if (operation === undefined) {
      return { error: `BATCH operation ${i} must be an encoded operation (msgpack bin)` };
    }
    operations.push(operation);
  }
  if (!reader.done) return { error: "BATCH has bytes after its last operation" };
  return operations;
}

/** Encodes the results of a batch's executed operations (each as `encodeKvResult` writes it). */
function encodeBatchResult(results: readonly Uint8Array[]): Uint8Array {
  let size = sizeArrayHeader(results.length);
  for (const result of results) size += sizeBin(result);
  const out = new Uint8Array(size);
  let position = writeArrayHeader(out, 0, results.length);
  for (const result of results) position = writeBin(out, position, result);
  return out;
}

/**
 * Decodes a batch's result from untrusted bytes: the results of the operations executed, in order
 * (a prefix of the batch, see `BATCH_RESULT_BYTES_MAX`), or the error result of a batch refused
 * whole (or of malformed bytes). Never throws.
 */
export function decodeKvBatchResult(bytes: Uint8Array): KvResult[] | KvErrorResult {
  const reader = new MsgpackReader(bytes);
  const count = reader.arrayHeader();
  if (count < 0) {
    const single = decodeKvResult(bytes);
    return single.kind === "error" ? single : malformedResult(`a batch result is an array`);
  }
  if (count === 0 || count > BATCH_OPERATIONS_MAX) {
    return malformedResult(`a batch result holds ${count} results`);
  }
  const results: KvResult[] = [];
  for (let i = 0; i < count; i++) {
    const result = reader.bin();
    if (result === undefined) return malformedResult(`batch result ${i} is not a bin`);
    results.push(decodeKvResult(result));
  }
  if (!reader.done) return malformedResult("bytes after a batch result");
  return results;
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

/** An error result. */
export type KvErrorResult = Extract<KvResult, { readonly kind: "error" }>;

function malformedResult(reason: string): KvErrorResult {
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
  // Keys and most values take one call, on `bytes` itself: a subarray would cost an allocation.
  if (bytes.byteLength <= CHAR_CODE_CHUNK_SIZE) {
    return String.fromCharCode.apply(null, bytes as unknown as number[]);
  }
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
 * The key's hash. It seeds lane B of the digest (see `DigestLanes`) and places the key: in the
 * store's shards, and in the order of a snapshot.
 */
function keyHash(name: string): number {
  return murmur3(MURMUR_SEED, name);
}

/** The seed of lane A of the digest for the key's value: the key, with its length mixed first. */
function laneAKeyHash(name: string): number {
  return murmur3(fmix32(MURMUR_SEED_A ^ name.length), name);
}

/**
 * A digest as the store keeps it: the sum modulo 2^32, per lane, of two independent 32-bit hashes
 * of every (key, value) pair. Each lane hashes the key and then the value, seeded with the key's
 * hash; the key's length goes into lane A's seed, and murmur3 mixes in the length of each input,
 * so that the split between key and value is part of the input: ("ab", "c") and ("a", "bc")
 * differ.
 */
class DigestLanes {
  a = 0;
  b = 0;

  /**
   * Add (`sign` 1) or remove (`sign` -1) one pair, given its key's two hashes (`laneAKeyHash`,
   * `keyHash`): a SET that overwrites a key hashes the key once for both the old pair and the
   * new. Both lanes are murmur3, which mixes a word of four bytes at a time. (Every SET hashes two
   * pairs on every replica: FNV's byte at a time cost twice as much.)
   */
  add(sign: 1 | -1, laneAKey: number, laneBKey: number, value: ByteSource): void {
    this.a = (this.a + sign * murmur3(laneAKey, value)) >>> 0;
    this.b = (this.b + sign * murmur3(laneBKey, value)) >>> 0;
  }

  text(size: number): string {
    return `${hex8(this.a)}${hex8(this.b)}${hex8(size)}`;
  }
}

/** The digest lanes of every pair of `pairs`, computed afresh. */
function lanesOf(pairs: ShardedMap): DigestLanes {
  const lanes = new DigestLanes();
  for (const [name, value] of pairs.entries()) {
    lanes.add(1, laneAKeyHash(name), keyHash(name), value);
  }
  return lanes;
}

function hex8(word: number): string {
  return word.toString(16).padStart(8, "0");
}

// ---------------------------------------------------------------- stored values and shards

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

/**
 * A value as the store keeps it: a string like the key when short, else bytes. Either is never
 * modified once stored (a SET stores a new one), so snapshots share them with the live state.
 */
type StoredValue = string | Uint8Array;

/** The stored form of `value`, a view into bytes the caller may reuse: a string, or a copy. */
function ownedStoredValue(value: Uint8Array): StoredValue {
  return value.byteLength <= STRING_VALUE_BYTES_MAX ? bytesToString(value) : value.slice();
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

/**
 * The store splits its keys into this many maps (shards) by the top bits of the key's hash, so
 * that a snapshot can begin at once and then take the keys in a fixed order a shard at a time.
 * A single Map iterates in insertion order, which differs between replicas, and sorting all the
 * keys of a snapshot at once would stop the replica for long: 0.5–0.7 s for a million keys,
 * measured, where one shard of a million-key store holds about 250 keys and sorts in a fraction
 * of a millisecond. The count is fixed, so the store never stops to re-shard; it suits states of
 * up to some tens of millions of keys (thousands of keys per shard). An empty shard costs one
 * array slot: the maps are made when first needed. The hash is not seeded (replicas must agree on
 * the order), so keys can be crafted to share a shard; that only makes the shard slow to sort.
 */
const SHARD_BITS = 12;
const SHARD_COUNT = 1 << SHARD_BITS;

function shardOf(hash: number): number {
  return hash >>> (32 - SHARD_BITS);
}

/** Key (one character per byte) → stored value, in `SHARD_COUNT` maps chosen by `keyHash`. */
class ShardedMap {
  readonly shards: (Map<string, StoredValue> | undefined)[] = new Array(SHARD_COUNT);
  size = 0;

  get(hash: number, name: string): StoredValue | undefined {
    return this.shards[shardOf(hash)]?.get(name);
  }

  set(hash: number, name: string, stored: StoredValue): void {
    const index = shardOf(hash);
    let shard = this.shards[index];
    if (shard === undefined) {
      shard = new Map();
      this.shards[index] = shard;
    }
    const before = shard.size;
    shard.set(name, stored);
    this.size += shard.size - before;
  }

  delete(hash: number, name: string): void {
    if (this.shards[shardOf(hash)]?.delete(name)) this.size--;
  }

  *entries(): IterableIterator<[string, StoredValue]> {
    for (const shard of this.shards) if (shard !== undefined) yield* shard;
  }
}

// ---------------------------------------------------------------- snapshots

/*
 * A snapshot chunk is a msgpack array of [key, value] pairs, both bins: the one-buffer snapshot
 * is the whole snapshot as one chunk. The pairs of a snapshot go in order of key hash, then of
 * key bytes (two keys may share a 32-bit hash): an order every replica computes alike, and one
 * the shards give a piece at a time. A chunk means the same wherever it stands in a snapshot (it
 * holds no offsets or counts of the whole), so the chunks two snapshots share can be compared by
 * hash and need not travel twice.
 *
 * Where a chunk ends is decided by content, not by offset (content-defined chunking, as in LBFS
 * or restic). Past its minimum, a quarter of the target, a chunk ends after a pair when a hash of
 * the pair's key, as a fraction of 2^32, is below (bytes of the pair) / (¾ of the target). Every
 * byte then ends a chunk with the same small probability, so chunks average about the target
 * whatever the sizes of the values, and whether a pair ends a chunk depends on that pair alone
 * (and on the chunk having reached its minimum), not on where the chunk began. So a key added,
 * removed or changed rewrites its own chunk and at most moves a boundary or two beside it: the
 * chunks fall back into step at the next boundary, and every chunk after that is as before (with
 * offsets, an insertion would shift every chunk after it). A chunk that would pass four times the
 * target ends before the pair that would take it past (a chunk runs that long without a boundary
 * with probability about e^-5); the chunks after such a cut, too, fall back into step at the next
 * boundary.
 */

/** A chunk reaches this fraction of the target before it may end at a boundary. */
const CHUNK_BYTES_MIN_FRACTION = 0.25;
/** A chunk of two pairs or more never exceeds this multiple of the target. */
const CHUNK_BYTES_MAX_FACTOR = 4;
/**
 * The order sorts pairs by the key hash itself; the boundary test reads a second hash of it, so
 * that whether a pair ends a chunk does not follow from its place in the order.
 */
const BOUNDARY_SALT = 0x5bd1e995;
const TWO_TO_32 = 2 ** 32;
/** The most a msgpack array header takes. */
const ARRAY_HEADER_BYTES_MAX = 5;
/** The most one pair takes in a chunk: a fixarray of two bins of the largest key and value. */
const SNAPSHOT_PAIR_BYTES_MAX = 1 + sizeBinHeader(KEY_SIZE_MAX) + KEY_SIZE_MAX +
  sizeBinHeader(VALUE_SIZE_MAX) + VALUE_SIZE_MAX;

/**
 * The largest chunk a `KvStore` snapshot reader with `chunkBytesTarget` produces: four times the
 * target, or one pair of the largest key and value if that is more (about 1.06 MiB).
 */
export function kvSnapshotChunkBytesMax(chunkBytesTarget: number): number {
  return ARRAY_HEADER_BYTES_MAX +
    Math.max(CHUNK_BYTES_MAX_FACTOR * chunkBytesTarget, SNAPSHOT_PAIR_BYTES_MAX);
}

/** One pair on its way into a chunk. */
interface SnapshotEntry {
  readonly hash: number;
  readonly name: string;
  readonly value: StoredValue;
}

/** Snapshot order: key hash, then key bytes (one character per byte compares as bytes). */
function compareEntries(x: SnapshotEntry, y: SnapshotEntry): number {
  return x.hash - y.hash || (x.name < y.name ? -1 : x.name > y.name ? 1 : 0);
}

/** The bytes a pair takes in a chunk. */
function entryBytes(entry: SnapshotEntry): number {
  const keyLength = entry.name.length;
  const valueLength = entry.value.length;
  return 1 + sizeBinHeader(keyLength) + keyLength + sizeBinHeader(valueLength) + valueLength;
}

/** Whether a chunk past its minimum ends after the pair `hash` names, which takes `bytes`. */
function isBoundary(hash: number, bytes: number, cutBytes: number): boolean {
  return fmix32(hash ^ BOUNDARY_SALT) < (bytes / cutBytes) * TWO_TO_32;
}

function writeChars(out: Uint8Array, position: number, text: string): number {
  for (let index = 0; index < text.length; index++) out[position + index] = text.charCodeAt(index);
  return position + text.length;
}

/** The chunk of `entries`, whose pairs take `bodyBytes` (the sum of their `entryBytes`). */
function encodeChunk(entries: readonly SnapshotEntry[], bodyBytes: number): Uint8Array {
  const out = new Uint8Array(sizeArrayHeader(entries.length) + bodyBytes);
  let position = writeArrayHeader(out, 0, entries.length);
  for (const { name, value } of entries) {
    out[position++] = 0x92;
    position = writeChars(out, writeBinHeader(out, position, name.length), name);
    position = writeBinHeader(out, position, value.length);
    if (typeof value === "string") {
      position = writeChars(out, position, value);
    } else {
      out.set(value, position);
      position += value.length;
    }
  }
  return out;
}

type Pair = readonly [key: Uint8Array, value: Uint8Array];

/**
 * The pairs of a chunk as `encodeChunk` writes it, decoded without msgpackr; undefined for
 * anything else, which `decodeChunk` then gives to the general decoder. Keys and values are views
 * into `bytes`.
 */
function decodeChunkFast(bytes: Uint8Array): Pair[] | undefined {
  const reader = new MsgpackReader(bytes);
  const count = reader.arrayHeader();
  // A pair takes at least five bytes: a bound on a count read from untrusted bytes.
  if (count < 0 || count * 5 > bytes.byteLength) return undefined;
  const pairs: Pair[] = [];
  for (let index = 0; index < count; index++) {
    if (bytes[reader.position] !== 0x92) return undefined;
    reader.position++;
    const key = reader.bin();
    if (key === undefined || key.byteLength > KEY_SIZE_MAX) return undefined;
    const value = reader.bin();
    if (value === undefined || value.byteLength > VALUE_SIZE_MAX) return undefined;
    pairs.push([key, value]);
  }
  return reader.done ? pairs : undefined;
}

/**
 * The pairs of a chunk from untrusted bytes, as views into them. Throws an Error naming the
 * problem (`what` names the chunk) if they are not a msgpack array of [key, value] bins within
 * the limits on keys and values. Their order is the caller's to check.
 */
function decodeChunk(bytes: Uint8Array, what: string): Pair[] {
  const fast = decodeChunkFast(bytes);
  if (fast !== undefined) return fast;
  const decoded = decodeStrict(bytes, what);
  if (!decoded.ok) throw new Error(decoded.error);
  const items = decoded.value;
  if (!Array.isArray(items)) {
    throw new Error(`${what} must be an array of [key, value] pairs, got ${describeType(items)}`);
  }
  return (items as unknown[]).map((pair, index) => {
    if (!Array.isArray(pair) || pair.length !== 2) {
      throw new Error(`${what}: entry ${index} must be a [key, value] pair`);
    }
    const key = binaryArgument("key", pair[0], KEY_SIZE_MAX);
    if (typeof key === "string") throw new Error(`${what}: entry ${index}: ${key}`);
    const value = binaryArgument("value", pair[1], VALUE_SIZE_MAX);
    if (typeof value === "string") throw new Error(`${what}: entry ${index}: ${value}`);
    return [key, value] as const;
  });
}

/**
 * A snapshot being read (`KvStore.beginSnapshot`). It takes the shards in order, a shard at a
 * time, from the pairs the store had when the reader began: before the store changes a key of a
 * shard the reader has not taken yet, it hands the reader the key's value (`preserve`), and the
 * reader puts those values over the live shard's when it takes the shard. What the reader holds
 * is thus the old values of the keys changed ahead of it, and the one shard it is taking.
 */
class KvSnapshotReader implements SnapshotReader {
  /** The store's pairs when the reader began (a restore of the store leaves them unchanged). */
  readonly #pairs: ShardedMap;
  readonly #onFinished: (reader: KvSnapshotReader) => void;
  readonly #bytesMin: number;
  readonly #bytesMax: number;
  /** Bytes per boundary past the minimum, on average (see `isBoundary`). */
  readonly #cutBytes: number;
  /**
   * For each shard not taken yet, the keys changed since the reader began: their value then, or
   * null for a key that did not exist.
   */
  readonly #saved: (Map<string, StoredValue | null> | undefined)[] = new Array(SHARD_COUNT);
  /** Shards below this have been taken. */
  #nextShard = 0;
  /** The pairs of the shard being taken, in snapshot order, and the next one to go out. */
  #pending: SnapshotEntry[] = [];
  #pendingIndex = 0;
  #state: "open" | "done" | "closed" = "open";

  constructor(
    pairs: ShardedMap,
    chunkBytesTarget: number,
    onFinished: (reader: KvSnapshotReader) => void,
  ) {
    this.#pairs = pairs;
    this.#onFinished = onFinished;
    this.#bytesMin = CHUNK_BYTES_MIN_FRACTION * chunkBytesTarget;
    this.#bytesMax = CHUNK_BYTES_MAX_FACTOR * chunkBytesTarget;
    this.#cutBytes = (1 - CHUNK_BYTES_MIN_FRACTION) * chunkBytesTarget;
  }

  /** Called by the store before it changes key `name`, whose value is `previous` (if any). */
  preserve(hash: number, name: string, previous: StoredValue | undefined): void {
    const index = shardOf(hash);
    if (index < this.#nextShard) return;
    let saved = this.#saved[index];
    if (saved === undefined) {
      saved = new Map();
      this.#saved[index] = saved;
    }
    // Only the first change counts: the value at the reader's beginning.
    if (!saved.has(name)) saved.set(name, previous ?? null);
  }

  next(): Uint8Array | undefined {
    if (this.#state === "closed") throw new Error("snapshot reader is closed");
    if (this.#state === "done") return undefined;
    const entries: SnapshotEntry[] = [];
    let bytes = 0;
    for (let entry = this.#peek(); entry !== undefined; entry = this.#peek()) {
      const size = entryBytes(entry);
      if (entries.length > 0 && bytes + size > this.#bytesMax) break;
      entries.push(entry);
      bytes += size;
      this.#pendingIndex++;
      if (bytes >= this.#bytesMin && isBoundary(entry.hash, size, this.#cutBytes)) break;
    }
    // Stop recording changes as soon as nothing is left to read.
    if (this.#peek() === undefined) this.#finish("done");
    return entries.length === 0 ? undefined : encodeChunk(entries, bytes);
  }

  close(): void {
    if (this.#state !== "closed") this.#finish("closed");
  }

  /** The next pair to go out, taking shards until one has pairs; undefined at the end. */
  #peek(): SnapshotEntry | undefined {
    while (this.#pendingIndex === this.#pending.length) {
      if (this.#nextShard === SHARD_COUNT || this.#state !== "open") return undefined;
      const index = this.#nextShard++;
      // A small state leaves most of the 4,096 shards empty: pass over them without a take.
      if ((this.#pairs.shards[index]?.size ?? 0) === 0 && this.#saved[index] === undefined) {
        continue;
      }
      this.#take(index);
    }
    return this.#pending[this.#pendingIndex];
  }

  /** Make shard `index`, as it was when the reader began, the pairs to go out next. */
  #take(index: number): void {
    const live = this.#pairs.shards[index];
    const saved = this.#saved[index];
    this.#saved[index] = undefined;
    const entries: SnapshotEntry[] = [];
    for (const [name, value] of live ?? []) {
      if (saved === undefined || !saved.has(name)) {
        entries.push({ hash: keyHash(name), name, value });
      }
    }
    for (const [name, value] of saved ?? []) {
      if (value !== null) entries.push({ hash: keyHash(name), name, value });
    }
    this.#pending = entries.sort(compareEntries);
    this.#pendingIndex = 0;
  }

  #finish(state: "done" | "closed"): void {
    const wasOpen = this.#state === "open";
    this.#state = state;
    this.#saved.fill(undefined);
    if (state === "closed") this.#pending = [];
    if (wasOpen) this.#onFinished(this);
  }
}

/**
 * A snapshot being installed (`KvStore.beginRestore`): the pairs go into a store of their own,
 * which replaces the live one's pairs and digest at `finish`.
 */
class KvSnapshotWriter implements SnapshotWriter {
  readonly #install: (pairs: ShardedMap, lanes: DigestLanes) => void;
  /**
   * Whether to keep the digest lanes as pairs arrive (for a store with `incrementalDigest`);
   * otherwise `finish` computes them only if it is given a digest to check.
   */
  readonly #incremental: boolean;
  #pairs = new ShardedMap();
  #lanes = new DigestLanes();
  /** The last pair taken, in snapshot order: every later pair must come after it. */
  #lastHash = -1;
  #lastName = "";
  #chunks = 0;
  #state: "open" | "finished" | "aborted" = "open";

  constructor(install: (pairs: ShardedMap, lanes: DigestLanes) => void, incremental: boolean) {
    this.#install = install;
    this.#incremental = incremental;
  }

  chunk(bytes: Uint8Array): void {
    this.#checkOpen();
    const what = `snapshot chunk ${this.#chunks}`;
    const pairs = decodeChunk(bytes, what);
    // Check every pair before taking any, so that a rejected chunk leaves nothing behind. (Three
    // arrays rather than an object per pair: a restore takes millions of pairs.)
    const hashes: number[] = [];
    const names: string[] = [];
    const values: StoredValue[] = [];
    let lastHash = this.#lastHash;
    let lastName = this.#lastName;
    for (let index = 0; index < pairs.length; index++) {
      const [key, value] = pairs[index]!;
      const name = bytesToString(key);
      const hash = keyHash(name);
      // Strictly increasing makes the snapshot of a state unique and rules out a repeated key.
      if (!(hash > lastHash || (hash === lastHash && name > lastName))) {
        throw new Error(
          `${what}: entry ${index} does not follow the entry before it in snapshot order ` +
            "(key hash, then key bytes): a chunk out of order, or a key repeated",
        );
      }
      lastHash = hash;
      lastName = name;
      // The value is a view into `bytes`, which the caller may reuse.
      hashes.push(hash);
      names.push(name);
      values.push(ownedStoredValue(value));
    }
    for (let index = 0; index < hashes.length; index++) {
      const hash = hashes[index]!;
      const name = names[index]!;
      const value = values[index]!;
      this.#pairs.set(hash, name, value);
      if (this.#incremental) this.#lanes.add(1, laneAKeyHash(name), hash, value);
    }
    this.#lastHash = lastHash;
    this.#lastName = lastName;
    this.#chunks++;
  }

  finish(expectedDigest?: string): void {
    this.#checkOpen();
    if (expectedDigest !== undefined) {
      if (!this.#incremental) this.#lanes = lanesOf(this.#pairs);
      const digest = this.#lanes.text(this.#pairs.size);
      if (digest !== expectedDigest) {
        throw new Error(`snapshot has digest ${digest}, expected ${expectedDigest}`);
      }
    }
    this.#state = "finished";
    this.#install(this.#pairs, this.#lanes);
  }

  abort(): void {
    if (this.#state !== "open") return;
    this.#state = "aborted";
    this.#pairs = new ShardedMap();
  }

  #checkOpen(): void {
    if (this.#state !== "open") throw new Error(`snapshot writer is ${this.#state}`);
  }
}

// ---------------------------------------------------------------- the store

/** How a `KvStore` keeps its digest. */
export interface KvStoreOptions {
  /**
   * Keep the digest up to date on every change (O(1) `digest()`, as the simulator needs after
   * every step) instead of computing it when asked (cheaper per operation, O(keys) per digest).
   * Both give the same digest. Default true.
   */
  readonly incrementalDigest?: boolean | undefined;
}

/**
 * The key-value state machine. The digest is a multiset hash: the sum modulo 2^32, per lane, of
 * the hashes of all (key, value) pairs, kept up to date on every change so that `digest()` costs
 * O(1) and depends only on the set of pairs, not on the order of the operations that built it.
 *
 * Snapshots come in chunks (see "snapshots" above and the contract in `state_machine.ts`). Any
 * number of readers may be open at once; each costs, until it is read to the end or closed, the
 * old value of every key changed in the part it has not read yet, and a little time on every
 * change. A restore while readers are open leaves them reading the state they began with (which
 * then stays in memory until they finish).
 */
export class KvStore implements StateMachine {
  #pairs = new ShardedMap();
  /** The digest of `#pairs`, kept up to date when `#incremental`. */
  #lanes = new DigestLanes();
  readonly #incremental: boolean;
  /** The open snapshot readers of `#pairs`, told of every change before it happens. */
  #readers: KvSnapshotReader[] = [];

  /** An empty store. */
  constructor(options: KvStoreOptions = {}) {
    this.#incremental = options.incrementalDigest ?? true;
  }

  /** The number of keys. */
  get size(): number {
    return this.#pairs.size;
  }

  apply(operation: Uint8Array, context: ApplyContext): Uint8Array {
    // A SET (0x93 with "SET" after it) is by far the most common: no batch check for it.
    if (operation[1] !== 0xa3) {
      const batch = decodeKvBatch(operation);
      if (batch !== undefined) return this.#batch(batch, (one) => this.#applyOne(one, context));
    }
    return this.#applyOne(operation, context);
  }

  /**
   * Run the operations of a batch in order, until their results reach `BATCH_RESULT_BYTES_MAX`
   * (at least one). A batch inside a batch is refused in its place: one level only.
   */
  #batch(
    batch: Uint8Array[] | { readonly error: string },
    run: (operation: Uint8Array) => Uint8Array,
  ): Uint8Array {
    if ("error" in batch) return encodeKvResult({ kind: "error", message: batch.error });
    const results: Uint8Array[] = [];
    let bytes = 0;
    for (const operation of batch) {
      if (results.length > 0 && bytes >= BATCH_RESULT_BYTES_MAX) break;
      const result = decodeKvBatch(operation) === undefined
        ? run(operation)
        : encodeKvResult({ kind: "error", message: "a BATCH cannot hold another BATCH" });
      results.push(result);
      bytes += result.byteLength;
    }
    return encodeBatchResult(results);
  }

  #applyOne(operation: Uint8Array, _context: ApplyContext): Uint8Array {
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
    // A SET (three elements, msgpack 0x93, then "SET") is decided without decoding: the primary
    // asks this of every write.
    if (operation[0] === 0x93 && operation[1] === 0xa3) return false;
    if (operation[1] !== 0xa3) {
      // A batch of reads only reads (one that is malformed gets its error through the log).
      const batch = decodeKvBatch(operation);
      if (batch !== undefined) {
        return !("error" in batch) &&
          batch.every((one) => decodeKvBatch(one) === undefined && this.#readOnlyOne(one));
      }
    }
    return this.#readOnlyOne(operation);
  }

  #readOnlyOne(operation: Uint8Array): boolean {
    if (operation[0] === 0x93) return false;
    const decoded = decodeKvOperation(operation);
    return !("error" in decoded) && (decoded.command === "GET" || decoded.command === "SIZE");
  }

  query(operation: Uint8Array): Uint8Array {
    if (operation[1] !== 0xa3) {
      const batch = decodeKvBatch(operation);
      if (batch !== undefined) return this.#batch(batch, (one) => this.#queryOne(one));
    }
    return this.#queryOne(operation);
  }

  #queryOne(operation: Uint8Array): Uint8Array {
    const decoded = decodeKvOperation(operation);
    if ("error" in decoded || (decoded.command !== "GET" && decoded.command !== "SIZE")) {
      throw new Error("KvStore.query: not a read-only operation (see readOnly)");
    }
    return this.#read(decoded);
  }

  #read(operation: Extract<KvOperation, { command: "GET" | "SIZE" }>): Uint8Array {
    if (operation.command === "SIZE") {
      return encodeKvResult({ kind: "integer", value: this.#pairs.size });
    }
    const name = bytesToString(operation.key);
    const value = this.#pairs.get(keyHash(name), name);
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
    const hash = keyHash(name);
    const previous = this.#pairs.get(hash, name);
    this.#beforeChange(hash, name, previous);
    if (this.#incremental) {
      const laneAKey = laneAKeyHash(name);
      if (previous !== undefined) this.#lanes.add(-1, laneAKey, hash, previous);
      this.#lanes.add(1, laneAKey, hash, value);
    }
    this.#pairs.set(hash, name, stored);
  }

  #delete(key: Uint8Array): boolean {
    const name = bytesToString(key);
    const hash = keyHash(name);
    const previous = this.#pairs.get(hash, name);
    if (previous === undefined) return false;
    this.#beforeChange(hash, name, previous);
    this.#pairs.delete(hash, name);
    if (this.#incremental) this.#lanes.add(-1, laneAKeyHash(name), hash, previous);
    return true;
  }

  /** Lets every open snapshot reader keep the value a key had when it began. */
  #beforeChange(hash: number, name: string, previous: StoredValue | undefined): void {
    for (const reader of this.#readers) reader.preserve(hash, name, previous);
  }

  /** 24 hex digits: the two hash lanes, then the number of keys. */
  digest(): string {
    if (!this.#incremental) return lanesOf(this.#pairs).text(this.#pairs.size);
    return this.#lanes.text(this.#pairs.size);
  }

  /**
   * Begins a snapshot of the state as it is now (O(1): nothing is copied until it changes), read
   * in chunks of about `chunkBytesTarget` bytes, at most `kvSnapshotChunkBytesMax` of it.
   */
  beginSnapshot(chunkBytesTarget: number): SnapshotReader {
    checkChunkBytesTarget(chunkBytesTarget);
    const reader = new KvSnapshotReader(this.#pairs, chunkBytesTarget, (finished) => {
      this.#readers = this.#readers.filter((open) => open !== finished);
    });
    this.#readers.push(reader);
    return reader;
  }

  /** Begins installing a snapshot; the state changes only at the writer's `finish`. */
  beginRestore(): SnapshotWriter {
    return new KvSnapshotWriter((pairs, lanes) => {
      this.#pairs = pairs;
      this.#lanes = lanes;
      // The old pairs no longer change: open readers go on reading them, untold.
      this.#readers = [];
    }, this.#incremental);
  }

  /** The snapshot in one chunk: a msgpack array of [key, value] pairs in snapshot order. */
  snapshot(): Uint8Array {
    const reader = this.beginSnapshot(Infinity);
    const chunk = reader.next();
    reader.close();
    return chunk ?? encodeChunk([], 0);
  }

  /**
   * Replaces the state by a snapshot's (one chunk or, equally, a whole snapshot in one). Throws an
   * Error naming the problem if the bytes are not a snapshot, leaving the state unchanged.
   */
  restore(snapshot: Uint8Array): void {
    const writer = this.beginRestore();
    try {
      writer.chunk(snapshot);
      writer.finish();
    } finally {
      writer.abort();
    }
  }
}
