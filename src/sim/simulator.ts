/**
 * The deterministic simulator (model: TigerBeetle's VOPR, FoundationDB's simulation). One seed
 * decides everything: the fault parameters of the run (swarm testing), the network, crashes,
 * disks and the clients' workload, each from its own stream. The replicas are the real protocol
 * core, driven through the same interface the TCP node driver uses.
 *
 * A run has two phases. Safety: faults of every kind for a budget of time, with at most f replicas
 * faulty at once (the paper's fault model: crashed, recovering, or holding a disk that lost what it
 * acknowledged) while the network may do anything.
 * Liveness: the network heals, crashed replicas restart, no new faults; every pending request must
 * complete and the replicas converge within a bounded time. Invariants are checked after every
 * event (see `Checker`).
 *
 * @module
 */
import { sha256 } from "../lib/sha256.ts";
import {
  decodeKvBatchResult,
  decodeKvResult,
  encodeKvBatch,
  encodeKvOperation,
  type KvOperation,
  type KvResult,
  KvStore,
} from "../app/kv.ts";
import { type App, guardStateMachine } from "../app/app.ts";
import type { StateMachine } from "../app/state_machine.ts";
import { crc32c } from "../lib/crc32c.ts";
import { Prng } from "../lib/prng.ts";
import { LIMITS_DEFAULT, TIMING_DEFAULT } from "../vr/constants.ts";
import { MEMBERS_MAX } from "../vr/membership.ts";
import type { ClientMessage, ClientReplyMessage, Message } from "../vr/message.ts";
import { describeMessage } from "../vr/message.ts";
import { type Effect, type PlantedBug, Replica } from "../vr/replica.ts";
import { EventQueue } from "./event_queue.ts";
import type { HistoryOperation, KvCall } from "./linearizability.ts";
import { checkLinearizable } from "./linearizability.ts";
import { type Delivery, Network } from "./network.ts";
import { Checker, InvariantViolation } from "./checker.ts";
import {
  MemoryDisk,
  type PersistEffect,
  readCheckpoint,
  type StoredCheckpoint,
} from "./memory_disk.ts";

/** Simulated time units per replica tick. One unit stands for about a millisecond. */
export const TICK_UNITS = 10;
/** Protocol client ids start here, so they never look like small numbers by accident. */
const CLIENT_ID_BASE = 1_000;
/** §7 The administrator's client id. */
const ADMIN_CLIENT_ID = CLIENT_ID_BASE - 1;
/**
 * More events pending than this is a message storm (a few hundred is usual, even at high load):
 * the seed fails with a message instead of the simulator running out of memory (seed 788778535).
 */
const EVENTS_PENDING_MAX = 20_000;

/** The fault parameters drawn for one seed. */
export interface SwarmParameters {
  readonly replicaCount: number;
  readonly clientCount: number;
  readonly delayMin: number;
  readonly delayMean: number;
  readonly lossProbability: number;
  readonly duplicateProbability: number;
  readonly linkCapacity: number;
  /** The share of messages that straggle for up to `slowDelayMaxUnits`. */
  readonly slowProbability: number;
  readonly slowDelayMaxUnits: number;
  /** Of crashes and isolations, the share aimed at the primary. */
  readonly targetPrimaryProbability: number;
  /** After a restart, the probability that the same replica crashes again soon (crash loops). */
  readonly crashAgainProbability: number;
  /** How often (time units) the fault injector considers crashing a replica or cutting links. */
  readonly faultIntervalUnits: number;
  readonly crashProbability: number;
  readonly downtimeMeanUnits: number;
  /**
   * Of crashes, the share restarted at once (1–20 units, a supervisor restarting a crashed
   * process): messages sent before the crash still arrive after the restart.
   */
  readonly quickRestartProbability: number;
  /** The probability that a replica restarting into recovery crashes again while it recovers. */
  readonly recoveryCrashProbability: number;
  /** Of crashes, the share that also lose the log (the replica restarts with §4.3 recovery). */
  readonly disklessProbability: number;
  /** On a crash, the probability that writes not yet durable are lost. */
  readonly loseUnsyncedProbability: number;
  readonly diskLatencyUnits: number;
  readonly partitionProbability: number;
  readonly partitionMeanUnits: number;
  /** Mean pause between a client's operations; 0 = back to back. */
  readonly thinkMeanUnits: number;
  /** Probability that a client takes a long idle break after an operation. */
  readonly idleProbability: number;
  readonly requestTimeoutUnits: number;
  readonly keyCount: number;
  /** The replicas' `logPackOps` limit: how often committed entries are packed (see `Log`). */
  readonly logPackOps: number;
  /**
   * The replicas' `quietPrepareBackups` limit: 1 (at low load a Prepare goes to f backups, the
   * others are spares) or the replica count (every backup gets every Prepare at once).
   */
  readonly quietPrepareBackups: number;
  /** The replicas' `spareSwapTicks` (see `Timing`). */
  readonly spareSwapTicks: number;
  /** The replicas' `spareCatchUpTicks`, at most `heartbeatTicks` (see `Timing`). */
  readonly spareCatchUpTicks: number;
  /**
   * Whether the primary answers GET and SIZE without the log (§6.3), or, as for a state machine
   * without `readOnly`, through it.
   */
  readonly readsWithoutLog: boolean;
  /**
   * The probability that a client sends a read to a deposed primary that still believes it leads
   * (else to any replica), not to the one it guesses.
   */
  readonly misdirectProbability: number;
  /** The replicas' `clientsMax`: below the client count in some seeds, so clients are evicted. */
  readonly clientsMax: number;
  /**
   * When a client's request times out, the probability that the client restarts instead of
   * re-sending: it abandons the request (its outcome unknown) and numbers its next requests as
   * `restartNumbering` says.
   */
  readonly clientRestartProbability: number;
  /** The share of operations that are SIZE (checked against the model, not for linearizability). */
  readonly sizeProbability: number;
  /** The share of SETs with a large value (`LARGE_VALUE_BYTES`), to reach the byte limits. */
  readonly largeValueProbability: number;
  /**
   * The share of operations that are a BATCH of 2 to 4 GETs, SETs and DELs of distinct keys (what
   * the RESP gateway sends for a pipeline): one request, executed in order; each of its operations
   * is in the history on its own key, with the batch's call and return times.
   */
  readonly batchProbability: number;
  /**
   * On a crash that keeps the writes in flight, the probability that the last log write among
   * them is torn (partly written: the data directory cuts the bad last record), so that it and
   * everything after it are lost. Never acknowledged, so no fault in the f-sense.
   */
  readonly tornWriteProbability: number;
  /**
   * On a crash that keeps the log, the probability that a record in the middle of the durable log
   * has decayed (valid records after it): the restart gets the entries before it, a superblock
   * marked recovering and `logTrusted: false`, as the data directory hands them over. The replica
   * may have acknowledged what was lost: it is faulty until it has recovered (at most f at once).
   */
  readonly logCorruptionProbability: number;
  /**
   * On a crash that keeps the writes in flight, the probability that a superblock write among
   * them is torn: the slot being written is unreadable, the previous superblock is loaded, and the
   * writes after it are lost (the data directory drops the log writes that depend on it). Never
   * reported durable, so the replica acted on none of it: no fault in the f-sense.
   */
  readonly superblockTornProbability: number;
  /**
   * On a crash that keeps the disk, the probability that its newest checkpoint has decayed (§5.1):
   * the data directory deletes it and restarts from the one before, if the log reaches back to it,
   * or else through §4.3 recovery. On at most f replicas at once, as the other storage faults.
   */
  readonly checkpointCorruptionProbability: number;
  /**
   * The replicas' pipeline, batch and transfer limits (`Limits`): small in some seeds, so that
   * batches split, the pipeline fills and state transfers take several messages (a view's
   * uncommitted suffix always fits in one: transfers are at least the pipeline plus one operation).
   */
  /**
   * §5.1 Checkpoint limits (`Limits`): small intervals and retained suffixes in most seeds, so
   * that replicas checkpoint, truncate and fetch checkpoints; `checkpointWriteUnits` is how long
   * a checkpoint write takes (a crash meanwhile loses it).
   */
  readonly checkpoints: {
    readonly checkpointOpsInterval: number;
    readonly checkpointLogBytesMax: number;
    readonly logRetainOps: number;
    readonly checkpointChunkBytes: number;
    readonly checkpointChunksInFlight: number;
    readonly checkpointWriteAmplificationMax: number;
    readonly checkpointWriteUnits: number;
  };
  /**
   * §7 The reconfigurations of the seed, in order: each issued by an administrator at `atUnits`
   * (or once the one before it has finished, if later), from the group the one before left (at
   * first the `replicaCount` initial members, machine ids 0..replicaCount-1) to `members`
   * (machine ids: ids not used before are new machines, started as new processes). Step k takes
   * the group from epoch k to epoch k + 1. Empty: the group keeps its members.
   */
  readonly reconfigurations: readonly ReconfigurationStep[];
  readonly limits: {
    readonly operationBytesMax: number;
    readonly pipelineOpsMax: number;
    readonly pipelineBytesMax: number;
    readonly preparesInFlightMax: number;
    readonly batchOpsMax: number;
    readonly batchBytesMax: number;
    readonly transferOpsMax: number;
    readonly transferBytesMax: number;
  };
}

/** §7 What a seed's reconfiguration does. */
export type ReconfigurationPlan = "none" | "grow" | "shrink" | "replace_one" | "replace_all";

/** §7 One reconfiguration of a seed (see `SwarmParameters.reconfigurations`). */
export interface ReconfigurationStep {
  readonly plan: Exclude<ReconfigurationPlan, "none">;
  readonly atUnits: number;
  /** The new configuration, as machine ids. */
  readonly members: readonly number[];
}

/** The size of a large value (see `SwarmParameters.largeValueProbability`). */
const LARGE_VALUE_BYTES = 3_000;

