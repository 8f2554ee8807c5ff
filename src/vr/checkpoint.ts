/**
 * §5.1 What a checkpoint of the replica holds, and how it is encoded: a checkpoint of op-number
 * c is the client table at c, then the state machine's snapshot at c, as one sequence of chunks
 * (`CheckpointChunkInfo`: each named by its SHA-256), plus a small metadata record. The core
 * produces it (`Effect` "checkpoint"), a driver stores it (`src/storage/checkpoint.ts`, or the
 * simulator's disk) and tells the core its chunks' hashes (`Replica.onCheckpointed`); the core
 * sends its manifest to a replica that needs it and installs one it fetched
 * (`CheckpointManifest` in `message.ts`). A driver restarting a replica restores the state machine
 * and the client table with a `CheckpointRestorer` and hands the result over in `DurableState`.
 *
 * Exactly-once survives truncation because the client table travels with the state: a request
 * executed before the checkpoint and re-sent after it still gets its stored reply.
 *
 * The metadata, 48 bytes, little-endian: u32 magic "VSMD", u32 version, f64 view-number and f64
 * timestamp of the entry at c, f64 the client table's floor, u32 how many chunks are the client
 * table's, u32 zero, f64 the op-number c; then the group's membership after op c (§7, JSON, see
 * `encodeMembership`), which a replica installing the checkpoint adopts. The client table's chunks: each a msgpack array of
 * records `[client-id, request-number, op-number, operation checksum, result]`.
 *
 * @module
 */
import { Packr, Unpackr } from "msgpackr";
import {
  beginRestoreOf,
  beginSnapshotOf,
  type SnapshotReader,
  type SnapshotWriter,
  type StateMachine,
} from "../app/state_machine.ts";
import type { ClientRecord } from "./client_table.ts";
import {
  ADDRESS_BOOK_MAX,
  ADDRESS_LENGTH_MAX,
  decodeMembership,
  encodeMembership,
  type Membership,
} from "./membership.ts";
import type { CheckpointChunkInfo } from "./message.ts";

/** "VSMD" in little-endian. */
const METADATA_MAGIC = 0x444d5356;
const METADATA_VERSION = 2;
/** The fixed part of the metadata; the membership follows. */
export const CHECKPOINT_METADATA_BYTES = 48;
/**
 * The most bytes the metadata may take: the fixed part and a membership whose address book is
 * full (`ADDRESS_BOOK_MAX` addresses of `ADDRESS_LENGTH_MAX` characters, escaped in JSON).
 */
export const CHECKPOINT_METADATA_BYTES_MAX = CHECKPOINT_METADATA_BYTES +
  ADDRESS_BOOK_MAX * (ADDRESS_LENGTH_MAX * 6 + 8) + 4096;
/** SHA-256. */
export const CHUNK_HASH_BYTES = 32;

/** What the core keeps about a durable checkpoint: enough to send its manifest. */
export interface Checkpoint {
  /** The op-number of the last operation it includes. */
  readonly opNumber: number;
  /** The view-number of the entry at `opNumber` (0 for op 0). */
  readonly viewNumber: number;
  readonly metadata: Uint8Array;
  /** The client table's chunks, then the state machine's. */
  readonly chunks: readonly CheckpointChunkInfo[];
}

/** The decoded metadata of a checkpoint. */
export interface CheckpointMetadata {
  readonly opNumber: number;
  /** The view of the entry at `opNumber`: a log holding that entry agrees with the checkpoint. */
  readonly entryViewNumber: number;
  /** The timestamp of the entry at `opNumber` (§4.4: the next entry's is at least this). */
  readonly entryTimestamp: number;
  readonly requestNumberFloor: number;
  /** How many of the chunks, from the first, are the client table's. */
  readonly tableChunkCount: number;
  /** §7 The group's membership after op `opNumber`. */
  readonly membership: Membership;
}

export function encodeCheckpointMetadata(metadata: CheckpointMetadata): Uint8Array {
  const membership = encodeMembership(metadata.membership);
  const bytes = new Uint8Array(CHECKPOINT_METADATA_BYTES + membership.length);
  bytes.set(membership, CHECKPOINT_METADATA_BYTES);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, METADATA_MAGIC, true);
  view.setUint32(4, METADATA_VERSION, true);
  view.setFloat64(8, metadata.entryViewNumber, true);
  view.setFloat64(16, metadata.entryTimestamp, true);
  view.setFloat64(24, metadata.requestNumberFloor, true);
  view.setUint32(32, metadata.tableChunkCount, true);
  view.setUint32(36, 0, true);
  view.setFloat64(40, metadata.opNumber, true);
  return bytes;
}

