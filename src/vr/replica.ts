/**
 * The pure Viewstamped Replication replica (Liskov & Cowling, *Viewstamped Replication
 * Revisited*, 2012). It never touches a clock, a socket, a file, a timer or a random source: the
 * driver feeds it messages (`onMessage`), time (`tick`) and persistence completions
 * (`onPersisted`), and drains what it must send, reply and persist (`drainEffects`). The same
 * code runs under the deterministic simulator and over TCP.
 *
 * Persistence contract with the driver:
 * - `persist_log` and `persist_superblock` effects are made durable in the order they were
 *   emitted; `onPersisted(id)` then tells the replica that every persist up to `id` is durable.
 * - Sends and replies may go out at once: the replica itself holds back whatever must wait for a
 *   superblock write (the view-number is durable before the replica acts in a new view), and it
 *   acknowledges log entries (PrepareOk, or counting itself as primary) only once they are durable.
 * - A driver without a disk calls `onPersisted` right away.
 *
 * @module
 */
import { beginSnapshotOf, type SnapshotReader, type StateMachine } from "../app/state_machine.ts";
import { bytesEqual } from "../lib/bytes.ts";
import { crc32c } from "../lib/crc32c.ts";
import { assert } from "./assert.ts";
import {
  type Checkpoint,
  CheckpointChunkReader,
  CheckpointRestorer,
  decodeCheckpointMetadata,
  encodeCheckpointMetadata,
  encodeClientTable,
  hashKey,
  type RestoredCheckpoint,
} from "./checkpoint.ts";
import { ClientTable } from "./client_table.ts";
import {
  CHECKPOINT_CHUNKS_PER_REQUEST_MAX,
  type Limits,
  LIMITS_DEFAULT,
  OP_NUMBER_MAX,
  REQUEST_NUMBER_AHEAD_MAX,
  type Timing,
  TIMING_DEFAULT,
  VIEW_NUMBER_MAX,
  VIEW_NUMBER_STEP_MAX,
} from "./constants.ts";
import { Log, sameEntry } from "./log.ts";
import {
  ADDRESS_BOOK_MAX,
  configurationProblem,
  decodeGroupOperation,
  encodeGroupOperation,
  GROUP_CLIENT_ID,
  type GroupOperation,
  initialMembership,
  memberAddresses,
  type Membership,
  membershipProblem,
  nextMembership,
  primaryOf,
  sameMembership,
} from "./membership.ts";
import {
  type CheckEpoch,
  type CheckpointChunk,
  type CheckpointManifest,
  type ClientReplyMessage,
  type Commit,
  describeMessage,
  type DoViewChange,
  type EpochStarted,
  type GetCheckpointChunks,
  type GetState,
  type LogEntry,
  type Message,
  type NewEpoch,
  type NewState,
  type Prepare,
  type PrepareOk,
  type Reconfiguration,
  type Recovery,
  type RecoveryResponse,
  type RejectReason,
  type ReplicaIndex,
  type ReplicaMessage,
  type Request,
  type RequestNumberQuery,
  type RequestStartView,
  type StartEpoch,
  type StartView,
  type StartViewChange,
} from "./message.ts";
import { SplitMix32 } from "./_random.ts";

/**
 * §7 adds `transitioning`: a replica that left the group (it serves the new members the state
 * until f'+1 of them started, then shuts down), or one that joins it (a new member fetching the
 * state up to the Reconfiguration, or a new process that waits to be told its group).
 */
export type Status = "normal" | "view_change" | "recovering" | "transitioning";

/** What a replica must keep durably: the view it promised and the last view it was normal in. */
export interface Superblock {
  /** §7 The epoch the views are of (a later durable membership resets them, see `Membership`). */
  readonly epoch: number;
  readonly viewNumber: number;
  readonly lastNormalView: number;
  /**
   * Set while the replica runs §4.3 recovery: the log on disk then lacks entries this replica
   * acknowledged before it lost its log, so a restart must recover again rather than trust it.
   */
  readonly recovering: boolean;
}

/** What the driver loaded from storage to restart a replica. */
export interface DurableState {
  readonly superblock: Superblock;
  /**
   * §7 The membership last persisted (`persist_membership`); undefined: epoch 0 of
   * `ReplicaOptions.addresses`.
   */
  readonly membership?: Membership | undefined;
  /**
   * The newest checkpoint that checked out (§5.1), already installed in the state machine by the
   * driver (`CheckpointRestorer`): the replica starts from its state and client table, and
   * replays only the log after it. Undefined: the state machine is empty, the log starts at op 1.
   */
  readonly checkpoint?: RestoredCheckpoint | undefined;
  /** The op-number of `log[0]` (entries before it left the disk after a checkpoint); 1 if absent. */
  readonly logStartOpNumber?: number | undefined;
  /** The log as persisted; ignored unless `logTrusted`. */
  readonly log: readonly LogEntry[];
  /** The commit-number stored with the last log write (a lower bound). */
  readonly commitNumber: number;
  /**
   * Whether every log entry this replica ever acknowledged is in `log`. When false (diskless
   * restart, §4.3), the replica runs the recovery protocol before it takes part again.
   */
  readonly logTrusted: boolean;
}

export type Effect =
  | { readonly type: "send"; readonly to: ReplicaIndex; readonly message: ReplicaMessage }
  | { readonly type: "reply"; readonly clientId: number; readonly message: ClientReplyMessage }
  | { readonly type: "persist_superblock"; readonly id: number; readonly superblock: Superblock }
  /**
   * §7 A persist, in order with the others: the group's membership changed (a Reconfiguration
   * executed, or this new member joined); a restart must use this one, not the configuration file.
   */
  | { readonly type: "persist_membership"; readonly id: number; readonly membership: Membership }
  /**
   * §7.1 This replica left the group, and f'+1 members of the new epoch have started: it has
   * nothing more to do. The driver may stop it (it answers only clients, with the new group).
   */
  | { readonly type: "shut_down"; readonly epoch: number }
  | {
    readonly type: "persist_log";
    readonly id: number;
    /** The durable log becomes: its entries before `fromOpNumber`, then `entries`. */
    readonly fromOpNumber: number;
    readonly entries: readonly LogEntry[];
    readonly commitNumber: number;
  }
  /**
   * §5.1 Write a checkpoint of op `opNumber`: `metadata`, then the chunks `reader` yields, in
   * order (read them promptly: the reader keeps what changes until it has read it; see
   * `SnapshotReader`). Once it is durable, call `onCheckpointed` with its chunks' hashes; if it
   * cannot be written, `onCheckpointFailed`. Not ordered with the persists: it may take as long as
   * it takes, while the replica goes on.
   */
  | {
    readonly type: "checkpoint";
    readonly opNumber: number;
    readonly viewNumber: number;
    readonly metadata: Uint8Array;
    readonly reader: SnapshotReader;
  }
  /**
   * §5.1 Entries before `beforeOpNumber` may leave the disk: a durable checkpoint covers them.
   * Whenever convenient; a driver may keep more.
   */
  | { readonly type: "truncate_log"; readonly beforeOpNumber: number }
  /**
   * §5.1 A persist, in order with the others: make the fetched checkpoint durable (its chunks, in
   * order); the log on disk then continues at `checkpoint.opNumber + 1` (the next `persist_log`
   * starts there, or earlier if the disk still reaches that far), whatever it held before.
   */
  | {
    readonly type: "install_checkpoint";
    readonly id: number;
    readonly checkpoint: Checkpoint;
    readonly chunks: readonly Uint8Array[];
  }
  /**
   * §5.1 Send `to` the chunks `indexes` of this replica's checkpoint of `opNumber`, one
   * `checkpoint_chunk` message each; nothing if the driver no longer holds that checkpoint.
   */
  | {
    readonly type: "send_checkpoint_chunks";
    readonly to: ReplicaIndex;
    readonly opNumber: number;
    readonly indexes: readonly number[];
  };

/** Bugs that tests plant on purpose to show the simulator catches them. Never set in production. */
export type PlantedBug =
  | "commit_with_too_few_prepare_oks"
  | "do_view_change_log_by_op_number"
  | "recovery_without_nonce_check"
  | "execute_retried_request_twice"
  // A re-sent request recognised by client-id and request-number only, not by its operation: a
  // restarted client that reuses a number gets another request's reply (the fix of issue 12).
  | "reply_by_number_only"
  // §6.3 reads answered without confirming that this replica is still the primary.
  | "read_without_round"
  // The state-transfer fix of seed 788778535, removed: every NewState asks for more.
  | "get_state_on_every_new_state"
  // §5.1: a checkpoint without the client table (a retried request executes twice after it).
  | "checkpoint_without_client_table"
  // §5.1: truncating committed entries above the checkpoint, which nothing else holds.
  | "truncate_above_checkpoint"
  // §5.1: installing a fetched checkpoint before every chunk arrived.
  | "install_incomplete_checkpoint"
  // §7: a new member starting the new epoch from the StartEpoch alone, before it holds the
  // Reconfiguration committed (before the state up to it).
  | "start_epoch_before_reconfiguration_committed"
  // §7: a replica that left shutting down at the first EpochStarted, not after f'+1.
  | "shut_down_before_quorum_started"
  // §7: the primary still taking requests after it logged a Reconfiguration (and the replicas
  // executing what follows it in the old epoch's log).
  | "accept_request_after_reconfiguration"
  // The two corrections of docs/vr-checklist.md, removed:
  | "recovery_forgets_persisted_view"
  | "adopt_newer_view_before_its_state";

/** How severe a log line is (the node adds "error" for its own). */
export type LogLevel = "debug" | "info" | "warn";

export interface ReplicaOptions {
  /** This replica's position in `addresses`: its member id in epoch 0. */
  readonly replicaIndex: ReplicaIndex;
  /**
   * The addresses of the group in epoch 0, one per replica (§7.4: told to clients that ask). A
   * durable membership (`DurableState.membership`) takes precedence.
   */
  readonly addresses: readonly string[];
  /**
   * §7 A new process that is to join a group: it waits for a StartEpoch naming `address` (its own),
   * fetches the state, and then serves as a member. `replicaIndex` and `addresses` are ignored.
   * Once it joined, its durable membership (`DurableState.membership`) names its group, and it
   * restarts as the member it is.
   */
  readonly standby?: { readonly address: string } | undefined;
  readonly app: StateMachine;
  /**
   * SHA-256 (32 bytes), which names checkpoint chunks (§5.1): the driver supplies it, as it does
   * the state machine, so that the core imports nothing that reaches the runtime
   * (`src/lib/sha256.ts` is the native one). It must be SHA-256: replicas compare the hashes.
   */
  readonly chunkHash: (bytes: Uint8Array) => Uint8Array;
  /** Seeds the jitter of timeouts; the driver picks it (the simulator from its seed). */
  readonly seed: number;
  /** Undefined for a brand-new replica of a brand-new group. */
  readonly durable?: DurableState | undefined;
  readonly limits?: Partial<Limits> | undefined;
  readonly timing?: Partial<Timing> | undefined;
  readonly plantedBug?: PlantedBug | undefined;
  /** Receives one line per notable event; `debug` lines explain every dropped message. */
  readonly log?: ((level: LogLevel, text: string) => void) | undefined;
  /** Whether `debug` lines are built at all (they cost time on the hot path). */
  readonly debug?: boolean | undefined;
  /**
   * The driver's clock when the replica starts, in milliseconds (later ones come with `tick`):
   * the primary bounds request-numbers by it (`REQUEST_NUMBER_AHEAD_MAX`) from the first
   * request on. 0 by default.
   */
  readonly clockMs?: number | undefined;
}

/** A durable write of the log still in flight: when done, the durable log matches up to `toOp`. */
interface PendingLogWrite {
  readonly id: number;
  toOp: number;
}

/** A read-only request waiting at the primary for its answer (§6.3; see `Commit`). */
interface PendingRead {
  readonly clientId: number;
  readonly requestNumber: number;
  readonly operation: Uint8Array;
  /** The op-number of the log when the read arrived: it is answered at this commit-number or later. */
  readonly readIndex: number;
  /** The first read round that began after the read arrived: it is answered once that is confirmed. */
  readonly round: number;
}

/** §5.1 A checkpoint this replica is fetching, chunk by chunk (`CheckpointManifest`). */
interface CheckpointFetch {
  readonly checkpoint: Checkpoint;
  readonly entryViewNumber: number;
  readonly entryTimestamp: number;
  readonly tableChunkCount: number;
  /** The chunks held so far, by index. */
  readonly held: (Uint8Array | undefined)[];
  /** Indexes by hash: equal chunks arrive once. */
  readonly byHash: Map<string, number[]>;
  missing: number;
  /** Who the chunks are asked from; changes when it stops answering. */
  from: ReplicaIndex;
  /** The indexes asked for and not arrived since the last retry. */
  readonly asked: Set<number>;
  /**
   * Every chunk below this index is held or was asked for since the last retry: a request looks
   * for missing chunks from here, so a fetch of n chunks costs O(n), not O(n²).
   */
  cursor: number;
  /** `#ticks` when a chunk last arrived (or the fetch began). */
  progressAtTick: number;
  /** How many replicas in a row were asked without a chunk arriving. */
  fruitlessAsks: number;
}

/** What a replica waits for while it adopts the log of `viewNumber` from that view's primary. */
interface SyncTarget {
  readonly viewNumber: number;
  /** State ending before this op-number is stale (it predates what started the sync). */
  readonly opNumberMin: number;
}

/** §7 A membership this replica learned of (StartEpoch, NewEpoch) and fetches the state for. */
interface Joining {
  readonly membership: Membership;
  /** Who to ask for the state: the members of the new epoch and of the one before. */
  readonly from: readonly ReplicaIndex[];
  /** The next one to ask, by position in `from`. */
  cursor: number;
  /** Asks in a row after which the commit-number had not moved (see `JOIN_STALLED_ROUNDS`). */
  stalled: number;
  /** The commit-number at the last ask. */
  commitAtAsk: number;
}

/**
 * §7 A join gives up after asking each of its sources this many times with no progress (the
 * commit-number did not move): the StartEpoch or NewEpoch that began it named something no source
 * holds (a later epoch than any, an op no log reaches). It then waits for the next one (the old
 * group re-sends StartEpoch until f'+1 new members answer), instead of waiting for ever.
 */
export const JOIN_STALLED_ROUNDS = 3;

export class Replica {
  readonly app: StateMachine;
  readonly limits: Limits;
  readonly timing: Timing;

  // §7 Who the group is.
  #membership: Membership;
  /** This replica's member id; -1 for a new process not yet told its group. */
  #self: ReplicaIndex;
  readonly #selfAddress: string;
  /** The current epoch's member ids (`#membership.members`). */
  #members: readonly ReplicaIndex[];
  #f: number;
  #memberAddresses: readonly string[];
  /** A new process waiting for a StartEpoch: it has no group yet. */
  #standby: boolean;
  #joining: Joining | undefined;
  #ticksSinceJoinAsk = 0;
  /** Members of the new epoch that answered EpochStarted, while this replica is leaving. */
  #epochStartedFrom = new Set<ReplicaIndex>();
  #ticksSinceStartEpoch = 0;
  #shutDown = false;
  /** Per sender: `#ticks` when it was last told of our epoch (NewEpoch), to answer once a retry. */
  #newEpochToldAt = new Map<ReplicaIndex, number>();
  /** `#ticks` when this replica last asked a replica of a newer epoch for the state. */
  #newerEpochAskedAt = -Infinity;
  /** The op-number of a group entry (Reconfiguration) in the log not executed yet, 0 if none. */
  #reconfigurationOpNumber = 0;
  #epochsStarted = 0;
  /** Clients whose requests waited for a Reconfiguration to commit: told the new group then. */
  #waitingForEpoch = new Set<number>();
  /** Members of this epoch a message of theirs came from: they know of the epoch. */
  #heardFromMembers = new Set<ReplicaIndex>();

  #viewNumber = 0;
  #lastNormalView = 0;
  #status: Status = "normal";
  readonly #log = new Log();
  #commitNumber = 0;
  readonly #clientTable: ClientTable;
  /** §4.4 The driver's clock, in milliseconds; only the primary reads it, to stamp entries. */
  #clockMs = 0;
  readonly #random: SplitMix32;
  readonly #plantedBug: PlantedBug | undefined;
  readonly #chunkHash: (bytes: Uint8Array) => Uint8Array;
  readonly #logSink: ((level: LogLevel, text: string) => void) | undefined;
  readonly #debug: boolean;

  #effects: Effect[] = [];
  /** Sends and replies waiting for the superblock write `#superblockPendingId` to be durable. */
  #held: Effect[] = [];
  #superblockPendingId = 0;
  #persistIdNext = 1;
  /** The durable log equals the in-memory log up to here. */
  #logDurableOpNumber = 0;
  /**
   * The first op-number whose entry (or absence, after a truncation) is not yet on its way to
   * disk; Infinity when the disk has been asked for everything.
   */
  #logDirtyFrom = Infinity;
  #pendingLogWrites: PendingLogWrite[] = [];
  /** Bytes of operations in the log after the commit-number. */
  #uncommittedBytes = 0;

  // Primary state (meaningful while normal and primary).
  /** Per replica: the op-number it acknowledged in this view, -1 when unknown. */
  #acked: number[];
  /** Entries up to here went out in a Prepare (or StartView) in this view. */
  #preparedOpNumber = 0;
  /** Per replica: entries up to here went to it in a Prepare (or StartView) in this view. */
  #sentTo: number[];
  /**
   * Per replica: whether it is a spare, which low-load Prepares reach only at the next tick (see
   * `Limits.quietPrepareBackups`). The others get every Prepare at once.
   */
  #spare: boolean[];
  #spareSwaps = 0;
  /** The last op-number of each Prepare of this view not yet known committed, oldest first. */
  #preparesInFlight: number[] = [];
  #ticksSinceSend = 0;
  /** Ticks since this replica started; the primary times its backups' silence with it. */
  #ticks = 0;
  /** Per replica: `#ticks` when the primary last heard a PrepareOk from it in this view. */
  #heardAtTick: number[];
  /**
   * Per replica: `#ticks` when its acknowledgements last advanced (or Prepares were last re-sent
   * to it). Prepares are re-sent only to a backup whose acknowledgements stalled, not to every
   * backup with Prepares in flight: under load some always are, and re-sending them on every
   * retry period would double the work in bursts.
   */
  #progressAtTick: number[];
  /** Reads waiting for their answer, in arrival order (so with non-decreasing rounds). */
  #pendingReads: PendingRead[] = [];
  /** The last read round begun in this view (0: none). */
  #readRound = 0;
  /** `#ticks` when the last read round began. */
  #readRoundAtTick = 0;
  /** Per replica: the latest read round its PrepareOks echoed in this view. */
  #readRoundAcked: number[];
  /**
   * Per client: the largest request-number of a read accepted in this view. Reads stay out of the
   * client table, so a query for a client's latest request-number (§4.5) adds these, or a client
   * restarted with the same id would reuse the number of a read still waiting here.
   */
  #readRequestNumbers = new Map<number, number>();

  // Backup state.
  #ticksSincePrimary = 0;
  /** Ticks the primary has been abdicating (`#abdicating`) without a break. */
  #ticksAbdicating = 0;
  #primaryTimeoutTicks: number;
  /** The op-number a PrepareOk was last sent for in this view. */
  #prepareOkSentOpNumber = 0;
  /** The latest read round the primary of this view sent; every PrepareOk echoes it. */
  #readRoundSeen = 0;
  #ticksSinceGetState = 0;

