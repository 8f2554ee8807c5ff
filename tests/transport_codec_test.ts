import { strict as assert } from "node:assert";
import { concatBytes } from "../src/lib/bytes.ts";
import { sha256 } from "../src/lib/sha256.ts";
import { ScratchBuffer } from "../src/lib/msgpack_fast.ts";
import fc from "fast-check";
import { Packr } from "msgpackr";
import {
  ADDRESS_LENGTH_MAX,
  ADDRESSES_MAX,
  CHUNK_INDEX_LIMIT,
  decodeMessage,
  decodeMessageGeneral,
  encodeFramedMessage,
  encodeMessage,
  ENTRIES_MAX,
  EPOCH_MAX,
  MESSAGE_TAGS,
  TAG_CHECK_EPOCH,
  TAG_CHECKPOINT_CHUNK,
  TAG_CHECKPOINT_MANIFEST,
  TAG_COMMIT,
  TAG_CONFIGURATION,
  TAG_DO_VIEW_CHANGE,
  TAG_EPOCH_STARTED,
  TAG_GET_CHECKPOINT_CHUNKS,
  TAG_LOCATE,
  TAG_NEW_EPOCH,
  TAG_NEW_STATE,
  TAG_PREPARE,
  TAG_PREPARE_OK,
  TAG_RECONFIGURATION,
  TAG_RECOVERY_RESPONSE,
  TAG_REJECTED,
  TAG_REPLY,
  TAG_REQUEST,
  TAG_START_EPOCH,
  TAG_START_VIEW,
  type ValidationContext,
} from "../src/transport/codec.ts";
import {
  crc32c,
  encodeFrame,
  FRAME_BODY_BYTES_MAX,
  FRAME_HEADER_BYTES,
  FrameDecoder,
  writeFrame,
} from "../src/transport/frame.ts";
import {
  CHECKPOINT_METADATA_BYTES,
  CHECKPOINT_METADATA_BYTES_MAX,
  CHUNK_HASH_BYTES,
  encodeCheckpointMetadata,
} from "../src/vr/checkpoint.ts";
import {
  CHECKPOINT_CHUNKS_PER_REQUEST_MAX,
  LIMITS_DEFAULT,
  OP_NUMBER_MAX,
  VIEW_NUMBER_MAX,
} from "../src/vr/constants.ts";
import { ADDRESS_BOOK_MAX, initialMembership, MEMBERS_MAX } from "../src/vr/membership.ts";
import {
  CLIENT_MESSAGE_TYPES,
  CLIENT_REPLY_TYPES,
  type LogEntry,
  type Message,
  type MessageType,
  REPLICA_MESSAGE_TYPES,
} from "../src/vr/message.ts";
import { mutatedBytes } from "./_mutate.ts";

const REPLICA_COUNT = 3;
const FROM_REPLICA: ValidationContext = { from: "replica", replicaCount: REPLICA_COUNT };
const FROM_CLIENT: ValidationContext = { from: "client", replicaCount: REPLICA_COUNT };
const TO_CLIENT: ValidationContext = { from: "reply", replicaCount: REPLICA_COUNT };
/** A replica that knows the address book `BOOK`: member ids up to 4. */
const FROM_REPLICA_BOOK: ValidationContext = { from: "replica", replicaCount: 5 };
/** A timestamp beyond 2^32, as real millisecond clocks are, to cover float64 integers. */
const TIMESTAMP = 1_700_000_000_123;
const STREAM_MESSAGES = 200;
const STREAM_RUNS = 30;
const FUZZ_RUNS = 2_000;
const SPEED_MESSAGES = 100_000;
const SPEED_OPERATION_BYTES = 64;
/** Timed passes over the messages, the first one a warm-up. */
const SPEED_PASSES = 4;

const bytes = (...values: number[]): Uint8Array => new Uint8Array(values);
const text = (value: string): Uint8Array => new TextEncoder().encode(value);

/** Plain msgpack of hand-built (often invalid) field arrays. */
const rawPackr = new Packr({ useRecords: false, moreTypes: false, structuredClone: false });
const raw = (value: unknown): Uint8Array => new Uint8Array(rawPackr.pack(value));

function entry(opNumber: number, viewNumber = 1, operationText = `op${opNumber}`): LogEntry {
  return {
    opNumber,
    viewNumber,
    clientId: 40 + opNumber,
    requestNumber: opNumber,
    operation: text(operationText),
    timestamp: TIMESTAMP + opNumber,
  };
}

/**
 * A checkpoint's metadata, opaque to the codec: more than `CHECKPOINT_METADATA_BYTES` bytes (the
 * fixed part, then the membership), at most `CHECKPOINT_METADATA_BYTES_MAX`.
 */
const METADATA = encodeCheckpointMetadata({
  opNumber: 100,
  entryViewNumber: 5,
  entryTimestamp: TIMESTAMP,
  requestNumberFloor: 0,
  tableChunkCount: 1,
  membership: initialMembership(["127.0.0.1:7001", "127.0.0.1:7002", "[::1]:7003"]),
});
/** The address book of a group that replaced two of its first three members, and the rest. */
const BOOK = ["127.0.0.1:7001", "127.0.0.1:7002", "[::1]:7003", "10.0.0.4:7001", "10.0.0.5:7001"];
/** Two chunks of a checkpoint, as the manifest names them and a chunk carries them. */
const CHUNK_BYTES = [text("the client table"), new Uint8Array(70_000).fill(9)] as const;
const CHUNK_INFOS = CHUNK_BYTES.map((chunk) => ({
  hash: sha256(chunk),
  length: chunk.byteLength,
}));
/** A manifest's chunk as the wire lays it out. */
const wireChunk = (hash: Uint8Array, length: number): unknown[] => [hash, length];

/** An entry as the wire lays it out. */
function wireEntry(e: LogEntry): unknown[] {
  return [e.opNumber, e.viewNumber, e.clientId, e.requestNumber, e.timestamp, e.operation];
}

/** One sample of every message type, with the context that may carry it. */
const SAMPLES: readonly (readonly [Message, ValidationContext])[] = [
  [{ type: "request", clientId: 7, requestNumber: 3, operation: bytes(1, 2, 3) }, FROM_CLIENT],
  [{ type: "request_number_query", clientId: 7, nonce: 0xffffffff }, FROM_CLIENT],
  [{ type: "locate", clientId: 2 ** 40 }, FROM_CLIENT],
  [{
    type: "reconfiguration",
    clientId: 9,
    requestNumber: 1_733_000_000_000_321,
    epoch: 1,
    addresses: ["127.0.0.1:7001", "10.0.0.4:7001", "10.0.0.5:7001"],
  }, FROM_CLIENT],
  [
    { type: "check_epoch", clientId: 9, requestNumber: 1_733_000_000_000_322, epoch: 2 },
    FROM_CLIENT,
  ],
  [{
    type: "reply",
    viewNumber: 4,
    clientId: 7,
    requestNumber: 3,
    opNumber: 99,
    operationChecksum: 0xdeadbeef,
    result: text("ok"),
  }, TO_CLIENT],
  [
    { type: "not_primary", clientId: 7, requestNumber: 3, viewNumber: 4, replica: 2 },
    TO_CLIENT,
  ],
  [{
    type: "request_number_reply",
    clientId: 7,
    nonce: 12345,
    requestNumber: 3,
    replica: 1,
  }, TO_CLIENT],
  [{
    type: "configuration",
    requestNumber: 1_733_000_000_000_321,
    epoch: 2,
    clientId: 7,
    viewNumber: 4,
    addresses: ["127.0.0.1:7001", "127.0.0.1:7002", "[::1]:7003"],
    replica: 0,
    requestNumberFloor: 1_733_000_000_000_000,
  }, TO_CLIENT],
  ...([
    "conflict",
    "stale",
    "evicted",
    "too_large",
    "ahead",
    "epoch",
    "bad_configuration",
    "reconfiguring",
  ] as const).map((reason) =>
    [{
      type: "rejected",
      clientId: 7,
      requestNumber: 1_733_000_000_000_123,
      reason,
      floor: 3,
      replica: 2,
    }, TO_CLIENT] as const
  ),
  [{
    type: "prepare",
    epoch: 3,
    viewNumber: 5,
    entries: [entry(10, 5), entry(11, 5, ""), entry(12, 5)],
    commitNumber: 9,
    replica: 1,
  }, FROM_REPLICA],
  [
    { type: "prepare_ok", epoch: 0, viewNumber: 5, opNumber: 12, replica: 2, readRound: 0 },
    FROM_REPLICA,
  ],
  [
    { type: "commit", epoch: EPOCH_MAX, viewNumber: 5, commitNumber: 12, replica: 1, readRound: 0 },
    FROM_REPLICA,
  ],
  [{ type: "start_view_change", epoch: 2 ** 31, viewNumber: 6, replica: 0 }, FROM_REPLICA],
  [{
    type: "do_view_change",
    epoch: 0,
    viewNumber: 6,
    lastNormalView: 5,
    opNumber: 12,
    commitNumber: 10,
    entries: [entry(11, 5), entry(12, 5)],
    replica: 2,
  }, FROM_REPLICA],
  [{
    type: "start_view",
    epoch: 0,
    viewNumber: 6,
    anchorOpNumber: 9,
    entries: [entry(10, 5), entry(11, 5), entry(12, 6)],
    opNumber: 12,
    commitNumber: 10,
    replica: 0,
  }, FROM_REPLICA],
  [
    { type: "request_start_view", epoch: 0, viewNumber: 6, commitNumber: 10, replica: 1 },
    FROM_REPLICA,
  ],
  [{ type: "recovery", epoch: 0, nonce: 77, commitNumber: 3, replica: 2 }, FROM_REPLICA],
  [{
    type: "recovery_response",
    epoch: 0,
    viewNumber: 6,
    nonce: 77,
    isPrimary: true,
    anchorOpNumber: 10,
    entries: [entry(11, 5), entry(12, 6)],
    opNumber: 12,
    commitNumber: 11,
    replica: 0,
  }, FROM_REPLICA],
  [{
    type: "recovery_response",
    epoch: 0,
    viewNumber: 6,
    nonce: 77,
    isPrimary: false,
    anchorOpNumber: 0,
    entries: [],
    opNumber: 0,
    commitNumber: 0,
    replica: 1,
  }, FROM_REPLICA],
  [{ type: "get_state", epoch: 0, viewNumber: 6, opNumber: 8, replica: 2 }, FROM_REPLICA],
  [{
    type: "new_state",
    epoch: 0,
    viewNumber: 6,
    normal: true,
    anchorOpNumber: 8,
    entries: [entry(9, 4), entry(10, 5)],
    opNumber: 12,
    commitNumber: 10,
    replica: 0,
  }, FROM_REPLICA],
  [{
    type: "checkpoint_manifest",
    epoch: 0,
    viewNumber: 6,
    opNumber: 100,
    metadata: METADATA,
    chunks: CHUNK_INFOS,
    replica: 1,
  }, FROM_REPLICA],
  [
    { type: "get_checkpoint_chunks", epoch: 0, opNumber: 100, indexes: [1, 0], replica: 2 },
    FROM_REPLICA,
  ],
  [
    {
      type: "checkpoint_chunk",
      epoch: 300,
      opNumber: 100,
      index: 1,
      bytes: CHUNK_BYTES[1],
      replica: 1,
    },
    FROM_REPLICA,
  ],
  [{
    type: "start_epoch",
    epoch: 2,
    opNumber: 2 ** 40,
    startViewNumber: 17,
    addresses: BOOK,
    members: [0, 3, 4],
    previousMembers: [2, 0, 3],
    replica: 4,
  }, FROM_REPLICA_BOOK],
  [{
    type: "new_epoch",
    epoch: 1,
    opNumber: 12,
    startViewNumber: 7,
    addresses: BOOK.slice(0, 4),
    members: [0, 2, 3],
    previousMembers: [0, 1, 2],
    replica: 1,
  }, FROM_REPLICA_BOOK],
  [{ type: "epoch_started", epoch: 2, replica: 3 }, FROM_REPLICA_BOOK],
];

