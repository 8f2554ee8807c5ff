import { strict as assert } from "node:assert";
import fc from "fast-check";
import {
  DataDir,
  DataDirError,
  type DataDirOptions,
  LOG_PREALLOCATE_AHEAD_BYTES,
} from "../src/storage/data_dir.ts";
import { AssertionError } from "../src/vr/assert.ts";
import type { LogEntry } from "../src/vr/message.ts";
import type { DurableState, Effect, Superblock } from "../src/vr/replica.ts";

const PROPERTY_RUNS = 60;
/** Record header: magic, length, checksum. */
const RECORD_HEADER_BYTES = 12;
const SUPERBLOCK_DEFAULT: Superblock = { viewNumber: 0, lastNormalView: 0, recovering: false };

function entry(opNumber: number, viewNumber: number, size = 8): LogEntry {
  const operation = new Uint8Array(size);
  for (let index = 0; index < size; index++) operation[index] = (opNumber * 31 + index) & 0xff;
  return {
    opNumber,
    viewNumber,
    clientId: 1_000_000 + opNumber,
    requestNumber: opNumber,
    operation,
    timestamp: 1_700_000_000_000 + opNumber,
  };
}

function entries(from: number, to: number, viewNumber: number): LogEntry[] {
  const result: LogEntry[] = [];
  for (let op = from; op <= to; op++) result.push(entry(op, viewNumber));
  return result;
}

function logWrite(
  id: number,
  fromOpNumber: number,
  written: readonly LogEntry[],
  commitNumber: number,
): Effect {
  return { type: "persist_log", id, fromOpNumber, entries: written, commitNumber };
}

function superblockWrite(id: number, superblock: Superblock): Effect {
  return { type: "persist_superblock", id, superblock };
}

