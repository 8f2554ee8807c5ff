/**
 * Every limit and timeout of the protocol core, named. Timeouts are in ticks: the driver decides
 * how long a tick is (the node driver uses `TICK_MS`; the simulator uses its own time unit).
 *
 * @module
 */

/**
 * The largest view-number a replica ever moves to; a message naming a later view is ignored. At one
 * view change every 10 ms this lasts about 89,000 years, and `viewNumber + 1` stays far from
 * 2^53, where floating point stops telling `v + 1` from `v` (a view change to "the next view"
 * would then stay in the same view). A message with view 2^53 - 1 once moved a group there, after
 * which every replica failed its assertion on the next view change, and again on every restart.
 */
export const VIEW_NUMBER_MAX = 2 ** 48;

/**
 * How many views beyond its own one message may move a replica. A message naming a view further
 * ahead (a StartViewChange, a DoViewChange, a Prepare or Commit of a newer view, the state of a
 * later view's primary) makes the replica change to the view this many after its own instead:
 * any later view is a safe target for a view change (§4.2). So a single forged message cannot
 * spend the view space (`VIEW_NUMBER_MAX`), yet a replica that raced ahead alone (cut off, it
 * moves on by its own view-change timeouts, about 2 views a second: 2^20 views take six days)
 * still pulls the others along, a step per message, and one that fell that far behind catches
 * up the same way. A recovering replica (§4.3) takes no such step: it ignores such messages.
 */
export const VIEW_NUMBER_STEP_MAX = 2 ** 20;

/**
 * The largest op-number, commit-number or anchor a message may name; a message naming a larger
 * one is ignored. At a million operations a second it lasts 140 years, and an op-number plus
 * any count of entries one message can carry stays a safe integer, so arithmetic on the numbers
 * of a message is exact.
 */
export const OP_NUMBER_MAX = 2 ** 52;

/**
 * How far ahead of the primary's clock, in microseconds (or of the client table's floor, if that
 * is later), a request-number may be: a day. Clients number their requests from their clock in
 * microseconds (`src/client/client.ts`), so an honest client is this far ahead only with a clock
 * a day fast. Without a bound one client could send 2^53 − 1: its own id would have no number
 * left, and once it was evicted the floor would pass every new client's numbers.
 */
export const REQUEST_NUMBER_AHEAD_MAX = 24 * 3600 * 1_000_000;

/** Limits that bound memory and message sizes. */
export interface Limits {
  /** The largest operation a client may submit, in bytes. */
  readonly operationBytesMax: number;
  /** At most this many ops in the log beyond the commit-number (the pipeline, §6.2). */
  readonly pipelineOpsMax: number;
  /** At most this many bytes of operations beyond the commit-number. */
  readonly pipelineBytesMax: number;
  /**
   * At most this many Prepares sent and not yet committed (§6.2): requests that arrive meanwhile
   * wait at the primary and go out together once the oldest commits. Every Prepare costs each
   * backup a wakeup, a read, a log write and a PrepareOk, whatever its size, so under load
   * batches should grow rather than Prepares multiply. A lone request still goes out at once.
   */
  readonly preparesInFlightMax: number;
  /**
   * At low load (a single-entry Prepare with no other Prepare in flight) a Prepare goes at once to
   * this many backups, never fewer than the f whose acknowledgements a commit needs; the other
   * backups, the spares, get their entries at the next tick, or at once as soon as the load rises.
   * A lone client's operation then wakes f backups instead of all 2f, which on a machine with few
   * cores is most of its latency. 1 (the default) means f; 2f means every backup, always.
   */
  readonly quietPrepareBackups: number;
  /** At most this many entries in one Prepare (a batch, §6.2). */
  readonly batchOpsMax: number;
  /** At most this many operation bytes in one Prepare. */
  readonly batchBytesMax: number;
  /**
   * At most this many entries in one state-transfer message (NewState, StartView, recovery).
   * At least `pipelineOpsMax`, so that a view's uncommitted suffix always fits in one (see
   * `transferBytesMax`).
   */
  readonly transferOpsMax: number;
  /**
   * At most this many operation bytes in one state-transfer message. At least
   * `pipelineBytesMax + operationBytesMax`, the most a log can hold beyond its commit-number
   * (the primary appends while it holds less than `pipelineBytesMax`; a backup's suffix is a part
   * of its primary's, and a new primary's the chosen one's, §4.2): a replica adopting a view
   * fetches committed entries in as many messages as it takes, but installs the view's
   * uncommitted suffix from one, so a suffix larger than a transfer would never install. A
   * DoViewChange carries the sender's suffix whole (it must fit in a frame: see
   * `FRAME_BODY_BYTES_MAX`).
   */
  readonly transferBytesMax: number;
  /** The client table keeps at most this many clients; the least recently served is evicted. */
  readonly clientsMax: number;
  /** At most this many reads (§6.3) wait at the primary for their round; more are dropped. */
  readonly readsPendingMax: number;
  /**
   * Committed log entries are packed into compact arenas (see `Log`) once this many have
   * accumulated since the last packing.
   */
  readonly logPackOps: number;
  /**
   * §5.1 A replica checkpoints (the state machine's snapshot and the client table, see
   * `src/vr/checkpoint.ts`) at every op-number that is a multiple of this, so that the replicas of
   * a group hold checkpoints of the same op-numbers, made of the same chunks: a replica fetching
   * one may take each chunk from any of them.
   */
  readonly checkpointOpsInterval: number;
  /**
   * And also once this many bytes of operations were committed since the last checkpoint began
   * (large operations fill the log before `checkpointOpsInterval` ops do).
   */
  readonly checkpointLogBytesMax: number;
  /**
   * The retained suffix: after a checkpoint of op c is durable, the log keeps the entries after
   * c minus this many, so that a backup that lags by less catches up from the log, not by
   * checkpoint. The entries before leave memory and disk.
   */
  readonly logRetainOps: number;
  /**
   * A replica skips a checkpoint (at a multiple of `checkpointOpsInterval`) until the operations
   * committed since its last one amount to at least the size of that one divided by this: a
   * large state is checkpointed less often, so that checkpoints write at most about this many
   * times the bytes the log took. The log stays bounded by `checkpointLogBytesMax`, which is never
   * skipped. A trade between throughput and restart time (measured with a million 64-byte keys,
   * 71 MB: a checkpoint every 100,000 SETs cost 60% of the throughput; with 2, 12%, but a restart
   * replayed 300,000 ops, 3.2 s; with 4, 28%, and 2.8 s).
   */
  readonly checkpointWriteAmplificationMax: number;
  /** The state machine's snapshot is written and sent in chunks of about this many bytes. */
  readonly checkpointChunkBytes: number;
  /** A replica fetching a checkpoint asks for at most this many chunks at a time. */
  readonly checkpointChunksInFlight: number;
}