function decodeOk(body: Uint8Array, context: ValidationContext): Message {
  const result = decodeMessage(body, context);
  if (!result.ok) assert.fail(`expected a valid message, got error: ${result.error}`);
  return result.message;
}

/** Asserts that `body` is rejected with an error containing `fragment`. */
function assertRejected(body: Uint8Array, context: ValidationContext, fragment: string): void {
  const result = decodeMessage(body, context);
  assert.equal(result.ok, false, `expected an error containing ${JSON.stringify(fragment)}`);
  if (!result.ok) {
    assert.ok(
      result.error.includes(fragment),
      `error ${JSON.stringify(result.error)} lacks ${JSON.stringify(fragment)}`,
    );
  }
}

/** Feeds `stream` to a decoder in chunks ending at `cuts`; fails on a frame error. */
function decodeStream(stream: Uint8Array, cuts: readonly number[]): Uint8Array[] {
  const decoder = new FrameDecoder();
  const bodies: Uint8Array[] = [];
  let start = 0;
  for (const cut of [...cuts, stream.byteLength]) {
    if (cut < start) continue;
    // Copies, so that chunks do not share memory with the stream, as network reads would not.
    const result = decoder.push(stream.slice(start, cut));
    if (!Array.isArray(result)) assert.fail(result.error);
    bodies.push(...result);
    start = cut;
  }
  assert.equal(decoder.bufferedBytes, 0);
  return bodies;
}

// ---------------------------------------------------------------- round trips

Deno.test("codec round-trips one sample of every message type", () => {
  const covered = new Set<MessageType>();
  for (const [message, context] of SAMPLES) {
    covered.add(message.type);
    const decoded = decodeOk(encodeMessage(message), context);
    assert.deepStrictEqual(decoded, message);
    // A framed message carries the same body.
    const bodies = new FrameDecoder().push(encodeFramedMessage(message));
    assert.ok(Array.isArray(bodies) && bodies.length === 1);
    assert.deepStrictEqual(decodeOk(bodies[0] as Uint8Array, context), message);
  }
  assert.equal(covered.size, Object.keys(MESSAGE_TAGS).length);
});

Deno.test("codec decodes binary fields as plain Uint8Array views", () => {
  const [message, context] = SAMPLES[0] as readonly [Message, ValidationContext];
  const decoded = decodeOk(encodeMessage(message), context);
  assert.equal(decoded.type, "request");
  if (decoded.type === "request") {
    assert.equal(Object.getPrototypeOf(decoded.operation), Uint8Array.prototype);
  }
});

Deno.test("codec encodes a message as a positional msgpack array with a fixint tag", () => {
  const body = encodeMessage({
    type: "prepare_ok",
    epoch: 0,
    viewNumber: 5,
    opNumber: 12,
    replica: 2,
    readRound: 0,
  });
  assert.deepStrictEqual(body, bytes(0x96, TAG_PREPARE_OK, 0, 5, 12, 2, 0));
  assert.equal(Object.getPrototypeOf(body), Uint8Array.prototype);
  // The operation is a msgpack bin (0xc4), not an extension.
  const request = encodeMessage({
    type: "request",
    clientId: 1,
    requestNumber: 2,
    operation: bytes(9),
  });
  assert.deepStrictEqual(request, bytes(0x94, TAG_REQUEST, 1, 2, 0xc4, 1, 9));
});

