/**
 * Checkpoints in the data directory (`src/storage/checkpoint.ts`): the round trip, atomicity
 * (a crash or a failure during a write leaves the previous checkpoint), damage found and passed
 * over, the newest two kept, and the link to log truncation.
 */
import { strict as assert } from "node:assert";
import { logWrite, openDir, withDir } from "./_storage.ts";
import { crc32c } from "../src/lib/crc32c.ts";
import {
  type CheckpointHeader,
  DataDir,
  DataDirError,
  DiskFullError,
  type DiskIo,
} from "../src/storage/data_dir.ts";
import { checkpointFileName } from "../src/storage/checkpoint.ts";
import { AssertionError } from "../src/vr/assert.ts";
import { sha256 } from "../src/lib/sha256.ts";
import type { Effect } from "../src/vr/replica.ts";

const PREFIX = "vstamp_checkpoint_test_";

/** Chunk `index` of a test snapshot: `size` bytes that depend on the index and a seed. */
function chunk(index: number, size: number, seed = 0): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (index * 131 + i * 7 + seed) & 0xff;
  return bytes;
}

/** The chunks of a test snapshot, produced asynchronously as a state machine would. */
async function* snapshot(sizes: readonly number[], seed = 0): AsyncGenerator<Uint8Array> {
  for (const [index, size] of sizes.entries()) {
    await Promise.resolve();
    yield chunk(index, size, seed);
  }
}

function header(opNumber: number, text = `clients at ${opNumber}`): CheckpointHeader {
  return { opNumber, viewNumber: 3, metadata: new TextEncoder().encode(text) };
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const result: Uint8Array[] = [];
  for await (const piece of chunks) result.push(piece);
  return result;
}

async function webCryptoSha256(bytes: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
}

async function names(path: string, pattern: RegExp): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(path)) {
    if (pattern.test(entry.name)) found.push(entry.name);
  }
  return found.sort();
}

const checkpointNames = (path: string) => names(path, /^checkpoint\./);

/** A small checkpoint of `opNumber` with three chunks. */
async function writeSmall(dataDir: DataDir, opNumber: number, seed = opNumber) {
  return await dataDir.writeCheckpoint(header(opNumber), snapshot([100, 0, 2000], seed));
}

Deno.test("checkpoint write then load round-trips many chunks, the metadata and the checksums", async () => {
  await withDir(PREFIX, async (path) => {
    const { dataDir } = await openDir(path);
    assert.equal(await dataDir.loadCheckpoint(), undefined, "none yet");
    // Sizes from empty to 64 KiB, in an irregular pattern.
    const sizes = Array.from({ length: 300 }, (_, index) => (index * 7919) % 65_537);
    const written = await dataDir.writeCheckpoint(
      header(1234, "the client table"),
      snapshot(sizes),
    );
    assert.equal(written.opNumber, 1234);
    assert.equal(written.chunks.length, 300);
    assert.equal(written.bytes, sizes.reduce((a, b) => a + b, 0));
    assert.equal(written.path, `${path}/${checkpointFileName(1234)}`);
    await dataDir.close();

    const again = await openDir(path);
    const loaded = await again.dataDir.loadCheckpoint();
    assert.ok(loaded !== undefined);
    assert.equal(loaded.opNumber, 1234);
    assert.equal(loaded.viewNumber, 3);
    assert.equal(new TextDecoder().decode(loaded.metadata), "the client table");
    assert.equal(loaded.checksum, written.checksum);
    assert.deepEqual(loaded.chunks, written.chunks);
    const read = await collect(loaded.read());
    assert.equal(read.length, 300);
    for (const [index, bytes] of read.entries()) {
      const expected = chunk(index, sizes[index]!);
      assert.deepEqual(bytes, expected);
      // The checksums and hashes cover the chunk's bytes only, so any replica can compare them.
      assert.equal(loaded.chunks[index]!.checksum, crc32c(expected));
      assert.deepEqual(loaded.chunks[index]!.hash, await webCryptoSha256(expected));
      assert.equal(loaded.chunks[index]!.length, sizes[index]);
    }
    // From a chunk on, and one chunk alone.
    assert.deepEqual(await collect(loaded.read(298)), read.slice(298));
    assert.deepEqual(await loaded.readChunk(17), read[17]);
    await assert.rejects(loaded.readChunk(300), AssertionError);
    await again.dataDir.close();
  });
});