/** What `runSimulation` runs: a seed, and what the seed does not draw. */
export interface SimulationOptions {
  /** Decides everything else: faults, network, disks, workload. */
  readonly seed: number;
  /** Force the replica count instead of drawing it. */
  readonly replicas?: 1 | 3 | 5 | undefined;
  /** Force `SwarmParameters.readsWithoutLog` instead of drawing it. */
  readonly readsWithoutLog?: boolean | undefined;
  /**
   * Force the default checkpoint limits (a checkpoint every 100,000 ops, so none in a run) instead
   * of the small ones most seeds draw: seeds found before §5.1 replay as they ran then.
   */
  readonly defaultCheckpoints?: boolean | undefined;
  /** @ignore A known protocol bug planted in the replicas, for vstamp's own tests. */
  readonly plantedBug?: PlantedBug | undefined;
  /** Keep a one-line-per-event trace (slower; for replaying a seed). */
  readonly trace?: boolean | undefined;
  /** Length of the safety phase, in time units. */
  readonly safetyUnits?: number | undefined;
  /** The longest the liveness phase may take, in time units. */
  readonly livenessUnitsMax?: number | undefined;
  /** Client request rate mode: "swarm" draws it, "high" keeps every client busy (batching). */
  readonly load?: "swarm" | "high" | undefined;
  /**
   * How a restarted client numbers its requests: "clock" (the default), as the client library
   * does (above the time in microseconds, hence above every number its earlier run used), or
   * "query", as §4.5 suggests (one above the largest number the replicas know of it, which misses
   * reads answered without the log and requests not yet in a log). "query" reuses numbers: the
   * primary must tell a reused number from a retry by the operation (`RejectReason` "conflict"),
   * and even so the same operation re-sent under a reused number takes the earlier one's reply,
   * which is not linearizable. It is a client bug, for tests of the tester.
   */
  readonly restartNumbering?: "clock" | "query" | undefined;
  /**
   * A planted simulator bug, for tests of the tester: a log damaged in the middle is handed over
   * as a trusted log (the intact prefix, `logTrusted: true`, the superblock not marked
   * recovering), as a data directory would that took damage for a torn tail. The replica then
   * restarts without entries it acknowledged, and a committed op can be lost.
   */
  readonly trustDamagedLogs?: boolean | undefined;
  /** §7 Whether seeds draw a reconfiguration (default true); false: none, as before §7. */
  readonly reconfigure?: boolean | undefined;
  /**
   * Another app than the key-value store (which is the default, and checked more closely):
   * replicas run its state machine behind `guardStateMachine`, clients send what its `workload`
   * draws, and the checker's model is a fresh machine of the same app. Its reads go through the
   * log (the model is not kept at every op to check a read answered without it), and the
   * clients' history is not checked for linearizability, which needs a model of the app's
   * operations; every reply is still checked against the model's result at its op-number, and
   * every replica's digest against the model's.
   */
  readonly app?: App | undefined;
}

export const SAFETY_UNITS_DEFAULT = 20_000;
export const LIVENESS_UNITS_MAX_DEFAULT = 30_000;

/** What a run exercised, for the sweep's totals. */
export interface SimulationStats {
  /** Events the simulator handled (deliveries, ticks, disk completions, faults, ...). */
  events: number;
  /** Operations in the committed sequence at the end. */
  opsCommitted: number;
  /** Client requests answered (and checked against the model). */
  requestsCompleted: number;
  /** Of them, BATCHes (`batchProbability`). */
  batchesCompleted: number;
  /** Reads the primary answered without the log (§6.3), each checked against the model. */
  readsWithoutLog: number;
  /** §4.2 Views a replica started. */
  viewChanges: number;
  /** §4.3 Recoveries (a replica restarted without its log). */
  recoveries: number;
  /** Restarts that kept the durable log. */
  restartsFromDisk: number;
  /** §5.2 State transfers. */
  stateTransfers: number;
  /** A primary swapped a stalled backup for a spare (see `Limits.quietPrepareBackups`). */
  spareSwaps: number;
  /** Clients that restarted, abandoning a request. */
  clientRestarts: number;
  /** Requests the primary rejected, by reason (see `RejectReason`). */
  rejectedConflict: number;
  /** Rejected `evicted` (see `rejectedConflict`). */
  rejectedEvicted: number;
  /** Rejected `stale` (see `rejectedConflict`). */
  rejectedStale: number;
  /** Replica crashes. */
  crashes: number;
  /** Messages the network carried, dropped and duplicated. */
  messagesSent: number;
  /** Messages lost, cut by a partition, over a link's capacity, or sent to a crashed replica. */
  messagesDropped: number;
  /** Messages delivered twice. */
  messagesDuplicated: number;
  /** Network partitions begun. */
  partitions: number;
  /** Crashes that tore the last log write in flight (see `SwarmParameters.tornWriteProbability`). */
  tornWrites: number;
  /** Crashes after which the durable log was damaged in the middle (`logCorruptionProbability`). */
  corruptedLogs: number;
  /** Crashes after which the newest checkpoint was damaged (`checkpointCorruptionProbability`). */
  corruptedCheckpoints: number;
  /** Crashes that tore a superblock write in flight (`superblockTornProbability`). */
  tornSuperblocks: number;
  /** §5.1 Checkpoints begun, and lost to a crash before they were durable. */
  checkpointsTaken: number;
  /** §5.1 Checkpoint writes lost to a crash before they were durable. */
  checkpointWritesLost: number;
  /** §5.1 Log truncations after a checkpoint. */
  logTruncations: number;
  /** §5.1 Checkpoints fetched from another replica and installed. */
  checkpointTransfers: number;
  /** §5.1 Checkpoint chunks sent, and chunks a fetching replica found in its own state. */
  checkpointChunksSent: number;
  /** §5.1 Chunks a fetching replica found in its own state, so were not sent. */
  checkpointChunksReused: number;
  /** §7 Reconfigurations issued, epochs started (the latest epoch reached), old replicas shut down. */
  reconfigurations: number;
  /** §7 New epochs started (the latest epoch reached). */
  epochsStarted: number;
  /** §7.3 Old replicas that shut themselves down. */
  shutDowns: number;
  /** §7.3 Machines that left an epoch before the last and were turned off by the operator. */
  turnedOff: number;
  /** §7.4 Times a client learned a new configuration from a replica. */
  clientsRedirected: number;
}

/** Stats with every count at zero. */
export function emptyStats(): SimulationStats {
  return {
    events: 0,
    opsCommitted: 0,
    requestsCompleted: 0,
    batchesCompleted: 0,
    readsWithoutLog: 0,
    viewChanges: 0,
    recoveries: 0,
    restartsFromDisk: 0,
    stateTransfers: 0,
    spareSwaps: 0,
    clientRestarts: 0,
    rejectedConflict: 0,
    rejectedEvicted: 0,
    rejectedStale: 0,
    crashes: 0,
    messagesSent: 0,
    messagesDropped: 0,
    messagesDuplicated: 0,
    partitions: 0,
    tornWrites: 0,
    corruptedLogs: 0,
    corruptedCheckpoints: 0,
    tornSuperblocks: 0,
    checkpointsTaken: 0,
    checkpointWritesLost: 0,
    logTruncations: 0,
    checkpointTransfers: 0,
    checkpointChunksSent: 0,
    checkpointChunksReused: 0,
    reconfigurations: 0,
    epochsStarted: 0,
    shutDowns: 0,
    turnedOff: 0,
    clientsRedirected: 0,
  };
}

/** The outcome of one seed. */
export interface SimulationResult {
  /** The seed run. */
  readonly seed: number;
  /** Whether every invariant held, in the safety and the liveness phase. */
  readonly ok: boolean;
  /** The first invariant that failed, with its explanation. */
  readonly failure?: string | undefined;
  /** @ignore The fault parameters the seed drew (printed by `vstamp sim --seed`). */
  readonly parameters: SwarmParameters;
  /** What the run exercised: ops committed, view changes, crashes, state transfers, ... */
  readonly stats: SimulationStats;
  /** FNV-1a over the trace lines (only when tracing). */
  readonly traceHash?: string | undefined;
  /** One line per event, with `SimulationOptions.trace`. */
  readonly trace?: readonly string[] | undefined;
}

/** `drawn`, unless an option forces another value (the caller has drawn it either way). */
function unlessForced<T>(drawn: T, forced: T | undefined): T {
  return forced ?? drawn;
}

/** The size of the largest operation the simulated clients send (a SET of a large value). */
const OPERATION_BYTES_SIM_MAX = LARGE_VALUE_BYTES + 64;

/** Small limits in some seeds, the defaults in others; always ones the core accepts. */
function drawLimits(prng: Prng): SwarmParameters["limits"] {
  const small = prng.chance(0.5);
  if (!small) {
    return {
      operationBytesMax: LIMITS_DEFAULT.operationBytesMax,
      pipelineOpsMax: LIMITS_DEFAULT.pipelineOpsMax,
      pipelineBytesMax: LIMITS_DEFAULT.pipelineBytesMax,
      preparesInFlightMax: LIMITS_DEFAULT.preparesInFlightMax,
      batchOpsMax: LIMITS_DEFAULT.batchOpsMax,
      batchBytesMax: LIMITS_DEFAULT.batchBytesMax,
      transferOpsMax: LIMITS_DEFAULT.transferOpsMax,
      transferBytesMax: LIMITS_DEFAULT.transferBytesMax,
    };
  }
  const operationBytesMax = OPERATION_BYTES_SIM_MAX;
  const pipelineOpsMax = prng.pick([3, 8, 32]);
  const pipelineBytesMax = prng.pick([4_000, 10_000, 100_000]);
  return {
    operationBytesMax,
    pipelineOpsMax,
    pipelineBytesMax,
    preparesInFlightMax: prng.pick([1, 2, 4]),
    batchOpsMax: prng.pick([1, 2, 4]),
    batchBytesMax: prng.pick([operationBytesMax, 2 * operationBytesMax, 8_000]),
    transferOpsMax: pipelineOpsMax + prng.pick([0, 1, 16]),
    transferBytesMax: pipelineBytesMax + operationBytesMax + prng.pick([0, 100, 10_000]),
  };
}

