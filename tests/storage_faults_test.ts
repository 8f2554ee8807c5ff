/**
 * Storage faults: a log torn by a crash, a log damaged in the middle, unreadable superblock slots,
 * a full disk and other failed writes; in the data directory, with the replica core on top, and
 * in a live one-replica node. Faults are made by editing the files between opens, or injected
 * into the write path through `DataDirOptions.injectFault`, so nothing depends on the machine.
 */
import { sha256 } from "../src/lib/sha256.ts";
import { strict as assert } from "node:assert";
import { type LiveNode, withNode } from "./_node.ts";
import { logWrite, superblockWrite, withDir } from "./_storage.ts";
import { KvStore } from "../src/app/kv.ts";
import { KvClient } from "../src/client/kv_client.ts";
import { fetchStatus } from "../src/client/status.ts";
import {
  DataDir,
  DataDirError,
  type DataDirOptions,
  DiskFullError,
  type DiskIo,
  isDiskFull,
  LOG_PREALLOCATE_AHEAD_BYTES,
} from "../src/storage/data_dir.ts";
import type { LogEntry, Message } from "../src/vr/message.ts";
import { type DurableState, type Effect, Replica, type Superblock } from "../src/vr/replica.ts";
import { kvSet } from "./_harness.ts";

const PREFIX = "vstamp_storage_faults_test_";

/** Record header: magic, length, checksum. */
const RECORD_HEADER_BYTES = 12;
const SUPERBLOCK_DEFAULT: Superblock = {
  epoch: 0,
  viewNumber: 0,
  lastNormalView: 0,
  recovering: false,
};
/** How long a test waits for a condition before it fails. */
const WAIT_MS_MAX = 10_000;

// ---------------------------------------------------------------- helpers

function entry(opNumber: number, viewNumber: number): LogEntry {
  return {
    opNumber,
    viewNumber,
    clientId: 7,
    requestNumber: opNumber,
    operation: kvSet(`k${opNumber}`, `v${opNumber}.${viewNumber}`),
    timestamp: 0,
  };
}

function entries(from: number, to: number, viewNumber: number): LogEntry[] {
  const result: LogEntry[] = [];
  for (let op = from; op <= to; op++) result.push(entry(op, viewNumber));
  return result;
}

/** Opens and closes again: what a restart would load, and the repairs the load reported. */
async function reopen(path: string, options: DataDirOptions = {}) {
  const repairs: string[] = [];
  const { dataDir, state } = await DataDir.open(path, {
    logPreallocateBytes: 0,
    onRepair: (line) => repairs.push(line),
    ...options,
  });
  await dataDir.close();
  assert.ok(state !== undefined, "a used directory yields a state");
  return { state, repairs };
}

async function fileSize(path: string): Promise<number> {
  return (await Deno.stat(path)).size;
}

/** The error Deno raises for a write to a full disk (see the `/dev/full` test below). */
function noSpace(): Error {
  return Object.assign(new Error("No space left on device (os error 28)"), { code: "ENOSPC" });
}

function ioError(): Error {
  return Object.assign(new Error("Input/output error (os error 5)"), { code: "EIO" });
}

/** Whether `path` is a log segment's file. */
function isLogSegment(path: string): boolean {
  return /\/log\.\d{6,}$/.test(path);
}

/** Whether a write is of a log record (records start with the magic "VSLR"; zeros do not). */
function isRecordWrite(io: DiskIo): boolean {
  return io.kind === "write" && isLogSegment(io.path) && io.bytes[0] === 0x56;
}

/** Waits for `condition`, checking every few milliseconds, failing after `WAIT_MS_MAX`. */
async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS_MAX;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/**
 * The durable state after each prefix of `effects`, applied the way the replica means them (see
 * `Effect`): a crash may leave any of these, and no other.
 */
function prefixStates(effects: readonly Effect[]): DurableState[] {
  let superblock = SUPERBLOCK_DEFAULT;
  let log: LogEntry[] = [];
  let commitNumber = 0;
  const state = (): DurableState => ({
    superblock,
    log: log.slice(),
    commitNumber: Math.min(commitNumber, log.length),
    logTrusted: true,
  });
  const states = [state()];
  for (const effect of effects) {
    if (effect.type === "persist_superblock") {
      superblock = effect.superblock;
    } else if (effect.type === "persist_log") {
      log = [...log.slice(0, effect.fromOpNumber - 1), ...effect.entries];
      commitNumber = effect.commitNumber;
    }
    states.push(state());
  }
  return states;
}

// ---------------------------------------------------------------- a torn or damaged log

