/**
 * The encoding of protocol messages (`src/vr/message.ts`) as frame bodies, and their validation
 * when they arrive from the network.
 *
 * A body is one plain msgpack array (no extension types, no maps): a small integer tag naming the
 * message type, then the message's fields in a fixed order. Positional arrays are much smaller and
 * faster to encode and decode than maps keyed by field names. The layouts, `T` standing for the
 * tag:
 *
 * ```text
 * request               [T, clientId, requestNumber, operation]
 * reply                 [T, viewNumber, clientId, requestNumber, opNumber, operationChecksum,
 *                          result]
 * not_primary           [T, clientId, requestNumber, viewNumber, replica]
 * request_number_query  [T, clientId, nonce]
 * request_number_reply  [T, clientId, nonce, requestNumber, replica]
 * locate                [T, clientId]
 * reconfiguration       [T, clientId, requestNumber, epoch, addresses]
 * check_epoch           [T, clientId, requestNumber, epoch]
 * configuration         [T, clientId, requestNumber, epoch, viewNumber, replica, addresses,
 *                          requestNumberFloor]
 * rejected              [T, clientId, requestNumber, reason, floor, replica]
 * prepare               [T, epoch, viewNumber, commitNumber, replica, entries]
 * prepare_ok            [T, epoch, viewNumber, opNumber, replica, readRound]
 * commit                [T, epoch, viewNumber, commitNumber, replica, readRound]
 * start_view_change     [T, epoch, viewNumber, replica]
 * do_view_change        [T, epoch, viewNumber, lastNormalView, opNumber, commitNumber, replica,
 *                          entries]
 * start_view            [T, epoch, viewNumber, anchorOpNumber, opNumber, commitNumber, replica,
 *                          entries]
 * request_start_view    [T, epoch, viewNumber, commitNumber, replica]
 * recovery              [T, epoch, nonce, commitNumber, replica]
 * recovery_response     [T, epoch, viewNumber, nonce, isPrimary, anchorOpNumber, opNumber,
 *                          commitNumber, replica, entries]
 * get_state             [T, epoch, viewNumber, opNumber, replica]
 * new_state             [T, epoch, viewNumber, normal, anchorOpNumber, opNumber, commitNumber,
 *                          replica, entries]
 * checkpoint_manifest   [T, epoch, viewNumber, opNumber, metadata, chunks, replica]
 * get_checkpoint_chunks [T, epoch, opNumber, indexes, replica]
 * checkpoint_chunk      [T, epoch, opNumber, index, bytes, replica]
 * start_epoch           [T, epoch, opNumber, startViewNumber, addresses, members,
 *                          previousMembers, replica]
 * new_epoch             [T, epoch, opNumber, startViewNumber, addresses, members,
 *                          previousMembers, replica]
 * epoch_started         [T, epoch, replica]
 *
 * entries    an array of [opNumber, viewNumber, clientId, requestNumber, timestamp, operation]
 * operation  msgpack bin;  result  msgpack bin;  addresses  an array of str
 * metadata   msgpack bin of more than CHECKPOINT_METADATA_BYTES (the fixed part, then the
 *              membership), at most CHECKPOINT_METADATA_BYTES_MAX;  bytes  msgpack bin
 * chunks     an array of [hash, length], hash a msgpack bin of CHUNK_HASH_BYTES
 * indexes    an array of integers;  members, previousMembers  arrays of integers (member ids)
 * reason     a small integer: 1 conflict, 2 stale, 3 evicted, 4 too_large, 5 ahead, 6 epoch,
 *              7 bad_configuration, 8 reconfiguring
 * ```
 *
 * Every replica-to-replica message carries the sender's epoch right after the tag, and names its
 * sender (`replica`) by member id: an index into the group's address book, which grows with
 * reconfigurations, so the receiver bounds it by the size of the book it accepts
 * (`ValidationContext.replicaCount`), not by the size of one configuration.
 *
 * Integers are msgpack integers, except that integers of 2^32 and more (timestamps in
 * milliseconds) are float64, as msgpackr writes them; the decoder accepts both, and uint64/int64.
 *
 * @module
 */

import { Packr, RESERVE_START_SPACE, Unpackr } from "msgpackr";
import {
  CHECKPOINT_METADATA_BYTES,
  CHECKPOINT_METADATA_BYTES_MAX,
  CHUNK_HASH_BYTES,
} from "../vr/checkpoint.ts";
import {
  CHECKPOINT_CHUNKS_PER_REQUEST_MAX,
  LIMITS_DEFAULT,
  OP_NUMBER_MAX,
  VIEW_NUMBER_MAX,
} from "../vr/constants.ts";
import { ADDRESS_BOOK_MAX, ADDRESS_LENGTH_MAX, MEMBERS_MAX } from "../vr/membership.ts";
import {
  type CheckpointChunkInfo,
  CLIENT_MESSAGE_TYPES,
  CLIENT_REPLY_TYPES,
  type LogEntry,
  type Message,
  type MessageType,
  type RejectReason,
  REPLICA_MESSAGE_TYPES,
} from "../vr/message.ts";
import { FRAME_BODY_BYTES_MAX, FRAME_HEADER_BYTES, sealFrame } from "./frame.ts";
import {
  MsgpackReader,
  sizeArrayHeader,
  sizeBin,
  sizeEntry,
  sizeUint,
  Slab,
  writeArrayHeader,
  writeBin,
  writeEntry,
  writeUint,
} from "../lib/msgpack_fast.ts";

// ---------------------------------------------------------------- tags and limits

export const TAG_REQUEST = 1;
export const TAG_REPLY = 2;
export const TAG_NOT_PRIMARY = 3;
export const TAG_REQUEST_NUMBER_QUERY = 4;
export const TAG_REQUEST_NUMBER_REPLY = 5;
export const TAG_LOCATE = 6;
export const TAG_CONFIGURATION = 7;
export const TAG_PREPARE = 8;
export const TAG_PREPARE_OK = 9;
export const TAG_COMMIT = 10;
export const TAG_START_VIEW_CHANGE = 11;
export const TAG_DO_VIEW_CHANGE = 12;
export const TAG_START_VIEW = 13;
export const TAG_REQUEST_START_VIEW = 14;
export const TAG_RECOVERY = 15;
export const TAG_RECOVERY_RESPONSE = 16;
export const TAG_GET_STATE = 17;
export const TAG_NEW_STATE = 18;
export const TAG_REJECTED = 19;
export const TAG_CHECKPOINT_MANIFEST = 20;
export const TAG_GET_CHECKPOINT_CHUNKS = 21;
export const TAG_CHECKPOINT_CHUNK = 22;
export const TAG_RECONFIGURATION = 23;
export const TAG_CHECK_EPOCH = 24;
export const TAG_START_EPOCH = 25;
export const TAG_NEW_EPOCH = 26;
export const TAG_EPOCH_STARTED = 27;

/** The tag of each message type; tags are never reused, so that old peers fail loudly. */
export const MESSAGE_TAGS: { readonly [type in MessageType]: number } = {
  request: TAG_REQUEST,
  reply: TAG_REPLY,
  not_primary: TAG_NOT_PRIMARY,
  request_number_query: TAG_REQUEST_NUMBER_QUERY,
  request_number_reply: TAG_REQUEST_NUMBER_REPLY,
  locate: TAG_LOCATE,
  configuration: TAG_CONFIGURATION,
  prepare: TAG_PREPARE,
  prepare_ok: TAG_PREPARE_OK,
  commit: TAG_COMMIT,
  start_view_change: TAG_START_VIEW_CHANGE,
  do_view_change: TAG_DO_VIEW_CHANGE,
  start_view: TAG_START_VIEW,
  request_start_view: TAG_REQUEST_START_VIEW,
  recovery: TAG_RECOVERY,
  recovery_response: TAG_RECOVERY_RESPONSE,
  get_state: TAG_GET_STATE,
  new_state: TAG_NEW_STATE,
  rejected: TAG_REJECTED,
  checkpoint_manifest: TAG_CHECKPOINT_MANIFEST,
  get_checkpoint_chunks: TAG_GET_CHECKPOINT_CHUNKS,
  checkpoint_chunk: TAG_CHECKPOINT_CHUNK,
  reconfiguration: TAG_RECONFIGURATION,
  check_epoch: TAG_CHECK_EPOCH,
  start_epoch: TAG_START_EPOCH,
  new_epoch: TAG_NEW_EPOCH,
  epoch_started: TAG_EPOCH_STARTED,
};

