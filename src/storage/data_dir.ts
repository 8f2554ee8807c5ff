/**
 * A replica's data directory: the durable half of the persistence contract in `src/vr/replica.ts`.
 * The node driver hands it each turn's persist effects as one batch and reports them to the
 * replica (`onPersisted`) once `persist` resolves.
 *
 * Files:
 * - `LOCK`: holds an advisory lock for as long as the directory is open, so that a second server
 *   started on the same directory fails at once instead of interleaving writes.
 * - `superblock.a`, `superblock.b`: two fixed slots of `SUPERBLOCK_BYTES`, written in place in
 *   turn (even sequence-numbers in `a`, odd in `b`). A write torn by a crash spoils only the slot
 *   being written; the load takes the valid slot with the higher sequence-number.
 * - `log.000001`, `log.000002`, ...: the log, as segment files of records, one record per batch
 *   (see `encodeRecord`), numbered without gaps. Records go to the last segment; once its records
 *   reach `LOG_SEGMENT_BYTES`, the next record starts the next segment. A segment is never
 *   written again once the next one exists, and `truncateBefore` deletes segments whole, from the
 *   first, once a checkpoint covers every entry they hold. A directory of the older single-file
 *   format (one `log`) is migrated by one rename at open: `log` becomes `log.000000`, whose record
 *   checksums are the old ones (segment 0 is the only segment whose checksums do not cover the
 *   segment's number), and the log goes on in `log.000001`.
 * - `checkpoint.<op-number, 16 digits>`: checkpoints, the newest two kept, and
 *   `checkpoint.<op-number>.tmp` while one is written, `checkpoint.<op-number>.install` while one
 *   fetched from a peer waits for the log to record its install (see `src/storage/checkpoint.ts`).
 *
 * A batch costs one write and one fdatasync of the log, then, if it holds superblock writes, one
 * write and one fdatasync of a superblock slot. Log writes that the batch orders after a superblock
 * write go into the same log write, tagged with the superblock sequence-number they depend on; a
 * load drops them when that superblock never became durable. Every crash therefore leaves a
 * prefix of the effects, in the order the replica emitted them. A batch that starts a segment
 * first cuts the full one to where its records end and syncs it, then creates the next one and
 * syncs the directory: once a later segment exists, every segment before it is whole and durable.
 *
 * Faults, and what a load or a persist does about them (each repair is reported to `onRepair`):
 * - a bad last record of the last segment (nothing valid after it) is a write torn by a crash: it
 *   was never synced, so never acknowledged, and it is cut off;
 * - a bad record with a valid one after it, or anywhere in a segment that another one follows, is
 *   damage: entries this replica acknowledged may be gone. The directory is marked as recovering
 *   (a superblock write, durable before anything is cut), the log is cut at the bad record (the
 *   later segments deleted), and the load reports `logTrusted: false`, so that the replica runs
 *   §4.3 recovery and counts in no quorum until it has the primary's log;
 * - one unreadable superblock slot: the other one is used (a crash tears only the slot being
 *   written, and the next superblock write goes to that slot again). Both unreadable: `open`
 *   refuses, since the view this replica promised is unknown;
 * - a full disk (`DiskFullError`): the batch is not durable and the bookkeeping is as before it,
 *   so the caller may persist the same batch again once there is room. Any other failed write is a
 *   `DataDirError` the caller should treat as fatal;
 * - a checkpoint write cut short by a crash (a temporary file), or a checkpoint that does not
 *   check out: reported, deleted and ignored, so that the previous checkpoint is used;
 * - an install of a checkpoint cut short by a crash: finished or undone, whichever its log record
 *   says (see "Installing a checkpoint" below), and reported.
 *
 * Log truncation and the replica core. `Replica` (`DurableState.log`, `src/vr/log.ts`) assumes the
 * log starts at op 1. After `truncateBefore` the loaded log starts at a later op-number
 * (`logStartOpNumber`), so `open` refuses such a directory unless the caller passes
 * `allowTruncatedLog`: a core that restores from a checkpoint must take the log's first
 * op-number along with the entries, and only such a core may pass it.
 *
 * Installing a checkpoint. An "install_checkpoint" effect (a checkpoint of op c that the replica
 * fetched from a peer, because its log no longer meets the group's) replaces the log: it
 * continues at op c + 1, whatever it held, and what it held before is dead. `persist` writes the
 * effects before it as a batch of their own, then, in this order, each step durable before the
 * next:
 * 1. the checkpoint, as a staged file `checkpoint.<c>.install` (written and renamed as any
 *    checkpoint is, but not counted: not loaded, not pruned against);
 * 2. the last segment cut to its records and synced, a new segment created and the directory
 *    synced (`#startSegment`; skipped when the last segment holds no record yet);
 * 3. the rebase record, first in the new segment (`RECORD_KIND_BASE`): its first run, from op
 *    c + 1, replaces the whole log; the batch's effects after the install follow in the same
 *    record (an empty run if none, so that a load learns the log ends at op c). This fdatasync is
 *    the install's commit point;
 * 4. the staged checkpoint renamed into place, the directory synced, older checkpoints pruned;
 * 5. every segment before the new one deleted, from the first on, and the directory synced.
 * A crash before 3 is durable leaves the log as it was: the new segment empty or torn (cut off as
 * a torn tail), and the staged checkpoint (or its temporary file, during 1), which `open` deletes
 * since no rebase record names it: the old state, exactly. A crash after 3 leaves the rebase record, which checks out: `open` finds
 * it by looking at the first record of each segment, from the last on, deletes the segments
 * before it (they can only be dead: the record is written only after them, in a segment of its
 * own), loads the log from it, and puts the staged checkpoint in place: the new state, whatever
 * of 4 and 5 had happened. (`open` never sees the old segments' contents then, so damage in them
 * cannot matter.) A rebase record is never lost to a lost superblock write: its first run is
 * tagged with the superblock already durable. The log on disk therefore always holds one history:
 * what the replica held before the install, or the checkpoint's and what followed it, never a mix.
 *
 * @module
 */

import { Unpackr } from "msgpackr";
import { bytesEqual } from "../lib/bytes.ts";
import { crc32c, CRC32C_START, crc32cFinish, crc32cUpdate } from "../lib/crc32c.ts";
import {
  ScratchBuffer,
  sizeArrayHeader,
  sizeEntry,
  sizeUint,
  writeArrayHeader,
  writeEntry,
  writeUint,
} from "../lib/msgpack_fast.ts";
import type { LogEntry } from "../vr/message.ts";
import { decodeMembership, encodeMembership, type Membership } from "../vr/membership.ts";
import type { DurableState, Effect, Superblock } from "../vr/replica.ts";
import { assert, AssertionError } from "../vr/assert.ts";
import { describe, readAt as readAtShared, removeIfPresent, syncDirectory } from "./_files.ts";
// A cycle: checkpoint.ts throws this module's errors. Each module uses the other's exports only
// inside functions, never while it is being evaluated, so either may be imported first.
import {
  beginCheckpoint,
  CheckpointFile,
  checkpointFileName,
  type CheckpointHeader,
  type CheckpointInfo,
  CHECKPOINTS_KEPT,
  type CheckpointWriter,
  commitStagedCheckpoint,
  type LoadedCheckpoint,
  loadNewestCheckpoint,
  removeUnfinishedCheckpoints,
  resolveStagedCheckpoints,
} from "./checkpoint.ts";

export type {
  CheckpointChunk,
  CheckpointHeader,
  CheckpointInfo,
  CheckpointWriter,
  LoadedCheckpoint,
} from "./checkpoint.ts";

/**
 * A log segment takes records until they reach this size; the next record starts a new segment.
 * Segments are what `truncateBefore` deletes, so this is also the granularity at which the log's
 * disk space is given back: at 112 bytes per 64-byte SET, about 150,000 operations, less than the
 * core's retained suffix (`Limits.logRetainOps`), so that a data directory stays within a few
 * times a checkpoint plus that suffix.
 */
export const LOG_SEGMENT_BYTES = 16 * 1024 * 1024;
/** A log smaller than this (all its segments) is never rewritten, however much of it is dead. */
export const LOG_REWRITE_BYTES_MIN = 64 * 1024 * 1024;
/** The log is rewritten at open when it is more than this many times the size of its live part. */
const LOG_REWRITE_RATIO = 2;
/** Roughly the bytes of msgpack an entry takes besides its operation, to estimate live bytes. */
const ENTRY_OVERHEAD_BYTES_ESTIMATE = 48;
/** The operation bytes per record when the log is rewritten, to keep records a modest size. */
const REWRITE_RECORD_BYTES_TARGET = 1024 * 1024;

/**
 * The log file is kept this far ahead of its records with zeros written and synced in advance:
 * a write into space the file already has changes no metadata, so its fdatasync flushes data
 * only (on this machine's ext4: 0.22 ms instead of 0.36 ms for an append).
 */
export const LOG_PREALLOCATE_AHEAD_BYTES = 8 * 1024 * 1024;
/** Zeros are added in chunks of this size, one chunk per persist at most. */
const LOG_PREALLOCATE_CHUNK_BYTES = 1024 * 1024;
const ZERO_CHUNK = new Uint8Array(LOG_PREALLOCATE_CHUNK_BYTES);

/** "VSLR" in little-endian: marks the start of every log record. */
const RECORD_MAGIC = 0x524c5356;
/** Magic, body length, checksum: three u32. */
const RECORD_HEADER_BYTES = 12;
/**
 * The largest record body. A batch is bounded by the replica's limits far below this; the bound
 * keeps a corrupt length field from asking for an absurd allocation.
 */
const RECORD_BODY_BYTES_MAX = 1024 * 1024 * 1024;
/** A batch: its runs, applied to the log as it stands. */
const RECORD_KIND_BATCH = 1;
/**
 * A batch that first rebases the log onto a checkpoint installed from a peer: its first run,
 * from op c + 1, replaces the whole log, whatever it held, and the log before it is gone (the
 * checkpoint of op c covers it). Always the first record of its segment, so that a load can tell
 * from each segment's first record which segments it makes dead (see the module).
 */
const RECORD_KIND_BASE = 2;
/** The first bytes of a base record's body: msgpack's two-element array, then the kind. */
const BASE_BODY_PREFIX = [0x92, RECORD_KIND_BASE] as const;
/** The number of fields of an encoded log entry. */
const ENTRY_FIELD_COUNT = 6;
/** The number of fields of an encoded run (consecutive log writes of a batch, see `Run`). */
const RUN_FIELD_COUNT = 4;
/** How much of the log a load reads per system call. */
const READ_CHUNK_BYTES = 1024 * 1024;

/** "VSSB" in little-endian: marks a superblock slot. */
const SUPERBLOCK_MAGIC = 0x42535356;
const SUPERBLOCK_VERSION = 2;
/** Magic, version, sequence, view, last normal view, recovering, checksum. */
const SUPERBLOCK_BYTES = 48;
/** The bytes a slot's checksum covers: everything before the checksum. */
const SUPERBLOCK_CHECKED_BYTES = 44;

const LOCK_FILE = "LOCK";
/** The one log file of the older single-file format, migrated at open (see the module). */
const LEGACY_LOG_FILE = "log";
/** The segment number `log` gets: its record checksums cover no segment number. */
const LEGACY_SEGMENT_NUMBER = 0;
/** The first segment of a new directory. */
const FIRST_SEGMENT_NUMBER = 1;
const LOG_SEGMENT_PREFIX = "log.";
/** Segment numbers are written with at least this many digits, so that names sort in order. */
const LOG_SEGMENT_DIGITS = 6;
const LOG_SEGMENT_PATTERN = /^log\.(\d+)$/;
const LOG_TMP_FILE = "log.tmp";
const SUPERBLOCK_SLOT_FILES = ["superblock.a", "superblock.b"] as const;
const SUPERBLOCK_TMP_FILE = "superblock.tmp";

const SUPERBLOCK_DEFAULT: Superblock = {
  epoch: 0,
  viewNumber: 0,
  lastNormalView: 0,
  recovering: false,
};
/** §7 The group's membership (`persist_membership`), JSON, replaced whole by a rename. */
export const MEMBERSHIP_FILE = "membership.json";
const MEMBERSHIP_TMP_FILE = "membership.tmp";
/**
 * §7 The replica's id in its group's address book (its `--index` in epoch 0, or where its address
 * was added), as decimal text: recorded on the first run, so that a restart under another
 * replica's identity (a wrong `--index`, another replica's directory) is refused. Addresses can
 * change between runs (`cluster up` binds new ports), ids do not.
 */
export const REPLICA_ID_FILE = "replica.id";
const REPLICA_ID_TMP_FILE = "replica.id.tmp";
/**
 * The app whose state the directory holds (`name@version`, see `src/app/app.ts`): a replica
 * started with another `--app` would replay this log into a machine that cannot read it.
 */