Deno.test("DataDir torn last record is cut and the repair names its offset and the bytes cut", async () => {
  await withDir(PREFIX, async (path) => {
    const { dataDir } = await DataDir.open(path, { logPreallocateBytes: 0 });
    await dataDir.persist([logWrite(1, 1, entries(1, 3, 0), 1)]);
    const offset = await fileSize(`${path}/log.000001`);
    await dataDir.persist([logWrite(2, 4, entries(4, 6, 0), 3)]);
    await dataDir.close();
    const full = await fileSize(`${path}/log.000001`);
    // A crash in the middle of the last record's write: its end never reached the disk.
    const cut = full - 7;
    await Deno.truncate(`${path}/log.000001`, cut);
    const { state, repairs } = await reopen(path);
    assert.deepEqual(state, {
      superblock: SUPERBLOCK_DEFAULT,
      log: entries(1, 3, 0),
      commitNumber: 1,
      logTrusted: true,
    });
    assert.deepEqual(repairs, [
      `${path}/log.000001: record at byte ${offset} is cut short (${
        cut - offset - RECORD_HEADER_BYTES
      } of ${full - offset - RECORD_HEADER_BYTES} bytes) and nothing valid follows it: torn, ` +
      "the last write before a crash, never synced and so never acknowledged; " +
      `cut the ${cut - offset} bytes from byte ${offset} to the end of the file`,
    ]);
    assert.equal(await fileSize(`${path}/log.000001`), offset);
  });
});

/**
 * A log of three records of which the second is damaged (a flipped bit): returns the offset of the
 * damaged record.
 */
async function damagedLog(path: string): Promise<number> {
  const { dataDir } = await DataDir.open(path, { logPreallocateBytes: 0 });
  await dataDir.persist([logWrite(1, 1, entries(1, 3, 0), 1)]);
  const offset = await fileSize(`${path}/log.000001`);
  await dataDir.persist([logWrite(2, 4, entries(4, 5, 0), 3)]);
  await dataDir.persist([logWrite(3, 6, entries(6, 7, 0), 5)]);
  await dataDir.close();
  const bytes = await Deno.readFile(`${path}/log.000001`);
  bytes[offset + RECORD_HEADER_BYTES + 4]! ^= 0x01;
  await Deno.writeFile(`${path}/log.000001`, bytes);
  return offset;
}

Deno.test("DataDir corrupt record with valid ones after it yields the prefix, untrusted, and says so", async () => {
  await withDir(PREFIX, async (path) => {
    const offset = await damagedLog(path);
    const size = await fileSize(`${path}/log.000001`);
    const { state, repairs } = await reopen(path);
    assert.deepEqual(state, {
      superblock: { ...SUPERBLOCK_DEFAULT, recovering: true },
      log: entries(1, 3, 0),
      commitNumber: 1,
      logTrusted: false,
    });
    assert.equal(repairs.length, 1);
    assert.match(
      repairs[0]!,
      new RegExp(
        `^${path}/log.000001: record at byte ${offset} has a bad checksum, yet a valid record follows ` +
          `at byte \\d+: damage, not a torn write, so entries this replica acknowledged may be ` +
          `lost; kept the 3 entries before it, cut the ${size - offset} bytes from byte ` +
          `${offset} on, and marked the replica as recovering`,
      ),
    );
    // A restart before recovery completes: the log is clean now, but the superblock remembers.
    const again = await reopen(path);
    assert.deepEqual(again.repairs, []);
    assert.equal(again.state.superblock.recovering, true);
  });
});

Deno.test("DataDir crash between marking recovery and cutting the damage finds the damage again", async () => {
  await withDir(PREFIX, async (path) => {
    await damagedLog(path);
    const damaged = await Deno.readFile(`${path}/log.000001`);
    const first = await reopen(path);
    assert.equal(first.state.logTrusted, false);
    // As if the cut never reached the disk: the superblock write did, the truncation did not.
    await Deno.writeFile(`${path}/log.000001`, damaged);
    const slots = await Promise.all(
      ["a", "b"].map((slot) => Deno.readFile(`${path}/superblock.${slot}`)),
    );
    const second = await reopen(path);
    assert.equal(second.state.logTrusted, false);
    assert.equal(second.state.superblock.recovering, true);
    assert.equal(second.repairs.length, 1);
    // Already marked: the superblock is not written again.
    for (const [index, slot] of ["a", "b"].entries()) {
      assert.deepEqual(await Deno.readFile(`${path}/superblock.${slot}`), slots[index]);
    }
  });
});

