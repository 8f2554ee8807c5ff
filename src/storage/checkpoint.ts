/**
 * Checkpoints in a replica's data directory (see `DataDir.beginCheckpoint`, `loadCheckpoint`):
 * the state machine's snapshot at an op-number, with the view and whatever else the caller stores
 * beside it as opaque bytes (the client table), so that the log before it can go.
 *
 * A checkpoint is written as `checkpoint.<op-number, 16 digits>.tmp`, chunk by chunk as the
 * caller supplies them (each chunk written with an await, so that a large state is neither held
 * in one buffer nor written in one stretch that blocks the event loop), then fsynced, renamed to
 * `checkpoint.<op-number>` and the directory fsynced: a crash leaves the temporary file, which the
 * next `open` reports and deletes, or the whole checkpoint. Once one is in place, all but it and
 * the newest other one are deleted. A checkpoint of the same op-number as an existing one replaces
 * it.
 *
 * The file, all integers little-endian:
 * - header, 40 bytes: u32 magic "VSCP", u32 version, u64 op-number, u64 view-number, u64 metadata
 *   length, u32 zero, u32 CRC-32C of the 36 bytes before it;
 * - the metadata, the caller's opaque bytes;
 * - the chunks, each a 16-byte header (u32 magic "VSCK", u32 index, u32 length, u32 CRC-32C of
 *   the chunk's bytes) and the chunk's bytes;
 * - the index, 48 bytes per chunk: u64 offset of the chunk's header, u32 length, u32 CRC-32C of
 *   the chunk's bytes, 32 bytes of SHA-256 of the chunk's bytes;
 * - footer, 32 bytes: u32 magic "VSCF", u32 chunk count, u64 offset of the index, u64 total bytes
 *   of the chunks, u32 zero, u32 CRC-32C of the header, the metadata, the index and the 28 bytes
 *   of the footer before it.
 *
 * So every byte is covered: the chunks by their CRC-32C, which the index holds, and the rest by
 * the footer's checksum. A chunk's checksum and hash cover its bytes only, not its place, so two
 * replicas with the same chunk have the same hash: state transfer can send only the chunks the
 * receiver lacks (compare the SHA-256 `hash`; CRC-32C catches damage but is too short to tell
 * chunks apart across a large state).
 *
 * A load verifies a checkpoint whole (every chunk read and checked) before it uses it: the newest
 * one that checks out is used; one that does not is reported (file and byte offset), deleted and
 * passed over. Its chunks are then read back one at a time and checked again as they are read.
 *
 * A checkpoint fetched from a peer (`DataDir.persist` of an "install_checkpoint" effect) is written
 * the same way but renamed to `checkpoint.<op-number>.install`, staged: it counts only once the
 * log's record that rebases the log onto it is durable, and is then renamed into place
 * (`commitStagedCheckpoint`). A crash in between leaves the staged file, which the next `open`
 * puts in place if the log holds that record and deletes otherwise
 * (`resolveStagedCheckpoints`): the install happened whole or not at all.
 *
 * A checkpoint in place can be kept open to serve its chunks to peers (`CheckpointFile`), without
 * verifying it whole again: each chunk is checked against its CRC-32C as it is read.
 *
 * @module
 */

import { crc32c, CRC32C_START, crc32cFinish, crc32cUpdate } from "../lib/crc32c.ts";
import { assert, AssertionError } from "../vr/assert.ts";
// A cycle: data_dir.ts imports this module. Its errors are used only inside functions here.
import { DataDirError, DiskFullError, type DiskIo, isDiskFull } from "./data_dir.ts";
import { describe, readAt, removeIfPresent, syncDirectory } from "./_files.ts";

/** How many checkpoints a directory keeps: the one just written and the newest before it. */
export const CHECKPOINTS_KEPT = 2;
/** The largest chunk `CheckpointWriter.write` takes; about 1 MiB is the size to aim for. */
export const CHECKPOINT_CHUNK_BYTES_MAX = 256 * 1024 * 1024;
/** The largest metadata a checkpoint holds. */
export const CHECKPOINT_METADATA_BYTES_MAX = 1024 * 1024 * 1024;

/** "VSCP" in little-endian: the start of a checkpoint file. */
const CHECKPOINT_MAGIC = 0x50435356;
/** "VSCK": the start of a chunk. */
const CHUNK_MAGIC = 0x4b435356;
/** "VSCF": the start of the footer. */
const FOOTER_MAGIC = 0x46435356;
const CHECKPOINT_VERSION = 1;
const HEADER_BYTES = 40;
const HEADER_CHECKED_BYTES = 36;
const CHUNK_HEADER_BYTES = 16;
const HASH_BYTES = 32;
const INDEX_ENTRY_BYTES = 16 + HASH_BYTES;
const FOOTER_BYTES = 32;
const FOOTER_CHECKED_BYTES = 28;
/** The most chunks a checkpoint holds (the footer's count is a u32). */
const CHUNK_COUNT_MAX = 2 ** 32 - 1;

