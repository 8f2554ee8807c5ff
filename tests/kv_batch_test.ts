import assert from "node:assert/strict";
import fc from "fast-check";
import {
  BATCH_OPERATIONS_MAX,
  BATCH_RESULT_BYTES_MAX,
  decodeKvBatch,
  decodeKvBatchResult,
  decodeKvResult,
  encodeKvBatch,
  encodeKvOperation,
  type KvOperation,
  type KvResult,
  KvStore,
} from "../src/app/kv.ts";

const CONTEXT = { opNumber: 1, timestamp: 0, clientId: 1, requestNumber: 1 };
const encoder = new TextEncoder();
const text = (value: string) => encoder.encode(value);

function runBatch(store: KvStore, operations: readonly KvOperation[]) {
  return decodeKvBatchResult(store.apply(encodeKvBatch(operations), CONTEXT));
}

Deno.test("kv batch executes its operations in order, each result in its place", () => {
  const store = new KvStore();
  const results = runBatch(store, [
    { command: "SET", key: text("a"), value: text("1") },
    { command: "GET", key: text("a") },
    { command: "DEL", key: text("a") },
    { command: "DEL", key: text("a") },
    { command: "GET", key: text("a") },
    { command: "SET", key: text("b"), value: text("2") },
    { command: "SIZE" },
  ]);
  assert.deepEqual(results, [
    { kind: "bytes", value: text("1") },
    { kind: "bytes", value: text("1") },
    { kind: "integer", value: 1 },
    { kind: "integer", value: 0 },
    { kind: "nil" },
    { kind: "bytes", value: text("2") },
    { kind: "integer", value: 1 },
  ]);
  assert.equal(store.size, 1);
});

Deno.test("kv batch gives the same state and results as its operations one by one", () => {
  const key = fc.constantFrom("a", "b", "c").map(text);
  const operation: fc.Arbitrary<KvOperation> = fc.oneof(
    fc.record({
      command: fc.constant("SET" as const),
      key,
      value: fc.uint8Array({ maxLength: 8 }),
    }),
    fc.record({ command: fc.constant("GET" as const), key }),
    fc.record({ command: fc.constant("DEL" as const), key }),
    fc.constant({ command: "SIZE" as const }),
  );
  fc.assert(
    fc.property(fc.array(operation, { minLength: 1, maxLength: 20 }), (operations) => {
      const one = new KvStore();
      const expected: KvResult[] = operations.map((op) =>
        decodeKvResult(one.apply(encodeKvOperation(op), CONTEXT))
      );
      const batched = new KvStore();
      assert.deepEqual(runBatch(batched, operations), expected);
      assert.equal(batched.digest(), one.digest());
    }),
    { numRuns: 200 },
  );
});

Deno.test("kv batch stops once its results reach the limit, having run at least one", () => {
  const store = new KvStore();
  const big = new Uint8Array(600 * 1024).fill(7);
  const operations: KvOperation[] = [
    { command: "SET", key: text("x"), value: big },
    { command: "SET", key: text("y"), value: big },
    { command: "SET", key: text("z"), value: text("small") },
  ];
  // 2 × 600 KiB of results pass BATCH_RESULT_BYTES_MAX (1 MiB) after the second: z is not run.
  assert.ok(2 * big.byteLength > BATCH_RESULT_BYTES_MAX);
  const results = runBatch(store, operations);
  assert.ok(Array.isArray(results));
  assert.equal(results.length, 2);
  assert.equal(store.size, 2);
  const one = runBatch(store, [{ command: "GET", key: text("x") }, {
    command: "GET",
    key: text("x"),
  }]);
  assert.ok(Array.isArray(one));
  assert.equal(one.length, 2);
});

Deno.test("kv batch refuses a nested batch in its place and a malformed one whole", () => {
  const store = new KvStore();
  const inner = encodeKvBatch([{ command: "SIZE" }]);
  // ["BATCH", bin(SIZE), bin(inner batch)], written by hand from the encoder's pieces.
  const size = encodeKvOperation({ command: "SIZE" });
  const bytes = Uint8Array.of(
    0x93,
    0xa5,
    ...text("BATCH"),
    0xc4,
    size.byteLength,
    ...size,
    0xc4,
    inner.byteLength,
    ...inner,
  );
  const results = decodeKvBatchResult(store.apply(bytes, CONTEXT));
  assert.deepEqual(results, [
    { kind: "integer", value: 0 },
    { kind: "error", message: "a BATCH cannot hold another BATCH" },
  ]);
  const empty = Uint8Array.of(0x91, 0xa5, ...text("BATCH"));
  assert.deepEqual(decodeKvBatchResult(store.apply(empty, CONTEXT)), {
    kind: "error",
    message: `BATCH expects 1 to ${BATCH_OPERATIONS_MAX} operations, got 0`,
  });
  const notBin = Uint8Array.of(0x92, 0xa5, ...text("BATCH"), 0x01);
  assert.match(
    (decodeKvBatchResult(store.apply(notBin, CONTEXT)) as { message: string }).message,
    /operation 1 must be an encoded operation/,
  );
  assert.equal(decodeKvBatch(encodeKvOperation({ command: "SIZE" })), undefined);
});

Deno.test("kv batch of reads only is read-only, and query answers as apply", () => {
  const store = new KvStore();
  store.apply(encodeKvOperation({ command: "SET", key: text("a"), value: text("1") }), CONTEXT);
  const reads = encodeKvBatch([{ command: "GET", key: text("a") }, { command: "SIZE" }]);
  assert.equal(store.readOnly(reads), true);
  assert.deepEqual(store.query(reads), store.apply(reads, CONTEXT));
  const mixed = encodeKvBatch([{ command: "GET", key: text("a") }, {
    command: "DEL",
    key: text("a"),
  }]);
  assert.equal(store.readOnly(mixed), false);
  // A SET alone and a batch of two (also 0x93 first) are told apart.
  const two = encodeKvBatch([{ command: "GET", key: text("a") }, {
    command: "GET",
    key: text("b"),
  }]);
  assert.equal(two[0], 0x93);
  assert.equal(store.readOnly(two), true);
});

Deno.test("kv batch decoders never throw on arbitrary or mutated bytes", () => {
  const store = new KvStore();
  const valid = encodeKvBatch([
    { command: "SET", key: text("k"), value: text("v") },
    { command: "GET", key: text("k") },
  ]);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), fc.nat(), fc.integer({ min: 0, max: 255 }), (
      bytes,
      at,
      byte,
    ) => {
      decodeKvBatchResult(bytes);
      decodeKvBatch(bytes);
      const mutated = valid.slice();
      mutated[at % mutated.byteLength] = byte;
      // The store answers anything with a result, never an exception.
      const result = store.apply(mutated, CONTEXT);
      assert.ok(result instanceof Uint8Array);
    }),
    { numRuns: 500 },
  );
});