async function withDir(body: (path: string) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "vstamp_data_dir_test_" });
  try {
    await body(`${root}/replica-0`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

/**
 * Opens without preallocation: most tests here read the log file's layout, which is simplest
 * when the file ends where the records end. Preallocation has tests of its own.
 */
function openDir(path: string, options: DataDirOptions = {}) {
  return DataDir.open(path, { logPreallocateBytes: 0, ...options });
}

async function reopen(path: string, options: DataDirOptions = {}): Promise<DurableState> {
  const { dataDir, state } = await openDir(path, options);
  await dataDir.close();
  assert.ok(state !== undefined, "a used directory yields a state");
  return state;
}

async function fileSize(path: string): Promise<number> {
  return (await Deno.stat(path)).size;
}

Deno.test("DataDir open of a new directory yields no state", async () => {
  await withDir(async (path) => {
    const { dataDir, state } = await openDir(path);
    assert.equal(state, undefined);
    assert.equal(dataDir.path, path);
    await dataDir.close();
    // The replica may have sent messages before it crashed: a second start is not a new replica.
    assert.deepEqual(await reopen(path), {
      superblock: SUPERBLOCK_DEFAULT,
      log: [],
      commitNumber: 0,
      logTrusted: true,
    });
  });
});

Deno.test("DataDir persist then reopen yields the same durable state", async () => {
  await withDir(async (path) => {
    const { dataDir } = await openDir(path);
    const superblock: Superblock = { viewNumber: 7, lastNormalView: 5, recovering: true };
    const written = [entry(1, 5, 0), entry(2, 5, 100), entry(3, 7, 70_000)];
    await dataDir.persist([logWrite(1, 1, written, 2), superblockWrite(2, superblock)]);
    await dataDir.close();
    assert.deepEqual(await reopen(path), {
      superblock,
      log: written,
      commitNumber: 2,
      logTrusted: true,
    });
  });
});

Deno.test("DataDir persist returns the largest persist id of the batch", async () => {
  await withDir(async (path) => {
    const { dataDir } = await openDir(path);
    assert.equal(await dataDir.persist([]), 0);
    const reply: Effect = {
      type: "reply",
      clientId: 1,
      message: {
        type: "reply",
        viewNumber: 0,
        clientId: 1,
        requestNumber: 1,
        opNumber: 1,
        operationChecksum: 0,
        result: new Uint8Array(),
      },
    };
    assert.equal(await dataDir.persist([reply]), 0);
    assert.equal(
      await dataDir.persist([
        logWrite(3, 1, entries(1, 2, 0), 0),
        reply,
        superblockWrite(4, { viewNumber: 1, lastNormalView: 0, recovering: false }),
        logWrite(5, 3, entries(3, 3, 1), 1),
      ]),
      5,
    );
    await dataDir.close();
  });
});

Deno.test("DataDir truncations in the middle of the log reopen correctly", async () => {
  await withDir(async (path) => {
    const { dataDir } = await openDir(path);
    await dataDir.persist([logWrite(1, 1, entries(1, 10, 0), 3)]);
    // Within one batch: replace from op 6, then drop from op 8, then append again.
    await dataDir.persist([
      logWrite(2, 6, entries(6, 9, 1), 4),
      logWrite(3, 8, [], 4),
      logWrite(4, 8, entries(8, 8, 2), 5),
    ]);
    // Across batches: a truncation alone, then an append at the new end.
    await dataDir.persist([logWrite(5, 7, [], 5)]);
    await dataDir.close();
    const expected = [...entries(1, 5, 0), entry(6, 1)];
    let state = await reopen(path);
    assert.deepEqual(state.log, expected);
    assert.equal(state.commitNumber, 5);
    const again = await openDir(path);
    await again.dataDir.persist([logWrite(6, 7, entries(7, 9, 3), 6)]);
    await again.dataDir.close();
    state = await reopen(path);
    assert.deepEqual(state.log, [...expected, ...entries(7, 9, 3)]);
    assert.equal(state.commitNumber, 6);
  });
});

Deno.test("DataDir many batches reopen in order", async () => {
  await withDir(async (path) => {
    const batches = 500;
    const { dataDir } = await openDir(path);
    for (let op = 1; op <= batches; op++) {
      await dataDir.persist([logWrite(op, op, [entry(op, 0)], op - 1)]);
    }
    await dataDir.close();
    const state = await reopen(path);
    assert.deepEqual(state.log, entries(1, batches, 0));
    assert.equal(state.commitNumber, batches - 1);
  });
});

Deno.test("DataDir torn tail of garbage is cut off", async () => {
  await withDir(async (path) => {
    const { dataDir } = await openDir(path);
    await dataDir.persist([logWrite(1, 1, entries(1, 3, 0), 1)]);
    await dataDir.close();
    const size = await fileSize(`${path}/log`);
    const garbage = new Uint8Array(1000).map((_, index) => (index * 7919) & 0xff);
    await Deno.writeFile(`${path}/log`, garbage, { append: true });
    const repairs: string[] = [];
    const state = await reopen(path, { onRepair: (message) => repairs.push(message) });
    assert.deepEqual(state.log, entries(1, 3, 0));
    assert.equal(await fileSize(`${path}/log`), size);
    assert.equal(repairs.length, 1);
    assert.match(
      repairs[0]!,
      new RegExp(`log: record at byte ${size} .*torn.*cut the 1000 bytes from byte ${size}`),
    );
  });
});

Deno.test("DataDir torn last record is cut off and the log goes on", async () => {
  await withDir(async (path) => {
    const { dataDir } = await openDir(path);
    await dataDir.persist([logWrite(1, 1, entries(1, 3, 0), 1)]);
    await dataDir.persist([logWrite(2, 4, entries(4, 5, 0), 3)]);
    const size = await fileSize(`${path}/log`);
    await dataDir.persist([logWrite(3, 3, entries(3, 8, 1), 4)]);
    await dataDir.close();
    const fullSize = await fileSize(`${path}/log`);
    for (const cut of [size + 5, size + RECORD_HEADER_BYTES + 3, fullSize - 1]) {
      const file = await Deno.open(`${path}/log`, { write: true });
      await file.truncate(cut);
      file.close();
      const state = await reopen(path);
      assert.deepEqual(state.log, entries(1, 5, 0));
      assert.equal(state.commitNumber, 3);
      assert.equal(await fileSize(`${path}/log`), size);
      // Put the last record back for the next cut.
      const again = await openDir(path);
      await again.dataDir.persist([logWrite(3, 3, entries(3, 8, 1), 4)]);
      await again.dataDir.close();
      assert.equal(await fileSize(`${path}/log`), fullSize);
    }
    const state = await reopen(path);
    assert.deepEqual(state.log, [...entries(1, 2, 0), ...entries(3, 8, 1)]);
  });
});

Deno.test("DataDir damage before valid records loads the prefix, untrusted, naming the offset", async () => {
  await withDir(async (path) => {
    const { dataDir } = await openDir(path);
    await dataDir.persist([logWrite(1, 1, entries(1, 3, 0), 1)]);
    const offset = await fileSize(`${path}/log`);
    await dataDir.persist([logWrite(2, 4, entries(4, 5, 0), 3)]);
    await dataDir.persist([logWrite(3, 6, entries(6, 7, 0), 3)]);
    await dataDir.close();
    const bytes = await Deno.readFile(`${path}/log`);
    const damaged = (change: (copy: Uint8Array) => void) => {
      const copy = new Uint8Array(bytes);
      change(copy);
      return Deno.writeFile(`${path}/log`, copy);
    };
    const expected: DurableState = {
      superblock: { ...SUPERBLOCK_DEFAULT, recovering: true },
      log: entries(1, 3, 0),
      commitNumber: 1,
      logTrusted: false,
    };
    // A flipped bit in a record's body, and a damaged header, are both caught.
    for (
      const [change, reason] of [
        [
          (copy: Uint8Array) => copy[offset + RECORD_HEADER_BYTES + 4]! ^= 0x01,
          "has a bad checksum",
        ],
        [(copy: Uint8Array) => copy[offset]! ^= 0xff, "lacks the record magic"],
      ] as const
    ) {
      await damaged(change);
      const repairs: string[] = [];
      assert.deepEqual(await reopen(path, { onRepair: (line) => repairs.push(line) }), expected);
      assert.equal(repairs.length, 1);
      assert.ok(
        repairs[0]!.startsWith(
          `${path}/log: record at byte ${offset} ${reason}, yet a valid record follows at byte `,
        ),
        repairs[0],
      );
      assert.match(repairs[0]!, /damage, not a torn write/);
      assert.equal(await fileSize(`${path}/log`), offset, "cut at the bad record");
      // Put the superblock back as it was for the next kind of damage.
      await Deno.writeFile(`${path}/superblock.b`, new Uint8Array());
    }
  });
});

Deno.test("DataDir torn superblock write keeps the previous superblock", async () => {
  await withDir(async (path) => {
    const first: Superblock = { viewNumber: 1, lastNormalView: 0, recovering: false };
    const second: Superblock = { viewNumber: 2, lastNormalView: 2, recovering: false };
    const { dataDir } = await openDir(path);
    await dataDir.persist([superblockWrite(1, first)]);
    const slots = [`${path}/superblock.a`, `${path}/superblock.b`];
    const before = await Promise.all(slots.map((slot) => Deno.readFile(slot)));
    await dataDir.persist([superblockWrite(2, second)]);
    await dataDir.close();
    assert.deepEqual((await reopen(path)).superblock, second);
    // Whichever slot the second write went to, tear it: keep half of the new bytes.
    const after = await Promise.all(slots.map((slot) => Deno.readFile(slot)));
    const written = after.findIndex((bytes, index) =>
      bytes.some((b, i) => b !== before[index]![i])
    );
    assert.ok(written !== -1);
    const torn = new Uint8Array(after[written]!);
    torn.set(before[written]!.subarray(20), 20);
    await Deno.writeFile(slots[written]!, torn);
    // A leftover temporary file from the first superblock write is ignored and removed.
    await Deno.writeFile(`${path}/superblock.tmp`, new Uint8Array([1, 2, 3]));
    assert.deepEqual((await reopen(path)).superblock, first);
    assert.equal(await Deno.stat(`${path}/superblock.tmp`).catch(() => undefined), undefined);
    // The next write goes to the torn slot again and takes over.
    const again = await openDir(path);
    await again.dataDir.persist([superblockWrite(3, second)]);
    await again.dataDir.close();
    assert.deepEqual((await reopen(path)).superblock, second);
  });
});

Deno.test("DataDir without a valid superblock or a log is an error", async () => {
  await withDir(async (path) => {
    const { dataDir } = await openDir(path);
    await dataDir.persist([logWrite(1, 1, entries(1, 1, 0), 0)]);
    await dataDir.close();
    await Deno.writeFile(`${path}/superblock.a`, new Uint8Array(40));
    await assert.rejects(
      openDir(path),
      (error: unknown) =>
        error instanceof DataDirError &&
        error.message ===
          `${path}: no readable superblock (${path}/superblock.a lacks the superblock magic): ` +
            "the view this replica promised is unknown, and starting afresh in view 0 could let " +
            "it vote in a view it promised away",
    );
    await Deno.remove(`${path}/log`);
    await assert.rejects(openDir(path), /replica-0\/log: cannot open/);
    await Deno.writeFile(`${path}/log`, new Uint8Array(5));
    await Deno.remove(`${path}/superblock.a`);
    await assert.rejects(openDir(path), /superblock.a: missing, yet .*log holds \d+ bytes/);
  });
});

for (
  const [mode, preallocate] of [["", 0], [
    " (preallocated log)",
    LOG_PREALLOCATE_AHEAD_BYTES,
  ]] as const
) {
  Deno.test(`DataDir log writes after a lost superblock write are dropped${mode}`, async () => {
    await withDir(async (path) => {
      const { dataDir } = await openDir(path, { logPreallocateBytes: preallocate });
      await dataDir.persist([logWrite(1, 1, entries(1, 2, 0), 1)]);
      const slotB = await Deno.readFile(`${path}/superblock.b`);
      const next: Superblock = { viewNumber: 1, lastNormalView: 1, recovering: false };
      // The log writes before the superblock write must survive; those after it must not.
      await dataDir.persist([
        logWrite(2, 3, entries(3, 3, 0), 1),
        superblockWrite(3, next),
        logWrite(4, 3, entries(3, 5, 1), 2),
      ]);
      await dataDir.close();
      assert.deepEqual(await reopen(path, { logPreallocateBytes: preallocate }), {
        superblock: next,
        log: [...entries(1, 2, 0), ...entries(3, 5, 1)],
        commitNumber: 2,
        logTrusted: true,
      });
      // A crash after the log's fdatasync but before the superblock slot's write.
      await Deno.writeFile(`${path}/superblock.b`, slotB);
      const repairs: string[] = [];
      const expected: DurableState = {
        superblock: SUPERBLOCK_DEFAULT,
        log: entries(1, 3, 0),
        commitNumber: 1,
        logTrusted: true,
      };
      assert.deepEqual(
        await reopen(path, {
          logPreallocateBytes: preallocate,
          onRepair: (message) => repairs.push(message),
        }),
        expected,
      );
      assert.equal(repairs.length, 1);
      assert.deepEqual(
        await reopen(path, {
          logPreallocateBytes: preallocate,
          onRepair: (message) => repairs.push(message),
        }),
        expected,
      );
      assert.equal(repairs.length, 1, "the repair is durable");
      const again = await openDir(path, { logPreallocateBytes: preallocate });
      await again.dataDir.persist([superblockWrite(5, next), logWrite(6, 4, [entry(4, 1)], 3)]);
      await again.dataDir.close();
      assert.deepEqual(await reopen(path, { logPreallocateBytes: preallocate }), {
        superblock: next,
        log: [...entries(1, 3, 0), entry(4, 1)],
        commitNumber: 3,
        logTrusted: true,
      });
    });
  });
}

Deno.test("DataDir second open of an open directory fails", async () => {
  await withDir(async (path) => {
    const { dataDir } = await openDir(path);
    await assert.rejects(
      openDir(path),
      (error: unknown) =>
        error instanceof DataDirError && error.message === `${path} is in use by another process`,
    );
    await dataDir.close();
    const second = await openDir(path);
    await second.dataDir.close();
  });
});

Deno.test("DataDir persist refuses misuse", async () => {
  await withDir(async (path) => {
    const { dataDir } = await openDir(path);
    await assert.rejects(dataDir.persist([logWrite(1, 2, [entry(2, 0)], 0)]), AssertionError);
    await assert.rejects(dataDir.persist([logWrite(1, 1, [entry(2, 0)], 0)]), AssertionError);
    const pending = dataDir.persist([logWrite(1, 1, [entry(1, 0)], 0)]);
    assert.throws(() => dataDir.persist([]), AssertionError);
    assert.equal(await pending, 1);
    await dataDir.close();
    assert.throws(() => dataDir.persist([]), AssertionError);
    assert.deepEqual((await reopen(path)).log, [entry(1, 0)]);
  });
});

Deno.test("DataDir with sync none persists", async () => {
  await withDir(async (path) => {
    const { dataDir, state } = await openDir(path, { sync: "none" });
    assert.equal(state, undefined);
    const superblock: Superblock = { viewNumber: 3, lastNormalView: 3, recovering: false };
    assert.equal(
      await dataDir.persist([logWrite(1, 1, entries(1, 4, 2), 2), superblockWrite(2, superblock)]),
      2,
    );
    await dataDir.close();
    assert.deepEqual(await reopen(path, { sync: "none" }), {
      superblock,
      log: entries(1, 4, 2),
      commitNumber: 2,
      logTrusted: true,
    });
  });
});

Deno.test("DataDir rewrite drops the dead part of a bloated log", async () => {
  await withDir(async (path) => {
    const { dataDir } = await openDir(path);
    // Every batch replaces the same ten entries: all but the last batch are dead.
    for (let view = 0; view < 50; view++) {
      await dataDir.persist([logWrite(view + 1, 1, entries(1, 10, view), 0)]);
    }
    await dataDir.close();
    const bloated = await fileSize(`${path}/log`);
    const expected = await reopen(path);
    assert.equal(await fileSize(`${path}/log`), bloated, "below the default minimum");
    const repairs: string[] = [];
    const state = await reopen(path, {
      logRewriteBytesMin: 1024,
      onRepair: (message) => repairs.push(message),
    });
    assert.deepEqual(state, expected);
    assert.ok(await fileSize(`${path}/log`) * 10 < bloated);
    assert.equal(repairs.length, 1);
    assert.match(repairs[0]!, /log: rewrote \d+ bytes as \d+ bytes of live entries/);
    // The rewritten log loads and grows like any other.
    const again = await openDir(path, { logRewriteBytesMin: 1024 });
    await again.dataDir.persist([logWrite(100, 11, [entry(11, 49)], 10)]);
    await again.dataDir.close();
    const grown = await reopen(path, { onRepair: (message) => repairs.push(message) });
    assert.deepEqual(grown.log, [...expected.log, entry(11, 49)]);
    assert.equal(grown.commitNumber, 10);
    assert.equal(repairs.length, 1);
  });
});

/** One persist effect, drawn without knowing the log: `position` picks the op to write from. */
type EffectPlan =
  | {
    readonly kind: "log";
    readonly position: number;
    readonly count: number;
    readonly size: number;
  }
  | { readonly kind: "superblock"; readonly viewStep: number; readonly recovering: boolean };

const effectPlan: fc.Arbitrary<EffectPlan> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant("log" as const),
      position: fc.double({ min: 0, max: 1, noNaN: true }),
      count: fc.nat({ max: 6 }),
      size: fc.nat({ max: 300 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("superblock" as const),
      viewStep: fc.nat({ max: 2 }),
      recovering: fc.boolean(),
    }),
  },
);

