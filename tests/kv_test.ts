import { strict as assert } from "node:assert";
import fc from "fast-check";
import { pack, unpack } from "msgpackr";
import {
  decodeKvOperation,
  decodeKvOperationGeneral,
  decodeKvResult,
  encodeKvOperation,
  encodeKvResult,
  formatKvResult,
  KEY_SIZE_MAX,
  type KvOperation,
  type KvResult,
  KvStore,
  VALUE_SIZE_MAX,
} from "../src/app/kv.ts";
import type { ApplyContext } from "../src/app/state_machine.ts";
import { mutatedBytes } from "./_mutate.ts";

const CONTEXT: ApplyContext = { opNumber: 1, timestamp: 0, clientId: 1, requestNumber: 1 };
const RANDOM_BYTES_RUNS = 2_000;
const RANDOM_SEQUENCE_RUNS = 300;

const text = (value: string): Uint8Array => new TextEncoder().encode(value);

function run(store: KvStore, operation: KvOperation): KvResult {
  return decodeKvResult(store.apply(encodeKvOperation(operation), CONTEXT));
}

function applyRaw(store: KvStore, bytes: Uint8Array): KvResult {
  return decodeKvResult(store.apply(bytes, CONTEXT));
}

function set(store: KvStore, key: string, value: string): KvResult {
  return run(store, { command: "SET", key: text(key), value: text(value) });
}

function get(store: KvStore, key: Uint8Array): KvResult {
  return run(store, { command: "GET", key });
}

/** msgpack without msgpackr's pooled Buffer, for hand-built malformed operations. */
function raw(value: unknown): Uint8Array {
  return new Uint8Array(pack(value));
}

function sameBytes(left: Uint8Array, right: Uint8Array): boolean {
  return left.byteLength === right.byteLength && left.every((byte, index) => byte === right[index]);
}

function assertBytesResult(result: KvResult, expected: Uint8Array): void {
  assert.equal(result.kind, "bytes");
  if (result.kind !== "bytes") return;
  assert.deepEqual([...result.value], [...expected]);
}

function assertErrorContaining(result: KvResult, fragment: string): void {
  assert.equal(result.kind, "error");
  if (result.kind !== "error") return;
  assert.ok(result.message.includes(fragment), `"${result.message}" lacks "${fragment}"`);
}

function populated(): KvStore {
  const store = new KvStore();
  set(store, "a", "1");
  set(store, "b", "two words");
  return store;
}

// ---------------------------------------------------------------- semantics

Deno.test("KvStore SET returns the value", () => {
  const store = new KvStore();
  assertBytesResult(set(store, "x", "1"), text("1"));
});

Deno.test("KvStore GET returns the value last SET", () => {
  const store = new KvStore();
  set(store, "x", "1");
  set(store, "x", "2");
  assertBytesResult(get(store, text("x")), text("2"));
});

Deno.test("KvStore GET of a missing key returns nil", () => {
  assert.deepEqual(get(new KvStore(), text("missing")), { kind: "nil" });
});

Deno.test("KvStore DEL of a present key returns 1 and removes it", () => {
  const store = populated();
  assert.deepEqual(run(store, { command: "DEL", key: text("a") }), { kind: "integer", value: 1 });
  assert.deepEqual(get(store, text("a")), { kind: "nil" });
});

Deno.test("KvStore DEL of a missing key returns 0", () => {
  const store = populated();
  assert.deepEqual(run(store, { command: "DEL", key: text("zz") }), {
    kind: "integer",
    value: 0,
  });
});

Deno.test("KvStore SIZE counts keys, not SETs", () => {
  const store = new KvStore();
  set(store, "a", "1");
  set(store, "a", "2");
  set(store, "b", "3");
  assert.deepEqual(run(store, { command: "SIZE" }), { kind: "integer", value: 2 });
  assert.equal(store.size, 2);
});