/** Hands the replica's persist effects to `dataDir` and reports them durable, until none are left. */
async function drive(replica: Replica, dataDir: DataDir): Promise<Effect[]> {
  const all: Effect[] = [];
  for (;;) {
    const effects = replica.drainEffects();
    all.push(...effects);
    const id = await dataDir.persist(effects);
    if (id === 0) return all;
    replica.onPersisted(id);
  }
}

function deliver(replica: Replica, message: Message): void {
  replica.onMessage(message);
}

function sent(effects: readonly Effect[]): string[] {
  return effects.flatMap((e) => e.type === "send" ? [`${e.message.type}>${e.to}`] : []);
}

/** Backup 1 of a group of three, from `durable`. */
function backupFrom(durable: DurableState): Replica {
  return new Replica({
    chunkHash: sha256,
    replicaIndex: 1,
    addresses: ["test:0", "test:1", "test:2"],
    app: new KvStore(),
    seed: 7,
    durable,
  });
}

Deno.test("replica with a damaged log counts in no quorum until it recovered the primary's log", async () => {
  await withDir(PREFIX, async (path) => {
    await damagedLog(path);
    const opened = await DataDir.open(path, { logPreallocateBytes: 0 });
    assert.ok(opened.state !== undefined && !opened.state.logTrusted);
    let replica = backupFrom(opened.state);
    assert.equal(replica.status, "recovering");
    assert.equal(replica.opNumber, 0, "the core ignores an untrusted log");
    let effects = await drive(replica, opened.dataDir);
    assert.deepEqual(sent(effects), ["recovery>0", "recovery>2"]);
    // A Prepare of its view, and a view change: it acknowledges nothing and votes for nothing.
    deliver(replica, {
      type: "prepare",
      epoch: 0,
      viewNumber: 0,
      entries: entries(1, 8, 0),
      commitNumber: 0,
      replica: 0,
    });
    deliver(replica, { type: "start_view_change", epoch: 0, viewNumber: 1, replica: 0 });
    deliver(replica, { type: "start_view_change", epoch: 0, viewNumber: 1, replica: 2 });
    effects = await drive(replica, opened.dataDir);
    assert.deepEqual(sent(effects), []);
    assert.equal(replica.opNumber, 0);
    assert.equal(replica.viewNumber, 0);
    await opened.dataDir.close();

    // A restart while still recovering: the superblock says so, and it recovers again.
    const restarted = await DataDir.open(path, { logPreallocateBytes: 0 });
    assert.ok(restarted.state !== undefined);
    assert.equal(restarted.state.superblock.recovering, true);
    replica = backupFrom(restarted.state);
    assert.equal(replica.status, "recovering");
    effects = await drive(replica, restarted.dataDir);
    const recovery = effects.find((e) => e.type === "send" && e.message.type === "recovery");
    assert.ok(recovery?.type === "send" && recovery.message.type === "recovery");
    const nonce = recovery.message.nonce;
    // §4.3: f + 1 answers, one of them from the primary, which sends its log.
    const primaryLog = entries(1, 8, 0);
    deliver(replica, {
      type: "recovery_response",
      epoch: 0,
      viewNumber: 0,
      nonce,
      isPrimary: false,
      anchorOpNumber: 0,
      entries: [],
      opNumber: 0,
      commitNumber: 0,
      replica: 2,
    });
    deliver(replica, {
      type: "recovery_response",
      epoch: 0,
      viewNumber: 0,
      nonce,
      isPrimary: true,
      anchorOpNumber: 0,
      entries: primaryLog,
      opNumber: 8,
      commitNumber: 6,
      replica: 0,
    });
    assert.equal(replica.status, "normal");
    await drive(replica, restarted.dataDir);
    await restarted.dataDir.close();

    // The recovered log replaced the prefix on disk, and is trusted again.
    const { state, repairs } = await reopen(path);
    assert.deepEqual(repairs, []);
    assert.equal(state.logTrusted, true);
    assert.equal(state.superblock.recovering, false);
    assert.deepEqual(state.log, primaryLog);
  });
});

// ---------------------------------------------------------------- superblock slots