/** The wire code of each reason a request is rejected for; codes are never reused. */
const REJECT_REASON_CODES: { readonly [reason in RejectReason]: number } = {
  conflict: 1,
  stale: 2,
  evicted: 3,
  too_large: 4,
  ahead: 5,
  epoch: 6,
  bad_configuration: 7,
  reconfiguring: 8,
};
const REJECT_REASONS: readonly (RejectReason | undefined)[] = (() => {
  const reasons: (RejectReason | undefined)[] = [];
  for (const [reason, code] of Object.entries(REJECT_REASON_CODES)) {
    reasons[code] = reason as RejectReason;
  }
  return reasons;
})();

/** The message type of each tag, indexed by tag. */
const TAG_TYPES: readonly (MessageType | undefined)[] = (() => {
  const types: (MessageType | undefined)[] = [];
  for (const [type, tag] of Object.entries(MESSAGE_TAGS)) types[tag] = type as MessageType;
  return types;
})();

/**
 * The most entries one message may carry. Far above what the core sends (`transferOpsMax` and
 * `pipelineOpsMax` are about a thousand) so that tuning those limits does not break the wire, yet
 * it bounds the work a hostile message can cause.
 */
export const ENTRIES_MAX = 100_000;
/**
 * The most addresses a Configuration or a Reconfiguration may list: the most members an epoch may
 * have (`MEMBERS_MAX`), far more replicas than VR groups ever have. A StartEpoch's or NewEpoch's
 * address book may hold up to `ADDRESS_BOOK_MAX`.
 */
export const ADDRESSES_MAX = MEMBERS_MAX;
/**
 * The longest address, in UTF-16 code units: room for any host name and port. The core's bound
 * (`src/vr/membership.ts`), re-exported: the wire may not carry an address the core would refuse.
 */
export { ADDRESS_LENGTH_MAX };
/**
 * The largest epoch a message may name (§7); a message naming a later one is rejected. A group
 * moves to the next epoch only by a committed Reconfiguration, which an administrator asks for:
 * at one a second, 2^32 epochs last 136 years. The bound keeps `epoch + 1` far from where floating
 * point stops being exact, whatever a message names. A replica must not move past it: its
 * messages would no longer be heard.
 */
export const EPOCH_MAX = 2 ** 32;

/**
 * Checkpoint chunks are numbered by their place in the manifest, below 2^32 (a manifest could not
 * list more: the msgpack value limit below is far lower).
 */
export const CHUNK_INDEX_LIMIT = 2 ** 32;

/** The fields of an entry on the wire. */
const ENTRY_FIELDS = 6;
/** The fields of a manifest's chunk on the wire: hash and length. */
const CHUNK_FIELDS = 2;
/** The longest message array: recovery_response's tag and nine fields. */
const MESSAGE_FIELDS_MAX = 10;
/**
 * The deepest nesting of msgpack arrays in a valid body (message, entries, entry). Checked before
 * msgpackr's recursive decoder runs so that hostile input cannot exhaust the stack.
 */
const MSGPACK_DEPTH_MAX = 3;
/**
 * The most msgpack values one body may hold: a message with `ENTRIES_MAX` entries. It bounds what
 * msgpackr allocates for hostile input to a constant factor of what a valid message needs. It
 * also bounds a CheckpointManifest, at about 233,000 chunks (three values each): some 228 GiB
 * of state in chunks of `LIMITS_DEFAULT.checkpointChunkBytes`.
 */
const MSGPACK_VALUES_MAX = 1 + MESSAGE_FIELDS_MAX + ENTRIES_MAX * (1 + ENTRY_FIELDS);
/** How many characters of msgpackr's own error message an error quotes. */
const LIBRARY_ERROR_LENGTH_MAX = 120;

// ---------------------------------------------------------------- encoding

// Plain msgpack: records and structured cloning are msgpackr extensions that would make a peer
// depend on state shared with the sender, and other implementations could not read them.
const packr = new Packr({
  useRecords: false,
  moreTypes: false,
  structuredClone: false,
});
// Maps never occur in a valid body (the scan rejects them); decoding them as `Map` regardless
// means a stray map can never become an object with hostile keys such as `__proto__`.
const unpackr = new Unpackr({
  useRecords: false,
  moreTypes: false,
  structuredClone: false,
  mapsAsObjects: false,
});

function entriesFields(entries: readonly LogEntry[]): unknown[] {
  const out = new Array<unknown>(entries.length);
  for (let index = 0; index < entries.length; index++) {
    const entry = entries[index] as LogEntry;
    out[index] = [
      entry.opNumber,
      entry.viewNumber,
      entry.clientId,
      entry.requestNumber,
      entry.timestamp,
      entry.operation,
    ];
  }
  return out;
}

function chunksFields(chunks: readonly CheckpointChunkInfo[]): unknown[] {
  const out = new Array<unknown>(chunks.length);
  for (let index = 0; index < chunks.length; index++) {
    const chunk = chunks[index] as CheckpointChunkInfo;
    out[index] = [chunk.hash, chunk.length];
  }
  return out;
}

/** The positional array of `message`, as laid out in the module documentation. */
function messageFields(message: Message): unknown[] {
  switch (message.type) {
    case "request":
      return [TAG_REQUEST, message.clientId, message.requestNumber, message.operation];
    case "reply":
      return [
        TAG_REPLY,
        message.viewNumber,
        message.clientId,
        message.requestNumber,
        message.opNumber,
        message.operationChecksum,
        message.result,
      ];
    case "not_primary":
      return [
        TAG_NOT_PRIMARY,
        message.clientId,
        message.requestNumber,
        message.viewNumber,
        message.replica,
      ];
    case "request_number_query":
      return [TAG_REQUEST_NUMBER_QUERY, message.clientId, message.nonce];
    case "request_number_reply":
      return [
        TAG_REQUEST_NUMBER_REPLY,
        message.clientId,
        message.nonce,
        message.requestNumber,
        message.replica,
      ];
    case "locate":
      return [TAG_LOCATE, message.clientId];
    case "reconfiguration":
      return [
        TAG_RECONFIGURATION,
        message.clientId,
        message.requestNumber,
        message.epoch,
        message.addresses,
      ];
    case "check_epoch":
      return [TAG_CHECK_EPOCH, message.clientId, message.requestNumber, message.epoch];
    case "configuration":
      return [
        TAG_CONFIGURATION,
        message.clientId,
        message.requestNumber,
        message.epoch,
        message.viewNumber,
        message.replica,
        message.addresses,
        message.requestNumberFloor,
      ];
    case "rejected":
      return [
        TAG_REJECTED,
        message.clientId,
        message.requestNumber,
        REJECT_REASON_CODES[message.reason],
        message.floor,
        message.replica,
      ];
    case "prepare":
      return [
        TAG_PREPARE,
        message.epoch,
        message.viewNumber,
        message.commitNumber,
        message.replica,
        entriesFields(message.entries),
      ];
    case "prepare_ok":
      return [
        TAG_PREPARE_OK,
        message.epoch,
        message.viewNumber,
        message.opNumber,
        message.replica,
        message.readRound,
      ];
    case "commit":
      return [
        TAG_COMMIT,
        message.epoch,
        message.viewNumber,
        message.commitNumber,
        message.replica,
        message.readRound,
      ];
    case "start_view_change":
      return [TAG_START_VIEW_CHANGE, message.epoch, message.viewNumber, message.replica];
    case "do_view_change":
      return [
        TAG_DO_VIEW_CHANGE,
        message.epoch,
        message.viewNumber,
        message.lastNormalView,
        message.opNumber,
        message.commitNumber,
        message.replica,
        entriesFields(message.entries),
      ];
    case "start_view":
      return [
        TAG_START_VIEW,
        message.epoch,
        message.viewNumber,
        message.anchorOpNumber,
        message.opNumber,
        message.commitNumber,
        message.replica,
        entriesFields(message.entries),
      ];
    case "request_start_view":
      return [
        TAG_REQUEST_START_VIEW,
        message.epoch,
        message.viewNumber,
        message.commitNumber,
        message.replica,
      ];
    case "recovery":
      return [TAG_RECOVERY, message.epoch, message.nonce, message.commitNumber, message.replica];
    case "recovery_response":
      return [
        TAG_RECOVERY_RESPONSE,
        message.epoch,
        message.viewNumber,
        message.nonce,
        message.isPrimary,
        message.anchorOpNumber,
        message.opNumber,
        message.commitNumber,
        message.replica,
        entriesFields(message.entries),
      ];
    case "get_state":
      return [TAG_GET_STATE, message.epoch, message.viewNumber, message.opNumber, message.replica];
    case "new_state":
      return [
        TAG_NEW_STATE,
        message.epoch,
        message.viewNumber,
        message.normal,
        message.anchorOpNumber,
        message.opNumber,
        message.commitNumber,
        message.replica,
        entriesFields(message.entries),
      ];
    case "checkpoint_manifest":
      return [
        TAG_CHECKPOINT_MANIFEST,
        message.epoch,
        message.viewNumber,
        message.opNumber,
        message.metadata,
        chunksFields(message.chunks),
        message.replica,
      ];
    case "get_checkpoint_chunks":
      return [
        TAG_GET_CHECKPOINT_CHUNKS,
        message.epoch,
        message.opNumber,
        message.indexes,
        message.replica,
      ];
    case "checkpoint_chunk":
      // Written by hand (`writeFastBody`), its bytes copied once; this only for numbers the
      // hand-written path cannot write, which the receiver rejects.
      return [
        TAG_CHECKPOINT_CHUNK,
        message.epoch,
        message.opNumber,
        message.index,
        message.bytes,
        message.replica,
      ];
    case "start_epoch":
    case "new_epoch":
      return [
        message.type === "start_epoch" ? TAG_START_EPOCH : TAG_NEW_EPOCH,
        message.epoch,
        message.opNumber,
        message.startViewNumber,
        message.addresses,
        message.members,
        message.previousMembers,
        message.replica,
      ];
    case "epoch_started":
      return [TAG_EPOCH_STARTED, message.epoch, message.replica];
  }
}