Deno.test("KvStore values with spaces round-trip", () => {
  const store = new KvStore();
  set(store, "k", "  hello   wide world ");
  assertBytesResult(get(store, text("k")), text("  hello   wide world "));
});

Deno.test("KvStore arbitrary key and value bytes round-trip", () => {
  const store = new KvStore();
  const key = new Uint8Array([0x00, 0xff, 0x80, 0x9f, 0x20]);
  const value = new Uint8Array([0x00, 0xff, 0x00, 0x0a, 0xc3]);
  run(store, { command: "SET", key, value });
  assertBytesResult(get(store, key), value);
  assert.deepEqual(get(store, new Uint8Array([0x00, 0xff, 0x80, 0x9f])), { kind: "nil" });
});

Deno.test("KvStore empty key and empty value are allowed", () => {
  const store = new KvStore();
  run(store, { command: "SET", key: new Uint8Array(), value: new Uint8Array() });
  assertBytesResult(get(store, new Uint8Array()), new Uint8Array());
  assert.equal(store.size, 1);
});

Deno.test("KvStore SET copies the value so the caller may reuse its buffer", () => {
  const store = new KvStore();
  const operation = encodeKvOperation({ command: "SET", key: text("k"), value: text("abc") });
  store.apply(operation, CONTEXT);
  operation.fill(0);
  assertBytesResult(get(store, text("k")), text("abc"));
});

Deno.test("KvStore accepts keys and values at the size limits", () => {
  const store = new KvStore();
  const key = new Uint8Array(KEY_SIZE_MAX).fill(7);
  const value = new Uint8Array(VALUE_SIZE_MAX).fill(9);
  assertBytesResult(run(store, { command: "SET", key, value }), value);
  assertBytesResult(get(store, key), value);
});

// ---------------------------------------------------------------- malformed operations

const MALFORMED_OPERATIONS: readonly (readonly [string, Uint8Array, string])[] = [
  ["empty input", new Uint8Array(), "operation is empty"],
  ["a non-array", raw("SET"), "operation must be an array"],
  ["an empty array", raw([]), "empty array"],
  ["a non-string command", raw([1, text("k")]), "command must be a string, got integer"],
  ["a lower-case command", raw(["set", text("k"), text("v")]), 'unknown command "set"'],
  ["an unknown command", raw(["INCR", text("k")]), 'unknown command "INCR"'],
  ["SET with 1 argument", raw(["SET", text("k")]), "SET expects 2 arguments (key, value), got 1"],
  ["SET with 3 arguments", raw(["SET", text("k"), text("v"), text("w")]), "got 3"],
  ["GET with 0 arguments", raw(["GET"]), "GET expects 1 argument (key), got 0"],
  ["DEL with 2 arguments", raw(["DEL", text("a"), text("b")]), "DEL expects 1 argument"],
  ["SIZE with 1 argument", raw(["SIZE", text("a")]), "SIZE expects 0 arguments, got 1"],
  ["a string key", raw(["GET", "k"]), "key must be binary (msgpack bin), got string"],
  [
    "an integer value",
    raw(["SET", text("k"), 5]),
    "value must be binary (msgpack bin), got integer",
  ],
  ["a nil key", raw(["DEL", null]), "key must be binary (msgpack bin), got nil"],
  [
    "an oversize key",
    raw(["GET", new Uint8Array(70_000)]),
    `key is 70000 bytes, the limit is ${KEY_SIZE_MAX}`,
  ],
  [
    "an oversize value",
    raw(["SET", text("k"), new Uint8Array(VALUE_SIZE_MAX + 1)]),
    `value is ${VALUE_SIZE_MAX + 1} bytes, the limit is ${VALUE_SIZE_MAX}`,
  ],
  ["trailing garbage", new Uint8Array([...raw(["SIZE"]), 0x01, 0x02]), "2 trailing bytes"],
  ["truncated msgpack", raw(["SET", text("k"), text("value")]).subarray(0, 8), "truncated"],
  // A msgpackr typed-array extension decodes to a Uint8Array, yet it is not a msgpack bin.
  [
    "an extension-typed key",
    new Uint8Array([0x92, 0xa3, 0x47, 0x45, 0x54, 0xc7, 0x02, 0x74, 0x01, 0x6b]),
    "extension type",
  ],
  ["the unused byte 0xc1", new Uint8Array([0x91, 0xc1]), "0xc1"],
  ["deep nesting", new Uint8Array([...new Array<number>(10_000).fill(0x91), 0x01]), "deeper"],
];

