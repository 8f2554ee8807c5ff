/**
 * Chunked snapshots of the key-value store (`beginSnapshot`, `beginRestore`) and the contract of
 * `src/app/state_machine.ts`: consistency while operations go on, determinism, locality, atomic
 * installation, and bounded chunks.
 */
import { strict as assert } from "node:assert";
import fc from "fast-check";
import { pack, unpack } from "msgpackr";
import {
  decodeKvResult,
  encodeKvOperation,
  KEY_SIZE_MAX,
  type KvOperation,
  kvSnapshotChunkBytesMax,
  KvStore,
  VALUE_SIZE_MAX,
} from "../src/app/kv.ts";
import {
  type ApplyContext,
  beginRestoreOf,
  beginSnapshotOf,
  type SnapshotReader,
  type StateMachine,
} from "../src/app/state_machine.ts";
import { mutatedBytes } from "./_mutate.ts";

const CONTEXT: ApplyContext = { opNumber: 1, timestamp: 0, clientId: 1, requestNumber: 1 };
const SEQUENCE_RUNS = 200;
const MUTATION_RUNS = 1_000;

const text = (value: string): Uint8Array => new TextEncoder().encode(value);

function apply(store: StateMachine, operation: KvOperation): Uint8Array {
  return store.apply(encodeKvOperation(operation), CONTEXT);
}

function replay(operations: readonly KvOperation[]): KvStore {
  const store = new KvStore();
  for (const operation of operations) apply(store, operation);
  return store;
}

function readAll(reader: SnapshotReader): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  for (let chunk = reader.next(); chunk !== undefined; chunk = reader.next()) chunks.push(chunk);
  return chunks;
}

function chunksOf(store: KvStore, chunkBytesTarget: number): Uint8Array[] {
  return readAll(store.beginSnapshot(chunkBytesTarget));
}

function restoredFrom(chunks: readonly Uint8Array[]): KvStore {
  const store = new KvStore();
  const writer = store.beginRestore();
  for (const chunk of chunks) writer.chunk(chunk);
  writer.finish();
  return store;
}

/** A copy of `store`'s state, through the one-buffer forms. */
function copyOf(store: KvStore): KvStore {
  const copy = new KvStore();
  copy.restore(store.snapshot());
  return copy;
}

/** The msgpack value of `bytes`, decoded from a copy: msgpackr adds a property to its input. */
function decoded(bytes: Uint8Array): unknown {
  return unpack(bytes.slice());
}

/** The number of [key, value] pairs in a chunk. */
function pairCount(chunk: Uint8Array): number {
  return (decoded(chunk) as unknown[]).length;
}

/** A chunk's pairs as arrays of numbers, easy to compare. */
function decodePairs(chunk: Uint8Array): number[][][] {
  return (decoded(chunk) as Uint8Array[][]).map((pair) => pair.map((bytes) => [...bytes]));
}

/** A chunk's bytes as a string, to put chunks in a set. */
function chunkId(chunk: Uint8Array): string {
  let out = "";
  for (let start = 0; start < chunk.byteLength; start += 8192) {
    out += String.fromCharCode(...chunk.subarray(start, start + 8192));
  }
  return out;
}

/** Both stores hold the same state: digest, size, one-buffer snapshot and GET of every key. */
function assertSameState(actual: KvStore, expected: KvStore, keys: readonly Uint8Array[]): void {
  assert.equal(actual.digest(), expected.digest());
  assert.equal(actual.size, expected.size);
  assert.deepEqual(actual.snapshot(), expected.snapshot());
  for (const key of keys) {
    assert.deepEqual(
      apply(actual, { command: "GET", key }),
      apply(expected, { command: "GET", key }),
    );
  }
}

/** Every chunk of more than one pair stays within four times the target (plus its header). */
function assertBounded(chunks: readonly Uint8Array[], chunkBytesTarget: number): void {
  for (const chunk of chunks) {
    if (chunk.byteLength > 4 * chunkBytesTarget + 5) assert.equal(pairCount(chunk), 1);
    assert.ok(chunk.byteLength <= kvSnapshotChunkBytesMax(chunkBytesTarget));
  }
}

// ---------------------------------------------------------------- arbitraries