export const APP_FILE = "app.id";
const APP_TMP_FILE = "app.id.tmp";

/** A problem with the files of a data directory; the message names the file. */
export class DataDirError extends Error {
  override name = "DataDirError";
}

/**
 * A persist found no room on the disk (ENOSPC, or EDQUOT: the user's quota). Nothing of the batch
 * counts as durable, and the directory is as it was before the batch: the same batch may be
 * persisted again, and succeeds once there is room.
 */
export class DiskFullError extends DataDirError {
  override name = "DiskFullError";
  /** The file that could not be written. */
  readonly file: string;

  constructor(file: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.file = file;
  }
}

/** The errno names of a write that failed for lack of space. */
const DISK_FULL_CODES: ReadonlySet<string> = new Set(["ENOSPC", "EDQUOT"]);

/** Whether `error` (from Deno, which sets `code` to the errno name) says the disk is full. */
export function isDiskFull(error: unknown): boolean {
  if (error instanceof DiskFullError) return true;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && DISK_FULL_CODES.has(code);
}

/** One system call of a persist that writes or syncs a file, as `DataDirOptions.injectFault` sees it. */
export type DiskIo =
  | {
    readonly kind: "write";
    readonly path: string;
    readonly offset: number;
    readonly bytes: Uint8Array;
  }
  | { readonly kind: "sync"; readonly path: string };

export interface DataDirOptions {
  /**
   * "fsync" (default): fdatasync every batch before reporting it durable. "none": write() only,
   * which survives a killed process but not a power failure; for benchmarks.
   */
  readonly sync?: "fsync" | "none" | undefined;
  /** The size at which a log segment is full; `LOG_SEGMENT_BYTES` by default. */
  readonly logSegmentBytes?: number | undefined;
  /**
   * Whether `open` may load a log that starts after op 1, which `truncateBefore` leaves behind:
   * false by default, since `Replica` replays `DurableState.log` as the log from op 1. A caller
   * that restores a checkpoint first and takes the log's first op-number (`logStartOpNumber`)
   * passes true.
   */
  readonly allowTruncatedLog?: boolean | undefined;
  /** The size below which the log is never rewritten; `LOG_REWRITE_BYTES_MIN` by default. */
  readonly logRewriteBytesMin?: number | undefined;
  /**
   * Told, one line each naming the file and the byte offset, about everything a load found amiss
   * and what it did: a torn tail cut off, damage in the middle of the log, an unreadable
   * superblock slot, writes dropped after a lost superblock write, the log rewritten, the
   * single-file log migrated, a checkpoint write cut short, a checkpoint that does not check out.
   */
  readonly onRepair?: ((message: string) => void) | undefined;
  /**
   * How far ahead of its records the log file is filled with zeros; `LOG_PREALLOCATE_AHEAD_BYTES`
   * by default, 0 to write records only (the file then ends where the records end).
   */
  readonly logPreallocateBytes?: number | undefined;
  /**
   * For tests: called before each write and fdatasync of the log and the superblock slots after
   * the load (persists and the zeros written in advance; a new segment's sync of the full one and
   * of the directory), and of a checkpoint's temporary file and of the directory when a
   * checkpoint is put in place (or staged, for an install) and when an install's rebase deleted
   * the segments it replaced. An error it throws is taken as that system call's error, so that a test can fill the disk (throw an error whose `code` is
   * "ENOSPC") or break it without depending on the machine. Nothing has been written when it
   * throws; to model a short write, it may write a prefix of `bytes` itself first.
   */
  readonly injectFault?: ((io: DiskIo) => void) | undefined;
}

// ---------------------------------------------------------------- checksum

/**
 * A record's checksum covers its segment's number, its file offset and its length as well as its
 * body: a record found at the wrong place (a misdirected write, a segment's bytes in another
 * segment's file, or a record an operation carries inside its bytes) does not check out. The
 * segment number is left out for segment 0, the migrated single-file log, whose records were
 * written before there were segments.
 */
function recordChecksum(segment: number, offset: number, body: Uint8Array): number {
  let state = CRC32C_START;
  if (segment !== LEGACY_SEGMENT_NUMBER) {
    writeUint32Le(SEGMENT_PREFIX, 0, segment % 2 ** 32);
    writeUint32Le(SEGMENT_PREFIX, 4, Math.floor(segment / 2 ** 32));
    state = crc32cUpdate(state, SEGMENT_PREFIX);
  }
  const prefix = CHECKSUM_PREFIX;
  writeUint32Le(prefix, 0, offset % 2 ** 32);
  writeUint32Le(prefix, 4, Math.floor(offset / 2 ** 32));
  writeUint32Le(prefix, 8, body.length);
  return crc32cFinish(crc32cUpdate(crc32cUpdate(state, prefix), body));
}

/** Scratch for `recordChecksum` (used synchronously): a fresh buffer per call costs ~1 µs. */
const CHECKSUM_PREFIX = new Uint8Array(12);
const SEGMENT_PREFIX = new Uint8Array(8);

/** The file name of log segment `number`. */
export function logSegmentFileName(number: number): string {
  return `${LOG_SEGMENT_PREFIX}${String(number).padStart(LOG_SEGMENT_DIGITS, "0")}`;
}

/** The segment number a file name stands for, if it is a segment's name as written. */
function parseLogSegmentFileName(name: string): number | undefined {
  const match = LOG_SEGMENT_PATTERN.exec(name);
  if (match === null) return undefined;
  const number = Number(match[1]);
  return Number.isSafeInteger(number) && logSegmentFileName(number) === name ? number : undefined;
}

function writeUint32Le(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value & 0xff;
  bytes[at + 1] = (value >>> 8) & 0xff;
  bytes[at + 2] = (value >>> 16) & 0xff;
  bytes[at + 3] = (value >>> 24) & 0xff;
}

/**
 * Every record is written as soon as it is encoded (`writeAll` is synchronous), so records are
 * encoded into one buffer that the process reuses.
 */
const recordScratch = new ScratchBuffer(1024 * 1024);

// ---------------------------------------------------------------- encoding

// Plain msgpack: records, structured cloning and extension types are msgpackr extensions.
const unpackr = new Unpackr({
  useRecords: false,
  moreTypes: false,
  structuredClone: false,
  mapsAsObjects: false,
});

/**
 * A run: what one effect or several consecutive ones do to the log: keep the entries before
 * `fromOpNumber`, then append `entries`. `superblockSequence` is the sequence-number of the
 * superblock write that must be durable for the run to count. (Runs were called segments before
 * the log had segment files; the bytes are the same.)
 */
interface Run {
  readonly superblockSequence: number;
  readonly fromOpNumber: number;
  readonly commitNumber: number;
  readonly entries: readonly LogEntry[];
}

/**
 * A record: u32 magic, u32 body length, u32 checksum (see `recordChecksum`), then the body, the
 * msgpack of `[kind, [run, ...]]` (`RECORD_KIND_BATCH` or `RECORD_KIND_BASE`) where a run is
 * `[superblockSequence, fromOpNumber, commitNumber, [entry, ...]]` and an entry is
 * `[opNumber, viewNumber, clientId, requestNumber, timestamp, operation]`.
 *
 * Returns a view of a buffer that the next call reuses: write the record before encoding another.
 */
function encodeRecord(
  segmentNumber: number,
  offset: number,
  runs: readonly Run[],
  fileName: string,
  kind: number = RECORD_KIND_BATCH,
): Uint8Array {
  // Written by hand (src/lib/msgpack_fast.ts) in the layout the load decodes with msgpackr: a
  // record is written on every persist, and msgpackr would first need the nested arrays built.
  let bodyBytes = sizeArrayHeader(2) + sizeUint(kind) +
    sizeArrayHeader(runs.length);
  for (const run of runs) {
    bodyBytes += sizeArrayHeader(RUN_FIELD_COUNT) + sizeUint(run.superblockSequence) +
      sizeUint(run.fromOpNumber) + sizeUint(run.commitNumber) +
      sizeArrayHeader(run.entries.length);
    for (const entry of run.entries) bodyBytes += sizeEntry(entry);
  }
  // NaN if a number is not a non-negative safe integer: the core never makes one.
  assert(bodyBytes >= 0, () => `${fileName}: a record holds a number it cannot encode`);
  if (bodyBytes > RECORD_BODY_BYTES_MAX) {
    throw new DataDirError(
      `${fileName}: a batch of ${bodyBytes} bytes exceeds the limit of ${RECORD_BODY_BYTES_MAX}`,
    );
  }
  const record = recordScratch.take(RECORD_HEADER_BYTES + bodyBytes);
  let p = writeArrayHeader(record, RECORD_HEADER_BYTES, 2);
  p = writeUint(record, p, kind);
  p = writeArrayHeader(record, p, runs.length);
  for (const run of runs) {
    p = writeArrayHeader(record, p, RUN_FIELD_COUNT);
    p = writeUint(record, p, run.superblockSequence);
    p = writeUint(record, p, run.fromOpNumber);
    p = writeUint(record, p, run.commitNumber);
    p = writeArrayHeader(record, p, run.entries.length);
    for (const entry of run.entries) p = writeEntry(record, p, entry);
  }
  assert(
    p === record.length,
    () => `${fileName}: record encoding wrote ${p} of ${record.length} bytes`,
  );
  writeUint32Le(record, 0, RECORD_MAGIC);
  writeUint32Le(record, 4, bodyBytes);
  writeUint32Le(
    record,
    8,
    recordChecksum(segmentNumber, offset, record.subarray(RECORD_HEADER_BYTES)),
  );
  return record;
}

/** A record that checks out but does not decode: corruption or a bug, never a crash. */
class InvalidRecord extends Error {}

function invalid(reason: string): never {
  throw new InvalidRecord(reason);
}

/** msgpackr decodes integers beyond 32 bits as floats or bigints, depending on the encoder. */
function decodeCount(value: unknown, what: string): number {
  const number = typeof value === "bigint" ? Number(value) : value;
  if (typeof number !== "number" || !Number.isSafeInteger(number) || number < 0) {
    invalid(`${what} is not a non-negative integer`);
  }
  return number;
}

function decodeEntry(value: unknown, opNumber: number): LogEntry {
  if (!Array.isArray(value) || value.length !== ENTRY_FIELD_COUNT) {
    invalid(`the entry for op ${opNumber} is not an array of ${ENTRY_FIELD_COUNT}`);
  }
  const [op, view, client, request, timestamp, operation] = value as unknown[];
  if (decodeCount(op, "an op-number") !== opNumber) {
    invalid(`holds op ${String(op)} where op ${opNumber} belongs`);
  }
  const timestampNumber = typeof timestamp === "bigint" ? Number(timestamp) : timestamp;
  if (typeof timestampNumber !== "number" || !Number.isFinite(timestampNumber)) {
    invalid(`the timestamp of op ${opNumber} is not a number`);
  }
  if (!(operation instanceof Uint8Array)) invalid(`the operation of op ${opNumber} is not bytes`);
  return {
    opNumber,
    viewNumber: decodeCount(view, `the view-number of op ${opNumber}`),
    clientId: decodeCount(client, `the client-id of op ${opNumber}`),
    requestNumber: decodeCount(request, `the request-number of op ${opNumber}`),
    // A plain view (msgpackr hands back a Node Buffer) into the read window, not a copy: the
    // replica packs committed entries into its own arenas as it replays them, after which the
    // window is garbage. A copy each would cost an allocation per entry, and the allocator keeps
    // the memory of a million small ones long after they are freed.
    operation: new Uint8Array(operation.buffer, operation.byteOffset, operation.byteLength),
    timestamp: timestampNumber,
  };
}

function decodeRun(value: unknown): Run {
  if (!Array.isArray(value) || value.length !== RUN_FIELD_COUNT) {
    invalid(`holds a run that is not an array of ${RUN_FIELD_COUNT}`);
  }
  const [sequence, from, commit, entries] = value as unknown[];
  const fromOpNumber = decodeCount(from, "a run's first op-number");
  if (fromOpNumber < 1) invalid("holds a run that starts at op 0");
  if (!Array.isArray(entries)) invalid("holds a run whose entries are not an array");
  return {
    superblockSequence: decodeCount(sequence, "a run's superblock sequence-number"),
    fromOpNumber,
    commitNumber: decodeCount(commit, "a run's commit-number"),
    entries: (entries as unknown[]).map((entry, index) => decodeEntry(entry, fromOpNumber + index)),
  };
}

/** A record's runs, and whether it is a base record (`RECORD_KIND_BASE`). */
interface DecodedRecord {
  readonly base: boolean;
  readonly runs: Run[];
}