for (const [name, bytes, fragment] of MALFORMED_OPERATIONS) {
  Deno.test(`KvStore ${name} gives an error result and leaves the state unchanged`, () => {
    const store = populated();
    const before = store.snapshot();
    const digestBefore = store.digest();
    assertErrorContaining(applyRaw(store, bytes), fragment);
    assert.deepEqual(store.snapshot(), before);
    assert.equal(store.digest(), digestBefore);
  });
}

Deno.test("decodeKvOperation reports an error for every malformed class", () => {
  for (const [name, bytes, fragment] of MALFORMED_OPERATIONS) {
    const decoded = decodeKvOperation(bytes);
    assert.ok("error" in decoded, name);
    assert.ok(decoded.error.includes(fragment), `${name}: "${decoded.error}"`);
  }
});

Deno.test("KvStore apply never throws on random bytes", () => {
  const store = populated();
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      const result = decodeKvResult(store.apply(bytes, CONTEXT));
      assert.ok(["nil", "bytes", "integer", "error"].includes(result.kind));
    }),
    { numRuns: RANDOM_BYTES_RUNS },
  );
});

Deno.test("KvStore apply never throws on random msgpack-shaped operations", () => {
  const store = new KvStore();
  const argument = fc.oneof(
    fc.uint8Array({ maxLength: 8 }),
    fc.string({ maxLength: 4 }),
    fc.integer(),
    fc.constant(null),
  );
  const command = fc.constantFrom("SET", "GET", "DEL", "SIZE", "set", "", "XYZ");
  fc.assert(
    fc.property(command, fc.array(argument, { maxLength: 4 }), (name, args) => {
      store.apply(raw([name, ...args]), CONTEXT);
    }),
    { numRuns: RANDOM_BYTES_RUNS },
  );
});

Deno.test("KvStore equal inputs give equal error results on different replicas", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      assert.deepEqual(new KvStore().apply(bytes, CONTEXT), new KvStore().apply(bytes, CONTEXT));
    }),
    { numRuns: RANDOM_BYTES_RUNS },
  );
});

// ---------------------------------------------------------------- digest

const smallBytes = fc.uint8Array({ maxLength: 3 });
const operationArbitrary: fc.Arbitrary<KvOperation> = fc.oneof(
  fc.record({ command: fc.constant("SET" as const), key: smallBytes, value: smallBytes }),
  fc.record({ command: fc.constant("DEL" as const), key: smallBytes }),
);

function replay(operations: readonly KvOperation[]): KvStore {
  const store = new KvStore();
  for (const operation of operations) store.apply(encodeKvOperation(operation), CONTEXT);
  return store;
}

Deno.test("KvStore digest is the same for equal states reached in different orders", () => {
  const first = new KvStore();
  set(first, "a", "1");
  set(first, "b", "2");
  set(first, "c", "3");
  run(first, { command: "DEL", key: text("c") });
  const second = new KvStore();
  set(second, "b", "old");
  set(second, "a", "1");
  set(second, "b", "2");
  assert.equal(first.digest(), second.digest());
});

Deno.test("KvStore digest of the empty store returns after SET and DEL", () => {
  const store = new KvStore();
  const empty = store.digest();
  set(store, "k", "v");
  assert.notEqual(store.digest(), empty);
  run(store, { command: "DEL", key: text("k") });
  assert.equal(store.digest(), empty);
});