Deno.test("codec accepts uint64 and float64 integers and turns -0 into 0", () => {
  // [TAG_LOCATE, uint64 5]
  const uint64 = bytes(0x92, TAG_LOCATE, 0xcf, 0, 0, 0, 0, 0, 0, 0, 5);
  assert.deepStrictEqual(decodeOk(uint64, FROM_CLIENT), { type: "locate", clientId: 5 });
  // [TAG_LOCATE, float64 -0]
  const negativeZero = bytes(0x92, TAG_LOCATE, 0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0);
  const decoded = decodeOk(negativeZero, FROM_CLIENT);
  assert.ok(decoded.type === "locate" && Object.is(decoded.clientId, 0));
  // A uint64 beyond 2^53 is not a safe integer.
  const huge = bytes(0x92, TAG_LOCATE, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
  assertRejected(huge, FROM_CLIENT, "locate: clientId must be a non-negative safe integer");
});

// ---------------------------------------------------------------- message types per connection

Deno.test("codec rejects the message types each connection may not carry", () => {
  const contexts: readonly [ValidationContext, readonly MessageType[]][] = [
    [FROM_CLIENT, CLIENT_MESSAGE_TYPES],
    [FROM_REPLICA, REPLICA_MESSAGE_TYPES],
    [TO_CLIENT, CLIENT_REPLY_TYPES],
  ];
  for (const [connection, allowed] of contexts) {
    // Every sample's member id is accepted: only the type decides.
    const context = { ...connection, replicaCount: ADDRESS_BOOK_MAX };
    for (const [message] of SAMPLES) {
      const result = decodeMessage(encodeMessage(message), context);
      if (allowed.includes(message.type)) {
        assert.ok(result.ok, `${message.type} must be allowed from ${context.from}`);
      } else {
        assert.ok(!result.ok, `${message.type} must be rejected from ${context.from}`);
        assert.match(result.error, new RegExp(`message type ${message.type} is not allowed from`));
      }
    }
  }
});

// ---------------------------------------------------------------- validation rules

Deno.test("codec rejects unknown and malformed tags", () => {
  assertRejected(raw([99, 1]), FROM_CLIENT, "unknown message tag 99");
  assertRejected(raw([0, 1]), FROM_CLIENT, "unknown message tag 0");
  assertRejected(raw(["request", 1]), FROM_CLIENT, "message tag must be an integer, got string");
  assertRejected(raw([1.5, 1]), FROM_CLIENT, "message tag must be an integer, got 1.5");
  assertRejected(raw([]), FROM_CLIENT, "message tag must be an integer, got nil");
  assertRejected(raw(7), FROM_CLIENT, "body must be a msgpack array [tag, ...fields], got 7");
  assertRejected(raw(bytes(1)), FROM_CLIENT, "got binary");
});

Deno.test("codec rejects arrays of the wrong length", () => {
  assertRejected(
    raw([TAG_PREPARE_OK, 0, 5, 12]),
    FROM_REPLICA,
    "prepare_ok: expected an array of 6 elements, got 4",
  );
  assertRejected(raw([TAG_LOCATE, 1, 2]), FROM_CLIENT, "locate: expected an array of 2 elements");
  assertRejected(
    raw([TAG_PREPARE, 0, 5, 0, 1, [[1, 5, 1, 1, 0]]]),
    FROM_REPLICA,
    "prepare: entries[0] must be an array of 6 fields, got 5",
  );
  assertRejected(
    raw([TAG_PREPARE, 0, 5, 0, 1, [7]]),
    FROM_REPLICA,
    "prepare: entries[0] must be an array of 6 fields, got 7",
  );
});

Deno.test("codec rejects numbers that are not non-negative safe integers", () => {
  assertRejected(
    raw([TAG_PREPARE_OK, 0, -1, 12, 0, 0]),
    FROM_REPLICA,
    "prepare_ok: viewNumber must be a non-negative safe integer, got -1",
  );
  assertRejected(
    raw([TAG_PREPARE_OK, 0, 1, 1.5, 0, 0]),
    FROM_REPLICA,
    "prepare_ok: opNumber must be a non-negative safe integer, got 1.5",
  );
  assertRejected(
    raw([TAG_PREPARE_OK, 0, 2 ** 53, 1, 0, 0]),
    FROM_REPLICA,
    "prepare_ok: viewNumber must be a non-negative safe integer, got 9007199254740992",
  );
  assertRejected(
    raw([TAG_PREPARE_OK, 0, "1", 1, 0, 0]),
    FROM_REPLICA,
    "prepare_ok: viewNumber must be a non-negative safe integer, got string",
  );
  assertRejected(
    raw([TAG_PREPARE_OK, 0, null, 1, 0, 0]),
    FROM_REPLICA,
    "viewNumber must be a non-negative safe integer, got nil",
  );
  assertRejected(
    raw([TAG_PREPARE, 0, 5, 0, 1, [[1, 5, 1, 1, -3, bytes()]]]),
    FROM_REPLICA,
    "prepare: entries[0].timestamp must be a non-negative safe integer, got -3",
  );
  assertRejected(
    raw([TAG_PREPARE, 0, 5, 0, 1, [[1, 5, NaN, 1, 0, bytes()]]]),
    FROM_REPLICA,
    "prepare: entries[0].clientId must be a non-negative safe integer, got NaN",
  );
});

Deno.test("codec rejects replica indexes out of range", () => {
  assertRejected(
    raw([TAG_PREPARE_OK, 0, 5, 12, 7, 0]),
    FROM_REPLICA,
    "prepare_ok: replica 7 out of range (3 member ids)",
  );
  assertRejected(
    raw([TAG_PREPARE_OK, 0, 5, 12, 3, 0]),
    FROM_REPLICA,
    "prepare_ok: replica 3 out of range (3 member ids)",
  );
  assertRejected(
    raw([3, 7, 3, 4, 5]),
    { from: "reply", replicaCount: 5 },
    "not_primary: replica 5 out of range (5 member ids)",
  );
  assert.ok(decodeMessage(raw([TAG_PREPARE_OK, 0, 5, 12, 2, 0]), FROM_REPLICA).ok);
});

Deno.test("codec checks the read round of a Commit and a PrepareOk", () => {
  assertRejected(
    raw([TAG_PREPARE_OK, 0, 5, 12, 2, -1]),
    FROM_REPLICA,
    "prepare_ok: readRound must be a non-negative safe integer, got -1",
  );
  assertRejected(
    raw([TAG_COMMIT, 0, 5, 12, 2, "7"]),
    FROM_REPLICA,
    "commit: readRound must be a non-negative safe integer, got string",
  );
  assertRejected(raw([TAG_COMMIT, 0, 5, 12, 2]), FROM_REPLICA, "commit: expected an array of 6");
  const commit = decodeMessage(raw([TAG_COMMIT, 0, 5, 12, 2, 7]), FROM_REPLICA);
  assert.ok(commit.ok && commit.message.type === "commit" && commit.message.readRound === 7);
});

Deno.test("codec rejects booleans that are not booleans", () => {
  assertRejected(
    raw([TAG_RECOVERY_RESPONSE, 0, 6, 77, 1, 0, 0, 0, 0, []]),
    FROM_REPLICA,
    "recovery_response: isPrimary must be a boolean, got 1",
  );
  assertRejected(
    raw([TAG_NEW_STATE, 0, 6, null, 0, 0, 0, 0, []]),
    FROM_REPLICA,
    "new_state: normal must be a boolean, got nil",
  );
});

Deno.test("codec rejects binary fields that are not binary or too large", () => {
  assertRejected(
    raw([TAG_REQUEST, 1, 1, "SET k v"]),
    FROM_CLIENT,
    "request: operation must be binary, got string",
  );
  assertRejected(
    raw([TAG_REPLY, 1, 1, 1, 1, 0, [1]]),
    TO_CLIENT,
    "reply: result must be binary, got array",
  );
  assertRejected(
    raw([TAG_REQUEST, 1, 1, new Uint8Array(3_000_000)]),
    FROM_CLIENT,
    `request: operation of 3000000 bytes exceeds ${LIMITS_DEFAULT.operationBytesMax}`,
  );
  assertRejected(
    raw([TAG_PREPARE, 0, 5, 0, 1, [[1, 5, 1, 1, 0, new Uint8Array(3_000_000)]]]),
    FROM_REPLICA,
    `prepare: entries[0].operation of 3000000 bytes exceeds ${LIMITS_DEFAULT.operationBytesMax}`,
  );
  const largest = new Uint8Array(LIMITS_DEFAULT.operationBytesMax);
  assert.ok(decodeMessage(raw([TAG_REQUEST, 1, 1, largest]), FROM_CLIENT).ok);
});

Deno.test("codec rejects address lists that are too long or hold non-strings", () => {
  assertRejected(
    raw([TAG_CONFIGURATION, 1, 0, 0, 1, 0, "a:1", 0]),
    TO_CLIENT,
    "configuration: addresses must be an array, got string",
  );
  assertRejected(
    raw([TAG_CONFIGURATION, 1, 0, 0, 1, 0, new Array(ADDRESSES_MAX + 1).fill("a:1"), 0]),
    TO_CLIENT,
    `configuration: addresses has ${ADDRESSES_MAX + 1} elements, more than ${ADDRESSES_MAX}`,
  );
  assertRejected(
    raw([TAG_CONFIGURATION, 1, 0, 0, 1, 0, ["a:1", 7], 0]),
    TO_CLIENT,
    "configuration: addresses[1] must be a string, got 7",
  );
  assertRejected(
    raw([TAG_CONFIGURATION, 1, 0, 0, 1, 0, ["x".repeat(ADDRESS_LENGTH_MAX + 1)], 0]),
    TO_CLIENT,
    `configuration: addresses[0] is ${ADDRESS_LENGTH_MAX + 1} characters, more than`,
  );
  const longest = ["x".repeat(ADDRESS_LENGTH_MAX)];
  assert.ok(decodeMessage(raw([TAG_CONFIGURATION, 1, 0, 0, 1, 0, longest, 0]), TO_CLIENT).ok);
});

// ---------------------------------------------------------------- reconfiguration (§7)

/** The replica-message samples, each with its epoch set to `epoch`. */
function withEpoch(epoch: number): (readonly [Message, ValidationContext])[] {
  return SAMPLES.filter(([, context]) => context.from === "replica").map((
    [message, context],
  ) => [{ ...message, epoch } as Message, context] as const);
}

Deno.test("codec round-trips every replica message with a non-zero epoch, on both paths", () => {
  for (const epoch of [1, 255, 2 ** 16, 2 ** 32 - 1, EPOCH_MAX]) {
    for (const [message, context] of withEpoch(epoch)) {
      const body = encodeMessage(message);
      const decoded = decodeOk(body, context);
      assert.deepStrictEqual(decoded, message);
      assert.equal((decoded as { epoch: number }).epoch, epoch);
      assert.deepStrictEqual(decodeMessageGeneral(body, context), { ok: true, message });
    }
  }
  // The hand-written path puts the epoch right after the tag, as the general one does.
  const commit: Message = {
    type: "commit",
    epoch: 7,
    viewNumber: 5,
    commitNumber: 12,
    replica: 1,
    readRound: 0,
  };
  assert.deepStrictEqual(encodeMessage(commit), bytes(0x96, TAG_COMMIT, 7, 5, 12, 1, 0));
  assert.deepStrictEqual(encodeMessage(commit), raw([TAG_COMMIT, 7, 5, 12, 1, 0]));
});

Deno.test("codec rejects an epoch that is negative, fractional, not a number or beyond EPOCH_MAX", () => {
  const cases: readonly [Uint8Array, ValidationContext, string][] = [
    [
      raw([TAG_PREPARE_OK, -1, 5, 12, 2, 0]),
      FROM_REPLICA,
      "prepare_ok: epoch must be a non-negative safe integer, got -1",
    ],
    [
      raw([TAG_PREPARE_OK, EPOCH_MAX + 1, 5, 12, 2, 0]),
      FROM_REPLICA,
      `prepare_ok: epoch ${EPOCH_MAX + 1} exceeds ${EPOCH_MAX}`,
    ],
    [
      raw([TAG_COMMIT, 2 ** 53, 5, 12, 2, 0]),
      FROM_REPLICA,
      "commit: epoch must be a non-negative safe integer, got 9007199254740992",
    ],
    [
      raw([TAG_PREPARE, 1.5, 5, 0, 1, []]),
      FROM_REPLICA,
      "prepare: epoch must be a non-negative safe integer, got 1.5",
    ],
    [
      raw([TAG_CHECKPOINT_CHUNK, Number.MAX_SAFE_INTEGER, 100, 0, bytes(1), 0]),
      FROM_REPLICA,
      `checkpoint_chunk: epoch ${Number.MAX_SAFE_INTEGER} exceeds ${EPOCH_MAX}`,
    ],
    [
      raw([MESSAGE_TAGS.start_view_change, "1", 6, 0]),
      FROM_REPLICA,
      "start_view_change: epoch must be a non-negative safe integer, got string",
    ],
    [
      raw([MESSAGE_TAGS.recovery, null, 77, 3, 2]),
      FROM_REPLICA,
      "recovery: epoch must be a non-negative safe integer, got nil",
    ],
    [
      raw([TAG_EPOCH_STARTED, EPOCH_MAX + 1, 0]),
      FROM_REPLICA,
      `epoch_started: epoch ${EPOCH_MAX + 1} exceeds ${EPOCH_MAX}`,
    ],
    [
      raw([TAG_START_EPOCH, -5, 12, 7, BOOK, [0], [], 0]),
      FROM_REPLICA,
      "start_epoch: epoch must be a non-negative safe integer, got -5",
    ],
    [
      raw([TAG_RECONFIGURATION, 9, 1, EPOCH_MAX + 1, ["a:1"]]),
      FROM_CLIENT,
      `reconfiguration: epoch ${EPOCH_MAX + 1} exceeds ${EPOCH_MAX}`,
    ],
    [
      raw([TAG_CHECK_EPOCH, 9, 1, -1]),
      FROM_CLIENT,
      "check_epoch: epoch must be a non-negative safe integer, got -1",
    ],
    [
      raw([TAG_CONFIGURATION, 7, 0, 2 ** 40, 4, 0, ["a:1"], 0]),
      TO_CLIENT,
      `configuration: epoch ${2 ** 40} exceeds ${EPOCH_MAX}`,
    ],
  ];
  for (const [body, context, fragment] of cases) assertRejected(body, context, fragment);
  // Written by the hand-written path, read back: the receiver rejects it by name all the same.
  for (const [message, context] of withEpoch(EPOCH_MAX + 1)) {
    assertRejected(
      encodeMessage(message),
      context,
      `${message.type}: epoch ${EPOCH_MAX + 1} exceeds ${EPOCH_MAX}`,
    );
  }
});

Deno.test("codec checks the new fields of a configuration", () => {
  assertRejected(
    raw([TAG_CONFIGURATION, 7, -1, 0, 4, 0, ["a:1"], 0]),
    TO_CLIENT,
    "configuration: requestNumber must be a non-negative safe integer, got -1",
  );
  assertRejected(
    raw([TAG_CONFIGURATION, 7, 0, 0, 4, 0, ["a:1"]]),
    TO_CLIENT,
    "configuration: expected an array of 8 elements, got 7",
  );
  const decoded = decodeOk(raw([TAG_CONFIGURATION, 7, 123, 4, 9, 1, ["a:1"], 5]), TO_CLIENT);
  assert.deepStrictEqual(decoded, {
    type: "configuration",
    clientId: 7,
    requestNumber: 123,
    epoch: 4,
    viewNumber: 9,
    replica: 1,
    addresses: ["a:1"],
    requestNumberFloor: 5,
  });
});

Deno.test("codec checks a reconfiguration's shape, and leaves its sense to the replica", () => {
  const reconfiguration = (addresses: unknown) =>
    raw([TAG_RECONFIGURATION, 9, 1_733_000_000_000_321, 0, addresses]);
  // An even, empty or repeating configuration is well-formed: the replica answers it with a
  // Rejected "bad_configuration", which the administrator must see, not a closed connection.
  for (const addresses of [[], ["a:1", "b:2"], ["a:1", "a:1", "b:2"]]) {
    const decoded = decodeOk(reconfiguration(addresses), FROM_CLIENT);
    assert.ok(decoded.type === "reconfiguration");
    assert.deepStrictEqual(decoded.addresses, addresses);
  }
  const most = Array.from({ length: MEMBERS_MAX }, (_, i) => `10.0.${i}.1:7001`);
  assert.ok(decodeMessage(reconfiguration(most), FROM_CLIENT).ok);
  assert.ok(decodeMessage(reconfiguration(["x".repeat(ADDRESS_LENGTH_MAX)]), FROM_CLIENT).ok);
  const cases: readonly [Uint8Array, string][] = [
    [
      reconfiguration([...most, "10.0.99.1:7001"]),
      `reconfiguration: addresses has ${MEMBERS_MAX + 1} elements, more than ${MEMBERS_MAX}`,
    ],
    [
      reconfiguration(["a:1", "x".repeat(ADDRESS_LENGTH_MAX + 1)]),
      `reconfiguration: addresses[1] is ${ADDRESS_LENGTH_MAX + 1} characters, more than ` +
      `${ADDRESS_LENGTH_MAX}`,
    ],
    [reconfiguration(["a:1", ""]), "reconfiguration: addresses[1] is empty"],
    [reconfiguration(["a:1", 7]), "reconfiguration: addresses[1] must be a string, got 7"],
    [reconfiguration("a:1,b:2"), "reconfiguration: addresses must be an array, got string"],
    [
      raw([TAG_RECONFIGURATION, 9, -2, 0, ["a:1"]]),
      "reconfiguration: requestNumber must be a non-negative safe integer, got -2",
    ],
    [
      raw([TAG_RECONFIGURATION, 9, 1, 0]),
      "reconfiguration: expected an array of 5 elements, got 4",
    ],
    [raw([TAG_CHECK_EPOCH, 9, 1]), "check_epoch: expected an array of 4 elements, got 3"],
    [
      raw([TAG_CHECK_EPOCH, "9", 1, 0]),
      "check_epoch: clientId must be a non-negative safe integer, got string",
    ],
  ];
  for (const [body, fragment] of cases) assertRejected(body, FROM_CLIENT, fragment);
  // An administrator's request is a client's message, never a peer replica's or a reply.
  assertRejected(
    reconfiguration(["a:1"]),
    FROM_REPLICA,
    "message type reconfiguration is not allowed from a peer replica",
  );
  assertRejected(
    raw([TAG_CHECK_EPOCH, 9, 1, 0]),
    TO_CLIENT,
    "message type check_epoch is not allowed from a replica answering a client",
  );
});

Deno.test("codec checks every field of a start_epoch and a new_epoch", () => {
  for (const [tag, type] of [[TAG_START_EPOCH, "start_epoch"], [TAG_NEW_EPOCH, "new_epoch"]]) {
    const message = (...fields: unknown[]) => raw([tag, ...fields]);
    // A full address book of the longest addresses, the most members, and no previous ones.
    const fullBook = Array.from(
      { length: ADDRESS_BOOK_MAX },
      (_, i) => `${i}`.padStart(ADDRESS_LENGTH_MAX, "x"),
    );
    const most = Array.from({ length: MEMBERS_MAX }, (_, i) => ADDRESS_BOOK_MAX - 1 - i);
    const full = decodeOk(
      message(1, OP_NUMBER_MAX, VIEW_NUMBER_MAX, fullBook, most, [], ADDRESS_BOOK_MAX - 1),
      { from: "replica", replicaCount: ADDRESS_BOOK_MAX },
    );
    assert.equal(full.type, type);
    assert.ok(full.type === "start_epoch" || full.type === "new_epoch");
    assert.equal(full.addresses.length, ADDRESS_BOOK_MAX);
    assert.deepStrictEqual(full.members, most);
    // The shape only: an even number of members is the core's to refuse (`membershipProblem`).
    assert.ok(decodeMessage(message(1, 12, 7, BOOK, [0, 3], [0, 1, 2], 0), FROM_REPLICA).ok);
    const tooMany = Array.from({ length: MEMBERS_MAX + 1 }, (_, i) => i);
    const cases: readonly [Uint8Array, string][] = [
      [
        message(1, 12, 7, BOOK, [0, 5, 3], [0, 1, 2], 0),
        `${type}: members[1] 5 is outside the address book (5 addresses)`,
      ],
      [
        message(1, 12, 7, BOOK, [0, 3, 4], [0, 1, 9], 0),
        `${type}: previousMembers[2] 9 is outside the address book (5 addresses)`,
      ],
      [
        message(1, 12, 7, BOOK, [0, 3, 0], [0, 1, 2], 0),
        `${type}: members[2] 0 repeats members[0]`,
      ],
      [
        message(1, 12, 7, BOOK, [0, 3, 4], [1, 1, 2], 0),
        `${type}: previousMembers[1] 1 repeats previousMembers[0]`,
      ],
      [message(1, 12, 7, BOOK, [], [0, 1, 2], 0), `${type}: members must not be empty`],
      [
        message(1, 12, 7, fullBook, tooMany, [], 0),
        `${type}: members has ${MEMBERS_MAX + 1} elements, more than ${MEMBERS_MAX}`,
      ],
      [
        message(1, 12, 7, fullBook, [0], tooMany, 0),
        `${type}: previousMembers has ${MEMBERS_MAX + 1} elements, more than ${MEMBERS_MAX}`,
      ],
      [
        message(1, 12, 7, BOOK, [0, -1, 4], [], 0),
        `${type}: members[1] must be a non-negative safe integer, got -1`,
      ],
      [
        message(1, 12, 7, BOOK, [0, 1.5], [], 0),
        `${type}: members[1] must be a non-negative safe integer, got 1.5`,
      ],
      [message(1, 12, 7, BOOK, 3, [], 0), `${type}: members must be an array, got 3`],
      [
        message(1, 12, 7, BOOK, [0], null, 0),
        `${type}: previousMembers must be an array, got nil`,
      ],
      [
        message(1, 12, 7, [...BOOK, "x".repeat(ADDRESS_LENGTH_MAX + 1)], [0], [], 0),
        `${type}: addresses[5] is ${ADDRESS_LENGTH_MAX + 1} characters, more than ` +
        `${ADDRESS_LENGTH_MAX}`,
      ],
      [message(1, 12, 7, ["a:1", ""], [0], [], 0), `${type}: addresses[1] is empty`],
      [message(1, 12, 7, ["a:1", 2], [0], [], 0), `${type}: addresses[1] must be a string, got 2`],
      [message(1, 12, 7, [], [0], [], 0), `${type}: addresses has 0 elements, fewer than 1`],
      [
        message(1, 12, 7, [...fullBook, "one more:1"], [0], [], 0),
        `${type}: addresses has ${ADDRESS_BOOK_MAX + 1} elements, more than ${ADDRESS_BOOK_MAX}`,
      ],
      [message(1, 12, 7, "a:1", [0], [], 0), `${type}: addresses must be an array, got string`],
      [
        message(1, OP_NUMBER_MAX + 1, 7, BOOK, [0], [], 0),
        `${type}: opNumber ${OP_NUMBER_MAX + 1} exceeds ${OP_NUMBER_MAX}`,
      ],
      [
        message(1, 12, VIEW_NUMBER_MAX + 1, BOOK, [0], [], 0),
        `${type}: startViewNumber ${VIEW_NUMBER_MAX + 1} exceeds ${VIEW_NUMBER_MAX}`,
      ],
      [
        message(1, 12, -7, BOOK, [0], [], 0),
        `${type}: startViewNumber must be a non-negative safe integer, got -7`,
      ],
      [
        message(1, 12, 7, BOOK, [0], [], 5),
        `${type}: replica 5 out of range (5 member ids)`,
      ],
      [message(1, 12, 7, BOOK, [0], []), `${type}: expected an array of 8 elements, got 7`],
    ];
    for (const [body, fragment] of cases) assertRejected(body, FROM_REPLICA_BOOK, fragment);
    assertRejected(
      message(1, 12, 7, BOOK, [0], [], 0),
      FROM_CLIENT,
      `message type ${type} is not allowed from a client`,
    );
  }
  assertRejected(
    raw([TAG_EPOCH_STARTED, 1, 5]),
    FROM_REPLICA_BOOK,
    "epoch_started: replica 5 out of range (5 member ids)",
  );
  assertRejected(
    raw([TAG_EPOCH_STARTED, 1]),
    FROM_REPLICA_BOOK,
    "epoch_started: expected an array of 3 elements, got 2",
  );
});

Deno.test("codec bounds a member id by the receiver's replicaCount, on both paths", () => {
  // Member ids grow past the first configuration's size: a receiver that knows a larger address
  // book passes a larger bound, up to `ADDRESS_BOOK_MAX`.
  const book: ValidationContext = { from: "replica", replicaCount: ADDRESS_BOOK_MAX };
  const last = ADDRESS_BOOK_MAX - 1;
  const messages: Message[] = [
    { type: "prepare_ok", epoch: 4, viewNumber: 9, opNumber: 12, replica: last, readRound: 0 },
    { type: "commit", epoch: 4, viewNumber: 9, commitNumber: 12, replica: 700, readRound: 1 },
    {
      type: "prepare",
      epoch: 4,
      viewNumber: 9,
      entries: [entry(3, 9)],
      commitNumber: 2,
      replica: 64,
    },
    { type: "start_view_change", epoch: 4, viewNumber: 9, replica: last },
    { type: "epoch_started", epoch: 4, replica: last },
  ];
  for (const message of messages) {
    const body = encodeMessage(message);
    assert.deepStrictEqual(decodeOk(body, book), message);
    assert.deepStrictEqual(decodeMessageGeneral(body, book), { ok: true, message });
    const replica = (message as { replica: number }).replica;
    assertRejected(
      body,
      { from: "replica", replicaCount: replica },
      `${message.type}: replica ${replica} out of range (${replica} member ids)`,
    );
  }
});

Deno.test("codec rejects entry lists that are too long or not arrays", () => {
  assertRejected(
    raw([TAG_PREPARE, 0, 5, 0, 1, new Array(ENTRIES_MAX + 1).fill(0)]),
    FROM_REPLICA,
    `prepare: ${ENTRIES_MAX + 1} entries exceed the limit of ${ENTRIES_MAX}`,
  );
  assertRejected(
    raw([TAG_PREPARE, 0, 5, 0, 1, null]),
    FROM_REPLICA,
    "prepare: entries must be an array, got nil",
  );
});

Deno.test("codec rejects entries whose op-numbers are not consecutive", () => {
  const entries = [14, 15, 16, 19].map((op) => wireEntry(entry(op)));
  assertRejected(
    raw([TAG_PREPARE, 0, 1, 0, 1, entries]),
    FROM_REPLICA,
    "prepare: entries[3].opNumber must be 17, got 19",
  );
  assertRejected(
    raw([TAG_PREPARE, 0, 1, 0, 1, [wireEntry(entry(0))]]),
    FROM_REPLICA,
    "prepare: entries[0].opNumber must be at least 1, got 0",
  );
  // Prepare: the commit-number may be past the entries; nothing ties them.
  assert.ok(decodeMessage(raw([TAG_PREPARE, 0, 1, 50, 1, [wireEntry(entry(3))]]), FROM_REPLICA).ok);
});

Deno.test("codec rejects entries created in a later view than the message's", () => {
  assertRejected(
    raw([TAG_PREPARE, 0, 4, 0, 1, [wireEntry(entry(1, 4)), wireEntry(entry(2, 5))]]),
    FROM_REPLICA,
    "prepare: entries[1].viewNumber 5 exceeds the message's viewNumber 4",
  );
});

Deno.test("codec rejects entries whose timestamps go back", () => {
  const first = wireEntry(entry(1));
  const second = [2, 1, 1, 2, TIMESTAMP - 1, bytes()];
  assertRejected(
    raw([TAG_PREPARE, 0, 1, 0, 1, [first, second]]),
    FROM_REPLICA,
    "prepare: entries[1].timestamp 1700000000122 is less than the previous entry's",
  );
});

Deno.test("codec checks do_view_change entries are exactly commitNumber+1..opNumber", () => {
  const suffix = [11, 12].map((op) => wireEntry(entry(op, 5)));
  assert.ok(decodeMessage(raw([TAG_DO_VIEW_CHANGE, 0, 6, 5, 12, 10, 2, suffix]), FROM_REPLICA).ok);
  assertRejected(
    raw([TAG_DO_VIEW_CHANGE, 0, 6, 5, 13, 10, 2, suffix]),
    FROM_REPLICA,
    "do_view_change: entries must be commitNumber+1..opNumber (3 entries), got 2",
  );
  assertRejected(
    raw([TAG_DO_VIEW_CHANGE, 0, 6, 5, 13, 11, 2, suffix]),
    FROM_REPLICA,
    "do_view_change: entries[0].opNumber must be 12, got 11",
  );
  assertRejected(
    raw([TAG_DO_VIEW_CHANGE, 0, 6, 5, 9, 10, 2, []]),
    FROM_REPLICA,
    "do_view_change: commitNumber 10 exceeds opNumber 9",
  );
  assertRejected(
    raw([TAG_DO_VIEW_CHANGE, 0, 6, 7, 12, 10, 2, suffix]),
    FROM_REPLICA,
    "do_view_change: lastNormalView 7 exceeds viewNumber 6",
  );
});

Deno.test("codec checks start_view entries follow the anchor and reach opNumber", () => {
  const suffix = [10, 11].map((op) => wireEntry(entry(op, 5)));
  assert.ok(decodeMessage(raw([TAG_START_VIEW, 0, 6, 9, 11, 10, 0, suffix]), FROM_REPLICA).ok);
  assertRejected(
    raw([TAG_START_VIEW, 0, 6, 9, 12, 10, 0, suffix]),
    FROM_REPLICA,
    "start_view: anchorOpNumber 9 + 2 entries must equal opNumber 12",
  );
  assertRejected(
    raw([TAG_START_VIEW, 0, 6, 8, 10, 10, 0, suffix]),
    FROM_REPLICA,
    "start_view: entries[0].opNumber must be 9, got 10",
  );
  assertRejected(
    raw([TAG_START_VIEW, 0, 6, 9, 11, 12, 0, suffix]),
    FROM_REPLICA,
    "start_view: commitNumber 12 exceeds opNumber 11",
  );
});

Deno.test("codec checks recovery_response entries for a primary and a backup", () => {
  const suffix = [11, 12].map((op) => wireEntry(entry(op, 5)));
  assertRejected(
    raw([TAG_RECOVERY_RESPONSE, 0, 6, 77, true, 10, 13, 11, 0, suffix]),
    FROM_REPLICA,
    "recovery_response: anchorOpNumber 10 + 2 entries must equal opNumber 13",
  );
  assertRejected(
    raw([TAG_RECOVERY_RESPONSE, 0, 6, 77, true, 9, 11, 11, 0, suffix]),
    FROM_REPLICA,
    "recovery_response: entries[0].opNumber must be 10, got 11",
  );
  assertRejected(
    raw([TAG_RECOVERY_RESPONSE, 0, 6, 77, true, 10, 12, 13, 0, suffix]),
    FROM_REPLICA,
    "recovery_response: commitNumber 13 exceeds opNumber 12",
  );
  assertRejected(
    raw([TAG_RECOVERY_RESPONSE, 0, 6, 77, false, 10, 12, 11, 0, suffix]),
    FROM_REPLICA,
    "recovery_response: a backup's response (isPrimary false) carries 2 entries",
  );
});

Deno.test("codec checks new_state entries follow the anchor without reaching opNumber", () => {
  const suffix = [9, 10].map((op) => wireEntry(entry(op, 5)));
  // Fewer entries than the responder holds: a transfer limit, not an error.
  assert.ok(decodeMessage(raw([TAG_NEW_STATE, 0, 6, true, 8, 20, 10, 0, suffix]), FROM_REPLICA).ok);
  assertRejected(
    raw([TAG_NEW_STATE, 0, 6, true, 7, 20, 10, 0, suffix]),
    FROM_REPLICA,
    "new_state: entries[0].opNumber must be 8, got 9",
  );
  assertRejected(
    raw([TAG_NEW_STATE, 0, 6, true, 8, 9, 9, 0, suffix]),
    FROM_REPLICA,
    "new_state: entries end at op 10, past opNumber 9",
  );
  assertRejected(
    raw([TAG_NEW_STATE, 0, 6, true, 8, 10, 11, 0, suffix]),
    FROM_REPLICA,
    "new_state: commitNumber 11 exceeds opNumber 10",
  );
});

Deno.test("codec checks every field of a checkpoint_manifest", () => {
  const hash = new Uint8Array(CHUNK_HASH_BYTES).fill(1);
  const chunks = [wireChunk(hash, 10), wireChunk(hash, 0)];
  const manifest = (...fields: unknown[]) => raw([TAG_CHECKPOINT_MANIFEST, 0, ...fields]);
  // Lengths of 0 and of a whole frame body are lengths a chunk may have.
  const ok = decodeMessage(
    manifest(6, 100, METADATA, [...chunks, wireChunk(hash, FRAME_BODY_BYTES_MAX)], 2),
    FROM_REPLICA,
  );
  assert.ok(ok.ok && ok.message.type === "checkpoint_manifest");
  assert.equal(ok.message.chunks.length, 3);
  assert.equal(Object.getPrototypeOf(ok.message.metadata), Uint8Array.prototype);
  assert.equal(Object.getPrototypeOf(ok.message.chunks[0]!.hash), Uint8Array.prototype);
  const cases: readonly [Uint8Array, string][] = [
    [
      manifest(-1, 100, METADATA, chunks, 0),
      "checkpoint_manifest: viewNumber must be a non-negative safe integer, got -1",
    ],
    [
      manifest(6, 2 ** 53, METADATA, chunks, 0),
      "checkpoint_manifest: opNumber must be a non-negative safe integer, got 9007199254740992",
    ],
    [
      manifest(6, 1.5, METADATA, chunks, 0),
      "checkpoint_manifest: opNumber must be a non-negative safe integer, got 1.5",
    ],
    [
      manifest(6, 100, "metadata", chunks, 0),
      "checkpoint_manifest: metadata must be binary, got string",
    ],
    [
      manifest(6, 100, METADATA.subarray(0, CHECKPOINT_METADATA_BYTES), chunks, 0),
      `checkpoint_manifest: metadata of ${CHECKPOINT_METADATA_BYTES} bytes must be longer than ` +
      `${CHECKPOINT_METADATA_BYTES}`,
    ],
    [
      manifest(6, 100, new Uint8Array(CHECKPOINT_METADATA_BYTES_MAX + 1), chunks, 0),
      `checkpoint_manifest: metadata of ${CHECKPOINT_METADATA_BYTES_MAX + 1} bytes exceeds ` +
      `${CHECKPOINT_METADATA_BYTES_MAX}`,
    ],
    [
      manifest(6, 100, METADATA, null, 0),
      "checkpoint_manifest: chunks must be an array, got nil",
    ],
    [manifest(6, 100, METADATA, [], 0), "checkpoint_manifest: chunks must not be empty"],
    [
      manifest(6, 100, METADATA, [chunks[0], [hash, 1, 2]], 0),
      "checkpoint_manifest: chunks[1] must be an array of 2 fields, got 3",
    ],
    [
      manifest(6, 100, METADATA, [7], 0),
      "checkpoint_manifest: chunks[0] must be an array of 2 fields, got 7",
    ],
    [
      manifest(6, 100, METADATA, [["hash", 1]], 0),
      "checkpoint_manifest: chunks[0].hash must be binary, got string",
    ],
    [
      manifest(6, 100, METADATA, [chunks[0], wireChunk(hash.subarray(1), 1)], 0),
      `checkpoint_manifest: chunks[1].hash must be ${CHUNK_HASH_BYTES} bytes, got ` +
      `${CHUNK_HASH_BYTES - 1}`,
    ],
    [
      manifest(6, 100, METADATA, [wireChunk(new Uint8Array(CHUNK_HASH_BYTES + 1), 1)], 0),
      `checkpoint_manifest: chunks[0].hash must be ${CHUNK_HASH_BYTES} bytes, got ` +
      `${CHUNK_HASH_BYTES + 1}`,
    ],
    [
      manifest(6, 100, METADATA, [chunks[0], wireChunk(hash, -1)], 0),
      "checkpoint_manifest: chunks[1].length must be a non-negative safe integer, got -1",
    ],
    [
      manifest(6, 100, METADATA, [wireChunk(hash, 2.5)], 0),
      "checkpoint_manifest: chunks[0].length must be a non-negative safe integer, got 2.5",
    ],
    [
      manifest(6, 100, METADATA, [wireChunk(hash, FRAME_BODY_BYTES_MAX + 1)], 0),
      `checkpoint_manifest: chunks[0].length ${FRAME_BODY_BYTES_MAX + 1} exceeds the frame ` +
      `body limit of ${FRAME_BODY_BYTES_MAX}`,
    ],
    [
      manifest(6, 100, METADATA, chunks, 3),
      "checkpoint_manifest: replica 3 out of range (3 member ids)",
    ],
    [
      manifest(6, 100, METADATA, chunks, "0"),
      "checkpoint_manifest: replica must be a non-negative safe integer, got string",
    ],
    [
      manifest(6, 100, METADATA, chunks),
      "checkpoint_manifest: expected an array of 7 elements, got 6",
    ],
  ];
  for (const [body, fragment] of cases) assertRejected(body, FROM_REPLICA, fragment);
});

Deno.test("codec checks every field of a get_checkpoint_chunks", () => {
  const request = (...fields: unknown[]) => raw([TAG_GET_CHECKPOINT_CHUNKS, 0, ...fields]);
  const most = Array.from({ length: CHECKPOINT_CHUNKS_PER_REQUEST_MAX }, (_, index) => index);
  const ok = decodeMessage(
    request(100, [CHUNK_INDEX_LIMIT - 1, ...most.slice(1)], 1),
    FROM_REPLICA,
  );
  assert.ok(ok.ok && ok.message.type === "get_checkpoint_chunks");
  assert.equal(ok.message.indexes.length, CHECKPOINT_CHUNKS_PER_REQUEST_MAX);
  assert.equal(ok.message.indexes[0], CHUNK_INDEX_LIMIT - 1);
  const cases: readonly [Uint8Array, string][] = [
    [
      request(-1, [0], 0),
      "get_checkpoint_chunks: opNumber must be a non-negative safe integer, got -1",
    ],
    [
      request("100", [0], 0),
      "get_checkpoint_chunks: opNumber must be a non-negative safe integer, got string",
    ],
    [request(100, 3, 0), "get_checkpoint_chunks: indexes must be an array, got 3"],
    [request(100, [], 0), "get_checkpoint_chunks: indexes must not be empty"],
    [
      request(100, [...most, CHECKPOINT_CHUNKS_PER_REQUEST_MAX], 0),
      `get_checkpoint_chunks: ${CHECKPOINT_CHUNKS_PER_REQUEST_MAX + 1} indexes exceed the ` +
      `limit of ${CHECKPOINT_CHUNKS_PER_REQUEST_MAX}`,
    ],
    [request(100, [3, 5, 3], 0), "get_checkpoint_chunks: indexes[2] 3 repeats indexes[0]"],
    [
      request(100, [0, -1], 0),
      "get_checkpoint_chunks: indexes[1] must be a non-negative safe integer, got -1",
    ],
    [
      request(100, [0.5], 0),
      "get_checkpoint_chunks: indexes[0] must be a non-negative safe integer, got 0.5",
    ],
    [
      request(100, [[1]], 0),
      "get_checkpoint_chunks: indexes[0] must be a non-negative safe integer, got array",
    ],
    [
      request(100, [1, CHUNK_INDEX_LIMIT], 0),
      "get_checkpoint_chunks: indexes[1] 4294967296 is not below 2^32",
    ],
    [request(100, [0], 5), "get_checkpoint_chunks: replica 5 out of range (3 member ids)"],
    [request(100, [0]), "get_checkpoint_chunks: expected an array of 5 elements, got 4"],
  ];
  for (const [body, fragment] of cases) assertRejected(body, FROM_REPLICA, fragment);
});

Deno.test("codec checks every field of a checkpoint_chunk", () => {
  const chunk = (...fields: unknown[]) => raw([TAG_CHECKPOINT_CHUNK, 0, ...fields]);
  const ok = decodeMessage(chunk(100, CHUNK_INDEX_LIMIT - 1, bytes(), 2), FROM_REPLICA);
  assert.ok(ok.ok && ok.message.type === "checkpoint_chunk");
  assert.equal(ok.message.index, CHUNK_INDEX_LIMIT - 1);
  const cases: readonly [Uint8Array, string][] = [
    [
      chunk(-1, 0, bytes(1), 0),
      "checkpoint_chunk: opNumber must be a non-negative safe integer, got -1",
    ],
    [
      chunk(2 ** 53, 0, bytes(1), 0),
      "checkpoint_chunk: opNumber must be a non-negative safe integer, got 9007199254740992",
    ],
    [
      chunk(100, -1, bytes(1), 0),
      "checkpoint_chunk: index must be a non-negative safe integer, got -1",
    ],
    [
      chunk(100, 1.5, bytes(1), 0),
      "checkpoint_chunk: index must be a non-negative safe integer, got 1.5",
    ],
    [
      chunk(100, CHUNK_INDEX_LIMIT, bytes(1), 0),
      "checkpoint_chunk: index 4294967296 is not below 2^32",
    ],
    [chunk(100, 0, "bytes", 0), "checkpoint_chunk: bytes must be binary, got string"],
    [chunk(100, 0, [1, 2], 0), "checkpoint_chunk: bytes must be binary, got array"],
    [chunk(100, 0, null, 0), "checkpoint_chunk: bytes must be binary, got nil"],
    [chunk(100, 0, bytes(1), 3), "checkpoint_chunk: replica 3 out of range (3 member ids)"],
    [
      chunk(100, 0, bytes(1), -2),
      "checkpoint_chunk: replica must be a non-negative safe integer, got -2",
    ],
    [chunk(100, 0, bytes(1)), "checkpoint_chunk: expected an array of 6 elements, got 5"],
  ];
  for (const [body, fragment] of cases) assertRejected(body, FROM_REPLICA, fragment);
});

Deno.test("codec writes a checkpoint chunk's bytes once and decodes them as a view", () => {
  const data = new Uint8Array(LIMITS_DEFAULT.checkpointChunkBytes).fill(5);
  const message: Message = {
    type: "checkpoint_chunk",
    epoch: 0,
    opNumber: 2 ** 40,
    index: 70_000,
    bytes: data,
    replica: 2,
  };
  const expected = raw([TAG_CHECKPOINT_CHUNK, 0, 2 ** 40, 70_000, data, 2]);
  assert.deepStrictEqual(encodeMessage(message), expected);
  const framed = encodeFramedMessage(message);
  // One exact buffer for the frame, the chunk's bytes written straight into it.
  assert.equal(framed.byteLength, FRAME_HEADER_BYTES + expected.byteLength);
  assert.equal(framed.buffer.byteLength, framed.byteLength);
  assert.deepStrictEqual(framed, encodeFrame(expected));
  const decoded = decodeOk(framed.subarray(FRAME_HEADER_BYTES), FROM_REPLICA);
  assert.ok(decoded.type === "checkpoint_chunk");
  assert.equal(decoded.bytes.buffer, framed.buffer, "a view of the body, not a copy");
  assert.equal(Object.getPrototypeOf(decoded.bytes), Uint8Array.prototype);
  assert.deepStrictEqual(decoded, message);
  // A chunk is not a client's message, even on the hand-written path.
  assertRejected(
    expected,
    FROM_CLIENT,
    "message type checkpoint_chunk is not allowed from a client",
  );
});

Deno.test("codec rejects hostile msgpack without throwing", () => {
  const cases: readonly [Uint8Array, string][] = [
    [bytes(), "body is empty"],
    [bytes(0xc1), "body holds byte 0xc1 at 0"],
    [bytes(0x92, TAG_LOCATE, 0xc1), "body holds byte 0xc1 at 2"],
    [bytes(0x92, TAG_LOCATE, 0xd4, 0x01, 0x00), "extension type at byte 2"],
    [bytes(0x92, TAG_LOCATE, 0xc7, 0x01, 0x74, 0x00), "extension type at byte 2"],
    [bytes(0x92, TAG_LOCATE, 0x81, 0xa1, 0x61, 0x01), "msgpack map at byte 2"],
    [bytes(0x92, TAG_LOCATE, 0x01, 0x00), "body has 1 trailing byte"],
    [bytes(0x92, TAG_LOCATE), "body is truncated msgpack"],
    [bytes(0x92, TAG_LOCATE, 0xcd, 0x01), "body is truncated msgpack"],
    // Declared lengths of 4 GiB in a few bytes: refused before anything is allocated.
    [bytes(0xdd, 0xff, 0xff, 0xff, 0xff, 0x01), "body is truncated msgpack"],
    [bytes(0x92, TAG_REQUEST, 0xc6, 0xff, 0xff, 0xff, 0xff), "body is truncated msgpack"],
    [bytes(0x92, TAG_REQUEST, 0xdb, 0xff, 0xff, 0xff, 0xff), "body is truncated msgpack"],
    [bytes(0x91, 0x91, 0x91, 0x91, 0x01), "body nests arrays deeper than 3 levels"],
    [new Uint8Array(100_000).fill(0x91), "body nests arrays deeper than 3 levels"],
  ];
  for (const [body, fragment] of cases) assertRejected(body, FROM_CLIENT, fragment);
});

// ---------------------------------------------------------------- framing

/** CRC-32C one bit at a time, straight from the definition, to check the sliced version. */
function crc32cBitwise(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (let index = 0; index < data.length; index++) {
    crc ^= data[index] as number;
    for (let bit = 0; bit < 8; bit++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

Deno.test("crc32c matches the Castagnoli check value and a bitwise reference", () => {
  assert.equal(crc32c(text("123456789")), 0xe3069283);
  assert.equal(crc32c(bytes()), 0);
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 100 }), fc.nat(7), (data, offset) => {
      // Unaligned views too: the sliced loop reads bytes, never words of the buffer.
      const view = data.subarray(Math.min(offset, data.length));
      assert.equal(crc32c(view), crc32cBitwise(view));
    }),
  );
});