/** Few short keys, so that operations collide; `keyUniverse` lists them all for GETs. */
const keyArbitrary = fc.uint8Array({ maxLength: 2, max: 3 });
const keyUniverse: Uint8Array[] = [new Uint8Array()];
for (let first = 0; first < 4; first++) {
  keyUniverse.push(Uint8Array.of(first));
  for (let second = 0; second < 4; second++) keyUniverse.push(Uint8Array.of(first, second));
}
/** Mostly short values, some past the 1 KiB at which the store keeps bytes instead of strings. */
const valueArbitrary = fc.oneof(
  { weight: 9, arbitrary: fc.uint8Array({ maxLength: 40 }) },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 1020, maxLength: 1100 }) },
);
const operationArbitrary: fc.Arbitrary<KvOperation> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      command: fc.constant("SET" as const),
      key: keyArbitrary,
      value: valueArbitrary,
    }),
  },
  { weight: 1, arbitrary: fc.record({ command: fc.constant("DEL" as const), key: keyArbitrary }) },
);
const targetArbitrary = fc.constantFrom(1, 16, 64, 256, 4096, Infinity);

type Step =
  | { readonly kind: "next"; readonly reader: number }
  | { readonly kind: "apply"; readonly operation: KvOperation }
  | { readonly kind: "begin" }
  | { readonly kind: "close"; readonly reader: number }
  | { readonly kind: "restore"; readonly operations: readonly KvOperation[] };

const stepArbitrary: fc.Arbitrary<Step> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant("next" as const), reader: fc.nat() }) },
  {
    weight: 6,
    arbitrary: fc.record({ kind: fc.constant("apply" as const), operation: operationArbitrary }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("begin" as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("close" as const), reader: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("restore" as const),
      operations: fc.array(operationArbitrary, { maxLength: 10 }),
    }),
  },
);

// ---------------------------------------------------------------- consistency

Deno.test("KvStore snapshot readers give the state at their beginning while the store changes", () => {
  fc.assert(
    fc.property(
      fc.array(operationArbitrary, { maxLength: 40 }),
      targetArbitrary,
      fc.array(stepArbitrary, { maxLength: 80 }),
      (prefix, target, steps) => {
        const store = replay(prefix);
        // The live state as it must be, changed by the same steps without any reader open.
        let model = replay(prefix);
        interface Open {
          readonly reader: SnapshotReader;
          /** The state when the reader began, in a store that never changes. */
          readonly atBegin: KvStore;
          readonly chunks: Uint8Array[];
          closed: boolean;
        }
        const open: Open[] = [];
        const begin = (): void => {
          open.push({
            reader: store.beginSnapshot(target),
            atBegin: copyOf(model),
            chunks: [],
            closed: false,
          });
        };
        begin();
        for (const step of steps) {
          switch (step.kind) {
            case "next": {
              const reading = open[step.reader % open.length]!;
              if (reading.closed) break;
              const chunk = reading.reader.next();
              if (chunk !== undefined) reading.chunks.push(chunk);
              break;
            }
            case "apply":
              assert.deepEqual(apply(store, step.operation), apply(model, step.operation));
              break;
            case "begin":
              begin();
              break;
            case "close": {
              const reading = open[step.reader % open.length]!;
              reading.reader.close();
              reading.closed = true;
              break;
            }
            case "restore": {
              const other = replay(step.operations);
              store.restore(other.snapshot());
              model = other;
              break;
            }
          }
        }
        assertSameState(store, model, keyUniverse);
        for (const reading of open) {
          if (reading.closed) {
            assert.throws(() => reading.reader.next(), /closed/);
            continue;
          }
          reading.chunks.push(...readAll(reading.reader));
          assertBounded(reading.chunks, target);
          // The same chunks as a reader of a store that held still, and the same state restored.
          assert.deepEqual(reading.chunks, chunksOf(reading.atBegin, target));
          assertSameState(restoredFrom(reading.chunks), reading.atBegin, keyUniverse);
        }
      },
    ),
    { numRuns: SEQUENCE_RUNS },
  );
});

Deno.test("KvStore snapshot chunks hold the pairs of the one-buffer snapshot, in order", () => {
  fc.assert(
    fc.property(fc.array(operationArbitrary, { maxLength: 60 }), targetArbitrary, (ops, target) => {
      const store = replay(ops);
      const chunks = chunksOf(store, target);
      const pairs = chunks.flatMap(decodePairs);
      assert.deepEqual(pairs, decodePairs(store.snapshot()));
      if (target === Infinity && store.size > 0) assert.deepEqual(chunks, [store.snapshot()]);
      // Plain msgpack, byte for byte what msgpackr writes for the same pairs.
      for (const chunk of chunks) {
        const plain = (decoded(chunk) as Uint8Array[][]).map((pair) =>
          pair.map((bytes) => new Uint8Array(bytes))
        );
        assert.deepEqual(chunk, new Uint8Array(pack(plain)));
      }
    }),
    { numRuns: SEQUENCE_RUNS },
  );
});