const CHECKPOINT_FILE_PREFIX = "checkpoint.";
const OP_NUMBER_DIGITS = 16;
const TMP_SUFFIX = ".tmp";
/** A checkpoint fetched from a peer, durable but not yet counted (see the module). */
const STAGED_SUFFIX = ".install";
const CHECKPOINT_PATTERN = /^checkpoint\.(\d{16})$/;
const TMP_PATTERN = /^checkpoint\.\d{16}\.tmp$/;
const STAGED_PATTERN = /^checkpoint\.(\d{16})\.install$/;

/** What a checkpoint holds besides the snapshot's chunks. */
export interface CheckpointHeader {
  /** The op-number of the last operation the snapshot includes. */
  readonly opNumber: number;
  /** The view-number at the checkpoint (of the op-number's entry, or the replica's view). */
  readonly viewNumber: number;
  /** Opaque bytes stored with the checkpoint: the client table, anything else the core needs. */
  readonly metadata?: Uint8Array | undefined;
}

/** One chunk of a checkpoint's snapshot, as its index describes it. */
export interface CheckpointChunk {
  /** Its place among the chunks, from 0. */
  readonly index: number;
  /** The byte offset of its header in the file. */
  readonly offset: number;
  /** Its length in bytes. */
  readonly length: number;
  /** The CRC-32C of its bytes (as the log's records use). */
  readonly checksum: number;
  /** The SHA-256 of its bytes: equal bytes, equal hash, whichever replica wrote them. */
  readonly hash: Uint8Array;
}

/** A checkpoint in place. */
export interface CheckpointInfo {
  /** Its file. */
  readonly path: string;
  readonly opNumber: number;
  readonly viewNumber: number;
  readonly metadata: Uint8Array;
  readonly chunks: readonly CheckpointChunk[];
  /** The total bytes of the chunks. */
  readonly bytes: number;
  /** The footer's checksum, over the header, the metadata and the index (so every chunk's). */
  readonly checksum: number;
}

/** A checkpoint that a load verified, and the means to read its chunks back. */
export interface LoadedCheckpoint extends CheckpointInfo {
  /**
   * The chunks from `fromIndex` (0 by default) on, in order, each checked against its checksum
   * as it is read: a chunk that changed since the load verified it throws DataDirError naming
   * the file and offset. Each chunk is a fresh array. Ending the iteration early closes the file.
   */
  read(fromIndex?: number): AsyncGenerator<Uint8Array, void, undefined>;
  /** One chunk, checked as `read` checks them. */
  readChunk(index: number): Promise<Uint8Array>;
}

/** What `DataDir` passes to a writer. */
export interface CheckpointWriterHooks {
  readonly sync: boolean;
  readonly injectFault: ((io: DiskIo) => void) | undefined;
  /**
   * Whether `finish` stages the checkpoint (`checkpoint.<op-number>.install`, the older ones left
   * alone) rather than putting it in place: see `commitStagedCheckpoint`.
   */
  readonly staged?: boolean | undefined;
  /** Called once when the writer is done: with the checkpoint once it is in place, else undefined. */
  readonly onEnd: (info: CheckpointInfo | undefined) => void;
}

/** The file name of the checkpoint of `opNumber`. */
export function checkpointFileName(opNumber: number): string {
  return `${CHECKPOINT_FILE_PREFIX}${String(opNumber).padStart(OP_NUMBER_DIGITS, "0")}`;
}

// ---------------------------------------------------------------- writing

/**
 * Writes one checkpoint: `write` each chunk of the snapshot in order, awaiting each, then
 * `finish` to put the checkpoint in place, or `abort` to discard it. A chunk's bytes must not
 * change until its `write` resolves (they are written from the caller's array, not a copy).
 *
 * A failed write or sync rejects with `DiskFullError` (no room) or `DataDirError`, naming the
 * temporary file and offset, and discards the checkpoint (the temporary file is deleted; the
 * previous checkpoints stay): begin again once the cause is gone. A call after the writer is done,
 * or while another call is in flight, rejects with AssertionError.
 */
export class CheckpointWriter {
  readonly #directory: string;
  readonly #tmpPath: string;
  readonly #path: string;
  readonly #opNumber: number;
  readonly #viewNumber: number;
  readonly #metadata: Uint8Array;
  readonly #hooks: CheckpointWriterHooks;
  #file: Deno.FsFile | undefined;
  /** Where the next bytes go. */
  #offset = 0;
  readonly #chunks: CheckpointChunk[] = [];
  #bytes = 0;
  /** The running CRC-32C of the header and the metadata; the index and footer join at `finish`. */
  #checksumState = CRC32C_START;
  #pending: Promise<unknown> | undefined;
  #state: "open" | "finished" | "aborted" | "failed" = "open";