/** The metadata, or a string saying what is wrong with the bytes. */
export function decodeCheckpointMetadata(bytes: Uint8Array): CheckpointMetadata | string {
  if (
    bytes.byteLength <= CHECKPOINT_METADATA_BYTES ||
    bytes.byteLength > CHECKPOINT_METADATA_BYTES_MAX
  ) {
    return `checkpoint metadata of ${bytes.byteLength} bytes, expected more than ` +
      `${CHECKPOINT_METADATA_BYTES} and at most ${CHECKPOINT_METADATA_BYTES_MAX}`;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0, true) !== METADATA_MAGIC) return "checkpoint metadata: bad magic";
  const version = view.getUint32(4, true);
  if (version !== METADATA_VERSION) return `checkpoint metadata: unknown version ${version}`;
  const membership = decodeMembership(bytes.subarray(CHECKPOINT_METADATA_BYTES));
  if (typeof membership === "string") return `checkpoint metadata: ${membership}`;
  const metadata: CheckpointMetadata = {
    membership,
    entryViewNumber: view.getFloat64(8, true),
    entryTimestamp: view.getFloat64(16, true),
    requestNumberFloor: view.getFloat64(24, true),
    tableChunkCount: view.getUint32(32, true),
    opNumber: view.getFloat64(40, true),
  };
  for (const name of ["entryViewNumber", "requestNumberFloor", "opNumber"] as const) {
    const value = metadata[name];
    if (!Number.isSafeInteger(value) || value < 0) return `checkpoint metadata: bad ${name}`;
  }
  if (!Number.isFinite(metadata.entryTimestamp)) return "checkpoint metadata: bad timestamp";
  if (view.getUint32(36, true) !== 0) return "checkpoint metadata: reserved bytes not zero";
  return metadata;
}

/** The hash as 64 hex digits, for maps. */
export function hashKey(hash: Uint8Array): string {
  let text = "";
  for (const byte of hash) text += byte.toString(16).padStart(2, "0");
  return text;
}

const packr = new Packr({ useRecords: false, variableMapSize: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: false, int64AsType: "number" });

/**
 * The client table's records in chunks of about `chunkBytes`, in op-number order (so equal tables
 * give equal chunks). At least one chunk, so that an empty table is still described.
 */
export function encodeClientTable(
  records: Iterable<[number, ClientRecord]>,
  chunkBytes: number,
): Uint8Array[] {
  const sorted = [...records].sort((a, b) => a[1].opNumber - b[1].opNumber);
  const chunks: Uint8Array[] = [];
  let part: unknown[] = [];
  let bytes = 0;
  for (const [clientId, record] of sorted) {
    part.push([
      clientId,
      record.requestNumber,
      record.opNumber,
      record.operationChecksum,
      record.result,
    ]);
    bytes += 48 + record.result.byteLength;
    if (bytes >= chunkBytes) {
      chunks.push(new Uint8Array(packr.pack(part)));
      part = [];
      bytes = 0;
    }
  }
  // Copies: the packer reuses its buffer.
  if (part.length > 0 || chunks.length === 0) chunks.push(new Uint8Array(packr.pack(part)));
  return chunks;
}

/** Decodes one chunk of `encodeClientTable`; throws an Error naming what is wrong. */
export function decodeClientTableChunk(bytes: Uint8Array): [number, ClientRecord][] {
  let value: unknown;
  try {
    value = unpackr.unpack(bytes);
  } catch (error) {
    throw new Error(`client table chunk: not msgpack (${(error as Error).message})`);
  }
  if (!Array.isArray(value)) throw new Error("client table chunk: not an array");
  const out: [number, ClientRecord][] = [];
  for (const [index, item] of value.entries()) {
    if (!Array.isArray(item) || item.length !== 5) {
      throw new Error(`client table chunk: record ${index} is not a 5-element array`);
    }
    const [clientId, requestNumber, opNumber, operationChecksum, result] = item;
    for (
      const [name, number] of [["client-id", clientId], ["request-number", requestNumber], [
        "op-number",
        opNumber,
      ], ["checksum", operationChecksum]] as const
    ) {
      if (typeof number !== "number" || !Number.isSafeInteger(number) || number < 0) {
        throw new Error(`client table chunk: record ${index} has a bad ${name}`);
      }
    }
    if (!(result instanceof Uint8Array)) {
      throw new Error(`client table chunk: record ${index} has no result bytes`);
    }
    out.push([clientId, {
      requestNumber,
      opNumber,
      operationChecksum,
      result: result.slice(),
    }]);
  }
  return out;
}