// ---------------------------------------------------------------- determinism and locality

Deno.test("KvStore snapshot chunks are the same for equal states built in different orders", () => {
  fc.assert(
    fc.property(
      fc.uniqueArray(fc.tuple(fc.uint8Array({ maxLength: 6 }), valueArbitrary), {
        selector: ([key]) => key.join(","),
        maxLength: 60,
      }).chain((pairs) =>
        fc.tuple(
          fc.constant(pairs),
          fc.shuffledSubarray(pairs, { minLength: pairs.length, maxLength: pairs.length }),
          fc.array(fc.tuple(fc.uint8Array({ minLength: 7, maxLength: 8 }), valueArbitrary), {
            maxLength: 10,
          }),
        )
      ),
      ([pairs, shuffled, transient]) => {
        const first = replay(pairs.map(([key, value]) => ({ command: "SET", key, value })));
        // The other order, with keys that come and go and values overwritten on the way.
        const second = new KvStore();
        for (const [key, value] of transient) apply(second, { command: "SET", key, value });
        for (const [key] of shuffled) apply(second, { command: "SET", key, value: text("old") });
        for (const [key] of transient) apply(second, { command: "DEL", key });
        for (const [key, value] of shuffled) apply(second, { command: "SET", key, value });
        for (const target of [1, 64, 1024, Infinity]) {
          assert.deepEqual(chunksOf(first, target), chunksOf(second, target));
        }
      },
    ),
    { numRuns: SEQUENCE_RUNS },
  );
});

/** A store of `count` keys with values of 0 to 99 bytes, the same on every call. */
function largeStore(count: number): KvStore {
  const store = new KvStore();
  for (let index = 0; index < count; index++) {
    const value = new Uint8Array((index * 37) % 100).fill(index & 0xff);
    apply(store, { command: "SET", key: text(`key:${index}`), value });
  }
  return store;
}

const LOCALITY_KEYS = 20_000;
const LOCALITY_TARGET = 2048;

Deno.test("KvStore snapshot: changing a few keys of a large state changes few chunks", () => {
  const base = largeStore(LOCALITY_KEYS);
  const baseChunks = chunksOf(base, LOCALITY_TARGET);
  const baseIds = new Set(baseChunks.map(chunkId));
  assert.ok(baseChunks.length > 300, `${baseChunks.length} chunks`);
  const change = fc.oneof(
    fc.record({
      command: fc.constant("SET" as const),
      index: fc.nat({ max: 2 * LOCALITY_KEYS }), // half of them new keys
      size: fc.nat({ max: 300 }),
    }),
    fc.record({ command: fc.constant("DEL" as const), index: fc.nat({ max: LOCALITY_KEYS - 1 }) }),
  );
  fc.assert(
    fc.property(fc.array(change, { minLength: 1, maxLength: 8 }), (changes) => {
      const store = copyOf(base);
      for (const item of changes) {
        const key = text(`key:${item.index}`);
        if (item.command === "DEL") apply(store, { command: "DEL", key });
        else apply(store, { command: "SET", key, value: new Uint8Array(item.size).fill(0xee) });
      }
      const chunks = chunksOf(store, LOCALITY_TARGET);
      const fresh = chunks.filter((chunk) => !baseIds.has(chunkId(chunk))).length;
      // A change rewrites its own chunk and may move the boundaries beside it: about two chunks.
      assert.ok(fresh <= 3 * changes.length, `${fresh} of ${chunks.length} chunks differ`);
      assert.ok(Math.abs(chunks.length - baseChunks.length) <= 3 * changes.length);
    }),
    { numRuns: 30 },
  );
});

// ---------------------------------------------------------------- installing