/**
 * The msgpack body of `message`, not framed. The message is trusted (it comes from this
 * process's core): it is not validated here, the receiver's `decodeMessage` does that.
 */
export function encodeMessage(message: Message): Uint8Array {
  const size = fastBodySize(message);
  if (size >= 0) {
    const body = new Uint8Array(size);
    writeFastBody(body, 0, message);
    return body;
  }
  // msgpackr returns a view of its pool: copy it, so that the caller owns plain bytes. `set`
  // copies in bulk; `new Uint8Array(buffer)` would copy element by element.
  const packed = packr.pack(messageFields(message));
  const body = new Uint8Array(packed.byteLength);
  body.set(packed);
  return body;
}

/**
 * The frame of `message`: `encodeFrame(encodeMessage(message))`, without a copy. The messages of
 * the hot path are written by hand into a slab; the rest by msgpackr, which leaves room for the
 * frame header before the body and returns a view of its pool, which it never writes over (later
 * packs go after it, or into a new pool). Either way the frame may be kept as long as needed.
 */
export function encodeFramedMessage(message: Message): Uint8Array {
  const size = fastBodySize(message);
  if (size >= 0) {
    const framed = frameSlab.take(FRAME_HEADER_BYTES + size);
    writeFastBody(framed, FRAME_HEADER_BYTES, message);
    return sealFrame(framed);
  }
  return sealFrame(packr.pack(messageFields(message), RESERVE_START_SPACE | FRAME_HEADER_BYTES));
}

// ---------------------------------------------------------------- the hot path, by hand

/**
 * Requests, replies, Prepares, PrepareOks and Commits are most of the traffic: they are written
 * and read by hand (`src/lib/msgpack_fast.ts`), byte for byte as msgpackr would, which costs a
 * fraction of msgpackr's general path in allocations and time. Tests check both paths agree.
 * Checkpoint chunks take this path too, for their size: their bytes (about a MiB each) are
 * copied once, straight into the frame, and decoded as a view of the body without a scan.
 */
const frameSlab = new Slab();

/**
 * The body size of a hot-path message; -1 for any other message, NaN for one holding a number
 * the hand-written path cannot write (see `sizeUint`). Callers test `size >= 0`.
 */
function fastBodySize(message: Message): number {
  switch (message.type) {
    case "request":
      return 2 + sizeUint(message.clientId) + sizeUint(message.requestNumber) +
        sizeBin(message.operation);
    case "reply":
      return 2 + sizeUint(message.viewNumber) + sizeUint(message.clientId) +
        sizeUint(message.requestNumber) + sizeUint(message.opNumber) +
        sizeUint(message.operationChecksum) + sizeBin(message.result);
    case "prepare": {
      let size = 2 + sizeUint(message.epoch) + sizeUint(message.viewNumber) +
        sizeUint(message.commitNumber) + sizeUint(message.replica) +
        sizeArrayHeader(message.entries.length);
      for (const entry of message.entries) size += sizeEntry(entry);
      return size;
    }
    case "prepare_ok":
      return 2 + sizeUint(message.epoch) + sizeUint(message.viewNumber) +
        sizeUint(message.opNumber) + sizeUint(message.replica) + sizeUint(message.readRound);
    case "commit":
      return 2 + sizeUint(message.epoch) + sizeUint(message.viewNumber) +
        sizeUint(message.commitNumber) + sizeUint(message.replica) + sizeUint(message.readRound);
    case "checkpoint_chunk":
      return 2 + sizeUint(message.epoch) + sizeUint(message.opNumber) +
        sizeUint(message.index) + sizeBin(message.bytes) + sizeUint(message.replica);
    default:
      return -1;
  }
}

/** Writes a message `fastBodySize` accepted; the layouts are those of the module comment. */
function writeFastBody(out: Uint8Array, position: number, message: Message): number {
  let p = position;
  switch (message.type) {
    case "request":
      out[p++] = 0x94;
      out[p++] = TAG_REQUEST;
      p = writeUint(out, p, message.clientId);
      p = writeUint(out, p, message.requestNumber);
      return writeBin(out, p, message.operation);
    case "reply":
      out[p++] = 0x97;
      out[p++] = TAG_REPLY;
      p = writeUint(out, p, message.viewNumber);
      p = writeUint(out, p, message.clientId);
      p = writeUint(out, p, message.requestNumber);
      p = writeUint(out, p, message.opNumber);
      p = writeUint(out, p, message.operationChecksum);
      return writeBin(out, p, message.result);
    case "prepare":
      out[p++] = 0x96;
      out[p++] = TAG_PREPARE;
      p = writeUint(out, p, message.epoch);
      p = writeUint(out, p, message.viewNumber);
      p = writeUint(out, p, message.commitNumber);
      p = writeUint(out, p, message.replica);
      p = writeArrayHeader(out, p, message.entries.length);
      for (const entry of message.entries) p = writeEntry(out, p, entry);
      return p;
    case "prepare_ok":
      out[p++] = 0x96;
      out[p++] = TAG_PREPARE_OK;
      p = writeUint(out, p, message.epoch);
      p = writeUint(out, p, message.viewNumber);
      p = writeUint(out, p, message.opNumber);
      p = writeUint(out, p, message.replica);
      return writeUint(out, p, message.readRound);
    case "commit":
      out[p++] = 0x96;
      out[p++] = TAG_COMMIT;
      p = writeUint(out, p, message.epoch);
      p = writeUint(out, p, message.viewNumber);
      p = writeUint(out, p, message.commitNumber);
      p = writeUint(out, p, message.replica);
      return writeUint(out, p, message.readRound);
    case "checkpoint_chunk":
      out[p++] = 0x96;
      out[p++] = TAG_CHECKPOINT_CHUNK;
      p = writeUint(out, p, message.epoch);
      p = writeUint(out, p, message.opNumber);
      p = writeUint(out, p, message.index);
      p = writeBin(out, p, message.bytes);
      return writeUint(out, p, message.replica);
    default:
      throw new Error(`writeFastBody: ${message.type} is not on the hot path`);
  }
}