  // View change state (§4.2).
  #startViewChangeFrom = new Set<ReplicaIndex>();
  #doViewChanges = new Map<ReplicaIndex, DoViewChange>();
  #doViewChangeSent = false;
  #ticksInViewChange = 0;
  #ticksSinceViewChangeSend = 0;

  // Recovery state (§4.3).
  #recoveryNonce = 0;
  #recoveryResponses = new Map<ReplicaIndex, RecoveryResponse>();
  #ticksSinceRecoverySend = 0;

  /** Set while the replica adopts the log of a view from that view's primary (§5.2 corrected). */
  #syncTarget: SyncTarget | undefined;
  #ticksSinceRequestStartView = 0;
  /** `#ticks` when a message last moved this replica by a far step (see `#withinStep`). */
  #farStepAtTick = -Infinity;
  #requestStartViewSentFor = -1;

  // Checkpoints (§5.1).
  /** The newest durable checkpoint, and the one before it (a driver keeps both). */
  #checkpoint: Checkpoint | undefined;
  #previousCheckpoint: Checkpoint | undefined;
  /** The op-number of the checkpoint being written, if one is. */
  #checkpointWriting: number | undefined;
  /**
   * A checkpoint begun before the log up to it was durable: it goes to the driver once it is, so
   * that no checkpoint is on the disk above a log that does not reach it.
   */
  #checkpointHeld: Extract<Effect, { type: "checkpoint" }> | undefined;
  /** A fetched checkpoint installed, and the persist that makes it durable. */
  #installPending: { readonly id: number; readonly checkpoint: Checkpoint } | undefined;
  /** The disk was told it may drop the entries up to here. */
  #diskTruncatedThrough = 0;
  /** Bytes of operations committed since the last op-number a checkpoint was due at. */
  #bytesSinceCheckpoint = 0;
  /** Bytes of operations committed since this replica last began (or installed) a checkpoint. */
  #bytesSinceCheckpointBegun = 0;
  #fetch: CheckpointFetch | undefined;
  /** A fetch given up on (no replica holds its checkpoint any more): its chunks may serve again. */
  #fetchAbandoned: CheckpointFetch | undefined;
  #checkpointsTaken = 0;
  #logTruncations = 0;
  #checkpointsInstalled = 0;
  #chunksFetched = 0;
  #chunksReused = 0;
  /** Counters for metrics (`protocolStats`): plain numbers, no clock. */
  #viewChanges = 0;
  #recoveries = 0;
  #stateTransfers = 0;