function decodeRecordBody(body: Uint8Array): DecodedRecord {
  let value: unknown;
  try {
    value = unpackr.unpack(body);
  } catch (error) {
    invalid(`is not msgpack (${error instanceof Error ? error.message : String(error)})`);
  }
  if (
    !Array.isArray(value) || value.length !== 2 ||
    (value[0] !== RECORD_KIND_BATCH && value[0] !== RECORD_KIND_BASE)
  ) {
    invalid("is not a batch record");
  }
  const runs: unknown = value[1];
  if (!Array.isArray(runs) || runs.length === 0) invalid("holds no runs");
  return { base: value[0] === RECORD_KIND_BASE, runs: (runs as unknown[]).map(decodeRun) };
}

function encodeSuperblock(sequence: number, superblock: Superblock): Uint8Array {
  const bytes = new Uint8Array(SUPERBLOCK_BYTES);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, SUPERBLOCK_MAGIC, true);
  view.setUint32(4, SUPERBLOCK_VERSION, true);
  view.setBigUint64(8, BigInt(sequence), true);
  view.setBigUint64(16, BigInt(superblock.viewNumber), true);
  view.setBigUint64(24, BigInt(superblock.lastNormalView), true);
  view.setUint32(32, superblock.recovering ? 1 : 0, true);
  view.setBigUint64(36, BigInt(superblock.epoch), true);
  view.setUint32(44, crc32c(bytes.subarray(0, SUPERBLOCK_CHECKED_BYTES)), true);
  return bytes;
}

interface SuperblockSlot {
  readonly sequence: number;
  readonly superblock: Superblock;
}

/** The slot's contents, or why they are not valid. */
function decodeSuperblock(bytes: Uint8Array, slot: number): SuperblockSlot | string {
  if (bytes.length !== SUPERBLOCK_BYTES) return `is ${bytes.length} bytes, not ${SUPERBLOCK_BYTES}`;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0, true) !== SUPERBLOCK_MAGIC) return "lacks the superblock magic";
  if (view.getUint32(44, true) !== crc32c(bytes.subarray(0, SUPERBLOCK_CHECKED_BYTES))) {
    return "has a bad checksum";
  }
  const version = view.getUint32(4, true);
  if (version !== SUPERBLOCK_VERSION) return `has version ${version}, not ${SUPERBLOCK_VERSION}`;
  const [sequence, viewNumber, lastNormalView, epoch] = [8, 16, 24, 36].map((at) =>
    Number(view.getBigUint64(at, true))
  ) as [number, number, number, number];
  if (![sequence, viewNumber, lastNormalView, epoch].every(Number.isSafeInteger)) {
    return "holds a number beyond 2^53";
  }
  if (sequence % 2 !== slot) {
    return `holds sequence-number ${sequence}, which belongs in the other slot`;
  }
  const recovering = view.getUint32(32, true);
  if (recovering > 1) return `has recovering flag ${recovering}`;
  if (lastNormalView > viewNumber) return "has a last normal view after its view";
  return {
    sequence,
    superblock: { epoch, viewNumber, lastNormalView, recovering: recovering === 1 },
  };
}

// ---------------------------------------------------------------- file helpers

/** §7 The membership in the directory, if one was persisted; a damaged file is an error. */
async function readMembership(path: string): Promise<Membership | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(`${path}/${MEMBERSHIP_FILE}`);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw new DataDirError(`${path}/${MEMBERSHIP_FILE}: cannot read it (${describe(error)})`);
  }
  const membership = decodeMembership(bytes);
  if (typeof membership === "string") {
    throw new DataDirError(`${path}/${MEMBERSHIP_FILE}: ${membership}`);
  }
  return membership;
}

/**
 * Writes are synchronous: a write into the page cache takes microseconds, far less than the round
 * trip through the runtime's thread pool that an asynchronous write costs on every persist. Only
 * the fsync, which can take a millisecond, is asynchronous (the event loop keeps serving meanwhile).
 */
function writeAll(file: Deno.FsFile, offset: number, bytes: Uint8Array): void {
  // Appending where the last write ended needs no seek: one system call less per persist.
  if (filePositions.get(file) !== offset) {
    filePositions.delete(file);
    file.seekSync(offset, Deno.SeekMode.Start);
  }
  let written = 0;
  try {
    while (written < bytes.length) written += file.writeSync(bytes.subarray(written));
  } catch (error) {
    filePositions.delete(file);
    throw error;
  }
  filePositions.set(file, offset + bytes.length);
}

/** Where each file's position is known to be (after our own writes); reads forget it. */
const filePositions = new WeakMap<Deno.FsFile, number>();

/** Reads `length` bytes at `offset`, fewer only at the end of the file (`_files.ts`). */
function readAt(file: Deno.FsFile, offset: number, length: number): Promise<Uint8Array> {
  filePositions.delete(file); // The read moves the file's position.
  return readAtShared(file, offset, length);
}

/** Sequential reads through a window of `READ_CHUNK_BYTES`, to spare a system call per record. */
class WindowReader {
  readonly #file: Deno.FsFile;
  readonly #size: number;
  #window: Uint8Array = new Uint8Array(0);
  #windowStart = 0;

  constructor(file: Deno.FsFile, size: number) {
    this.#file = file;
    this.#size = size;
  }

  /** The bytes [offset, offset + length), which must lie in the file; valid until overwritten. */
  async read(offset: number, length: number): Promise<Uint8Array> {
    const start = offset - this.#windowStart;
    if (start >= 0 && start + length <= this.#window.length) {
      return this.#window.subarray(start, start + length);
    }
    const windowLength = Math.min(Math.max(length, READ_CHUNK_BYTES), this.#size - offset);
    // A fresh array each time: subarrays handed out earlier stay intact.
    this.#window = await readAt(this.#file, offset, windowLength);
    this.#windowStart = offset;
    if (this.#window.length < length) throw new Error("the file shrank while it was read");
    return this.#window.subarray(0, length);
  }
}

/** Whether a whole record that checks out starts at `offset` of segment `segment`. */
async function isRecordAt(
  segment: number,
  file: Deno.FsFile,
  size: number,
  offset: number,
): Promise<boolean> {
  if (offset + RECORD_HEADER_BYTES > size) return false;
  const header = await readAt(file, offset, RECORD_HEADER_BYTES);
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  const length = view.getUint32(4, true);
  if (view.getUint32(0, true) !== RECORD_MAGIC || length > RECORD_BODY_BYTES_MAX) return false;
  if (offset + RECORD_HEADER_BYTES + length > size) return false;
  const body = await readAt(file, offset + RECORD_HEADER_BYTES, length);
  return recordChecksum(segment, offset, body) === view.getUint32(8, true);
}

/**
 * The offset of the first record that checks out after `offset`, if any. A crash tears only the
 * last batch, the only record after which nothing valid can follow; anything valid further on
 * means the bad record is damage, not a torn write.
 */
async function findRecordAfter(
  segment: number,
  file: Deno.FsFile,
  size: number,
  offset: number,
): Promise<number | undefined> {
  const magic = new Uint8Array(4);
  new DataView(magic.buffer).setUint32(0, RECORD_MAGIC, true);
  let position = offset + 1;
  while (position + RECORD_HEADER_BYTES <= size) {
    const chunk = await readAt(file, position, Math.min(READ_CHUNK_BYTES, size - position));
    for (let index = 0; index + magic.length <= chunk.length; index++) {
      if (
        chunk[index] === magic[0] && chunk[index + 1] === magic[1] &&
        chunk[index + 2] === magic[2] && chunk[index + 3] === magic[3] &&
        await isRecordAt(segment, file, size, position + index)
      ) {
        return position + index;
      }
    }
    // Chunks overlap by the magic's length less one, so a magic across a boundary is seen.
    position += chunk.length - (magic.length - 1);
  }
  return undefined;
}

/**
 * Whether the first record of segment `number` is a whole base record that checks out
 * (`RECORD_KIND_BASE`): a base record is durable before the segments it replaces are deleted, so
 * one that checks out makes them dead, whether or not its persist was reported durable.
 */
async function startsWithBaseRecord(path: string, number: number): Promise<boolean> {
  const fileName = `${path}/${logSegmentFileName(number)}`;
  let file: Deno.FsFile;
  try {
    file = await Deno.open(fileName, { read: true });
  } catch (error) {
    throw new DataDirError(`${fileName}: cannot open (${describe(error)})`, { cause: error });
  }
  try {
    const size = (await file.stat()).size;
    const prefix = RECORD_HEADER_BYTES + BASE_BODY_PREFIX.length;
    if (size < prefix) return false;
    const head = await readAt(file, 0, prefix);
    const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
    const length = view.getUint32(4, true);
    if (
      view.getUint32(0, true) !== RECORD_MAGIC || length > RECORD_BODY_BYTES_MAX ||
      RECORD_HEADER_BYTES + length > size ||
      BASE_BODY_PREFIX.some((byte, index) => head[RECORD_HEADER_BYTES + index] !== byte)
    ) {
      return false;
    }
    const body = await readAt(file, RECORD_HEADER_BYTES, length);
    return recordChecksum(number, 0, body) === view.getUint32(8, true);
  } catch (error) {
    throw new DataDirError(`${fileName}: cannot load (${describe(error)})`, { cause: error });
  } finally {
    file.close();
  }
}

/** How long `open` keeps trying to take the directory's lock before it calls it in use. */
const LOCK_WAIT_MS = 200;
const LOCK_RETRY_MS = 10;

/**
 * Takes the exclusive lock, trying again for `LOCK_WAIT_MS`. The lock is an flock(2): a process
 * of ours that forks a child (to spawn any program) lends the child its open files until the
 * child's exec closes them, so a lock released a moment ago can still be held for that moment.
 * A server really running on the directory holds it for good, and is still reported.
 */
async function tryLockPatiently(lock: Deno.FsFile): Promise<boolean> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    if (await lock.tryLock(true)) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, LOCK_RETRY_MS));
  }
}

/**
 * How many zero bytes end a record that a crash tore in the zeros written in advance. A record
 * ends with the last bytes of an operation, which are zeros this long only by rare chance.
 */
const TORN_ZEROS_BYTES_MIN = 16;

/** Whether `body` ends in `TORN_ZEROS_BYTES_MIN` zero bytes: a write that did not reach its end. */
function endsInZeros(body: Uint8Array): boolean {
  if (body.length < TORN_ZEROS_BYTES_MIN) return false;
  for (let i = body.length - TORN_ZEROS_BYTES_MIN; i < body.length; i++) {
    if (body[i] !== 0) return false;
  }
  return true;
}

/** Whether every byte of `file` from `offset` to `size` is zero (space written in advance). */
async function isZeroFrom(file: Deno.FsFile, offset: number, size: number): Promise<boolean> {
  let position = offset;
  while (position < size) {
    const chunk = await readAt(file, position, Math.min(READ_CHUNK_BYTES, size - position));
    if (chunk.length === 0) return false;
    for (let index = 0; index < chunk.length; index++) if (chunk[index] !== 0) return false;
    position += chunk.length;
  }
  return true;
}

/** The names in directory `path`. */
async function listDirectory(path: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(path)) names.push(entry.name);
  return names;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** Closes `file` on an error path, where it may already be closed. */
function closeQuietly(file: Deno.FsFile): void {
  try {
    file.close();
  } catch {
    // Already closed: nothing to release.
  }
}

// ---------------------------------------------------------------- merging a batch

/** Consecutive log effects folded into one run. */
class RunBuilder {
  fromOpNumber: number;
  entries: LogEntry[];
  commitNumber: number;

  constructor(fromOpNumber: number, entries: readonly LogEntry[], commitNumber: number) {
    this.fromOpNumber = fromOpNumber;
    this.entries = entries.slice();
    this.commitNumber = commitNumber;
  }

  /** Apply a later effect; its `fromOpNumber` is at most one past this run's end. */
  add(fromOpNumber: number, entries: readonly LogEntry[], commitNumber: number): void {
    if (fromOpNumber <= this.fromOpNumber) {
      this.fromOpNumber = fromOpNumber;
      this.entries = entries.slice();
    } else {
      this.entries.length = fromOpNumber - this.fromOpNumber;
      for (const entry of entries) this.entries.push(entry);
    }
    this.commitNumber = commitNumber;
  }
}

// ---------------------------------------------------------------- the data directory

/** A log segment's bookkeeping. */
interface LogSegment {
  readonly number: number;
  /** Where its records end (for the last segment, `DataDir.#logBytes` is the live value). */
  bytes: number;
  /** How many records it holds. */
  records: number;
  /**
   * The highest op-number any of its records ever wrote, 0 if none: every entry of this segment
   * that a load could still use lies at or below it (later records may have replaced some).
   */
  maxOpNumber: number;
  /** The lowest `fromOpNumber` of its runs, Infinity if none. */
  minFromOpNumber: number;
}

function emptySegment(number: number): LogSegment {
  return { number, bytes: 0, records: 0, maxOpNumber: 0, minFromOpNumber: Infinity };
}

