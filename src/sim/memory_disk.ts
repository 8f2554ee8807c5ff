/**
 * A replica's durable state in memory, for the simulator and the test harness: what a data
 * directory (`src/storage/data_dir.ts`) holds, with the same rules. The superblock; the log from
 * `logStartOpNumber` on (entries before it left with a checkpoint, §5.1); the commit-number stored
 * with the last log write; the newest two checkpoints, each with its chunks. A write that would
 * leave a hole in the log throws, as the data directory's assertions do.
 *
 * @module
 */
import type { StateMachine } from "../app/state_machine.ts";
import { sha256 } from "../lib/sha256.ts";
import { type Checkpoint, CheckpointRestorer } from "../vr/checkpoint.ts";
import type { Membership } from "../vr/membership.ts";
import type { LogEntry } from "../vr/message.ts";
import type { DurableState, Effect, Superblock } from "../vr/replica.ts";

/** How many checkpoints a disk keeps, as `CHECKPOINTS_KEPT` in `src/storage/checkpoint.ts`. */
const CHECKPOINTS_KEPT = 2;

/** The effects that are persists, applied in order. */
export type PersistEffect = Extract<
  Effect,
  { type: "persist_log" | "persist_superblock" | "install_checkpoint" | "persist_membership" }
>;

/** A checkpoint on the disk, with its chunks. */
export interface StoredCheckpoint {
  readonly checkpoint: Checkpoint;
  readonly chunks: readonly Uint8Array[];
}

export class MemoryDisk {
  superblock: Superblock = { epoch: 0, viewNumber: 0, lastNormalView: 0, recovering: false };
  /** §7 The membership last persisted; kept, like the superblock, when the log is lost. */
  membership: Membership | undefined;
  /** The op-number of `log[0]`. */
  logStartOpNumber = 1;
  log: LogEntry[] = [];
  commitNumber = 0;
  /**
   * False once a crash lost the log, until the restarted replica has durably marked itself as
   * recovering (from then on its superblock says whether the log can be trusted).
   */
  logIntact = true;
  /** Oldest first. */
  checkpoints: StoredCheckpoint[] = [];

  /** The op-number of the last entry on the disk. */
  get opNumber(): number {
    return this.logStartOpNumber - 1 + this.log.length;
  }

  /** Apply one persist effect; throws if it would leave a hole in the log. */
  apply(effect: PersistEffect): void {
    switch (effect.type) {
      case "persist_membership":
        this.membership = effect.membership;
        return;
      case "persist_superblock":
        this.superblock = effect.superblock;
        if (effect.superblock.recovering) this.logIntact = true;
        return;
      case "install_checkpoint":
        // As the data directory does: the checkpoint, and the log starting afresh after it (what
        // the disk held before is superseded), in one step.
        this.storeCheckpoint(effect.checkpoint, effect.chunks);
        this.log = [];
        this.logStartOpNumber = effect.checkpoint.opNumber + 1;
        this.commitNumber = effect.checkpoint.opNumber;
        return;
      case "persist_log": {
        const from = effect.fromOpNumber;
        if (from < this.logStartOpNumber) {
          // From below what the disk still holds (a truncation went ahead of this rewrite): the
          // log starts here, as a data directory's load takes it.
          this.log = [];
          this.logStartOpNumber = from;
        }
        if (from > this.opNumber + 1) {
          throw new Error(
            `log write from op ${from} leaves a hole: the disk holds ops ` +
              `${this.logStartOpNumber}..${this.opNumber}`,
          );
        }
        this.log.length = from - this.logStartOpNumber;
        for (const entry of effect.entries) this.log.push(entry);
        this.commitNumber = Math.max(
          Math.min(effect.commitNumber, this.opNumber),
          this.newestCheckpointOpNumber,
        );
        return;
      }
    }
  }

  get newestCheckpointOpNumber(): number {
    return this.checkpoints[this.checkpoints.length - 1]?.checkpoint.opNumber ?? 0;
  }