Deno.test("DataDir one unreadable superblock slot: the other is used, and the load says so", async () => {
  await withDir(PREFIX, async (path) => {
    const { dataDir } = await DataDir.open(path, { logPreallocateBytes: 0 });
    const first: Superblock = { epoch: 0, viewNumber: 3, lastNormalView: 3, recovering: false };
    await dataDir.persist([superblockWrite(1, first)]); // Sequence-number 1: superblock.b.
    await dataDir.persist([superblockWrite(2, { ...first, viewNumber: 4 })]); // 2: superblock.a.
    await dataDir.close();
    const slotA = await Deno.readFile(`${path}/superblock.a`);
    slotA[20]! ^= 0x10;
    await Deno.writeFile(`${path}/superblock.a`, slotA);
    const { state, repairs } = await reopen(path);
    assert.deepEqual(state.superblock, first);
    assert.deepEqual(repairs, [
      `${path}/superblock.a has a bad checksum: using superblock.b (sequence-number 1, view 3): ` +
      "a crash during a superblock write tears only the slot being written, and the next " +
      "superblock write replaces the unreadable one",
    ]);
  });
});

Deno.test("DataDir with both superblock slots unreadable refuses to open, naming both files", async () => {
  await withDir(PREFIX, async (path) => {
    const { dataDir } = await DataDir.open(path, { logPreallocateBytes: 0 });
    await dataDir.persist([superblockWrite(1, { ...SUPERBLOCK_DEFAULT, viewNumber: 2 })]);
    await dataDir.close();
    await Deno.writeFile(`${path}/superblock.a`, new Uint8Array(48).fill(0xee));
    await Deno.writeFile(`${path}/superblock.b`, new Uint8Array(17));
    await assert.rejects(
      DataDir.open(path),
      (error: unknown) =>
        error instanceof DataDirError &&
        !error.message.includes("\n") &&
        error.message ===
          `${path}: no readable superblock (${path}/superblock.a lacks the superblock magic; ` +
            `${path}/superblock.b is 17 bytes, not 48): the view this replica promised is ` +
            "unknown, and starting afresh in view 0 could let it vote in a view it promised away",
    );
    // Without superblock.a, superblock.b still shows the replica is not new.
    await Deno.remove(`${path}/superblock.a`);
    await Deno.truncate(`${path}/log.000001`, 0);
    await assert.rejects(
      DataDir.open(path, { logPreallocateBytes: 0 }),
      (error: unknown) =>
        error instanceof DataDirError &&
        error.message ===
          `${path}/superblock.a: missing, yet ${path}/superblock.b holds 17 bytes`,
    );
  });
});

// ---------------------------------------------------------------- a full disk

/** Where a batch's write fails, and how. */
interface FaultPoint {
  readonly name: string;
  /** Whether the fault hits this system call. */
  readonly hits: (io: DiskIo) => boolean;
  /** A short write: half of the bytes reach the file before the error. */
  readonly partial?: boolean;
}

const FAULT_POINTS: readonly FaultPoint[] = [
  { name: "the log record's write", hits: isRecordWrite },
  { name: "the log record's write, half done", hits: isRecordWrite, partial: true },
  { name: "the log's fdatasync", hits: (io) => io.kind === "sync" && isLogSegment(io.path) },
  {
    name: "the superblock's write",
    hits: (io) => io.kind === "write" && io.path.endsWith("/superblock.b"),
  },
  {
    name: "the superblock's write, half done",
    hits: (io) => io.kind === "write" && io.path.endsWith("/superblock.b"),
    partial: true,
  },
  {
    name: "the superblock's fdatasync",
    hits: (io) => io.kind === "sync" && io.path.endsWith("/superblock.b"),
  },
];

/** An injector that fails the calls `point` hits while `full.on`, counting its failures. */
function diskFullAt(point: FaultPoint, full: { on: boolean; failures: number }) {
  return (io: DiskIo): void => {
    if (!full.on || !point.hits(io)) return;
    full.failures++;
    if (point.partial && io.kind === "write") {
      const file = Deno.openSync(io.path, { write: true });
      file.seekSync(io.offset, Deno.SeekMode.Start);
      file.writeSync(io.bytes.subarray(0, Math.floor(io.bytes.length / 2)));
      file.close();
    }
    throw noSpace();
  };
}

const BATCH_1: readonly Effect[] = [logWrite(1, 1, entries(1, 3, 0), 1)];
/** Log writes before and after a superblock write, as a view change makes them. */
const BATCH_2: readonly Effect[] = [
  logWrite(2, 4, entries(4, 5, 0), 2),
  superblockWrite(3, { epoch: 0, viewNumber: 1, lastNormalView: 1, recovering: false }),
  logWrite(4, 4, entries(4, 6, 1), 3),
];
const BATCH_3: readonly Effect[] = [logWrite(5, 7, [entry(7, 1)], 6)];