Deno.test("KvStore restore from chunks leaves the live state untouched until finish", () => {
  const source = replay([
    { command: "SET", key: text("a"), value: text("1") },
    { command: "SET", key: text("b"), value: text("2") },
    { command: "SET", key: text("c"), value: new Uint8Array(2000).fill(7) },
  ]);
  const store = replay([{ command: "SET", key: text("x"), value: text("live") }]);
  const before = store.snapshot();
  const writer = store.beginRestore();
  for (const chunk of chunksOf(source, 1)) {
    writer.chunk(chunk);
    assert.deepEqual(store.snapshot(), before);
    assert.deepEqual(decodeKvResult(apply(store, { command: "GET", key: text("a") })), {
      kind: "nil",
    });
  }
  writer.finish(source.digest());
  assertSameState(store, source, [text("a"), text("b"), text("c"), text("x")]);
  assert.throws(() => writer.chunk(source.snapshot()), /finished/);
  assert.throws(() => writer.finish(), /finished/);
});

Deno.test("KvStore restore: abort leaves the state unchanged and ends the writer", () => {
  fc.assert(
    fc.property(
      fc.array(operationArbitrary, { maxLength: 30 }),
      fc.array(operationArbitrary, { maxLength: 30 }),
      fc.nat(),
      (live, other, taken) => {
        const store = replay(live);
        const before = store.snapshot();
        const digest = store.digest();
        const chunks = chunksOf(replay(other), 16);
        const writer = store.beginRestore();
        for (const chunk of chunks.slice(0, taken % (chunks.length + 1))) writer.chunk(chunk);
        writer.abort();
        writer.abort();
        assert.deepEqual(store.snapshot(), before);
        assert.equal(store.digest(), digest);
        assert.throws(() => writer.chunk(chunks[0] ?? store.snapshot()), /aborted/);
        assert.throws(() => writer.finish(), /aborted/);
      },
    ),
    { numRuns: SEQUENCE_RUNS },
  );
});

Deno.test("KvStore restore: a wrong expected digest replaces nothing", () => {
  const source = replay([{ command: "SET", key: text("k"), value: text("v") }]);
  const store = replay([{ command: "SET", key: text("x"), value: text("y") }]);
  const before = store.snapshot();
  const writer = store.beginRestore();
  writer.chunk(source.snapshot());
  assert.throws(() => writer.finish("f".repeat(24)), /digest [0-9a-f]{24}, expected f{24}/);
  assert.deepEqual(store.snapshot(), before);
  writer.finish(source.digest());
  assert.deepEqual(store.snapshot(), source.snapshot());
});

Deno.test("KvStore restore of an empty snapshot (no chunks) empties the store", () => {
  const empty = new KvStore();
  assert.deepEqual(chunksOf(empty, 64), []);
  assert.deepEqual(empty.snapshot(), Uint8Array.of(0x90));
  const store = replay([{ command: "SET", key: text("k"), value: text("v") }]);
  store.beginRestore().finish(empty.digest());
  assertSameState(store, empty, [text("k")]);
});

/** The pairs, in snapshot order, of a store holding `p`, `q` and `r`. */
function orderedPairs(): [Uint8Array, Uint8Array][] {
  const store = replay(
    ["p", "q", "r"].map((key) => ({ command: "SET", key: text(key), value: text(key) })),
  );
  return (decoded(store.snapshot()) as [Uint8Array, Uint8Array][]).map((
    [key, value],
  ) => [new Uint8Array(key), new Uint8Array(value)]);
}

function raw(value: unknown): Uint8Array {
  return new Uint8Array(pack(value));
}

const BAD_CHUNKS: readonly (readonly [string, Uint8Array, RegExp])[] = [
  ["empty bytes", new Uint8Array(), /snapshot chunk 0 is empty/],
  ["a non-array", raw({ a: 1 }), /must be an array of \[key, value\] pairs, got map/],
  ["a non-pair entry", raw([[text("k")]]), /entry 0 must be a \[key, value\] pair/],
  ["a string key", raw([["k", text("v")]]), /entry 0: key must be binary/],
  ["an integer value", raw([[text("k"), 5]]), /entry 0: value must be binary/],
  [
    "an oversize key",
    raw([[new Uint8Array(KEY_SIZE_MAX + 1), text("v")]]),
    new RegExp(`key is ${KEY_SIZE_MAX + 1} bytes`),
  ],
  [
    "an oversize value",
    raw([[text("k"), new Uint8Array(VALUE_SIZE_MAX + 1)]]),
    new RegExp(`value is ${VALUE_SIZE_MAX + 1} bytes`),
  ],
  ["trailing bytes", new Uint8Array([...raw([]), 0x00]), /1 trailing byte/],
  ["truncated bytes", raw([[text("key"), text("value")]]).subarray(0, 7), /truncated/],
  ["an extension type", Uint8Array.of(0x91, 0xd4, 0x01, 0x02), /extension type/],
  ["pairs out of order", raw(orderedPairs().reverse()), /entry 1 does not follow/],
  [
    "a repeated key",
    raw([orderedPairs()[0], orderedPairs()[0]]),
    /entry 1 does not follow the entry before it in snapshot order/,
  ],
];