  constructor(options: ReplicaOptions) {
    const standby = options.standby;
    const durableMembership = options.durable?.membership;
    let membership: Membership;
    if (durableMembership !== undefined) {
      const problem = membershipProblem(durableMembership);
      assert(problem === undefined, () => `durable membership: ${problem}`);
      membership = durableMembership;
    } else if (standby !== undefined) {
      // A placeholder until a StartEpoch names the group: this replica takes no part meanwhile.
      membership = initialMembership([standby.address]);
    } else {
      const count = options.addresses.length;
      assert(
        count >= 1 && count % 2 === 1,
        () => `a group needs an odd number of replicas, got ${count}`,
      );
      assert(
        Number.isInteger(options.replicaIndex) && options.replicaIndex >= 0 &&
          options.replicaIndex < count,
        () => `replica index ${options.replicaIndex} out of range`,
      );
      membership = initialMembership(options.addresses);
    }
    this.#selfAddress = standby?.address ?? options.addresses[options.replicaIndex]!;
    this.#standby = standby !== undefined && durableMembership === undefined;
    this.#membership = membership;
    this.#self = this.#standby ? -1 : membership.addresses.indexOf(this.#selfAddress);
    assert(
      this.#standby || this.#self >= 0,
      () => `${this.#selfAddress} is not in the group's address book`,
    );
    this.#members = membership.members;
    this.#f = (this.#members.length - 1) / 2;
    this.#memberAddresses = memberAddresses(membership);
    this.app = options.app;
    this.limits = { ...LIMITS_DEFAULT, ...options.limits };
    this.timing = { ...TIMING_DEFAULT, ...options.timing };
    for (const [name, value] of Object.entries(this.limits)) {
      assert(
        Number.isSafeInteger(value) && value >= 1,
        () => `limit ${name} must be a positive integer, got ${value}`,
      );
    }
    const limits = this.limits;
    assert(
      limits.transferOpsMax >= limits.pipelineOpsMax &&
        limits.transferBytesMax >= limits.pipelineBytesMax + limits.operationBytesMax,
      () =>
        `limits transferOpsMax (${limits.transferOpsMax}) and transferBytesMax ` +
        `(${limits.transferBytesMax}) must be at least pipelineOpsMax (${limits.pipelineOpsMax}) ` +
        `and pipelineBytesMax + operationBytesMax (${
          limits.pipelineBytesMax + limits.operationBytesMax
        }): a view's uncommitted suffix that does not fit in one state transfer never installs`,
    );
    assert(
      this.timing.spareCatchUpTicks <= this.timing.heartbeatTicks,
      () =>
        `timing spareCatchUpTicks (${this.timing.spareCatchUpTicks}) must not exceed ` +
        `heartbeatTicks (${this.timing.heartbeatTicks}): an idle heartbeat would reach a spare ` +
        `before the entries it commits, and the spare would ask for them (GetState) although ` +
        `its catch-up is on the way`,
    );
    this.#clientTable = new ClientTable(this.limits.clientsMax);
    this.#clockMs = options.clockMs ?? 0;
    this.#random = new SplitMix32(options.seed);
    this.#plantedBug = options.plantedBug;
    this.#chunkHash = options.chunkHash;
    this.#logSink = options.log;
    this.#debug = options.debug === true && options.log !== undefined;
    const ids = membership.addresses.length;
    this.#acked = new Array<number>(ids).fill(-1);
    this.#heardAtTick = new Array<number>(ids).fill(0);
    this.#progressAtTick = new Array<number>(ids).fill(0);
    this.#readRoundAcked = new Array<number>(ids).fill(0);
    this.#sentTo = new Array<number>(ids).fill(0);
    this.#spare = new Array<boolean>(ids).fill(false);
    this.#primaryTimeoutTicks = this.#drawPrimaryTimeout();
    if (this.#standby) {
      this.#status = "transitioning";
      this.#log_("info", `${this.#selfAddress}: waiting to be told its group (StartEpoch)`);
    }

    const durable = this.#standby ? undefined : options.durable;
    if (durable !== undefined) {
      this.#viewNumber = durable.superblock.viewNumber;
      this.#lastNormalView = durable.superblock.lastNormalView;
      if (durable.superblock.epoch < membership.epoch) {
        // The membership of a later epoch is durable, its first superblock not yet: this replica
        // promised nothing in that epoch.
        this.#viewNumber = membership.startViewNumber;
        this.#lastNormalView = membership.startViewNumber;
      }
      assert(this.#lastNormalView <= this.#viewNumber, "superblock: last normal view > view");
      if (this.#viewNumber > VIEW_NUMBER_MAX) {
        // Written before the bound existed: the replica can serve, but never change views again.
        this.#log_("warn", `superblock view ${this.#viewNumber} is beyond VIEW_NUMBER_MAX`);
      }
      if (durable.checkpoint !== undefined) this.#adoptRestoredCheckpoint(durable.checkpoint);
      // The log must continue the checkpoint (or start at op 1 without one): a gap means entries
      // this replica acknowledged are gone.
      const logStart = durable.logStartOpNumber ?? 1;
      const continues = logStart <= this.#log.baseOpNumber + 1;
      if (!continues) {
        this.#log_(
          "warn",
          `the log on disk starts at op ${logStart}, after the checkpoint of op ` +
            `${this.#log.baseOpNumber}: recovering (§4.3)`,
        );
      }
      if (durable.logTrusted && !durable.superblock.recovering && continues) {
        this.#restartFromDisk(durable);
      } else {
        if (this.#plantedBug === "recovery_forgets_persisted_view") {
          // The paper's diskless recovery: nothing survives, not even the view.
          this.#viewNumber = 0;
          this.#lastNormalView = 0;
        }
        if (this.#memberPosition(this.#self) < 0) this.#enterLeaving();
        else this.#startRecovery();
      }
    }
    if (
      !this.#standby && this.#memberPosition(this.#self) < 0 && this.#status !== "transitioning"
    ) {
      this.#enterLeaving(); // It left the group before it stopped: serve the new members.
    }
    this.#chooseSpares(); // For the view this replica starts in: view 0, or the view on disk.
  }

  // ------------------------------------------------------------------ read-only state

  /** This replica's member id (its index in epoch 0); -1 for a new process not told its group. */
  get replicaIndex(): ReplicaIndex {
    return this.#self;
  }
  /** This replica's own address. */
  get address(): string {
    return this.#selfAddress;
  }
  /** How many replicas the current epoch has. */
  get replicaCount(): number {
    return this.#members.length;
  }
  /** The number of failures tolerated: the group has 2f+1 replicas. */
  get f(): number {
    return this.#f;
  }
  /** The addresses of the current epoch's members, in order. */
  get addresses(): readonly string[] {
    return this.#memberAddresses;
  }
  /** §7 The group: epoch, members, address book. */
  get membership(): Membership {
    return this.#membership;
  }
  get epoch(): number {
    return this.#membership.epoch;
  }
  /** The address of member `id`, if this replica knows it. */
  addressOf(id: ReplicaIndex): string | undefined {
    // A new process's own membership is a placeholder until it joins: the group it joins names
    // the ids.
    if (this.#standby) return this.#joining?.membership.addresses[id];
    return this.#membership.addresses[id] ?? this.#joining?.membership.addresses[id];
  }
  /** §7 Whether this replica is a member of its current epoch (false: it left, or it joins). */
  get isMember(): boolean {
    return !this.#standby && this.#memberPosition(this.#self) >= 0 &&
      this.#status !== "transitioning";
  }
  /** §7.1 Whether this replica left the group and f'+1 new members started: it may stop. */
  get shutDown(): boolean {
    return this.#shutDown;
  }
  /** §7 How many epochs this replica started as a member (a counter for the simulator). */
  get epochsStarted(): number {
    return this.#epochsStarted;
  }

  get viewNumber(): number {
    return this.#viewNumber;
  }
  get lastNormalView(): number {
    return this.#lastNormalView;
  }
  get status(): Status {
    return this.#status;
  }
  get opNumber(): number {
    return this.#log.opNumber;
  }
  get commitNumber(): number {
    return this.#commitNumber;
  }
  get logDurableOpNumber(): number {
    return this.#logDurableOpNumber;
  }
  /** The primary of the current view: member `(viewNumber - first view) mod N` (§4, §7). */
  get primaryIndex(): ReplicaIndex {
    return this.#primaryOf(this.#viewNumber);
  }
  get isPrimary(): boolean {
    return this.primaryIndex === this.replicaIndex;
  }
  /** The entry at `opNumber`, if this replica holds it. */
  logEntry(opNumber: number): LogEntry | undefined {
    return this.#log.entry(opNumber);
  }
  /** How many times, as primary, this replica swapped a stalled backup for a spare. */
  get spareSwaps(): number {
    return this.#spareSwaps;
  }
  /** §5.1 The log holds no entry at or below this op-number (a checkpoint covers them). */
  get logBaseOpNumber(): number {
    return this.#log.baseOpNumber;
  }
  /** §5.1 The op-number of the newest durable checkpoint, 0 if none. */
  get checkpointOpNumber(): number {
    return this.#checkpoint?.opNumber ?? 0;
  }
  /** §5.1 The op-number of a fetched checkpoint installed but not yet durable, 0 if none. */
  get installingCheckpointOpNumber(): number {
    return this.#installPending?.checkpoint.opNumber ?? 0;
  }
  /** §5.1 Counters: checkpoints begun, log truncations, checkpoints fetched and installed. */
  get checkpointStats(): {
    readonly taken: number;
    readonly truncations: number;
    readonly installed: number;
    readonly chunksFetched: number;
    readonly chunksReused: number;
  } {
    return {
      taken: this.#checkpointsTaken,
      truncations: this.#logTruncations,
      installed: this.#checkpointsInstalled,
      chunksFetched: this.#chunksFetched,
      chunksReused: this.#chunksReused,
    };
  }
  /**
   * Counters for metrics: view changes this replica began or joined (§4.2), recoveries it began
   * (§4.3), and state transfers (§5.2) that brought it news (a NewState that moved its op- or
   * commit-number; a long catch-up takes several).
   */
  get protocolStats(): {
    readonly viewChanges: number;
    readonly recoveries: number;
    readonly stateTransfers: number;
  } {
    return {
      viewChanges: this.#viewChanges,
      recoveries: this.#recoveries,
      stateTransfers: this.#stateTransfers,
    };
  }
  /** §4.5 Clients in the client table. */
  get clientTableSize(): number {
    return this.#clientTable.size;
  }
  /** The client table's executed records, as text (`ClientTable.digest`), for checks. */
  clientTableDigest(): string {
    return this.#clientTable.digest();
  }
  /** Whether this replica is fetching a checkpoint (§5.1). */
  get fetchingCheckpoint(): boolean {
    return this.#fetch !== undefined;
  }
  /** The largest request-number of `clientId` known here (§4.5). */
  latestRequestNumber(clientId: number): number {
    return this.#clientTable.latestRequestNumber(clientId);
  }

  // ------------------------------------------------------------------ driver interface

  /**
   * Hand one message to the replica. The transport has validated its shape and the consistency of
   * its own fields (`src/transport/codec.ts`); nothing more. Whatever a message says about other
   * replicas or about this one's state may be wrong (a bug elsewhere, or a hostile peer), so no
   * message may drive the core into an assertion: each handler checks the message against what
   * this replica knows, and drops it, with a reason, when they disagree.
   */
  onMessage(message: Message): void {
    switch (message.type) {
      case "request":
        if (this.#redirectClient(message.clientId)) break;
        this.#onRequest(message);
        break;
      case "request_number_query":
        if (this.#redirectClient(message.clientId)) break;
        this.#onRequestNumberQuery(message);
        break;
      case "locate":
        if (this.#standby) return this.#ignore("locate: not told its group yet");
        this.#replyConfiguration(message.clientId, 0);
        break;
      case "reconfiguration":
        if (this.#redirectClient(message.clientId, message.requestNumber)) break;
        this.#onReconfiguration(message);
        break;
      case "check_epoch":
        if (this.#redirectClient(message.clientId, message.requestNumber)) break;
        this.#onCheckEpoch(message);
        break;
      case "reply":
      case "not_primary":
      case "request_number_reply":
      case "configuration":
      case "rejected":
        this.#ignore(`${message.type}: a message for clients`);
        break;
      default:
        this.#onReplicaMessage(message);
    }
    this.#checkInvariants();
  }

  #onReplicaMessage(message: ReplicaMessage): void {
    const implausible = this.#implausible(message);
    if (implausible !== undefined) {
      this.#log_("warn", `${describeMessage(message)} from ${message.replica}: ${implausible}`);
      return;
    }
    if (this.#shutDown) return this.#ignore(`${message.type}: shut down`);
    if (!this.#sameEpochMember(message)) return;
    switch (message.type) {
      case "prepare":
        this.#onPrepare(message);
        break;
      case "prepare_ok":
        this.#onPrepareOk(message);
        break;
      case "commit":
        this.#onCommit(message);
        break;
      case "start_view_change":
        this.#onStartViewChange(message);
        break;
      case "do_view_change":
        this.#onDoViewChange(message);
        break;
      case "start_view":
        this.#onStartView(message);
        break;
      case "request_start_view":
        this.#onRequestStartView(message);
        break;
      case "recovery":
        this.#onRecovery(message);
        break;
      case "recovery_response":
        this.#onRecoveryResponse(message);
        break;
      case "get_state":
        this.#onGetState(message);
        break;
      case "new_state": {
        const op = this.opNumber, commit = this.#commitNumber;
        this.#onNewState(message);
        if (this.opNumber > op || this.#commitNumber > commit) this.#stateTransfers++;
        break;
      }
      case "checkpoint_manifest":
        this.#onCheckpointManifest(message);
        break;
      case "get_checkpoint_chunks":
        this.#onGetCheckpointChunks(message);
        break;
      case "checkpoint_chunk":
        this.#onCheckpointChunk(message);
        break;
      case "start_epoch":
      case "new_epoch":
        this.#onEpochNews(message);
        break;
      case "epoch_started":
        this.#onEpochStarted(message);
        break;
      default: {
        const never: never = message;
        throw new Error(`unknown message ${JSON.stringify(never)}`);
      }
    }
  }

  /**
   * Why a replica message cannot be genuine whatever this replica's state, or undefined. Replicas
   * never send to themselves (`#send`, `#broadcast`), so a message "from" this replica was forged
   * or comes from a second process configured with this replica's index. Numbers beyond
   * `VIEW_NUMBER_MAX` and `OP_NUMBER_MAX` are never reached, and arithmetic on them would not be
   * exact.
   */
  #implausible(message: ReplicaMessage): string | undefined {
    const sender = message.replica;
    if (!(Number.isInteger(sender) && sender >= 0 && sender < ADDRESS_BOOK_MAX)) {
      return "no such replica";
    }
    if (sender === this.#self) {
      return "claims to come from this replica (is another process using its index?)";
    }
    let viewNumber = 0;
    let opNumber = 0;
    switch (message.type) {
      case "prepare": {
        viewNumber = message.viewNumber;
        const last = message.entries[message.entries.length - 1]?.opNumber ?? 0;
        opNumber = Math.max(message.commitNumber, last);
        break;
      }
      case "prepare_ok":
      case "get_state":
        viewNumber = message.viewNumber;
        opNumber = message.opNumber;
        break;
      case "commit":
      case "request_start_view":
        viewNumber = message.viewNumber;
        opNumber = message.commitNumber;
        break;
      case "start_view_change":
        viewNumber = message.viewNumber;
        break;
      case "do_view_change":
        viewNumber = message.viewNumber;
        opNumber = Math.max(message.opNumber, message.commitNumber);
        break;
      case "recovery":
        opNumber = message.commitNumber;
        break;
      case "checkpoint_manifest":
        viewNumber = message.viewNumber;
        opNumber = message.opNumber;
        break;
      case "get_checkpoint_chunks":
      case "checkpoint_chunk":
        opNumber = message.opNumber;
        break;
      case "start_epoch":
      case "new_epoch":
        viewNumber = message.startViewNumber;
        opNumber = message.opNumber;
        break;
      case "epoch_started":
        break;
      case "start_view":
      case "recovery_response":
      case "new_state": {
        viewNumber = message.viewNumber;
        const last = message.entries[message.entries.length - 1]?.opNumber ?? 0;
        opNumber = Math.max(message.opNumber, message.commitNumber, message.anchorOpNumber, last);
        break;
      }
    }
    if (viewNumber > VIEW_NUMBER_MAX) return `view beyond VIEW_NUMBER_MAX (${VIEW_NUMBER_MAX})`;
    if (opNumber > OP_NUMBER_MAX) return `op-number beyond OP_NUMBER_MAX (${OP_NUMBER_MAX})`;
    return undefined;
  }

  /** Advance time by one tick; `nowMs` is the driver's clock (§4.4 timestamps). */
  tick(nowMs: number): void {
    if (nowMs > this.#clockMs) this.#clockMs = nowMs;
    this.#ticks++;
    this.#ticksSinceRequestStartView++;
    switch (this.#status) {
      case "normal":
        if (this.isPrimary) this.#tickPrimary();
        else this.#tickBackup();
        break;
      case "view_change":
        this.#tickViewChange();
        break;
      case "recovering":
        this.#tickRecovering();
        break;
      case "transitioning":
        this.#tickTransitioning();
        break;
    }
    if (this.#joining !== undefined) this.#tickJoining();
    if (this.#fetch !== undefined) this.#tickFetch();
    if (
      this.#membership.epoch > 0 && (this.#status === "normal" || this.#status === "view_change") &&
      this.#ticks % (this.timing.retryTicks * 4) === 0
    ) {
      this.#remindEpoch();
    }
    if ((this.#fetchAbandoned?.checkpoint.opNumber ?? Infinity) <= this.#commitNumber) {
      this.#fetchAbandoned = undefined; // Its chunks could only serve an older checkpoint.
    }
    this.#checkInvariants();
  }

  /**
   * §5.1 The checkpoint of `checkpoint.opNumber` (begun with the "checkpoint" effect) is durable:
   * the log before it, less the retained suffix, may go.
   */
  onCheckpointed(checkpoint: Checkpoint): void {
    if (checkpoint.opNumber !== this.#checkpointWriting) {
      this.#log_("warn", `checkpoint of op ${checkpoint.opNumber} reported, but not being written`);
      return;
    }
    this.#checkpointWriting = undefined;
    const previous = this.#checkpoint?.opNumber;
    this.#setCheckpoint(checkpoint);
    // The retained suffix, and at least back to the previous checkpoint: a replica that fetched
    // that one can still get the log after it.
    let base = Math.min(checkpoint.opNumber - this.limits.logRetainOps, previous ?? Infinity);
    if (this.#plantedBug === "truncate_above_checkpoint") {
      base = Math.min(this.#commitNumber, checkpoint.opNumber + this.limits.logRetainOps);
    }
    if (base > this.#log.baseOpNumber) {
      this.#log.dropThrough(base);
      this.#logTruncations++;
      // Prepares start after the base (a backup that lacks what is before gets a checkpoint).
      if (this.#preparedOpNumber < base) this.#preparedOpNumber = base;
      // The disk drops only what it holds durably: a rewrite still on its way may start lower.
      const durable = Math.min(base, this.#logDurableOpNumber);
      if (durable > this.#diskTruncatedThrough) {
        this.#diskTruncatedThrough = durable;
        this.#effects.push({ type: "truncate_log", beforeOpNumber: durable + 1 });
      }
    }
    this.#checkInvariants();
  }

  /** §5.1 The checkpoint of `opNumber` could not be written: a later one will be tried. */
  onCheckpointFailed(opNumber: number): void {
    if (opNumber !== this.#checkpointWriting) return;
    this.#checkpointWriting = undefined;
    this.#log_("warn", `checkpoint of op ${opNumber} failed: the log keeps its entries`);
  }

  /** Every persist effect up to `id` is durable. */
  onPersisted(id: number): void {
    while (this.#pendingLogWrites.length > 0 && this.#pendingLogWrites[0]!.id <= id) {
      const write = this.#pendingLogWrites.shift()!;
      if (write.toOp > this.#logDurableOpNumber) this.#logDurableOpNumber = write.toOp;
    }
    this.#releaseHeldCheckpoint();
    const installed = this.#installPending;
    if (installed !== undefined && id >= installed.id) {
      this.#installPending = undefined;
      this.#setCheckpoint(installed.checkpoint);
    }
    if (this.#superblockPendingId !== 0 && id >= this.#superblockPendingId) {
      this.#superblockPendingId = 0;
      for (const effect of this.#held) this.#effects.push(effect);
      this.#held = [];
    }
    if (this.#status === "normal") {
      if (this.isPrimary) this.#commitReady();
      else this.#sendPrepareOkIfDurable();
    }
    this.#checkInvariants();
  }

  /** Everything the replica wants done since the last call, in order. */
  drainEffects(): Effect[] {
    this.#flush();
    const effects = this.#effects;
    this.#effects = [];
    return effects;
  }

  // ------------------------------------------------------------------ §4.1 normal operation

  #onRequest(request: Request): void {
    if (this.#status !== "normal") return this.#ignore(`request: status ${this.#status}`);
    if (!this.isPrimary) {
      this.#emitReply(request.clientId, {
        type: "not_primary",
        clientId: request.clientId,
        requestNumber: request.requestNumber,
        viewNumber: this.#viewNumber,
        replica: this.#self,
      });
      return;
    }
    if (request.operation.length > this.limits.operationBytesMax) {
      return this.#reject(request, "too_large", request.requestNumber);
    }
    if (request.clientId === GROUP_CLIENT_ID) {
      return this.#ignore("request: client-id 0 is the group's own (§7)");
    }
    if (
      this.#reconfigurationOpNumber > 0 &&
      this.#plantedBug !== "accept_request_after_reconfiguration"
    ) {
      // §7.1 The primary takes no request once it logged a Reconfiguration: the new group starts
      // from the state at the Reconfiguration. The client is told the new configuration as soon
      // as it is in force (`#enterEpoch`), and sends its request there.
      if (this.#waitingForEpoch.size < this.limits.clientsMax) {
        this.#waitingForEpoch.add(request.clientId);
      }
      return this.#ignore(`request c=${request.clientId}: the group is reconfiguring`);
    }
    const table = this.#clientTable;
    const executed = table.executed(request.clientId);
    if (executed !== undefined && request.requestNumber <= executed.requestNumber) {
      if (request.requestNumber < executed.requestNumber) {
        // A late duplicate of an old request (its client has moved on and ignores this), or
        // another client using this id with higher numbers.
        return this.#reject(request, "stale", executed.requestNumber);
      }
      if (!this.#isLoggedAs(executed.opNumber, request)) {
        // Another request under the same number (a client restarted with this id reused it):
        // the stored reply is not its answer, and it was not executed.
        return this.#reject(request, "conflict", request.requestNumber);
      }
      // §4.1: the latest request was executed: re-send its stored reply.
      this.#emitReply(request.clientId, {
        type: "reply",
        viewNumber: this.#viewNumber,
        clientId: request.clientId,
        requestNumber: request.requestNumber,
        opNumber: executed.opNumber,
        // The request's own operation: the same as the logged one (checked above).
        operationChecksum: crc32c(request.operation),
        result: executed.result,
      });
      return;
    }
    const pending = table.pending(request.clientId);
    if (
      pending !== undefined && request.requestNumber <= pending.requestNumber &&
      this.#plantedBug !== "execute_retried_request_twice"
    ) {
      // Not a conflict even if the operation differs: the logged request may yet be lost in a
      // view change, and a copy of this one still on its way would then execute under this
      // number; renumbered, it would execute twice. Once the logged one executes, a re-sent
      // request is told `conflict` (above).
      return this.#ignore(`request c=${request.clientId} s=${request.requestNumber}: in progress`);
    }
    const ahead = Math.max(this.#clockMs * 1000, table.requestNumberFloor) +
      REQUEST_NUMBER_AHEAD_MAX;
    if (request.requestNumber > ahead) {
      // Clients number from their clock in microseconds. A number far beyond the primary's clock
      // would, once its client is evicted, raise the floor past every new client's numbers, and
      // near 2^53 it would leave the client no number to continue with.
      return this.#reject(request, "ahead", ahead);
    }
    if (
      executed === undefined && pending === undefined &&
      request.requestNumber <= table.requestNumberFloor
    ) {
      // The table may have evicted this client after executing this very request: executing it
      // again would break exactly-once (ClientTable).
      return this.#reject(request, "evicted", table.requestNumberFloor);
    }
    if (this.app.query !== undefined && this.app.readOnly?.(request.operation) === true) {
      return this.#acceptRead(request);
    }
    if (this.#pendingReads.length > 0) this.#dropReadNumbered(request);
    if (
      this.opNumber - this.#commitNumber >= this.limits.pipelineOpsMax ||
      this.#uncommittedBytes >= this.limits.pipelineBytesMax
    ) {
      return this.#ignore(`request c=${request.clientId}: pipeline full`);
    }
    if (this.opNumber >= OP_NUMBER_MAX) {
      return this.#log_("warn", `request c=${request.clientId}: the log reached OP_NUMBER_MAX`);
    }
    const entry: LogEntry = {
      opNumber: this.opNumber + 1,
      viewNumber: this.#viewNumber,
      clientId: request.clientId,
      requestNumber: request.requestNumber,
      operation: request.operation,
      // §4.4: the primary fixes the timestamp; it never goes back along the log.
      timestamp: Math.max(this.#clockMs, this.#log.lastTimestamp),
    };
    this.#appendEntry(entry);
    // The Prepare goes out in #flush, so that requests arriving in one turn share one (§6.2).
  }

  /**
   * Whether the entry at `opNumber` is `request` (same client, number and operation), so that a
   * re-sent request is told apart from another one that reuses its number. The planted bug
   * `reply_by_number_only` trusts the numbers, as this replica did before.
   */
  #isLoggedAs(opNumber: number, request: Request): boolean {
    if (this.#plantedBug === "reply_by_number_only") return true;
    const entry = this.#log.entry(opNumber);
    if (entry === undefined) {
      // Gone with a checkpoint (§5.1): the client table kept the operation's checksum.
      const executed = this.#clientTable.executed(request.clientId);
      return executed !== undefined && executed.opNumber === opNumber &&
        executed.operationChecksum === crc32c(request.operation);
    }
    return entry.clientId === request.clientId &&
      entry.requestNumber === request.requestNumber &&
      bytesEqual(entry.operation, request.operation);
  }

  #reject(request: Request, reason: RejectReason, floor: number): void {
    this.#debugLog(() => `reject c=${request.clientId} s=${request.requestNumber}: ${reason}`);
    this.#emitReply(request.clientId, {
      type: "rejected",
      clientId: request.clientId,
      requestNumber: request.requestNumber,
      reason,
      floor,
      replica: this.#self,
    });
  }

  #onRequestNumberQuery(query: RequestNumberQuery): void {
    if (this.#status !== "normal") return this.#ignore(`request_number_query: ${this.#status}`);
    this.#emitReply(query.clientId, {
      type: "request_number_reply",
      clientId: query.clientId,
      nonce: query.nonce,
      requestNumber: Math.max(
        this.#clientTable.latestRequestNumber(query.clientId),
        this.#readRequestNumbers.get(query.clientId) ?? 0,
      ),
      replica: this.#self,
    });
  }

  #onPrepare(prepare: Prepare): void {
    // §4.1 Only the primary of a view prepares in it.
    if (prepare.replica !== this.#primaryOf(prepare.viewNumber)) {
      return this.#ignore(`prepare: from ${prepare.replica}, not the primary of its view`);
    }
    if (!this.#acceptNormalMessage(prepare)) return;
    if (this.isPrimary) return this.#ignore("prepare: sent to the primary of its own view");
    this.#ticksSincePrimary = 0;
    let appended = false;
    for (const entry of prepare.entries) {
      if (entry.opNumber <= this.opNumber) continue; // Already held: logs in a view are prefixes.
      if (entry.opNumber !== this.opNumber + 1) {
        this.#requestState(`prepare: gap after op ${this.opNumber}, got ${entry.opNumber}`);
        break;
      }
      if (!this.#timestampFollows(entry, "prepare")) break;
      this.#appendEntry(entry);
      appended = true;
    }
    this.#advanceCommit(Math.min(prepare.commitNumber, this.opNumber));
    if (!appended) {
      // A re-sent Prepare: the primary may have lost our PrepareOk.
      this.#sendPrepareOkIfDurable(true);
    }
  }

  #onPrepareOk(message: PrepareOk): void {
    // PrepareOks go to the primary of their view; one sent here names a view we are no primary of.
    if (this.#primaryOf(message.viewNumber) !== this.replicaIndex) {
      return this.#ignore("prepare_ok: not the primary of its view");
    }
    if (!this.#acceptNormalMessage(message)) return;
    if (message.opNumber > this.opNumber) {
      return this.#ignore(`prepare_ok: op ${message.opNumber} beyond the log`);
    }
    this.#heardAtTick[message.replica] = this.#ticks;
    if (message.readRound > this.#readRound) {
      // Only the echo is bogus (no such round began in this view); the acknowledgement stands.
      this.#ignore(`prepare_ok: read round ${message.readRound} never began`);
    } else if (message.readRound > this.#readRoundAcked[message.replica]!) {
      this.#readRoundAcked[message.replica] = message.readRound;
    }
    if (message.opNumber > this.#acked[message.replica]!) {
      this.#acked[message.replica] = message.opNumber;
      this.#progressAtTick[message.replica] = this.#ticks;
      this.#commitReady();
    }
    this.#serveReads();
  }

  #onCommit(message: Commit): void {
    // §4.1 Only the primary of a view commits in it.
    if (message.replica !== this.#primaryOf(message.viewNumber)) {
      return this.#ignore(`commit: from ${message.replica}, not the primary of its view`);
    }
    if (!this.#acceptNormalMessage(message)) return;
    if (this.isPrimary) return this.#ignore("commit: sent to the primary of its own view");
    this.#ticksSincePrimary = 0;
    if (message.readRound > this.#readRoundSeen) this.#readRoundSeen = message.readRound;
    // Answer the heartbeat, so that the primary knows it is heard (see #abdicating), and echo
    // the read round.
    this.#sendPrepareOkIfDurable(true);
    if (message.commitNumber > this.opNumber) {
      this.#requestState(`commit: k=${message.commitNumber} beyond op ${this.opNumber}`);
    }
    this.#advanceCommit(Math.min(message.commitNumber, this.opNumber));
  }

  /**
   * Normal-protocol messages are handled only in status normal and in the same view. A message
   * from a newer view means this replica is behind: per the correction to §5.2 it asks that view's
   * primary for the view's state instead of adopting the view number on its own.
   */
  #acceptNormalMessage(message: Prepare | PrepareOk | Commit): boolean {
    if (message.viewNumber < this.#viewNumber) {
      this.#ignore(`${message.type}: old view ${message.viewNumber}`);
      return false;
    }
    if (message.viewNumber > this.#viewNumber) {
      // A PrepareOk names a view this replica is the primary of (the caller checked), and it
      // never started that view: no one can be normal in it.
      if (message.type === "prepare_ok") this.#ignore("prepare_ok: a view we never started");
      else this.#learnNewerView(message.viewNumber);
      return false;
    }
    if (this.#status !== "normal") {
      if (this.#status === "view_change" && message.type !== "prepare_ok") {
        // The primary of this view is already normal: we missed its StartView.
        this.#learnNewerView(message.viewNumber);
      } else {
        this.#ignore(`${message.type}: status ${this.#status}`);
      }
      return false;
    }
    return true;
  }

  /** The primary commits what `f` backups and its own disk hold (§4.1), then executes it. */
  #commitReady(): void {
    let needed = this.f;
    if (this.#plantedBug === "commit_with_too_few_prepare_oks") needed = Math.max(0, this.f - 1);
    const committable = Math.min(
      this.#logDurableOpNumber,
      this.#reachedByBackups(this.#acked, needed),
    );
    if (committable > this.#commitNumber) {
      this.#advanceCommit(committable);
      this.#serveReads(); // Reads waiting for this commit-number.
    }
  }

  /** Execute committed entries up to `commitNumber` (they must all be in the log). */
  #advanceCommit(commitNumber: number): void {
    // An internal invariant, not a check of messages: callers pass a commit-number from a message
    // only clamped to the op-number, or checked against the log it ends (#maybeStartView).
    assert(
      commitNumber <= this.opNumber,
      () => `commit ${commitNumber} beyond op ${this.opNumber}`,
    );
    const replying = this.#status === "normal" && this.isPrimary;
    while (this.#commitNumber < commitNumber) {
      const entry = this.#log.entry(this.#commitNumber + 1)!;
      let epochChanged = false;
      if (entry.clientId === GROUP_CLIENT_ID) {
        this.#commitNumber = entry.opNumber;
        this.#uncommittedBytes -= entry.operation.length;
        epochChanged = this.#executeGroupEntry(entry, replying);
      } else {
        const result = this.app.apply(entry.operation, {
          opNumber: entry.opNumber,
          timestamp: entry.timestamp,
          clientId: entry.clientId,
          requestNumber: entry.requestNumber,
        });
        this.#commitNumber = entry.opNumber;
        this.#uncommittedBytes -= entry.operation.length;
        const checksum = crc32c(entry.operation);
        this.#clientTable.onExecute(entry, result, checksum);
        if (replying) {
          this.#emitReply(entry.clientId, {
            type: "reply",
            viewNumber: this.#viewNumber,
            clientId: entry.clientId,
            requestNumber: entry.requestNumber,
            opNumber: entry.opNumber,
            operationChecksum: checksum,
            result,
          });
        }
      }
      this.#bytesSinceCheckpoint += entry.operation.length;
      this.#bytesSinceCheckpointBegun += entry.operation.length;
      const logFull = this.#bytesSinceCheckpoint >= this.limits.checkpointLogBytesMax;
      if (entry.opNumber % this.limits.checkpointOpsInterval === 0 || logFull) {
        // Reset at every such op-number, written or not, so that the replicas of a group, which
        // all start from one (op 0, or a checkpoint), choose the same op-numbers.
        this.#bytesSinceCheckpoint = 0;
        const worth = this.#bytesSinceCheckpointBegun *
            this.limits.checkpointWriteAmplificationMax >= this.#checkpointBytes();
        if (worth || logFull) this.#beginCheckpoint(entry);
      }
      // §7 The rest of the commit-number was the old epoch's to give: it has none after its
      // Reconfiguration (a caller committing more passes committed entries one by one).
      if (epochChanged && this.#plantedBug !== "accept_request_after_reconfiguration") break;
    }
    if (this.#commitNumber - this.#log.packedOpNumber >= this.limits.logPackOps) {
      this.#log.packThrough(this.#commitNumber);
    }
  }

  /**
   * §4.4 Timestamps never go back along a log: each primary stamps an entry with at least the
   * timestamp of the entry before it, in its log and hence in every log it extends. An entry that
   * goes back cannot continue the log here (`Log.append` asserts it): warn, and say false.
   */
  #timestampFollows(entry: LogEntry, what: string): boolean {
    const previous = entry.opNumber - 1 === this.opNumber
      ? this.#log.lastTimestamp
      : this.#log.timestampAt(entry.opNumber - 1) ?? 0;
    if (entry.timestamp >= previous) return true;
    this.#log_(
      "warn",
      `${what}: op ${entry.opNumber} has timestamp ${entry.timestamp}, before op ` +
        `${entry.opNumber - 1}'s ${previous}: ignored`,
    );
    return false;
  }

  #appendEntry(entry: LogEntry): void {
    this.#log.append(entry);
    if (entry.clientId === GROUP_CLIENT_ID) this.#noteGroupEntry(entry);
    if (this.#logDirtyFrom > entry.opNumber) this.#logDirtyFrom = entry.opNumber;
    this.#clientTable.onAppend(entry);
    this.#uncommittedBytes += entry.operation.length;
  }

  /** Acknowledge what is durable, if that is news to the primary (or always, with `force`). */
  #sendPrepareOkIfDurable(force = false): void {
    const durable = this.#logDurableOpNumber;
    if (!force && durable <= this.#prepareOkSentOpNumber) return;
    this.#prepareOkSentOpNumber = durable;
    this.#send(this.primaryIndex, {
      type: "prepare_ok",
      epoch: this.#membership.epoch,
      viewNumber: this.#viewNumber,
      opNumber: durable,
      replica: this.#self,
      readRound: this.#readRoundSeen,
    });
  }

  /**
   * A primary that has not heard from f backups for a primary timeout falls silent, so that its
   * backups time out and elect another primary. Without this, a primary that can send but not
   * receive would keep its backups loyal (its heartbeats arrive) while committing nothing. The
   * paper has no such rule; TigerBeetle's primary abdicates likewise.
   */
  #abdicating(): boolean {
    if (this.f === 0) return false;
    let heard = 0;
    for (const replica of this.#members) {
      if (replica === this.#self) continue;
      if (this.#ticks - this.#heardAtTick[replica]! < this.timing.primaryTimeoutTicks) heard++;
    }
    return heard < this.f;
  }

  #tickPrimary(): void {
    this.#ticksSinceSend++;
    if (this.#abdicating()) {
      // Silent, so that the backups elect another primary. One that hears from no one for as long
      // again starts a view change itself, as a backup would: a group that moved on without it
      // (a later view, or a later epoch it is not in) answers that, where it sends nothing to
      // a primary it left behind (§7.2: NewEpoch to a message of an older epoch).
      if (++this.#ticksAbdicating >= this.#primaryTimeoutTicks) {
        this.#ticksAbdicating = 0;
        this.#log_("info", `heard from too few backups: starting a view change`);
        this.#startViewChange(this.#viewNumber + 1);
      }
      return;
    }
    this.#ticksAbdicating = 0;
    this.#swapStalledBackup();
    // A read round whose Commits or PrepareOks were lost: a new round covers its reads too.
    if (
      this.#pendingReads.length > 0 && this.#pendingReads[0]!.round > this.#confirmedReadRound() &&
      this.#ticks - this.#readRoundAtTick >= this.timing.prepareRetryTicks
    ) {
      this.#beginReadRound();
    }
    for (const replica of this.#members) {
      if (replica === this.#self) continue;
      // A spare gets what low-load Prepares left out every `spareCatchUpTicks`.
      if (
        this.#sentTo[replica]! < this.#preparedOpNumber &&
        this.#ticks % this.timing.spareCatchUpTicks === 0
      ) {
        this.#sendPreparesTo(replica, this.#preparedOpNumber);
        continue;
      }
      if (this.#ticks - this.#progressAtTick[replica]! < this.timing.prepareRetryTicks) continue;
      // Entries before the base are gone: a backup that lacks them gets a checkpoint (§5.1) once
      // it asks for the gap.
      const from = Math.max(this.#ackedOrCommit(replica), this.#log.baseOpNumber);
      if (from >= this.#sentTo[replica]!) continue;
      this.#progressAtTick[replica] = this.#ticks;
      const entries = this.#log.sliceBounded(
        from,
        this.limits.batchOpsMax,
        this.limits.batchBytesMax,
      );
      this.#send(replica, this.#prepareMessage(entries));
      const last = entries[entries.length - 1]!.opNumber;
      if (last > this.#sentTo[replica]!) this.#sentTo[replica] = last;
    }
    if (this.#ticksSinceSend >= this.timing.heartbeatTicks) {
      this.#ticksSinceSend = 0;
      this.#broadcast(this.#commitMessage(0));
    }
  }

  /**
   * §7.1 A member of an epoch re-sends StartEpoch to the members it never heard from in it (new
   * ones whose StartEpoch was lost: in a group that only grows, no replica that leaves re-sends
   * it), and EpochStarted to the replicas that left, which may not have learned of the epoch at
   * all (the old primary's Commit lost) and would otherwise never shut down.
   */
  #remindEpoch(): void {
    let startEpoch: StartEpoch | NewEpoch | undefined;
    for (const member of this.#members) {
      if (member === this.#self || this.#heardFromMembers.has(member)) continue;
      startEpoch ??= this.#epochMessage("start_epoch");
      this.#send(member, startEpoch);
    }
    this.#announceEpochStarted();
    // One that left but lags does not know our ids: NewEpoch brings the address book.
    const news = this.#epochMessage("new_epoch");
    for (const replica of this.#membership.previousMembers) {
      if (this.#memberPosition(replica) < 0) this.#send(replica, news);
    }
  }

  #tickBackup(): void {
    this.#ticksSincePrimary++;
    this.#ticksSinceGetState++;
    if (this.#ticksSincePrimary >= this.#primaryTimeoutTicks) {
      this.#log_("info", `primary ${this.primaryIndex} silent: starting a view change`);
      this.#startViewChange(this.#viewNumber + 1);
    }
  }

  /** What `replica` is known to hold: its acknowledgement in this view, else our commit-number. */
  #ackedOrCommit(replica: ReplicaIndex): number {
    const acked = this.#acked[replica]!;
    return acked >= 0 ? acked : this.#commitNumber;
  }

  /** Send `replica` what it was not sent yet, up to `toOpNumber`, in bounded Prepares. */
  #sendPreparesTo(replica: ReplicaIndex, toOpNumber: number): void {
    if (this.#sentTo[replica]! < this.#log.baseOpNumber) {
      this.#sentTo[replica] = this.#log.baseOpNumber; // The gap brings it a checkpoint (§5.1).
    }
    while (this.#sentTo[replica]! < toOpNumber) {
      const from = this.#sentTo[replica]!;
      const entries = this.#log.sliceBounded(
        from,
        Math.min(this.limits.batchOpsMax, toOpNumber - from),
        this.limits.batchBytesMax,
      );
      if (this.#ackedOrCommit(replica) >= from) this.#progressAtTick[replica] = this.#ticks;
      this.#send(replica, this.#prepareMessage(entries));
      this.#sentTo[replica] = entries[entries.length - 1]!.opNumber;
    }
  }

  /**
   * Which backups are spares (`Limits.quietPrepareBackups`): the ones furthest after the primary,
   * so that every replica agrees on it without a word.
   */
  #chooseSpares(): void {
    this.#spare.fill(false);
    const count = this.#members.length;
    const primary = Math.max(0, this.#memberPosition(this.primaryIndex));
    const prompt = Math.min(count - 1, Math.max(this.f, this.limits.quietPrepareBackups));
    for (let k = 1 + prompt; k < count; k++) {
      this.#spare[this.#members[(primary + k) % count]!] = true;
    }
  }

  /**
   * A prompt backup that holds Prepares it has not acknowledged for `spareSwapTicks` trades places
   * with a spare that has acknowledged more than it, although the spare was sent its entries later:
   * otherwise, while the prompt backup is down, every low-load operation would wait for the spare's
   * next catch-up. Comparing acknowledgements, not silence, keeps backups that are merely far away
   * (a round trip longer than the swap period) from trading places on every operation.
   */
  #swapStalledBackup(): void {
    // Acknowledgements in this view only (-1: none yet): a backup silent since the view began
    // must not pass for one holding everything committed.
    const acked = this.#acked;
    // A backup demoted in this tick is stalled itself: it must not be swapped straight back in.
    const demoted: number[] = [];
    for (const replica of this.#members) {
      if (replica === this.#self || this.#spare[replica]) continue;
      if (acked[replica]! >= this.#sentTo[replica]!) continue;
      if (this.#ticks - this.#progressAtTick[replica]! < this.timing.spareSwapTicks) continue;
      let best = -1;
      for (const spare of this.#members) {
        if (!this.#spare[spare] || demoted.includes(spare)) continue;
        if (best < 0 || acked[spare]! > acked[best]!) best = spare;
      }
      if (best < 0 || acked[best]! <= acked[replica]!) continue;
      this.#log_(
        "info",
        `backup ${replica} is slow to acknowledge: backup ${best} takes its place`,
      );
      this.#spare[replica] = true;
      demoted.push(replica);
      this.#spare[best] = false;
      this.#spareSwaps++;
      this.#sendPreparesTo(best, this.#preparedOpNumber);
    }
  }

  #prepareMessage(entries: readonly LogEntry[]): Prepare {
    return {
      type: "prepare",
      epoch: this.#membership.epoch,
      viewNumber: this.#viewNumber,
      entries,
      commitNumber: this.#commitNumber,
      replica: this.#self,
    };
  }

  /**
   * Emit what accumulated during this turn: one log write for every entry appended, and as
   * primary one Prepare per batch of entries not yet sent (§6.2: a lone request goes out at once,
   * requests arriving together go out together), while fewer than `preparesInFlightMax` Prepares
   * wait for their commit; the rest wait for the next commit and go out as one batch.
   */
  #flush(): void {
    this.#flushLogPersist();
    if (this.#status !== "normal" || !this.isPrimary || this.#abdicating()) return;
    const inFlight = this.#preparesInFlight;
    while (inFlight.length > 0 && inFlight[0]! <= this.#commitNumber) inFlight.shift();
    while (
      this.#preparedOpNumber < this.opNumber && inFlight.length < this.limits.preparesInFlightMax
    ) {
      const entries = this.#log.sliceBounded(
        this.#preparedOpNumber,
        this.limits.batchOpsMax,
        this.limits.batchBytesMax,
      );
      const message = this.#prepareMessage(entries);
      const last = entries[entries.length - 1]!.opNumber;
      const quiet = inFlight.length === 0 && entries.length === 1;
      for (const replica of this.#members) {
        if (replica === this.#self) continue;
        if (quiet && this.#spare[replica]) continue;
        // A backup that had acknowledged everything starts its retry period now.
        if (this.#ackedOrCommit(replica) >= this.#sentTo[replica]!) {
          this.#progressAtTick[replica] = this.#ticks;
        }
        if (this.#sentTo[replica] === this.#preparedOpNumber) {
          this.#send(replica, message); // The same object for all: the driver encodes it once.
          this.#sentTo[replica] = last;
        } else {
          this.#sendPreparesTo(replica, last); // A spare catching up, as the load rises.
        }
      }
      this.#preparedOpNumber = last;
      inFlight.push(this.#preparedOpNumber);
      this.#ticksSinceSend = 0;
    }
    // Reads that arrived in this turn share one read round, begun after all of them.
    const reads = this.#pendingReads;
    if (reads.length > 0 && reads[reads.length - 1]!.round > this.#readRound) {
      this.#beginReadRound();
    }
  }

  /** §6.3: a Commit asking every backup to echo a new read round (see `Commit`). */
  #beginReadRound(): void {
    this.#readRound++;
    this.#readRoundAtTick = this.#ticks;
    this.#ticksSinceSend = 0; // It is a heartbeat too.
    this.#broadcast(this.#commitMessage(this.#readRound));
  }

  /** The heartbeat (§4.1), asking for read round `readRound` when above 0 (§6.3). */
  #commitMessage(readRound: number): Commit {
    return {
      type: "commit",
      epoch: this.#membership.epoch,
      viewNumber: this.#viewNumber,
      commitNumber: this.#commitNumber,
      replica: this.#self,
      readRound,
    };
  }

  /** §6.3: a read-only request waits, outside the log, for a read round and its commit-number. */
  #acceptRead(request: Request): void {
    const reads = this.#pendingReads;
    const same = reads.findIndex((read) =>
      read.clientId === request.clientId && read.requestNumber === request.requestNumber
    );
    if (same >= 0) {
      // A retry waits with the original. The same number for another operation comes from a
      // restarted client reusing it: the old read must not be answered to the new request.
      if (bytesEqual(reads[same]!.operation, request.operation)) {
        return this.#ignore(`read c=${request.clientId} s=${request.requestNumber}: waiting`);
      }
      reads.splice(same, 1);
    }
    if (reads.length >= this.limits.readsPendingMax) {
      return this.#ignore(`read c=${request.clientId}: ${reads.length} reads pending`);
    }
    const seen = this.#readRequestNumbers;
    const previous = seen.get(request.clientId);
    seen.delete(request.clientId); // Re-inserted last: the map is in order of recent use.
    seen.set(request.clientId, Math.max(previous ?? 0, request.requestNumber));
    if (seen.size > this.limits.clientsMax) seen.delete(seen.keys().next().value!);
    reads.push({
      clientId: request.clientId,
      requestNumber: request.requestNumber,
      operation: request.operation,
      readIndex: this.opNumber,
      round: this.#readRound + 1,
    });
    this.#serveReads(); // A group of one needs no round.
  }

  /**
   * A write under the number of a read still waiting comes from a client restarted with the same
   * id: the read's answer must not reach it as the write's.
   */
  #dropReadNumbered(request: Request): void {
    const reads = this.#pendingReads;
    const same = reads.findIndex((read) =>
      read.clientId === request.clientId && read.requestNumber === request.requestNumber
    );
    if (same >= 0) reads.splice(same, 1);
  }

  /**
   * The latest read round that f backups confirmed, with the primary a majority of this view
   * after the round began; unbounded in a group of one.
   */
  #confirmedReadRound(): number {
    if (this.#plantedBug === "read_without_round") return Infinity;
    return this.#reachedByBackups(this.#readRoundAcked, this.f);
  }

  /**
   * The largest value that at least `needed` backups reached in `perReplica` (the `needed`-th
   * largest among the backups), without allocating: it runs on every PrepareOk. Unbounded when
   * `needed` is 0.
   */
  #reachedByBackups(perReplica: readonly number[], needed: number): number {
    if (needed <= 0) return Infinity;
    let best = -Infinity;
    const members = this.#members;
    for (let c = 0; c < members.length; c++) {
      const candidate = members[c]!;
      if (candidate === this.#self) continue;
      const value = perReplica[candidate]!;
      if (value <= best) continue;
      let reached = 0;
      for (let r = 0; r < members.length; r++) {
        const replica = members[r]!;
        if (replica !== this.#self && perReplica[replica]! >= value) reached++;
      }
      if (reached >= needed) best = value;
    }
    return best;
  }

  /** Answer the reads whose round is confirmed and whose commit-number is reached, in order. */
  #serveReads(): void {
    const reads = this.#pendingReads;
    if (reads.length === 0 || this.#status !== "normal" || !this.isPrimary) return;
    const confirmed = this.#confirmedReadRound();
    let served = 0;
    while (
      served < reads.length && reads[served]!.round <= confirmed &&
      reads[served]!.readIndex <= this.#commitNumber
    ) {
      const read = reads[served++]!;
      this.#emitReply(read.clientId, {
        type: "reply",
        viewNumber: this.#viewNumber,
        clientId: read.clientId,
        requestNumber: read.requestNumber,
        opNumber: this.#commitNumber,
        operationChecksum: crc32c(read.operation),
        result: this.app.query!(read.operation),
      });
    }
    if (served > 0) reads.splice(0, served);
  }

  #flushLogPersist(): void {
    const from = this.#logDirtyFrom;
    if (from === Infinity) return;
    // After a truncation with nothing appended, an empty suffix tells the disk to drop entries.
    this.#emitLogPersist(from, from <= this.opNumber ? this.#log.slice(from, this.opNumber) : []);
  }

  #emitLogPersist(fromOpNumber: number, entries: readonly LogEntry[]): void {
    const id = this.#persistIdNext++;
    const toOp = fromOpNumber - 1 + entries.length;
    this.#effects.push({
      type: "persist_log",
      id,
      fromOpNumber,
      entries,
      commitNumber: this.#commitNumber,
    });
    this.#pendingLogWrites.push({ id, toOp });
    this.#logDirtyFrom = Infinity;
  }

  /** Replace the log after `opNumber` (which must not cut into committed entries). */
  #truncateLog(opNumber: number): void {
    assert(opNumber >= this.#commitNumber, () => `truncation to ${opNumber} below commit`);
    if (opNumber >= this.opNumber) return;
    this.#log.truncateAfter(opNumber);
    if (this.#logDurableOpNumber > opNumber) this.#logDurableOpNumber = opNumber;
    if (this.#logDirtyFrom > opNumber + 1) this.#logDirtyFrom = opNumber + 1;
    for (const write of this.#pendingLogWrites) {
      if (write.toOp > opNumber) write.toOp = opNumber;
    }
    if (this.#prepareOkSentOpNumber > opNumber) this.#prepareOkSentOpNumber = opNumber;
    if (this.#reconfigurationOpNumber > opNumber) this.#reconfigurationOpNumber = 0;
    this.#recomputeUncommitted();
  }

  // ------------------------------------------------------------------ §4.2 view change

  #startViewChange(viewNumber: number): void {
    if (viewNumber > VIEW_NUMBER_MAX) {
      // Only this replica's own timeouts get here (messages naming such views are dropped on
      // arrival): after 2^48 view changes, or with a superblock written before the bound.
      this.#log_("warn", `cannot change to view ${viewNumber}: beyond VIEW_NUMBER_MAX`);
      this.#ticksSincePrimary = 0; // Try again after another timeout, not on every tick.
      this.#ticksInViewChange = 0;
      return;
    }
    // An internal invariant: every caller passes its own view + 1 or the view of a message it
    // checked is later than ours, and views up to VIEW_NUMBER_MAX are exact.
    assert(viewNumber > this.#viewNumber, "a view change must move to a later view");
    this.#transitionToViewChange(viewNumber);
    this.#broadcastStartViewChange();
    this.#maybeSendDoViewChange();
  }

  #transitionToViewChange(viewNumber: number): void {
    this.#log_("info", `view change to view ${viewNumber}`);
    this.#viewChanges++;
    this.#viewNumber = viewNumber;
    this.#status = "view_change";
    this.#syncTarget = undefined;
    this.#startViewChangeFrom = new Set();
    this.#doViewChanges = new Map();
    this.#doViewChangeSent = false;
    this.#ticksInViewChange = 0;
    this.#ticksSinceViewChangeSend = 0;
    this.#resetViewState();
    // Correction 1 (docs/vr-checklist.md): the new view is durable before this replica acts in
    // it.
    this.#persistSuperblock();
  }

  #broadcastStartViewChange(): void {
    this.#broadcast({
      type: "start_view_change",
      epoch: this.#membership.epoch,
      viewNumber: this.#viewNumber,
      replica: this.#self,
    });
  }

  #onStartViewChange(message: StartViewChange): void {
    if (message.viewNumber < this.#viewNumber) {
      // A straggler changing to an older view (say, restarted with the superblock writes of later
      // views lost) may never hear of ours otherwise: a primary that hears from fewer than f
      // backups falls silent (#abdicating). Our view's state brings it here (§5.2 corrected).
      if (this.#status === "normal" && this.isPrimary) {
        return this.#sendStartView(message.replica, 0);
      }
      return this.#ignore("start_view_change: old view");
    }
    if (this.#status === "recovering") return this.#ignore("start_view_change: recovering");
    if (message.viewNumber > this.#viewNumber) {
      if (!this.#withinStep(message.viewNumber, `start_view_change from ${message.replica}`)) {
        return;
      }
      this.#startViewChange(message.viewNumber);
    }
    if (this.#status === "normal" && this.isPrimary) {
      // A straggler (say, a restarted replica) is changing to a view that already started: it
      // needs this view's state, not a new view change.
      this.#sendStartView(message.replica, 0);
      return;
    }
    if (this.#status !== "view_change") return this.#ignore("start_view_change: view started");
    this.#startViewChangeFrom.add(message.replica);
    this.#maybeSendDoViewChange();
  }

  #maybeSendDoViewChange(): void {
    if (this.#doViewChangeSent || this.#startViewChangeFrom.size < this.f) return;
    this.#doViewChangeSent = true;
    this.#sendDoViewChange();
  }

  #sendDoViewChange(): void {
    const message: DoViewChange = {
      type: "do_view_change",
      epoch: this.#membership.epoch,
      viewNumber: this.#viewNumber,
      lastNormalView: this.#lastNormalView,
      opNumber: this.opNumber,
      commitNumber: this.#commitNumber,
      entries: this.opNumber > this.#commitNumber
        ? this.#log.slice(this.#commitNumber + 1, this.opNumber)
        : [],
      replica: this.#self,
    };
    if (this.isPrimary) {
      this.#onDoViewChange(message);
    } else {
      this.#send(this.primaryIndex, message);
    }
  }

  /** Also called with this replica's own DoViewChange, which it does not send itself. */
  #onDoViewChange(message: DoViewChange): void {
    if (message.viewNumber < this.#viewNumber) return this.#ignore("do_view_change: old view");
    if (this.#status === "recovering") return this.#ignore("do_view_change: recovering");
    // §4.2 DoViewChanges go to the new primary only: one sent elsewhere must not move the view.
    if (this.#primaryOf(message.viewNumber) !== this.replicaIndex) {
      return this.#ignore("do_view_change: not the new primary");
    }
    // Its sender is changing to the view, so it was last normal in an earlier one; a message that
    // claims otherwise would win every choice of log below.
    if (message.lastNormalView >= message.viewNumber) {
      return this.#ignore("do_view_change: last normal in the view it changes to");
    }
    if (message.viewNumber > this.#viewNumber) {
      if (!this.#withinStep(message.viewNumber, `do_view_change from ${message.replica}`)) return;
      this.#startViewChange(message.viewNumber);
    }
    if (this.#status === "normal") {
      // A late DoViewChange: its sender missed our StartView.
      this.#sendStartView(message.replica, message.commitNumber);
      return;
    }
    this.#doViewChanges.set(message.replica, message);
    this.#maybeStartView();
  }

  /**
   * §4.2 With f+1 DoViewChange messages the new primary takes the log of the one with the latest
   * last-normal view (ties: the largest op-number). Per §5.3 each carries only its uncommitted
   * suffix, so the new primary first fetches committed entries it lacks (from a replica that
   * committed them) until its own committed prefix reaches the chosen suffix's start.
   */
  #maybeStartView(): void {
    if (this.#doViewChanges.size < this.f + 1) return;
    // The log chosen holds every committed op: each is in f + 1 logs, one of them in every quorum,
    // and the log of the latest normal view holds it (§4.2). It therefore holds, unchanged, every
    // op this replica committed. A log that does not comes from a bug or a lie: its message still
    // counts in the quorum (its sender promised to take no part in earlier views), but the choice
    // falls on the best of the others. With truthful messages that is the paper's choice.
    let best: DoViewChange | undefined;
    let chosen: DoViewChange | undefined;
    let commitMax = 0;
    let commitMaxFrom: ReplicaIndex = this.#self;
    for (const message of this.#doViewChanges.values()) {
      if (best === undefined || this.#betterLog(message, best)) best = message;
      if (message.commitNumber > commitMax) {
        commitMax = message.commitNumber;
        commitMaxFrom = message.replica;
      }
      if (this.#lacksOurCommits(message) !== undefined) continue;
      if (chosen === undefined || this.#betterLog(message, chosen)) chosen = message;
    }
    assert(best !== undefined, "no DoViewChange chosen"); // The map holds f + 1 ≥ 1 of them.
    if (chosen !== best) {
      this.#log_(
        "warn",
        `view ${this.#viewNumber}: the log of ${best.replica}'s DoViewChange ` +
          `${this.#lacksOurCommits(best)}: ${chosen === undefined ? "waiting" : "not chosen"}`,
      );
    }
    // Our own DoViewChange is always a candidate; it may still be on its way.
    if (chosen === undefined) return;
    // Another message claims commits beyond the chosen log; one of the two is wrong, and we cannot
    // tell which. Drop them all: each replica still changing views re-sends its DoViewChange every
    // `retryTicks`, ours included, and a view change that stalls moves on to the next view.
    if (chosen.opNumber < commitMax) {
      return this.#dropDoViewChanges(
        chosen,
        `ends at op ${chosen.opNumber}, but op ${commitMax} is committed`,
      );
    }
    if (this.#commitNumber < chosen.commitNumber) {
      // Fetch committed entries (this.#commitNumber, chosen.commitNumber] first.
      this.#sendGetState(commitMaxFrom, this.#viewNumber, this.#commitNumber);
      return;
    }
    const unfit = this.#unfitSuffix(chosen.commitNumber, chosen.entries, chosen.opNumber);
    if (unfit !== undefined) return this.#dropDoViewChanges(chosen, unfit);
    this.#replaceUncommitted(chosen.entries);
    // An internal invariant: #unfitSuffix checked that the chosen entries run from at most our
    // commit-number + 1 to the chosen op-number, which is at least our commit-number.
    assert(this.opNumber === chosen.opNumber, "the new log must end at the chosen op-number");
    this.#transitionToNormal(this.#viewNumber);
    this.#advanceCommit(commitMax);
    this.#preparedOpNumber = this.opNumber;
    this.#sentTo.fill(this.opNumber); // The StartViews below carry the whole log.
    const commits = new Map<ReplicaIndex, number>();
    for (const message of this.#doViewChanges.values()) {
      commits.set(message.replica, message.commitNumber);
    }
    for (const replica of this.#members) {
      if (replica === this.#self) continue;
      this.#sendStartView(replica, commits.get(replica) ?? commitMax);
    }
    this.#doViewChanges = new Map();
  }

  /**
   * How the log of `message` fails to hold, unchanged, the ops this replica committed, or
   * undefined when it holds them.
   */
  #lacksOurCommits(message: DoViewChange): string | undefined {
    if (message.opNumber < this.#commitNumber) {
      return `ends at op ${message.opNumber}, before our committed op ${this.#commitNumber}`;
    }
    for (const entry of message.entries) {
      if (entry.opNumber > this.#commitNumber) break;
      // Before the base, our entries are gone into a checkpoint (§5.1): nothing to compare but
      // the base entry's view and timestamp.
      if (entry.opNumber < this.#log.baseOpNumber) continue;
      if (entry.opNumber === this.#log.baseOpNumber) {
        if (!this.#log.matchesBase(entry)) return `contradicts committed op ${entry.opNumber}`;
        continue;
      }
      const ours = this.#log.entry(entry.opNumber);
      if (ours === undefined || !sameEntry(ours, entry)) {
        return `contradicts committed op ${entry.opNumber}`;
      }
    }
    return undefined;
  }

  #dropDoViewChanges(chosen: DoViewChange, reason: string): void {
    this.#log_(
      "warn",
      `view ${this.#viewNumber}: the log of ${chosen.replica}'s DoViewChange ${reason}: ` +
        `ignoring the ${this.#doViewChanges.size} DoViewChanges received`,
    );
    this.#doViewChanges = new Map();
  }

  /**
   * Whether a message naming the later view `viewNumber` may take this replica there: only if it
   * is at most `VIEW_NUMBER_STEP_MAX` views ahead (see there). Otherwise the replica starts a view
   * change to the view that many after its own instead (any later view is a safe target, §4.2),
   * unless it is recovering (§4.3: it takes no part until it has recovered).
   */
  #withinStep(viewNumber: number, what: string): boolean {
    if (viewNumber - this.#viewNumber <= VIEW_NUMBER_STEP_MAX) return true;
    // At most one such step per view-change timeout: a peer sending far views cannot spend the
    // view space (VIEW_NUMBER_MAX) faster than 2^20 views per timeout (about four years in all),
    // and a replica that raced ahead still pulls the group along, a step at a time.
    if (
      this.#status === "recovering" ||
      this.#ticks - this.#farStepAtTick < this.timing.viewChangeTimeoutTicks
    ) {
      this.#ignore(`${what} names view ${viewNumber}, far ahead: not now`);
      return false;
    }
    const step = this.#viewNumber + VIEW_NUMBER_STEP_MAX;
    this.#farStepAtTick = this.#ticks;
    this.#log_(
      "warn",
      `${what} names view ${viewNumber}, more than VIEW_NUMBER_STEP_MAX ` +
        `(${VIEW_NUMBER_STEP_MAX}) views after ours (${this.#viewNumber}): changing to view ` +
        `${step} only`,
    );
    this.#startViewChange(step);
    return false;
  }

  /** Whether the log in `a` should be preferred to the one in `b` (§4.2). */
  #betterLog(a: DoViewChange, b: DoViewChange): boolean {
    if (this.#plantedBug === "do_view_change_log_by_op_number") return a.opNumber > b.opNumber;
    if (a.lastNormalView !== b.lastNormalView) return a.lastNormalView > b.lastNormalView;
    return a.opNumber > b.opNumber;
  }

  /**
   * Send this view's state to `replica`. The log suffix starts at the replica's commit-number when
   * the suffix fits in one message; otherwise the replica fetches the rest by state transfer.
   */
  #sendStartView(replica: ReplicaIndex, commitNumber: number): void {
    const anchor = this.#transferAnchor(commitNumber);
    this.#send(replica, {
      type: "start_view",
      epoch: this.#membership.epoch,
      viewNumber: this.#viewNumber,
      anchorOpNumber: anchor,
      entries: anchor < this.opNumber ? this.#log.slice(anchor + 1, this.opNumber) : [],
      opNumber: this.opNumber,
      commitNumber: this.#commitNumber,
      replica: this.#self,
    });
  }

  /** Where a log suffix for a replica whose commit-number is `commitNumber` should start. */
  #transferAnchor(commitNumber: number): number {
    const n = this.opNumber;
    // Entries before the base are gone: a replica further behind fetches a checkpoint (§5.1).
    let anchor = Math.max(this.#log.baseOpNumber, Math.min(commitNumber, n));
    if (n - anchor > this.limits.transferOpsMax) anchor = n - this.limits.transferOpsMax;
    let bytes = 0;
    for (let op = n; op > anchor; op--) {
      bytes += this.#log.entry(op)!.operation.length;
      if (bytes > this.limits.transferBytesMax) {
        anchor = op;
        break;
      }
    }
    return anchor;
  }

  #onStartView(message: StartView): void {
    if (message.viewNumber < this.#viewNumber) return this.#ignore("start_view: old view");
    if (this.#status === "recovering") {
      // Only state tied to this recovery's nonce may be installed (§4.3).
      return this.#ignore("start_view: recovering");
    }
    if (message.viewNumber === this.#viewNumber && this.#status === "normal") {
      return this.#ignore("start_view: already normal in this view");
    }
    if (message.replica !== this.#primaryOf(message.viewNumber)) {
      return this.#ignore("start_view: not from the view's primary");
    }
    this.#installFromPrimary(
      message.viewNumber,
      message.anchorOpNumber,
      message.entries,
      message.opNumber,
      message.commitNumber,
    );
  }

  #onRequestStartView(message: RequestStartView): void {
    if (
      message.viewNumber !== this.#viewNumber || this.#status !== "normal" || !this.isPrimary
    ) {
      return this.#ignore("request_start_view: not the normal primary of that view");
    }
    this.#sendStartView(message.replica, message.commitNumber);
  }

  /**
   * Correction to §5.2: a replica that learns of a newer view does not adopt it on its own; it
   * asks that view's primary for the view's state and adopts the view when it installs it.
   */
  #learnNewerView(viewNumber: number): void {
    if (this.#status === "recovering") return this.#ignore("newer view: recovering");
    if (this.#plantedBug === "adopt_newer_view_before_its_state") {
      // The paper's §5.2 as written: truncate to the commit-number, adopt the view, then fetch.
      this.#truncateLog(this.#commitNumber);
      this.#viewNumber = viewNumber;
      this.#transitionToNormal(viewNumber);
      this.#requestState(`adopted view ${viewNumber} before its state`);
      return;
    }
    // Its state could not be installed from so far behind: move a step towards it instead.
    if (!this.#withinStep(viewNumber, "a message of a newer view")) return;
    if (
      this.#requestStartViewSentFor === viewNumber &&
      this.#ticksSinceRequestStartView < this.timing.retryTicks
    ) {
      return;
    }
    this.#requestStartViewSentFor = viewNumber;
    this.#ticksSinceRequestStartView = 0;
    this.#send(this.#primaryOf(viewNumber), {
      type: "request_start_view",
      epoch: this.#membership.epoch,
      viewNumber,
      commitNumber: this.#commitNumber,
      replica: this.#self,
    });
  }

  /**
   * Adopt the log of `viewNumber` from its primary: the entries after `anchor`, the primary's
   * op-number and commit-number. The committed prefix up to `anchor` must already be here;
   * otherwise fetch it first (committed entries can be trusted from anyone).
   */
  #installFromPrimary(
    viewNumber: number,
    anchor: number,
    entries: readonly LogEntry[],
    opNumber: number,
    commitNumber: number,
    opNumberMin = 0,
  ): void {
    const from = `state from primary ${this.#primaryOf(viewNumber)} of view ${viewNumber}`;
    // Callers pass our view or a later one; views never go back.
    if (viewNumber < this.#viewNumber) return this.#ignore(`${from}: an old view`);
    if (!this.#withinStep(viewNumber, from)) return;
    const shape = this.#suffixShape(anchor, entries, opNumber);
    if (shape !== undefined) return this.#log_("warn", `${from}: ${shape}: ignored`);
    if (opNumber < this.#commitNumber || opNumber < opNumberMin) {
      return this.#ignore(`state of view ${viewNumber} ends at op ${opNumber}: stale`);
    }
    if (anchor > this.#commitNumber) {
      // The suffix starts after our committed prefix ends: fetch the committed entries between.
      this.#syncTarget = { viewNumber, opNumberMin: Math.max(opNumberMin, opNumber) };
      this.#sendGetState(this.#primaryOf(viewNumber), viewNumber, this.#commitNumber);
      return;
    }
    const unfit = this.#unfitSuffix(anchor, entries, opNumber);
    if (unfit !== undefined) return this.#log_("warn", `${from} ${unfit}: ignored`);
    this.#replaceUncommitted(entries);
    // An internal invariant: the entries run from at most our commit-number + 1 to opNumber, which
    // is at least our commit-number (checked above).
    assert(this.opNumber === opNumber, "installed log must end at the primary's op-number");
    const wasRecovering = this.#status === "recovering";
    this.#viewNumber = viewNumber;
    this.#transitionToNormal(viewNumber);
    this.#advanceCommit(Math.min(commitNumber, this.opNumber));
    if (wasRecovering) this.#log_("info", `recovered in view ${viewNumber}`);
    this.#sendPrepareOkIfDurable();
  }

  /**
   * Why `entries` cannot be the log after `anchor` up to `opNumber`, or undefined: they must be
   * exactly the entries `anchor + 1 .. opNumber`. The codec checks this for messages from the
   * network; the core does not rely on it, since what follows would assert otherwise.
   */
  #suffixShape(anchor: number, entries: readonly LogEntry[], opNumber: number): string | undefined {
    if (anchor + entries.length !== opNumber) {
      return `${entries.length} entries after op ${anchor} do not end at op ${opNumber}`;
    }
    for (let index = 0; index < entries.length; index++) {
      if (entries[index]!.opNumber !== anchor + 1 + index) {
        return `entries after op ${anchor} are not consecutive`;
      }
    }
    return undefined;
  }

  /**
   * Why the log suffix `entries` (from `anchor + 1` to `opNumber`, checked by `#suffixShape`)
   * cannot replace our uncommitted entries, or undefined. It must start within our log (the
   * caller fetches what lies between otherwise), not end before our commit-number, agree with
   * every entry we committed (committed entries never change, §4.1: agreeing on the op-number and
   * the view that created an entry is agreeing on the entry, see `LogEntry`), and keep the
   * timestamps from going back (§4.4) where it continues the part of our log we keep.
   */
  #unfitSuffix(anchor: number, entries: readonly LogEntry[], opNumber: number): string | undefined {
    if (anchor > this.#commitNumber) return `starts after op ${anchor}, beyond our commit`;
    if (opNumber < this.#commitNumber) return `ends at op ${opNumber}, before our commit`;
    for (const entry of entries) {
      if (entry.opNumber > this.#commitNumber) break;
      if (entry.opNumber < this.#log.baseOpNumber) continue; // Gone into a checkpoint (§5.1).
      if (entry.opNumber === this.#log.baseOpNumber) {
        if (!this.#log.matchesBase(entry)) return `contradicts committed op ${entry.opNumber}`;
        continue;
      }
      const ours = this.#log.entry(entry.opNumber)!;
      if (!sameEntry(ours, entry)) return `contradicts committed op ${entry.opNumber}`;
    }
    const keep = this.#keptPrefix(entries);
    let previous = this.#log.timestampAt(keep)!;
    for (const entry of entries) {
      if (entry.opNumber <= keep) continue;
      if (entry.timestamp < previous) {
        return `has op ${entry.opNumber} stamped before op ${entry.opNumber - 1}`;
      }
      previous = entry.timestamp;
    }
    return undefined;
  }

  /**
   * How much of our log `#replaceUncommitted(entries)` keeps: the committed prefix, and after it
   * the uncommitted entries of ours that `entries` repeat (no need to rewrite them on disk).
   */
  #keptPrefix(entries: readonly LogEntry[]): number {
    let keep = this.#commitNumber;
    for (const entry of entries) {
      if (entry.opNumber <= keep) continue;
      const ours = this.#log.entry(entry.opNumber);
      // Same op-number and view mean the same entry (see `LogEntry`), so the other fields agree
      // too; they are compared anyway (it is cheap), so that an entry forged with the identity of
      // ours is never mistaken for it.
      if (
        ours === undefined || !sameEntry(ours, entry) || entry.opNumber !== keep + 1 ||
        ours.timestamp !== entry.timestamp || ours.clientId !== entry.clientId ||
        ours.requestNumber !== entry.requestNumber
      ) {
        break;
      }
      keep = entry.opNumber;
    }
    return keep;
  }

  /**
   * Replace everything after our commit-number by the entries of `entries` beyond it. The caller
   * has checked them with `#unfitSuffix`.
   */
  #replaceUncommitted(entries: readonly LogEntry[]): void {
    const keep = this.#keptPrefix(entries);
    this.#truncateLog(keep);
    for (const entry of entries) {
      if (entry.opNumber > this.opNumber) this.#appendEntry(entry);
    }
  }

  /**
   * Append committed entries (those up to `committed`) that continue our committed prefix,
   * replacing any uncommitted entries of ours they contradict, and execute them. Committed
   * entries are facts: they can be taken from any replica, in any view.
   */
  #appendCommitted(entries: readonly LogEntry[], committed: number): void {
    for (const entry of entries) {
      if (entry.opNumber > committed) break;
      if (entry.opNumber <= this.#commitNumber) continue;
      if (entry.opNumber !== this.#commitNumber + 1) break;
      const ours = this.#log.entry(entry.opNumber);
      if (ours === undefined || !sameEntry(ours, entry)) {
        if (!this.#timestampFollows(entry, "committed entries")) break;
        this.#truncateLog(entry.opNumber - 1);
        this.#appendEntry(entry);
      }
      this.#advanceCommit(entry.opNumber);
    }
  }

  #transitionToNormal(viewNumber: number): void {
    this.#status = "normal";
    this.#lastNormalView = viewNumber;
    this.#syncTarget = undefined;
    this.#ticksAbdicating = 0;
    this.#resetViewState();
    this.#persistSuperblock();
  }

  /** Forget per-view bookkeeping when entering a new view or status. */
  #resetViewState(): void {
    this.#acked.fill(-1);
    this.#heardAtTick.fill(this.#ticks); // A grace period: a new view has heard from no one yet.
    this.#progressAtTick.fill(this.#ticks);
    this.#preparedOpNumber = this.opNumber;
    this.#sentTo.fill(this.opNumber);
    this.#chooseSpares();
    this.#preparesInFlight = [];
    this.#prepareOkSentOpNumber = 0;
    // Reads of an earlier view are dropped (their clients retry); rounds count from 1 per view.
    this.#pendingReads = [];
    this.#readRequestNumbers.clear();
    this.#readRound = 0;
    this.#readRoundAcked.fill(0);
    this.#readRoundSeen = 0;
    this.#ticksSincePrimary = 0;
    this.#ticksSinceSend = 0;
    this.#primaryTimeoutTicks = this.#drawPrimaryTimeout();
  }

  #tickViewChange(): void {
    this.#ticksInViewChange++;
    this.#ticksSinceViewChangeSend++;
    this.#ticksSinceGetState++;
    if (this.#ticksInViewChange >= this.timing.viewChangeTimeoutTicks + this.#jitter()) {
      this.#log_("info", `view change to view ${this.#viewNumber} stalled`);
      this.#startViewChange(this.#viewNumber + 1);
      return;
    }
    if (this.#ticksSinceViewChangeSend >= this.timing.retryTicks) {
      this.#ticksSinceViewChangeSend = 0;
      this.#broadcastStartViewChange();
      if (this.#doViewChangeSent) this.#sendDoViewChange();
      if (this.isPrimary) this.#maybeStartView();
      this.#retrySync();
    }
  }

  // ------------------------------------------------------------------ §4.3 recovery

  #startRecovery(): void {
    this.#status = "recovering";
    this.#recoveries++;
    this.#recoveryNonce = this.#random.nextUint32() + 1;
    this.#recoveryResponses = new Map();
    this.#ticksSinceRecoverySend = 0;
    this.#log_("info", `recovering (nonce ${this.#recoveryNonce})`);
    this.#persistSuperblock();
    this.#broadcastRecovery();
  }

  #broadcastRecovery(): void {
    this.#broadcast({
      type: "recovery",
      epoch: this.#membership.epoch,
      nonce: this.#recoveryNonce,
      commitNumber: this.#commitNumber,
      replica: this.#self,
    });
  }

  #onRecovery(message: Recovery): void {
    if (this.#status !== "normal") return this.#ignore(`recovery: status ${this.#status}`);
    const isPrimary = this.isPrimary;
    const anchor = isPrimary ? this.#transferAnchor(message.commitNumber) : 0;
    this.#send(message.replica, {
      type: "recovery_response",
      epoch: this.#membership.epoch,
      viewNumber: this.#viewNumber,
      nonce: message.nonce,
      isPrimary,
      anchorOpNumber: anchor,
      entries: isPrimary && anchor < this.opNumber
        ? this.#log.slice(anchor + 1, this.opNumber)
        : [],
      opNumber: isPrimary ? this.opNumber : 0,
      commitNumber: isPrimary ? this.#commitNumber : 0,
      replica: this.#self,
    });
  }

  /**
   * §4.3 With f+1 responses carrying our nonce, one of them from the primary of the latest view
   * among them, adopt that primary's state. Fix for the known defect (Michael et al., DISC 2017):
   * the view must be at least the view this replica persisted before it crashed.
   */
  #onRecoveryResponse(message: RecoveryResponse): void {
    if (this.#status !== "recovering") return this.#ignore("recovery_response: not recovering");
    if (
      message.nonce !== this.#recoveryNonce &&
      this.#plantedBug !== "recovery_without_nonce_check"
    ) {
      return this.#ignore("recovery_response: another recovery's nonce");
    }
    // §4.3 Only the primary of a view sends its log state.
    if (message.isPrimary && message.replica !== this.#primaryOf(message.viewNumber)) {
      return this.#ignore("recovery_response: isPrimary from a backup of its view");
    }
    // The latest view among the responses is the one to recover into: it must be reachable.
    // No step bound here: a recovering replica adopts the view the f + 1 answers to its own nonce
    // agree on, however far ahead (it may have been away while the group moved on).
    this.#recoveryResponses.set(message.replica, message);
    if (this.#recoveryResponses.size < this.f + 1) return;
    let latest = -1;
    for (const response of this.#recoveryResponses.values()) {
      if (response.viewNumber > latest) latest = response.viewNumber;
    }
    if (latest < this.#viewNumber) {
      // The group has not reached the view we persisted (a view change we joined never
      // completed). We may not recover into an older view (DISC 2017), so push the group on.
      this.#broadcastStartViewChange();
      return;
    }
    let primary: RecoveryResponse | undefined;
    for (const response of this.#recoveryResponses.values()) {
      if (response.isPrimary && response.viewNumber === latest) primary = response;
    }
    if (primary === undefined) return;
    this.#installFromPrimary(
      primary.viewNumber,
      primary.anchorOpNumber,
      primary.entries,
      primary.opNumber,
      primary.commitNumber,
      primary.opNumber,
    );
  }

  #tickRecovering(): void {
    this.#ticksSinceRecoverySend++;
    if (this.#ticksSinceRecoverySend >= this.timing.retryTicks) {
      this.#ticksSinceRecoverySend = 0;
      this.#retrySync();
      // Responses of a newer view restart the transfer from that view's primary.
      this.#broadcastRecovery();
    }
  }

  // ------------------------------------------------------------------ §5.2 state transfer

  /** A backup that is behind in its own view asks its primary for the missing entries. */
  #requestState(reason: string): void {
    if (this.#ticksSinceGetState < this.timing.retryTicks && this.#ticksSinceGetState > 0) return;
    this.#debugLog(() => `state transfer: ${reason}`);
    this.#ticksSinceGetState = 0;
    this.#sendGetState(this.primaryIndex, this.#viewNumber, this.opNumber);
  }

  #sendGetState(to: ReplicaIndex, viewNumber: number, opNumber: number): void {
    if (to === this.replicaIndex) return;
    this.#send(to, {
      type: "get_state",
      epoch: this.#membership.epoch,
      viewNumber,
      opNumber,
      replica: this.#self,
    });
  }

  #onGetState(message: GetState): void {
    if (this.#status === "recovering") return this.#ignore("get_state: recovering");
    if (this.#standby) return this.#ignore("get_state: not told its group yet");
    const normal = this.#status === "normal";
    // Uncommitted entries are only meaningful to a replica of the same view (and epoch); send
    // committed ones to anyone else.
    const upTo = normal && message.viewNumber === this.#viewNumber &&
        message.epoch === this.#membership.epoch
      ? this.opNumber
      : this.#commitNumber;
    if (message.opNumber > upTo) return this.#ignore("get_state: nothing to send");
    if (message.opNumber < this.#log.baseOpNumber) {
      // The entries it asks for are gone into our checkpoint: send that instead (§5.1).
      return this.#sendManifest(message.replica);
    }
    const all = this.#log.sliceBounded(
      message.opNumber,
      this.limits.transferOpsMax,
      this.limits.transferBytesMax,
    );
    const entries = all.filter((entry) => entry.opNumber <= upTo);
    this.#send(message.replica, {
      type: "new_state",
      epoch: this.#membership.epoch,
      viewNumber: this.#viewNumber,
      normal,
      anchorOpNumber: message.opNumber,
      entries,
      opNumber: this.opNumber,
      commitNumber: this.#commitNumber,
      replica: this.#self,
    });
  }

  #onNewState(message: NewState): void {
    if (this.#standby && this.#joining === undefined) {
      // An answer meant for an earlier run of this process: a new process takes no state before
      // a StartEpoch tells it which Reconfiguration it joins at (else it could pass it unseen).
      return this.#ignore("new_state: not told its group yet");
    }
    if (
      message.epoch !== this.#membership.epoch || this.#joining !== undefined ||
      this.#status === "transitioning"
    ) {
      // §7 From another epoch, or while joining one: only the committed entries are of use, and
      // they are facts whoever sends them. They bring the Reconfiguration that moves us on.
      const before = this.#commitNumber;
      this.#appendCommitted(message.entries, message.commitNumber);
      if (this.#commitNumber > before && message.commitNumber > this.#commitNumber) {
        this.#sendGetState(message.replica, this.#viewNumber, this.#commitNumber);
      }
      return;
    }
    // A replica adopting the log of a view from that view's primary (after StartView,
    // RequestStartView or recovery): install the state once it reaches the primary's op-number,
    // and meanwhile keep the committed entries it carries.
    const sync = this.#syncTarget;
    if (sync !== undefined && sync.viewNumber === message.viewNumber) {
      if (!message.normal || message.replica !== this.#primaryOf(message.viewNumber)) {
        return this.#ignore("new_state: not from the normal primary of the view we adopt");
      }
      if (
        message.anchorOpNumber <= this.#commitNumber &&
        message.anchorOpNumber + message.entries.length === message.opNumber &&
        message.opNumber >= sync.opNumberMin
      ) {
        this.#installFromPrimary(
          message.viewNumber,
          message.anchorOpNumber,
          message.entries,
          message.opNumber,
          message.commitNumber,
          sync.opNumberMin,
        );
      } else {
        const before = this.#commitNumber;
        this.#appendCommitted(message.entries, message.commitNumber);
        // Ask for the next part only when this one was news. Were every NewState to ask again,
        // a duplicated or stale one would add a request in flight for good, and duplicates of
        // those would multiply them without bound (seed 788778535, high load). Losses are
        // covered by the retry on tick.
        if (this.#commitNumber > before || this.#plantedBug === "get_state_on_every_new_state") {
          this.#sendGetState(message.replica, sync.viewNumber, this.#commitNumber);
        }
      }
      return;
    }
    if (this.#status === "normal") {
      if (message.viewNumber > this.#viewNumber) return this.#learnNewerView(message.viewNumber);
      if (
        message.viewNumber < this.#viewNumber || !message.normal || this.isPrimary ||
        message.replica !== this.primaryIndex
      ) {
        return this.#ignore("new_state: not from the normal primary of our view");
      }
      // §5.2 A backup behind in its own view: the entries continue its log, since the logs of
      // normal replicas in one view are prefixes of the primary's.
      const before = this.opNumber;
      for (const entry of message.entries) {
        if (entry.opNumber <= this.opNumber) continue;
        if (entry.opNumber !== this.opNumber + 1) break;
        if (!this.#timestampFollows(entry, "new_state")) break;
        this.#appendEntry(entry);
      }
      this.#ticksSinceGetState = this.timing.retryTicks; // Allow the next request at once.
      this.#advanceCommit(Math.min(message.commitNumber, this.opNumber));
      // More to fetch: ask for it now rather than at the next heartbeat (a backup catching up
      // after a checkpoint fetched a transfer per heartbeat, 20,000 entries a second). Only on
      // news, so that duplicated NewStates add no requests (see the sync case above).
      if (this.opNumber > before && message.opNumber > this.opNumber) {
        this.#requestState(`new_state: the primary's log goes on to op ${message.opNumber}`);
      }
      return;
    }
    // The new primary during a view change, fetching committed entries it lacks (§5.3).
    if (this.#status === "view_change" && this.isPrimary) {
      if (message.viewNumber > this.#viewNumber) {
        // The group has moved past the view we are starting: commits made in a view between may
        // extend beyond every log our DoViewChange quorum holds, so join the later view instead of
        // completing ours with them (seed 479877611): adopt it from its primary if the responder
        // is normal there, else take part in its view change.
        if (message.normal) return this.#learnNewerView(message.viewNumber);
        if (!this.#withinStep(message.viewNumber, `new_state from ${message.replica}`)) return;
        return this.#startViewChange(message.viewNumber);
      }
      const before = this.#commitNumber;
      this.#appendCommitted(message.entries, message.commitNumber);
      if (this.#commitNumber > before) this.#maybeStartView();
      return;
    }
    this.#ignore("new_state: not expected");
  }

  /** Re-send the request for the state of the view this replica is adopting, if any. */
  #retrySync(): void {
    const sync = this.#syncTarget;
    if (sync === undefined) return;
    this.#sendGetState(this.#primaryOf(sync.viewNumber), sync.viewNumber, this.#commitNumber);
  }

  // ------------------------------------------------------------------ §5.1 checkpoints

  /**
   * Begin a checkpoint of the state just after `entry` executed: the client table as it is now,
   * then the state machine's snapshot, which stays consistent while the driver writes it.
   */
  #beginCheckpoint(entry: LogEntry): void {
    if (this.#checkpointWriting !== undefined) return; // One at a time; a later op-number tries.
    if (this.#standby) return; // Joining: it does not know the group's membership at this op.
    // Replaying below the membership this replica holds (a restart): that membership is not the
    // one after this op, and a checkpoint must carry the one after its op (found by review).
    if (entry.opNumber < this.#membership.opNumber) return;
    if (entry.opNumber <= (this.#checkpoint?.opNumber ?? 0)) return;
    let reader: CheckpointChunkReader | undefined;
    const chunkBytes = this.limits.checkpointChunkBytes;
    const table = encodeClientTable(
      this.#plantedBug === "checkpoint_without_client_table" ? [] : this.#clientTable.records(),
      chunkBytes,
    );
    try {
      reader = new CheckpointChunkReader(table, this.app, chunkBytes);
    } catch (error) {
      // The app's snapshot threw (a bug of the app's): no checkpoint, the log keeps its entries,
      // and the replica goes on serving; a later op-number tries again.
      return this.#log_(
        "warn",
        `no checkpoint of op ${entry.opNumber}: the state machine's snapshot threw: ${
          error instanceof Error ? error.message : String(error)
        }`,
      );
    }
    this.#checkpointWriting = entry.opNumber;
    this.#bytesSinceCheckpointBegun = 0;
    this.#checkpointsTaken++;
    const metadata = encodeCheckpointMetadata({
      opNumber: entry.opNumber,
      entryViewNumber: entry.viewNumber,
      entryTimestamp: entry.timestamp,
      requestNumberFloor: this.#clientTable.requestNumberFloor,
      tableChunkCount: table.length,
      membership: this.#membership,
    });
    const effect: Extract<Effect, { type: "checkpoint" }> = {
      type: "checkpoint",
      opNumber: entry.opNumber,
      viewNumber: entry.viewNumber,
      metadata,
      reader,
    };
    if (this.#logDurableOpNumber >= entry.opNumber) this.#effects.push(effect);
    else this.#checkpointHeld = effect;
  }

  /** The held checkpoint goes out once the log reaches it on disk. */
  #releaseHeldCheckpoint(): void {
    const held = this.#checkpointHeld;
    if (held === undefined || this.#logDurableOpNumber < held.opNumber) return;
    this.#checkpointHeld = undefined;
    this.#effects.push(held);
  }

  /** A checkpoint replaced the state: one begun before it is of no use. */
  #dropCheckpointInProgress(): void {
    if (this.#checkpointHeld !== undefined) {
      this.#checkpointHeld.reader.close();
      this.#checkpointHeld = undefined;
      this.#checkpointWriting = undefined;
    }
  }

  /** The size of the newest durable checkpoint's chunks, 0 without one. */
  #checkpointBytes(): number {
    let bytes = 0;
    for (const chunk of this.#checkpoint?.chunks ?? []) bytes += chunk.length;
    return bytes;
  }

  #setCheckpoint(checkpoint: Checkpoint): void {
    const newest = this.#checkpoint;
    if (newest === undefined || checkpoint.opNumber > newest.opNumber) {
      this.#previousCheckpoint = newest;
      this.#checkpoint = checkpoint;
    } else if (checkpoint.opNumber === newest.opNumber) {
      this.#checkpoint = checkpoint;
    }
  }

  #sendManifest(to: ReplicaIndex): void {
    const checkpoint = this.#checkpoint;
    if (checkpoint === undefined) return this.#ignore("no checkpoint to send");
    this.#send(to, {
      type: "checkpoint_manifest",
      epoch: this.#membership.epoch,
      viewNumber: this.#viewNumber,
      opNumber: checkpoint.opNumber,
      metadata: checkpoint.metadata,
      chunks: checkpoint.chunks,
      replica: this.#self,
    });
  }

  /**
   * A replica further behind than our log reaches was sent a checkpoint's manifest: fetch its
   * chunks, except those held already (of a fetch this one replaces, or of our own state, which
   * shares most chunks with a recent checkpoint when we were away briefly).
   */
  #onCheckpointManifest(message: CheckpointManifest): void {
    if (this.#standby && this.#joining === undefined) {
      return this.#ignore("checkpoint_manifest: not told its group yet");
    }
    if (message.opNumber <= this.#commitNumber) return this.#ignore("checkpoint_manifest: behind");
    if (
      this.#status === "normal" && this.isPrimary && this.#syncTarget === undefined &&
      this.#joining === undefined
    ) {
      // It holds every committed op of its view; a later view's state comes by StartView.
      return this.#ignore("checkpoint_manifest: the normal primary needs none");
    }
    if (this.#fetch !== undefined && this.#fetch.checkpoint.opNumber >= message.opNumber) {
      return this.#ignore("checkpoint_manifest: fetching that one or a later one");
    }
    const metadata = decodeCheckpointMetadata(message.metadata);
    const count = message.chunks.length;
    const bad = typeof metadata === "string"
      ? metadata
      : metadata.opNumber !== message.opNumber
      ? `metadata of op ${metadata.opNumber}`
      : metadata.tableChunkCount < 1 || metadata.tableChunkCount > count
      ? `${metadata.tableChunkCount} client table chunks of ${count}`
      : undefined;
    if (bad !== undefined || typeof metadata === "string") {
      return this.#log_("warn", `checkpoint_manifest from ${message.replica}: ${bad}: ignored`);
    }
    if (metadata.membership.opNumber > message.opNumber) {
      // A membership begun after the checkpoint's op cannot be the one after it.
      return this.#log_(
        "warn",
        `checkpoint_manifest from ${message.replica}: of op ${message.opNumber}, with the ` +
          `membership of op ${metadata.membership.opNumber}: ignored`,
      );
    }
    if (
      !this.#standby && metadata.membership.epoch < this.#membership.epoch &&
      message.opNumber >= this.#membership.opNumber
    ) {
      // After our epoch's Reconfiguration, yet of an earlier epoch: not the group's history.
      return this.#log_("warn", `checkpoint_manifest from ${message.replica}: of an older epoch`);
    }
    const previous = this.#fetch ?? this.#fetchAbandoned;
    this.#fetchAbandoned = undefined;
    const checkpoint: Checkpoint = {
      opNumber: message.opNumber,
      viewNumber: metadata.entryViewNumber,
      metadata: message.metadata,
      chunks: message.chunks,
    };
    const byHash = new Map<string, number[]>();
    message.chunks.forEach((chunk, index) => {
      const key = hashKey(chunk.hash);
      const indexes = byHash.get(key);
      if (indexes === undefined) byHash.set(key, [index]);
      else indexes.push(index);
    });
    const fetch: CheckpointFetch = {
      checkpoint,
      entryViewNumber: metadata.entryViewNumber,
      entryTimestamp: metadata.entryTimestamp,
      tableChunkCount: metadata.tableChunkCount,
      held: new Array<Uint8Array | undefined>(count).fill(undefined),
      byHash,
      missing: count,
      from: message.replica,
      asked: new Set(),
      cursor: 0,
      progressAtTick: this.#ticks,
      fruitlessAsks: 0,
    };
    let reused = 0;
    if (previous !== undefined) {
      previous.held.forEach((bytes, index) => {
        if (bytes !== undefined) {
          reused += this.#takeChunk(fetch, hashKey(previous.checkpoint.chunks[index]!.hash), bytes);
        }
      });
    }
    const reader = beginSnapshotOf(this.app, this.limits.checkpointChunkBytes);
    try {
      for (let chunk = reader.next(); chunk !== undefined; chunk = reader.next()) {
        if (fetch.missing === 0) break;
        reused += this.#takeChunk(fetch, hashKey(this.#chunkHash(chunk)), chunk);
      }
    } finally {
      reader.close();
    }
    this.#chunksReused += reused;
    this.#fetch = fetch;
    this.#log_(
      "info",
      `fetching the checkpoint of op ${message.opNumber} from ${message.replica}: ${count} ` +
        `chunks, ${count - fetch.missing} of them held here`,
    );
    this.#continueFetch();
  }

  /** Take `bytes` for every missing chunk with hash `key`; how many it filled. */
  #takeChunk(fetch: CheckpointFetch, key: string, bytes: Uint8Array): number {
    let taken = 0;
    for (const index of fetch.byHash.get(key) ?? []) {
      fetch.asked.delete(index);
      if (fetch.held[index] !== undefined) continue;
      fetch.held[index] = bytes;
      fetch.missing--;
      taken++;
    }
    return taken;
  }

  #onGetCheckpointChunks(message: GetCheckpointChunks): void {
    const checkpoint = [this.#checkpoint, this.#previousCheckpoint].find((held) =>
      held?.opNumber === message.opNumber
    );
    if (checkpoint === undefined) {
      // Not a checkpoint we hold (any more): ours may do instead.
      return this.#sendManifest(message.replica);
    }
    if (
      message.indexes.length > CHECKPOINT_CHUNKS_PER_REQUEST_MAX ||
      message.indexes.some((index) => index >= checkpoint.chunks.length)
    ) {
      return this.#log_(
        "warn",
        `${describeMessage(message)} from ${message.replica}: no such chunks: ignored`,
      );
    }
    this.#emit({
      type: "send_checkpoint_chunks",
      to: message.replica,
      opNumber: message.opNumber,
      indexes: message.indexes,
    });
  }

  #onCheckpointChunk(message: CheckpointChunk): void {
    const fetch = this.#fetch;
    if (fetch === undefined || fetch.checkpoint.opNumber !== message.opNumber) {
      return this.#ignore("checkpoint_chunk: not the checkpoint being fetched");
    }
    const info = fetch.checkpoint.chunks[message.index];
    if (info === undefined) return this.#ignore("checkpoint_chunk: no such chunk");
    if (fetch.held[message.index] !== undefined) return this.#ignore("checkpoint_chunk: held");
    if (
      message.bytes.length !== info.length || !bytesEqual(this.#chunkHash(message.bytes), info.hash)
    ) {
      fetch.asked.delete(message.index);
      return this.#log_(
        "warn",
        `checkpoint_chunk ${message.index} of op ${message.opNumber} from ${message.replica}: ` +
          "not the chunk its manifest names: ignored",
      );
    }
    // A copy of its own: not a view that keeps a whole received frame alive.
    this.#takeChunk(fetch, hashKey(info.hash), message.bytes.slice());
    this.#chunksFetched++;
    fetch.progressAtTick = this.#ticks;
    fetch.fruitlessAsks = 0;
    this.#continueFetch();
  }

  /** Ask for more chunks, or install the checkpoint once every chunk is here. */
  #continueFetch(): void {
    const fetch = this.#fetch!;
    const incomplete = this.#plantedBug === "install_incomplete_checkpoint" &&
      fetch.missing <= fetch.held.length / 2 &&
      fetch.held.slice(0, fetch.tableChunkCount).every((bytes) => bytes !== undefined);
    if (fetch.missing === 0 || incomplete) return this.#installFetched();
    const room = Math.min(
      this.limits.checkpointChunksInFlight - fetch.asked.size,
      CHECKPOINT_CHUNKS_PER_REQUEST_MAX,
    );
    const indexes: number[] = [];
    for (; fetch.cursor < fetch.held.length && indexes.length < room; fetch.cursor++) {
      const index = fetch.cursor;
      if (fetch.held[index] === undefined && !fetch.asked.has(index)) indexes.push(index);
    }
    if (indexes.length === 0) return;
    for (const index of indexes) fetch.asked.add(index);
    this.#send(fetch.from, {
      type: "get_checkpoint_chunks",
      epoch: this.#membership.epoch,
      opNumber: fetch.checkpoint.opNumber,
      indexes,
      replica: this.#self,
    });
  }

  #tickFetch(): void {
    const fetch = this.#fetch!;
    if (fetch.checkpoint.opNumber <= this.#commitNumber) {
      this.#fetch = undefined;
      return this.#log_("info", `caught up past op ${fetch.checkpoint.opNumber} by the log`);
    }
    if (this.#ticks - fetch.progressAtTick < this.timing.retryTicks) return;
    const candidates = this.#stateSources();
    if (fetch.fruitlessAsks >= candidates.length + 1) {
      // Every other replica was asked and none sent a chunk: none holds this checkpoint any more
      // (its holder lost it, or every holder has two newer ones). Give up on it; the next
      // manifest, newer or older, starts another fetch, which keeps the chunks held so far.
      this.#fetch = undefined;
      this.#fetchAbandoned = fetch;
      return this.#log_(
        "info",
        `no replica sends the checkpoint of op ${fetch.checkpoint.opNumber}: given up`,
      );
    }
    fetch.fruitlessAsks++;
    // No chunk for a while: the sender crashed, lost our requests, or no longer holds the
    // checkpoint. Every replica checkpoints at the same op-numbers, so ask the next one.
    const at = candidates.indexOf(fetch.from);
    fetch.from = candidates[(at + 1) % candidates.length] ?? fetch.from;
    fetch.asked.clear();
    fetch.cursor = 0;
    fetch.progressAtTick = this.#ticks;
    this.#continueFetch();
  }

  /**
   * Replace the state by the fetched checkpoint's: the state machine, the client table, and the
   * log, which keeps only entries after the checkpoint that continue it. Durable through an
   * "install_checkpoint" persist, ordered with the log writes after it.
   */
  #installFetched(): void {
    const fetch = this.#fetch!;
    this.#fetch = undefined;
    this.#fetchAbandoned = undefined;
    const { checkpoint } = fetch;
    const op = checkpoint.opNumber;
    if (op <= this.#commitNumber) return this.#ignore("checkpoint: caught up meanwhile");
    const present: number[] = [];
    fetch.held.forEach((bytes, index) => {
      if (bytes !== undefined) present.push(index);
    });
    const installed: Checkpoint = present.length === fetch.held.length
      ? checkpoint
      : { ...checkpoint, chunks: present.map((index) => checkpoint.chunks[index]!) };
    const chunks = present.map((index) => fetch.held[index]!);
    let restored: RestoredCheckpoint;
    let restorer: CheckpointRestorer | undefined;
    try {
      restorer = new CheckpointRestorer(this.app, installed);
      for (const bytes of chunks) restorer.chunk(bytes);
      restored = restorer.finish();
    } catch (error) {
      restorer?.abort();
      return this.#log_(
        "warn",
        `checkpoint of op ${op}: cannot install it (${(error as Error).message}): ignored`,
      );
    }
    // Entries of ours after the checkpoint continue it if ours at its op-number is its entry.
    const ours = this.#log.entry(op);
    const kept = ours !== undefined && ours.viewNumber === fetch.entryViewNumber &&
        ours.timestamp === fetch.entryTimestamp && this.opNumber > op
      ? this.#log.slice(op + 1, this.opNumber)
      : [];
    this.#dropCheckpointInProgress();
    this.#log.reset(op, fetch.entryTimestamp, fetch.entryViewNumber);
    this.#commitNumber = op;
    this.#clientTable.restore(restored.metadata.requestNumberFloor, restored.clientTable);
    // The disk gets the checkpoint, then the log after it: what it held before is superseded.
    this.#logDirtyFrom = Infinity;
    for (const write of this.#pendingLogWrites) {
      if (write.toOp > op) write.toOp = op;
    }
    const id = this.#persistIdNext++;
    this.#effects.push({ type: "install_checkpoint", id, checkpoint: installed, chunks });
    this.#pendingLogWrites.push({ id, toOp: op });
    if (this.#logDurableOpNumber > op) this.#logDurableOpNumber = op;
    if (this.#prepareOkSentOpNumber > op) this.#prepareOkSentOpNumber = op;
    // A deposed primary adopting a later view: nothing before the checkpoint goes out again.
    if (this.#preparedOpNumber < op) this.#preparedOpNumber = op;
    this.#logDirtyFrom = op + 1; // An empty write, if nothing follows, says where the log ends.
    for (const entry of kept) this.#appendEntry(entry);
    this.#recomputeUncommitted();
    this.#bytesSinceCheckpoint = 0;
    this.#bytesSinceCheckpointBegun = 0;
    // Offered to others once its install is durable (before, the driver could not serve it).
    this.#installPending = { id, checkpoint: installed };
    this.#checkpointsInstalled++;
    this.#log_(
      "info",
      `installed the checkpoint of op ${op} (${chunks.length} chunks; kept ${kept.length} ` +
        "entries after it)",
    );
    const membership = restored.metadata.membership;
    const joiningEpoch = this.#joining?.membership.epoch ?? Infinity;
    if (
      this.#standby ? membership.epoch >= joiningEpoch : membership.epoch > this.#membership.epoch
    ) {
      return this.#enterEpochByCheckpoint(membership);
    }
    // Carry on with what needed the state: the log after the checkpoint.
    if (this.#joining !== undefined) {
      this.#ticksSinceJoinAsk = 0;
      return this.#sendGetState(fetch.from, this.#viewNumber, this.#commitNumber);
    }
    if (this.#syncTarget !== undefined) return this.#retrySync();
    if (this.#status === "view_change" && this.isPrimary) return this.#maybeStartView();
    if (this.#status === "normal" && !this.isPrimary) {
      this.#ticksSinceGetState = this.timing.retryTicks;
      this.#requestState(`installed the checkpoint of op ${op}`);
    }
  }

  // ------------------------------------------------------------------ §7 reconfiguration

  /**
   * A client message that this replica cannot serve because it is not (or not yet) a member:
   * a replica that left tells the client of the group that replaced it (§7.4); a new process not
   * told its group says nothing. True when handled.
   */
  #redirectClient(clientId: number, requestNumber = 0): boolean {
    if (this.#standby) {
      this.#ignore("client message: not told its group yet");
      return true;
    }
    if (this.#status !== "transitioning" || this.#memberPosition(this.#self) >= 0) return false;
    this.#replyConfiguration(clientId, requestNumber);
    return true;
  }

  #replyConfiguration(clientId: number, requestNumber: number): void {
    this.#emitReply(clientId, {
      type: "configuration",
      clientId,
      requestNumber,
      epoch: this.#membership.epoch,
      viewNumber: this.#viewNumber,
      addresses: this.#memberAddresses,
      replica: this.#self,
      requestNumberFloor: this.#clientTable.requestNumberFloor,
    });
  }

  /** Whether the primary may take a request now; answers the client (or not) otherwise. */
  #primaryTakes(clientId: number, requestNumber: number, what: string): boolean {
    if (this.#status !== "normal") {
      this.#ignore(`${what}: status ${this.#status}`);
      return false;
    }
    if (!this.isPrimary) {
      this.#emitReply(clientId, {
        type: "not_primary",
        clientId,
        requestNumber,
        viewNumber: this.#viewNumber,
        replica: this.#self,
      });
      return false;
    }
    if (this.opNumber - this.#commitNumber >= this.limits.pipelineOpsMax) {
      this.#ignore(`${what}: pipeline full`);
      return false;
    }
    return true;
  }

  /** §7.1 An administrator asks to move the group to a new configuration. */
  #onReconfiguration(message: Reconfiguration): void {
    const what = `reconfiguration c=${message.clientId} s=${message.requestNumber}`;
    const epoch = this.#membership.epoch;
    if (message.epoch < epoch) {
      // A retry of one that committed, or one decided before another: the group is past it.
      return this.#replyConfiguration(message.clientId, message.requestNumber);
    }
    if (!this.#primaryTakes(message.clientId, message.requestNumber, what)) return;
    const reject = (reason: RejectReason, floor: number) =>
      this.#emitReply(message.clientId, {
        type: "rejected",
        clientId: message.clientId,
        requestNumber: message.requestNumber,
        reason,
        floor,
        replica: this.#self,
      });
    if (message.clientId === GROUP_CLIENT_ID) return this.#ignore(`${what}: client-id 0`);
    if (message.epoch > epoch) return this.#ignore(`${what}: epoch ${message.epoch} is ahead`);
    if (this.#reconfigurationOpNumber > 0) {
      const pending = decodeGroupOperation(
        this.#log.entry(this.#reconfigurationOpNumber)!.operation,
      );
      if (
        typeof pending !== "string" && pending.clientId === message.clientId &&
        pending.requestNumber === message.requestNumber
      ) {
        return this.#ignore(`${what}: in progress`);
      }
      return reject("reconfiguring", epoch);
    }
    const problem = configurationProblem(message.addresses, this.#membership);
    if (problem !== undefined) {
      this.#log_("info", `${what}: refused: ${problem}`);
      return reject("bad_configuration", epoch);
    }
    this.#log_(
      "info",
      `${what}: epoch ${epoch + 1} with ${message.addresses.join(", ")}: no other request until ` +
        "it commits",
    );
    this.#appendGroupEntry({
      kind: "reconfiguration",
      clientId: message.clientId,
      requestNumber: message.requestNumber,
      addresses: [...message.addresses],
    });
  }

  /** §7.3 An administrator asks the new group to confirm it runs: committed like a request. */
  #onCheckEpoch(message: CheckEpoch): void {
    const what = `check_epoch c=${message.clientId} s=${message.requestNumber}`;
    if (message.clientId === GROUP_CLIENT_ID) return this.#ignore(`${what}: client-id 0`);
    if (!this.#primaryTakes(message.clientId, message.requestNumber, what)) return;
    if (message.epoch > this.#membership.epoch) {
      // This replica lags (the group is in that epoch, or the administrator is wrong): it cannot
      // tell which, and does not answer; the administrator asks the others.
      return this.#ignore(`${what}: epoch ${message.epoch} is ahead of ours`);
    }
    if (this.#reconfigurationOpNumber > 0) return this.#ignore(`${what}: reconfiguring`);
    this.#appendGroupEntry({
      kind: "check_epoch",
      clientId: message.clientId,
      requestNumber: message.requestNumber,
      epoch: message.epoch,
    });
  }

  #appendGroupEntry(operation: GroupOperation): void {
    if (this.opNumber >= OP_NUMBER_MAX) {
      return this.#log_("warn", "group operation: the log reached OP_NUMBER_MAX");
    }
    this.#appendEntry({
      opNumber: this.opNumber + 1,
      viewNumber: this.#viewNumber,
      clientId: GROUP_CLIENT_ID,
      requestNumber: operation.requestNumber,
      operation: encodeGroupOperation(operation),
      timestamp: Math.max(this.#clockMs, this.#log.lastTimestamp),
    });
  }

  /** A group entry joined the log: a Reconfiguration stops the primary taking requests. */
  #noteGroupEntry(entry: LogEntry): void {
    const operation = decodeGroupOperation(entry.operation);
    if (typeof operation !== "string" && operation.kind === "reconfiguration") {
      this.#reconfigurationOpNumber = entry.opNumber;
    }
  }

  /**
   * Execute a group entry (client-id 0). A Reconfiguration moves the group to its next epoch
   * (§7.1): true then. The primary answers the administrator.
   */
  #executeGroupEntry(entry: LogEntry, replying: boolean): boolean {
    if (this.#reconfigurationOpNumber === entry.opNumber) this.#reconfigurationOpNumber = 0;
    const operation = decodeGroupOperation(entry.operation);
    if (typeof operation === "string") {
      // Committed, so every replica skips it alike; only a bug or a forged log writes one.
      this.#log_("warn", `op ${entry.opNumber}: ${operation}: skipped`);
      return false;
    }
    if (operation.kind === "check_epoch") {
      if (replying) this.#replyConfiguration(operation.clientId, operation.requestNumber);
      return false;
    }
    const joining = this.#joining;
    if (this.#standby) {
      // A new process learns the group only from the Reconfiguration it was told of: earlier ones
      // are of epochs it never belonged to.
      if (joining === undefined || entry.opNumber !== joining.membership.opNumber) return false;
      const named = memberAddresses(joining.membership);
      if (
        joining.membership.startViewNumber !== entry.viewNumber + 1 ||
        operation.addresses.length !== named.length ||
        operation.addresses.some((address, index) => address !== named[index])
      ) {
        this.#log_(
          "warn",
          `op ${entry.opNumber} is not the Reconfiguration the StartEpoch named: not joining`,
        );
        this.#joining = undefined;
        return false;
      }
      this.#enterEpoch(joining.membership, false);
      return true;
    }
    if (entry.opNumber <= this.#membership.opNumber) return false; // Adopted already (restart).
    const problem = configurationProblem(operation.addresses, this.#membership);
    if (problem !== undefined) {
      // The primary checked it; only a bug or a forged log writes one. Every replica skips it
      // alike (the check depends on the membership and the entry only).
      this.#log_("warn", `op ${entry.opNumber}: a Reconfiguration to ${problem}: skipped`);
      return false;
    }
    const next = nextMembership(
      this.#membership,
      operation.addresses,
      entry.opNumber,
      entry.viewNumber,
    );
    if (
      joining !== undefined && joining.membership.epoch === next.epoch &&
      !sameMembership(joining.membership, next)
    ) {
      this.#log_("warn", `epoch ${next.epoch}: a StartEpoch named another membership than the log`);
    }
    this.#enterEpoch(next, replying);
    if (replying) this.#replyConfiguration(operation.clientId, operation.requestNumber);
    return true;
  }

  /** Take `membership` as the group's, with everything that depends on it. */
  #setMembership(membership: Membership): void {
    this.#membership = membership;
    this.#members = membership.members;
    this.#f = (membership.members.length - 1) / 2;
    this.#memberAddresses = memberAddresses(membership);
    this.#self = membership.addresses.indexOf(this.#selfAddress);
    this.#standby = false;
    const ids = membership.addresses.length;
    const grow = <T>(array: T[], fill: T) => {
      while (array.length < ids) array.push(fill);
    };
    grow(this.#acked, -1);
    grow(this.#heardAtTick, this.#ticks);
    grow(this.#progressAtTick, this.#ticks);
    grow(this.#readRoundAcked, 0);
    grow(this.#sentTo, 0);
    grow(this.#spare, false);
    if ((this.#joining?.membership.epoch ?? Infinity) <= membership.epoch) {
      this.#joining = undefined;
    }
    this.#epochStartedFrom = new Set();
    this.#newEpochToldAt.clear();
    this.#heardFromMembers = new Set();
    this.#reconfigurationOpNumber = 0;
  }

  /**
   * §7.1 Move to the epoch of `membership`, whose Reconfiguration this replica just executed (the
   * log up to it is here; nothing after it is the old epoch's). A member starts the epoch's first
   * view; a replica that leaves serves the new members until f'+1 of them started.
   */
  #enterEpoch(membership: Membership, wasPrimary: boolean): void {
    const recovering = this.#status === "recovering";
    const previousMembers = this.#membership.members;
    if (
      this.opNumber > this.#commitNumber &&
      this.#plantedBug !== "accept_request_after_reconfiguration"
    ) {
      this.#truncateLog(this.#commitNumber);
    }
    this.#setMembership(membership);
    this.#syncTarget = undefined;
    this.#startViewChangeFrom = new Set();
    this.#doViewChanges = new Map();
    this.#viewNumber = membership.startViewNumber;
    this.#lastNormalView = membership.startViewNumber;
    this.#persistMembership();
    const epoch = membership.epoch;
    for (const clientId of this.#waitingForEpoch) this.#replyConfiguration(clientId, 0);
    this.#waitingForEpoch.clear();
    if (this.#memberPosition(this.#self) < 0) {
      this.#log_("info", `epoch ${epoch} began at op ${membership.opNumber} without this replica`);
      this.#enterLeaving();
      return;
    }
    // Normal in the epoch's first view, even after a recovery in the old epoch: its membership of
    // the new epoch was never durable before (it is persisted before anything is sent in it), so
    // it promised nothing in the new epoch. If the epoch has moved on, this replica is a backup
    // (or a primary) of a view the others left, as if it had been slow: a quorum of them moved
    // on, so none commits in this view without them.
    if (recovering) {
      this.#log_("info", `recovered by the Reconfiguration at op ${membership.opNumber}`);
    }
    this.#transitionToNormal(membership.startViewNumber);
    this.#epochsStarted++;
    this.#log_(
      "info",
      `epoch ${epoch} began at op ${membership.opNumber}: ${this.#memberAddresses.join(", ")}; ` +
        `view ${this.#viewNumber}, primary ${this.addressOf(this.primaryIndex)}`,
    );
    this.#announceEpochStarted();
    if (wasPrimary) {
      // §7.1 The old primary tells the new members (those that leave re-send it until answered).
      const message = this.#epochMessage("start_epoch");
      for (const member of membership.members) {
        if (!previousMembers.includes(member)) this.#send(member, message);
      }
    }
  }

  /** §7.1 Tell the replicas that left that this member runs the epoch. */
  #announceEpochStarted(): void {
    for (const replica of this.#membership.previousMembers) {
      if (this.#memberPosition(replica) >= 0) continue;
      this.#send(replica, {
        type: "epoch_started",
        epoch: this.#membership.epoch,
        replica: this.#self,
      });
    }
  }

  /** §7.1 This replica is not in the current epoch: it serves the state until f'+1 started. */
  #enterLeaving(): void {
    this.#status = "transitioning";
    this.#epochStartedFrom = new Set();
    this.#ticksSinceStartEpoch = 0;
    this.#fetch = undefined;
    this.#pendingReads = [];
    this.#persistSuperblock();
    this.#log_(
      "info",
      `left the group: serving the state to epoch ${this.#membership.epoch} until ${
        this.#f + 1
      } of its members started`,
    );
    this.#sendStartEpoch();
  }

  #sendStartEpoch(): void {
    const message = this.#epochMessage("start_epoch");
    for (const member of this.#members) {
      if (!this.#epochStartedFrom.has(member)) this.#send(member, message);
    }
  }

  #epochMessage<T extends "start_epoch" | "new_epoch">(type: T): StartEpoch | NewEpoch {
    const m = this.#membership;
    return {
      type,
      epoch: m.epoch,
      opNumber: m.opNumber,
      startViewNumber: m.startViewNumber,
      addresses: m.addresses,
      members: m.members,
      previousMembers: m.previousMembers,
      replica: this.#self,
    } as StartEpoch | NewEpoch;
  }

  #persistMembership(): void {
    this.#flushLogPersist(); // The log up to the Reconfiguration is durable first.
    this.#effects.push({
      type: "persist_membership",
      id: this.#persistIdNext++,
      membership: this.#membership,
    });
  }

  /**
   * §7.2 Epochs. Messages of this epoch are handled from its members; the state-transfer ones
   * (committed entries and checkpoints, facts whoever sends them) from anyone; the epochs'
   * own messages always. A message of an older epoch gets the sender told of ours (NewEpoch); one
   * of a newer epoch makes this replica ask its sender for the state, which brings it the
   * Reconfiguration. True when the message is to be handled.
   */
  #sameEpochMember(message: ReplicaMessage): boolean {
    switch (message.type) {
      case "start_epoch":
      case "new_epoch":
      case "epoch_started":
      case "get_state":
      case "new_state":
      case "checkpoint_manifest":
      case "get_checkpoint_chunks":
      case "checkpoint_chunk":
        return true;
    }
    const epoch = this.#membership.epoch;
    if (this.#standby) {
      this.#ignore(`${message.type}: not told its group yet`);
      return false;
    }
    if (message.epoch < epoch) {
      this.#tellNewEpoch(message.replica);
      this.#ignore(`${message.type}: epoch ${message.epoch} is over`);
      return false;
    }
    if (message.epoch > epoch) {
      this.#askNewerEpoch(message.replica, `${message.type} of epoch ${message.epoch}`);
      return false;
    }
    if (this.#status === "transitioning" || this.#memberPosition(message.replica) < 0) {
      this.#ignore(`${message.type}: not between members of epoch ${epoch}`);
      return false;
    }
    this.#heardFromMembers.add(message.replica);
    return true;
  }

  #tellNewEpoch(to: ReplicaIndex): void {
    if (this.#membership.addresses[to] === undefined) return;
    const at = this.#newEpochToldAt.get(to);
    if (at !== undefined && this.#ticks - at < this.timing.retryTicks) return;
    this.#newEpochToldAt.set(to, this.#ticks);
    this.#send(to, this.#epochMessage("new_epoch"));
  }

  /** A replica of a newer epoch spoke: fetch the committed log from it (it holds our next ops). */
  #askNewerEpoch(from: ReplicaIndex, what: string): void {
    if (this.#membership.addresses[from] === undefined) {
      return this.#ignore(`${what}: from an unknown member`);
    }
    if (this.#ticks - this.#newerEpochAskedAt < this.timing.retryTicks) return;
    this.#newerEpochAskedAt = this.#ticks;
    this.#debugLog(() => `${what}: fetching the state from ${from}`);
    this.#sendGetState(from, this.#viewNumber, this.#commitNumber);
  }

  /**
   * §7.1, §7.2 A StartEpoch (to a new member, or re-sent by a replica that left) or a NewEpoch
   * (the answer to a message of an older epoch) names an epoch. A member of it that started
   * answers EpochStarted; a replica behind it fetches the state up to its Reconfiguration.
   */
  #onEpochNews(message: StartEpoch | NewEpoch): void {
    const named: Membership = {
      epoch: message.epoch,
      addresses: message.addresses,
      members: message.members,
      previousMembers: message.previousMembers,
      startViewNumber: message.startViewNumber,
      opNumber: message.opNumber,
    };
    const problem = membershipProblem(named);
    if (problem !== undefined || message.epoch === 0 || message.opNumber === 0) {
      return this.#log_(
        "warn",
        `${describeMessage(message)} from ${message.replica}: ${problem ?? "epoch 0"}: ignored`,
      );
    }
    const self = named.addresses.indexOf(this.#selfAddress);
    const own = this.#membership.epoch;
    if (!this.#standby && message.epoch <= own) {
      // A replica that left epoch `message.epoch - 1` waits for f'+1 of its members: we are one
      // if it names us, and we got that far (the book only grows, so its ids are ours).
      const started = message.epoch < own || this.#status === "normal" ||
        this.#status === "view_change";
      if (message.type === "start_epoch" && self >= 0 && named.members.includes(self) && started) {
        this.#send(message.replica, {
          type: "epoch_started",
          epoch: message.epoch,
          replica: this.#self,
        });
      }
      return this.#ignore(`${message.type}: epoch ${message.epoch} is not ahead of ours`);
    }
    if (self < 0) return this.#ignore(`${message.type}: names a group without this address`);
    if (this.#joining !== undefined && this.#joining.membership.epoch >= message.epoch) {
      return this.#ignore(`${message.type}: joining epoch ${this.#joining.membership.epoch}`);
    }
    if (
      this.#plantedBug === "start_epoch_before_reconfiguration_committed" &&
      message.type === "start_epoch" && named.members.includes(self) &&
      this.#commitNumber < named.opNumber
    ) {
      // The bug: start the epoch from the StartEpoch alone, with whatever state is here.
      this.#commitNumber = Math.min(this.#commitNumber, this.opNumber);
      this.#truncateLog(this.#commitNumber);
      this.#enterEpoch(named, false);
      return;
    }
    const from = [...new Set([message.replica, ...named.members, ...named.previousMembers])]
      .filter((id) => id !== self);
    this.#joining = {
      membership: named,
      from,
      cursor: 0,
      stalled: 0,
      commitAtAsk: this.#commitNumber,
    };
    if (this.#standby) this.#self = self; // Its id in the group it joins.
    this.#log_(
      "info",
      `${message.type} from ${message.replica}: epoch ${named.epoch} began at op ` +
        `${named.opNumber}; fetching the state up to it`,
    );
    this.#ticksSinceJoinAsk = 0;
    this.#sendGetState(message.replica, this.#viewNumber, this.#commitNumber);
  }

  /** §7.1 A member of the new epoch started: shut down once f'+1 have. */
  #onEpochStarted(message: EpochStarted): void {
    if (message.epoch > this.#membership.epoch && !this.#standby) {
      // An epoch after ours started: its Reconfiguration is in the log of the one that says so.
      return this.#askNewerEpoch(message.replica, `epoch_started of epoch ${message.epoch}`);
    }
    if (
      this.#status !== "transitioning" || this.#standby || this.#memberPosition(this.#self) >= 0
    ) {
      return this.#ignore("epoch_started: not leaving");
    }
    if (message.epoch !== this.#membership.epoch) {
      return this.#ignore(`epoch_started: of epoch ${message.epoch}`);
    }
    if (this.#memberPosition(message.replica) < 0) {
      return this.#ignore("epoch_started: not from a member of the epoch");
    }
    this.#epochStartedFrom.add(message.replica);
    const needed = this.#plantedBug === "shut_down_before_quorum_started" ? 1 : this.#f + 1;
    if (this.#epochStartedFrom.size < needed || this.#shutDown) return;
    this.#shutDown = true;
    this.#log_(
      "info",
      `${this.#epochStartedFrom.size} members of epoch ${this.#membership.epoch} started: ` +
        "shutting down",
    );
    this.#effects.push({ type: "shut_down", epoch: this.#membership.epoch });
  }

  #tickTransitioning(): void {
    if (this.#standby || this.#shutDown || this.#memberPosition(this.#self) >= 0) return;
    this.#ticksSinceStartEpoch++;
    if (this.#ticksSinceStartEpoch < this.timing.retryTicks) return;
    this.#ticksSinceStartEpoch = 0;
    this.#sendStartEpoch();
  }

  /** Ask the next source for the state up to the Reconfiguration we were told of. */
  #tickJoining(): void {
    const joining = this.#joining!;
    if (this.#membership.epoch >= joining.membership.epoch && !this.#standby) {
      this.#joining = undefined;
      return;
    }
    this.#ticksSinceJoinAsk++;
    if (this.#ticksSinceJoinAsk < this.timing.retryTicks || this.#fetch !== undefined) return;
    this.#ticksSinceJoinAsk = 0;
    if (this.#commitNumber > joining.commitAtAsk) joining.stalled = 0;
    else joining.stalled++;
    joining.commitAtAsk = this.#commitNumber;
    if (joining.stalled >= JOIN_STALLED_ROUNDS * joining.from.length) {
      this.#joining = undefined;
      if (this.#standby) this.#self = -1; // The id was that group's; the next may differ.
      return this.#log_(
        "warn",
        `joining epoch ${joining.membership.epoch} (op ${joining.membership.opNumber}): no source ` +
          "gave the state up to it; waiting to be told again",
      );
    }
    joining.cursor = (joining.cursor + 1) % joining.from.length;
    this.#sendGetState(joining.from[joining.cursor]!, this.#viewNumber, this.#commitNumber);
  }

  /** Who may hold the state this replica fetches: the members it knows of, but itself. */
  #stateSources(): ReplicaIndex[] {
    const ids = new Set<ReplicaIndex>([
      ...this.#members,
      ...this.#membership.previousMembers,
      ...this.#joining?.from ?? [],
    ]);
    ids.delete(this.#self);
    return [...ids];
  }

  /**
   * §7 A fetched checkpoint is of a later epoch than ours (or this new process had none): take its
   * membership, as if it had executed the Reconfiguration (`#enterEpoch`): it never promised
   * anything in that epoch (its membership of it was never durable), so it starts the epoch's
   * first view, and catches up with the view the epoch is in like any slow backup.
   */
  #enterEpochByCheckpoint(membership: Membership): void {
    if (membership.addresses.indexOf(this.#selfAddress) < 0) {
      this.#joining = undefined;
      return this.#log_("warn", "a checkpoint of a group without this address: ignored");
    }
    this.#dropCheckpointInProgress();
    this.#setMembership(membership);
    this.#syncTarget = undefined;
    this.#viewNumber = membership.startViewNumber;
    this.#lastNormalView = membership.startViewNumber;
    this.#persistMembership();
    this.#log_("info", `the checkpoint is of epoch ${membership.epoch}: adopting it`);
    if (this.#memberPosition(this.#self) < 0) return this.#enterLeaving();
    this.#transitionToNormal(membership.startViewNumber);
    this.#epochsStarted++;
    this.#announceEpochStarted();
    if (!this.isPrimary) this.#requestState(`joined epoch ${membership.epoch} by checkpoint`);
  }

  // ------------------------------------------------------------------ restart from disk

  /** §5.1 Start from a checkpoint the driver restored into the state machine. */
  #adoptRestoredCheckpoint(restored: RestoredCheckpoint): void {
    const { checkpoint, metadata, clientTable } = restored;
    this.#log.reset(checkpoint.opNumber, metadata.entryTimestamp, metadata.entryViewNumber);
    this.#commitNumber = checkpoint.opNumber;
    this.#logDurableOpNumber = checkpoint.opNumber;
    this.#clientTable.restore(metadata.requestNumberFloor, clientTable);
    this.#setCheckpoint(checkpoint);
    if (metadata.membership.epoch > this.#membership.epoch) {
      // Installed before a crash, its membership not persisted yet.
      this.#setMembership(metadata.membership);
      this.#viewNumber = metadata.membership.startViewNumber;
      this.#lastNormalView = metadata.membership.startViewNumber;
      this.#persistMembership();
    }
    this.#log_("info", `restored the checkpoint of op ${checkpoint.opNumber}`);
  }

  #restartFromDisk(durable: DurableState): void {
    // Replay without replying: the status is not normal until the log is executed.
    this.#status = "view_change";
    // Entries a checkpoint covers are not replayed (nor kept: a backup that lags that far
    // fetches a checkpoint). The log continues the checkpoint only if it holds the checkpoint's
    // own entry there: else what follows is an older view's, never acknowledged in the history
    // the checkpoint belongs to (its rewrite was not durable yet), and it is dropped.
    const base = this.#log.baseOpNumber;
    const atBase = durable.log.find((entry) => entry.opNumber === base);
    if (atBase !== undefined && !this.#log.matchesBase(atBase)) {
      this.#log_(
        "warn",
        `the log on disk holds another op ${base} than its checkpoint: the entries after it ` +
          "are dropped",
      );
    } else {
      for (const entry of durable.log) {
        if (entry.opNumber > this.opNumber) this.#appendEntry(entry);
      }
    }
    this.#logDurableOpNumber = this.opNumber;
    this.#logDirtyFrom = Infinity;
    // The stored commit-number is a lower bound. A durable membership says more: it was written
    // once its Reconfiguration executed, hence committed, after the log up to it (§7): without
    // this, a replica restarted in the new epoch with the Reconfiguration uncommitted could not
    // hand it to a new member, which joins only once it holds it committed.
    const committed = Math.max(durable.commitNumber, this.#membership.opNumber);
    this.#advanceCommit(Math.min(committed, this.opNumber));
    this.#recomputeUncommitted();
    const status = this.#status as Status; // A Reconfiguration replayed may have changed it.
    if (status === "transitioning" || status === "normal") return; // It began a new epoch.
    if (this.#memberPosition(this.#self) < 0) return this.#enterLeaving();
    if (this.#viewNumber === this.#lastNormalView && !this.isPrimary) {
      this.#status = "normal";
      this.#resetViewState();
      this.#log_("info", `restarted from disk in view ${this.#viewNumber}, op ${this.opNumber}`);
    } else if (this.#viewNumber === this.#lastNormalView) {
      // A primary may have sent Prepares for entries its disk lost; were it to go on in the same
      // view it could give another entry the same op-number and view. Start the next view instead.
      this.#log_("info", `restarted from disk as primary of view ${this.#viewNumber}`);
      this.#startViewChange(this.#viewNumber + 1);
    } else {
      // It was changing views: carry on (the view is already durable).
      this.#log_("info", `restarted from disk during the view change to ${this.#viewNumber}`);
      this.#broadcastStartViewChange();
      this.#maybeSendDoViewChange();
    }
  }

  // ------------------------------------------------------------------ helpers

  /** The member id of the primary of `viewNumber` in this epoch; -1 before the epoch's views. */
  #primaryOf(viewNumber: number): ReplicaIndex {
    if (viewNumber < this.#membership.startViewNumber) return -1;
    return primaryOf(this.#membership, viewNumber);
  }

  /** The position of member `id` in the current epoch, -1 if it is not a member. */
  #memberPosition(id: ReplicaIndex): number {
    return this.#members.indexOf(id);
  }

  #uncommittedEntries(): LogEntry[] {
    return this.opNumber > this.#commitNumber
      ? this.#log.slice(this.#commitNumber + 1, this.opNumber)
      : [];
  }

  /** Recount the uncommitted bytes and pending requests after the log suffix changed. */
  #recomputeUncommitted(): void {
    const uncommitted = this.#uncommittedEntries();
    let bytes = 0;
    for (const entry of uncommitted) bytes += entry.operation.length;
    this.#uncommittedBytes = bytes;
    this.#clientTable.rebuildPending(uncommitted);
    this.#reconfigurationOpNumber = 0;
    for (const entry of uncommitted) {
      if (entry.clientId === GROUP_CLIENT_ID) this.#noteGroupEntry(entry);
    }
  }

  #persistSuperblock(): void {
    // The log goes first: a superblock naming a view must never be durable before that view's log.
    this.#flushLogPersist();
    const id = this.#persistIdNext++;
    this.#effects.push({
      type: "persist_superblock",
      id,
      superblock: {
        epoch: this.#membership.epoch,
        viewNumber: this.#viewNumber,
        lastNormalView: this.#lastNormalView,
        recovering: this.#status === "recovering",
      },
    });
    this.#superblockPendingId = id;
  }

  #send(to: ReplicaIndex, message: ReplicaMessage): void {
    if (to === this.replicaIndex) return;
    this.#emit({ type: "send", to, message });
  }

  #broadcast(message: ReplicaMessage): void {
    for (const replica of this.#members) {
      if (replica !== this.#self) this.#emit({ type: "send", to: replica, message });
    }
  }

  #emitReply(clientId: number, message: ClientReplyMessage): void {
    this.#emit({ type: "reply", clientId, message });
  }

  #emit(effect: Effect): void {
    if (this.#superblockPendingId !== 0) this.#held.push(effect);
    else this.#effects.push(effect);
  }

  #drawPrimaryTimeout(): number {
    return this.timing.primaryTimeoutTicks + this.#jitter();
  }

  #jitter(): number {
    const range = this.timing.primaryTimeoutJitterTicks;
    return range > 0 ? this.#random.nextUint32() % (range + 1) : 0;
  }

  #ignore(reason: string): void {
    if (this.#debug) this.#logSink!("debug", `ignore ${reason}`);
  }

  #debugLog(text: () => string): void {
    if (this.#debug) this.#logSink!("debug", text());
  }

  #log_(level: LogLevel, text: string): void {
    if (this.#logSink !== undefined) this.#logSink(level, text);
  }

  /** Cheap structural invariants after every step; the simulator checks the global ones. */
  #checkInvariants(): void {
    assert(this.#commitNumber <= this.opNumber, "commit-number beyond op-number");
    assert(this.#lastNormalView <= this.#viewNumber, "last normal view beyond view");
    assert(this.#logDurableOpNumber <= this.opNumber, "durable op-number beyond op-number");
    assert(this.#log.baseOpNumber <= this.#commitNumber, "log base beyond commit-number");
    assert(
      this.#status !== "normal" || this.#lastNormalView === this.#viewNumber,
      "normal status outside the last normal view",
    );
    // No bound on the uncommitted suffix: only the primary's own requests are bounded by the
    // pipeline (§6.2). A backup, or a new primary whose log was chosen from one, may hold more,
    // for instance after a restart from disk (the stored commit-number is a lower bound) or a
    // state transfer; such a log is as legitimate as any other.
  }
}