/** Adds a record of `runs` to the bookkeeping of the segment that holds it. */
function countRecord(segment: LogSegment, runs: readonly Run[]): void {
  segment.records++;
  for (const run of runs) {
    segment.maxOpNumber = Math.max(segment.maxOpNumber, run.fromOpNumber + run.entries.length - 1);
    segment.minFromOpNumber = Math.min(segment.minFromOpNumber, run.fromOpNumber);
  }
}

/**
 * The op-number of the first entry a load of these segments yields: the lowest `fromOpNumber` of
 * their runs (a run from below the log's start replaces the whole log), or `opNumber + 1` when
 * they hold none.
 */
function logStartOf(segments: readonly LogSegment[], opNumber: number): number {
  let start = Infinity;
  for (const segment of segments) start = Math.min(start, segment.minFromOpNumber);
  return start === Infinity ? opNumber + 1 : start;
}

interface LoadedLog {
  /** The entries from op `start` on. */
  readonly log: LogEntry[];
  /** The op-number of `log[0]`: 1 unless segments were deleted by `truncateBefore`. */
  readonly start: number;
  readonly commitNumber: number;
  /** The segments, in order; the last one is `file`. */
  readonly segments: LogSegment[];
  /** The last segment, open for reading and writing. */
  readonly file: Deno.FsFile;
  /** Where the last segment's records end, once repaired: the next record goes here. */
  readonly size: number;
  /** The size of the last segment's file: `size` plus the preallocated zeros after the records. */
  readonly allocated: number;
  /** False when the log was damaged (see `#loadLog`): it may lack entries this replica acknowledged. */
  readonly trusted: boolean;
  /** The op-numbers of the checkpoints its base records rebased the log onto (`RECORD_KIND_BASE`). */
  readonly rebasedOnto: ReadonlySet<number>;
}

/** What `truncateBefore` did. */
export interface LogTruncation {
  /** The segment files deleted, in order. */
  readonly deleted: readonly string[];
  /** The op-number of the first entry a load now yields (`DataDir.logStartOpNumber`). */
  readonly logStartOpNumber: number;
}

export class DataDir {
  readonly #path: string;
  readonly #sync: boolean;
  readonly #lock: Deno.FsFile;
  /** The last log segment, where records go. */
  #log: Deno.FsFile;
  /** Every log segment, in order; the last one is `#log`. */
  #segments: LogSegment[];
  readonly #slots: readonly [Deno.FsFile, Deno.FsFile];
  /** The op-number of the last entry in the durable log. */
  #opNumber: number;
  /** Where the last segment's records end, where the next record goes. */
  #logBytes: number;
  /** The size of the last segment's file: records, then zeros written in advance. */
  #logAllocated: number;
  /** How far ahead of the records zeros are written (`DataDirOptions.logPreallocateBytes`). */
  #preallocateBytes = LOG_PREALLOCATE_AHEAD_BYTES;
  /** The size at which a segment is full (`DataDirOptions.logSegmentBytes`). */
  #segmentBytes = LOG_SEGMENT_BYTES;
  /** The sequence-number of the durable superblock. */
  #superblockSequence: number;
  #inFlight: Promise<number> | undefined;
  #truncating: Promise<LogTruncation> | undefined;
  /** The checkpoint being written, if any (one at a time). */
  #checkpointWriter: Promise<CheckpointWriter> | undefined;
  /** The op-number of the newest checkpoint known valid: written here, or loaded. */
  #checkpointOpNumber: number | undefined;
  /**
   * The checkpoints in place that this directory wrote, installed or loaded, by op-number, at
   * most `CHECKPOINTS_KEPT` (as on disk), each file opened once it is asked for
   * (`openCheckpoint`).
   */
  readonly #checkpoints = new Map<number, CheckpointFile>();
  /** Checkpoint files being closed: `close` waits for them. */
  readonly #closing = new Set<Promise<void>>();
  /**
   * Per op-number, the checkpoint write in flight (the node's own, or an install): two writes of
   * the same op-number would share a temporary file, so the second waits.
   */
  readonly #checkpointWrites = new Map<number, Promise<void>>();
  /** An installed checkpoint staged, until the record that rebases the log onto it is durable. */
  #staged: CheckpointInfo | undefined;
  /** Set by `rebaseOnto`: the checkpoint in place the next record rebases the log onto. */
  #rebaseOnto: number | undefined;
  /** The persists up to this id are durable, from a batch that failed after them (`persist`). */
  #resumeAfterId: number | undefined;
  /** `DataDirOptions.injectFault`. */
  #injectFault: ((io: DiskIo) => void) | undefined;
  /** `DataDirOptions.onRepair`. */
  #onRepair: ((message: string) => void) | undefined;
  #closed = false;

  private constructor(
    path: string,
    sync: boolean,
    lock: Deno.FsFile,
    slots: readonly [Deno.FsFile, Deno.FsFile],
    loaded: LoadedLog,
    opNumber: number,
    superblockSequence: number,
  ) {
    this.#path = path;
    this.#sync = sync;
    this.#lock = lock;
    this.#log = loaded.file;
    this.#segments = loaded.segments;
    this.#slots = slots;
    this.#opNumber = opNumber;
    this.#logBytes = loaded.size;
    this.#logAllocated = loaded.allocated;
    this.#superblockSequence = superblockSequence;
  }

  get path(): string {
    return this.#path;
  }

  /**
   * The op-number of the first entry the durable log holds, the first a load yields
   * (`DurableState.log[0]`): 1 until `truncateBefore` deleted segments. A load's `log[i]` is op
   * `logStartOpNumber + i`, and the log ends at op `logStartOpNumber - 1 + log.length`.
   */
  get logStartOpNumber(): number {
    return logStartOf(this.#segments, this.#opNumber);
  }

  /** The log's segment files, in order (the last is the one records go to). */
  get logSegmentFiles(): readonly string[] {
    return this.#segments.map((segment) => logSegmentFileName(segment.number));
  }

  #segmentPath(number: number): string {
    return `${this.#path}/${logSegmentFileName(number)}`;
  }