/**
 * A checkpoint's chunks in the order they are stored: the client table's (encoded when the
 * checkpoint began), then the state machine's snapshot (consistent as of that moment: see
 * `SnapshotReader`).
 */
export class CheckpointChunkReader implements SnapshotReader {
  readonly #table: Uint8Array[];
  readonly #app: SnapshotReader;
  #tableIndex = 0;

  constructor(table: Uint8Array[], app: StateMachine, chunkBytes: number) {
    this.#table = table;
    this.#app = beginSnapshotOf(app, chunkBytes);
  }

  next(): Uint8Array | undefined {
    if (this.#tableIndex < this.#table.length) return this.#table[this.#tableIndex++];
    return this.#app.next();
  }

  close(): void {
    this.#tableIndex = this.#table.length;
    this.#app.close();
  }
}

/** What a restored checkpoint gives the core (`DurableState.checkpoint`). */
export interface RestoredCheckpoint {
  readonly checkpoint: Checkpoint;
  readonly metadata: CheckpointMetadata;
  readonly clientTable: readonly [number, ClientRecord][];
}

/**
 * Installs a checkpoint's chunks, in order, into a state machine and a decoded client table:
 * `chunk` each (the client table's are decoded, the state machine's go to its `SnapshotWriter`),
 * then `finish`, which replaces the state machine's state at once and returns what the core
 * needs. Any problem throws an Error naming it, and leaves the state machine as it was (`abort`
 * discards what was taken). Used by drivers at restart and by the core for a fetched checkpoint.
 */
export class CheckpointRestorer {
  readonly #checkpoint: Checkpoint;
  readonly #metadata: CheckpointMetadata;
  readonly #writer: SnapshotWriter;
  readonly #table: [number, ClientRecord][] = [];
  #index = 0;

  constructor(app: StateMachine, checkpoint: Checkpoint) {
    const metadata = decodeCheckpointMetadata(checkpoint.metadata);
    if (typeof metadata === "string") throw new Error(metadata);
    if (metadata.opNumber !== checkpoint.opNumber) {
      throw new Error(
        `checkpoint of op ${checkpoint.opNumber} has metadata of op ${metadata.opNumber}`,
      );
    }
    if (metadata.tableChunkCount < 1 || metadata.tableChunkCount > checkpoint.chunks.length) {
      throw new Error(
        `checkpoint of op ${checkpoint.opNumber}: ${metadata.tableChunkCount} client table ` +
          `chunks of ${checkpoint.chunks.length}`,
      );
    }
    this.#checkpoint = checkpoint;
    this.#metadata = metadata;
    this.#writer = beginRestoreOf(app);
  }

  chunk(bytes: Uint8Array): void {
    const index = this.#index;
    if (index >= this.#checkpoint.chunks.length) {
      throw new Error(`checkpoint of op ${this.#checkpoint.opNumber}: more chunks than its index`);
    }
    if (index < this.#metadata.tableChunkCount) {
      for (const record of decodeClientTableChunk(bytes)) this.#table.push(record);
    } else {
      this.#writer.chunk(bytes);
    }
    this.#index++;
  }

  finish(): RestoredCheckpoint {
    if (this.#index !== this.#checkpoint.chunks.length) {
      throw new Error(
        `checkpoint of op ${this.#checkpoint.opNumber}: ${this.#index} of ` +
          `${this.#checkpoint.chunks.length} chunks`,
      );
    }
    const ids = new Set<number>();
    for (const [clientId] of this.#table) {
      if (ids.has(clientId)) throw new Error(`client table: client ${clientId} twice`);
      ids.add(clientId);
    }
    this.#writer.finish();
    return { checkpoint: this.#checkpoint, metadata: this.#metadata, clientTable: this.#table };
  }

  abort(): void {
    this.#writer.abort();
  }
}