  private constructor(
    directory: string,
    header: CheckpointHeader,
    file: Deno.FsFile,
    hooks: CheckpointWriterHooks,
  ) {
    const name = checkpointFileName(header.opNumber);
    this.#directory = directory;
    this.#tmpPath = `${directory}/${name}${TMP_SUFFIX}`;
    this.#path = `${directory}/${name}${hooks.staged === true ? STAGED_SUFFIX : ""}`;
    this.#opNumber = header.opNumber;
    this.#viewNumber = header.viewNumber;
    this.#metadata = (header.metadata ?? new Uint8Array()).slice();
    this.#file = file;
    this.#hooks = hooks;
  }

  /** For `DataDir.beginCheckpoint`: creates the temporary file and writes the header. */
  static async begin(
    directory: string,
    header: CheckpointHeader,
    hooks: CheckpointWriterHooks,
  ): Promise<CheckpointWriter> {
    const { opNumber, viewNumber } = header;
    const metadataBytes = header.metadata?.length ?? 0;
    assert(
      Number.isSafeInteger(opNumber) && opNumber >= 0 && Number.isSafeInteger(viewNumber) &&
        viewNumber >= 0,
      () => `a checkpoint of op ${opNumber} in view ${viewNumber}: not non-negative integers`,
    );
    assert(
      metadataBytes <= CHECKPOINT_METADATA_BYTES_MAX,
      () => `checkpoint metadata of ${metadataBytes} bytes, over ${CHECKPOINT_METADATA_BYTES_MAX}`,
    );
    const tmpPath = `${directory}/${checkpointFileName(opNumber)}${TMP_SUFFIX}`;
    let file: Deno.FsFile;
    try {
      file = await Deno.open(tmpPath, { write: true, create: true, truncate: true });
    } catch (error) {
      throw ioError(tmpPath, "creating it", error);
    }
    const writer = new CheckpointWriter(directory, header, file, hooks);
    await writer.#io("writing the header at byte 0", async () => {
      const bytes = encodeHeader(opNumber, viewNumber, writer.#metadata.length);
      writer.#checksumState = crc32cUpdate(
        crc32cUpdate(writer.#checksumState, bytes),
        writer.#metadata,
      );
      await writer.#writeBytes(bytes);
      await writer.#writeBytes(writer.#metadata);
    });
    return writer;
  }

  /** The checkpoint's op-number. */
  get opNumber(): number {
    return this.#opNumber;
  }

  /** The chunks written so far. */
  get chunkCount(): number {
    return this.#chunks.length;
  }

  /** The chunks written so far, as the index will describe them. */
  get chunks(): readonly CheckpointChunk[] {
    return this.#chunks;
  }

  /** Appends the next chunk of the snapshot. */
  write(chunk: Uint8Array): Promise<void> {
    return this.#run("write", () => this.#writeChunk(chunk));
  }

  /**
   * Writes the index, fsyncs the file, renames it into place and fsyncs the directory: the
   * checkpoint is durable when this resolves. Then deletes the checkpoints beyond the newest two.
   */
  finish(): Promise<CheckpointInfo> {
    return this.#run("finish", () => this.#finish());
  }

  /** Discards the checkpoint: waits for a call in flight, closes and deletes the temporary file. */
  async abort(): Promise<void> {
    await this.#pending?.catch(() => {});
    if (this.#state !== "open") return;
    this.#state = "aborted";
    this.#discard();
    await removeIfPresent(this.#tmpPath).catch(() => {});
    this.#hooks.onEnd(undefined);
  }

  #run<T>(what: string, body: () => Promise<T>): Promise<T> {
    if (this.#state !== "open") {
      return Promise.reject(
        new AssertionError(`${this.#tmpPath}: ${what} after the checkpoint was ${this.#state}`),
      );
    }
    if (this.#pending !== undefined) {
      return Promise.reject(
        new AssertionError(`${this.#tmpPath}: ${what} while another call is in flight`),
      );
    }
    const promise = body().finally(() => {
      this.#pending = undefined;
    });
    this.#pending = promise;
    return promise;
  }

  async #writeChunk(chunk: Uint8Array): Promise<void> {
    assert(chunk instanceof Uint8Array, () => `${this.#tmpPath}: a chunk must be a Uint8Array`);
    assert(
      chunk.length <= CHECKPOINT_CHUNK_BYTES_MAX,
      () =>
        `${this.#tmpPath}: a chunk of ${chunk.length} bytes, over ${CHECKPOINT_CHUNK_BYTES_MAX}`,
    );
    assert(this.#chunks.length < CHUNK_COUNT_MAX, () => `${this.#tmpPath}: too many chunks`);
    const index = this.#chunks.length;
    const offset = this.#offset;
    await this.#io(`writing chunk ${index} at byte ${offset}`, async () => {
      const checksum = crc32c(chunk);
      // WebCrypto takes no view of a SharedArrayBuffer; a chunk never is one.
      const hash = new Uint8Array(
        await crypto.subtle.digest("SHA-256", chunk as Uint8Array<ArrayBuffer>),
      );
      const header = new Uint8Array(CHUNK_HEADER_BYTES);
      const view = new DataView(header.buffer);
      view.setUint32(0, CHUNK_MAGIC, true);
      view.setUint32(4, index, true);
      view.setUint32(8, chunk.length, true);
      view.setUint32(12, checksum, true);
      await this.#writeBytes(header);
      await this.#writeBytes(chunk);
      this.#chunks.push({ index, offset, length: chunk.length, checksum, hash });
      this.#bytes += chunk.length;
    });
  }

  async #finish(): Promise<CheckpointInfo> {
    const indexOffset = this.#offset;
    const tail = new Uint8Array(this.#chunks.length * INDEX_ENTRY_BYTES + FOOTER_BYTES);
    const view = new DataView(tail.buffer);
    for (const chunk of this.#chunks) {
      const at = chunk.index * INDEX_ENTRY_BYTES;
      view.setBigUint64(at, BigInt(chunk.offset), true);
      view.setUint32(at + 8, chunk.length, true);
      view.setUint32(at + 12, chunk.checksum, true);
      tail.set(chunk.hash, at + 16);
    }
    const footer = this.#chunks.length * INDEX_ENTRY_BYTES;
    view.setUint32(footer, FOOTER_MAGIC, true);
    view.setUint32(footer + 4, this.#chunks.length, true);
    view.setBigUint64(footer + 8, BigInt(indexOffset), true);
    view.setBigUint64(footer + 16, BigInt(this.#bytes), true);
    const checksum = crc32cFinish(
      crc32cUpdate(this.#checksumState, tail.subarray(0, footer + FOOTER_CHECKED_BYTES)),
    );
    view.setUint32(footer + FOOTER_CHECKED_BYTES, checksum, true);
    await this.#io(`writing the index at byte ${indexOffset}`, () => this.#writeBytes(tail));
    if (this.#hooks.sync) {
      await this.#io("syncing it", async () => {
        this.#hooks.injectFault?.({ kind: "sync", path: this.#tmpPath });
        await this.#file!.sync();
      });
    }
    this.#discard();
    await this.#io(`renaming it to ${this.#path}`, () => Deno.rename(this.#tmpPath, this.#path));
    if (this.#hooks.sync) {
      await this.#io(`syncing the directory after renaming it to ${this.#path}`, async () => {
        this.#hooks.injectFault?.({ kind: "sync", path: this.#directory });
        await syncDirectory(this.#directory);
      });
    }
    this.#state = "finished";
    const info: CheckpointInfo = {
      path: this.#path,
      opNumber: this.#opNumber,
      viewNumber: this.#viewNumber,
      metadata: this.#metadata,
      chunks: this.#chunks,
      bytes: this.#bytes,
      checksum,
    };
    this.#hooks.onEnd(info);
    // A staged checkpoint does not count yet: the older ones stay until it is put in place.
    if (this.#hooks.staged === true) return info;
    try {
      await pruneCheckpoints(this.#directory, this.#opNumber, this.#hooks.sync);
    } catch (error) {
      // The checkpoint is in place and durable; only the older ones may linger.
      throw new DataDirError(
        `${this.#directory}: deleting checkpoints older than ${this.#path}: ${describe(error)}`,
        { cause: error },
      );
    }
    return info;
  }

  async #writeBytes(bytes: Uint8Array): Promise<void> {
    const file = this.#file!;
    this.#hooks.injectFault?.({ kind: "write", path: this.#tmpPath, offset: this.#offset, bytes });
    let written = 0;
    while (written < bytes.length) written += await file.write(bytes.subarray(written));
    this.#offset += bytes.length;
  }

  /** Runs one step; on failure discards the checkpoint and throws a DataDirError for the step. */
  async #io<T>(step: string, body: () => Promise<T>): Promise<T> {
    try {
      return await body();
    } catch (error) {
      if (this.#state === "open") {
        this.#state = "failed";
        this.#discard();
        await removeIfPresent(this.#tmpPath).catch(() => {});
        this.#hooks.onEnd(undefined);
      }
      if (error instanceof DataDirError || error instanceof AssertionError) throw error;
      throw ioError(this.#tmpPath, step, error);
    }
  }

  #discard(): void {
    if (this.#file === undefined) return;
    try {
      this.#file.close();
    } catch {
      // Already closed.
    }
    this.#file = undefined;
  }
}

/** For `DataDir.beginCheckpoint`. */
export function beginCheckpoint(
  directory: string,
  header: CheckpointHeader,
  hooks: CheckpointWriterHooks,
): Promise<CheckpointWriter> {
  return CheckpointWriter.begin(directory, header, hooks);
}

/**
 * Puts a staged checkpoint (`CheckpointWriterHooks.staged`) in place: renames it to the name of a
 * checkpoint, fsyncs the directory, then deletes the checkpoints beyond the newest two, as
 * `finish` does for one written in place. Returns it under its new name.
 */
export async function commitStagedCheckpoint(
  directory: string,
  staged: CheckpointInfo,
  sync: boolean,
  injectFault: ((io: DiskIo) => void) | undefined,
): Promise<CheckpointInfo> {
  const path = `${directory}/${checkpointFileName(staged.opNumber)}`;
  try {
    await Deno.rename(staged.path, path);
    if (sync) {
      injectFault?.({ kind: "sync", path: directory });
      await syncDirectory(directory);
    }
  } catch (error) {
    throw new DataDirError(
      `${staged.path}: putting the installed checkpoint in place as ${path}: ${describe(error)}`,
      { cause: error },
    );
  }
  try {
    await pruneCheckpoints(directory, staged.opNumber, sync);
  } catch (error) {
    throw new DataDirError(
      `${directory}: deleting checkpoints older than ${path}: ${describe(error)}`,
      { cause: error },
    );
  }
  return { ...staged, path };
}

/**
 * For `DataDir.open`, once the log is loaded: puts in place each staged checkpoint whose install
 * the log records (`installed` holds the op-numbers of the checkpoints the log was rebased onto),
 * and deletes the others, whose install a crash cut short before the log recorded it. Each is
 * reported.
 */
export async function resolveStagedCheckpoints(
  directory: string,
  installed: ReadonlySet<number>,
  sync: boolean,
  onRepair: ((message: string) => void) | undefined,
): Promise<void> {
  for (const name of await listDirectory(directory)) {
    const match = STAGED_PATTERN.exec(name);
    if (match === null) continue;
    const opNumber = Number(match[1]);
    const path = `${directory}/${name}`;
    const final = `${directory}/${checkpointFileName(opNumber)}`;
    const commit = installed.has(opNumber);
    try {
      if (commit) {
        await Deno.rename(path, final);
        if (sync) await syncDirectory(directory);
        await pruneCheckpoints(directory, opNumber, sync);
      } else {
        await Deno.remove(path);
        if (sync) await syncDirectory(directory);
      }
    } catch (error) {
      throw new DataDirError(
        `${path}: ${commit ? `putting it in place as ${final}` : "deleting it"}: ${
          describe(error)
        }`,
        { cause: error },
      );
    }
    if (commit) {
      onRepair?.(
        `${path}: a checkpoint fetched from a peer, staged, whose install the log records (a ` +
          `crash came before it was put in place): renamed it to ${final}`,
      );
    } else {
      onRepair?.(
        `${path}: a checkpoint fetched from a peer, staged, whose install the log never ` +
          "recorded (a crash came first): deleted it; the log and the checkpoints before it stand",
      );
    }
  }
}

/** Deletes every checkpoint but the one of `opNumber` and the newest other one. */
async function pruneCheckpoints(directory: string, opNumber: number, sync: boolean) {
  const others = (await listCheckpoints(directory))
    .filter((checkpoint) => checkpoint.opNumber !== opNumber)
    .sort((a, b) => b.opNumber - a.opNumber);
  const doomed = others.slice(CHECKPOINTS_KEPT - 1);
  for (const checkpoint of doomed) await removeIfPresent(`${directory}/${checkpoint.name}`);
  if (doomed.length > 0 && sync) await syncDirectory(directory);
}

function encodeHeader(opNumber: number, viewNumber: number, metadataBytes: number): Uint8Array {
  const bytes = new Uint8Array(HEADER_BYTES);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, CHECKPOINT_MAGIC, true);
  view.setUint32(4, CHECKPOINT_VERSION, true);
  view.setBigUint64(8, BigInt(opNumber), true);
  view.setBigUint64(16, BigInt(viewNumber), true);
  view.setBigUint64(24, BigInt(metadataBytes), true);
  view.setUint32(HEADER_CHECKED_BYTES, crc32c(bytes.subarray(0, HEADER_CHECKED_BYTES)), true);
  return bytes;
}

// ---------------------------------------------------------------- loading

/** Why a file is not a valid checkpoint, and the byte where that showed. */
interface Problem {
  readonly offset: number;
  readonly reason: string;
}

/**
 * Deletes the temporary files of checkpoint writes that never finished (a crash, or a failed
 * write whose cleanup did not happen), reporting each with its size: for `DataDir.open`, before
 * any checkpoint is written.
 */
export async function removeUnfinishedCheckpoints(
  directory: string,
  sync: boolean,
  onRepair: ((message: string) => void) | undefined,
): Promise<void> {
  let removed = 0;
  for (const name of await listDirectory(directory)) {
    if (!TMP_PATTERN.test(name)) continue;
    const path = `${directory}/${name}`;
    const size = (await Deno.stat(path)).size;
    await Deno.remove(path);
    removed++;
    onRepair?.(
      `${path}: a checkpoint write that never finished (a crash during it), cut short at byte ` +
        `${size} and never put in place: deleted it; the checkpoints before it stand`,
    );
  }
  if (removed > 0 && sync) await syncDirectory(directory);
}

/**
 * The newest checkpoint in `directory` that checks out (see the module), or undefined; those
 * that do not are reported, deleted and passed over. An error reading a file (not its contents
 * being wrong) is a DataDirError, and deletes nothing.
 */
export async function loadNewestCheckpoint(
  directory: string,
  sync: boolean,
  onRepair: ((message: string) => void) | undefined,
): Promise<LoadedCheckpoint | undefined> {
  const found = (await listCheckpoints(directory)).sort((a, b) => b.opNumber - a.opNumber);
  for (const [position, { opNumber, name }] of found.entries()) {
    const path = `${directory}/${name}`;
    let result: CheckpointInfo | Problem;
    try {
      result = await verifyCheckpoint(path, opNumber);
    } catch (error) {
      if (error instanceof DataDirError) throw error;
      throw new DataDirError(`${path}: cannot read (${describe(error)})`, { cause: error });
    }
    if ("reason" in result) {
      const older = found.length - position - 1;
      onRepair?.(
        `${path}: ${result.reason} at byte ${result.offset}: not a valid checkpoint (damaged ` +
          `after it was written); deleted it, ${
            older > 0 ? "and tried the older one" : "and no older checkpoint remains"
          }`,
      );
      await Deno.remove(path);
      if (sync) await syncDirectory(directory);
      continue;
    }
    const info = result;
    return {
      ...info,
      read: (fromIndex = 0) => readChunks(info, fromIndex),
      readChunk: async (index) => {
        assert(
          Number.isInteger(index) && index >= 0 && index < info.chunks.length,
          () => `${info.path}: no chunk ${index} (it holds ${info.chunks.length})`,
        );
        const file = await openForReading(info.path);
        try {
          return await readVerifiedChunk(file, info, info.chunks[index]!);
        } finally {
          file.close();
        }
      },
    };
  }
  return undefined;
}

/** The checkpoint in `path`, every chunk checked, or the first thing wrong with it. */
async function verifyCheckpoint(
  path: string,
  opNumber: number,
): Promise<CheckpointInfo | Problem> {
  const file = await Deno.open(path, { read: true });
  try {
    const size = (await file.stat()).size;
    if (size < HEADER_BYTES + FOOTER_BYTES) {
      return { offset: size, reason: `ends after ${size} bytes, too few for a checkpoint` };
    }
    const header = await readAt(file, 0, HEADER_BYTES);
    const headerView = new DataView(header.buffer, header.byteOffset, header.byteLength);
    if (headerView.getUint32(0, true) !== CHECKPOINT_MAGIC) {
      return { offset: 0, reason: "lacks the checkpoint magic" };
    }
    if (
      headerView.getUint32(HEADER_CHECKED_BYTES, true) !==
        crc32c(header.subarray(0, HEADER_CHECKED_BYTES))
    ) {
      return { offset: 0, reason: "has a header with a bad checksum" };
    }
    const version = headerView.getUint32(4, true);
    if (version !== CHECKPOINT_VERSION) {
      return { offset: 4, reason: `has version ${version}, not ${CHECKPOINT_VERSION}` };
    }
    const [headerOp, viewNumber, metadataBytes] = [8, 16, 24].map((at) =>
      Number(headerView.getBigUint64(at, true))
    ) as [number, number, number];
    if (headerOp !== opNumber) {
      return { offset: 8, reason: `holds op ${headerOp}, not the op ${opNumber} its name says` };
    }
    const footerOffset = size - FOOTER_BYTES;
    const footer = await readAt(file, footerOffset, FOOTER_BYTES);
    const footerView = new DataView(footer.buffer, footer.byteOffset, footer.byteLength);
    if (footerView.getUint32(0, true) !== FOOTER_MAGIC) {
      return { offset: footerOffset, reason: "lacks the footer magic (cut short?)" };
    }
    const count = footerView.getUint32(4, true);
    const indexOffset = Number(footerView.getBigUint64(8, true));
    const bytes = Number(footerView.getBigUint64(16, true));
    const indexBytes = count * INDEX_ENTRY_BYTES;
    if (
      indexOffset + indexBytes !== footerOffset ||
      !Number.isSafeInteger(metadataBytes) || HEADER_BYTES + metadataBytes > indexOffset
    ) {
      return {
        offset: footerOffset,
        reason: "has a footer whose index does not fit between the metadata and the footer",
      };
    }
    const metadata = await readAt(file, HEADER_BYTES, metadataBytes);
    const index = await readAt(file, indexOffset, indexBytes);
    let state = crc32cUpdate(crc32cUpdate(CRC32C_START, header), metadata);
    state = crc32cUpdate(crc32cUpdate(state, index), footer.subarray(0, FOOTER_CHECKED_BYTES));
    const checksum = footerView.getUint32(FOOTER_CHECKED_BYTES, true);
    if (crc32cFinish(state) !== checksum) {
      return {
        offset: footerOffset + FOOTER_CHECKED_BYTES,
        reason: "has a bad checksum over its header, metadata and index",
      };
    }
    const indexView = new DataView(index.buffer, index.byteOffset, index.byteLength);
    const chunks: CheckpointChunk[] = [];
    let expected = HEADER_BYTES + metadataBytes;
    let total = 0;
    for (let at = 0; at < indexBytes; at += INDEX_ENTRY_BYTES) {
      const chunk: CheckpointChunk = {
        index: chunks.length,
        offset: Number(indexView.getBigUint64(at, true)),
        length: indexView.getUint32(at + 8, true),
        checksum: indexView.getUint32(at + 12, true),
        hash: index.slice(at + 16, at + INDEX_ENTRY_BYTES),
      };
      if (chunk.offset !== expected || expected + CHUNK_HEADER_BYTES + chunk.length > indexOffset) {
        return {
          offset: indexOffset + at,
          reason: `has an index whose chunk ${chunk.index} is out of place`,
        };
      }
      chunks.push(chunk);
      expected += CHUNK_HEADER_BYTES + chunk.length;
      total += chunk.length;
    }
    if (expected !== indexOffset || total !== bytes) {
      return {
        offset: indexOffset,
        reason: "has chunks that do not fill the space before the index",
      };
    }
    const info: CheckpointInfo = {
      path,
      opNumber,
      viewNumber,
      metadata,
      chunks,
      bytes,
      checksum,
    };
    for (const chunk of chunks) {
      const problem = checkChunk(
        await readAt(file, chunk.offset, CHUNK_HEADER_BYTES + chunk.length),
        chunk,
      );
      if (problem !== undefined) {
        return { offset: chunk.offset, reason: `chunk ${chunk.index} ${problem}` };
      }
    }
    return info;
  } finally {
    file.close();
  }
}

/** What is wrong with a chunk's header and bytes, read from its offset, if anything. */
function checkChunk(bytes: Uint8Array, chunk: CheckpointChunk): string | undefined {
  if (bytes.length !== CHUNK_HEADER_BYTES + chunk.length) return "is cut short";
  const view = new DataView(bytes.buffer, bytes.byteOffset, CHUNK_HEADER_BYTES);
  if (view.getUint32(0, true) !== CHUNK_MAGIC) return "lacks the chunk magic";
  if (view.getUint32(4, true) !== chunk.index || view.getUint32(8, true) !== chunk.length) {
    return "has a header that disagrees with the index";
  }
  const checksum = crc32c(bytes.subarray(CHUNK_HEADER_BYTES));
  if (checksum !== chunk.checksum || view.getUint32(12, true) !== chunk.checksum) {
    return "has a bad checksum";
  }
  return undefined;
}

async function readVerifiedChunk(
  file: Deno.FsFile,
  info: CheckpointInfo,
  chunk: CheckpointChunk,
): Promise<Uint8Array> {
  const bytes = await readAt(file, chunk.offset, CHUNK_HEADER_BYTES + chunk.length);
  const problem = checkChunk(bytes, chunk);
  if (problem !== undefined) {
    throw new DataDirError(
      `${info.path}: chunk ${chunk.index} at byte ${chunk.offset} ${problem}: the checkpoint ` +
        "changed after the load verified it",
    );
  }
  return bytes.subarray(CHUNK_HEADER_BYTES);
}

async function* readChunks(
  info: CheckpointInfo,
  fromIndex: number,
): AsyncGenerator<Uint8Array, void, undefined> {
  assert(
    Number.isInteger(fromIndex) && fromIndex >= 0 && fromIndex <= info.chunks.length,
    () => `${info.path}: no chunk ${fromIndex} to read from (it holds ${info.chunks.length})`,
  );
  const file = await openForReading(info.path);
  try {
    for (let index = fromIndex; index < info.chunks.length; index++) {
      yield await readVerifiedChunk(file, info, info.chunks[index]!);
    }
  } finally {
    file.close();
  }
}

async function openForReading(path: string): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, { read: true });
  } catch (error) {
    throw new DataDirError(`${path}: cannot open (${describe(error)})`, { cause: error });
  }
}