for (const [name, bytes, message] of BAD_CHUNKS) {
  Deno.test(`KvStore restore rejects a chunk with ${name}, naming it, and stays usable`, () => {
    const source = replay([
      { command: "SET", key: text("a"), value: text("1") },
      { command: "SET", key: text("b"), value: text("2") },
    ]);
    const store = replay([{ command: "SET", key: text("x"), value: text("y") }]);
    const before = store.snapshot();
    const writer = store.beginRestore();
    assert.throws(() => writer.chunk(bytes), (error: unknown) => {
      assert.ok(error instanceof Error);
      assert.match(error.message, message);
      return true;
    });
    assert.deepEqual(store.snapshot(), before);
    // The rejected chunk left nothing behind: the right chunks still make the right state.
    for (const chunk of chunksOf(source, 1)) writer.chunk(chunk);
    writer.finish(source.digest());
    assertSameState(store, source, [text("a"), text("b"), text("x")]);
  });
}

Deno.test("KvStore restore rejects chunks given out of order", () => {
  const source = replay(
    Array.from({ length: 50 }, (_, index) => ({
      command: "SET" as const,
      key: text(`k${index}`),
      value: text("v"),
    })),
  );
  const chunks = chunksOf(source, 1);
  assert.ok(chunks.length > 2);
  const writer = new KvStore().beginRestore();
  writer.chunk(chunks[1]!);
  assert.throws(() => writer.chunk(chunks[0]!), /snapshot chunk 1: entry 0 does not follow/);
  assert.throws(() => writer.chunk(chunks[1]!), /does not follow/);
  writer.chunk(chunks[2]!);
});

Deno.test("KvStore restore of mutated chunks: an Error or a consistent state, never a mix", () => {
  const source = replay(
    ["alpha", "beta", "gamma", "delta"].map((key, index) => ({
      command: "SET",
      key: text(key),
      value: new Uint8Array(index * 3).fill(index),
    })),
  );
  const valid = fc.constantFrom(...chunksOf(source, 16), source.snapshot());
  fc.assert(
    fc.property(mutatedBytes(valid), (bytes) => {
      const store = replay([{ command: "SET", key: text("live"), value: text("state") }]);
      const before = store.snapshot();
      const writer = store.beginRestore();
      try {
        writer.chunk(bytes);
      } catch (error) {
        assert.ok(error instanceof Error);
        assert.ok(error.message.startsWith("snapshot chunk 0"), error.message);
        assert.deepEqual(store.snapshot(), before);
        return;
      }
      assert.deepEqual(store.snapshot(), before);
      writer.finish();
      // Whatever was accepted is a state whose digest and snapshots agree with each other.
      assert.equal(copyOf(store).digest(), store.digest());
      assert.deepEqual(copyOf(store).snapshot(), store.snapshot());
    }),
    { numRuns: MUTATION_RUNS },
  );
});

// ---------------------------------------------------------------- size

Deno.test("KvStore snapshot of 200,000 keys goes out and comes back in bounded chunks", () => {
  const target = 16 * 1024;
  const keys = 200_000;
  const store = largeStore(keys);
  const restored = new KvStore();
  const writer = restored.beginRestore();
  const reader = store.beginSnapshot(target);
  let chunks = 0;
  let total = 0;
  let largest = 0;
  let smallest = Infinity;
  let last = 0;
  // Each chunk goes straight from the reader into the writer: no buffer of the whole state.
  for (let chunk = reader.next(); chunk !== undefined; chunk = reader.next()) {
    chunks++;
    total += chunk.byteLength;
    largest = Math.max(largest, chunk.byteLength);
    smallest = Math.min(smallest, last || Infinity);
    last = chunk.byteLength;
    writer.chunk(chunk);
  }
  // Every chunk but the last reaches a quarter of the target before it may end.
  assert.ok(smallest >= target / 4, `smallest chunk ${smallest} bytes`);
  assert.ok(largest <= 4 * target + 5, `largest chunk ${largest} bytes`);
  assert.ok(total > 100 * largest, `${total} bytes in all, largest chunk ${largest}`);
  const mean = total / chunks;
  assert.ok(mean > 0.75 * target && mean < 1.25 * target, `mean chunk ${mean} bytes`);
  assert.equal(restored.size, 0);
  writer.finish(store.digest());
  assert.equal(restored.size, keys);
  const sample = Array.from({ length: 100 }, (_, index) => text(`key:${index * 1999}`));
  assertSameState(restored, store, [...sample, text("key:-1")]);
});