const batchPlan = fc.record({
  effects: fc.array(effectPlan, { maxLength: 5 }),
  reopenAfter: fc.boolean(),
});

for (const [mode, preallocate] of [["", 0], [" (preallocated log)", 64 * 1024]] as const) {
  Deno.test(`DataDir matches an in-memory model of the log${mode}`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(batchPlan, { minLength: 1, maxLength: 12 }), async (batches) => {
        await withDir(async (path) => {
          // The model follows the simulator's disk: see `#applyWrite` in src/sim/simulator.ts.
          const model = { log: [] as LogEntry[], commitNumber: 0, superblock: SUPERBLOCK_DEFAULT };
          let id = 0;
          let open = await openDir(path, { sync: "none", logPreallocateBytes: preallocate });
          for (const batch of batches) {
            const effects: Effect[] = [];
            for (const plan of batch.effects) {
              id++;
              if (plan.kind === "superblock") {
                const viewNumber = model.superblock.viewNumber + plan.viewStep;
                const superblock = {
                  viewNumber,
                  lastNormalView: plan.viewStep === 0
                    ? model.superblock.lastNormalView
                    : viewNumber,
                  recovering: plan.recovering,
                };
                effects.push(superblockWrite(id, superblock));
                model.superblock = superblock;
                continue;
              }
              const from = 1 +
                Math.min(model.log.length, Math.floor(plan.position * (model.log.length + 1)));
              const written: LogEntry[] = [];
              for (let index = 0; index < plan.count; index++) {
                written.push(entry(from + index, model.superblock.viewNumber, plan.size + index));
              }
              model.log.length = from - 1;
              model.log.push(...written);
              // Now and then beyond the log, which the load clamps as the simulator's disk does.
              const commitNumber = Math.floor(plan.position * (model.log.length + 2));
              effects.push(logWrite(id, from, written, commitNumber));
              model.commitNumber = Math.min(commitNumber, model.log.length);
            }
            const persisted = await open.dataDir.persist(effects);
            assert.equal(persisted, effects.length === 0 ? 0 : id);
            if (batch.reopenAfter) {
              await open.dataDir.close();
              open = await openDir(path, { sync: "none", logPreallocateBytes: preallocate });
              assert.deepEqual(open.state, {
                superblock: model.superblock,
                log: model.log,
                commitNumber: model.commitNumber,
                logTrusted: true,
              });
            }
          }
          await open.dataDir.close();
          assert.deepEqual(await reopen(path, { logPreallocateBytes: preallocate }), {
            superblock: model.superblock,
            log: model.log,
            commitNumber: model.commitNumber,
            logTrusted: true,
          });
        });
      }),
      { numRuns: PROPERTY_RUNS },
    );
  });
}