for (const point of FAULT_POINTS) {
  for (const preallocate of [0, LOG_PREALLOCATE_AHEAD_BYTES]) {
    const mode = preallocate === 0 ? "" : " (preallocated log)";
    Deno.test(`DataDir batch that finds the disk full at ${point.name} persists when retried${mode}`, async () => {
      await withDir(PREFIX, async (path) => {
        const full = { on: false, failures: 0 };
        const options: DataDirOptions = {
          logPreallocateBytes: preallocate,
          injectFault: diskFullAt(point, full),
        };
        const { dataDir } = await DataDir.open(path, options);
        assert.equal(await dataDir.persist(BATCH_1), 1);
        full.on = true;
        for (let attempt = 1; attempt <= 3; attempt++) {
          await assert.rejects(
            dataDir.persist(BATCH_2),
            (error: unknown) =>
              error instanceof DiskFullError && isDiskFull(error) &&
              error.message.startsWith(`${error.file}: `) &&
              error.message.endsWith(": No space left on device (os error 28)"),
          );
        }
        assert.equal(full.failures, 3);
        full.on = false;
        assert.equal(await dataDir.persist(BATCH_2), 4);
        assert.equal(await dataDir.persist(BATCH_3), 5);
        await dataDir.close();
        const { state, repairs } = await reopen(path, { logPreallocateBytes: preallocate });
        assert.deepEqual(state, prefixStates([...BATCH_1, ...BATCH_2, ...BATCH_3]).at(-1));
        assert.deepEqual(repairs, [], "the retry overwrote what the failed attempts left");
        // One record per durable batch, however many attempts failed.
        const bytes = await Deno.readFile(`${path}/log.000001`);
        let records = 0;
        for (let i = 0; i + 4 <= bytes.length; i++) {
          if (bytes[i] === 0x56 && bytes[i + 1] === 0x53 && bytes[i + 2] === 0x4c) records++;
        }
        assert.equal(records, 3);
      });
    });
  }

  Deno.test(`DataDir crash after the disk filled at ${point.name} leaves a prefix of the effects`, async () => {
    await withDir(PREFIX, async (path) => {
      const full = { on: false, failures: 0 };
      const { dataDir } = await DataDir.open(path, {
        logPreallocateBytes: 0,
        injectFault: diskFullAt(point, full),
      });
      await dataDir.persist(BATCH_1);
      full.on = true;
      await assert.rejects(dataDir.persist(BATCH_2), DiskFullError);
      await dataDir.close();
      const { state } = await reopen(path);
      const allowed = prefixStates([...BATCH_1, ...BATCH_2]).slice(BATCH_1.length);
      assert.ok(
        allowed.some((prefix) => {
          try {
            assert.deepEqual(state, prefix);
            return true;
          } catch {
            return false;
          }
        }),
        `${JSON.stringify(state.superblock)}, ops ${state.log.map((e) => e.opNumber)}`,
      );
    });
  });
}

Deno.test("DataDir failed write other than a full disk is a DataDirError naming the file and offset", async () => {
  await withDir(PREFIX, async (path) => {
    let broken = false;
    const { dataDir } = await DataDir.open(path, {
      logPreallocateBytes: 0,
      injectFault: (io) => {
        if (broken && isRecordWrite(io)) throw ioError();
      },
    });
    await dataDir.persist(BATCH_1);
    const offset = await fileSize(`${path}/log.000001`);
    broken = true;
    await assert.rejects(
      dataDir.persist(BATCH_2),
      (error: unknown) =>
        error instanceof DataDirError && !(error instanceof DiskFullError) && !isDiskFull(error) &&
        /^.*\/log\.000001: writing the \d+-byte record at byte (\d+): Input\/output error/.test(
          error.message,
        ) && error.message.includes(`at byte ${offset}:`),
    );
    await dataDir.close();
  });
});

/** Whether this run may open /dev/full (Deno asks --allow-all for device files). */
function devFullOpens(): boolean {
  if (Deno.build.os !== "linux") return false;
  try {
    Deno.openSync("/dev/full", { write: true }).close();
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "isDiskFull recognises the error Deno raises for a full disk",
  // The suite runs with the permissions `vstamp` needs, which do not reach device files.
  ignore: !devFullOpens(),
  fn: () => {
    // Linux's /dev/full fails every write with ENOSPC.
    const file = Deno.openSync("/dev/full", { write: true });
    try {
      file.writeSync(new Uint8Array(1));
      assert.fail("a write to /dev/full succeeded");
    } catch (error) {
      assert.ok(isDiskFull(error), String(error));
      assert.ok(!isDiskFull(ioError()));
    } finally {
      file.close();
    }
  },
});