/**
 * Decodes a hot-path message written as `writeFastBody` writes it, with every check the general
 * decoder makes. Returns undefined for anything else, valid or not: the general decoder then
 * accepts it or names what is wrong. For the bodies this accepts, both give equal messages.
 */
function decodeFast(body: Uint8Array, context: ValidationContext): Message | undefined {
  const r = new MsgpackReader(body);
  const count = r.arrayHeader();
  const tag = r.uint();
  switch (tag) {
    case TAG_REQUEST: {
      if (count !== 4 || context.from !== "client") return undefined;
      const clientId = r.uint();
      const requestNumber = r.uint();
      const operation = r.bin();
      if (
        clientId < 0 || requestNumber < 0 || operation === undefined || !r.done ||
        operation.byteLength > LIMITS_DEFAULT.operationBytesMax
      ) {
        return undefined;
      }
      return { type: "request", clientId, requestNumber, operation };
    }
    case TAG_REPLY: {
      if (count !== 7 || context.from !== "reply") return undefined;
      const viewNumber = r.uint();
      const clientId = r.uint();
      const requestNumber = r.uint();
      const opNumber = r.uint();
      const operationChecksum = r.uint();
      const result = r.bin();
      if (
        viewNumber < 0 || clientId < 0 || requestNumber < 0 || opNumber < 0 ||
        operationChecksum < 0 || operationChecksum > 0xffffffff || result === undefined || !r.done
      ) {
        return undefined;
      }
      return {
        type: "reply",
        viewNumber,
        clientId,
        requestNumber,
        opNumber,
        operationChecksum,
        result,
      };
    }
    case TAG_PREPARE: {
      if (count !== 6 || context.from !== "replica") return undefined;
      const epoch = r.uint();
      const viewNumber = r.uint();
      const commitNumber = r.uint();
      const replica = r.uint();
      const entryCount = r.arrayHeader();
      if (
        epoch < 0 || epoch > EPOCH_MAX || viewNumber < 0 || commitNumber < 0 || replica < 0 ||
        replica >= context.replicaCount || entryCount < 0 || entryCount > ENTRIES_MAX
      ) {
        return undefined;
      }
      const entries = new Array<LogEntry>(entryCount);
      let previousOpNumber = -1;
      let previousTimestamp = 0;
      for (let index = 0; index < entryCount; index++) {
        if (r.arrayHeader() !== ENTRY_FIELDS) return undefined;
        const opNumber = r.uint();
        const entryView = r.uint();
        const clientId = r.uint();
        const requestNumber = r.uint();
        const timestamp = r.uint();
        const operation = r.bin();
        if (
          opNumber < 1 || (index > 0 && opNumber !== previousOpNumber + 1) || entryView < 0 ||
          entryView > viewNumber || clientId < 0 || requestNumber < 0 ||
          timestamp < previousTimestamp || operation === undefined ||
          operation.byteLength > LIMITS_DEFAULT.operationBytesMax
        ) {
          return undefined;
        }
        previousOpNumber = opNumber;
        previousTimestamp = timestamp;
        entries[index] = {
          opNumber,
          viewNumber: entryView,
          clientId,
          requestNumber,
          operation,
          timestamp,
        };
      }
      if (!r.done) return undefined;
      return { type: "prepare", epoch, viewNumber, entries, commitNumber, replica };
    }
    case TAG_PREPARE_OK:
    case TAG_COMMIT: {
      if (count !== 6 || context.from !== "replica") return undefined;
      const epoch = r.uint();
      const viewNumber = r.uint();
      const number = r.uint();
      const replica = r.uint();
      const readRound = r.uint();
      if (
        epoch < 0 || epoch > EPOCH_MAX || viewNumber < 0 || number < 0 || replica < 0 ||
        replica >= context.replicaCount || readRound < 0 || !r.done
      ) {
        return undefined;
      }
      return tag === TAG_PREPARE_OK
        ? { type: "prepare_ok", epoch, viewNumber, opNumber: number, replica, readRound }
        : { type: "commit", epoch, viewNumber, commitNumber: number, replica, readRound };
    }
    case TAG_CHECKPOINT_CHUNK: {
      if (count !== 6 || context.from !== "replica") return undefined;
      const epoch = r.uint();
      const opNumber = r.uint();
      const index = r.uint();
      const bytes = r.bin();
      const replica = r.uint();
      if (
        epoch < 0 || epoch > EPOCH_MAX || opNumber < 0 || index < 0 ||
        index >= CHUNK_INDEX_LIMIT || bytes === undefined || replica < 0 ||
        replica >= context.replicaCount || !r.done
      ) {
        return undefined;
      }
      return { type: "checkpoint_chunk", epoch, opNumber, index, bytes, replica };
    }
    default:
      return undefined;
  }
}

// ---------------------------------------------------------------- strict msgpack scan

/**
 * Checks that `bytes` hold exactly one msgpack value of the shapes a body may have before
 * msgpackr sees them: no maps and no extension types (msgpackr decodes its built-in extensions
 * whatever the options), never the unused byte 0xc1, no truncation and no trailing bytes, arrays
 * nested at most `MSGPACK_DEPTH_MAX` deep and at most `MSGPACK_VALUES_MAX` values in all. Every
 * declared length is checked against the bytes present, so msgpackr never allocates more than a
 * small multiple of the input. Returns an error message, or undefined when the bytes pass. The
 * scan is iterative and each step consumes at least one byte: it is linear in the input.
 */
function scanBody(bytes: Uint8Array): string | undefined {
  const length = bytes.length;
  if (length === 0) return "body is empty";
  // The number of values still expected inside each open array, innermost last.
  const open: number[] = [];
  let values = 0;
  let position = 0;
  for (;;) {
    if (position >= length) return "body is truncated msgpack";
    if (++values > MSGPACK_VALUES_MAX) {
      return `body holds more than ${MSGPACK_VALUES_MAX} msgpack values`;
    }
    const byte = bytes[position] as number;
    let size = 1;
    let children = 0;
    if (byte <= 0x7f || byte >= 0xe0 || byte === 0xc0 || byte === 0xc2 || byte === 0xc3) {
      // A fixint, nil or boolean: the byte is the whole value.
    } else if (byte >= 0x90 && byte <= 0x9f) {
      children = byte & 0x0f;
    } else if (byte >= 0xa0 && byte <= 0xbf) {
      size = 1 + (byte & 0x1f);
    } else if (byte >= 0xca && byte <= 0xd3) {
      // float 32/64, uint 8/16/32/64 and int 8/16/32/64.
      size = 1 + (SCALAR_SIZES[byte - 0xca] as number);
    } else if (byte === 0xc4 || byte === 0xd9) {
      if (position + 2 > length) return "body is truncated msgpack";
      size = 2 + (bytes[position + 1] as number);
    } else if (byte === 0xc5 || byte === 0xda || byte === 0xdc) {
      if (position + 3 > length) return "body is truncated msgpack";
      const field = ((bytes[position + 1] as number) << 8) | (bytes[position + 2] as number);
      if (byte === 0xdc) {
        size = 3;
        children = field;
      } else {
        size = 3 + field;
      }
    } else if (byte === 0xc6 || byte === 0xdb || byte === 0xdd) {
      if (position + 5 > length) return "body is truncated msgpack";
      const field = (((bytes[position + 1] as number) << 24) |
        ((bytes[position + 2] as number) << 16) | ((bytes[position + 3] as number) << 8) |
        (bytes[position + 4] as number)) >>> 0;
      if (byte === 0xdd) {
        size = 5;
        children = field;
      } else {
        size = 5 + field;
      }
    } else if (byte === 0xc1) {
      return `body holds byte 0xc1 at ${position}, never used in msgpack`;
    } else if ((byte >= 0x80 && byte <= 0x8f) || byte === 0xde || byte === 0xdf) {
      return `body holds a msgpack map at byte ${position}; messages use arrays only`;
    } else {
      // What remains is ext 8/16/32 (0xc7..0xc9) and fixext (0xd4..0xd8).
      return `body holds a msgpack extension type at byte ${position}, which is not allowed`;
    }
    position += size;
    if (position > length) return "body is truncated msgpack";
    if (children > 0) {
      if (open.length >= MSGPACK_DEPTH_MAX) {
        return `body nests arrays deeper than ${MSGPACK_DEPTH_MAX} levels`;
      }
      // Each child takes at least one byte: a count beyond the bytes left is truncated data.
      if (children > length - position) return "body is truncated msgpack";
      open.push(children);
      continue;
    }
    // A value is complete: close every array it completes.
    for (;;) {
      const innermost = open.length - 1;
      if (innermost < 0) {
        if (position < length) {
          const trailing = length - position;
          return `body has ${trailing} trailing byte${trailing === 1 ? "" : "s"}`;
        }
        return undefined;
      }
      const remaining = (open[innermost] as number) - 1;
      if (remaining > 0) {
        open[innermost] = remaining;
        break;
      }
      open.pop();
    }
  }
}