/**
 * A checkpoint in place whose file is kept open, to serve its chunks to peers
 * (`DataDir.openCheckpoint`) without verifying it whole on every request: each chunk is checked
 * as it is read, as `LoadedCheckpoint` promises. Reads go one at a time (each seeks the one
 * file). `close` waits for the reads in flight, then closes the file; a read after it rejects
 * with DataDirError (the checkpoint was deleted or replaced, or the directory closed).
 */
export class CheckpointFile implements LoadedCheckpoint {
  readonly path: string;
  readonly opNumber: number;
  readonly viewNumber: number;
  readonly metadata: Uint8Array;
  readonly chunks: readonly CheckpointChunk[];
  readonly bytes: number;
  readonly checksum: number;
  readonly #info: CheckpointInfo;
  #file: Promise<Deno.FsFile> | undefined;
  /** The read in flight, if any; the next one starts after it. */
  #tail: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(info: CheckpointInfo) {
    this.#info = info;
    this.path = info.path;
    this.opNumber = info.opNumber;
    this.viewNumber = info.viewNumber;
    this.metadata = info.metadata;
    this.chunks = info.chunks;
    this.bytes = info.bytes;
    this.checksum = info.checksum;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Opens the file unless it is open: rejects with Deno.errors.NotFound once the file is gone,
   * with DataDirError for another failure.
   */
  async open(): Promise<void> {
    this.#file ??= Deno.open(this.path, { read: true });
    try {
      await this.#file;
    } catch (error) {
      this.#file = undefined;
      if (error instanceof Deno.errors.NotFound) throw error;
      throw new DataDirError(`${this.path}: cannot open (${describe(error)})`, { cause: error });
    }
  }