Deno.test("KvStore digest tells apart pairs that split the same bytes differently", () => {
  const first = new KvStore();
  set(first, "ab", "c");
  const second = new KvStore();
  set(second, "a", "bc");
  assert.notEqual(first.digest(), second.digest());
});

Deno.test("KvStore digest matches a digest computed from scratch", () => {
  fc.assert(
    fc.property(fc.array(operationArbitrary, { maxLength: 40 }), (operations) => {
      const store = replay(operations);
      const fresh = new KvStore();
      fresh.restore(store.snapshot());
      assert.equal(store.digest(), fresh.digest());
    }),
    { numRuns: RANDOM_SEQUENCE_RUNS },
  );
});

Deno.test("KvStore digests are equal exactly when snapshots are equal", () => {
  fc.assert(
    fc.property(
      fc.array(operationArbitrary, { maxLength: 12 }),
      fc.array(operationArbitrary, { maxLength: 12 }),
      (left, right) => {
        const first = replay(left);
        const second = replay(right);
        const sameState = sameBytes(first.snapshot(), second.snapshot());
        assert.equal(first.digest() === second.digest(), sameState);
      },
    ),
    { numRuns: RANDOM_SEQUENCE_RUNS * 10 },
  );
});

Deno.test("KvStore digest ignores the order of independent operations", () => {
  fc.assert(
    fc.property(
      fc.uniqueArray(fc.tuple(smallBytes, smallBytes), {
        selector: ([key]) => key.join(","),
        maxLength: 20,
      }).chain((pairs) =>
        fc.tuple(
          fc.constant(pairs),
          fc.shuffledSubarray(pairs, { minLength: pairs.length, maxLength: pairs.length }),
        )
      ),
      ([pairs, shuffled]) => {
        const toSet = ([key, value]: readonly [Uint8Array, Uint8Array]): KvOperation => ({
          command: "SET",
          key,
          value,
        });
        assert.equal(replay(pairs.map(toSet)).digest(), replay(shuffled.map(toSet)).digest());
      },
    ),
    { numRuns: RANDOM_SEQUENCE_RUNS },
  );
});

Deno.test("KvStore digest is a short hex string", () => {
  assert.match(populated().digest(), /^[0-9a-f]{24}$/);
});

// ---------------------------------------------------------------- snapshot and restore

Deno.test("KvStore restore of a snapshot preserves the state and the digest", () => {
  fc.assert(
    fc.property(fc.array(operationArbitrary, { maxLength: 40 }), (operations) => {
      const store = replay(operations);
      const copy = new KvStore();
      set(copy, "stale", "state");
      copy.restore(store.snapshot());
      assert.deepEqual(copy.snapshot(), store.snapshot());
      assert.equal(copy.digest(), store.digest());
      assert.equal(copy.size, store.size);
    }),
    { numRuns: RANDOM_SEQUENCE_RUNS },
  );
});

Deno.test("KvStore restore copies values so the snapshot buffer may be reused", () => {
  const snapshot = populated().snapshot();
  const store = new KvStore();
  store.restore(snapshot);
  snapshot.fill(0);
  assertBytesResult(get(store, text("b")), text("two words"));
});

Deno.test("KvStore snapshot is the same for equal states built in different orders", () => {
  const first = new KvStore();
  set(first, "b", "2");
  set(first, "a", "1");
  const second = new KvStore();
  set(second, "a", "1");
  set(second, "b", "2");
  assert.deepEqual(first.snapshot(), second.snapshot());
});

/** The snapshot of a store of two keys with its pairs swapped. */
function outOfOrderSnapshot(): Uint8Array {
  const pairs = unpack(populated().snapshot()) as Uint8Array[][];
  return raw(pairs.reverse().map((pair) => pair.map((bytes) => new Uint8Array(bytes))));
}