// ---------------------------------------------------------------- preallocation

/** Reopen with the default preallocation, and the repairs the load reported. */
async function reopenPreallocated(path: string) {
  const repairs: string[] = [];
  const state = await reopen(path, {
    logPreallocateBytes: LOG_PREALLOCATE_AHEAD_BYTES,
    onRepair: (message) => repairs.push(message),
  });
  return { state, repairs };
}

Deno.test("DataDir preallocates zeros ahead of the records and reloads without repairs", async () => {
  await withDir(async (path) => {
    const { dataDir } = await DataDir.open(path);
    assert.ok(await fileSize(`${path}/log`) >= LOG_PREALLOCATE_AHEAD_BYTES);
    await dataDir.persist([logWrite(1, 1, entries(1, 3, 0), 1)]);
    await dataDir.persist([logWrite(2, 4, entries(4, 9, 0), 5)]);
    await dataDir.close();
    const repairs: string[] = [];
    const state = await DataDir.open(path, { onRepair: (message) => repairs.push(message) });
    assert.deepEqual(state.state?.log, entries(1, 9, 0));
    assert.equal(state.state?.commitNumber, 5);
    assert.deepEqual(repairs, [], "zeros written in advance are not damage");
    // Records go on where the last one ended, before the zeros.
    await state.dataDir.persist([logWrite(3, 10, entries(10, 12, 0), 9)]);
    await state.dataDir.close();
    assert.deepEqual(
      (await DataDir.open(path).then(async (opened) => {
        await opened.dataDir.close();
        return opened.state;
      }))?.log,
      entries(1, 12, 0),
    );
  });
});