/** Draw the swarm parameters of a seed. */
export function drawParameters(
  seed: number,
  options: SimulationOptions = { seed },
): SwarmParameters {
  const prng = new Prng(seed).fork(1);
  const replicaCount = options.replicas ?? prng.pick([1, 3, 3, 3, 5, 5]);
  const high = options.load === "high";
  return {
    replicaCount,
    clientCount: high ? prng.int(4, 12) : prng.int(1, 6),
    delayMin: prng.int(1, 4),
    delayMean: prng.pick([0, 2, 5, 10, 25]),
    lossProbability: prng.pick([0, 0, 0.01, 0.05, 0.1, 0.3]),
    duplicateProbability: prng.pick([0, 0, 0.01, 0.1, 0.5]),
    linkCapacity: prng.pick([Infinity, Infinity, 8, 32, 128]),
    slowProbability: prng.pick([0, 0, 0.001, 0.01, 0.05]),
    slowDelayMaxUnits: prng.pick([1000, 5000]),
    targetPrimaryProbability: prng.pick([0, 0.5, 0.9]),
    crashAgainProbability: prng.pick([0, 0.3]),
    faultIntervalUnits: prng.pick([200, 500, 1000]),
    crashProbability: prng.pick([0.1, 0.3, 0.6]),
    downtimeMeanUnits: prng.pick([200, 1000, 3000]),
    disklessProbability: prng.pick([0.3, 0.6, 1]),
    loseUnsyncedProbability: prng.pick([0, 0.5, 1]),
    diskLatencyUnits: prng.pick([0, 0, 1, 3, 10]),
    partitionProbability: prng.pick([0, 0.1, 0.3, 0.5]),
    partitionMeanUnits: prng.pick([300, 1000, 3000]),
    thinkMeanUnits: high ? 0 : prng.pick([0, 5, 20, 100]),
    idleProbability: high ? 0 : prng.pick([0, 0.01, 0.05]),
    requestTimeoutUnits: prng.pick([40, 100, 300]),
    keyCount: high ? prng.int(8, 16) : prng.int(1, 4),
    // Drawn last so that adding it left the earlier draws of every seed unchanged.
    quickRestartProbability: prng.pick([0, 0.3, 0.7]),
    recoveryCrashProbability: prng.pick([0, 0.3, 0.6]),
    logPackOps: prng.pick([1, 2, 16, 1024]),
    // The second: every backup, also after a reconfiguration grows the group (§7).
    quietPrepareBackups: prng.pick([1, replicaCount]) === 1 ? 1 : MEMBERS_MAX,
    spareSwapTicks: prng.int(1, 5),
    spareCatchUpTicks: prng.int(1, TIMING_DEFAULT.heartbeatTicks),
    // Drawn even when forced, so that forcing it leaves the rest of the seed unchanged.
    readsWithoutLog: unlessForced(prng.chance(0.75), options.readsWithoutLog),
    misdirectProbability: prng.pick([0, 0.1, 0.3]),
    clientsMax: prng.pick([4096, 4096, 2, 3]),
    clientRestartProbability: prng.pick([0, 0, 0.05, 0.2]),
    sizeProbability: prng.pick([0, 0.1]),
    largeValueProbability: prng.pick([0, 0, 0.05]),
    // Storage faults, drawn last too; each crash draws them from its own stream (`storagePrng`),
    // so that a seed that draws 0 for all three runs exactly as it did before they existed.
    tornWriteProbability: prng.pick([0, 0.5, 1]),
    logCorruptionProbability: prng.pick([0, 0, 0.1, 0.3]),
    superblockTornProbability: prng.pick([0, 0.5, 1]),
    limits: drawLimits(prng),
    // Drawn last, so that the draws before are as they were.
    checkpointCorruptionProbability: prng.pick([0, 0, 0.2, 0.5]),
    checkpoints: unlessForced(
      drawCheckpoints(prng),
      options.defaultCheckpoints === true ? DEFAULT_CHECKPOINTS : undefined,
    ),
    // Drawn last, so that the draws before are as they were.
    reconfigurations: drawReconfigurations(prng, replicaCount, options),
    // Drawn last: a seed that draws 0 runs as it did before batches existed.
    batchProbability: prng.pick([0, 0.1, 0.3]),
  };
}

/**
 * §7 A reconfiguration in most seeds (grow, shrink, replace one member or all of them), and a
 * second one, from the group the first left, in some: epochs 1 and 2.
 */
function drawReconfigurations(
  prng: Prng,
  count: number,
  options: SimulationOptions,
): ReconfigurationStep[] {
  const safety = options.safetyUnits ?? SAFETY_UNITS_DEFAULT;
  const initial = Array.from({ length: count }, (_, id) => id);
  const first = drawStep(prng, initial, count, () => 100 + Math.floor(prng.float() * safety * 0.6));
  if (options.reconfigure === false || first === undefined) return [];
  // Drawn after the first step, so that the first is as it was before seeds drew a second.
  if (!prng.chance(SECOND_RECONFIGURATION_PROBABILITY)) return [first];
  const machines = Math.max(count, ...first.members.map((id) => id + 1));
  const at = () => first.atUnits + 500 + Math.floor(prng.float() * safety * 0.3);
  const second = drawStep(prng, first.members, machines, at);
  return second === undefined ? [first] : [first, second];
}

/** The share of seeds with a first reconfiguration that draw a second one. */
const SECOND_RECONFIGURATION_PROBABILITY = 0.35;

/** One reconfiguration from `from` (machine ids); new machines take ids from `nextId`. */
function drawStep(
  prng: Prng,
  from: readonly number[],
  nextId: number,
  at: () => number,
): ReconfigurationStep | undefined {
  const count = from.length;
  const plans: ReconfigurationPlan[] = count === 1
    ? ["none", "grow", "replace_all", "grow"]
    : count === 3
    ? ["none", "grow", "replace_one", "replace_all", "grow", "replace_one", "replace_all"]
    : ["none", "shrink", "replace_one", "replace_all", "shrink", "replace_one", "shrink"];
  const plan = prng.pick(plans);
  const atUnits = at();
  const position = prng.int(0, count - 1);
  const second = prng.int(0, Math.max(0, count - 2));
  let members: number[];
  switch (plan) {
    case "none":
      return undefined;
    case "grow":
      members = [...from, nextId, nextId + 1];
      break;
    case "shrink": {
      members = from.filter((_, i) => i !== position);
      members.splice(second % members.length, 1);
      break;
    }
    case "replace_one":
      members = from.map((id, i) => i === position ? nextId : id);
      break;
    case "replace_all":
      members = from.map((_, i) => nextId + i);
      break;
  }
  return { plan, atUnits, members };
}

/** The core's checkpoint limits, and instant checkpoint writes. */
const DEFAULT_CHECKPOINTS: SwarmParameters["checkpoints"] = {
  checkpointOpsInterval: LIMITS_DEFAULT.checkpointOpsInterval,
  checkpointLogBytesMax: LIMITS_DEFAULT.checkpointLogBytesMax,
  logRetainOps: LIMITS_DEFAULT.logRetainOps,
  checkpointChunkBytes: LIMITS_DEFAULT.checkpointChunkBytes,
  checkpointChunksInFlight: LIMITS_DEFAULT.checkpointChunksInFlight,
  checkpointWriteAmplificationMax: LIMITS_DEFAULT.checkpointWriteAmplificationMax,
  checkpointWriteUnits: 0,
};

/** Checkpoint limits: small in most seeds (see `SwarmParameters.checkpoints`). */
function drawCheckpoints(prng: Prng): SwarmParameters["checkpoints"] {
  return {
    checkpointOpsInterval: prng.pick([
      4,
      10,
      10,
      25,
      25,
      60,
      200,
      LIMITS_DEFAULT.checkpointOpsInterval,
    ]),
    checkpointLogBytesMax: prng.pick([LIMITS_DEFAULT.checkpointLogBytesMax, 3_000, 30_000]),
    logRetainOps: prng.pick([1, 3, 10, 40]),
    checkpointChunkBytes: prng.pick([64, 300, 2_000, LIMITS_DEFAULT.checkpointChunkBytes]),
    checkpointChunksInFlight: prng.pick([1, 2, 4, 16]),
    checkpointWriteUnits: prng.pick([0, 5, 50, 300]),
    // Mostly no skipping (the simulator's states are small beside its tiny intervals).
    checkpointWriteAmplificationMax: prng.pick([1_000_000, 1_000_000, 2]),
  };
}

/** The key-value store without `readOnly`: every operation, reads too, goes through the log. */
class LogOnlyKvStore extends KvStore {
  override readOnly(_operation: Uint8Array): boolean {
    return false;
  }
}

type SimEvent =
  | { readonly kind: "deliver"; readonly delivery: Delivery<Message> }
  | { readonly kind: "tick"; readonly replica: number; readonly incarnation: number }
  | {
    readonly kind: "persisted";
    readonly replica: number;
    readonly incarnation: number;
    readonly id: number;
  }
  | { readonly kind: "client"; readonly client: number; readonly generation: number }
  | { readonly kind: "fault" }
  | { readonly kind: "restart"; readonly replica: number }
  | {
    readonly kind: "crash";
    readonly replica: number;
    readonly incarnation: number;
    /** Restart within a few units. */
    readonly quick: boolean;
  }
  | { readonly kind: "heal" }
  /** §7 The administrator's next step (issue, or retry, its Reconfiguration or CheckEpoch). */
  | { readonly kind: "admin"; readonly generation: number }
  | {
    /** A checkpoint write is done (`SwarmParameters.checkpoints.checkpointWriteUnits`). */
    readonly kind: "checkpointed";
    readonly replica: number;
    readonly incarnation: number;
  };

/** A write on its way to the simulated disk. */
interface PendingWrite {
  readonly effect: PersistEffect;
}

class SimReplica {
  replica: Replica | undefined;
  incarnation = 0;
  /** `replica.spareSwaps` already counted in the stats. */
  spareSwapsCounted = 0;
  /** `replica.checkpointStats.chunksReused` already counted in the stats. */
  chunksReusedCounted = 0;
  /** The durable state: what survives a crash. */
  disk = new MemoryDisk();
  /**
   * §7 The reconfiguration (index into `SwarmParameters.reconfigurations`) that brings this
   * machine into the group, or -1 for an initial member. A new machine is not started before it
   * is issued, and then starts as a standby.
   */
  joinsAt = -1;
  /** §7 It left the group and shut down (for good). */
  shutDown = false;
  /** §7 A new machine that was normal in the new epoch once: from then on, one of the group. */
  joined = false;
  pendingWrites: PendingWrite[] = [];
  /** A checkpoint being written (§5.1): on the disk once its "checkpointed" event comes. */
  checkpointWrite: StoredCheckpoint | undefined;
  /** When the last pending write completes; writes complete in order. */
  writeDoneAt = 0;
  /** A brand-new replica starts without durable state (view 0, normal). */
  fresh = true;
  /**
   * Its disk lost entries it may have acknowledged (a diskless crash, a damaged log): faulty
   * until it is normal again, which a replica that restarts untrusted reaches only through §4.3
   * recovery. (It is down or recovering meanwhile, unless `trustDamagedLogs` lies to it.)
   */
  storageFault = false;

  constructor(readonly index: number) {}

  get up(): boolean {
    return this.replica !== undefined;
  }

  /** §7 A machine new to the group (see `joinsAt`). */
  get isNew(): boolean {
    return this.joinsAt >= 0;
  }
}

/**
 * The workload's GET (roll 0-3), SET (4-7, of `value()`) or DEL (8-9) of `key`: its call in the
 * history and its operation.
 */
function kvCallOf(
  roll: number,
  key: string,
  value: () => string,
): { readonly call: KvCall; readonly operation: KvOperation } {
  const bytes = encoder.encode(key);
  if (roll < 4) return { call: { kind: "get" }, operation: { command: "GET", key: bytes } };
  if (roll < 8) {
    const text = value();
    return {
      call: { kind: "set", value: text },
      operation: { command: "SET", key: bytes, value: encoder.encode(text) },
    };
  }
  return { call: { kind: "del" }, operation: { command: "DEL", key: bytes } };
}