const GARBAGE_SNAPSHOTS: readonly (readonly [string, Uint8Array])[] = [
  ["empty bytes", new Uint8Array()],
  ["a non-array", raw({ a: 1 })],
  ["a non-pair entry", raw([[text("k")]])],
  ["a string key", raw([["k", text("v")]])],
  ["keys out of snapshot order", outOfOrderSnapshot()],
  ["duplicate keys", raw([[text("a"), text("1")], [text("a"), text("2")]])],
  ["an oversize key", raw([[new Uint8Array(KEY_SIZE_MAX + 1), text("v")]])],
  ["trailing garbage", new Uint8Array([...raw([]), 0x00])],
  ["truncated bytes", raw([[text("key"), text("value")]]).subarray(0, 5)],
];

for (const [name, bytes] of GARBAGE_SNAPSHOTS) {
  Deno.test(`KvStore restore rejects ${name} with an Error and keeps the state`, () => {
    const store = populated();
    const before = store.snapshot();
    assert.throws(() => store.restore(bytes), Error);
    assert.deepEqual(store.snapshot(), before);
  });
}

Deno.test("KvStore restore throws only Errors on random bytes", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      try {
        new KvStore().restore(bytes);
      } catch (error) {
        assert.ok(error instanceof Error);
      }
    }),
    { numRuns: RANDOM_BYTES_RUNS },
  );
});

// ---------------------------------------------------------------- encoding

const bytesArbitrary = fc.uint8Array({ maxLength: 32 });
const anyOperation: fc.Arbitrary<KvOperation> = fc.oneof(
  fc.record({ command: fc.constant("SET" as const), key: bytesArbitrary, value: bytesArbitrary }),
  fc.record({ command: fc.constant("GET" as const), key: bytesArbitrary }),
  fc.record({ command: fc.constant("DEL" as const), key: bytesArbitrary }),
  fc.record({ command: fc.constant("SIZE" as const) }),
);
const anyResult: fc.Arbitrary<KvResult> = fc.oneof(
  fc.constant({ kind: "nil" as const }),
  fc.record({ kind: fc.constant("bytes" as const), value: bytesArbitrary }),
  fc.record({ kind: fc.constant("integer" as const), value: fc.maxSafeInteger() }),
  fc.record({ kind: fc.constant("integer" as const), value: fc.integer() }),
  fc.record({ kind: fc.constant("error" as const), message: fc.string() }),
);

/** Structural equality that compares byte arrays by content and ignores their class. */
function normalise(value: unknown): unknown {
  if (value instanceof Uint8Array) return [...value];
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalise(v)]));
  }
  return value;
}

Deno.test("encodeKvOperation and decodeKvOperation round-trip", () => {
  fc.assert(
    fc.property(anyOperation, (operation) => {
      const decoded = decodeKvOperation(encodeKvOperation(operation));
      assert.deepEqual(normalise(decoded), normalise(operation));
    }),
    { numRuns: RANDOM_BYTES_RUNS },
  );
});

Deno.test("encodeKvResult and decodeKvResult round-trip", () => {
  fc.assert(
    fc.property(anyResult, (result) => {
      assert.deepEqual(normalise(decodeKvResult(encodeKvResult(result))), normalise(result));
    }),
    { numRuns: RANDOM_BYTES_RUNS },
  );
});

Deno.test("decodeKvOperation returns plain Uint8Array views, not Buffers", () => {
  const decoded = decodeKvOperation(
    encodeKvOperation({ command: "SET", key: text("k"), value: text("v") }),
  );
  assert.ok(!("error" in decoded) && decoded.command === "SET");
  assert.equal(Object.getPrototypeOf(decoded.key), Uint8Array.prototype);
  assert.equal(Object.getPrototypeOf(decoded.value), Uint8Array.prototype);
});

Deno.test("encodeKvOperation returns a plain Uint8Array", () => {
  const bytes = encodeKvOperation({ command: "SIZE" });
  assert.equal(Object.getPrototypeOf(bytes), Uint8Array.prototype);
  assert.deepEqual([...bytes], [0x91, 0xa4, 0x53, 0x49, 0x5a, 0x45]);
});