Deno.test("DataDir cuts off a record torn in preallocated space", async () => {
  await withDir(async (path) => {
    const { dataDir } = await DataDir.open(path);
    await dataDir.persist([logWrite(1, 1, entries(1, 3, 0), 1)]);
    await dataDir.persist([logWrite(2, 4, entries(4, 5, 0), 3)]);
    await dataDir.close();
    // Find where the second record starts (the records are followed by zeros), then zero the
    // second half of that record: a write torn by a crash.
    const bytes = await Deno.readFile(`${path}/log`);
    const starts: number[] = [];
    for (let i = 0; i + 4 <= bytes.length; i++) {
      if (
        bytes[i] === 0x56 && bytes[i + 1] === 0x53 && bytes[i + 2] === 0x4c && bytes[i + 3] === 0x52
      ) {
        starts.push(i);
      }
    }
    assert.equal(starts.length, 2);
    const second = starts[1]!;
    const end = bytes.findLastIndex((byte) => byte !== 0) + 1;
    bytes.fill(0, Math.floor((second + end) / 2), end);
    await Deno.writeFile(`${path}/log`, bytes);
    const { state, repairs } = await reopenPreallocated(path);
    assert.deepEqual(state.log, entries(1, 3, 0));
    assert.equal(repairs.length, 1);
    assert.match(repairs[0]!, new RegExp(`log: record at byte ${second} .*: torn, `));
  });
});

Deno.test("DataDir garbage after the records is damage, not preallocated space", async () => {
  await withDir(async (path) => {
    const { dataDir } = await DataDir.open(path);
    await dataDir.persist([logWrite(1, 1, entries(1, 3, 0), 1)]);
    await dataDir.close();
    const bytes = await Deno.readFile(`${path}/log`);
    const end = bytes.findLastIndex((byte) => byte !== 0) + 1;
    bytes[end + 100] = 0x7f; // A stray byte in the zeros.
    await Deno.writeFile(`${path}/log`, bytes);
    const { state, repairs } = await reopenPreallocated(path);
    assert.deepEqual(state.log, entries(1, 3, 0));
    assert.equal(repairs.length, 1, "the stray byte is reported as a torn tail and cut off");
  });
});