Deno.test("encodeFrame writes the length and checksum big-endian before the body", () => {
  const body = text("123456789");
  const frame = encodeFrame(body);
  assert.deepStrictEqual(
    frame,
    concatBytes([bytes(0, 0, 0, 9, 0xe3, 0x06, 0x92, 0x83), body]),
  );
  assert.equal(FRAME_HEADER_BYTES, 8);
});

Deno.test("writeFrame batches frames into one buffer", () => {
  const bodies = [text("a"), bytes(), text("hello")];
  const out = new Uint8Array(bodies.reduce((n, b) => n + FRAME_HEADER_BYTES + b.byteLength, 0));
  let offset = 0;
  for (const body of bodies) offset = writeFrame(out, offset, body);
  assert.equal(offset, out.byteLength);
  assert.deepStrictEqual(out, concatBytes(bodies.map(encodeFrame)));
  assert.throws(() => writeFrame(out, out.byteLength - 3, text("x")), RangeError);
});

Deno.test("encodeFrame throws a RangeError for a body over the limit", () => {
  assert.throws(
    () => encodeFrame(new Uint8Array(FRAME_BODY_BYTES_MAX + 1)),
    (error: unknown) =>
      error instanceof RangeError &&
      error.message ===
        `frame body of ${
          FRAME_BODY_BYTES_MAX + 1
        } bytes exceeds the limit of ${FRAME_BODY_BYTES_MAX}`,
  );
});