Deno.test("checkpoint writer: write, finish, abort, and misuse", async () => {
  await withDir(PREFIX, async (path) => {
    const { dataDir } = await openDir(path);
    const writer = await dataDir.beginCheckpoint(header(10));
    // Misuse throws at once, as `persist` does.
    assert.throws(() => dataDir.beginCheckpoint(header(11)), AssertionError, "one at a time");
    const pending = writer.write(chunk(0, 1000));
    await assert.rejects(writer.write(chunk(1, 10)), AssertionError, "a write in flight");
    await pending;
    await writer.write(chunk(1, 10));
    assert.deepEqual(await checkpointNames(path), [`${checkpointFileName(10)}.tmp`]);
    const info = await writer.finish();
    assert.equal(info.chunks.length, 2);
    await assert.rejects(writer.write(chunk(2, 1)), AssertionError, "after finish");
    assert.deepEqual(await checkpointNames(path), [checkpointFileName(10)]);

    // An aborted checkpoint leaves nothing behind, and the previous one stands.
    const aborted = await dataDir.beginCheckpoint(header(20));
    await aborted.write(chunk(0, 5000));
    await aborted.abort();
    await aborted.abort();
    await assert.rejects(aborted.finish(), AssertionError);
    assert.deepEqual(await checkpointNames(path), [checkpointFileName(10)]);
    assert.equal((await dataDir.loadCheckpoint())?.opNumber, 10);

    // A failing source aborts the checkpoint too.
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield chunk(0, 10);
      throw new Error("the snapshot failed");
    }
    await assert.rejects(dataDir.writeCheckpoint(header(30), failing()), /the snapshot failed/);
    assert.deepEqual(await checkpointNames(path), [checkpointFileName(10)]);

    // Closing aborts a checkpoint not yet finished.
    const open = await dataDir.beginCheckpoint(header(40));
    await open.write(chunk(0, 100));
    await dataDir.close();
    assert.deepEqual(await checkpointNames(path), [checkpointFileName(10)]);
    await assert.rejects(open.write(chunk(1, 1)), AssertionError);
  });
});

Deno.test("checkpoint: only the newest two are kept", async () => {
  await withDir(PREFIX, async (path) => {
    const { dataDir } = await openDir(path);
    for (const op of [5, 9, 14, 20]) await writeSmall(dataDir, op);
    assert.deepEqual(await checkpointNames(path), [checkpointFileName(14), checkpointFileName(20)]);
    // The same op-number again replaces that checkpoint.
    await dataDir.writeCheckpoint(header(20, "again"), snapshot([3], 99));
    assert.deepEqual(await checkpointNames(path), [checkpointFileName(14), checkpointFileName(20)]);
    const loaded = await dataDir.loadCheckpoint();
    assert.equal(new TextDecoder().decode(loaded?.metadata), "again");
    await dataDir.close();
  });
});

Deno.test("checkpoint cut short by a crash: the temporary file is reported, deleted and the previous one used", async () => {
  await withDir(PREFIX, async (path) => {
    const { dataDir } = await openDir(path);
    await writeSmall(dataDir, 100);
    // A crash in the middle of the next checkpoint: the temporary file as it was at that moment.
    const writer = await dataDir.beginCheckpoint(header(200));
    for (let index = 0; index < 5; index++) await writer.write(chunk(index, 10_000));
    const tmp = `${path}/${checkpointFileName(200)}.tmp`;
    const partial = await Deno.readFile(tmp);
    await writer.abort();
    await dataDir.close();
    await Deno.writeFile(tmp, partial.subarray(0, partial.length - 1234));
    // And a whole checkpoint that was never renamed into place.
    const whole = await openDir(`${path}-other`);
    const other = await whole.dataDir.writeCheckpoint(header(300), snapshot([10, 20]));
    await whole.dataDir.close();
    await Deno.copyFile(other.path, `${path}/${checkpointFileName(300)}.tmp`);

    const repairs: string[] = [];
    const reopened = await openDir(path, { onRepair: (line) => repairs.push(line) });
    assert.deepEqual(repairs.toSorted(), [
      `${tmp}: a checkpoint write that never finished (a crash during it), cut short at byte ${
        partial.length - 1234
      } and never put in place: deleted it; the checkpoints before it stand`,
      `${path}/${
        checkpointFileName(300)
      }.tmp: a checkpoint write that never finished (a crash during it), cut short at byte ${
        (await Deno.stat(other.path)).size
      } and never put in place: deleted it; the checkpoints before it stand`,
    ]);
    assert.deepEqual(await checkpointNames(path), [checkpointFileName(100)]);
    const loaded = await reopened.dataDir.loadCheckpoint();
    assert.equal(loaded?.opNumber, 100);
    assert.deepEqual(await collect(loaded!.read()), await collect(snapshot([100, 0, 2000], 100)));
    await reopened.dataDir.close();
    await Deno.remove(`${path}-other`, { recursive: true });
  });
});

