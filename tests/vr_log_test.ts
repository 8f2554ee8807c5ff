import assert from "node:assert/strict";
import fc from "fast-check";
import { Log } from "../src/vr/log.ts";
import type { LogEntry } from "../src/vr/message.ts";

type Step =
  | { readonly kind: "append"; readonly operation: Uint8Array; readonly viewNumber: number }
  | { readonly kind: "commit"; readonly ops: number }
  | { readonly kind: "truncate"; readonly keep: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant("append" as const),
      // Sizes around the arena size too, so that entries start arenas of their own.
      operation: fc.oneof(
        fc.uint8Array({ maxLength: 40 }),
        fc.integer({ min: 1024 * 1024 - 64, max: 1024 * 1024 + 64 }).map((n) =>
          new Uint8Array(n).fill(n % 251)
        ),
      ),
      viewNumber: fc.nat({ max: 2 ** 40 }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("commit" as const), ops: fc.nat(5) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("truncate" as const), keep: fc.nat(8) }) },
);

Deno.test("the log returns the same entries whether they are packed or not", () => {
  fc.assert(
    fc.property(fc.array(step, { maxLength: 60 }), fc.integer({ min: 1, max: 4 }), (steps, k) => {
      const log = new Log();
      const model: LogEntry[] = [];
      let committed = 0;
      let clock = 0;
      for (const s of steps) {
        if (s.kind === "append") {
          clock += s.operation.length % 3;
          const entry: LogEntry = {
            opNumber: model.length + 1,
            viewNumber: s.viewNumber,
            clientId: 2 ** 52 + model.length,
            requestNumber: model.length * 7,
            operation: s.operation,
            timestamp: clock,
          };
          log.append(entry);
          model.push(entry);
        } else if (s.kind === "commit") {
          committed = Math.min(model.length, committed + s.ops);
          // Pack in batches of k committed entries, as the replica does.
          if (committed - log.packedOpNumber >= k) log.packThrough(committed);
        } else {
          const to = Math.max(committed, model.length - s.keep);
          log.truncateAfter(to);
          model.length = to;
        }
        assert.equal(log.opNumber, model.length);
        assert.ok(log.packedOpNumber <= committed);
        assert.equal(log.lastTimestamp, model.at(-1)?.timestamp ?? 0);
      }
      for (let op = 0; op <= model.length + 1; op++) {
        assert.deepEqual(log.entry(op), model[op - 1], `entry ${op}`);
      }
      if (model.length > 0) {
        assert.deepEqual(log.slice(1, model.length), model);
        assert.deepEqual(log.slice(model.length, model.length), model.slice(-1));
      }
      // Bounded slices: the same as from a log that never packed.
      const plain = new Log();
      for (const entry of model) plain.append(entry);
      for (const [after, opsMax, bytesMax] of [[0, 3, Infinity], [0, 100, 50], [1, 2, 0]]) {
        assert.deepEqual(
          log.sliceBounded(after!, opsMax!, bytesMax!),
          plain.sliceBounded(after!, opsMax!, bytesMax!),
        );
      }
    }),
    { numRuns: 300 },
  );
});

Deno.test("a packed log refuses truncation into its packed entries", () => {
  const log = new Log();
  for (let op = 1; op <= 3; op++) {
    log.append({
      opNumber: op,
      viewNumber: 0,
      clientId: 1,
      requestNumber: op,
      operation: new Uint8Array([op]),
      timestamp: op,
    });
  }
  log.packThrough(2);
  assert.equal(log.packedOpNumber, 2);
  assert.throws(() => log.truncateAfter(1), /bad truncation 1/);
  log.truncateAfter(2);
  assert.equal(log.opNumber, 2);
  assert.equal(log.lastTimestamp, 2);
  assert.deepEqual(log.entry(2)!.operation, new Uint8Array([2]));
});
