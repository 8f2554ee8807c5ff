/**
 * Chunked snapshots of the key-value store (`KvStore.beginSnapshot` / `beginRestore`): for a store
 * of `--keys` keys with `--value-bytes`-byte values, how long a snapshot takes to begin, to read
 * (every `next()`, the longest above all: it blocks the event loop) and to restore chunk by chunk;
 * how much memory an open reader costs while SETs go on; how much a SET costs with a reader open;
 * and, for comparison, how long sorting all the keys at once would take.
 *
 * Prints one JSON object per measurement. Usage:
 *   deno run -A --v8-flags=--expose-gc bench/snapshot.ts [--keys 1000000] [--value-bytes 64]
 *     [--chunk-bytes 1048576] [--sets-per-chunk 1000]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { encodeKvOperation, KvStore } from "../src/app/kv.ts";
import type { ApplyContext } from "../src/app/state_machine.ts";

const { values } = parseArgs({
  options: {
    keys: { type: "string", default: "1000000" },
    "value-bytes": { type: "string", default: "64" },
    "chunk-bytes": { type: "string", default: String(1024 * 1024) },
    "sets-per-chunk": { type: "string", default: "1000" },
  },
});
const KEYS = Number(values.keys);
const VALUE_BYTES = Number(values["value-bytes"]);
const CHUNK_BYTES = Number(values["chunk-bytes"]);
const SETS_PER_CHUNK = Number(values["sets-per-chunk"]);
const CONTEXT: ApplyContext = { opNumber: 1, timestamp: 0, clientId: 1, requestNumber: 1 };

const gc = (globalThis as { gc?: () => void }).gc;
function heapBytes(): number {
  gc?.();
  gc?.();
  return Deno.memoryUsage().heapUsed;
}

function report(name: string, fields: Record<string, unknown>): void {
  console.log(JSON.stringify({ name, ...fields }));
}

const round = (value: number): number => Math.round(value * 1000) / 1000;
const encoder = new TextEncoder();
const keyOf = (index: number): Uint8Array => encoder.encode(`key:${index}`);

/** A SET of key `index` to a value that `round` makes different each time. */
function setOperation(index: number, round: number): Uint8Array {
  const value = new Uint8Array(VALUE_BYTES).fill(0x61 + (round % 26));
  return encodeKvOperation({ command: "SET", key: keyOf(index), value });
}

function filledStore(): KvStore {
  const store = new KvStore();
  for (let index = 0; index < KEYS; index++) store.apply(setOperation(index, 0), CONTEXT);
  return store;
}

/** A small deterministic PRNG (xorshift32), so that runs are comparable. */
function random(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
}

function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
}

/** What the fastest alternative, sorting all the keys at once, would cost. */
function measureSort(): void {
  const names = Array.from({ length: KEYS }, (_, index) => `key:${index}`);
  for (let i = names.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [names[i], names[j]] = [names[j]!, names[i]!];
  }
  const start = performance.now();
  names.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  report("sort all keys at once (what sharding avoids)", {
    keys: KEYS,
    ms: round(performance.now() - start),
  });
}

/**
 * Reads a snapshot of `store` with SETs of random keys between chunks (the replica keeps serving
 * while it writes a checkpoint); returns the chunks and the digest at the beginning.
 */