/** Payload sizes of float 32/64, uint 8/16/32/64 and int 8/16/32/64 (0xca..0xd3). */
const SCALAR_SIZES: readonly number[] = [4, 8, 1, 2, 4, 8, 1, 2, 4, 8];

// ---------------------------------------------------------------- decoding and validation

/** A decoded message, or why the body is not one. */
export type DecodeResult =
  | { readonly ok: true; readonly message: Message }
  | { readonly ok: false; readonly error: string };

/** What a connection may carry, so that a peer cannot send messages outside its role. */
export interface ValidationContext {
  /**
   * What the peer may send: "client" (a client connection to a replica), "replica" (a peer
   * replica connection), or "reply" (a replica answering a client).
   */
  readonly from: "client" | "replica" | "reply";
  /**
   * The number of member ids the receiver accepts (at most `ADDRESS_BOOK_MAX`): every `replica`
   * field, the sender's member id (an index into the group's address book, which grows with
   * reconfigurations), must be below it. Not the size of one configuration: a member added by a
   * reconfiguration has an id past the first configuration's, so a receiver passes the size of
   * the address book it knows, or `ADDRESS_BOOK_MAX` to leave the check to the core.
   */
  readonly replicaCount: number;
}

const ALLOWED_TYPES: { readonly [from in ValidationContext["from"]]: ReadonlySet<MessageType> } = {
  client: new Set(CLIENT_MESSAGE_TYPES),
  replica: new Set(REPLICA_MESSAGE_TYPES),
  reply: new Set(CLIENT_REPLY_TYPES),
};

const SENDER_DESCRIPTIONS: { readonly [from in ValidationContext["from"]]: string } = {
  client: "a client",
  replica: "a peer replica",
  reply: "a replica answering a client",
};

/**
 * Thrown inside the validator and caught by `decodeMessage`, which turns it into an error result.
 * Not an Error: nothing needs its stack, and capturing one would slow down rejecting bad input.
 */
class Invalid {
  constructor(readonly message: string) {}
}

function fail(message: string): never {
  throw new Invalid(message);
}

/** Names a decoded value for an error message: numbers by value, anything else by type. */
function describe(value: unknown): string {
  if (value === null || value === undefined) return "nil";
  if (typeof value === "number" || typeof value === "bigint") return String(value);
  if (value instanceof Uint8Array) return "binary";
  if (Array.isArray(value)) return "array";
  if (value instanceof Map) return "map";
  return typeof value;
}

/**
 * `entries[3].opNumber` for a field of an element of a list (`entries` unless named), else the
 * field's name.
 */
function fieldName(field: string, entryIndex: number, list = "entries"): string {
  return entryIndex < 0 ? field : `${list}[${entryIndex}].${field}`;
}

const SAFE_INTEGER_MAX_BIGINT = BigInt(Number.MAX_SAFE_INTEGER);

/** A non-negative safe integer, else a failure naming `field`. */
function natural(
  value: unknown,
  type: MessageType,
  field: string,
  entryIndex = -1,
  list = "entries",
): number {
  if (typeof value === "number") {
    // `+ 0` turns a float64 -0 into 0, so that the result compares equal to what was sent.
    if (value >= 0 && Number.isSafeInteger(value)) return value + 0;
  } else if (typeof value === "bigint") {
    // msgpackr decodes uint64 and int64 as bigint even when they are small.
    if (value >= 0n && value <= SAFE_INTEGER_MAX_BIGINT) return Number(value);
  }
  return fail(
    `${type}: ${fieldName(field, entryIndex, list)} must be a non-negative safe integer, ` +
      `got ${describe(value)}`,
  );
}

/** A 32-bit checksum. */
function checksum(value: unknown, type: MessageType, field: string): number {
  const number = natural(value, type, field);
  if (number > 0xffffffff) fail(`${type}: ${field} ${number} is not a 32-bit checksum`);
  return number;
}

/** A sender's member id, below the receiver's `ValidationContext.replicaCount`. */
function replicaIndex(value: unknown, type: MessageType, replicaCount: number): number {
  const replica = natural(value, type, "replica");
  if (replica >= replicaCount) {
    fail(`${type}: replica ${replica} out of range (${replicaCount} member ids)`);
  }
  return replica;
}

/** §7 An epoch: a non-negative safe integer up to `EPOCH_MAX`. */
function epochNumber(value: unknown, type: MessageType): number {
  const epoch = natural(value, type, "epoch");
  if (epoch > EPOCH_MAX) fail(`${type}: epoch ${epoch} exceeds ${EPOCH_MAX}`);
  return epoch;
}

function boolean(value: unknown, type: MessageType, field: string): boolean {
  if (typeof value !== "boolean") {
    fail(`${type}: ${field} must be a boolean, got ${describe(value)}`);
  }
  return value;
}

/**
 * A msgpack bin as a plain Uint8Array view, at most `bytesMax` long. The body is decoded through
 * a plain view, so msgpackr's bins are plain already; the check converts should that change.
 */
function binary(
  value: unknown,
  type: MessageType,
  field: string,
  bytesMax: number,
  entryIndex = -1,
  list = "entries",
): Uint8Array {
  if (!(value instanceof Uint8Array)) {
    return fail(
      `${type}: ${fieldName(field, entryIndex, list)} must be binary, got ${describe(value)}`,
    );
  }
  if (value.byteLength > bytesMax) {
    fail(
      `${type}: ${fieldName(field, entryIndex, list)} of ${value.byteLength} bytes exceeds ` +
        `${bytesMax}`,
    );
  }
  return value.constructor === Uint8Array
    ? value
    : new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
}

/**
 * The list of strings `field`: `countMin` to `countMax` of them, each at most
 * `ADDRESS_LENGTH_MAX` UTF-16 code units, and not empty if `nonEmpty`. Duplicates are not this
 * codec's business: what they mean (a bad configuration, a corrupt address book) is the core's.
 */
function addressList(
  value: unknown,
  type: MessageType,
  field: string,
  countMin: number,
  countMax: number,
  nonEmpty: boolean,
): string[] {
  if (!Array.isArray(value)) fail(`${type}: ${field} must be an array, got ${describe(value)}`);
  if (value.length > countMax) {
    fail(`${type}: ${field} has ${value.length} elements, more than ${countMax}`);
  }
  if (value.length < countMin) {
    fail(`${type}: ${field} has ${value.length} elements, fewer than ${countMin}`);
  }
  const out: string[] = [];
  for (let index = 0; index < value.length; index++) {
    const address: unknown = value[index];
    if (typeof address !== "string") {
      fail(`${type}: ${field}[${index}] must be a string, got ${describe(address)}`);
    }
    if (address.length > ADDRESS_LENGTH_MAX) {
      fail(
        `${type}: ${field}[${index}] is ${address.length} characters, ` +
          `more than ${ADDRESS_LENGTH_MAX}`,
      );
    }
    if (nonEmpty && address.length === 0) fail(`${type}: ${field}[${index}] is empty`);
    out.push(address);
  }
  return out;
}