/** Random valid messages of the kinds a replica connection carries most. */
const messageArbitrary: fc.Arbitrary<Message> = fc.oneof(
  fc.record({
    view: fc.nat(1000),
    first: fc.integer({ min: 1, max: 1_000_000 }),
    operations: fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 5 }),
    commit: fc.nat(),
    replica: fc.nat(REPLICA_COUNT - 1),
  }).map(({ view, first, operations, commit, replica }): Message => ({
    type: "prepare",
    epoch: 0,
    viewNumber: view,
    entries: operations.map((operation, index) => ({
      opNumber: first + index,
      viewNumber: view,
      clientId: index,
      requestNumber: first,
      operation,
      timestamp: TIMESTAMP + index,
    })),
    commitNumber: commit,
    replica,
  })),
  fc.record({
    view: fc.nat(),
    op: fc.nat(),
    replica: fc.nat(REPLICA_COUNT - 1),
    round: fc.nat(),
  }).map(({ view, op, replica, round }): Message => ({
    type: "prepare_ok",
    epoch: 0,
    viewNumber: view,
    opNumber: op,
    replica,
    readRound: round,
  })),
  fc.record({
    view: fc.nat(),
    commit: fc.nat(),
    replica: fc.nat(REPLICA_COUNT - 1),
    round: fc.nat(),
  }).map(({ view, commit, replica, round }): Message => ({
    type: "commit",
    epoch: 0,
    viewNumber: view,
    commitNumber: commit,
    replica,
    readRound: round,
  })),
);