// ---------------------------------------------------------------- log segments

/** Segments of a small size, so that a few batches fill several. */
const SMALL_SEGMENTS: DataDirOptions = { logPreallocateBytes: 0, logSegmentBytes: 400 };

/** The log segments in the directory, in order. */
async function logSegments(path: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(path)) {
    if (/^log\.\d{6,}$/.test(entry.name)) names.push(entry.name);
  }
  return names.sort();
}

/** Batches of three entries from op 1 on, one record each, until `segments` segments exist. */
async function fillSegments(
  path: string,
  segments: number,
  options: DataDirOptions = SMALL_SEGMENTS,
): Promise<{ log: LogEntry[]; firstOf: Map<string, number> }> {
  const { dataDir } = await DataDir.open(path, options);
  const log: LogEntry[] = [];
  /** The first op-number each segment's first record writes. */
  const firstOf = new Map<string, number>();
  for (let id = 1; dataDir.logSegmentFiles.length < segments || firstOf.size < segments; id++) {
    const written = entries(log.length + 1, log.length + 3, 0);
    await dataDir.persist([logWrite(id, log.length + 1, written, log.length)]);
    const segment = dataDir.logSegmentFiles.at(-1)!;
    if (!firstOf.has(segment)) firstOf.set(segment, log.length + 1);
    log.push(...written);
  }
  await dataDir.close();
  return { log, firstOf };
}

Deno.test("DataDir damage in a segment that others follow: the prefix, untrusted, the later segments deleted", async () => {
  await withDir(PREFIX, async (path) => {
    const { firstOf } = await fillSegments(path, 4);
    assert.deepEqual(await logSegments(path), [...firstOf.keys()]);
    // Damage the last record of segment 2: nothing valid follows it in its file, yet it is no
    // torn write, since segments 3 and 4 were created after it was synced.
    const name = `${path}/log.000002`;
    const bytes = await Deno.readFile(name);
    const starts: number[] = [];
    for (let offset = 0; offset < bytes.length;) {
      starts.push(offset);
      offset += RECORD_HEADER_BYTES + new DataView(bytes.buffer).getUint32(offset + 4, true);
    }
    const offset = starts.at(-1)!;
    bytes[offset + RECORD_HEADER_BYTES + 2]! ^= 0x20;
    await Deno.writeFile(name, bytes);
    const { state, repairs } = await reopen(path, SMALL_SEGMENTS);
    assert.deepEqual(state, {
      superblock: { ...SUPERBLOCK_DEFAULT, recovering: true },
      log: entries(1, firstOf.get("log.000002")! - 1 + (starts.length - 1) * 3, 0),
      commitNumber: firstOf.get("log.000002")! - 1 + (starts.length - 1) * 3 - 3,
      logTrusted: false,
    });
    assert.deepEqual(repairs, [
      `${name}: record at byte ${offset} has a bad checksum, yet the segments log.000003, ` +
      "log.000004 follow: damage, not a torn write, so entries this replica acknowledged may be " +
      `lost; kept the ${state.log.length} entries before it, cut the ${
        bytes.length - offset
      } bytes from byte ${offset} on, deleted log.000003, log.000004, and marked the replica as ` +
      "recovering: it takes part in no quorum until it has the log of the group's primary (§4.3)",
    ]);
    assert.deepEqual(await logSegments(path), ["log.000001", "log.000002"]);
    // Clean from now on, and the log goes on in segment 2.
    const again = await reopen(path, SMALL_SEGMENTS);
    assert.deepEqual(again.repairs, []);
    assert.deepEqual(again.state.log, state.log);
  });
});

Deno.test("DataDir segment's records under another segment's name do not check out: damage", async () => {
  await withDir(PREFIX, async (path) => {
    const { log, firstOf } = await fillSegments(path, 4);
    // A misdirected file: segment 3 holds segment 2's bytes. Record checksums cover the segment
    // number, so none of them checks out there.
    await Deno.copyFile(`${path}/log.000002`, `${path}/log.000003`);
    const { state, repairs } = await reopen(path, SMALL_SEGMENTS);
    assert.equal(state.logTrusted, false);
    assert.deepEqual(state.log, log.slice(0, firstOf.get("log.000003")! - 1));
    assert.equal(repairs.length, 1);
    assert.ok(
      repairs[0]!.startsWith(
        `${path}/log.000003: record at byte 0 has a bad checksum, yet the segment log.000004 ` +
          "follows: damage",
      ),
      repairs[0],
    );
  });
});