/**
 * The member ids `field` of a StartEpoch or NewEpoch: at most `MEMBERS_MAX`, distinct, each an
 * index into the message's address book of `bookSize` addresses.
 */
function memberIds(value: unknown, type: MessageType, field: string, bookSize: number): number[] {
  if (!Array.isArray(value)) {
    return fail(`${type}: ${field} must be an array, got ${describe(value)}`);
  }
  if (value.length > MEMBERS_MAX) {
    fail(`${type}: ${field} has ${value.length} elements, more than ${MEMBERS_MAX}`);
  }
  const out = new Array<number>(value.length);
  // Id to position, to name the repeated one; at most `MEMBERS_MAX`.
  const seen = new Map<number, number>();
  for (let position = 0; position < value.length; position++) {
    const id = natural(value[position], type, `${field}[${position}]`);
    if (id >= bookSize) {
      fail(
        `${type}: ${field}[${position}] ${id} is outside the address book (${bookSize} addresses)`,
      );
    }
    const first = seen.get(id);
    if (first !== undefined) {
      fail(`${type}: ${field}[${position}] ${id} repeats ${field}[${first}]`);
    }
    seen.set(id, position);
    out[position] = id;
  }
  return out;
}

/**
 * Log entries with consecutive op-numbers, starting at `firstOpNumber` when it is not -1 (else
 * at 1 or more), created in views up to the message's `viewNumber`, with non-decreasing
 * timestamps (the log asserts that order, so a message breaking it must not reach the core).
 */
function logEntries(
  value: unknown,
  type: MessageType,
  viewNumber: number,
  firstOpNumber: number,
): LogEntry[] {
  if (!Array.isArray(value)) {
    return fail(`${type}: entries must be an array, got ${describe(value)}`);
  }
  if (value.length > ENTRIES_MAX) {
    fail(`${type}: ${value.length} entries exceed the limit of ${ENTRIES_MAX}`);
  }
  const out = new Array<LogEntry>(value.length);
  let previousOpNumber = firstOpNumber - 1;
  let previousTimestamp = 0;
  for (let index = 0; index < value.length; index++) {
    const fields: unknown = value[index];
    if (!Array.isArray(fields) || fields.length !== ENTRY_FIELDS) {
      fail(
        `${type}: entries[${index}] must be an array of ${ENTRY_FIELDS} fields, got ` +
          (Array.isArray(fields) ? `${fields.length}` : describe(fields)),
      );
    }
    const opNumber = natural(fields[0], type, "opNumber", index);
    if (index === 0 && firstOpNumber < 0) {
      if (opNumber < 1) fail(`${type}: entries[0].opNumber must be at least 1, got 0`);
    } else if (opNumber !== previousOpNumber + 1) {
      fail(`${type}: entries[${index}].opNumber must be ${previousOpNumber + 1}, got ${opNumber}`);
    }
    previousOpNumber = opNumber;
    const entryView = natural(fields[1], type, "viewNumber", index);
    if (entryView > viewNumber) {
      fail(
        `${type}: entries[${index}].viewNumber ${entryView} exceeds the message's viewNumber ` +
          `${viewNumber}`,
      );
    }
    const clientId = natural(fields[2], type, "clientId", index);
    const requestNumber = natural(fields[3], type, "requestNumber", index);
    const timestamp = natural(fields[4], type, "timestamp", index);
    if (timestamp < previousTimestamp) {
      fail(
        `${type}: entries[${index}].timestamp ${timestamp} is less than the previous entry's ` +
          `${previousTimestamp}`,
      );
    }
    previousTimestamp = timestamp;
    const operation = binary(
      fields[5],
      type,
      "operation",
      LIMITS_DEFAULT.operationBytesMax,
      index,
    );
    out[index] = { opNumber, viewNumber: entryView, clientId, requestNumber, operation, timestamp };
  }
  return out;
}

/** A msgpack bin of exactly `bytes` bytes, as a plain view. */
function binaryOfLength(
  value: unknown,
  type: MessageType,
  field: string,
  bytes: number,
  entryIndex = -1,
  list = "entries",
): Uint8Array {
  const out = binary(value, type, field, Number.MAX_SAFE_INTEGER, entryIndex, list);
  if (out.byteLength !== bytes) {
    fail(
      `${type}: ${fieldName(field, entryIndex, list)} must be ${bytes} bytes, ` +
        `got ${out.byteLength}`,
    );
  }
  return out;
}

/**
 * A manifest's metadata, opaque here (the core decodes it, `decodeCheckpointMetadata`): the
 * fixed part and the membership after it, so more than `CHECKPOINT_METADATA_BYTES`, and at most
 * `CHECKPOINT_METADATA_BYTES_MAX`.
 */
function checkpointMetadata(value: unknown, type: MessageType): Uint8Array {
  const out = binary(value, type, "metadata", CHECKPOINT_METADATA_BYTES_MAX);
  if (out.byteLength <= CHECKPOINT_METADATA_BYTES) {
    fail(
      `${type}: metadata of ${out.byteLength} bytes must be longer than ` +
        `${CHECKPOINT_METADATA_BYTES} (the fixed part and the membership)`,
    );
  }
  return out;
}

/** A checkpoint chunk's index: a non-negative integer below 2^32. */
function chunkIndex(value: unknown, type: MessageType, field: string): number {
  const index = natural(value, type, field);
  if (index >= CHUNK_INDEX_LIMIT) fail(`${type}: ${field} ${index} is not below 2^32`);
  return index;
}

/** A manifest's chunks: at least one, each a 32-byte hash and a length a frame can carry. */
function chunkList(value: unknown, type: MessageType): CheckpointChunkInfo[] {
  if (!Array.isArray(value)) {
    return fail(`${type}: chunks must be an array, got ${describe(value)}`);
  }
  if (value.length === 0) fail(`${type}: chunks must not be empty`);
  const out = new Array<CheckpointChunkInfo>(value.length);
  for (let index = 0; index < value.length; index++) {
    const fields: unknown = value[index];
    if (!Array.isArray(fields) || fields.length !== CHUNK_FIELDS) {
      fail(
        `${type}: chunks[${index}] must be an array of ${CHUNK_FIELDS} fields, got ` +
          (Array.isArray(fields) ? `${fields.length}` : describe(fields)),
      );
    }
    const hash = binaryOfLength(fields[0], type, "hash", CHUNK_HASH_BYTES, index, "chunks");
    const length = natural(fields[1], type, "length", index, "chunks");
    if (length > FRAME_BODY_BYTES_MAX) {
      fail(
        `${type}: chunks[${index}].length ${length} exceeds the frame body limit of ` +
          `${FRAME_BODY_BYTES_MAX}`,
      );
    }
    out[index] = { hash, length };
  }
  return out;
}

/** The chunks a GetCheckpointChunks asks for: 1 to the limit, distinct, each below 2^32. */
function chunkIndexes(value: unknown, type: MessageType): number[] {
  if (!Array.isArray(value)) {
    return fail(`${type}: indexes must be an array, got ${describe(value)}`);
  }
  if (value.length === 0) fail(`${type}: indexes must not be empty`);
  if (value.length > CHECKPOINT_CHUNKS_PER_REQUEST_MAX) {
    fail(
      `${type}: ${value.length} indexes exceed the limit of ${CHECKPOINT_CHUNKS_PER_REQUEST_MAX}`,
    );
  }
  const out = new Array<number>(value.length);
  // Index to position, to name the repeated one; at most a few dozen.
  const seen = new Map<number, number>();
  for (let position = 0; position < value.length; position++) {
    const index = chunkIndex(value[position], type, `indexes[${position}]`);
    const first = seen.get(index);
    if (first !== undefined) {
      fail(`${type}: indexes[${position}] ${index} repeats indexes[${first}]`);
    }
    seen.set(index, position);
    out[position] = index;
  }
  return out;
}

function checkCommitWithinOp(type: MessageType, commitNumber: number, opNumber: number): void {
  if (commitNumber > opNumber) {
    fail(`${type}: commitNumber ${commitNumber} exceeds opNumber ${opNumber}`);
  }
}