  async *read(fromIndex = 0): AsyncGenerator<Uint8Array, void, undefined> {
    assert(
      Number.isInteger(fromIndex) && fromIndex >= 0 && fromIndex <= this.chunks.length,
      () => `${this.path}: no chunk ${fromIndex} to read from (it holds ${this.chunks.length})`,
    );
    for (let index = fromIndex; index < this.chunks.length; index++) {
      yield await this.readChunk(index);
    }
  }

  readChunk(index: number): Promise<Uint8Array> {
    if (!(Number.isInteger(index) && index >= 0 && index < this.chunks.length)) {
      // Rejects, as `LoadedCheckpoint.readChunk` does.
      return Promise.reject(
        new AssertionError(`${this.path}: no chunk ${index} (it holds ${this.chunks.length})`),
      );
    }
    const read = this.#tail.catch(() => {}).then(async () => {
      if (this.#closed) {
        throw new DataDirError(`${this.path}: closed (deleted or replaced since it was opened)`);
      }
      await this.open();
      return readVerifiedChunk(await this.#file!, this.#info, this.chunks[index]!);
    });
    this.#tail = read;
    return read;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#tail.catch(() => {});
    const file = this.#file;
    this.#file = undefined;
    if (file === undefined) return;
    try {
      (await file).close();
    } catch {
      // Never opened, or closed already.
    }
  }
}

// ---------------------------------------------------------------- file helpers

interface CheckpointName {
  readonly opNumber: number;
  readonly name: string;
}

/** The checkpoints in `directory` (not the temporary files), by their names. */
async function listCheckpoints(directory: string): Promise<CheckpointName[]> {
  const found: CheckpointName[] = [];
  for (const name of await listDirectory(directory)) {
    const match = CHECKPOINT_PATTERN.exec(name);
    if (match === null) continue;
    const opNumber = Number(match[1]);
    if (Number.isSafeInteger(opNumber)) found.push({ opNumber, name });
  }
  return found;
}

async function listDirectory(path: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(path)) names.push(entry.name);
  return names;
}

function ioError(file: string, step: string, error: unknown): DataDirError {
  const message = `${file}: ${step}: ${describe(error)}`;
  return isDiskFull(error)
    ? new DiskFullError(file, message, { cause: error })
    : new DataDirError(message, { cause: error });
}