Deno.test("KvStore snapshot: a pair larger than four times the target is a chunk of its own", () => {
  const store = replay([
    { command: "SET", key: text("small"), value: text("v") },
    { command: "SET", key: text("large"), value: new Uint8Array(5000).fill(1) },
    { command: "SET", key: text("other"), value: text("w") },
  ]);
  const chunks = chunksOf(store, 100);
  const large = chunks.filter((chunk) => chunk.byteLength > 400);
  assert.equal(large.length, 1);
  assert.equal(pairCount(large[0]!), 1);
  assertSameState(restoredFrom(chunks), store, [text("small"), text("large"), text("other")]);
});

// ---------------------------------------------------------------- readers

Deno.test("KvStore snapshot reader: the end, close and bad targets", () => {
  const store = replay([{ command: "SET", key: text("k"), value: text("v") }]);
  const reader = store.beginSnapshot(64);
  assert.ok(reader.next() !== undefined);
  assert.equal(reader.next(), undefined);
  assert.equal(reader.next(), undefined);
  reader.close();
  reader.close();
  assert.throws(() => reader.next(), /closed/);
  const abandoned = store.beginSnapshot(64);
  abandoned.close();
  assert.throws(() => abandoned.next(), /closed/);
  for (const target of [0, -1, NaN]) assert.throws(() => store.beginSnapshot(target), RangeError);
});

// ---------------------------------------------------------------- the fallback

/** A machine with only the one-buffer forms, as every machine had before chunks. */
function oneBufferMachine(store: KvStore): StateMachine {
  return {
    apply: (operation, context) => store.apply(operation, context),
    digest: () => store.digest(),
    snapshot: () => store.snapshot(),
    restore: (bytes) => store.restore(bytes),
  };
}

Deno.test("beginSnapshotOf and beginRestoreOf fall back on snapshot and restore", () => {
  fc.assert(
    fc.property(
      fc.array(operationArbitrary, { maxLength: 30 }),
      fc.array(operationArbitrary, { maxLength: 30 }),
      fc.integer({ min: 1, max: 64 }),
      (ops, laterOps, target) => {
        const source = replay(ops);
        const expected = copyOf(source);
        const machine = oneBufferMachine(source);
        const reader = beginSnapshotOf(machine, target);
        // The snapshot was taken at the beginning: later operations do not show in it.
        for (const operation of laterOps) apply(machine, operation);
        const chunks = readAll(reader);
        assert.ok(chunks.every((chunk) => chunk.byteLength <= target));
        const target2 = new KvStore();
        const writer = beginRestoreOf(oneBufferMachine(target2));
        for (const chunk of chunks) writer.chunk(chunk);
        writer.finish(expected.digest());
        assertSameState(target2, expected, keyUniverse);
      },
    ),
    { numRuns: SEQUENCE_RUNS },
  );
});

Deno.test("beginRestoreOf: a wrong digest puts the old state back", () => {
  const store = replay([{ command: "SET", key: text("x"), value: text("y") }]);
  const before = store.snapshot();
  const writer = beginRestoreOf(oneBufferMachine(store));
  for (const chunk of readAll(beginSnapshotOf(oneBufferMachine(replay([])), 4))) {
    writer.chunk(chunk);
  }
  assert.throws(() => writer.finish("f".repeat(24)), /expected f{24}/);
  assert.deepEqual(store.snapshot(), before);
  writer.abort();
  assert.throws(() => writer.finish(), /finished or aborted/);
});

Deno.test("beginSnapshotOf and beginRestoreOf use a machine's own chunked forms", () => {
  const store = largeStore(1000);
  assert.deepEqual(readAll(beginSnapshotOf(store, 256)), chunksOf(store, 256));
  const copy = new KvStore();
  const writer = beginRestoreOf(copy);
  assert.throws(() => writer.chunk(new Uint8Array()), /snapshot chunk 0 is empty/);
  for (const chunk of chunksOf(store, 256)) writer.chunk(chunk);
  writer.finish(store.digest());
  assert.equal(copy.size, 1000);
});