/** Entries that follow `anchorOpNumber` must end exactly at `opNumber`. */
function checkReachesOp(
  type: MessageType,
  anchorOpNumber: number,
  entryCount: number,
  opNumber: number,
): void {
  if (anchorOpNumber + entryCount !== opNumber) {
    fail(
      `${type}: anchorOpNumber ${anchorOpNumber} + ${entryCount} entries must equal ` +
        `opNumber ${opNumber}`,
    );
  }
}

/** The message a field array (tag checked, length checked) encodes; fails if invalid. */
function toMessage(
  type: MessageType,
  f: readonly unknown[],
  replicaCount: number,
): Message {
  switch (type) {
    case "request":
      return {
        type,
        clientId: natural(f[1], type, "clientId"),
        requestNumber: natural(f[2], type, "requestNumber"),
        operation: binary(f[3], type, "operation", LIMITS_DEFAULT.operationBytesMax),
      };
    case "reply":
      return {
        type,
        viewNumber: natural(f[1], type, "viewNumber"),
        clientId: natural(f[2], type, "clientId"),
        requestNumber: natural(f[3], type, "requestNumber"),
        opNumber: natural(f[4], type, "opNumber"),
        operationChecksum: checksum(f[5], type, "operationChecksum"),
        // A result is bounded by the frame only: the state machine decides its size.
        result: binary(f[6], type, "result", Number.MAX_SAFE_INTEGER),
      };
    case "not_primary":
      return {
        type,
        clientId: natural(f[1], type, "clientId"),
        requestNumber: natural(f[2], type, "requestNumber"),
        viewNumber: natural(f[3], type, "viewNumber"),
        replica: replicaIndex(f[4], type, replicaCount),
      };
    case "request_number_query":
      return {
        type,
        clientId: natural(f[1], type, "clientId"),
        nonce: natural(f[2], type, "nonce"),
      };
    case "request_number_reply":
      return {
        type,
        clientId: natural(f[1], type, "clientId"),
        nonce: natural(f[2], type, "nonce"),
        requestNumber: natural(f[3], type, "requestNumber"),
        replica: replicaIndex(f[4], type, replicaCount),
      };
    case "locate":
      return { type, clientId: natural(f[1], type, "clientId") };
    case "reconfiguration":
      return {
        type,
        clientId: natural(f[1], type, "clientId"),
        requestNumber: natural(f[2], type, "requestNumber"),
        epoch: epochNumber(f[3], type),
        // Only the shape: an even, empty or repeating configuration is the replica's to answer
        // (a Rejected "bad_configuration" the administrator sees), not a malformed message.
        addresses: addressList(f[4], type, "addresses", 0, ADDRESSES_MAX, true),
      };
    case "check_epoch":
      return {
        type,
        clientId: natural(f[1], type, "clientId"),
        requestNumber: natural(f[2], type, "requestNumber"),
        epoch: epochNumber(f[3], type),
      };
    case "configuration":
      return {
        type,
        clientId: natural(f[1], type, "clientId"),
        requestNumber: natural(f[2], type, "requestNumber"),
        epoch: epochNumber(f[3], type),
        viewNumber: natural(f[4], type, "viewNumber"),
        replica: replicaIndex(f[5], type, replicaCount),
        addresses: addressList(f[6], type, "addresses", 0, ADDRESSES_MAX, false),
        requestNumberFloor: natural(f[7], type, "requestNumberFloor"),
      };
    case "rejected": {
      const code = natural(f[3], type, "reason");
      const reason = REJECT_REASONS[code];
      if (reason === undefined) fail(`${type}: unknown reason ${code}`);
      return {
        type,
        clientId: natural(f[1], type, "clientId"),
        requestNumber: natural(f[2], type, "requestNumber"),
        reason,
        floor: natural(f[4], type, "floor"),
        replica: replicaIndex(f[5], type, replicaCount),
      };
    }
    case "prepare": {
      const epoch = epochNumber(f[1], type);
      const viewNumber = natural(f[2], type, "viewNumber");
      const commitNumber = natural(f[3], type, "commitNumber");
      const replica = replicaIndex(f[4], type, replicaCount);
      // A Prepare may start anywhere after the backup's log, and its commit-number may be ahead
      // of or behind its entries: there is nothing to check between them.
      const entries = logEntries(f[5], type, viewNumber, -1);
      return { type, epoch, viewNumber, entries, commitNumber, replica };
    }
    case "prepare_ok":
      return {
        type,
        epoch: epochNumber(f[1], type),
        viewNumber: natural(f[2], type, "viewNumber"),
        opNumber: natural(f[3], type, "opNumber"),
        replica: replicaIndex(f[4], type, replicaCount),
        readRound: natural(f[5], type, "readRound"),
      };
    case "commit":
      return {
        type,
        epoch: epochNumber(f[1], type),
        viewNumber: natural(f[2], type, "viewNumber"),
        commitNumber: natural(f[3], type, "commitNumber"),
        replica: replicaIndex(f[4], type, replicaCount),
        readRound: natural(f[5], type, "readRound"),
      };
    case "start_view_change":
      return {
        type,
        epoch: epochNumber(f[1], type),
        viewNumber: natural(f[2], type, "viewNumber"),
        replica: replicaIndex(f[3], type, replicaCount),
      };
    case "do_view_change": {
      const epoch = epochNumber(f[1], type);
      const viewNumber = natural(f[2], type, "viewNumber");
      const lastNormalView = natural(f[3], type, "lastNormalView");
      const opNumber = natural(f[4], type, "opNumber");
      const commitNumber = natural(f[5], type, "commitNumber");
      const replica = replicaIndex(f[6], type, replicaCount);
      if (lastNormalView > viewNumber) {
        fail(`${type}: lastNormalView ${lastNormalView} exceeds viewNumber ${viewNumber}`);
      }
      checkCommitWithinOp(type, commitNumber, opNumber);
      const entries = logEntries(f[7], type, viewNumber, commitNumber + 1);
      if (entries.length !== opNumber - commitNumber) {
        fail(
          `${type}: entries must be commitNumber+1..opNumber (${opNumber - commitNumber} ` +
            `entries), got ${entries.length}`,
        );
      }
      return { type, epoch, viewNumber, lastNormalView, opNumber, commitNumber, entries, replica };
    }
    case "start_view": {
      const epoch = epochNumber(f[1], type);
      const viewNumber = natural(f[2], type, "viewNumber");
      const anchorOpNumber = natural(f[3], type, "anchorOpNumber");
      const opNumber = natural(f[4], type, "opNumber");
      const commitNumber = natural(f[5], type, "commitNumber");
      const replica = replicaIndex(f[6], type, replicaCount);
      checkCommitWithinOp(type, commitNumber, opNumber);
      const entries = logEntries(f[7], type, viewNumber, anchorOpNumber + 1);
      checkReachesOp(type, anchorOpNumber, entries.length, opNumber);
      return { type, epoch, viewNumber, anchorOpNumber, entries, opNumber, commitNumber, replica };
    }
    case "request_start_view":
      return {
        type,
        epoch: epochNumber(f[1], type),
        viewNumber: natural(f[2], type, "viewNumber"),
        commitNumber: natural(f[3], type, "commitNumber"),
        replica: replicaIndex(f[4], type, replicaCount),
      };
    case "recovery":
      return {
        type,
        epoch: epochNumber(f[1], type),
        nonce: natural(f[2], type, "nonce"),
        commitNumber: natural(f[3], type, "commitNumber"),
        replica: replicaIndex(f[4], type, replicaCount),
      };
    case "recovery_response": {
      const epoch = epochNumber(f[1], type);
      const viewNumber = natural(f[2], type, "viewNumber");
      const nonce = natural(f[3], type, "nonce");
      const isPrimary = boolean(f[4], type, "isPrimary");
      const anchorOpNumber = natural(f[5], type, "anchorOpNumber");
      const opNumber = natural(f[6], type, "opNumber");
      const commitNumber = natural(f[7], type, "commitNumber");
      const replica = replicaIndex(f[8], type, replicaCount);
      checkCommitWithinOp(type, commitNumber, opNumber);
      const entries = logEntries(f[9], type, viewNumber, anchorOpNumber + 1);
      if (isPrimary) {
        checkReachesOp(type, anchorOpNumber, entries.length, opNumber);
      } else if (entries.length > 0) {
        fail(`${type}: a backup's response (isPrimary false) carries ${entries.length} entries`);
      }
      return {
        type,
        epoch,
        viewNumber,
        nonce,
        isPrimary,
        anchorOpNumber,
        entries,
        opNumber,
        commitNumber,
        replica,
      };
    }
    case "get_state":
      return {
        type,
        epoch: epochNumber(f[1], type),
        viewNumber: natural(f[2], type, "viewNumber"),
        opNumber: natural(f[3], type, "opNumber"),
        replica: replicaIndex(f[4], type, replicaCount),
      };
    case "new_state": {
      const epoch = epochNumber(f[1], type);
      const viewNumber = natural(f[2], type, "viewNumber");
      const normal = boolean(f[3], type, "normal");
      const anchorOpNumber = natural(f[4], type, "anchorOpNumber");
      const opNumber = natural(f[5], type, "opNumber");
      const commitNumber = natural(f[6], type, "commitNumber");
      const replica = replicaIndex(f[7], type, replicaCount);
      checkCommitWithinOp(type, commitNumber, opNumber);
      // The responder may send fewer entries than it holds (transfer limits), never more.
      const entries = logEntries(f[8], type, viewNumber, anchorOpNumber + 1);
      const last = anchorOpNumber + entries.length;
      if (entries.length > 0 && last > opNumber) {
        fail(`${type}: entries end at op ${last}, past opNumber ${opNumber}`);
      }
      return {
        type,
        epoch,
        viewNumber,
        normal,
        anchorOpNumber,
        entries,
        opNumber,
        commitNumber,
        replica,
      };
    }
    case "checkpoint_manifest":
      return {
        type,
        epoch: epochNumber(f[1], type),
        viewNumber: natural(f[2], type, "viewNumber"),
        opNumber: natural(f[3], type, "opNumber"),
        metadata: checkpointMetadata(f[4], type),
        chunks: chunkList(f[5], type),
        replica: replicaIndex(f[6], type, replicaCount),
      };
    case "get_checkpoint_chunks":
      return {
        type,
        epoch: epochNumber(f[1], type),
        opNumber: natural(f[2], type, "opNumber"),
        indexes: chunkIndexes(f[3], type),
        replica: replicaIndex(f[4], type, replicaCount),
      };
    case "checkpoint_chunk":
      return {
        type,
        epoch: epochNumber(f[1], type),
        opNumber: natural(f[2], type, "opNumber"),
        index: chunkIndex(f[3], type, "index"),
        // Bounded by the frame only; the receiver checks it against the manifest's hash.
        bytes: binary(f[4], type, "bytes", Number.MAX_SAFE_INTEGER),
        replica: replicaIndex(f[5], type, replicaCount),
      };
    case "start_epoch":
    case "new_epoch": {
      const epoch = epochNumber(f[1], type);
      const opNumber = natural(f[2], type, "opNumber");
      if (opNumber > OP_NUMBER_MAX) {
        fail(`${type}: opNumber ${opNumber} exceeds ${OP_NUMBER_MAX}`);
      }
      const startViewNumber = natural(f[3], type, "startViewNumber");
      if (startViewNumber > VIEW_NUMBER_MAX) {
        fail(`${type}: startViewNumber ${startViewNumber} exceeds ${VIEW_NUMBER_MAX}`);
      }
      // The shape only: the core checks the membership as a whole (`membershipProblem`).
      const addresses = addressList(f[4], type, "addresses", 1, ADDRESS_BOOK_MAX, true);
      const members = memberIds(f[5], type, "members", addresses.length);
      if (members.length === 0) fail(`${type}: members must not be empty`);
      const previousMembers = memberIds(f[6], type, "previousMembers", addresses.length);
      const replica = replicaIndex(f[7], type, replicaCount);
      return {
        type,
        epoch,
        opNumber,
        startViewNumber,
        addresses,
        members,
        previousMembers,
        replica,
      };
    }
    case "epoch_started":
      return {
        type,
        epoch: epochNumber(f[1], type),
        replica: replicaIndex(f[2], type, replicaCount),
      };
  }
}