function measureRead(store: KvStore): { chunks: Uint8Array[]; digest: string } {
  const digest = store.digest();
  const heapBefore = heapBytes();
  const beginStart = performance.now();
  const reader = store.beginSnapshot(CHUNK_BYTES);
  const beginMs = performance.now() - beginStart;
  const chunks: Uint8Array[] = [];
  const nextMs: number[] = [];
  const randomKey = random(7);
  let sets = 0;
  let heapPeak = heapBefore;
  let readMs = 0;
  for (;;) {
    const start = performance.now();
    const chunk = reader.next();
    const elapsed = performance.now() - start;
    readMs += elapsed;
    if (chunk === undefined) break;
    nextMs.push(elapsed);
    chunks.push(chunk);
    for (let i = 0; i < SETS_PER_CHUNK; i++) {
      store.apply(setOperation(Math.floor(randomKey() * KEYS), ++sets), CONTEXT);
    }
    if (chunks.length % 8 === 0) heapPeak = Math.max(heapPeak, heapBytes());
  }
  reader.close();
  const sizes = chunks.map((chunk) => chunk.byteLength).sort((x, y) => x - y);
  const sortedNext = [...nextMs].sort((x, y) => x - y);
  const totalBytes = sizes.reduce((sum, size) => sum + size, 0);
  report("read a snapshot while SETs go on", {
    keys: KEYS,
    valueBytes: VALUE_BYTES,
    chunkBytesTarget: CHUNK_BYTES,
    setsPerChunk: SETS_PER_CHUNK,
    setsDuringRead: sets,
    beginMs: round(beginMs),
    chunks: chunks.length,
    totalBytes,
    chunkBytes: {
      min: sizes[0],
      p10: quantile(sizes, 0.1),
      median: quantile(sizes, 0.5),
      mean: Math.round(totalBytes / sizes.length),
      p90: quantile(sizes, 0.9),
      max: sizes[sizes.length - 1],
    },
    nextMs: {
      median: round(quantile(sortedNext, 0.5)),
      p99: round(quantile(sortedNext, 0.99)),
      max: round(sortedNext[sortedNext.length - 1] ?? NaN),
    },
    readMsTotal: round(readMs),
    // The chunks are ArrayBuffers outside the JavaScript heap: this is the reader's own memory.
    heapGrowthDuringReadMiB: round((heapPeak - heapBefore) / 2 ** 20),
  });
  return { chunks, digest };
}

function measureRestore(chunks: readonly Uint8Array[], digest: string): void {
  const restored = new KvStore();
  const writer = restored.beginRestore();
  const chunkMs: number[] = [];
  const start = performance.now();
  for (const chunk of chunks) {
    const chunkStart = performance.now();
    writer.chunk(chunk);
    chunkMs.push(performance.now() - chunkStart);
  }
  const finishStart = performance.now();
  writer.finish(digest);
  const finishMs = performance.now() - finishStart;
  const totalMs = performance.now() - start;
  chunkMs.sort((x, y) => x - y);
  report("restore the snapshot chunk by chunk", {
    keys: restored.size,
    digestMatches: restored.digest() === digest,
    chunkMs: {
      median: round(quantile(chunkMs, 0.5)),
      p99: round(quantile(chunkMs, 0.99)),
      max: round(chunkMs[chunkMs.length - 1] ?? NaN),
    },
    finishMs: round(finishMs),
    totalMs: round(totalMs),
  });
}

/** The worst case for memory: every key changes before the reader has read any of them. */
function measureWorstMemory(store: KvStore): void {
  const base = heapBytes();
  const reader = store.beginSnapshot(CHUNK_BYTES);
  for (let index = 0; index < KEYS; index++) store.apply(setOperation(index, index), CONTEXT);
  const withReader = heapBytes();
  reader.close();
  const closed = heapBytes();
  report("memory of a reader while every key changes before it is read", {
    keys: KEYS,
    readerHeapMiB: round((withReader - base) / 2 ** 20),
    bytesPerChangedKey: Math.round((withReader - base) / KEYS),
    afterCloseMiB: round((closed - base) / 2 ** 20),
  });
}

/** A SET's cost over 1,000 hot keys, without and with a reader open. */
function measureSetCost(store: KvStore): void {
  const hot = Array.from({ length: 1000 }, (_, index) => setOperation(index, 1));
  const count = 1_000_000;
  const time = (): number => {
    const start = performance.now();
    for (let i = 0; i < count; i++) store.apply(hot[i % hot.length]!, CONTEXT);
    return ((performance.now() - start) * 1e6) / count;
  };
  const without = [time(), time(), time()];
  const open = store.beginSnapshot(CHUNK_BYTES);
  const withReader = [time(), time(), time()];
  open.close();
  report("SET over 1000 keys, ns per operation", {
    withoutReader: without.map(Math.round),
    withReaderOpen: withReader.map(Math.round),
  });
}

function measureOneBuffer(store: KvStore): void {
  let start = performance.now();
  const whole = store.snapshot();
  const snapshotMs = performance.now() - start;
  start = performance.now();
  new KvStore().restore(whole);
  report("one-buffer snapshot() and restore(), for comparison", {
    bytes: whole.byteLength,
    snapshotMs: round(snapshotMs),
    restoreMs: round(performance.now() - start),
  });
}

measureSort();
const fillStart = performance.now();
const store = filledStore();
report("fill", { keys: store.size, ms: round(performance.now() - fillStart) });
{
  const { chunks, digest } = measureRead(store);
  measureRestore(chunks, digest);
}
measureWorstMemory(store);
measureSetCost(store);
measureOneBuffer(store);