Deno.test("FrameDecoder decodes a stream split at any chunk boundaries", () => {
  fc.assert(
    fc.property(
      fc.array(messageArbitrary, { minLength: STREAM_MESSAGES, maxLength: STREAM_MESSAGES }),
      fc.oneof(
        fc.constant("one-byte" as const),
        fc.array(fc.nat(), { maxLength: 400 }),
      ),
      (messages, split) => {
        const frames = messages.map(encodeFramedMessage);
        const stream = concatBytes(frames);
        const cuts = split === "one-byte"
          ? Array.from({ length: stream.byteLength }, (_, index) => index + 1)
          : split.map((cut) => cut % (stream.byteLength + 1)).sort((a, b) => a - b);
        const bodies = decodeStream(stream, cuts);
        assert.equal(bodies.length, messages.length);
        for (let index = 0; index < messages.length; index++) {
          const body = bodies[index] as Uint8Array;
          const message = messages[index] as Message;
          assert.deepStrictEqual(body, encodeMessage(message));
          assert.deepStrictEqual(decodeOk(body, FROM_REPLICA), message);
        }
      },
    ),
    { numRuns: STREAM_RUNS },
  );
});

Deno.test("FrameDecoder returns views within one chunk and copies across chunks", () => {
  const frames = concatBytes([encodeFrame(text("first")), encodeFrame(text("second"))]);
  const decoder = new FrameDecoder();
  const whole = decoder.push(frames);
  assert.ok(Array.isArray(whole) && whole.length === 2);
  assert.equal((whole[0] as Uint8Array).buffer, frames.buffer);
  const split = new FrameDecoder();
  const cut = FRAME_HEADER_BYTES + 2;
  assert.deepStrictEqual(split.push(frames.slice(0, cut)), []);
  assert.equal(split.bufferedBytes, cut);
  const rest = frames.slice(cut);
  const bodies = split.push(rest);
  assert.ok(Array.isArray(bodies) && bodies.length === 2);
  assert.deepStrictEqual(bodies[0], text("first"));
  assert.notEqual((bodies[0] as Uint8Array).buffer, rest.buffer);
  assert.deepStrictEqual(bodies[1], text("second"));
  assert.equal((bodies[1] as Uint8Array).buffer, rest.buffer);
  assert.equal(split.bufferedBytes, 0);
});