/** The number of elements, tag included, of each message type's array. */
const FIELD_COUNTS: { readonly [type in MessageType]: number } = {
  request: 4,
  reply: 7,
  not_primary: 5,
  request_number_query: 3,
  request_number_reply: 5,
  locate: 2,
  reconfiguration: 5,
  check_epoch: 4,
  configuration: 8,
  rejected: 6,
  prepare: 6,
  prepare_ok: 6,
  commit: 6,
  start_view_change: 4,
  do_view_change: 8,
  start_view: 8,
  request_start_view: 5,
  recovery: 5,
  recovery_response: 10,
  get_state: 5,
  new_state: 9,
  checkpoint_manifest: 7,
  get_checkpoint_chunks: 5,
  checkpoint_chunk: 6,
  start_epoch: 8,
  new_epoch: 8,
  epoch_started: 3,
};

function decodeFields(body: Uint8Array, context: ValidationContext): Message {
  const scanError = scanBody(body);
  if (scanError !== undefined) fail(scanError);
  let value: unknown;
  try {
    // A fresh plain view: msgpackr caches a DataView on its input as an own property, which must
    // not land on the caller's array, and bins decoded from a plain view are plain views too.
    value = unpackr.unpack(new Uint8Array(body.buffer, body.byteOffset, body.byteLength));
  } catch (error) {
    // The scan leaves little for msgpackr to reject; this is a last line of defence.
    const reason = error instanceof Error ? error.message : String(error);
    return fail(`body is not valid msgpack: ${reason.slice(0, LIBRARY_ERROR_LENGTH_MAX)}`);
  }
  if (!Array.isArray(value)) {
    return fail(`body must be a msgpack array [tag, ...fields], got ${describe(value)}`);
  }
  const rawTag: unknown = value[0];
  // msgpackr decodes uint64 as bigint whatever its value; a tag so encoded is still a tag.
  const tag = typeof rawTag === "bigint" && rawTag <= SAFE_INTEGER_MAX_BIGINT
    ? Number(rawTag)
    : rawTag;
  if (typeof tag !== "number" || !Number.isSafeInteger(tag)) {
    return fail(`message tag must be an integer, got ${describe(tag)}`);
  }
  const type = TAG_TYPES[tag];
  if (type === undefined) return fail(`unknown message tag ${tag}`);
  if (!ALLOWED_TYPES[context.from].has(type)) {
    fail(`message type ${type} is not allowed from ${SENDER_DESCRIPTIONS[context.from]}`);
  }
  const expected = FIELD_COUNTS[type];
  if (value.length !== expected) {
    fail(`${type}: expected an array of ${expected} elements, got ${value.length}`);
  }
  return toMessage(type, value, context.replicaCount);
}

/**
 * Decodes and validates a body received from the peer described by `context`. Never throws: any
 * problem, from malformed msgpack to an inconsistent log suffix, is an error result naming it.
 * Binary fields (`operation`, `result`, a checkpoint's `metadata`, chunk hashes and chunk
 * `bytes`) are views into `body`: a receiver that keeps one long should copy it, or it keeps the
 * whole body (and the network read the body came in) alive.
 */
export function decodeMessage(body: Uint8Array, context: ValidationContext): DecodeResult {
  const fast = decodeFast(body, context);
  if (fast !== undefined) return { ok: true, message: fast };
  return decodeMessageGeneral(body, context);
}

/**
 * `decodeMessage` through msgpackr only: every body the hand-written path declines, and (in
 * tests) every body, to show that both paths agree.
 */
export function decodeMessageGeneral(body: Uint8Array, context: ValidationContext): DecodeResult {
  try {
    return { ok: true, message: decodeFields(body, context) };
  } catch (error) {
    if (error instanceof Invalid) return { ok: false, error: error.message };
    // Unreachable unless this module has a bug; the promise never to throw still holds.
    return { ok: false, error: `internal decoding error: ${String(error)}` };
  }
}