  /** The segment records go to. */
  get #current(): LogSegment {
    return this.#segments.at(-1)!;
  }

  /**
   * Writes one chunk of zeros at `allocated`, the end of the last segment's file, if the room after
   * the records (which end at `logBytes`) is below the preallocation and the chunk stays within the
   * segment's size; returns where the file ends then. Not synced here: the caller's next fdatasync
   * makes the zeros durable together with the record that follows. A full disk is no error here:
   * the zeros only spare later fdatasyncs a metadata flush, and the next record may still fit in
   * the room written before. Changes no bookkeeping: the caller records the result once its batch
   * is durable.
   */
  #preallocateStep(logBytes: number, allocated: number): number {
    if (allocated - logBytes >= this.#preallocateBytes) return allocated;
    // Zeros past the segment's size would only be cut off when the next segment starts.
    if (allocated + ZERO_CHUNK.length > this.#segmentBytes) return allocated;
    try {
      this.#write(this.#log, this.#segmentPath(this.#current.number), allocated, ZERO_CHUNK);
    } catch (error) {
      if (isDiskFull(error)) return allocated;
      throw error;
    }
    return allocated + ZERO_CHUNK.length;
  }

  /** `writeAll`, after the test hook `DataDirOptions.injectFault`. */
  #write(file: Deno.FsFile, path: string, offset: number, bytes: Uint8Array): void {
    this.#injectFault?.({ kind: "write", path, offset, bytes });
    writeAll(file, offset, bytes);
  }

  /** fdatasync unless the directory runs without sync, after the test hook. */
  async #syncData(file: Deno.FsFile, path: string): Promise<void> {
    if (!this.#sync) return;
    this.#injectFault?.({ kind: "sync", path });
    await file.syncData();
  }

  /**
   * Starts the next segment: cuts the last one to where its records end (zeros written ahead, or
   * what a failed write left past them, would read as damage once another segment follows) and
   * syncs it, then creates the next one and syncs the directory, so that a record in it counts
   * only once its file is durable. The bookkeeping moves to the new segment only once all of that
   * succeeded; after a failure, the next attempt starts the same segment again.
   */
  async #startSegment(): Promise<void> {
    const full = this.#current;
    const fullPath = this.#segmentPath(full.number);
    await this.#log.truncate(this.#logBytes);
    this.#logAllocated = this.#logBytes;
    if (this.#sync) {
      this.#injectFault?.({ kind: "sync", path: fullPath });
      await this.#log.sync();
    }
    const segment = emptySegment(full.number + 1);
    const file = await Deno.open(this.#segmentPath(segment.number), {
      read: true,
      write: true,
      create: true,
      truncate: true,
    });
    try {
      if (this.#sync) {
        this.#injectFault?.({ kind: "sync", path: this.#path });
        await syncDirectory(this.#path);
      }
    } catch (error) {
      file.close();
      throw error;
    }
    full.bytes = this.#logBytes;
    this.#log.close();
    this.#log = file;
    this.#segments.push(segment);
    this.#logBytes = 0;
    this.#logAllocated = 0;
  }

  /**
   * Opens the directory at `path`, creating it if missing, and loads what it holds: `undefined`
   * for a new directory (a new replica), otherwise the durable state. Repairs a log torn by a
   * crash; for a log damaged in the middle, loads the intact prefix with `logTrusted: false` (see
   * the module's comment). Finishes an install a crash interrupted, or forgets it (see the module,
   * "Installing a checkpoint"). The state's `logStartOpNumber` is set when the log starts after
   * op 1. Throws DataDirError when the directory cannot be used safely (no
   * readable superblock, records that check out but make no sense, a log truncated by
   * `truncateBefore` without `allowTruncatedLog`) or when another process has it open.
   */
  static async open(
    path: string,
    options: DataDirOptions = {},
  ): Promise<{ dataDir: DataDir; state: DurableState | undefined }> {
    const sync = (options.sync ?? "fsync") === "fsync";
    const segmentBytes = options.logSegmentBytes ?? LOG_SEGMENT_BYTES;
    assert(
      Number.isSafeInteger(segmentBytes) && segmentBytes >= 1,
      () => `logSegmentBytes must be a positive integer, got ${segmentBytes}`,
    );
    const created = !(await exists(path));
    await Deno.mkdir(path, { recursive: true });
    const lock = await Deno.open(`${path}/${LOCK_FILE}`, {
      read: true,
      write: true,
      create: true,
    });
    const opened: Deno.FsFile[] = [lock];
    try {
      if (!(await tryLockPatiently(lock))) {
        throw new DataDirError(`${path} is in use by another process`);
      }
      // Leftovers of a crash during a rename; the renamed-to files are intact.
      await removeIfPresent(`${path}/${SUPERBLOCK_TMP_FILE}`);
      await removeIfPresent(`${path}/${LOG_TMP_FILE}`);
      await DataDir.#migrateSingleFileLog(path, sync, options.onRepair);
      const fresh = await DataDir.#initialiseIfNew(path, sync, created);
      // Never created here: a log missing beside a superblock is lost data, not a new log.
      const segmentNumbers = await DataDir.#listSegments(path);
      const slotA = await Deno.open(`${path}/${SUPERBLOCK_SLOT_FILES[0]}`, {
        read: true,
        write: true,
      });
      opened.push(slotA);
      const slotBExisted = await exists(`${path}/${SUPERBLOCK_SLOT_FILES[1]}`);
      const slotB = await Deno.open(`${path}/${SUPERBLOCK_SLOT_FILES[1]}`, {
        read: true,
        write: true,
        create: true,
      });
      opened.push(slotB);
      if (!slotBExisted && sync) await syncDirectory(path);
      const slots = [slotA, slotB] as const;
      let current = await DataDir.#loadSuperblock(path, slots, options.onRepair);
      /**
       * Makes "this replica is recovering" durable, for a damaged log: written before the log is
       * cut, so that a crash in between cannot leave a clean-looking log and a superblock that
       * trusts it. The core writes the same flag when it starts recovery (`Superblock.recovering`).
       */
      const markRecovering = async (): Promise<void> => {
        if (current.superblock.recovering) return;
        const next: SuperblockSlot = {
          sequence: current.sequence + 1,
          superblock: { ...current.superblock, recovering: true },
        };
        const slot = slots[next.sequence % 2]!;
        writeAll(slot, 0, encodeSuperblock(next.sequence, next.superblock));
        if (sync) await slot.syncData();
        current = next;
      };
      const loaded = await DataDir.#loadLog(
        path,
        segmentNumbers,
        current.sequence,
        sync,
        options.onRepair,
        markRecovering,
      ).catch((error: unknown) => {
        if (error instanceof DataDirError || error instanceof AssertionError) throw error;
        throw new DataDirError(`${path}: cannot load the log (${describe(error)})`);
      });
      opened.push(loaded.file);
      const opNumber = loaded.start - 1 + loaded.log.length;
      if (loaded.start > 1 && options.allowTruncatedLog !== true) {
        throw new DataDirError(
          `${path}/${logSegmentFileName(loaded.segments[0]!.number)}: the log starts at op ` +
            `${loaded.start}, truncated after a checkpoint, and the caller did not pass ` +
            "allowTruncatedLog: a replica that replays the log from op 1 cannot use it",
        );
      }
      await removeUnfinishedCheckpoints(path, sync, options.onRepair);
      await resolveStagedCheckpoints(path, loaded.rebasedOnto, sync, options.onRepair);
      const dataDir = new DataDir(path, sync, lock, slots, loaded, opNumber, current.sequence);
      dataDir.#segmentBytes = segmentBytes;
      await dataDir.#rewriteIfBloated(
        loaded,
        options.logRewriteBytesMin ?? LOG_REWRITE_BYTES_MIN,
        options.onRepair,
      );
      const preallocate = options.logPreallocateBytes ?? LOG_PREALLOCATE_AHEAD_BYTES;
      assert(
        Number.isSafeInteger(preallocate) && preallocate >= 0,
        () => `logPreallocateBytes must be a non-negative integer, got ${preallocate}`,
      );
      dataDir.#preallocateBytes = preallocate;
      dataDir.#injectFault = options.injectFault;
      dataDir.#onRepair = options.onRepair;
      // Room for the first records, made durable now rather than on the first persist. On a full
      // disk there is less room or none, which costs speed only: `open` still succeeds, and the
      // replica finds out about the disk when a persist fails.
      const allocatedBefore = dataDir.#logAllocated;
      for (;;) {
        const allocated = dataDir.#preallocateStep(dataDir.#logBytes, dataDir.#logAllocated);
        if (allocated === dataDir.#logAllocated) break;
        dataDir.#logAllocated = allocated;
      }
      if (dataDir.#logAllocated > allocatedBefore && sync) {
        await dataDir.#log.sync().catch((error: unknown) => {
          if (!isDiskFull(error)) throw error;
        });
      }
      const membership = await readMembership(path);
      const state: DurableState | undefined = fresh ? undefined : {
        superblock: current.superblock,
        ...(membership !== undefined ? { membership } : {}),
        // Absent means op 1 (`DurableState`): a log never truncated loads as it always did.
        ...(loaded.start > 1 ? { logStartOpNumber: loaded.start } : {}),
        log: loaded.log,
        commitNumber: Math.min(loaded.commitNumber, opNumber),
        logTrusted: loaded.trusted,
      };
      return { dataDir, state };
    } catch (error) {
      // Closing the lock file releases the lock.
      for (const file of opened.reverse()) closeQuietly(file);
      throw error;
    }
  }

  /**
   * Migrates a directory of the single-file format: its `log` becomes segment 0 by one rename
   * (atomic: a crash leaves `log` or `log.000000`, never both and never neither), synced before
   * anything is appended after it. The records stay as they are; their checksums are those of
   * segment 0. The new segments then go in `log.000001` and on. An older version that opens the
   * directory afterwards refuses it (it finds no `log`), rather than starting a new log.
   */
  static async #migrateSingleFileLog(
    path: string,
    sync: boolean,
    onRepair: ((message: string) => void) | undefined,
  ): Promise<void> {
    const legacy = `${path}/${LEGACY_LOG_FILE}`;
    if (!(await exists(legacy))) return;
    const segments = await DataDir.#listSegments(path, false);
    if (segments.length > 0) {
      throw new DataDirError(
        `${legacy}: a single-file log beside the log segments ${
          segments.map(logSegmentFileName).join(", ")
        }: which one holds the log is unknown`,
      );
    }
    const renamed = logSegmentFileName(LEGACY_SEGMENT_NUMBER);
    await Deno.rename(legacy, `${path}/${renamed}`);
    if (sync) await syncDirectory(path);
    onRepair?.(
      `${legacy}: the single-file log of an older version: renamed to ${renamed}, the first ` +
        "segment of the log, its records unchanged",
    );
  }

  /**
   * The numbers of the log's segments, in order. They must run without a gap (segments are
   * deleted from the first on, one at a time): a missing one is lost data. With `required`, a
   * directory without any is an error too.
   */
  static async #listSegments(path: string, required = true): Promise<number[]> {
    const numbers: number[] = [];
    for (const name of await listDirectory(path)) {
      const number = parseLogSegmentFileName(name);
      if (number !== undefined) numbers.push(number);
    }
    numbers.sort((a, b) => a - b);
    for (let index = 1; index < numbers.length; index++) {
      if (numbers[index] !== numbers[index - 1]! + 1) {
        throw new DataDirError(
          `${path}/${logSegmentFileName(numbers[index - 1]! + 1)}: missing, yet ${
            logSegmentFileName(numbers[index - 1]!)
          } and ${logSegmentFileName(numbers[index]!)} exist: part of the log is lost`,
        );
      }
    }
    if (required && numbers.length === 0) {
      throw new DataDirError(
        `${path}/${logSegmentFileName(FIRST_SEGMENT_NUMBER)}: cannot open (no log segment ` +
          "beside the superblock: the log is lost)",
      );
    }
    return numbers;
  }

  /**
   * Writes the first superblock unless the directory has one, and tells whether the directory
   * is new. `superblock.a` is created only here, through a rename of a synced file, so it exists
   * and is valid in every directory that `open` ever returned.
   */
  static async #initialiseIfNew(path: string, sync: boolean, created: boolean): Promise<boolean> {
    if (await exists(`${path}/${SUPERBLOCK_SLOT_FILES[0]}`)) return false;
    // `superblock.b` is created after `superblock.a`, and written from the second superblock write
    // on: a replica whose `b` holds a superblock promised views. Starting it afresh in view 0
    // would let it vote in a view it promised away.
    const slotBPath = `${path}/${SUPERBLOCK_SLOT_FILES[1]}`;
    const slotBBytes = (await exists(slotBPath)) ? (await Deno.stat(slotBPath)).size : 0;
    if (slotBBytes > 0) {
      throw new DataDirError(
        `${path}/${SUPERBLOCK_SLOT_FILES[0]}: missing, yet ${slotBPath} holds ${slotBBytes} bytes`,
      );
    }
    const segments = await DataDir.#listSegments(path, false);
    for (const number of segments) {
      const segmentPath = `${path}/${logSegmentFileName(number)}`;
      const bytes = (await Deno.stat(segmentPath)).size;
      if (bytes > 0) {
        throw new DataDirError(
          `${path}/${SUPERBLOCK_SLOT_FILES[0]}: missing, yet ${segmentPath} holds ${bytes} bytes`,
        );
      }
    }
    // The log's directory entry is durable before the superblock's: one implies the other.
    if (segments.length === 0) {
      const first = `${path}/${logSegmentFileName(FIRST_SEGMENT_NUMBER)}`;
      (await Deno.open(first, { write: true, create: true })).close();
    }
    if (sync) await syncDirectory(path);
    const tmpPath = `${path}/${SUPERBLOCK_TMP_FILE}`;
    const tmp = await Deno.open(tmpPath, { write: true, create: true, truncate: true });
    try {
      writeAll(tmp, 0, encodeSuperblock(0, SUPERBLOCK_DEFAULT));
      if (sync) await tmp.syncData();
    } finally {
      tmp.close();
    }
    await Deno.rename(tmpPath, `${path}/${SUPERBLOCK_SLOT_FILES[0]}`);
    if (sync) {
      await syncDirectory(path);
      if (created) await syncDirectory(`${path}/..`);
    }
    return true;
  }

  /**
   * The valid slot with the higher sequence-number. One slot unreadable is what a crash during a
   * superblock write leaves (it tears only the slot being written): the other slot holds the last
   * durable superblock, and is used, and reported. (A slot that decays after it became durable,
   * and was the newer, looks the same; with one copy of each sequence-number that cannot be told
   * apart.) Both unreadable is refused: the view this replica promised is then unknown.
   */
  static async #loadSuperblock(
    path: string,
    slots: readonly [Deno.FsFile, Deno.FsFile],
    onRepair: ((message: string) => void) | undefined,
  ): Promise<SuperblockSlot> {
    let best: SuperblockSlot | undefined;
    const problems: string[] = [];
    for (const [index, file] of slots.entries()) {
      const name = `${path}/${SUPERBLOCK_SLOT_FILES[index]}`;
      let decoded: SuperblockSlot | string;
      try {
        const bytes = await readAt(file, 0, SUPERBLOCK_BYTES + 1);
        // `open` creates `superblock.b` empty; the second superblock write is the first to it.
        if (index === 1 && bytes.length === 0) continue;
        decoded = decodeSuperblock(bytes, index);
      } catch (error) {
        decoded = `cannot be read (${describe(error)})`;
      }
      if (typeof decoded === "string") {
        problems.push(`${name} ${decoded}`);
      } else if (best === undefined || decoded.sequence > best.sequence) {
        best = decoded;
      }
    }
    if (best === undefined) {
      throw new DataDirError(
        `${path}: no readable superblock (${problems.join("; ")}): the view this replica ` +
          "promised is unknown, and starting afresh in view 0 could let it vote in a view it " +
          "promised away",
      );
    }
    if (problems.length > 0) {
      const used = SUPERBLOCK_SLOT_FILES[best.sequence % 2];
      onRepair?.(
        `${problems.join("; ")}: using ${used} (sequence-number ${best.sequence}, view ` +
          `${best.superblock.viewNumber}): a crash during a superblock write tears only the ` +
          "slot being written, and the next superblock write replaces the unreadable one",
      );
    }
    return best;
  }

  /**
   * Replays the log, segment by segment. The tail of the last segment may be torn by a crash
   * during the last batch's write, or hold runs whose superblock never became durable: both are
   * cut off, which leaves the effects before the crash, none of which was acknowledged. A bad
   * record with a valid one after it, or in a segment that another follows (a segment is whole and
   * synced before the next one is created), is damage, not a crash (a crash tears only the last
   * batch, the only record nothing valid can follow): the records from it on are cut off as well,
   * and the later segments deleted, after `markRecovering` made the replica's recovery durable,
   * and the log is reported untrusted, since the replica may have acknowledged what was lost.
   * Records that check out but make no sense are a bug or tampering: an error.
   */
  static async #loadLog(
    path: string,
    allNumbers: readonly number[],
    superblockSequence: number,
    sync: boolean,
    onRepair: ((message: string) => void) | undefined,
    markRecovering: () => Promise<void>,
  ): Promise<LoadedLog> {
    const numbers = await DataDir.#dropRebasedSegments(path, allNumbers, sync, onRepair);
    const log: LogEntry[] = [];
    /** The op-number of `log[0]`, once a run has said where the log starts. */
    let start: number | undefined;
    let commitNumber = 0;
    const segments: LogSegment[] = [];
    /** The op-numbers of the checkpoints base records rebased the log onto. */
    const rebasedOnto = new Set<number>();
    const apply = (
      runs: readonly Run[],
      base: boolean,
      fileName: string,
      offset: number,
    ): void => {
      for (const [index, run] of runs.entries()) {
        if (base && index === 0) {
          // Whatever the log held, it now starts here (see `RECORD_KIND_BASE`).
          start = run.fromOpNumber;
          log.length = 0;
          rebasedOnto.add(run.fromOpNumber - 1);
        } else if (start === undefined || run.fromOpNumber < start) {
          // The first run, or one from below what the segments still hold (`truncateBefore`
          // deleted the entries before it): the log starts here.
          start = run.fromOpNumber;
          log.length = 0;
        } else {
          if (run.fromOpNumber > start + log.length) {
            throw new DataDirError(
              `${fileName}: record at byte ${offset} writes from op ${run.fromOpNumber}, but the log ends at op ${
                start - 1 + log.length
              }`,
            );
          }
          log.length = run.fromOpNumber - start;
        }
        for (const entry of run.entries) log.push(entry);
        commitNumber = run.commitNumber;
      }
    };
    /** The log loaded, ending in `file` (the last segment), of `size` bytes of records. */
    const loadedLog = (
      file: Deno.FsFile,
      size: number,
      allocated: number,
      trusted: boolean,
    ): LoadedLog => ({
      log,
      start: start ?? 1,
      rebasedOnto,
      commitNumber,
      segments,
      file,
      size,
      allocated,
      trusted,
    });
    for (const [position, number] of numbers.entries()) {
      const last = position === numbers.length - 1;
      const fileName = `${path}/${logSegmentFileName(number)}`;
      const file = await Deno.open(fileName, { read: true, write: true }).catch(
        (error: unknown) => {
          throw new DataDirError(`${fileName}: cannot open (${describe(error)})`);
        },
      );
      let keepOpen = false;
      try {
        const segment = emptySegment(number);
        segments.push(segment);
        const size = (await file.stat()).size;
        const reader = new WindowReader(file, size);
        let offset = 0;
        /** Where the zeros written in advance start, in the last segment. */
        let zerosFrom: number | undefined;
        let badReason: string | undefined;
        /** Whether the bad record is all there (a bad checksum), not cut short. */
        let whole = false;
        /** Runs of the last record to write back after cutting it off, when some must go. */
        let kept: Run[] | undefined;
        /** Whether that record is a base record, which it stays. */
        let keptBase = false;
        while (offset < size) {
          if (size - offset < RECORD_HEADER_BYTES) {
            if (last && await isZeroFrom(file, offset, size)) {
              zerosFrom = offset;
              break;
            }
            badReason = `is cut short (${size - offset} bytes)`;
            break;
          }
          const header = await reader.read(offset, RECORD_HEADER_BYTES);
          const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
          const length = view.getUint32(4, true);
          if (view.getUint32(0, true) !== RECORD_MAGIC) {
            // Zeros written in advance end the records, in the last segment only: the others
            // were cut to their records before the next one was created.
            if (last && view.getUint32(0, true) === 0 && await isZeroFrom(file, offset, size)) {
              zerosFrom = offset;
              break;
            }
            badReason = "lacks the record magic";
            break;
          }
          if (length > RECORD_BODY_BYTES_MAX) {
            badReason = `claims ${length} bytes, over the limit of ${RECORD_BODY_BYTES_MAX}`;
            break;
          }
          if (offset + RECORD_HEADER_BYTES + length > size) {
            badReason = `is cut short (${size - offset - RECORD_HEADER_BYTES} of ${length} bytes)`;
            break;
          }
          const body = await reader.read(offset + RECORD_HEADER_BYTES, length);
          if (recordChecksum(number, offset, body) !== view.getUint32(8, true)) {
            badReason = "has a bad checksum";
            // Whole but wrong. A write torn by a crash into the zeros written in advance ends in
            // those zeros, where it did not reach; a record that was synced (and acknowledged)
            // and then decayed does not, as a rule. Only the second can lose acknowledged
            // entries: unless it ends in zeros, count it as damage (recovery costs time;
            // trusting decay could lose a committed op).
            whole = !endsInZeros(body);
            break;
          }
          let runs: Run[];
          let base: boolean;
          try {
            ({ runs, base } = decodeRecordBody(body));
          } catch (error) {
            if (!(error instanceof InvalidRecord)) throw error;
            throw new DataDirError(`${fileName}: record at byte ${offset} ${error.message}`);
          }
          if (base && offset !== 0) {
            throw new DataDirError(
              `${fileName}: record at byte ${offset} rebases the log, but is not the first of ` +
                "its segment",
            );
          }
          const end = offset + RECORD_HEADER_BYTES + length;
          // Runs tagged with the next superblock write come last; they count only if it is durable.
          const firstLost = runs.findIndex((run) => run.superblockSequence > superblockSequence);
          if (firstLost !== -1) {
            const lost = runs.slice(firstLost);
            if (lost.some((run) => run.superblockSequence !== superblockSequence + 1)) {
              throw new DataDirError(
                `${fileName}: record at byte ${offset} depends on superblock writes out of order`,
              );
            }
            // The last record: nothing follows it but the zeros written in advance, if any.
            if (!last || (end !== size && !(await isZeroFrom(file, end, size)))) {
              throw new DataDirError(
                `${fileName}: record at byte ${offset} depends on a superblock write that is not durable, but is not the last of the log`,
              );
            }
            kept = runs.slice(0, firstLost);
            keptBase = base;
          }
          const counted = kept ?? runs;
          apply(counted, base, fileName, offset);
          if (counted.length > 0) countRecord(segment, counted);
          if (kept !== undefined) break;
          offset = end;
        }
        if (badReason === undefined && kept === undefined) {
          segment.bytes = zerosFrom ?? size;
          if (!last) continue;
          keepOpen = true;
          return loadedLog(file, segment.bytes, size, true);
        }
        let trusted = true;
        let repair: string;
        if (badReason !== undefined) {
          const next = last ? await findRecordAfter(number, file, size, offset) : undefined;
          const later = numbers.slice(position + 1).map(logSegmentFileName);
          if (last && next === undefined && !whole) {
            repair = `${fileName}: record at byte ${offset} ${badReason} and nothing valid ` +
              "follows it: torn, the last write before a crash, never synced and so never " +
              `acknowledged; cut the ${
                size - offset
              } bytes from byte ${offset} to the end of the file`;
          } else {
            trusted = false;
            await markRecovering();
            // The later segments go first, from the last: a crash midway leaves segments without
            // a gap, and the damage to find again.
            for (const name of later.toReversed()) await Deno.remove(`${path}/${name}`);
            if (later.length > 0 && sync) await syncDirectory(path);
            const follows = next !== undefined
              ? `a valid record follows at byte ${next}`
              : later.length > 0
              ? `${later.length === 1 ? "the segment" : "the segments"} ${later.join(", ")} ` +
                `follow${later.length === 1 ? "s" : ""}`
              : "it is whole (a record synced and decayed looks so)";
            repair = `${fileName}: record at byte ${offset} ${badReason}, yet ${follows}: ` +
              "damage, not a torn write, so entries this replica acknowledged may be lost; kept " +
              `the ${log.length} entries before it, cut the ${size - offset} bytes from byte ` +
              `${offset} on, ${later.length > 0 ? `deleted ${later.join(", ")}, ` : ""}and ` +
              "marked the replica as recovering: it takes part in no quorum until it has the " +
              "log of the group's primary (§4.3)";
          }
        } else {
          repair = `${fileName}: dropped the writes of the record at byte ${offset} that ` +
            "followed a superblock write lost in a crash (never acknowledged)";
        }
        await file.truncate(offset);
        let repairedSize = offset;
        if (kept !== undefined && kept.length > 0) {
          const record = encodeRecord(
            number,
            offset,
            kept,
            fileName,
            keptBase ? RECORD_KIND_BASE : RECORD_KIND_BATCH,
          );
          writeAll(file, offset, record);
          repairedSize += record.length;
        }
        if (sync) await file.sync();
        onRepair?.(repair);
        segment.bytes = repairedSize;
        keepOpen = true;
        return loadedLog(file, repairedSize, repairedSize, trusted);
      } catch (error) {
        if (error instanceof DataDirError || error instanceof AssertionError) throw error;
        throw new DataDirError(`${fileName}: cannot load (${describe(error)})`, { cause: error });
      } finally {
        if (!keepOpen) closeQuietly(file);
      }
    }
    // `#listSegments` found at least one.
    throw new AssertionError(`${path}: no log segment to load`);
  }

  /**
   * The segments from the last one whose first record is a base record on (`RECORD_KIND_BASE`):
   * the ones before it hold only what that record replaced, since a rebase deletes them once the
   * record is durable. A crash before they were all deleted leaves some; they are deleted now,
   * from the first on, and reported. Only the first record of each segment is looked at, and read
   * whole only if its first bytes say it is a base record.
   */
  static async #dropRebasedSegments(
    path: string,
    numbers: readonly number[],
    sync: boolean,
    onRepair: ((message: string) => void) | undefined,
  ): Promise<readonly number[]> {
    let first = 0;
    for (let position = numbers.length - 1; position > 0; position--) {
      if (await startsWithBaseRecord(path, numbers[position]!)) {
        first = position;
        break;
      }
    }
    if (first === 0) return numbers;
    const dead = numbers.slice(0, first).map(logSegmentFileName);
    for (const name of dead) await Deno.remove(`${path}/${name}`);
    if (sync) await syncDirectory(path);
    onRepair?.(
      `${path}/${logSegmentFileName(numbers[first]!)}: its first record rebases the log onto a ` +
        `checkpoint, yet ${dead.join(", ")} (what it replaced) ${
          dead.length === 1 ? "was" : "were"
        } still there (a crash came before the rebase deleted ${
          dead.length === 1 ? "it" : "them"
        }): deleted ${dead.length === 1 ? "it" : "them"}`,
    );
    return numbers.slice(first);
  }

  /**
   * Rewrites the log with only its live entries when truncations left it mostly dead: the live
   * entries go into a new segment, written as a temporary file and synced, which is renamed into
   * place after the last segment; then the older segments are deleted. Its first record writes
   * from the log's first op-number, so that a load that still finds the older ones (a crash
   * before they were deleted) replays them and then replaces them all.
   */
  async #rewriteIfBloated(
    loaded: LoadedLog,
    bytesMin: number,
    onRepair: ((message: string) => void) | undefined,
  ): Promise<void> {
    let total = 0;
    for (const segment of this.#segments) total += segment.bytes;
    if (total <= bytesMin) return;
    let liveBytes = 0;
    for (const entry of loaded.log) {
      liveBytes += entry.operation.length + ENTRY_OVERHEAD_BYTES_ESTIMATE;
    }
    if (total <= LOG_REWRITE_RATIO * liveBytes) return;
    const segment = emptySegment(this.#current.number + 1);
    const tmpPath = `${this.#path}/${LOG_TMP_FILE}`;
    const fileName = this.#segmentPath(segment.number);
    const tmp = await Deno.open(tmpPath, { read: true, write: true, create: true, truncate: true });
    let size = 0;
    try {
      const commitNumber = Math.min(loaded.commitNumber, this.#opNumber);
      const writeRun = (run: Run): void => {
        const record = encodeRecord(segment.number, size, [run], fileName);
        writeAll(tmp, size, record);
        size += record.length;
        countRecord(segment, [run]);
      };
      // An empty log that starts after op 1 still needs a record to say where it starts.
      if (loaded.log.length === 0 && loaded.start > 1) {
        writeRun({ superblockSequence: 0, fromOpNumber: loaded.start, commitNumber, entries: [] });
      }
      let start = 0;
      while (start < loaded.log.length) {
        let end = start;
        let bytes = 0;
        while (end < loaded.log.length && (end === start || bytes < REWRITE_RECORD_BYTES_TARGET)) {
          bytes += loaded.log[end]!.operation.length;
          end++;
        }
        writeRun({
          superblockSequence: 0,
          fromOpNumber: loaded.start + start,
          commitNumber,
          entries: loaded.log.slice(start, end),
        });
        start = end;
      }
      if (this.#sync) await tmp.sync();
      // The last segment is about to have one after it: it must end where its records end.
      await this.#log.truncate(this.#logBytes);
      if (this.#sync) await this.#log.sync();
    } catch (error) {
      tmp.close();
      throw error;
    }
    // The new segment takes its place at once: a crash leaves it whole or absent.
    this.#log.close();
    await Deno.rename(tmpPath, fileName);
    if (this.#sync) await syncDirectory(this.#path);
    tmp.close();
    this.#log = await Deno.open(fileName, { read: true, write: true });
    const replaced = this.#segments;
    segment.bytes = size;
    this.#segments = [segment];
    for (const old of replaced) await Deno.remove(this.#segmentPath(old.number));
    if (this.#sync) await syncDirectory(this.#path);
    onRepair?.(
      `${fileName}: rewrote ${total} bytes as ${size} bytes of live entries, in place of ${
        replaced.map((old) => logSegmentFileName(old.number)).join(", ")
      }`,
    );
    this.#logBytes = size;
    this.#logAllocated = size;
  }

  /**
   * Makes the persist effects of one batch durable, in order, ignoring the other effects. Costs
   * one write and fdatasync of the log and, if the batch writes the superblock, one write and
   * fdatasync of a superblock slot; a batch that finds the last segment full first starts the next
   * one (a truncation and fsync of the full one, and an fsync of the directory). Resolves with the
   * largest persist id of the batch (0 if none). The caller waits for each call to resolve before
   * the next: a call while another is in flight, or after `close`, throws AssertionError at once.
   *
   * A batch whose write or fdatasync fails rejects with `DiskFullError` (no room) or
   * `DataDirError` (any other failure), both naming the file and the offset. Either way none of it
   * is reported durable, and the bookkeeping is as before it: the next record still goes where
   * this one was to go, the superblock write to the same slot with the same sequence-number, and
   * the zeros ahead count only once the batch succeeds. So the same batch may be persisted again
   * (after a full disk, once there is room): what the failed attempt wrote is overwritten by the
   * same bytes, or, after a crash, cut off by the next load as a torn tail (or kept, if it was
   * written whole: a prefix of the effects either way). (A new segment started before the failure
   * stays: it holds nothing yet, and the record goes to its start on the next attempt.)
   *
   * An "install_checkpoint" effect splits the batch (see the module, "Installing a checkpoint"):
   * the effects before it are written as a batch of their own first, then the checkpoint is
   * staged, then the effects after it go into one record that first rebases the log onto the
   * checkpoint (so the log continues at its op-number + 1 whatever it held before), and only then
   * does the checkpoint count. A failure after some of these parts leaves those parts durable and
   * counted: the same batch persisted again skips them (by their ids; the core's ids only grow),
   * so a retry after a full disk resumes where the failure came. A failure after the rebase
   * record is durable (putting the checkpoint in place, deleting the segments it replaced) is a
   * DataDirError, though the batch is durable; the next `open` finishes what was left.
   */
  persist(effects: readonly Effect[]): Promise<number> {
    assert(!this.#closed, () => `${this.#path}: persist after close`);
    assert(this.#inFlight === undefined, () => `${this.#path}: persist while another is in flight`);
    const promise = this.#persist(effects).finally(() => {
      this.#inFlight = undefined;
    });
    this.#inFlight = promise;
    return promise;
  }

  async #persist(effects: readonly Effect[]): Promise<number> {
    const resumeAfter = this.#resumeAfterId ?? 0;
    let maxId = 0;
    /** The largest id of what is durable (staged, for an install) of this batch. */
    let doneId = resumeAfter;
    /** The persists since the last install, written together. */
    let group: Effect[] = [];
    let groupMaxId = 0;
    try {
      for (const effect of effects) {
        if (
          effect.type !== "persist_log" && effect.type !== "persist_superblock" &&
          effect.type !== "install_checkpoint" && effect.type !== "persist_membership"
        ) {
          continue;
        }
        maxId = Math.max(maxId, effect.id);
        // Durable already: an earlier attempt at this batch failed after it.
        if (effect.id <= resumeAfter) continue;
        if (effect.type === "persist_membership") {
          // In order: what came before it is durable first (the log up to the Reconfiguration).
          if (group.length > 0 || this.#staged !== undefined) {
            await this.#persistGroup(group);
            doneId = Math.max(doneId, groupMaxId);
            group = [];
          }
          await this.#writeMembership(effect.membership);
          doneId = Math.max(doneId, effect.id);
          continue;
        }
        if (effect.type !== "install_checkpoint") {
          group.push(effect);
          groupMaxId = Math.max(groupMaxId, effect.id);
          continue;
        }
        if (group.length > 0 || this.#staged !== undefined) {
          await this.#persistGroup(group);
          doneId = Math.max(doneId, groupMaxId);
          group = [];
        }
        await this.#stageInstall(effect);
        doneId = Math.max(doneId, effect.id);
      }
      // A staged install counts once its rebase record is durable, even with no log write after it.
      if (group.length > 0 || this.#staged !== undefined) await this.#persistGroup(group);
    } catch (error) {
      if (doneId > resumeAfter) this.#resumeAfterId = doneId;
      throw error;
    }
    this.#resumeAfterId = undefined;
    return maxId;
  }

  /**
   * §7 The replica id recorded in the directory (`REPLICA_ID_FILE`), or undefined if none was
   * (a new directory, or one from before ids were recorded). A damaged file is an error.
   */
  async readReplicaId(): Promise<number | undefined> {
    const path = `${this.#path}/${REPLICA_ID_FILE}`;
    const text = await readOptionalText(path);
    if (text === undefined) return undefined;
    const id = /^\d{1,9}\n?$/.test(text) ? Number.parseInt(text, 10) : NaN;
    if (!Number.isSafeInteger(id)) {
      throw new DataDirError(`${path}: not a replica id: ${JSON.stringify(text.slice(0, 40))}`);
    }
    return id;
  }

  /** §7 Record the replica id (`REPLICA_ID_FILE`): a temporary file, synced, renamed over it. */
  async writeReplicaId(id: number): Promise<void> {
    await this.#replaceFile(REPLICA_ID_FILE, REPLICA_ID_TMP_FILE, `${id}\n`, "the replica id");
  }

  /** The app recorded in the directory (`APP_FILE`), or undefined if none was. */
  async readApp(): Promise<string | undefined> {
    const path = `${this.#path}/${APP_FILE}`;
    const text = await readOptionalText(path);
    if (text === undefined) return undefined;
    if (!/^[\x21-\x7e]{1,100}\n?$/.test(text)) {
      throw new DataDirError(`${path}: not an app name: ${JSON.stringify(text.slice(0, 40))}`);
    }
    return text.trim();
  }

  /** Record the app (`APP_FILE`), as `writeReplicaId` records the id. */
  async writeApp(tag: string): Promise<void> {
    await this.#replaceFile(APP_FILE, APP_TMP_FILE, `${tag}\n`, "the app");
  }

  /** Replace file `name` by `text`: written to `tmpName`, synced, renamed over it. */
  async #replaceFile(name: string, tmpName: string, text: string, what: string): Promise<void> {
    const tmpPath = `${this.#path}/${tmpName}`;
    try {
      await Deno.writeTextFile(tmpPath, text);
      if (this.#sync) {
        const file = await Deno.open(tmpPath, { read: true, write: true });
        try {
          await file.syncData();
        } finally {
          file.close();
        }
      }
      await Deno.rename(tmpPath, `${this.#path}/${name}`);
      if (this.#sync) await syncDirectory(this.#path);
    } catch (error) {
      throw new DataDirError(`${tmpPath}: cannot record ${what} (${describe(error)})`);
    }
  }

  /** §7 Replace the membership file: a temporary file, synced, renamed over it, the directory synced. */
  async #writeMembership(membership: Membership): Promise<void> {
    const tmpPath = `${this.#path}/${MEMBERSHIP_TMP_FILE}`;
    try {
      await Deno.writeFile(tmpPath, encodeMembership(membership));
      if (this.#sync) {
        const file = await Deno.open(tmpPath, { read: true, write: true });
        try {
          await file.syncData();
        } finally {
          file.close();
        }
      }
      await Deno.rename(tmpPath, `${this.#path}/${MEMBERSHIP_FILE}`);
      if (this.#sync) await syncDirectory(this.#path);
    } catch (error) {
      if (isDiskFull(error)) {
        throw new DiskFullError(tmpPath, `${tmpPath}: no room to write the membership`);
      }
      throw new DataDirError(`${tmpPath}: cannot write the membership (${describe(error)})`);
    }
  }

  /**
   * Writes a checkpoint fetched from a peer as a staged checkpoint (`CheckpointWriterHooks.staged`):
   * durable, but not counted until `#persistGroup` wrote the record that rebases the log onto it.
   * The chunks are checked against the hashes the core gave as they are written.
   */
  async #stageInstall(
    effect: Extract<Effect, { readonly type: "install_checkpoint" }>,
  ): Promise<void> {
    const { checkpoint, chunks } = effect;
    const { opNumber } = checkpoint;
    assert(
      chunks.length === checkpoint.chunks.length,
      () =>
        `install_checkpoint ${effect.id}: ${chunks.length} chunks for the ` +
        `${checkpoint.chunks.length} of the checkpoint of op ${opNumber}`,
    );
    assert(this.#staged === undefined, () => `${this.#path}: two checkpoints staged at once`);
    const release = await this.#claimCheckpointWrite(opNumber);
    try {
      const writer = await beginCheckpoint(this.#path, {
        opNumber,
        viewNumber: checkpoint.viewNumber,
        metadata: checkpoint.metadata,
      }, { sync: this.#sync, injectFault: this.#injectFault, staged: true, onEnd: () => {} });
      try {
        for (const [index, chunk] of chunks.entries()) {
          await writer.write(chunk);
          const written = writer.chunks[index]!;
          const expected = checkpoint.chunks[index]!;
          if (written.length !== expected.length || !bytesEqual(written.hash, expected.hash)) {
            throw new AssertionError(
              `install_checkpoint ${effect.id}: chunk ${index} of the checkpoint of op ` +
                `${opNumber} does not match the hash the core gave for it`,
            );
          }
        }
        this.#staged = await writer.finish();
        // The install rebases the log onto its own checkpoint: a rebase still pending onto an
        // older one (`rebaseOnto`) would otherwise come after it, and wipe the log it starts.
        this.#rebaseOnto = undefined;
      } catch (error) {
        await writer.abort();
        throw error;
      }
    } finally {
      release();
    }
  }

  /**
   * Once the record that rebases the log onto the staged checkpoint is durable: puts the
   * checkpoint in place, then deletes the segments before the rebase record's, which hold only
   * what it replaced. A crash in the middle of either is finished by the next `open`
   * (`resolveStagedCheckpoints`, `#dropRebasedSegments`).
   */
  async #finishInstall(staged: CheckpointInfo): Promise<void> {
    const info = await commitStagedCheckpoint(this.#path, staged, this.#sync, this.#injectFault);
    this.#adoptCheckpoint(info);
    await this.#deleteRebasedSegments(info.path);
  }

  /**
   * Once a rebase record is durable: deletes the segments before its own, which hold only what it
   * replaced (a crash midway is finished by the next `open`, `#dropRebasedSegments`).
   */
  async #deleteRebasedSegments(onto: string): Promise<void> {
    // One deleter of segments at a time, each from the first on, so that no crash leaves a gap.
    while (this.#truncating !== undefined) await this.#truncating.catch(() => {});
    const dead = this.#segments.splice(0, this.#segments.length - 1);
    const deleted: string[] = [];
    try {
      for (const segment of dead) {
        const name = logSegmentFileName(segment.number);
        await removeIfPresent(`${this.#path}/${name}`);
        deleted.push(name);
      }
      if (dead.length > 0 && this.#sync) {
        this.#injectFault?.({ kind: "sync", path: this.#path });
        await syncDirectory(this.#path);
      }
    } catch (error) {
      // The rebase is durable already: the segments left behind hold only what it replaced, and
      // the next `open` deletes them (`#dropRebasedSegments`). Not worth stopping the replica.
      this.#onRepair?.(
        `${this.#path}: deleting the log segments the rebase onto ${onto} replaced ` +
          `(deleted ${deleted.length > 0 ? deleted.join(", ") : "none"}): ${describe(error)}; ` +
          "the next open deletes the rest",
      );
    }
  }

  /**
   * One batch's persists, with no install among them, as one log record (and a superblock
   * write). After an install, the record first rebases the log onto the staged checkpoint.
   */
  async #persistGroup(effects: readonly Effect[]): Promise<void> {
    const staged = this.#staged;
    const rebaseOnto = staged === undefined ? this.#rebaseOnto : undefined;
    /** Where a rebase makes the log start. */
    const base = staged !== undefined
      ? staged.opNumber + 1
      : rebaseOnto !== undefined
      ? rebaseOnto + 1
      : undefined;
    // Log effects before the first superblock write, and after it.
    let before: RunBuilder | undefined = base === undefined
      ? undefined
      : new RunBuilder(base, [], base - 1);
    let after: RunBuilder | undefined;
    let superblock: Superblock | undefined;
    let opNumber = base === undefined ? this.#opNumber : base - 1;
    for (const effect of effects) {
      if (effect.type === "persist_superblock") {
        superblock = effect.superblock;
      } else if (effect.type === "persist_log") {
        const { commitNumber } = effect;
        let { fromOpNumber, entries } = effect;
        assert(
          Number.isSafeInteger(fromOpNumber) && fromOpNumber >= 1 && fromOpNumber <= opNumber + 1,
          () =>
            `persist_log ${effect.id} writes from op ${fromOpNumber}, but the log ends at op ${opNumber}`,
        );
        for (const [index, entry] of entries.entries()) {
          assert(
            entry.opNumber === fromOpNumber + index,
            () =>
              `persist_log ${effect.id} holds op ${entry.opNumber} where op ${
                fromOpNumber + index
              } belongs`,
          );
        }
        if (base !== undefined && fromOpNumber < base) {
          // Entries up to the installed checkpoint are the checkpoint's: the log on disk starts
          // after it, where its rebase record says (and a load looks for).
          entries = entries.slice(Math.min(entries.length, base - fromOpNumber));
          fromOpNumber = base;
        }
        const builder = superblock === undefined ? before : after;
        if (builder !== undefined) {
          builder.add(fromOpNumber, entries, commitNumber);
        } else if (superblock === undefined) {
          before = new RunBuilder(fromOpNumber, entries, commitNumber);
        } else {
          after = new RunBuilder(fromOpNumber, entries, commitNumber);
        }
        opNumber = fromOpNumber - 1 + entries.length;
      }
    }
    const nextSequence = this.#superblockSequence + 1;
    const runs: Run[] = [];
    if (before !== undefined) {
      runs.push({ ...before, superblockSequence: this.#superblockSequence });
    }
    if (after !== undefined) runs.push({ ...after, superblockSequence: nextSequence });
    // The bookkeeping changes only once the whole batch is durable (see `persist`).
    let logBytes = this.#logBytes;
    let logAllocated = this.#logAllocated;
    let file = this.#segmentPath(this.#current.number);
    let step = "";
    try {
      if (runs.length > 0) {
        // A rebase record starts a segment: the ones before it can then go whole.
        if (logBytes >= this.#segmentBytes || (base !== undefined && this.#current.records > 0)) {
          step = `starting the next log segment, ${logSegmentFileName(this.#current.number + 1)}`;
          await this.#startSegment();
          logBytes = this.#logBytes;
          logAllocated = this.#logAllocated;
          file = this.#segmentPath(this.#current.number);
        }
        const record = encodeRecord(
          this.#current.number,
          logBytes,
          runs,
          file,
          base === undefined ? RECORD_KIND_BATCH : RECORD_KIND_BASE,
        );
        // One chunk of zeros per persist at most, ahead of need, so that no persist pays for
        // many (a record longer than the room left goes partly past the zeros, which is only a
        // plain append). The fdatasync below makes the zeros durable with the record.
        step = `writing zeros ahead at byte ${logAllocated}`;
        logAllocated = this.#preallocateStep(logBytes, logAllocated);
        step = `writing the ${record.length}-byte record at byte ${logBytes}`;
        this.#write(this.#log, file, logBytes, record);
        step = `syncing the record at byte ${logBytes}`;
        await this.#syncData(this.#log, file);
        logBytes += record.length;
        // A record longer than the room left went past the zeros: the file grew with it.
        logAllocated = Math.max(logAllocated, logBytes);
      }
      if (superblock !== undefined) {
        const slot = this.#slots[nextSequence % 2]!;
        file = `${this.#path}/${SUPERBLOCK_SLOT_FILES[nextSequence % 2]}`;
        step = `writing superblock sequence-number ${nextSequence}`;
        this.#write(slot, file, 0, encodeSuperblock(nextSequence, superblock));
        step = `syncing superblock sequence-number ${nextSequence}`;
        await this.#syncData(slot, file);
      }
    } catch (error) {
      if (error instanceof DataDirError || error instanceof AssertionError) throw error;
      const message = `${file}: ${step}: ${describe(error)}`;
      throw isDiskFull(error)
        ? new DiskFullError(file, message, { cause: error })
        : new DataDirError(message, { cause: error });
    }
    this.#logBytes = logBytes;
    this.#logAllocated = logAllocated;
    if (runs.length > 0) {
      this.#opNumber = opNumber;
      countRecord(this.#current, runs);
      this.#current.bytes = logBytes;
    }
    if (superblock !== undefined) this.#superblockSequence = nextSequence;
    if (staged !== undefined) {
      this.#staged = undefined;
      await this.#finishInstall(staged);
    } else if (rebaseOnto !== undefined) {
      this.#rebaseOnto = undefined;
      await this.#deleteRebasedSegments(checkpointFileName(rebaseOnto));
    }
  }

  /**
   * Makes the log start afresh after the checkpoint of `opNumber`, which is in place (loaded or
   * written here) and which the log does not reach: damage cut the log short below it (a load
   * keeps the entries before a bad record). The next persist's record rebases the log, as after
   * an install (a crash before it is durable leaves the directory as it was); nothing happens if
   * the log reaches `opNumber`.
   */
  rebaseOnto(opNumber: number): void {
    assert(!this.#closed, () => `${this.#path}: rebaseOnto after close`);
    if (opNumber <= this.#opNumber) return;
    assert(
      this.#checkpointOpNumber === opNumber,
      () =>
        `${this.#path}: rebaseOnto(${opNumber}) needs the checkpoint of op ${opNumber} in place, ` +
        `and the newest is ${this.#checkpointOpNumber ?? "none"}`,
    );
    this.#rebaseOnto = opNumber;
  }

  /**
   * Deletes the log segments, from the first on, all of whose entries lie below `opNumber`: a
   * segment is deleted whole or not at all, so the log a load yields may still start below
   * `opNumber` (`logStartOpNumber` tells where; never above `opNumber` while the log reaches it).
   * Never deletes the last segment, nor the last one that holds a record, so that a load still
   * learns the log's op-number when every entry is gone. `opNumber - 1` must be covered by a
   * checkpoint that this directory wrote (`beginCheckpoint`) or loaded (`loadCheckpoint`); the
   * caller decides how much of the log to keep beyond it (keeping the log back to the older of
   * the two checkpoints kept lets a replica whose newest checkpoint is damaged still restart
   * from the older one).
   *
   * Once segments are deleted, `open` yields a log that starts after op 1, which `Replica` cannot
   * replay: `open` refuses it without `allowTruncatedLog` (see the module).
   *
   * Safe while a persist is in flight (only a persist writes the last segment); one truncation
   * at a time. A failure to delete is a `DataDirError`; the segments not deleted are simply loaded
   * again by the next open, and deleted by a later truncation.
   */
  truncateBefore(opNumber: number): Promise<LogTruncation> {
    assert(!this.#closed, () => `${this.#path}: truncateBefore after close`);
    assert(
      this.#truncating === undefined,
      () => `${this.#path}: truncateBefore while another is in flight`,
    );
    assert(
      Number.isSafeInteger(opNumber) && opNumber >= 1,
      () => `${this.#path}: truncateBefore(${opNumber}): not a positive op-number`,
    );
    const covered = this.#checkpointOpNumber;
    assert(
      covered !== undefined && opNumber <= covered + 1,
      () =>
        `${this.#path}: truncateBefore(${opNumber}) needs a checkpoint of op ${
          opNumber - 1
        } or later, and the newest this directory knows is ${
          covered === undefined ? "none" : `of op ${covered}`
        }`,
    );
    const promise = this.#truncateBefore(opNumber).finally(() => {
      this.#truncating = undefined;
    });
    this.#truncating = promise;
    return promise;
  }

  async #truncateBefore(opNumber: number): Promise<LogTruncation> {
    const lastWithRecords = this.#segments.findLastIndex((segment) => segment.records > 0);
    const bound = Math.min(this.#segments.length - 1, lastWithRecords);
    let count = 0;
    while (count < bound && this.#segments[count]!.maxOpNumber < opNumber) count++;
    // Out of the bookkeeping at once, before the first await: a persist meanwhile only appends.
    const doomed = this.#segments.splice(0, count);
    const deleted: string[] = [];
    try {
      // From the first on: a crash midway leaves the later segments, without a gap.
      for (const segment of doomed) {
        const name = logSegmentFileName(segment.number);
        await Deno.remove(`${this.#path}/${name}`);
        deleted.push(name);
      }
      if (doomed.length > 0 && this.#sync) await syncDirectory(this.#path);
    } catch (error) {
      throw new DataDirError(
        `${this.#path}: deleting log segments before op ${opNumber} (deleted ${
          deleted.length > 0 ? deleted.join(", ") : "none"
        }): ${describe(error)}`,
        { cause: error },
      );
    }
    return { deleted, logStartOpNumber: this.logStartOpNumber };
  }

  /**
   * Starts writing a checkpoint of the state at `header.opNumber`: the returned writer takes the
   * state machine's snapshot chunk by chunk (`write`), then puts the checkpoint in place
   * atomically (`finish`), or discards it (`abort`). See `src/storage/checkpoint.ts` for the
   * format and the guarantees. One checkpoint is written at a time; persists and truncations go
   * on meanwhile. `close` aborts a checkpoint not yet finished.
   */
  beginCheckpoint(header: CheckpointHeader): Promise<CheckpointWriter> {
    assert(!this.#closed, () => `${this.#path}: beginCheckpoint after close`);
    assert(
      this.#checkpointWriter === undefined,
      () => `${this.#path}: beginCheckpoint while another checkpoint is being written`,
    );
    const promise = (async () => {
      const release = await this.#claimCheckpointWrite(header.opNumber);
      try {
        return await beginCheckpoint(this.#path, header, {
          sync: this.#sync,
          injectFault: this.#injectFault,
          onEnd: (info) => {
            this.#checkpointWriter = undefined;
            release();
            if (info !== undefined) this.#adoptCheckpoint(info);
          },
        });
      } catch (error) {
        release();
        throw error;
      }
    })();
    this.#checkpointWriter = promise;
    promise.catch(() => {
      if (this.#checkpointWriter === promise) this.#checkpointWriter = undefined;
    });
    return promise;
  }

  /**
   * Writes a whole checkpoint from `chunks` (the state machine's snapshot, in order), awaiting
   * each chunk's write before it takes the next, and returns what was written. On any failure the
   * checkpoint is discarded (the previous ones stay) and the error rethrown.
   */
  async writeCheckpoint(
    header: CheckpointHeader,
    chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  ): Promise<CheckpointInfo> {
    const writer = await this.beginCheckpoint(header);
    try {
      for await (const chunk of chunks) await writer.write(chunk);
      return await writer.finish();
    } catch (error) {
      await writer.abort();
      throw error;
    }
  }

  /**
   * The newest checkpoint that checks out, every byte of it read and verified, or undefined if
   * there is none. Checkpoints that do not check out are reported to `onRepair` (file and byte
   * offset), deleted and passed over, so that the previous one is used. Its op-number then
   * counts for `truncateBefore`, and `openCheckpoint` serves it. The log after it starts at `checkpoint.opNumber + 1` only if the
   * log reaches back that far (`logStartOpNumber <= opNumber + 1`); otherwise the replica lacks
   * the entries in between and must get them, or a newer checkpoint, from another replica.
   */
  async loadCheckpoint(): Promise<LoadedCheckpoint | undefined> {
    assert(!this.#closed, () => `${this.#path}: loadCheckpoint after close`);
    const loaded = await loadNewestCheckpoint(this.#path, this.#sync, this.#onRepair);
    if (loaded !== undefined) this.#adoptCheckpoint(loaded);
    return loaded;
  }

  /** The op-number of the newest checkpoint this directory wrote, installed or loaded. */
  get checkpointOpNumber(): number | undefined {
    return this.#checkpointOpNumber;
  }

  /**
   * The checkpoint of `opNumber`, to read its chunks (to serve a peer that fetches it), if this
   * directory wrote, installed or loaded it and still keeps it (the newest two are kept); else
   * undefined. Not verified whole again: each chunk is checked as it is read (`readChunk`), and
   * a chunk that does not check out throws DataDirError. Its file stays open for later calls,
   * and is closed once the checkpoint is deleted or replaced: reads still waiting then reject
   * with DataDirError, and the next call returns undefined.
   */
  async openCheckpoint(opNumber: number): Promise<LoadedCheckpoint | undefined> {
    assert(!this.#closed, () => `${this.#path}: openCheckpoint after close`);
    const file = this.#checkpoints.get(opNumber);
    if (file === undefined) return undefined;
    try {
      await file.open();
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      // Deleted by a means this directory does not know of.
      if (this.#checkpoints.get(opNumber) === file) {
        this.#checkpoints.delete(opNumber);
        this.#retire(file);
      }
      return undefined;
    }
    return file.closed ? undefined : file;
  }

  /**
   * Counts a checkpoint now in place: for `truncateBefore`, and to serve it. The writer deleted the
   * checkpoints beyond this one and the newest other (`pruneCheckpoints`); the same go here.
   */
  #adoptCheckpoint(info: CheckpointInfo): void {
    this.#checkpointOpNumber = Math.max(this.#checkpointOpNumber ?? 0, info.opNumber);
    if (this.#closed) return;
    const previous = this.#checkpoints.get(info.opNumber);
    // Loaded again, as written: the file already held serves.
    if (previous?.path === info.path && previous.checksum === info.checksum) return;
    if (previous !== undefined) this.#retire(previous);
    this.#checkpoints.set(info.opNumber, new CheckpointFile(info));
    const others = [...this.#checkpoints.keys()]
      .filter((opNumber) => opNumber !== info.opNumber)
      .sort((a, b) => b - a);
    for (const opNumber of others.slice(CHECKPOINTS_KEPT - 1)) {
      this.#retire(this.#checkpoints.get(opNumber)!);
      this.#checkpoints.delete(opNumber);
    }
  }

  /** Closes a checkpoint's file once the reads in flight are done. */
  #retire(file: CheckpointFile): void {
    const closing = file.close().finally(() => this.#closing.delete(closing));
    this.#closing.add(closing);
  }

  /**
   * Waits until no checkpoint of `opNumber` is being written, then claims the op-number: the
   * returned function releases it.
   */
  async #claimCheckpointWrite(opNumber: number): Promise<() => void> {
    for (;;) {
      const other = this.#checkpointWrites.get(opNumber);
      if (other === undefined) break;
      await other;
    }
    let resolve!: () => void;
    const ended = new Promise<void>((done) => resolve = done);
    this.#checkpointWrites.set(opNumber, ended);
    return () => {
      if (this.#checkpointWrites.get(opNumber) === ended) this.#checkpointWrites.delete(opNumber);
      resolve();
    };
  }

  /**
   * Waits for a persist and a truncation in flight, aborts a checkpoint not yet finished, then
   * closes the files and releases the lock.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#inFlight?.catch(() => {});
    await this.#truncating?.catch(() => {});
    const writer = await this.#checkpointWriter?.catch(() => undefined);
    await writer?.abort().catch(() => {});
    for (const file of this.#checkpoints.values()) this.#retire(file);
    this.#checkpoints.clear();
    await Promise.all(this.#closing);
    this.#log.close();
    for (const slot of this.#slots) slot.close();
    this.#lock.close();
  }
}

/** The text of the file at `path`, or undefined if there is none; any other failure is named. */
async function readOptionalText(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw new DataDirError(`${path}: cannot read it (${describe(error)})`);
  }
}