Deno.test("DataDir torn last record of the last segment is cut, the earlier segments untouched", async () => {
  await withDir(PREFIX, async (path) => {
    const { log, firstOf } = await fillSegments(path, 3);
    const last = `${path}/log.000003`;
    const size = await fileSize(last);
    await Deno.truncate(last, size - 5);
    const { state, repairs } = await reopen(path, SMALL_SEGMENTS);
    assert.equal(state.logTrusted, true);
    assert.deepEqual(state.log, log.slice(0, -3));
    assert.equal(repairs.length, 1);
    assert.match(repairs[0]!, new RegExp(`^${last}: record at byte \\d+ is cut short .*: torn, `));
    assert.deepEqual(await logSegments(path), [...firstOf.keys()]);
  });
});

Deno.test("DataDir with a segment missing in the middle refuses to open, naming it", async () => {
  await withDir(PREFIX, async (path) => {
    await fillSegments(path, 3);
    await Deno.remove(`${path}/log.000002`);
    await assert.rejects(
      DataDir.open(path, SMALL_SEGMENTS),
      (error: unknown) =>
        error instanceof DataDirError &&
        error.message ===
          `${path}/log.000002: missing, yet log.000001 and log.000003 exist: part of the log is lost`,
    );
  });
});

Deno.test("DataDir crash midway through truncateBefore leaves a log that loads", async () => {
  await withDir(PREFIX, async (path) => {
    const { log, firstOf } = await fillSegments(path, 4);
    // truncateBefore deletes from the first segment on: a crash after the first deletion.
    await Deno.remove(`${path}/log.000001`);
    const options = { ...SMALL_SEGMENTS, allowTruncatedLog: true };
    const { state, repairs } = await reopen(path, options);
    const start = firstOf.get("log.000002")!;
    assert.deepEqual(state.log, log.slice(start - 1));
    assert.deepEqual(repairs, []);
  });
});

/** Where starting a new segment fails. */
const SEGMENT_FAULT_POINTS: readonly FaultPoint[] = [
  {
    name: "the full segment's fsync",
    hits: (io) => io.kind === "sync" && io.path.endsWith("/log.000001"),
  },
  {
    name: "the directory's fsync",
    hits: (io) => io.kind === "sync" && io.path.endsWith("/replica-0"),
  },
  {
    name: "the new segment's first record",
    hits: (io) => isRecordWrite(io) && io.path.endsWith("/log.000002"),
  },
];

for (const point of SEGMENT_FAULT_POINTS) {
  Deno.test(`DataDir batch that finds the disk full at ${point.name} when it starts a segment persists when retried`, async () => {
    await withDir(PREFIX, async (path) => {
      const full = { on: false, failures: 0 };
      const options: DataDirOptions = {
        ...SMALL_SEGMENTS,
        // The first batch fills the first segment: the second starts the next one.
        logSegmentBytes: 50,
        injectFault: diskFullAt(point, full),
      };
      const { dataDir } = await DataDir.open(path, options);
      await dataDir.persist(BATCH_1);
      full.on = true;
      for (let attempt = 1; attempt <= 2; attempt++) {
        await assert.rejects(dataDir.persist(BATCH_2), DiskFullError);
      }
      assert.equal(full.failures, 2);
      full.on = false;
      assert.equal(await dataDir.persist(BATCH_2), 4);
      assert.equal(await dataDir.persist(BATCH_3), 5);
      // One record per segment: each batch fills the segment it starts.
      assert.deepEqual(dataDir.logSegmentFiles, ["log.000001", "log.000002", "log.000003"]);
      await dataDir.close();
      const { state, repairs } = await reopen(path, SMALL_SEGMENTS);
      assert.deepEqual(state, prefixStates([...BATCH_1, ...BATCH_2, ...BATCH_3]).at(-1));
      assert.deepEqual(repairs, []);
    });
  });
}