/** What a key-value result is in the history; an error result is a violation (none is sent). */
function historyOutput(client: SimClient, result: KvResult): string | number | null {
  switch (result.kind) {
    case "nil":
      return null;
    case "bytes":
      return decoder.decode(result.value);
    case "integer":
      return result.value;
    case "error":
      throw new InvariantViolation(`client ${client.clientId} got an error: ${result.message}`);
  }
}

interface ClientOperation {
  /** Undefined for SIZE, which is checked against the model but is not in the history. */
  readonly call: KvCall | undefined;
  readonly key: string;
  /** A BATCH: its operations' keys and calls, in order (`call` is then undefined). */
  readonly batch?: readonly { readonly key: string; readonly call: KvCall }[] | undefined;
  requestNumber: number;
  readonly invokeTime: number;
  readonly operation: Uint8Array;
}

class SimClient {
  requestNumber = 0;
  viewGuess = 0;
  /** §7.4 The members of the configuration it knows (machine ids), and its epoch. */
  members: number[] = [];
  epoch = 0;
  pending: ClientOperation | undefined;
  /** Bumped whenever the client's timer is re-armed, to ignore stale timer events. */
  generation = 0;
  issued = 0;
  constructor(readonly index: number, readonly clientId: number, readonly node: number) {}
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Run one seed. Never throws for a protocol bug: a failure is reported in the result. */
export function runSimulation(options: SimulationOptions): SimulationResult {
  return new Simulation(options).run();
}

class Simulation {
  readonly seed: number;
  readonly parameters: SwarmParameters;
  readonly queue = new EventQueue<SimEvent>();
  readonly network: Network<Message>;
  readonly replicas: SimReplica[] = [];
  readonly clients: SimClient[] = [];
  readonly checker: Checker;
  readonly history: HistoryOperation[] = [];
  readonly faultPrng: Prng;
  readonly workloadPrng: Prng;
  readonly diskPrng: Prng;
  readonly seedPrng: Prng;
  /** Storage faults on a crash: a stream of their own, so that the others draw as before. */
  readonly storagePrng: Prng;
  readonly trace: string[] | undefined;
  traceHash = 0x811c9dc5;
  now = 0;
  phase: "safety" | "liveness" = "safety";
  readonly stats: SimulationStats = emptyStats();
  readonly safetyUnits: number;
  readonly livenessUnitsMax: number;
  readonly addresses: string[];
  readonly plantedBug: PlantedBug | undefined;
  /**
   * §7 The administrator: the reconfiguration it is at (`step`, into
   * `SwarmParameters.reconfigurations`), its stage there ("done" only after the last), its
   * request-numbers and timer generation.
   */
  admin: {
    step: number;
    stage: "waiting" | "reconfiguring" | "checking" | "done";
    requestNumber: number;
    generation: number;
    readonly node: number;
  };

  constructor(readonly options: SimulationOptions) {
    this.seed = options.seed;
    this.parameters = drawParameters(options.seed, options);
    const root = new Prng(options.seed);
    this.faultPrng = root.fork(2);
    this.workloadPrng = root.fork(3);
    this.diskPrng = root.fork(4);
    this.seedPrng = root.fork(5);
    this.storagePrng = root.fork(7);
    this.trace = options.trace === true ? [] : undefined;
    this.safetyUnits = options.safetyUnits ?? SAFETY_UNITS_DEFAULT;
    this.livenessUnitsMax = options.livenessUnitsMax ?? LIVENESS_UNITS_MAX_DEFAULT;
    this.plantedBug = options.plantedBug;
    const p = this.parameters;
    this.network = new Network<Message>(
      {
        delayMin: p.delayMin,
        delayMean: p.delayMean,
        lossProbability: p.lossProbability,
        duplicateProbability: p.duplicateProbability,
        linkCapacity: p.linkCapacity,
        slowProbability: p.slowProbability,
        slowDelayMax: p.slowDelayMaxUnits,
      },
      root.fork(6),
      (time, delivery) => this.queue.push(time, { kind: "deliver", delivery }),
    );
    this.addresses = [];
    for (let i = 0; i < p.replicaCount; i++) this.addresses.push(`sim:${i}`);
    const machines = Math.max(
      p.replicaCount,
      ...p.reconfigurations.flatMap((step) => step.members.map((id) => id + 1)),
    );
    if (options.app !== undefined && options.app.workload === undefined) {
      throw new TypeError(`app ${options.app.name} has no workload for the simulator`);
    }
    this.checker = new Checker(
      machines,
      p.clientsMax,
      options.app === undefined ? undefined : this.#appMachine(options.app, false),
      options.app === undefined || !this.parameters.readsWithoutLog
        ? undefined
        : () => this.#appMachine(options.app!, false),
    );
    for (let i = 0; i < machines; i++) this.replicas.push(new SimReplica(i));
    p.reconfigurations.forEach((step, k) => {
      for (const id of step.members) {
        const sim = this.replicas[id]!;
        if (id >= p.replicaCount && sim.joinsAt < 0) sim.joinsAt = k;
      }
    });
    for (let i = 0; i < p.clientCount; i++) {
      const client = new SimClient(i, CLIENT_ID_BASE + i, machines + i);
      client.members = Array.from({ length: p.replicaCount }, (_, id) => id);
      this.clients.push(client);
    }
    this.admin = {
      step: 0,
      stage: p.reconfigurations.length === 0 ? "done" : "waiting",
      requestNumber: 0,
      generation: 0,
      node: machines + p.clientCount,
    };
  }

  run(): SimulationResult {
    let failure: string | undefined;
    try {
      this.#runPhases();
    } catch (error) {
      if (error instanceof InvariantViolation) {
        failure = error.message;
      } else {
        failure = `replica or simulator threw: ${
          error instanceof Error ? (error.stack ?? error.message) : String(error)
        }`;
      }
      this.#traceLine(`FAILURE ${failure}`);
    }
    const net = this.network.stats;
    this.stats.messagesSent = net.sent;
    this.stats.messagesDropped = net.dropped.loss + net.dropped.partition + net.dropped.overflow +
      net.dropped.down;
    this.stats.messagesDuplicated = net.duplicated;
    this.stats.partitions = net.partitions;
    this.stats.opsCommitted = this.checker.committedCount;
    this.stats.readsWithoutLog = this.checker.readsChecked;
    return {
      seed: this.seed,
      ok: failure === undefined,
      failure,
      parameters: this.parameters,
      stats: this.stats,
      traceHash: this.trace !== undefined ? (this.traceHash >>> 0).toString(16) : undefined,
      trace: this.trace,
    };
  }

  #runPhases(): void {
    for (const sim of this.replicas) if (!sim.isNew) this.#start(sim);
    for (const client of this.clients) this.#scheduleClient(client, this.workloadPrng.int(0, 50));
    if (this.admin.stage === "waiting") {
      this.queue.push(this.parameters.reconfigurations[0]!.atUnits, {
        kind: "admin",
        generation: 0,
      });
    }
    this.queue.push(this.parameters.faultIntervalUnits, { kind: "fault" });
    this.#runUntil(this.safetyUnits);

    // Liveness: heal everything, restart every crashed replica, inject nothing more.
    this.phase = "liveness";
    this.#traceLine("LIVENESS heal, restart every replica, no more faults");
    this.network.heal();
    this.network.setFaultsEnabled(false);
    for (const sim of this.replicas) if (!sim.up && this.#started(sim)) this.#start(sim);
    const deadline = this.now + this.livenessUnitsMax;
    while (this.now < deadline) {
      this.#runUntil(Math.min(deadline, this.now + 100));
      if (this.#converged()) break;
    }
    if (!this.#converged()) {
      throw new InvariantViolation(
        `liveness: not converged after ${this.livenessUnitsMax} units: ${this.#describeReplicas()}; pending requests: ${
          this.clients.filter((c) => c.pending !== undefined).length
        }`,
      );
    }
    // Invariant 7: the clients' history is linearizable.
    const result = checkLinearizable(this.history);
    if (!result.ok) throw new InvariantViolation(`linearizability: ${result.message}`);
    this.checker.checkFinal(this.#finalMembers().map((sim) => sim.replica!));
  }

  /** The machines of the group at the end: the last configuration's (once reached). */
  #finalMembers(): SimReplica[] {
    return this.#membersOfEpoch(this.admin.stage === "done" ? this.#epochsPlanned() : 0)
      .map((id) => this.replicas[id]!);
  }

  /** §7 The number of reconfigurations of the seed: the epoch the group ends in. */
  #epochsPlanned(): number {
    return this.parameters.reconfigurations.length;
  }

  /** §7 The machine ids of epoch `epoch`'s configuration (0: the initial one). */
  #membersOfEpoch(epoch: number): readonly number[] {
    if (epoch === 0) {
      return this.replicas.slice(0, this.parameters.replicaCount).map((s) => s.index);
    }
    return this.parameters.reconfigurations[epoch - 1]!.members;
  }