  /** Keep a checkpoint (replacing one of the same op-number); the newest two stay. */
  storeCheckpoint(checkpoint: Checkpoint, chunks: readonly Uint8Array[]): void {
    const kept = this.checkpoints.filter((stored) =>
      stored.checkpoint.opNumber !== checkpoint.opNumber
    );
    kept.push({ checkpoint, chunks });
    kept.sort((a, b) => a.checkpoint.opNumber - b.checkpoint.opNumber);
    this.checkpoints = kept.slice(-CHECKPOINTS_KEPT);
  }

  /**
   * Write a "checkpoint" effect at once (a disk that is always ready) and return what
   * `onCheckpointed` takes. The simulator, whose writes take time, reads it with `readCheckpoint`
   * and stores it later.
   */
  writeCheckpoint(effect: Extract<Effect, { type: "checkpoint" }>): Checkpoint {
    const written = readCheckpoint(effect);
    this.storeCheckpoint(written.checkpoint, written.chunks);
    return written.checkpoint;
  }

  /** Entries before `opNumber` leave the disk (a checkpoint must cover them). */
  truncateBefore(opNumber: number): void {
    if (opNumber - 1 > this.newestCheckpointOpNumber) {
      throw new Error(
        `truncation before op ${opNumber} without a checkpoint of op ${opNumber - 1}`,
      );
    }
    const drop = Math.min(opNumber - this.logStartOpNumber, this.log.length);
    if (drop <= 0) return;
    this.log.splice(0, drop);
    this.logStartOpNumber += drop;
  }

  /** The chunks `indexes` of the checkpoint of `opNumber`, or undefined if it is gone. */
  chunksOf(opNumber: number, indexes: readonly number[]): Uint8Array[] | undefined {
    const stored = this.checkpoints.find((held) => held.checkpoint.opNumber === opNumber);
    if (stored === undefined) return undefined;
    return indexes.map((index) => stored.chunks[index]!);
  }

  /** The disk lost everything but the superblock (§4.3 recovery follows). */
  loseLog(): void {
    this.log = [];
    this.logStartOpNumber = 1;
    this.commitNumber = 0;
    this.logIntact = false;
    this.checkpoints = [];
  }

  /**
   * What a restart loads: the newest checkpoint installed into `app` (fresh) and the log. A
   * checkpoint that fails to install throws: the disk's chunks are the ones written.
   */
  load(app: StateMachine): DurableState {
    const stored = this.checkpoints[this.checkpoints.length - 1];
    let checkpoint = undefined;
    if (stored !== undefined) {
      const restorer = new CheckpointRestorer(app, stored.checkpoint);
      for (const chunk of stored.chunks) restorer.chunk(chunk);
      checkpoint = restorer.finish();
      const op = stored.checkpoint.opNumber;
      if (this.opNumber < op && this.logStartOpNumber <= op + 1) {
        // Damage cut the log short below the checkpoint: it starts afresh after it, as the node
        // has its data directory do (`DataDir.rebaseOnto`).
        this.log = [];
        this.logStartOpNumber = op + 1;
      }
    }
    return {
      superblock: this.superblock,
      membership: this.membership,
      checkpoint,
      logStartOpNumber: this.logStartOpNumber,
      log: this.log.slice(),
      commitNumber: this.commitNumber,
      logTrusted: this.logIntact,
    };
  }
}

/**
 * Read a "checkpoint" effect whole, as a driver writing it would: its chunks, and the
 * `Checkpoint` to report with `onCheckpointed`.
 */
export function readCheckpoint(
  effect: Extract<Effect, { type: "checkpoint" }>,
): StoredCheckpoint {
  const chunks: Uint8Array[] = [];
  try {
    for (let chunk = effect.reader.next(); chunk !== undefined; chunk = effect.reader.next()) {
      chunks.push(chunk);
    }
  } finally {
    effect.reader.close();
  }
  return {
    checkpoint: {
      opNumber: effect.opNumber,
      viewNumber: effect.viewNumber,
      metadata: effect.metadata,
      chunks: chunks.map((chunk) => ({ hash: sha256(chunk), length: chunk.byteLength })),
    },
    chunks,
  };
}