Deno.test("checkpoint damaged after it was written: reported with its offset, deleted, the previous one used", async () => {
  /** Where to damage the newest checkpoint, and what the load says about it. */
  const damages: readonly {
    readonly name: string;
    readonly damage: (bytes: Uint8Array) => Uint8Array;
    readonly reason: RegExp;
  }[] = [
    {
      name: "a byte of a chunk",
      damage: (bytes) => (bytes[40 + 5 + 16 + 50]! ^= 0x04, bytes),
      reason: /chunk 0 has a bad checksum at byte 45:/,
    },
    {
      name: "a byte of the metadata",
      damage: (bytes) => (bytes[41]! ^= 0x01, bytes),
      reason: /has a bad checksum over its header, metadata and index at byte \d+:/,
    },
    {
      name: "a byte of the header",
      damage: (bytes) => (bytes[17]! ^= 0x80, bytes),
      reason: /has a header with a bad checksum at byte 0:/,
    },
    {
      name: "a byte of the index",
      damage: (bytes) => (bytes[bytes.length - 32 - 48 * 2 + 3]! ^= 0x10, bytes),
      reason: /has a bad checksum over its header, metadata and index at byte \d+:/,
    },
    {
      name: "the end cut off",
      damage: (bytes) => bytes.subarray(0, bytes.length - 10),
      reason: /lacks the footer magic \(cut short\?\) at byte \d+:/,
    },
  ];
  for (const { name, damage, reason } of damages) {
    await withDir(PREFIX, async (path) => {
      const { dataDir } = await openDir(path);
      await writeSmall(dataDir, 7);
      const newest = await dataDir.writeCheckpoint(
        { opNumber: 8, viewNumber: 4, metadata: new Uint8Array(5).fill(9) },
        snapshot([200, 300]),
      );
      await dataDir.close();
      await Deno.writeFile(newest.path, damage(await Deno.readFile(newest.path)));
      const repairs: string[] = [];
      const reopened = await openDir(path, { onRepair: (line) => repairs.push(line) });
      const loaded = await reopened.dataDir.loadCheckpoint();
      assert.equal(loaded?.opNumber, 7, name);
      assert.equal(repairs.length, 1, name);
      assert.ok(repairs[0]!.startsWith(`${newest.path}: `), repairs[0]);
      assert.match(repairs[0]!, reason, name);
      assert.match(repairs[0]!, /not a valid checkpoint .*deleted it, and tried the older one$/);
      assert.deepEqual(await checkpointNames(path), [checkpointFileName(7)], name);
      assert.deepEqual(await collect(loaded!.read()), await collect(snapshot([100, 0, 2000], 7)));
      await reopened.dataDir.close();
    });
  }
});

Deno.test("checkpoint: the only checkpoint damaged yields none", async () => {
  await withDir(PREFIX, async (path) => {
    const { dataDir } = await openDir(path);
    const only = await writeSmall(dataDir, 3);
    const bytes = await Deno.readFile(only.path);
    bytes[bytes.length - 40]! ^= 0xff;
    await Deno.writeFile(only.path, bytes);
    const repairs: string[] = [];
    assert.equal(await dataDir.loadCheckpoint(), undefined);
    await dataDir.close();
    const again = await openDir(path, { onRepair: (line) => repairs.push(line) });
    assert.equal(await again.dataDir.loadCheckpoint(), undefined);
    assert.deepEqual(repairs, [], "reported once, by the first load");
    await again.dataDir.close();
  });
});

Deno.test("checkpoint chunks are checked again as they are read", async () => {
  await withDir(PREFIX, async (path) => {
    const { dataDir } = await openDir(path);
    await dataDir.writeCheckpoint(header(5), snapshot([1000, 1000, 1000]));
    const loaded = await dataDir.loadCheckpoint();
    assert.ok(loaded !== undefined);
    const bytes = await Deno.readFile(loaded.path);
    const second = loaded.chunks[1]!;
    bytes[second.offset + 16 + 500]! ^= 0x01;
    await Deno.writeFile(loaded.path, bytes);
    const reader = loaded.read();
    assert.equal((await reader.next()).value?.length, 1000);
    await assert.rejects(
      reader.next(),
      (error: unknown) =>
        error instanceof DataDirError &&
        error.message ===
          `${loaded.path}: chunk 1 at byte ${second.offset} has a bad checksum: the checkpoint ` +
            "changed after the load verified it",
    );
    await dataDir.close();
  });
});