  /** Whether `sim` was started once and has not shut down: a machine of the run. */
  #started(sim: SimReplica): boolean {
    if (sim.shutDown) return false;
    if (!sim.isNew) return true;
    const admin = this.admin;
    return admin.step > sim.joinsAt || (admin.step === sim.joinsAt && admin.stage !== "waiting");
  }

  #converged(): boolean {
    if (this.clients.some((client) => client.pending !== undefined)) return false;
    if (this.admin.stage !== "done") return false;
    const members = this.#finalMembers();
    // §7.3: the replicas that left shut themselves down.
    for (const sim of this.replicas) {
      if (!members.includes(sim) && this.#started(sim)) return false;
    }
    const first = members[0]!.replica;
    if (first === undefined) return false;
    for (const sim of members) {
      const replica = sim.replica;
      if (replica === undefined || replica.status !== "normal") return false;
      if (replica.epoch !== first.epoch) return false;
      if (replica.viewNumber !== first.viewNumber) return false;
      if (replica.commitNumber !== this.checker.committedCount) return false;
      if (replica.opNumber !== replica.commitNumber) return false;
    }
    return true;
  }

  #describeReplicas(): string {
    return this.replicas.map((sim) => {
      const r = sim.replica;
      if (sim.shutDown) return `r${sim.index}:shut-down`;
      if (r === undefined) return `r${sim.index}:${this.#started(sim) ? "down" : "unstarted"}`;
      return `r${sim.index}:${r.status} e${r.epoch} v${r.viewNumber} op${r.opNumber} k${r.commitNumber}`;
    }).join(" ");
  }

  #runUntil(time: number): void {
    while (true) {
      const next = this.queue.peekTime();
      if (next === undefined || next > time) break;
      if (this.queue.size > EVENTS_PENDING_MAX) {
        throw new InvariantViolation(
          `message storm: ${this.queue.size} events pending at time ${this.now}: ${this.#describeReplicas()}`,
        );
      }
      const entry = this.queue.pop()!;
      this.now = entry.time;
      this.stats.events++;
      this.#handle(entry.item);
    }
    this.now = time;
  }

  #handle(event: SimEvent): void {
    switch (event.kind) {
      case "deliver":
        return this.#deliver(event.delivery);
      case "tick": {
        const sim = this.replicas[event.replica]!;
        if (sim.incarnation !== event.incarnation || sim.replica === undefined) return;
        this.queue.push(this.now + TICK_UNITS, event);
        sim.replica.tick(this.now);
        this.#afterStep(sim, "tick");
        return;
      }
      case "persisted":
        return this.#persisted(event.replica, event.incarnation, event.id);
      case "client": {
        const client = this.clients[event.client]!;
        if (client.generation !== event.generation) return;
        return this.#clientWake(client);
      }
      case "fault":
        return this.#injectFault();
      case "restart": {
        const sim = this.replicas[event.replica]!;
        if (sim.up || sim.shutDown) return;
        this.#start(sim);
        if (this.phase !== "safety") return;
        const p = this.parameters;
        const prng = this.faultPrng;
        let delay: number | undefined;
        let quick = false;
        if (sim.replica!.status === "recovering" && prng.chance(p.recoveryCrashProbability)) {
          // Crash it again while the answers to its Recovery are on their way, and restart it at
          // once: those answers reach its next recovery, which must ignore them (§4.3's nonce).
          delay = prng.int(1, 2 * (p.delayMin + p.delayMean) + 5);
          quick = true;
        } else if (prng.chance(p.crashAgainProbability)) {
          delay = prng.int(50, 1500);
        }
        if (delay !== undefined) {
          this.queue.push(this.now + delay, {
            kind: "crash",
            replica: sim.index,
            incarnation: sim.incarnation,
            quick,
          });
        }
        return;
      }
      case "crash": {
        const sim = this.replicas[event.replica]!;
        if (this.phase !== "safety" || sim.incarnation !== event.incarnation || !sim.up) return;
        if (!this.#mayCrash(sim)) return;
        this.#crash(sim, this.faultPrng.chance(this.parameters.disklessProbability));
        const p = this.parameters;
        // A quick restart comes back while messages sent to the crashed process still arrive.
        const downtime = event.quick
          ? this.faultPrng.int(1, Math.max(2, p.delayMin + p.delayMean))
          : this.#drawDowntime();
        this.queue.push(this.now + downtime, { kind: "restart", replica: sim.index });
        if (event.quick && p.partitionProbability > 0 && this.faultPrng.chance(0.5)) {
          // Hold what is sent to it across the restart: the answers to both incarnations'
          // Recovery messages then arrive together, the old ones first.
          const until = this.now + downtime + this.faultPrng.int(10, 300);
          this.network.stallInto(sim.index, this.replicas.map((other) => other.index), until);
          this.#traceLine(`STALL every link into r${sim.index} until ${until}`);
        }
        return;
      }
      case "checkpointed":
        this.#checkpointed(event.replica, event.incarnation);
        return;
      case "heal":
        if (this.phase === "safety") {
          this.network.heal();
          this.#traceLine("HEAL network");
        }
        return;
      case "admin":
        if (event.generation === this.admin.generation) this.#adminStep();
        return;
    }
  }

  // ---------------------------------------------------------------- replicas

  /** A machine of `app` as the simulator runs it: guarded, and every operation through the log. */
  /**
   * A replica's (or the model's) machine of another app, behind the guard; with `reads`, its
   * `readOnly`/`query` (if it has them), so that reads are answered without the log, as in a real
   * group (the checker rebuilds the state each was answered in, `Checker.#checkAppRead`).
   */
  #appMachine(app: App, reads: boolean): StateMachine {
    const machine = guardStateMachine(app.createStateMachine());
    if (!reads) {
      delete machine.readOnly;
      delete machine.query;
    }
    return machine;
  }

  #start(sim: SimReplica): void {
    sim.incarnation++;
    const index = sim.index;
    const app = this.options.app !== undefined
      ? this.#appMachine(this.options.app, this.parameters.readsWithoutLog)
      : this.parameters.readsWithoutLog
      ? new KvStore()
      : new LogOnlyKvStore();
    // §7 A new process that never learned its group starts afresh, as a standby.
    const standby = sim.isNew && (sim.fresh || sim.disk.membership === undefined);
    if (standby) sim.disk = new MemoryDisk();
    const durable = sim.fresh || standby ? undefined : sim.disk.load(app);
    sim.fresh = false;
    sim.pendingWrites = [];
    sim.checkpointWrite = undefined;
    sim.writeDoneAt = this.now;
    const replica = new Replica({
      chunkHash: sha256,
      replicaIndex: sim.isNew ? 0 : index,
      addresses: this.addresses,
      // A new machine's address; it waits for a StartEpoch unless its disk names its group.
      standby: sim.isNew ? { address: `sim:${index}` } : undefined,
      app,
      seed: this.seedPrng.nextUint32(),
      durable,
      limits: {
        logPackOps: this.parameters.logPackOps,
        quietPrepareBackups: this.parameters.quietPrepareBackups,
        clientsMax: this.parameters.clientsMax,
        ...this.parameters.limits,
        checkpointOpsInterval: this.parameters.checkpoints.checkpointOpsInterval,
        checkpointLogBytesMax: this.parameters.checkpoints.checkpointLogBytesMax,
        logRetainOps: this.parameters.checkpoints.logRetainOps,
        checkpointChunkBytes: this.parameters.checkpoints.checkpointChunkBytes,
        checkpointChunksInFlight: this.parameters.checkpoints.checkpointChunksInFlight,
        checkpointWriteAmplificationMax:
          this.parameters.checkpoints.checkpointWriteAmplificationMax,
      },
      timing: {
        spareSwapTicks: this.parameters.spareSwapTicks,
        spareCatchUpTicks: this.parameters.spareCatchUpTicks,
      },
      plantedBug: this.plantedBug,
      log: this.trace !== undefined
        ? (level, text) => this.#traceLine(`r${index} ${level} ${text}`)
        : undefined,
      debug: this.trace !== undefined,
    });
    sim.replica = replica;
    sim.spareSwapsCounted = 0;
    sim.chunksReusedCounted = 0;
    this.network.setNodeUp(index, true);
    this.checker.onStart(index, replica);
    if (durable !== undefined) {
      const recovering = replica.status === "recovering";
      if (recovering) this.stats.recoveries++;
      else this.stats.restartsFromDisk++;
      this.#traceLine(
        `START r${index} ${recovering ? "recovering (§4.3)" : "from disk"} ${
          this.#replicaState(replica)
        }`,
      );
    }
    // Ticks of different replicas are spread over the tick period, deterministically.
    this.queue.push(this.now + 1 + this.seedPrng.int(0, TICK_UNITS - 1), {
      kind: "tick",
      replica: index,
      incarnation: sim.incarnation,
    });
    this.#afterStep(sim, "start");
  }

  #crash(sim: SimReplica, diskless: boolean): void {
    const replica = sim.replica!;
    const p = this.parameters;
    this.stats.crashes++;
    // Writes still in flight: lost (power failure) or completed (the process died, the kernel
    // still wrote them), in order; or completed up to a write torn by the crash, which the data
    // directory cuts off at the next load with everything after it. Each way the disk keeps a
    // prefix of the writes in the order the replica emitted them, none of the rest reported
    // durable: the replica acknowledged none of it and held back every message that depended on
    // a superblock write among it.
    const lose = this.diskPrng.chance(p.loseUnsyncedProbability);
    // Drawn on every crash, used or not, so that each crash takes the same draws.
    const storage = this.storagePrng;
    const tearLog = storage.chance(p.tornWriteProbability);
    const tearSuperblock = storage.chance(p.superblockTornProbability);
    const damageLog = storage.chance(p.logCorruptionProbability);
    const tornAt = storage.float();
    const damageAt = storage.float();
    const damageCheckpoint = storage.chance(p.checkpointCorruptionProbability);
    const pending = sim.pendingWrites;
    let kept = lose ? 0 : pending.length;
    let what = diskless ? "losing its log" : "keeping its disk";
    if (lose) what += ", losing unsynced writes";
    if (!lose && tearLog) {
      const last = pending.findLastIndex((write) => write.effect.type === "persist_log");
      if (last !== -1) {
        kept = last;
        this.stats.tornWrites++;
        what += `, tearing its last log write (${pending.length - last} of ${pending.length} ` +
          "writes in flight lost)";
      }
    }
    if (!lose && kept === pending.length && tearSuperblock) {
      const superblocks: number[] = [];
      pending.forEach((write, index) => {
        if (write.effect.type === "persist_superblock") superblocks.push(index);
      });
      if (superblocks.length > 0) {
        kept = superblocks[Math.floor(tornAt * superblocks.length)]!;
        this.stats.tornSuperblocks++;
        const torn = pending[kept]!.effect as Extract<Effect, { type: "persist_superblock" }>;
        what += `, tearing its superblock write of view ${torn.superblock.viewNumber} ` +
          `(${pending.length - kept} of ${pending.length} writes in flight lost)`;
      }
    }
    for (let index = 0; index < kept; index++) this.#applyWrite(sim, pending[index]!);
    sim.pendingWrites = [];
    if (sim.checkpointWrite !== undefined) {
      // A checkpoint write cut short: the data directory deletes its temporary file at the next
      // open, and the previous checkpoints stay.
      what += `, losing its checkpoint write of op ${sim.checkpointWrite.checkpoint.opNumber}`;
      sim.checkpointWrite = undefined;
      this.stats.checkpointWritesLost++;
    }
    const disk = sim.disk;
    if (diskless) {
      disk.loseLog();
      sim.storageFault = true;
    } else if (damageLog && disk.log.length >= 2 && this.#mayFault(sim)) {
      // Damage: the record holding the `position`-th entry on decays, valid records follow it (the
      // last record bad would look torn). The load keeps the entries before it; the data
      // directory marks the superblock recovering and reports the log untrusted (`DataDir.open`).
      const position = 1 + Math.floor(damageAt * (disk.log.length - 1));
      const bad = disk.logStartOpNumber + position - 1;
      const lost = disk.log.length - (position - 1);
      disk.log.length = position - 1;
      disk.commitNumber = Math.min(disk.commitNumber, disk.opNumber);
      if (this.options.trustDamagedLogs !== true) {
        disk.superblock = { ...disk.superblock, recovering: true };
        disk.logIntact = false;
      }
      sim.storageFault = true;
      this.stats.corruptedLogs++;
      what += `, its log damaged at op ${bad} (${lost} ops lost${
        this.options.trustDamagedLogs === true ? ", PLANTED: handed over as trusted" : ""
      })`;
    }
    if (
      !diskless && damageCheckpoint && disk.checkpoints.length > 0 &&
      this.#mayFault(sim)
    ) {
      const damaged = disk.checkpoints.pop()!.checkpoint.opNumber;
      sim.storageFault = true;
      this.stats.corruptedCheckpoints++;
      what += `, its checkpoint of op ${damaged} damaged (deleted at the restart)`;
    }
    this.#traceLine(`CRASH r${sim.index} ${this.#replicaState(replica)} ${what}`);
    sim.replica = undefined;
    sim.incarnation++;
    this.network.setNodeUp(sim.index, false);
    this.checker.onCrash(sim.index);
    if (this.#faulty() > this.#f()) {
      throw new Error(`simulator: ${this.#faulty()} replicas faulty, more than f = ${this.#f()}`);
    }
  }

  /**
   * Whether a running member of `epoch` is one that `sim` knows of (in the membership it holds
   * or last persisted), and so answers `sim`'s messages of an old epoch with NewEpoch (§7.2).
   */
  #canBeTold(sim: SimReplica, epoch: number): boolean {
    const current = this.#membersOfEpoch(epoch);
    const known = sim.replica?.membership ?? sim.disk.membership;
    const machines = known === undefined
      ? this.#membersOfEpoch(0)
      : known.members.map((id) => Number(known.addresses[id]!.slice("sim:".length)));
    return machines.some((index) => {
      const other = this.replicas[index];
      return current.includes(index) && other !== undefined && this.#started(other);
    });
  }

  /** §7.3 The operator turns off a machine that left the group (see `#adminReceive`). */
  #turnOff(sim: SimReplica): void {
    this.#traceLine(
      `TURN OFF r${sim.index} ${
        sim.replica === undefined ? "down" : this.#replicaState(sim.replica)
      }`,
    );
    this.stats.turnedOff++;
    sim.shutDown = true;
    sim.replica = undefined;
    sim.incarnation++;
    this.network.setNodeUp(sim.index, false);
    this.checker.onCrash(sim.index);
  }

  /** §7.1 A replica that left and saw f'+1 new members start stops for good. */
  #shutDown(sim: SimReplica): void {
    this.#traceLine(`SHUTDOWN r${sim.index} ${this.#replicaState(sim.replica!)}`);
    this.stats.shutDowns++;
    sim.shutDown = true;
    sim.replica = undefined;
    sim.incarnation++;
    this.network.setNodeUp(sim.index, false);
    this.checker.onCrash(sim.index);
    // The moment the old group leaves is the new group's most fragile: a new member that
    // started may be the only one holding the state (if the old ones left too early). Crash one,
    // losing its log, now and then.
    if (this.phase !== "safety" || !this.faultPrng.chance(0.5)) return;
    const joined = this.replicas.filter((other) =>
      other.up && other.joined && this.#mayCrash(other)
    );
    if (joined.length === 0) return;
    const victim = this.faultPrng.pick(joined);
    this.#crash(victim, true);
    this.queue.push(this.now + this.#drawDowntime(), { kind: "restart", replica: victim.index });
  }

  #deliver(delivery: Delivery<Message>): void {
    if (!this.network.onDeliver(delivery)) return;
    const to = delivery.to;
    if (to < this.replicas.length) {
      const sim = this.replicas[to]!;
      const replica = sim.replica;
      if (replica === undefined) return;
      if (this.trace !== undefined) {
        this.#traceLine(
          `r${to} ${this.#replicaState(replica)} <- ${this.#nodeName(delivery.from)}: ${
            describeMessage(delivery.message)
          }`,
        );
      }
      if (delivery.message.type === "get_state") this.stats.stateTransfers++;
      replica.onMessage(delivery.message);
      this.#afterStep(sim, delivery.message.type);
    } else if (to === this.admin.node) {
      this.#adminReceive(delivery.message as ClientReplyMessage);
    } else {
      const client = this.clients[to - this.replicas.length]!;
      this.#clientReceive(client, delivery.message as ClientReplyMessage);
    }
  }

  #persisted(index: number, incarnation: number, id: number): void {
    const sim = this.replicas[index]!;
    if (sim.incarnation !== incarnation || sim.replica === undefined) return;
    while (sim.pendingWrites.length > 0 && sim.pendingWrites[0]!.effect.id <= id) {
      this.#applyWrite(sim, sim.pendingWrites.shift()!);
    }
    sim.replica.onPersisted(id);
    this.#afterStep(sim, "persisted");
  }

  #applyWrite(sim: SimReplica, write: PendingWrite): void {
    try {
      sim.disk.apply(write.effect);
    } catch (error) {
      throw new InvariantViolation(`r${sim.index}: ${(error as Error).message}`);
    }
  }

  /** A checkpoint write is done: on the disk, and reported to the replica (§5.1). */
  #checkpointed(index: number, incarnation: number): void {
    const sim = this.replicas[index]!;
    const write = sim.checkpointWrite;
    if (sim.incarnation !== incarnation || sim.replica === undefined || write === undefined) return;
    sim.checkpointWrite = undefined;
    sim.disk.storeCheckpoint(write.checkpoint, write.chunks);
    this.#traceLine(`r${index} checkpoint of op ${write.checkpoint.opNumber} durable`);
    sim.replica.onCheckpointed(write.checkpoint);
    this.#afterStep(sim, "checkpointed");
  }

  /** Carry out what a replica asked for after one step, then check the invariants. */
  #afterStep(sim: SimReplica, cause: string): void {
    const replica = sim.replica!;
    const effects = replica.drainEffects();
    // Check first, so that replies are checked against the commits of this very step.
    const before = this.checker.viewChanges;
    this.checker.afterStep(sim.index, replica, cause);
    this.stats.viewChanges += this.checker.viewChanges - before;
    this.stats.spareSwaps += replica.spareSwaps - sim.spareSwapsCounted;
    sim.spareSwapsCounted = replica.spareSwaps;
    const reused = replica.checkpointStats.chunksReused;
    this.stats.checkpointChunksReused += reused - sim.chunksReusedCounted;
    sim.chunksReusedCounted = reused;
    if (sim.isNew && !sim.joined && replica.status === "normal" && replica.isMember) {
      sim.joined = true;
    }
    if (sim.storageFault && replica.status === "normal") {
      // Normal again: through §4.3 recovery, it holds the primary's log (see the checker).
      sim.storageFault = false;
      this.#traceLine(`r${sim.index} is normal again after losing what its disk acknowledged`);
    }
    if (replica.epoch > this.stats.epochsStarted) this.stats.epochsStarted = replica.epoch;
    let shutDown = false;
    for (const effect of effects) {
      switch (effect.type) {
        case "send":
          this.network.send(sim.index, effect.to, effect.message, this.now);
          break;
        case "reply": {
          const clientIndex = effect.clientId - CLIENT_ID_BASE;
          if (effect.clientId === ADMIN_CLIENT_ID) {
            this.network.send(sim.index, this.admin.node, effect.message, this.now);
          } else if (clientIndex >= 0 && clientIndex < this.clients.length) {
            this.checker.onReplySent(effect.message);
            this.network.send(
              sim.index,
              this.replicas.length + clientIndex,
              effect.message,
              this.now,
            );
          }
          break;
        }
        case "checkpoint": {
          // The chunks are read now (the reader is consistent as of the checkpoint's op-number,
          // whatever executes meanwhile) and reach the disk after `checkpointWriteUnits`.
          this.stats.checkpointsTaken++;
          sim.checkpointWrite = readCheckpoint(effect);
          this.queue.push(this.now + this.parameters.checkpoints.checkpointWriteUnits, {
            kind: "checkpointed",
            replica: sim.index,
            incarnation: sim.incarnation,
          });
          break;
        }
        case "truncate_log":
          this.stats.logTruncations++;
          try {
            sim.disk.truncateBefore(effect.beforeOpNumber);
          } catch (error) {
            throw new InvariantViolation(`r${sim.index}: ${(error as Error).message}`);
          }
          break;
        case "send_checkpoint_chunks": {
          const chunks = sim.disk.chunksOf(effect.opNumber, effect.indexes);
          if (chunks === undefined) break;
          effect.indexes.forEach((chunkIndex, position) => {
            this.stats.checkpointChunksSent++;
            this.network.send(sim.index, effect.to, {
              type: "checkpoint_chunk",
              epoch: replica.epoch,
              opNumber: effect.opNumber,
              index: chunkIndex,
              bytes: chunks[position]!,
              replica: replica.replicaIndex,
            }, this.now);
          });
          break;
        }
        case "shut_down":
          shutDown = true;
          break;
        case "install_checkpoint":
        case "persist_membership":
        case "persist_log":
        case "persist_superblock": {
          if (effect.type === "install_checkpoint") this.stats.checkpointTransfers++;
          sim.pendingWrites.push({ effect });
          const latency = this.parameters.diskLatencyUnits;
          sim.writeDoneAt = Math.max(sim.writeDoneAt, this.now + latency);
          this.queue.push(sim.writeDoneAt, {
            kind: "persisted",
            replica: sim.index,
            incarnation: sim.incarnation,
            id: effect.id,
          });
          break;
        }
      }
    }
    if (shutDown) this.#shutDown(sim);
  }

  // ---------------------------------------------------------------- §7 the administrator

  /** Issue, or re-send, the Reconfiguration, then the CheckEpoch (§7.3), until answered. */
  #adminStep(): void {
    const admin = this.admin;
    const plan = this.parameters.reconfigurations[admin.step]!;
    // Step k takes the group from epoch k to epoch k + 1.
    const epoch = admin.step;
    if (admin.stage === "done") return;
    if (admin.stage === "waiting") {
      const after = Math.floor((plan.members.length - 1) / 2);
      if (this.#faulty() > after) {
        // As an operator would: the group is to have at most f' replicas faulty once it runs.
        this.queue.push(this.now + 50, { kind: "admin", generation: admin.generation });
        return;
      }
      // The new machines start as new processes, waiting to be told their group.
      for (const sim of this.replicas) {
        if (sim.joinsAt === admin.step && !sim.up) this.#start(sim);
      }
      admin.stage = "reconfiguring";
      admin.requestNumber = 2 * admin.step + 1;
      this.stats.reconfigurations++;
      this.#traceLine(
        `RECONFIGURE ${plan.plan} to ${plan.members.map((id) => `r${id}`).join(",")} ` +
          `(epoch ${epoch} to ${epoch + 1})`,
      );
    }
    if (admin.stage === "reconfiguring") {
      const message: ClientMessage = {
        type: "reconfiguration",
        clientId: ADMIN_CLIENT_ID,
        requestNumber: admin.requestNumber,
        epoch,
        addresses: plan.members.map((id) => `sim:${id}`),
      };
      // To the old group, and to the new one (which answers a retry once it runs).
      for (const sim of this.replicas) {
        if (sim.joinsAt <= admin.step) this.network.send(admin.node, sim.index, message, this.now);
      }
    } else {
      const message: ClientMessage = {
        type: "check_epoch",
        clientId: ADMIN_CLIENT_ID,
        requestNumber: admin.requestNumber,
        epoch: epoch + 1,
      };
      for (const id of plan.members) this.network.send(admin.node, id, message, this.now);
    }
    admin.generation++;
    this.queue.push(this.now + this.parameters.requestTimeoutUnits, {
      kind: "admin",
      generation: admin.generation,
    });
  }

  #adminReceive(message: ClientReplyMessage): void {
    const admin = this.admin;
    if (message.type === "rejected") {
      throw new InvariantViolation(
        `administrator: request ${message.requestNumber} rejected: ${message.reason}`,
      );
    }
    if (message.type !== "configuration" || message.requestNumber !== admin.requestNumber) return;
    if (admin.stage !== "reconfiguring" && admin.stage !== "checking") return;
    const epoch = admin.step + 1;
    const wanted = this.parameters.reconfigurations[admin.step]!.members.map((id) => `sim:${id}`)
      .join(",");
    if (message.epoch < epoch) return;
    if (message.epoch !== epoch || message.addresses.join(",") !== wanted) {
      throw new InvariantViolation(
        `administrator: told epoch ${message.epoch} is ${message.addresses.join(",")}, ` +
          `wanted epoch ${epoch} with ${wanted}`,
      );
    }
    if (admin.stage === "reconfiguring") {
      this.#traceLine(`RECONFIGURED: epoch ${epoch} began; checking it (§7.3)`);
      admin.stage = "checking";
      admin.requestNumber = 2 * admin.step + 2;
      this.#adminStep();
    } else {
      this.#traceLine(`CHECKED: epoch ${epoch} runs; the old machines may go`);
      admin.generation++;
      // §7.3 A machine that left an epoch before and did not shut down by itself, the operator
      // turns off now, but only one that no member of the new epoch would ever tell of it (down
      // or recovering throughout the epoch it left, it knows only members that are gone or
      // going). Any other must shut down by itself: the liveness phase waits for it.
      const kept = new Set([...this.#membersOfEpoch(epoch - 1), ...this.#membersOfEpoch(epoch)]);
      for (const sim of this.replicas) {
        if (this.#started(sim) && !kept.has(sim.index) && !this.#canBeTold(sim, epoch)) {
          this.#turnOff(sim);
        }
      }
      if (admin.step + 1 < this.#epochsPlanned()) {
        // The next reconfiguration, from the group that now runs.
        admin.step++;
        admin.stage = "waiting";
        const at = Math.max(this.now + 1, this.parameters.reconfigurations[admin.step]!.atUnits);
        this.queue.push(at, { kind: "admin", generation: admin.generation });
      } else {
        admin.stage = "done";
      }
    }
  }

  // ---------------------------------------------------------------- faults

  #injectFault(): void {
    if (this.phase !== "safety") return;
    const p = this.parameters;
    const prng = this.faultPrng;
    this.queue.push(this.now + p.faultIntervalUnits, { kind: "fault" });
    if (prng.chance(p.crashProbability)) {
      // At most f replicas crashed or recovering at once (§4.3's fault model).
      const candidates = this.replicas.filter((sim) =>
        sim.up && this.#started(sim) && this.#mayCrash(sim)
      );
      if (candidates.length > 0) {
        const primary = this.#currentPrimary();
        const sim = primary !== undefined && candidates.includes(primary) &&
            prng.chance(p.targetPrimaryProbability)
          ? primary
          : prng.pick(candidates);
        this.#crash(sim, prng.chance(p.disklessProbability));
        const downtime = this.#drawDowntime();
        this.queue.push(this.now + downtime, { kind: "restart", replica: sim.index });
      }
    }
    if (prng.chance(p.partitionProbability)) {
      this.network.heal();
      const replicas = this.replicas.filter((sim) => this.#started(sim)).map((sim) => sim.index);
      const kind = prng.int(0, 5);
      if (replicas.length >= 2) {
        if (kind === 0) {
          // An isolated primary goes on appending requests it cannot commit: a long stale log.
          const primary = this.#currentPrimary();
          const node = primary !== undefined && prng.chance(p.targetPrimaryProbability)
            ? primary.index
            : prng.pick(replicas);
          this.network.isolate(node, replicas);
          this.#traceLine(`PARTITION isolate r${node}`);
        } else if (kind === 1) {
          this.network.splitHalves(replicas);
          this.#traceLine("PARTITION halves");
        } else if (kind === 2) {
          const from = prng.pick(replicas);
          let to = prng.pick(replicas);
          if (to === from) to = replicas[(replicas.indexOf(from) + 1) % replicas.length]!;
          this.network.cutOneWay(from, to);
          this.#traceLine(`PARTITION one-way r${from} -/-> r${to}`);
        } else if (kind === 3) {
          const node = prng.pick(replicas);
          for (const other of replicas) if (other !== node) this.network.cutOneWay(node, other);
          this.#traceLine(`PARTITION r${node} cannot send to anyone`);
        } else if (kind === 5) {
          // Everything sent to one replica is held, then arrives at once. Aimed, when one is, at
          // a replica that is down or recovering: after a restart it receives the answers meant
          // for its previous incarnation, which its recovery must tell from the current ones.
          const unavailable = this.replicas.filter((sim) =>
            !sim.up || sim.replica!.status === "recovering"
          );
          const node = unavailable.length > 0 && prng.chance(0.7)
            ? prng.pick(unavailable).index
            : prng.pick(replicas);
          const until = this.now + 1 + Math.round(prng.exponential(p.partitionMeanUnits));
          this.network.stallInto(node, replicas, until);
          this.#traceLine(`STALL every link into r${node} until ${until}`);
        } else {
          // A primary that can send but not receive must step down, or nothing commits.
          const primary = this.#currentPrimary();
          const node = primary !== undefined && prng.chance(p.targetPrimaryProbability)
            ? primary.index
            : prng.pick(replicas);
          for (const other of replicas) if (other !== node) this.network.cutOneWay(other, node);
          this.#traceLine(`PARTITION r${node} cannot receive from anyone`);
        }
        const duration = 1 + Math.round(prng.exponential(p.partitionMeanUnits));
        this.queue.push(this.now + duration, { kind: "heal" });
      }
    }
  }

  /** How long a crashed replica stays down. */
  #drawDowntime(): number {
    const p = this.parameters;
    const prng = this.faultPrng;
    if (prng.chance(p.quickRestartProbability)) return prng.int(1, 20);
    return 1 + Math.round(prng.exponential(p.downtimeMeanUnits));
  }

  /**
   * Whether crashing `sim` keeps at most f replicas faulty. A recovering replica may crash again
   * (it stays faulty): its next recovery must ignore the answers to this one.
   */
  #mayCrash(sim: SimReplica): boolean {
    return this.#mayFault(sim);
  }

  /**
   * Whether `sim` may become faulty (crash, lose what its disk acknowledged) with at most f
   * replicas faulty at once: it is already, or fewer than f are.
   */
  #mayFault(sim: SimReplica): boolean {
    return this.#isFaulty(sim) || this.#faulty() < this.#f();
  }

  /** The number of faulty replicas the group tolerates: f, with 2f + 1 replicas. */
  #f(): number {
    const admin = this.admin;
    // The group of epoch `admin.step` runs; the administrator may be taking it to the next.
    const before = Math.floor((this.#membersOfEpoch(admin.step).length - 1) / 2);
    if (admin.stage === "waiting" || this.#epochsPlanned() === 0) return before;
    // §7 During and after a reconfiguration: the old group must commit it and serve the state,
    // the new one must start, with at most the smaller f faulty across both.
    const after = Math.floor((this.#membersOfEpoch(admin.step + 1).length - 1) / 2);
    return Math.min(before, after);
  }

  /**
   * Crashed, recovering, or with a storage fault outstanding (its disk lost entries it may have
   * acknowledged, and it is not normal since): at most f at once in the safety phase.
   */
  #isFaulty(sim: SimReplica): boolean {
    // A new machine that never joined holds nothing the group relies on: not a fault.
    if (!this.#started(sim) || (sim.isNew && !sim.joined)) return false;
    return !sim.up || sim.replica!.status === "recovering" || sim.storageFault;
  }

  #faulty(): number {
    let count = 0;
    for (const sim of this.replicas) if (this.#isFaulty(sim)) count++;
    return count;
  }

  /** The up replica that is primary of the latest view in which some replica is normal. */
  #currentPrimary(): SimReplica | undefined {
    let best: SimReplica | undefined;
    for (const sim of this.replicas) {
      const replica = sim.replica;
      if (replica === undefined || replica.status !== "normal" || !replica.isPrimary) continue;
      if (best === undefined || replica.viewNumber > best.replica!.viewNumber) best = sim;
    }
    return best;
  }

  /** A replica normal as the primary of a view older than the newest primary's, else any. */
  #misdirectTarget(): number {
    const newest = this.#currentPrimary();
    const deposed = this.replicas.filter((sim) =>
      sim.replica !== undefined && sim.replica.status === "normal" && sim.replica.isPrimary &&
      sim !== newest
    );
    return deposed.length > 0
      ? this.workloadPrng.pick(deposed).index
      : this.workloadPrng.int(0, this.replicas.length - 1);
  }

  // ---------------------------------------------------------------- clients

  #scheduleClient(client: SimClient, delay: number): void {
    client.generation++;
    this.queue.push(this.now + delay, {
      kind: "client",
      client: client.index,
      generation: client.generation,
    });
  }

  #clientWake(client: SimClient): void {
    if (client.pending !== undefined) {
      if (
        this.phase === "safety" &&
        this.workloadPrng.chance(this.parameters.clientRestartProbability)
      ) {
        this.#clientRestart(client);
        this.#scheduleClient(client, this.workloadPrng.int(0, 50));
        return;
      }
      // §4.1: a request that timed out goes to every replica. §7.4: the client also asks one
      // where the group is now, as the client library does.
      this.#clientSend(client, true);
      const asked = this.workloadPrng.pick(client.members);
      this.network.send(
        client.node,
        asked,
        { type: "locate", clientId: client.clientId },
        this.now,
      );
      this.#scheduleClient(client, this.parameters.requestTimeoutUnits);
      return;
    }
    if (this.phase !== "safety") return;
    this.#clientIssue(client);
  }

  /**
   * The client process restarts: its pending request is abandoned (it may or may not execute:
   * indefinite in the history) and it numbers its next requests as `restartNumbering` says.
   */
  #clientRestart(client: SimClient): void {
    const pending = client.pending!;
    this.stats.clientRestarts++;
    this.#abandon(client, pending);
    if (this.options.restartNumbering !== "query") {
      client.requestNumber = Math.max(client.requestNumber, this.#clockRequestNumber());
    } else {
      // §4.5: one above the largest number the replicas that are up know of this client.
      let latest = 0;
      for (const sim of this.replicas) {
        if (sim.replica !== undefined) {
          latest = Math.max(latest, sim.replica.latestRequestNumber(client.clientId));
        }
      }
      client.requestNumber = latest;
    }
  }

  /** The time in "microseconds", as the client library numbers a restarted client's requests. */
  #clockRequestNumber(): number {
    return this.now * 1000;
  }

  /** Give up on `pending`: its outcome is unknown (indefinite in the history). */
  #abandon(client: SimClient, pending: ClientOperation): void {
    client.pending = undefined;
    for (const { key, call } of pending.batch ?? []) {
      this.history.push({
        clientId: client.clientId,
        key,
        call,
        invokeTime: pending.invokeTime,
        returnTime: undefined,
        output: null,
      });
    }
    if (pending.call === undefined) return;
    this.history.push({
      clientId: client.clientId,
      key: pending.key,
      call: pending.call,
      invokeTime: pending.invokeTime,
      returnTime: undefined,
      output: null,
    });
  }

  #clientIssue(client: SimClient): void {
    const app = this.options.app;
    if (app !== undefined) {
      // Another app: its workload draws the operation; the reply is checked by the checker only.
      client.requestNumber++;
      client.issued++;
      client.pending = {
        call: undefined,
        key: "",
        requestNumber: client.requestNumber,
        invokeTime: this.now,
        operation: app.workload!(this.workloadPrng).operation,
      };
      this.#clientSend(client, false);
      this.#scheduleClient(client, this.parameters.requestTimeoutUnits);
      return;
    }
    const prng = this.workloadPrng;
    if (this.parameters.batchProbability > 0 && prng.chance(this.parameters.batchProbability)) {
      return this.#clientIssueBatch(client);
    }
    const key = `k${prng.int(1, this.parameters.keyCount)}`;
    const roll = prng.int(0, 9);
    client.requestNumber++;
    client.issued++;
    let call: KvCall | undefined;
    let operation: Uint8Array;
    if (prng.chance(this.parameters.sizeProbability)) {
      call = undefined;
      operation = encodeKvOperation({ command: "SIZE" });
    } else {
      const drawn = kvCallOf(roll, key, () => {
        const value = `c${client.clientId}.${client.requestNumber}`;
        return prng.chance(this.parameters.largeValueProbability)
          ? value.padEnd(LARGE_VALUE_BYTES, ".")
          : value;
      });
      call = drawn.call;
      operation = encodeKvOperation(drawn.operation);
    }
    client.pending = {
      call,
      key,
      requestNumber: client.requestNumber,
      invokeTime: this.now,
      operation,
    };
    this.#clientSend(client, false);
    this.#scheduleClient(client, this.parameters.requestTimeoutUnits);
  }

  /** A BATCH of 2 to 4 operations on distinct keys (as many as there are keys, at most). */
  #clientIssueBatch(client: SimClient): void {
    const prng = this.workloadPrng;
    const keys = Array.from({ length: this.parameters.keyCount }, (_, i) => `k${i + 1}`);
    const count = Math.min(keys.length, prng.int(2, 4));
    client.requestNumber++;
    client.issued++;
    const batch: { key: string; call: KvCall }[] = [];
    const operations: KvOperation[] = [];
    for (let i = 0; i < count; i++) {
      const key = keys.splice(prng.int(0, keys.length - 1), 1)[0]!;
      const { call, operation } = kvCallOf(
        prng.int(0, 9),
        key,
        () => `c${client.clientId}.${client.requestNumber}.${i}`,
      );
      batch.push({ key, call });
      operations.push(operation);
    }
    client.pending = {
      call: undefined,
      key: "",
      batch,
      requestNumber: client.requestNumber,
      invokeTime: this.now,
      operation: encodeKvBatch(operations),
    };
    this.#clientSend(client, false);
    this.#scheduleClient(client, this.parameters.requestTimeoutUnits);
  }

  #clientSend(client: SimClient, toAll: boolean): void {
    const pending = client.pending!;
    const request: ClientMessage = {
      type: "request",
      clientId: client.clientId,
      requestNumber: pending.requestNumber,
      operation: pending.operation,
    };
    this.checker.onRequest(request);
    if (client.members.every((id) => this.replicas[id]!.shutDown)) {
      // Every replica it knows shut down: its operator hands it the new configuration (a real
      // client that was away meanwhile would be given it the same way).
      // (The latest epoch some replica reached: the one whose start shut the old ones down.)
      const epoch = Math.min(this.stats.epochsStarted, this.#epochsPlanned());
      client.members = [...this.#membersOfEpoch(epoch)];
      client.epoch = epoch;
    }
    if (toAll) {
      for (const id of client.members) this.network.send(client.node, id, request, this.now);
    } else {
      // Now and then a client's guess is wrong, as a real client's can be (a stale
      // configuration, a view it missed): a read goes to a deposed primary that still believes
      // it leads, when there is one, else to any replica. (Writes are not misdirected: one
      // appended at a deposed primary keeps its later reads waiting, which hides stale reads.)
      const misdirect = pending.call?.kind === "get" ? this.parameters.misdirectProbability : 0;
      const target = misdirect > 0 && this.workloadPrng.chance(misdirect)
        ? this.#misdirectTarget()
        : client.members[client.viewGuess % client.members.length]!;
      this.network.send(client.node, target, request, this.now);
    }
  }

  #clientReceive(client: SimClient, message: ClientReplyMessage): void {
    if (message.type === "configuration") {
      // §7.4 A replica that left names the group that replaced it.
      if (message.epoch > client.epoch) {
        client.epoch = message.epoch;
        client.members = message.addresses.map((address) => Number(address.slice(4)));
        client.viewGuess = message.viewNumber;
        this.stats.clientsRedirected++;
        if (client.pending !== undefined) this.#clientSend(client, false);
      }
      return;
    }
    if (message.type === "not_primary") {
      if (message.viewNumber > client.viewGuess) client.viewGuess = message.viewNumber;
      return;
    }
    if (message.type === "rejected") return this.#clientRejected(client, message);
    if (message.type !== "reply") return;
    const pending = client.pending;
    if (pending === undefined || message.requestNumber !== pending.requestNumber) return;
    if (message.viewNumber > client.viewGuess) client.viewGuess = message.viewNumber;
    // As the client library: a reply answers this very operation, not another one sent under
    // the same number before a restart (the checker checks every reply against the model).
    if (message.operationChecksum !== crc32c(pending.operation)) return;
    if (this.options.app !== undefined) {
      // Another app's results are its own (an error result among them): the checker compared
      // this one with the model's when it was sent.
      this.stats.requestsCompleted++;
      client.pending = undefined;
      this.#clientThink(client);
      return;
    }
    if (pending.batch !== undefined) {
      const results = decodeKvBatchResult(message.result);
      if (!Array.isArray(results) || results.length !== pending.batch.length) {
        throw new InvariantViolation(
          `client ${client.clientId} got ${
            Array.isArray(results) ? `${results.length} results` : results.message
          } for a batch of ${pending.batch.length}`,
        );
      }
      pending.batch.forEach(({ key, call }, i) => {
        this.history.push({
          clientId: client.clientId,
          key,
          call,
          invokeTime: pending.invokeTime,
          returnTime: this.now,
          output: historyOutput(client, results[i]!),
        });
      });
      this.stats.requestsCompleted++;
      this.stats.batchesCompleted++;
      client.pending = undefined;
      this.#clientThink(client);
      return;
    }
    const output = historyOutput(client, decodeKvResult(message.result));
    if (pending.call !== undefined) {
      this.history.push({
        clientId: client.clientId,
        key: pending.key,
        call: pending.call,
        invokeTime: pending.invokeTime,
        returnTime: this.now,
        output,
      });
    }
    this.stats.requestsCompleted++;
    client.pending = undefined;
    this.#clientThink(client);
  }

  /** The primary refused the pending request (`RejectReason`), as the client library handles it. */
  #clientRejected(client: SimClient, message: Extract<ClientReplyMessage, { type: "rejected" }>) {
    const pending = client.pending;
    if (pending === undefined || message.requestNumber !== pending.requestNumber) return;
    if (message.reason !== "ahead") {
      client.requestNumber = Math.max(client.requestNumber, message.floor);
    }
    switch (message.reason) {
      case "conflict":
        // Never executed under that number: send it under a new one.
        this.stats.rejectedConflict++;
        client.requestNumber = Math.max(client.requestNumber + 1, this.#clockRequestNumber());
        pending.requestNumber = client.requestNumber;
        this.#clientSend(client, false);
        this.#scheduleClient(client, this.parameters.requestTimeoutUnits);
        return;
      case "evicted":
      case "stale":
        // The outcome is unknown to the client: it gives up on the request.
        if (message.reason === "evicted") this.stats.rejectedEvicted++;
        else this.stats.rejectedStale++;
        this.#abandon(client, pending);
        this.#clientThink(client);
        return;
      case "too_large":
      case "ahead":
        throw new InvariantViolation(
          `client ${client.clientId}: request ${message.requestNumber} rejected: ${message.reason}`,
        );
    }
  }

  #clientThink(client: SimClient): void {
    const p = this.parameters;
    const idle = this.workloadPrng.chance(p.idleProbability);
    const think = Math.round(this.workloadPrng.exponential(idle ? 2_000 : p.thinkMeanUnits));
    this.#scheduleClient(client, think);
  }

  // ---------------------------------------------------------------- trace

  #nodeName(node: number): string {
    return node < this.replicas.length ? `r${node}` : `c${node - this.replicas.length}`;
  }

  #replicaState(replica: Replica): string {
    return `[${replica.status} e${replica.epoch} v${replica.viewNumber} op${replica.opNumber} k${replica.commitNumber}]`;
  }

  #traceLine(text: string): void {
    if (this.trace === undefined) return;
    const line = `${String(this.now).padStart(6)} ${text}`;
    this.trace.push(line);
    let hash = this.traceHash;
    for (let i = 0; i < line.length; i++) {
      hash ^= line.charCodeAt(i);
      hash = Math.imul(hash, 0x01000193);
    }
    this.traceHash = hash ^ 10;
  }
}