Deno.test("FrameDecoder decodes empty bodies, whole or byte by byte", () => {
  const stream = concatBytes([encodeFrame(bytes()), encodeFrame(text("x")), encodeFrame(bytes())]);
  const expected = [bytes(), text("x"), bytes()];
  assert.deepStrictEqual(decodeStream(stream, []), expected);
  const everyByte = Array.from({ length: stream.byteLength }, (_, index) => index + 1);
  assert.deepStrictEqual(decodeStream(stream, everyByte), expected);
});

Deno.test("FrameDecoder rejects an oversize length and stays poisoned", () => {
  const header = bytes(0x01, 0x31, 0x2d, 0x00, 0, 0, 0, 0); // 20_000_000 bytes
  const decoder = new FrameDecoder();
  const result = decoder.push(header);
  assert.deepStrictEqual(result, {
    error: "frame body of 20000000 bytes exceeds the limit of 16777216",
  });
  assert.deepStrictEqual(decoder.push(encodeFrame(text("fine"))), result);
  assert.equal(decoder.bufferedBytes, 0);
  const small = new FrameDecoder(4);
  assert.deepStrictEqual(small.push(encodeFrame(text("12345"))), {
    error: "frame body of 5 bytes exceeds the limit of 4",
  });
});

Deno.test("FrameDecoder rejects a checksum mismatch and stays poisoned", () => {
  const frame = encodeFrame(text("payload"));
  frame[FRAME_HEADER_BYTES + 2] = (frame[FRAME_HEADER_BYTES + 2] as number) ^ 0x01;
  const decoder = new FrameDecoder();
  assert.deepStrictEqual(decoder.push(frame), { error: "frame checksum mismatch" });
  assert.deepStrictEqual(decoder.push(encodeFrame(text("fine"))), {
    error: "frame checksum mismatch",
  });
});

// ---------------------------------------------------------------- fuzz

function feed(stream: Uint8Array, chunkSize: number): void {
  const decoder = new FrameDecoder();
  for (let start = 0; start < stream.byteLength; start += chunkSize) {
    const result = decoder.push(stream.subarray(start, start + chunkSize));
    if (!Array.isArray(result)) return;
    for (const body of result) {
      for (const context of [FROM_CLIENT, FROM_REPLICA, TO_CLIENT]) decodeMessage(body, context);
    }
  }
}

Deno.test("FrameDecoder and decodeMessage never throw on random bytes", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 512 }),
      fc.integer({ min: 1, max: 64 }),
      (data, size) => {
        feed(data, size);
        for (const context of [FROM_CLIENT, FROM_REPLICA, TO_CLIENT]) {
          const result = decodeMessage(data, context);
          assert.equal(typeof result.ok, "boolean");
        }
      },
    ),
    { numRuns: FUZZ_RUNS },
  );
});

type Mutation =
  | { readonly kind: "flip"; readonly at: number; readonly mask: number }
  | { readonly kind: "insert"; readonly at: number; readonly byte: number }
  | { readonly kind: "delete"; readonly at: number };

const mutationArbitrary: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({
    kind: fc.constant("flip" as const),
    at: fc.nat(),
    mask: fc.integer({ min: 1, max: 255 }),
  }),
  fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), byte: fc.nat(255) }),
  fc.record({ kind: fc.constant("delete" as const), at: fc.nat() }),
);

function mutate(data: Uint8Array, mutations: readonly Mutation[]): Uint8Array {
  let out: Uint8Array = data.slice();
  for (const mutation of mutations) {
    const at = mutation.at % (out.byteLength + 1);
    if (mutation.kind === "flip" && at < out.byteLength) {
      out[at] = (out[at] as number) ^ mutation.mask;
    } else if (mutation.kind === "insert") {
      out = concatBytes([out.subarray(0, at), bytes(mutation.byte), out.subarray(at)]);
    } else if (mutation.kind === "delete" && at < out.byteLength) {
      out = concatBytes([out.subarray(0, at), out.subarray(at + 1)]);
    }
  }
  return out;
}

Deno.test("FrameDecoder and decodeMessage never throw on mutated valid frames", () => {
  const frames = SAMPLES.map(([message]) => encodeFramedMessage(message));
  const bodies = SAMPLES.map(([message]) => encodeMessage(message));
  fc.assert(
    fc.property(
      fc.nat(SAMPLES.length - 1),
      fc.array(mutationArbitrary, { minLength: 1, maxLength: 4 }),
      fc.integer({ min: 1, max: 32 }),
      (index, mutations, size) => {
        feed(mutate(frames[index] as Uint8Array, mutations), size);
        // Mutating the body alone gets past the checksum to the msgpack scan and the validator.
        const body = mutate(bodies[index] as Uint8Array, mutations);
        for (const context of [FROM_CLIENT, FROM_REPLICA, TO_CLIENT]) {
          const result = decodeMessage(body, context);
          assert.equal(typeof result.ok, "boolean");
        }
      },
    ),
    { numRuns: FUZZ_RUNS },
  );
});

// ---------------------------------------------------------------- speed