Deno.test("encodeKvResult writes plain msgpack", () => {
  assert.deepEqual([...encodeKvResult({ kind: "nil" })], [0xc0]);
  assert.deepEqual([...encodeKvResult({ kind: "integer", value: 1 })], [0x01]);
  assert.deepEqual([...encodeKvResult({ kind: "bytes", value: text("a") })], [0xc4, 0x01, 0x61]);
  assert.deepEqual(
    [...encodeKvResult({ kind: "error", message: "x" })],
    [0x81, 0xa5, 0x65, 0x72, 0x72, 0x6f, 0x72, 0xa1, 0x78],
  );
});

Deno.test("encodeKvResult rejects a non-integer integer result", () => {
  assert.throws(() => encodeKvResult({ kind: "integer", value: 1.5 }), RangeError);
});

Deno.test("decodeKvResult never throws on random bytes", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      const result = decodeKvResult(bytes);
      assert.ok(["nil", "bytes", "integer", "error"].includes(result.kind));
    }),
    { numRuns: RANDOM_BYTES_RUNS },
  );
});

Deno.test("decodeKvResult reports malformed replies as errors", () => {
  const cases: readonly Uint8Array[] = [
    new Uint8Array(),
    raw("text"),
    raw(1.5),
    raw([1]),
    raw({ error: 1 }),
    raw({ error: "x", extra: 1 }),
    new Uint8Array([0xc0, 0xc0]),
    new Uint8Array([0xd6, 0xff, 0, 0, 0, 0]),
  ];
  for (const bytes of cases) assertErrorContaining(decodeKvResult(bytes), "malformed result");
});

Deno.test("decodeKvResult accepts int64-encoded integers", () => {
  const bytes = new Uint8Array([0xcf, 0, 0, 0, 0, 0, 0, 0, 5]);
  assert.deepEqual(decodeKvResult(bytes), { kind: "integer", value: 5 });
});