Deno.test("checkpoint write that finds the disk full is discarded and the previous one stands", async () => {
  await withDir(PREFIX, async (path) => {
    let full = false;
    const injectFault = (io: DiskIo) => {
      if (full && io.kind === "write" && io.path.endsWith(".tmp") && io.offset > 1000) {
        throw Object.assign(new Error("No space left on device (os error 28)"), { code: "ENOSPC" });
      }
    };
    const { dataDir } = await openDir(path, { injectFault });
    await writeSmall(dataDir, 1);
    full = true;
    await assert.rejects(
      dataDir.writeCheckpoint(header(2), snapshot([600, 600, 600])),
      (error: unknown) =>
        error instanceof DiskFullError &&
        error.file === `${path}/${checkpointFileName(2)}.tmp` &&
        /: writing chunk 2 at byte 1284: No space left on device/.test(error.message),
    );
    assert.deepEqual(await checkpointNames(path), [checkpointFileName(1)]);
    assert.equal((await dataDir.loadCheckpoint())?.opNumber, 1);
    // Once there is room, the next checkpoint goes in.
    full = false;
    await dataDir.writeCheckpoint(header(2), snapshot([600, 600, 600]));
    assert.equal((await dataDir.loadCheckpoint())?.opNumber, 2);
    await dataDir.close();
  });
});

Deno.test("truncateBefore needs a checkpoint that covers what it deletes", async () => {
  await withDir(PREFIX, async (path) => {
    const { dataDir } = await openDir(path);
    assert.throws(() => dataDir.truncateBefore(1), AssertionError, "no checkpoint yet");
    await writeSmall(dataDir, 50);
    assert.throws(() => dataDir.truncateBefore(52), AssertionError, "beyond the checkpoint");
    assert.deepEqual(await dataDir.truncateBefore(51), { deleted: [], logStartOpNumber: 1 });
    await dataDir.close();
    // A restart knows of no checkpoint until it loaded one.
    const again = await openDir(path);
    assert.throws(() => again.dataDir.truncateBefore(2), AssertionError);
    assert.equal((await again.dataDir.loadCheckpoint())?.opNumber, 50);
    await again.dataDir.truncateBefore(51);
    await again.dataDir.close();
  });
});

// ---------------------------------------------------------------- serving chunks, installs

/** An "install_checkpoint" effect of a checkpoint of `opNumber` with chunks of `sizes`. */
function installWrite(id: number, opNumber: number, sizes: readonly number[], seed = 0): Effect {
  const chunks = sizes.map((size, index) => chunk(index, size, seed));
  return {
    type: "install_checkpoint",
    id,
    checkpoint: {
      opNumber,
      viewNumber: 1,
      metadata: new TextEncoder().encode(`fetched ${opNumber}`),
      chunks: chunks.map((bytes) => ({ hash: sha256(bytes), length: bytes.length })),
    },
    chunks,
  };
}