Deno.test("codec encodes and decodes small Prepares quickly", () => {
  const operation = new Uint8Array(SPEED_OPERATION_BYTES).fill(7);
  const messages: Message[] = [];
  for (let index = 0; index < SPEED_MESSAGES; index++) {
    messages.push({
      type: "prepare",
      epoch: 0,
      viewNumber: 3,
      entries: [{
        opNumber: index + 1,
        viewNumber: 3,
        clientId: 1000 + (index % 50),
        requestNumber: index,
        operation,
        timestamp: TIMESTAMP + index,
      }],
      commitNumber: index,
      replica: 0,
    });
  }
  // The first pass lets the JIT compile the hot paths; the best pass is the steady state, the
  // others absorb garbage collections and noise from other processes.
  let best = { encodeMs: Infinity, decodeMs: Infinity, framedMs: Infinity };
  let bodyBytes = 0;
  for (let pass = 0; pass < SPEED_PASSES; pass++) {
    const bodies: Uint8Array[] = new Array(SPEED_MESSAGES);
    const encodeStart = performance.now();
    for (let index = 0; index < SPEED_MESSAGES; index++) {
      bodies[index] = encodeMessage(messages[index] as Message);
    }
    const encodeMs = performance.now() - encodeStart;
    const decodeStart = performance.now();
    let decoded = 0;
    for (let index = 0; index < SPEED_MESSAGES; index++) {
      if (decodeMessage(bodies[index] as Uint8Array, FROM_REPLICA).ok) decoded++;
    }
    const decodeMs = performance.now() - decodeStart;
    const framedStart = performance.now();
    for (let index = 0; index < SPEED_MESSAGES; index++) {
      encodeFramedMessage(messages[index] as Message);
    }
    const framedMs = performance.now() - framedStart;
    assert.equal(decoded, SPEED_MESSAGES);
    bodyBytes = (bodies[0] as Uint8Array).byteLength;
    if (pass > 0 && encodeMs + decodeMs < best.encodeMs + best.decodeMs) {
      best = { encodeMs, decodeMs, framedMs };
    }
  }
  const rate = (ms: number): string =>
    `${Math.round(SPEED_MESSAGES / (ms / 1000)).toLocaleString("en")}/s`;
  console.log(
    `${SPEED_MESSAGES} Prepares of ${bodyBytes} bytes: encode ${rate(best.encodeMs)}, ` +
      `decode ${rate(best.decodeMs)}, encode+decode ${rate(best.encodeMs + best.decodeMs)}, ` +
      `encodeFramedMessage ${rate(best.framedMs)}`,
  );
});

// ---------------------------------------------------------------- the hand-written hot path

/** Numbers on both sides of every msgpack integer width, and timestamps past 2^32 (float64). */
const wideNat = fc.oneof(
  fc.nat(300),
  fc.constantFrom(127, 128, 255, 256, 65_535, 65_536, 2 ** 32 - 1, 2 ** 32, TIMESTAMP),
  fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
);
/** Epochs: small ones, and both sides of the 32-bit and `EPOCH_MAX` edges. */
const wideEpoch = fc.oneof(
  fc.nat(300),
  fc.constantFrom(127, 128, 65_536, 2 ** 32 - 1, EPOCH_MAX),
  fc.integer({ min: 0, max: EPOCH_MAX }),
);
const wideBytes = fc.oneof(
  fc.uint8Array({ maxLength: 300 }),
  fc.constantFrom(255, 256, 65_535, 65_536).map((n) => new Uint8Array(n).fill(3)),
);

/** Random valid hot-path messages with their connection, numbers of every width. */
const hotMessage: fc.Arbitrary<readonly [Message, ValidationContext]> = fc.oneof(
  fc.record({ c: wideNat, s: wideNat, op: wideBytes }).map(({ c, s, op }) =>
    [{ type: "request", clientId: c, requestNumber: s, operation: op }, FROM_CLIENT] as const
  ),
  fc.record({
    v: wideNat,
    c: wideNat,
    s: wideNat,
    n: wideNat,
    k: fc.nat({ max: 0xffffffff }),
    x: wideBytes,
  }).map(({ v, c, s, n, k, x }) =>
    [
      {
        type: "reply",
        viewNumber: v,
        clientId: c,
        requestNumber: s,
        opNumber: n,
        operationChecksum: k,
        result: x,
      },
      TO_CLIENT,
    ] as const
  ),
  fc.record({
    e: wideEpoch,
    v: wideNat,
    k: wideNat,
    r: fc.nat(REPLICA_COUNT - 1),
    first: fc.integer({ min: 1, max: 2 ** 40 }),
    // Room for the entries' increments: every number stays a safe integer.
    t: wideNat.map((t) => Math.min(t, Number.MAX_SAFE_INTEGER - 100)),
    c: wideNat,
    ops: fc.array(wideBytes, { maxLength: 20 }),
  }).map(({ e, v, k, r, first, t, c, ops }) =>
    [
      {
        type: "prepare",
        epoch: e,
        viewNumber: v,
        entries: ops.map((operation, i) => ({
          opNumber: first + i,
          viewNumber: Math.floor(v / 2),
          clientId: c,
          requestNumber: i,
          operation,
          timestamp: t + i,
        })),
        commitNumber: k,
        replica: r,
      },
      FROM_REPLICA,
    ] as const
  ),
  fc.record({ e: wideEpoch, v: wideNat, n: wideNat, r: fc.nat(REPLICA_COUNT - 1) }).map((
    { e, v, n, r },
  ) =>
    [
      { type: "prepare_ok", epoch: e, viewNumber: v, opNumber: n, replica: r, readRound: 0 },
      FROM_REPLICA,
    ] as const
  ),
  fc.record({ e: wideEpoch, v: wideNat, k: wideNat, r: fc.nat(REPLICA_COUNT - 1) }).map((
    { e, v, k, r },
  ) =>
    [
      { type: "commit", epoch: e, viewNumber: v, commitNumber: k, replica: r, readRound: 0 },
      FROM_REPLICA,
    ] as const
  ),
  fc.record({
    e: wideEpoch,
    n: wideNat,
    i: fc.oneof(wideNat, fc.constant(CHUNK_INDEX_LIMIT - 1)).map((i) => i % CHUNK_INDEX_LIMIT),
    x: wideBytes,
    r: fc.nat(REPLICA_COUNT - 1),
  }).map(({ e, n, i, x, r }) =>
    [
      { type: "checkpoint_chunk", epoch: e, opNumber: n, index: i, bytes: x, replica: r },
      FROM_REPLICA,
    ] as const
  ),
);

/** The positional fields msgpackr encodes for a hot-path message. */
function referenceFields(message: Message): unknown[] {
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
    case "prepare":
      return [
        TAG_PREPARE,
        message.epoch,
        message.viewNumber,
        message.commitNumber,
        message.replica,
        message.entries.map(wireEntry),
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
        MESSAGE_TAGS.commit,
        message.epoch,
        message.viewNumber,
        message.commitNumber,
        message.replica,
        message.readRound,
      ];
    case "checkpoint_chunk":
      return [
        TAG_CHECKPOINT_CHUNK,
        message.epoch,
        message.opNumber,
        message.index,
        message.bytes,
        message.replica,
      ];
    default:
      throw new Error(`not a hot-path message: ${message.type}`);
  }
}

Deno.test("codec writes hot-path messages byte for byte as msgpackr does", () => {
  fc.assert(
    fc.property(hotMessage, ([message]) => {
      const expected = raw(referenceFields(message));
      assert.deepStrictEqual(encodeMessage(message), expected);
      const framed = encodeFramedMessage(message);
      assert.deepStrictEqual(framed.subarray(FRAME_HEADER_BYTES), expected);
      assert.deepStrictEqual(framed, encodeFrame(expected));
    }),
    { numRuns: 500 },
  );
});

Deno.test("codec hot-path decoder agrees with the general decoder on valid messages", () => {
  fc.assert(
    fc.property(hotMessage, ([message, context]) => {
      const body = encodeMessage(message);
      const fast = decodeMessage(body, context);
      assert.ok(fast.ok, !fast.ok ? fast.error : "");
      assert.deepStrictEqual(fast, decodeMessageGeneral(body, context));
      assert.deepStrictEqual(fast.message, message);
    }),
    { numRuns: 500 },
  );
});

Deno.test("codec hot-path decoder agrees with the general decoder on mutated bodies", () => {
  // A few bytes changed, cut or added: either both decoders reject (the fast one declines and
  // the general one names the fault) or both accept the same message. Replicas must never
  // disagree on what a body means.
  const contexts = [FROM_CLIENT, FROM_REPLICA, TO_CLIENT];
  fc.assert(
    fc.property(
      mutatedBytes(hotMessage.map(([message]) => encodeMessage(message))),
      fc.nat(2),
      (body, contextIndex) => {
        const context = contexts[contextIndex]!;
        assert.deepStrictEqual(decodeMessage(body, context), decodeMessageGeneral(body, context));
      },
    ),
    { numRuns: FUZZ_RUNS },
  );
});

Deno.test("ScratchBuffer reuses one buffer up to its limit and hands out its own beyond it", () => {
  const scratch = new ScratchBuffer(1024 * 1024);
  const first = scratch.take(100);
  assert.equal(first.length, 100);
  assert.equal(scratch.take(5000).buffer, first.buffer, "reused while it fits");
  const grown = scratch.take(200 * 1024);
  assert.equal(grown.length, 200 * 1024);
  assert.notEqual(grown.buffer, first.buffer, "grown when it does not fit");
  assert.equal(scratch.take(10).buffer, grown.buffer, "the grown buffer is kept");
  const huge = scratch.take(2 * 1024 * 1024);
  assert.equal(huge.length, 2 * 1024 * 1024);
  assert.notEqual(huge.buffer, grown.buffer, "beyond the limit: a buffer of its own");
  assert.equal(scratch.take(10).buffer, grown.buffer, "and the kept buffer stays as it was");
});

Deno.test("codec rejects a reply whose operation checksum is not 32 bits, or a bad reject reason", () => {
  assertRejected(
    raw([TAG_REPLY, 1, 1, 1, 1, 2 ** 32, new Uint8Array()]),
    TO_CLIENT,
    "reply: operationChecksum 4294967296 is not a 32-bit checksum",
  );
  assertRejected(
    raw([TAG_REJECTED, 1, 1, 9, 0, 0]),
    TO_CLIENT,
    "rejected: unknown reason 9",
  );
});