Deno.test("decodeKvResult rejects integers beyond the safe range", () => {
  const bytes = new Uint8Array([0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  assertErrorContaining(decodeKvResult(bytes), "out of range");
});

// ---------------------------------------------------------------- formatting

Deno.test("formatKvResult prints nil as (nil)", () => {
  assert.equal(formatKvResult({ kind: "nil" }), "(nil)");
});

Deno.test("formatKvResult prints integers with their tag", () => {
  assert.equal(formatKvResult({ kind: "integer", value: 1 }), "(integer) 1");
});

Deno.test("formatKvResult prints errors with their tag", () => {
  assert.equal(formatKvResult({ kind: "error", message: "boom" }), "(error) boom");
});

Deno.test("formatKvResult prints UTF-8 text bare", () => {
  assert.equal(formatKvResult({ kind: "bytes", value: text("1") }), "1");
  assert.equal(formatKvResult({ kind: "bytes", value: text("héllo wörld ✓") }), "héllo wörld ✓");
});

Deno.test("formatKvResult quotes invalid UTF-8 like redis-cli", () => {
  const value = new Uint8Array([0xff, 0x00, 0x61, 0x22, 0x5c]);
  assert.equal(formatKvResult({ kind: "bytes", value }), '"\\xff\\x00a\\"\\\\"');
});

Deno.test("formatKvResult quotes text holding control characters", () => {
  assert.equal(formatKvResult({ kind: "bytes", value: text("a\nb\x1b[2J") }), '"a\\nb\\x1b[2J"');
});

Deno.test("formatKvResult prints the empty value as empty quotes", () => {
  assert.equal(formatKvResult({ kind: "bytes", value: new Uint8Array() }), '""');
});

Deno.test("formatKvResult keeps a leading byte-order mark", () => {
  const value = new Uint8Array([0xef, 0xbb, 0xbf, 0x61]);
  assert.equal(formatKvResult({ kind: "bytes", value }), "\ufeffa");
});

// ---------------------------------------------------------------- hand-written fast paths

/** Byte arrays whose lengths straddle the bin 8 / bin 16 / bin 32 boundaries. */
const binSized = fc.oneof(
  fc.uint8Array({ maxLength: 300 }),
  fc.constantFrom(255, 256, 65_535, 65_536).map((n) => new Uint8Array(n).fill(7)),
);

Deno.test("encodeKvOperation writes exactly what msgpackr writes", () => {
  fc.assert(
    fc.property(binSized, binSized, (key, value) => {
      const plain = (v: unknown) => new Uint8Array(pack(v));
      assert.deepEqual(
        encodeKvOperation({ command: "SET", key, value }),
        plain(["SET", key, value]),
      );
      assert.deepEqual(encodeKvOperation({ command: "GET", key }), plain(["GET", key]));
      assert.deepEqual(encodeKvOperation({ command: "DEL", key }), plain(["DEL", key]));
    }),
    { numRuns: 200 },
  );
  assert.deepEqual(encodeKvOperation({ command: "SIZE" }), new Uint8Array(pack(["SIZE"])));
});

Deno.test("encodeKvResult writes exactly what msgpackr writes", () => {
  fc.assert(
    fc.property(binSized, fc.integer({ min: -(2 ** 40), max: 2 ** 40 }), (value, integer) => {
      const plain = (v: unknown) => new Uint8Array(pack(v));
      assert.deepEqual(encodeKvResult({ kind: "bytes", value }), plain(value));
      assert.deepEqual(encodeKvResult({ kind: "integer", value: integer }), plain(integer));
    }),
    { numRuns: 200 },
  );
  for (const small of [0, 1, 127, 128, 255, 256]) {
    assert.deepEqual(
      encodeKvResult({ kind: "integer", value: small }),
      new Uint8Array(pack(small)),
    );
  }
  assert.deepEqual(encodeKvResult({ kind: "nil" }), new Uint8Array(pack(null)));
});

Deno.test("decodeKvOperation fast path agrees with the general decoder on mutated operations", () => {
  // Valid encodings with a few bytes changed, cut or added: the fast path must either decline
  // them or decode them exactly as the general path does, or replicas could disagree.
  const operation = fc.oneof(
    fc.record({ key: binSized, value: binSized }).map(({ key, value }) =>
      encodeKvOperation({ command: "SET", key, value })
    ),
    binSized.map((key) => encodeKvOperation({ command: "GET", key })),
    binSized.map((key) => encodeKvOperation({ command: "DEL", key })),
    fc.constant(encodeKvOperation({ command: "SIZE" })),
  );
  const mutated = mutatedBytes(operation);
  // Just over the limits, which random sizes do not reach: both paths must reject alike.
  for (
    const bytes of [
      encodeKvOperation({ command: "GET", key: new Uint8Array(KEY_SIZE_MAX + 1) }),
      encodeKvOperation({
        command: "SET",
        key: text("k"),
        value: new Uint8Array(VALUE_SIZE_MAX + 1),
      }),
    ]
  ) {
    const decoded = decodeKvOperation(bytes);
    assert.ok("error" in decoded);
    assert.deepEqual(decoded, decodeKvOperationGeneral(bytes));
  }
  fc.assert(
    fc.property(mutated, (bytes) => {
      assert.deepEqual(decodeKvOperation(bytes), decodeKvOperationGeneral(bytes));
    }),
    { numRuns: RANDOM_BYTES_RUNS },
  );
});

Deno.test("KvStore SET keeps its own copy of the value", () => {
  const store = new KvStore();
  const operation = encodeKvOperation({ command: "SET", key: text("k"), value: text("abc") });
  store.apply(operation, CONTEXT);
  operation.fill(0);
  assert.deepEqual(get(store, text("k")), { kind: "bytes", value: text("abc") });
});

Deno.test("KvStore stores short and long values alike: results, reads, digests, snapshots", () => {
  // Values up to 1 KiB are kept as strings and longer ones as bytes; nothing may tell them apart.
  const sizes = [0, 1, 255, 256, 1023, 1024, 1025, 4096, 65_536];
  const incremental = new KvStore();
  const computed = new KvStore({ incrementalDigest: false });
  for (const [index, size] of sizes.entries()) {
    const value = new Uint8Array(size).map((_, i) => (i * 31 + index) & 0xff);
    const operation = encodeKvOperation({ command: "SET", key: text(`k${index}`), value });
    for (const store of [incremental, computed]) {
      const result = store.apply(operation, CONTEXT);
      assert.deepEqual(result, new Uint8Array(pack(value)), `SET result for ${size} bytes`);
      assert.deepEqual(get(store, text(`k${index}`)), { kind: "bytes", value });
    }
  }
  assert.equal(incremental.digest(), computed.digest());
  const restored = new KvStore();
  restored.restore(incremental.snapshot());
  assert.equal(restored.digest(), incremental.digest());
  assert.deepEqual(restored.snapshot(), computed.snapshot());
  // Overwrites and deletes keep the digests equal across the two kinds of storage.
  for (const store of [incremental, computed]) {
    set(store, "k1", "x".repeat(2000));
    set(store, "k7", "short");
    run(store, { command: "DEL", key: text("k3") });
  }
  assert.equal(incremental.digest(), computed.digest());
});

Deno.test("KvStore SET result is the operation's own value bytes when it can be", () => {
  const store = new KvStore();
  const operation = encodeKvOperation({ command: "SET", key: text("k"), value: text("abc") });
  const result = store.apply(operation, CONTEXT);
  assert.deepEqual(result, new Uint8Array(pack(text("abc"))));
  assert.equal(result.buffer, operation.buffer, "a view, not a copy");
  // A value whose bin header is not the shortest form still gets the canonical result.
  const longHeader = new Uint8Array([
    0x93,
    0xa3,
    0x53,
    0x45,
    0x54,
    0xc4,
    1,
    0x6b,
    0xc5,
    0,
    3,
    1,
    2,
    3,
  ]);
  const odd = store.apply(longHeader, CONTEXT);
  assert.deepEqual(odd, new Uint8Array(pack(new Uint8Array([1, 2, 3]))));
});

Deno.test("KvStore readOnly accepts GET and SIZE only, and query answers as apply would", () => {
  const store = new KvStore();
  set(store, "a", "1");
  const op = (operation: KvOperation) => encodeKvOperation(operation);
  const getA = op({ command: "GET", key: text("a") });
  const getB = op({ command: "GET", key: text("b") });
  const size = op({ command: "SIZE" });
  for (const read of [getA, getB, size]) assert.equal(store.readOnly(read), true);
  for (
    const write of [
      op({ command: "SET", key: text("a"), value: text("2") }),
      op({ command: "DEL", key: text("a") }),
      new Uint8Array([0xc1]),
      new Uint8Array(0),
      raw(["GET"]),
      raw(["GET", text("a"), text("extra")]),
    ]
  ) {
    assert.equal(store.readOnly(write), false);
  }
  const digest = store.digest();
  for (const read of [getA, getB, size]) {
    assert.deepEqual(store.query(read), store.apply(read, CONTEXT));
  }
  assert.deepEqual(decodeKvResult(store.query(getA)), { kind: "bytes", value: text("1") });
  assert.deepEqual(decodeKvResult(store.query(size)), { kind: "integer", value: 1 });
  assert.equal(store.digest(), digest, "a query changes nothing");
  assert.throws(() => store.query(op({ command: "DEL", key: text("a") })), /not a read-only/);
});

Deno.test("KvStore readOnly never throws on random bytes, and agrees with decoding", () => {
  const store = new KvStore();
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 40 }), (bytes) => {
      const decoded = decodeKvOperation(bytes);
      const read = !("error" in decoded) &&
        (decoded.command === "GET" || decoded.command === "SIZE");
      assert.equal(store.readOnly(bytes), read);
    }),
    { numRuns: RANDOM_BYTES_RUNS },
  );
});