Deno.test("DataDir leftovers of a failed write past a full segment's records are cut when the next segment starts", async () => {
  await withDir(PREFIX, async (path) => {
    const full = { on: false, failures: 0 };
    const point: FaultPoint = { name: "a record, half done", hits: isRecordWrite, partial: true };
    const options: DataDirOptions = {
      ...SMALL_SEGMENTS,
      // Two batches fill it: 66 bytes, then 89 (three entries of 27 bytes, and the headers).
      logSegmentBytes: 150,
      injectFault: diskFullAt(point, full),
    };
    const { dataDir } = await DataDir.open(path, options);
    await dataDir.persist([logWrite(1, 1, entries(1, 2, 0), 0)]);
    // A large batch fails halfway through its record's write: its first half stays in the file.
    full.on = true;
    await assert.rejects(dataDir.persist([logWrite(2, 3, entries(3, 12, 0), 2)]), DiskFullError);
    full.on = false;
    // The caller persists a smaller batch instead, which fills the segment; the half record's
    // tail stays after it.
    await dataDir.persist([logWrite(2, 3, entries(3, 5, 0), 2)]);
    const size = await fileSize(`${path}/log.000001`);
    await dataDir.persist([logWrite(3, 6, entries(6, 6, 0), 5)]);
    assert.deepEqual(dataDir.logSegmentFiles, ["log.000001", "log.000002"]);
    await dataDir.close();
    assert.ok(size >= 150, `the segment was full: ${size} bytes`);
    const { state, repairs } = await reopen(path, SMALL_SEGMENTS);
    assert.deepEqual(repairs, [], "no damage in the full segment");
    assert.equal(state.logTrusted, true);
    assert.deepEqual(state.log, entries(1, 6, 0));
  });
});

// ---------------------------------------------------------------- a live node

/**
 * A one-replica group in this process with the given fault hook (`tests/_node.ts`); `fatal`
 * resolves with what the node's `onFatal` was told.
 */
function withFaultyNode(
  injectFault: (io: DiskIo) => void,
  body: (live: LiveNode & { readonly fatal: Promise<unknown> }) => Promise<void>,
): Promise<void> {
  let onFatal: (error: unknown) => void = () => {};
  const fatal = new Promise<unknown>((resolve) => onFatal = resolve);
  return withNode({ injectFault, onFatal }, (live) => body({ ...live, fatal }));
}

Deno.test("ReplicaNode with a full disk acknowledges no write until space returns, then goes on", async () => {
  const full = { on: false, failures: 0 };
  await withFaultyNode(
    diskFullAt(FAULT_POINTS[0]!, full),
    async ({ node, address, dataDir, clusterId, lines }) => {
      const kv = await KvClient.connect({ addresses: [address], deadlineMs: 30_000 });
      try {
        await kv.set("before", "1");
        full.on = true;
        let done = false;
        const write = kv.set("during", "2").then(() => done = true);
        // Three attempts of the same batch: the first, and two retries.
        await waitFor(() => full.failures >= 3, "two retries of the batch");
        assert.equal(done, false, "a write is not acknowledged while the disk is full");
        assert.equal(node.replica.commitNumber, 1);
        // The replica serves meanwhile: a status answer needs no disk.
        const [host, port] = address.split(":") as [string, string];
        const status = await fetchStatus({ host, port: Number(port) }, WAIT_MS_MAX, {
          identity: { clusterId, key: undefined },
        });
        assert.ok("status" in status, JSON.stringify(status));
        assert.equal(status.status, "normal");
        assert.equal(status.commitNumber, 1);
        full.on = false;
        await write;
        assert.equal(await kv.getString("during"), "2");
        // One line each way, however many attempts failed in between.
        assert.deepEqual(lines.filter((line) => line.includes("disk")), [
          `warn disk full writing ${dataDir}/log.000001: not acknowledging writes until space returns`,
          "info disk has space again",
        ]);
      } finally {
        kv.close();
      }
    },
  );
});

Deno.test("ReplicaNode stops with one error line when a write fails for another reason", async () => {
  let broken = false;
  const fault = (io: DiskIo) => {
    if (broken && isRecordWrite(io)) throw ioError();
  };
  await withFaultyNode(fault, async ({ node, address, lines, fatal }) => {
    const kv = await KvClient.connect({ addresses: [address], deadlineMs: 2_000 });
    try {
      await kv.set("before", "1");
      broken = true;
      const write = kv.set("during", "2").catch((error: unknown) => error);
      const error = await fatal;
      assert.ok(error instanceof DataDirError && !(error instanceof DiskFullError));
      const errors = lines.filter((line) => line.startsWith("error "));
      assert.equal(errors.length, 1);
      assert.match(
        errors[0]!,
        /^error cannot persist to .*: .*\/log\.000001: writing the \d+-byte record at byte \d+: Input\/output error \(os error 5\); stopping$/,
      );
      // The node closed: it no longer listens.
      await assert.rejects(
        Deno.connect({ hostname: "127.0.0.1", port: Number(address.split(":")[1]) }),
      );
      assert.ok((await write) instanceof Error);
      assert.equal(node.status().commitNumber, 1);
    } finally {
      kv.close();
    }
  });
});