Deno.test("openCheckpoint serves the chunks of the checkpoints kept, and forgets those deleted", async () => {
  await withDir(PREFIX, async (path) => {
    const { dataDir } = await openDir(path);
    assert.equal(await dataDir.openCheckpoint(10), undefined, "none yet");
    await writeSmall(dataDir, 10);
    await writeSmall(dataDir, 20);
    const ten = await dataDir.openCheckpoint(10);
    const twenty = await dataDir.openCheckpoint(20);
    assert.ok(ten !== undefined && twenty !== undefined);
    assert.equal(await dataDir.openCheckpoint(20), twenty, "one file held per checkpoint");
    assert.equal(await dataDir.openCheckpoint(15), undefined);
    assert.equal(twenty.opNumber, 20);
    assert.equal(twenty.path, `${path}/${checkpointFileName(20)}`);
    // Reads at once, in any order, each get their own chunk.
    const expected = await collect(snapshot([100, 0, 2000], 20));
    assert.deepEqual(
      await Promise.all([2, 0, 1, 2].map((index) => twenty.readChunk(index))),
      [2, 0, 1, 2].map((index) => expected[index]),
    );
    assert.deepEqual(await collect(twenty.read(1)), expected.slice(1));
    await assert.rejects(twenty.readChunk(3), AssertionError);
    // A third checkpoint deletes the first: it is no longer served, and its file is closed.
    await writeSmall(dataDir, 30);
    assert.equal(await dataDir.openCheckpoint(10), undefined);
    await assert.rejects(ten.readChunk(0), DataDirError);
    assert.equal(await dataDir.openCheckpoint(20), twenty);
    // A chunk damaged since is refused as it is read; the others still serve.
    const thirty = await dataDir.openCheckpoint(30);
    assert.ok(thirty !== undefined);
    const bytes = await Deno.readFile(thirty.path);
    bytes[thirty.chunks[2]!.offset + 16 + 7]! ^= 0x01;
    await Deno.writeFile(thirty.path, bytes);
    await assert.rejects(
      thirty.readChunk(2),
      (error: unknown) =>
        error instanceof DataDirError &&
        error.message ===
          `${thirty.path}: chunk 2 at byte ${thirty.chunks[2]!.offset} has a bad checksum: the ` +
            "checkpoint changed after the load verified it",
    );
    assert.deepEqual(await thirty.readChunk(0), chunk(0, 100, 30));
    await dataDir.close();

    // After a restart, the checkpoint loaded is served; the damaged one is gone.
    const again = await openDir(path);
    assert.equal(await again.dataDir.openCheckpoint(20), undefined, "not loaded yet");
    assert.equal((await again.dataDir.loadCheckpoint())?.opNumber, 20);
    assert.equal(await again.dataDir.openCheckpoint(30), undefined);
    assert.deepEqual(await (await again.dataDir.openCheckpoint(20))?.readChunk(2), expected[2]);
    // Deleted by another hand before it was opened: gone.
    await writeSmall(again.dataDir, 40);
    await Deno.remove(`${path}/${checkpointFileName(40)}`);
    assert.equal(await again.dataDir.openCheckpoint(40), undefined);
    await again.dataDir.close();
  });
});

Deno.test("an installed checkpoint is served, counts for truncateBefore, and waits for a write of the same op-number", async () => {
  await withDir(PREFIX, async (path) => {
    const { dataDir } = await openDir(path, { allowTruncatedLog: true });
    await dataDir.persist([logWrite(1, 1, [], 0)]);
    // The replica's own checkpoint of op 50 is being written when it installs one of op 50.
    const own = await dataDir.beginCheckpoint(header(50));
    await own.write(chunk(0, 10));
    const install = installWrite(2, 50, [500, 600], 7);
    let installed = false;
    const persisted = dataDir.persist([install]).then((id) => {
      installed = true;
      return id;
    });
    await own.write(chunk(1, 10));
    await own.finish();
    assert.equal(await persisted, 2);
    assert.ok(installed);
    // The install came last: its checkpoint is the one in place.
    const served = await dataDir.openCheckpoint(50);
    assert.ok(served !== undefined && install.type === "install_checkpoint");
    assert.deepEqual(await collect(served.read()), install.chunks);
    assert.equal(dataDir.checkpointOpNumber, 50);
    assert.deepEqual(await dataDir.truncateBefore(51), { deleted: [], logStartOpNumber: 51 });
    await dataDir.close();
  });
});

Deno.test("a staged checkpoint whose install the log never recorded is deleted at open, and reported", async () => {
  await withDir(PREFIX, async (path) => {
    const { dataDir } = await openDir(path);
    await dataDir.persist([logWrite(1, 1, [], 0)]);
    const older = await writeSmall(dataDir, 5);
    const fetched = await writeSmall(dataDir, 9);
    await dataDir.close();
    // As a crash after the staging and before the rebase record leaves it.
    const staged = `${path}/${checkpointFileName(9)}.install`;
    await Deno.rename(fetched.path, staged);
    const repairs: string[] = [];
    const again = await openDir(path, { onRepair: (line) => repairs.push(line) });
    assert.deepEqual(repairs, [
      `${staged}: a checkpoint fetched from a peer, staged, whose install the log never ` +
      "recorded (a crash came first): deleted it; the log and the checkpoints before it stand",
    ]);
    assert.deepEqual(await checkpointNames(path), [checkpointFileName(5)]);
    assert.equal((await again.dataDir.loadCheckpoint())?.checksum, older.checksum);
    await again.dataDir.close();
  });
});