/** The most chunks one GetCheckpointChunks may ask for. */
export const CHECKPOINT_CHUNKS_PER_REQUEST_MAX = 64;

export const LIMITS_DEFAULT: Limits = {
  operationBytesMax: 2 * 1024 * 1024,
  pipelineOpsMax: 1024,
  pipelineBytesMax: 8 * 1024 * 1024,
  preparesInFlightMax: 2,
  quietPrepareBackups: 1,
  batchOpsMax: 256,
  batchBytesMax: 2 * 1024 * 1024,
  transferOpsMax: 1024,
  // pipelineBytesMax + operationBytesMax, with room; a frame holds it (FRAME_BODY_BYTES_MAX).
  transferBytesMax: 12 * 1024 * 1024,
  clientsMax: 4096,
  readsPendingMax: 4096,
  logPackOps: 1024,
  checkpointOpsInterval: 100_000,
  checkpointLogBytesMax: 256 * 1024 * 1024,
  // Twice the interval: a backup that was away for up to about 100,000 ops (a few seconds under
  // full load) catches up from the log.
  logRetainOps: 200_000,
  // A chunk is encoded in one go between the replica's other work: 256 KiB takes about 3 ms for
  // 64-byte values (1 MiB took 13 ms, and showed in the p99 while a checkpoint was written).
  checkpointChunkBytes: 256 * 1024,
  checkpointChunksInFlight: 16,
  checkpointWriteAmplificationMax: 4,
};

/** Timeouts, in ticks. */
export interface Timing {
  /** The primary sends Commit when it has sent nothing to the backups for this long. */
  readonly heartbeatTicks: number;
  /**
   * A backup that a low-load Prepare goes to at once, and that has acknowledged nothing it was sent
   * for this long, trades places with a spare that acknowledged more (see `quietPrepareBackups`):
   * while one backup is down, operations do not wait for every catch-up of the spare.
   */
  readonly spareSwapTicks: number;
  /**
   * A spare gets the entries low-load Prepares left out this often: in one batch, so that it
   * wakes and writes once where it would have done so for every operation. At most
   * `heartbeatTicks`, so that a spare has the entries before an idle heartbeat commits them.
   * Every tick by default: at one client a batch of 5 ticks (about 150 entries) kept a core busy
   * for 1-1.5 ms at the spare, and those bursts were a large part of the p99 (README, benchmarks).
   */
  readonly spareCatchUpTicks: number;
  /** The primary re-sends Prepares to a backup that has not acknowledged them for this long. */
  readonly prepareRetryTicks: number;
  /** A backup that hears nothing from its primary for this long starts a view change (§4.2). */
  readonly primaryTimeoutTicks: number;
  /** Up to this many extra ticks, drawn per timeout, so that backups do not all fire at once. */
  readonly primaryTimeoutJitterTicks: number;
  /** StartViewChange / DoViewChange / Recovery / GetState are re-sent this often. */
  readonly retryTicks: number;
  /** A view change that has not completed after this long moves on to the next view (§4.2). */
  readonly viewChangeTimeoutTicks: number;
}

export const TIMING_DEFAULT: Timing = {
  heartbeatTicks: 5,
  spareSwapTicks: 2,
  spareCatchUpTicks: 1,
  prepareRetryTicks: 10,
  primaryTimeoutTicks: 25,
  primaryTimeoutJitterTicks: 15,
  retryTicks: 10,
  viewChangeTimeoutTicks: 50,
};

/** How long a tick is for the node driver, in milliseconds. */
export const TICK_MS = 10;
