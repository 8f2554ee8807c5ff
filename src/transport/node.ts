/**
 * The node driver: runs the pure replica core over TCP with real ticks and the real clock, and
 * persists what the core asks to persist in the replica's data directory before reporting it
 * durable. This and `connection.ts` are the only code that touches sockets.
 *
 * §5.1 checkpoints: the node restores the newest checkpoint at startup, writes the checkpoints
 * the core asks for beside the replica's work (chunk by chunk, one at a time), truncates the log
 * behind them, installs a checkpoint the core fetched as a persist ordered with the others, and
 * serves its own checkpoints' chunks to peers that fetch them.
 *
 * @module
 */
import { sha256 } from "../lib/sha256.ts";
import process from "node:process";
import { beginSnapshotOf, type SnapshotReader, type StateMachine } from "../app/state_machine.ts";
import { formatAddress, parseAddress, type ServerConfig } from "../config.ts";
import { ADDRESS_BOOK_MAX, memberAddresses } from "../vr/membership.ts";
import {
  type CheckpointWriter,
  DataDir,
  DataDirError,
  type DataDirOptions,
  DiskFullError,
  type LoadedCheckpoint,
} from "../storage/data_dir.ts";
import { CheckpointRestorer, type RestoredCheckpoint } from "../vr/checkpoint.ts";
import { type Limits, TICK_MS } from "../vr/constants.ts";
import type { Message } from "../vr/message.ts";
import { describeMessage } from "../vr/message.ts";
import { type DurableState, type Effect, type LogLevel, Replica } from "../vr/replica.ts";
import { LIMITS_DEFAULT } from "../vr/constants.ts";
import { decodeMessage, encodeFramedMessage } from "./codec.ts";
import {
  Connection,
  IO_COUNTERS,
  type IoCounters,
  READ_BUFFER_BYTES_DEFAULT,
  type ReadBudget,
} from "./connection.ts";
import { FRAME_BODY_BYTES_MAX } from "./frame.ts";
import {
  AcceptorHandshake,
  type ClusterIdentity,
  ConnectorHandshake,
  encodeRefused,
  HANDSHAKE_BODY_BYTES_MAX,
  HANDSHAKE_TIMEOUT_MS,
  isHandshakeFrame,
  type Role,
} from "./handshake.ts";
import { connectTo, listenOn, type TlsMaterial } from "./tls.ts";
import { LatencyTracker } from "../metrics/latency.ts";

/**
 * What connections may hold of a replica, named (see `CONNECTION_LIMITS_DEFAULT` for the values
 * and why). Tests lower them; a server uses the defaults.
 */
export interface ConnectionLimits {
  /**
   * Connections that have not completed their handshake, at most. A new one past this closes the
   * oldest if that one has waited `handshakeEvictMs`, else it is closed itself: idle connections
   * that never say who they are cannot lock peers or clients out for longer than that, and a
   * storm of real ones (a thousand clients reconnecting at once) is not churned, since they
   * complete their handshakes in far less.
   */
  readonly handshakingMax: number;
  /** See `handshakingMax`. */
  readonly handshakeEvictMs: number;
  /** A connection that has not completed its handshake this long after it opened is closed. */
  readonly handshakeTimeoutMs: number;
  /**
   * Client (and status) connections at once. Peers have a budget of their own (one inbound link
   * per peer replica), so clients can never starve the replica links.
   */
  readonly clientsMax: number;
  /** A client connection that sent no frame for this long is closed; clients reconnect. */
  readonly clientIdleTimeoutMs: number;
  /**
   * With every client connection taken, a new client takes the place of the one idle longest, if
   * that one has been idle at least this long; otherwise the newcomer is refused.
   */
  readonly clientIdleEvictMs: number;
  /** The largest frame a client may send: a request with the largest operation, and its fields. */
  readonly clientFrameBodyBytesMax: number;
  /** Bytes queued for one client before it is deemed too slow and disconnected. */
  readonly clientWriteBufferBytesMax: number;
  /** A client with this many bytes of replies unread is not read from until it reads them. */
  readonly clientReadPauseBytes: number;
  /**
   * The bytes of partial frames all client connections together may buffer. Past it the
   * connections holding the most are closed: clients that each start a large frame and never
   * finish it cannot grow a replica's memory beyond this.
   */
  readonly clientReadBudgetBytes: number;
  /** A write to a client that makes no progress for this long closes the connection. */
  readonly clientWriteStallMs: number;
  /**
   * Requests taken from one client connection per turn before its replies are queued and its
   * backpressure checked (`ConnectionOptions.framesPerTurnMax`): a read of 256 KiB can hold ten
   * thousand GETs, each of which may ask for a megabyte.
   */
  readonly clientFramesPerTurnMax: number;
}

export const CONNECTION_LIMITS_DEFAULT: ConnectionLimits = {
  handshakingMax: 1024,
  handshakeEvictMs: 1_000,
  handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
  clientsMax: 4096,
  clientIdleTimeoutMs: 5 * 60_000,
  clientIdleEvictMs: 10_000,
  clientFrameBodyBytesMax: LIMITS_DEFAULT.operationBytesMax + 1024,
  clientWriteBufferBytesMax: 32 * 1024 * 1024,
  clientReadPauseBytes: 4 * 1024 * 1024,
  clientReadBudgetBytes: 256 * 1024 * 1024,
  clientWriteStallMs: 30_000,
  clientFramesPerTurnMax: 128,
};

/** The most bytes an entry's fields take in msgpack besides its operation (six numbers, headers). */
const ENTRY_FIELDS_BYTES_MAX = 64;
/** The most bytes a message's own fields take besides its entries. */
const MESSAGE_FIELDS_BYTES_MAX = 1024;
/** The read buffer of a connection in its handshake: a hello or a proof is far smaller. */
const HANDSHAKE_READ_BUFFER_BYTES = 1024;
/**
 * The read buffer of a client connection: a read of requests that fills it is handed over and
 * the next read takes the rest, so a small buffer costs system calls only to clients that send
 * much at once, and saves memory on every idle one.
 */
const CLIENT_READ_BUFFER_BYTES = 16 * 1024;
/** A client connection's reusable write buffer holds at most this much (`gatherBytesMax`). */
const CLIENT_GATHER_BYTES_MAX = 64 * 1024;
/**
 * Reply routes (client-id → connection) at most: every message names a client-id, so a
 * connection could otherwise grow the map without bound. The oldest route goes; its client's
 * next message makes it again.
 */
const CLIENT_ROUTES_MAX = 65_536;
/** Frames a connection may send while its proof is being checked; more is a protocol error. */
const EARLY_FRAMES_MAX = 1_024;
/** The chunks a status digest reads the state in: a few milliseconds of work each. */
const DIGEST_CHUNK_BYTES = 256 * 1024;
/** How often the node checks connection deadlines. */
const HOUSEKEEPING_MS = 1_000;
/** The same refusal reason is logged at most once in this long. */
const REFUSAL_LOG_INTERVAL_MS = 10_000;
/**
 * While the disk is full, the batch that found it so is written again this often. Each attempt
 * costs one failing write; space freed by an operator is used within this long.
 */
const DISK_FULL_RETRY_MS = 500;
/**
 * Chunk requests of one peer (`send_checkpoint_chunks`) queued behind the one being served; more
 * are dropped. A fetching replica asks for a few chunks at a time and asks again for what does
 * not come, so a peer cannot make this replica read its checkpoint faster than it sends it.
 */
const CHUNK_REQUESTS_QUEUED_MAX = 4;
/**
 * Bytes queued on a peer's link above which the next chunk for it waits: chunks are large, and a
 * link that queues more than `WRITE_BUFFER_BYTES_MAX` is closed as too slow.
 */
const CHUNK_SEND_QUEUED_BYTES_MAX = 8 * 1024 * 1024;
/** A chunk request whose peer's link stays that full this long is dropped (the peer asks again). */
const CHUNK_SEND_WAIT_MS_MAX = 5_000;

/** How long a replica that left the group keeps answering clients before it exits (§7.4). */
export const SHUT_DOWN_LINGER_MS = 3_000;

/** A link's first frames, sent before it ever connected, are held up to these bounds. */
const EARLY_FRAMES_HELD_MAX = 64;
const EARLY_BYTES_HELD_MAX = 1024 * 1024;

/** Peer reconnection backoff: doubles from the minimum up to the maximum. */
export const RECONNECT_MS_MIN = 20;
export const RECONNECT_MS_MAX = 1000;

/** What `ReplicaNode.start` runs: one replica of the group in `config`. */
export interface NodeOptions {
  /** The group: its addresses, cluster id, limits (see `loadConfig`). */
  readonly config: ServerConfig;
  /**
   * The cluster id and secret this replica presents and requires (see `loadIdentity`); by
   * default the configuration's cluster id and no secret.
   */
  readonly identity?: ClusterIdentity | undefined;
  /** TLS for every connection (`tls.ts`); plain TCP when undefined. */
  readonly tls?: TlsMaterial | undefined;
  /** @ignore Lower limits for tests; the defaults otherwise. */
  readonly connectionLimits?: Partial<ConnectionLimits> | undefined;
  /** Which address of `config` this replica is (its index in the configuration). */
  readonly index: number;
  /** Where it keeps its superblock, log and checkpoints (made if missing). */
  readonly dataDir: string;
  /** "fsync" (the default): durable before acknowledging; "none": survives a killed process. */
  readonly sync?: "fsync" | "none" | undefined;
  /** The state machine it replicates (put an app's behind `guardStateMachine`). */
  readonly app: StateMachine;
  /**
   * The app the state machine belongs to, as `name@version` (`appTag` in `src/app/app.ts`):
   * peers and clients that name another app in their hello are refused. Undefined: unchecked.
   */
  readonly appTag?: string | undefined;
  /** A listener already bound to this replica's address (used by `cluster up`). */
  readonly listener?: Deno.Listener | undefined;
  /** Where its log lines go, one line each. */
  readonly log: (level: LogLevel | "error", text: string) => void;
  /** Log the core's debug lines too. */
  readonly debug?: boolean | undefined;
  /**
   * Told once when the node cannot go on: a disk write failed for a reason other than a full
   * disk (which the node waits out). By then the node has logged the error and closed; a server
   * exits (see `vstamp server`).
   */
  readonly onFatal?: ((error: unknown) => void) | undefined;
  /** @ignore For tests: faults to inject into the data directory's writes (`DataDirOptions`). */
  readonly injectFault?: DataDirOptions["injectFault"];
  /** @ignore For tests: the core's limits (checkpoint intervals, say), the defaults otherwise. */
  readonly limits?: Partial<Limits> | undefined;
  /** @ignore For tests: the size of a log segment (`DataDirOptions.logSegmentBytes`). */
  readonly logSegmentBytes?: number | undefined;
  /**
   * §7 A new process joining a group: it waits for a StartEpoch naming its address
   * (`config.addresses[index]`), then fetches the state. Ignored once its data directory holds
   * the group's membership (it restarts as the member it became).
   */
  readonly join?: boolean | undefined;
  /** §7.1 This replica left the group and f'+1 new members started: the process may exit. */
  readonly onShutDown?: (() => void) | undefined;
  /**
   * Time requests and PrepareOks for `metrics()` (`server --metrics-port`): about 0.2 µs per
   * request, spent only when something will show them.
   */
  readonly timeLatencies?: boolean | undefined;
}

/** What `vstamp status` shows for one replica. */
export interface ReplicaStatus {
  /** The replica's member id (its index in the configuration of epoch 0; -1 before it joined). */
  readonly index: number;
  /** The address it serves on. */
  readonly address: string;
  /** §7 The epoch, and the addresses of its members. */
  readonly epoch: number;
  /** §7 The addresses of the epoch's members. */
  readonly members: readonly string[];
  /** normal, view-change, recovering, transferring, ... */
  readonly status: string;
  /** The view it is in. */
  readonly viewNumber: number;
  /** Whether it is the primary of that view. */
  readonly role: "primary" | "backup";
  /** The op-number of the last entry in its log. */
  readonly opNumber: number;
  /** The op-number of the last committed entry it knows. */
  readonly commitNumber: number;
  /** The last view in which it was normal. */
  readonly lastNormalView: number;
  /** Clients in its client table. */
  readonly clients: number;
  /** Seconds since its process started. */
  readonly uptimeSeconds: number;
  /** Its process id. */
  readonly pid: number;
  /** §5.1 The op-number of the newest durable checkpoint, 0 if none. */
  readonly checkpointOpNumber: number;
  /** The op-number of the first log entry on disk: entries before it left with a checkpoint. */
  readonly logStartOpNumber: number;
  /**
   * @ignore Counters since the process started: how well messages and disk writes are batched
   * (for `vstamp bench`).
   */
  readonly counters: NodeCounters;
  /**
   * A digest of the state machine's state after executing every op up to `commitNumber` (the
   * chunks of its snapshot, hashed); only when asked for, since it costs the replica a pass over
   * its state, made between its other work.
   */
  readonly digest?: string | undefined;
}

/** What a replica process did since it started. */
export interface NodeCounters extends IoCounters {
  /** Prepare messages sent (to each backup), and the log entries they carried. */
  prepares: number;
  preparedEntries: number;
  /** Replies the core produced (a reply to a client with no connection here is dropped). */
  replies: number;
  /** Persist batches written (each one write, and one fsync with `--sync fsync`). */
  persists: number;
  /** CPU time this process used, in seconds (user and system). */
  cpuUserSeconds: number;
  cpuSystemSeconds: number;
}

/** What `/metrics` shows for one replica (`src/metrics/node_metrics.ts` renders it). */
export interface NodeMetrics {
  /** The replica's member id (-1 before it joined a group). */
  readonly replica: number;
  readonly epoch: number;
  readonly viewNumber: number;
  readonly status: string;
  readonly isPrimary: boolean;
  readonly opNumber: number;
  readonly commitNumber: number;
  /** Ops committed while this process ran (the commit-number less the one it started with). */
  readonly commits: number;
  readonly requests: number;
  readonly replies: number;
  readonly prepares: number;
  readonly persists: number;
  readonly viewChanges: number;
  readonly recoveries: number;
  /** §5.2 NewStates that brought news; §5.1 checkpoints fetched from peers and installed. */
  readonly stateTransfers: number;
  readonly checkpointsInstalled: number;
  readonly checkpointsWritten: number;
  readonly checkpointOpNumber: number;
  /** Log entries in memory (after the newest checkpoint's truncation). */
  readonly logEntries: number;
  readonly clientTableEntries: number;
  /** Authenticated connections: replica links in and out, and clients (status included). */
  readonly connections: {
    readonly peerIn: number;
    readonly peerOut: number;
    readonly client: number;
  };
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly cpuUserSeconds: number;
  readonly cpuSystemSeconds: number;
  readonly uptimeSeconds: number;
  readonly latency: LatencyTracker;
}

/**
 * One replica of a group in this process: it drives the pure protocol core (`src/vr/`) with the
 * network, a clock and its data directory. Start it with `ReplicaNode.start`, stop it with
 * `close`.
 */
export class ReplicaNode {
  /** @ignore The protocol core it drives, for vstamp's own CLI and tests. */
  readonly replica: Replica;
  readonly #options: NodeOptions;
  readonly #listener: Deno.Listener;
  readonly #dataDir: DataDir;
  /** Outbound links by member id, made on the first message to each (`Replica.addressOf`). */
  readonly #peers = new Map<number, PeerLink>();
  /** Reply routes, oldest first (see `CLIENT_ROUTES_MAX`). */
  readonly #clients = new Map<number, Connection>();
  /** Per connection: the client-ids routed to it, so that closing it drops only those. */
  readonly #routesOf = new Map<Connection, Set<number>>();
  readonly #inbound = new Set<Connection>();
  /** Connections still in their handshake, oldest first. */
  readonly #handshaking = new Set<Connection>();
  /** Client and status connections that completed their handshake. */
  readonly #clientConnections = new Set<Connection>();
  /** Per peer replica: its inbound link, once authenticated. */
  readonly #peerInbound = new Map<number, Connection>();
  readonly #limits: ConnectionLimits;
  readonly #clientReadBudget: ReadBudget;
  /** When each refusal reason was last logged. */
  readonly #refusalsLoggedAt = new Map<string, number>();
  #housekeeping: ReturnType<typeof setInterval> | undefined;
  /** The digest being computed for status queries, if any (`#statusWithDigest`). */
  #digestJob: Promise<ReplicaStatus> | undefined;
  readonly #identity: ClusterIdentity;
  #persistQueue: Effect[] = [];
  #persisting = false;
  /** The batch that found the disk full: written again until it succeeds, the queue behind it. */
  #diskFullBatch: Effect[] | undefined;
  #ticker: ReturnType<typeof setInterval> | undefined;
  #closed = false;
  #effectsScheduled = false;
  readonly #started = Date.now();
  #prepares = 0;
  #preparedEntries = 0;
  #replies = 0;
  #persists = 0;
  /** Requests that arrived from clients (every one, retries and requests to a backup included). */
  #requests = 0;
  /** §5.1 Checkpoints this process wrote to disk. */
  #checkpointsWritten = 0;
  /** The commit-number when this process started: commits since then are its own. */
  #commitNumberAtStart = 0;
  /** Request and PrepareOk latencies (the core has no clock: the node times what it sees pass). */
  readonly #latency = new LatencyTracker();
  /** The view whose requests and Prepares are being timed; -1 when not primary. */
  #timedView = -1;
  /**
   * Whether a checkpoint is being written (the core asks for one at a time). Cleared before the
   * core hears of the outcome, so that the core may ask for the next one at once.
   */
  #checkpointing = false;
  /** The largest op-number the core allowed the log to be truncated before. */
  #truncateWanted = 0;
  /** The largest op-number a truncation was attempted before. */
  #truncateDone = 0;
  #truncating = false;
  /** Per peer: the chunk requests waiting behind the one being served. */
  readonly #chunkQueues = new Map<number, ChunkRequest[]>();
  /** The peers whose chunk requests are being served. */
  readonly #chunkServing = new Set<number>();
  /** What runs beside the replica (checkpoint writes, truncations, chunk reads): `close` waits. */
  readonly #jobs = new Set<Promise<void>>();

  private constructor(
    options: NodeOptions,
    listener: Deno.Listener,
    dataDir: DataDir,
    replica: Replica,
  ) {
    this.#options = options;
    this.#identity = options.identity ?? { clusterId: options.config.clusterId, key: undefined };
    this.#limits = { ...CONNECTION_LIMITS_DEFAULT, ...options.connectionLimits };
    this.#clientReadBudget = {
      bytesUsed: 0,
      bytesMax: this.#limits.clientReadBudgetBytes,
      onOverBudget: () => this.#shedReadBuffers(),
    };
    this.#listener = listener;
    this.#dataDir = dataDir;
    this.replica = replica;
    this.#commitNumberAtStart = replica.commitNumber;
  }

  /**
   * Open the data directory (restoring the newest checkpoint and replaying the log), listen on
   * the replica's address, and start serving. Throws if the data directory cannot be used or
   * the address is taken.
   */
  static async start(options: NodeOptions): Promise<ReplicaNode> {
    const { config, index } = options;
    const address = config.addresses[index]!;
    const opened = await DataDir.open(options.dataDir, {
      sync: options.sync ?? "fsync",
      // A torn tail cut off, damage, an unreadable superblock slot: each named with its offset.
      onRepair: (message) => options.log("warn", message),
      injectFault: options.injectFault,
      logSegmentBytes: options.logSegmentBytes,
      // The core restarts from the checkpoint restored below and takes the log's first op-number.
      allowTruncatedLog: true,
    });
    let durable: DurableState | undefined;
    let listener: Deno.Listener;
    const selfAddress = config.addressTexts[index]!;
    try {
      // The log and checkpoints are operations and state of one app: another cannot read them.
      if (options.appTag !== undefined) {
        const app = await opened.dataDir.readApp();
        if (app !== undefined && app !== options.appTag) {
          throw new Error(
            `${options.dataDir} holds the state of app ${app}, not ${options.appTag}: ` +
              "a wrong --app, or another group's data directory",
          );
        }
        if (app === undefined) await opened.dataDir.writeApp(options.appTag);
      }
      durable = await ReplicaNode.#restoreCheckpoint(options, opened.dataDir, opened.state);
      // The membership persisted, else that of the checkpoint installed (a crash can come
      // between installing a checkpoint of a later epoch and persisting its membership).
      const checkpointMembership = durable?.checkpoint?.metadata.membership;
      const membership = durable?.membership ??
        (checkpointMembership !== undefined && checkpointMembership.epoch > 0
          ? checkpointMembership
          : undefined);
      if (
        options.join === true && durable?.membership === undefined && opened.state !== undefined
      ) {
        throw new Error(
          `${options.dataDir} holds the state of a join that never finished (no membership): ` +
            "remove the directory to join afresh",
        );
      }
      if (membership !== undefined) {
        const members = memberAddresses(membership);
        if (!membership.addresses.includes(selfAddress)) {
          throw new Error(
            `${options.dataDir} belongs to a group without ${selfAddress} (epoch ` +
              `${membership.epoch}: ${
                members.join(", ")
              }): a wrong --index, or another replica's ` +
              "data directory",
          );
        }
        const yaml = config.addressTexts.join(", ");
        if (yaml !== members.join(", ")) {
          options.log(
            "warn",
            `the configuration file lists ${yaml}, but the group is in epoch ${membership.epoch} ` +
              `with ${members.join(", ")} (its data directory says so): using that`,
          );
        }
      }
      // §7 The id this directory's replica has in the address book: a restart under another
      // replica's identity would answer for it (its votes, its log) with this one's state.
      const selfId = membership !== undefined
        ? membership.addresses.indexOf(selfAddress)
        : options.join === true
        ? undefined
        : index;
      const recorded = await opened.dataDir.readReplicaId();
      if (recorded !== undefined && selfId !== undefined && recorded !== selfId) {
        throw new Error(
          `${options.dataDir} is the data directory of replica ${recorded}` +
            ((membership?.addresses ?? config.addressTexts)[recorded] !== undefined
              ? ` (${(membership?.addresses ?? config.addressTexts)[recorded]})`
              : "") +
            `, not of replica ${selfId} (${selfAddress}): a wrong --index, or another ` +
            "replica's data directory",
        );
      }
      if (recorded === undefined && selfId !== undefined) {
        await opened.dataDir.writeReplicaId(selfId);
      }
      listener = options.listener ?? listenOn(address.host, address.port, options.tls);
    } catch (error) {
      await opened.dataDir.close();
      throw error;
    }
    const replica = new Replica({
      chunkHash: sha256,
      replicaIndex: index,
      addresses: config.addressTexts,
      // A new process, or one restarting before it joined: it waits to be told its group.
      standby: options.join === true ? { address: selfAddress } : undefined,
      app: options.app,
      seed: crypto.getRandomValues(new Uint32Array(1))[0]!,
      durable,
      // The configuration's checkpoint keys are the group's (replicas checkpoint at the same
      // op-numbers); a test's limits go over them.
      limits: {
        ...(config.checkpointIntervalOps === undefined
          ? {}
          : { checkpointOpsInterval: config.checkpointIntervalOps }),
        ...(config.logRetainOps === undefined ? {} : { logRetainOps: config.logRetainOps }),
        ...options.limits,
      },
      log: (level, text) => options.log(level, text),
      debug: options.debug,
      clockMs: Date.now(),
    });
    // Every message the core may send must fit in a frame (a transfer's operations, and up to
    // `ENTRY_FIELDS_BYTES_MAX` of fields per entry; a checkpoint's chunk, at most about four
    // times the target a state machine is given, or one record of it, which no operation
    // exceeds: see `StateMachine`).
    const { limits } = replica;
    const largest = Math.max(
      limits.transferBytesMax + limits.transferOpsMax * ENTRY_FIELDS_BYTES_MAX,
      4 * limits.checkpointChunkBytes,
      limits.operationBytesMax,
    ) + MESSAGE_FIELDS_BYTES_MAX;
    if (largest > FRAME_BODY_BYTES_MAX) {
      listener.close();
      await opened.dataDir.close();
      throw new Error(
        `the core's transfer and checkpoint chunk limits allow messages of ${largest} bytes, ` +
          `more than a frame's ${FRAME_BODY_BYTES_MAX} (FRAME_BODY_BYTES_MAX)`,
      );
    }
    const node = new ReplicaNode(options, listener, opened.dataDir, replica);
    node.#run();
    return node;
  }

  /**
   * §5.1 The durable state for the core, with the newest checkpoint that checks out restored into
   * the state machine: the core then replays only the log after it. A checkpoint that checks out
   * on disk but does not restore (a bug, or a file of another version) is passed over with one
   * warning when the log still starts at op 1, since the log alone then rebuilds the state;
   * otherwise the replica cannot start from its disk, and startup fails naming the file.
   */
  static async #restoreCheckpoint(
    options: NodeOptions,
    dataDir: DataDir,
    state: DurableState | undefined,
  ): Promise<DurableState | undefined> {
    const loaded = await dataDir.loadCheckpoint();
    if (state === undefined || loaded === undefined) return state;
    const logStart = state.logStartOpNumber ?? 1;
    const started = performance.now();
    let restored: RestoredCheckpoint;
    try {
      restored = await restore(options.app, loaded);
    } catch (error) {
      const why = error instanceof Error ? error.message : String(error);
      if (logStart > 1) {
        throw new DataDirError(
          `${loaded.path}: cannot restore the checkpoint of op ${loaded.opNumber} (${why}), and ` +
            `the log on disk starts at op ${logStart}: the replica cannot start without it`,
          { cause: error },
        );
      }
      options.log(
        "warn",
        `${loaded.path}: cannot restore the checkpoint of op ${loaded.opNumber} (${why}): ` +
          "starting without it, from the log, which starts at op 1",
      );
      return state;
    }
    const logEnd = logStart - 1 + state.log.length;
    // Damage cut the log short below the checkpoint: it starts afresh after it.
    if (logEnd < loaded.opNumber && logStart <= loaded.opNumber + 1) {
      dataDir.rebaseOnto(loaded.opNumber);
    }
    options.log(
      "info",
      `restored the checkpoint of op ${loaded.opNumber} from ${loaded.path} ` +
        `(${loaded.chunks.length} chunks, ${loaded.bytes} bytes) in ` +
        `${Math.round(performance.now() - started)} ms; the log on disk holds ops ${logStart} to ` +
        `${logEnd}, ${Math.max(0, logEnd - loaded.opNumber)} of them after the checkpoint`,
    );
    return { ...state, checkpoint: restored, logStartOpNumber: logStart };
  }

  /** The address it serves on ("host:port"). */
  get address(): string {
    return this.replica.address;
  }

  /**
   * The outbound link to member `id`, made on first use from the address the core knows for it;
   * undefined for this replica itself, or an id the core cannot place.
   */
  #peer(id: number): PeerLink | undefined {
    const self = this.replica.replicaIndex;
    if (id === self || self < 0) return undefined;
    const text = this.replica.addressOf(id);
    const address = text === undefined ? undefined : parseAddress(text);
    if (address === undefined || "error" in address) return undefined;
    const existing = this.#peers.get(id);
    if (
      existing !== undefined && existing.selfIndex === self &&
      formatAddress(existing.address) === formatAddress(address)
    ) {
      return existing;
    }
    existing?.close(); // Made before this replica knew its id or the peer's address.
    const link = new PeerLink(
      address,
      self,
      id,
      true,
      this.#identity,
      this.#options.tls,
      this.#options.log,
      this.#options.appTag ?? "",
    );
    this.#peers.set(id, link);
    return link;
  }

  /**
   * The status with the state's digest, computed off the hot path: a consistent snapshot of the
   * state machine is begun now (`beginSnapshotOf`: the state keeps changing meanwhile) and read
   * chunk by chunk across turns of the event loop, each chunk hashed with SHA-256 and the hashes
   * hashed again. Replicas in equal states make equal chunks, hence equal digests; the status
   * names the commit-number the snapshot was begun at. One computation at a time: queries that
   * arrive meanwhile share it. (Computed at once, the digest of 800,000 keys blocked a replica
   * for about 2.7 s, long enough for its group to change views.)
   */
  #statusWithDigest(): Promise<ReplicaStatus> {
    this.#digestJob ??= (async () => {
      const status = this.status();
      let reader: SnapshotReader;
      try {
        reader = beginSnapshotOf(this.replica.app, DIGEST_CHUNK_BYTES);
      } catch (error) {
        this.#digestJob = undefined;
        const why = error instanceof Error ? error.message : String(error);
        return { ...status, digest: `unavailable: the state machine's snapshot threw: ${why}` };
      }
      try {
        const hashes: Uint8Array[] = [];
        for (let chunk = reader.next(); chunk !== undefined; chunk = reader.next()) {
          // Each await lets the replica serve between chunks.
          hashes.push(new Uint8Array(await crypto.subtle.digest("SHA-256", new Uint8Array(chunk))));
        }
        const all = new Uint8Array(hashes.length * 32);
        hashes.forEach((hash, index) => all.set(hash, index * 32));
        const root = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
        const digest = Array.from(root.subarray(0, 12), (b) => b.toString(16).padStart(2, "0"))
          .join("");
        return { ...status, digest };
      } catch (error) {
        const why = error instanceof Error ? error.message : String(error);
        return { ...status, digest: `unavailable: the state machine's snapshot threw: ${why}` };
      } finally {
        reader.close();
        this.#digestJob = undefined;
      }
    })();
    return this.#digestJob;
  }

  /** The status without the digest (see `#statusWithDigest` for that). */
  status(): ReplicaStatus {
    const r = this.replica;
    return {
      index: r.replicaIndex,
      address: this.address,
      epoch: r.epoch,
      members: r.addresses,
      status: r.shutDown ? "shut_down" : r.status,
      viewNumber: r.viewNumber,
      role: r.isPrimary ? "primary" : "backup",
      opNumber: r.opNumber,
      commitNumber: r.commitNumber,
      lastNormalView: r.lastNormalView,
      clients: this.#clients.size,
      uptimeSeconds: Math.round((Date.now() - this.#started) / 1000),
      pid: Deno.pid,
      checkpointOpNumber: r.checkpointOpNumber,
      logStartOpNumber: this.#dataDir.logStartOpNumber,
      counters: this.counters(),
    };
  }

  /**
   * @ignore The numbers `/metrics` shows (`server --metrics-port`): plain reads of counters,
   * cheap enough for any scrape rate.
   */
  metrics(): NodeMetrics {
    const r = this.replica;
    const protocol = r.protocolStats;
    const counters = this.counters();
    let peerOut = 0;
    for (const peer of this.#peers.values()) if (peer.connected) peerOut++;
    return {
      replica: r.replicaIndex,
      epoch: r.epoch,
      viewNumber: r.viewNumber,
      status: r.shutDown ? "shut_down" : r.status,
      isPrimary: r.isPrimary,
      opNumber: r.opNumber,
      commitNumber: r.commitNumber,
      commits: Math.max(0, r.commitNumber - this.#commitNumberAtStart),
      requests: this.#requests,
      replies: this.#replies,
      prepares: this.#prepares,
      persists: this.#persists,
      viewChanges: protocol.viewChanges,
      recoveries: protocol.recoveries,
      stateTransfers: protocol.stateTransfers,
      checkpointsInstalled: r.checkpointStats.installed,
      checkpointsWritten: this.#checkpointsWritten,
      checkpointOpNumber: r.checkpointOpNumber,
      logEntries: Math.max(0, r.opNumber - r.logBaseOpNumber),
      clientTableEntries: r.clientTableSize,
      connections: {
        peerIn: this.#peerInbound.size,
        peerOut,
        client: this.#clientConnections.size,
      },
      bytesIn: counters.bytesIn,
      bytesOut: counters.bytesOut,
      cpuUserSeconds: counters.cpuUserSeconds,
      cpuSystemSeconds: counters.cpuSystemSeconds,
      uptimeSeconds: (Date.now() - this.#started) / 1000,
      latency: this.#latency,
    };
  }

  /** @ignore What the process did since it started (for `vstamp bench`). */
  counters(): NodeCounters {
    const cpu = process.cpuUsage();
    return {
      ...IO_COUNTERS,
      prepares: this.#prepares,
      preparedEntries: this.#preparedEntries,
      replies: this.#replies,
      persists: this.#persists,
      cpuUserSeconds: cpu.user / 1e6,
      cpuSystemSeconds: cpu.system / 1e6,
    };
  }

  /** Stop serving: close every connection, the listener and the data directory. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#ticker !== undefined) clearInterval(this.#ticker);
    if (this.#housekeeping !== undefined) clearInterval(this.#housekeeping);
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    for (const peer of this.#peers.values()) peer.close();
    for (const connection of this.#inbound) connection.close();
    while (this.#persisting) await new Promise((resolve) => setTimeout(resolve, 1));
    // Each stops at its next step once it sees the node closed.
    await Promise.all([...this.#jobs].map((job) => job.catch(() => {})));
    await this.#dataDir.close();
  }

  #run(): void {
    // Links to the members of the group, at once (the rest as the core first sends to them).
    for (const member of this.replica.membership.members) this.#peer(member);
    const limits = this.#limits;
    const every = Math.max(
      10,
      Math.min(HOUSEKEEPING_MS, limits.clientIdleTimeoutMs / 4, limits.clientWriteStallMs / 4),
    );
    this.#housekeeping = setInterval(() => this.#checkConnections(), every);
    this.#ticker = setInterval(() => {
      this.replica.tick(Date.now());
      this.#processEffects();
    }, TICK_MS);
    this.#accept();
    this.#processEffects();
  }

  async #accept(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        this.#serve(
          new Connection(conn, {
            frameBodyBytesMax: HANDSHAKE_BODY_BYTES_MAX,
            readBufferBytes: HANDSHAKE_READ_BUFFER_BYTES,
          }),
        );
      }
    } catch (error) {
      if (!this.#closed) this.#options.log("error", `listener failed: ${String(error)}`);
    }
  }

  /**
   * One inbound connection: its handshake (`handshake.ts`), then its messages. Nothing a
   * connection sends reaches the core before it said who it is and, where the group has a
   * secret and the role needs it, proved it holds the secret.
   */
  #serve(connection: Connection): void {
    this.#inbound.add(connection);
    this.#handshaking.add(connection);
    const limits = this.#limits;
    if (this.#handshaking.size > limits.handshakingMax) {
      const oldest = this.#handshaking.values().next().value!;
      const waited = Date.now() - oldest.openedAtMs;
      (waited >= limits.handshakeEvictMs ? oldest : connection).close(
        `${limits.handshakingMax} connections in their handshake (ConnectionLimits.handshakingMax)`,
      );
      if (connection.closed) return;
    }
    const { config } = this.#options;
    const identity = this.#identity;
    // Member ids grow with reconfigurations (§7): the core checks who is a member of what.
    const replicaCount = ADDRESS_BOOK_MAX;
    const handshake = new AcceptorHandshake({
      identity,
      requireClientAuth: config.requireClientAuth,
      replicaCount,
      selfIndex: this.replica.replicaIndex,
      app: this.#options.appTag,
    });
    let state: "hello" | "challenged" | "verifying" | "ready" = "hello";
    let role: Role | undefined;
    let peerIndex = -1;
    /** Frames that arrived while the proof was being checked. */
    let early: Uint8Array[] = [];
    const timer = setTimeout(() => {
      if (state !== "ready") {
        connection.close(`no handshake within ${limits.handshakeTimeoutMs} ms`);
      }
    }, limits.handshakeTimeoutMs);
    const refuse = (reason: string) => {
      const who = role === "replica" ? `replica ${peerIndex} link` : role ?? "connection";
      this.#logRefusal(`refused ${who} from ${connection.remote}: ${reason}`, reason);
      connection.sendAndClose(encodeRefused(reason), reason);
    };
    const ready = () => {
      state = "ready";
      clearTimeout(timer);
      this.#handshaking.delete(connection);
      if (role === "replica") {
        // One link per peer: a new one (the peer restarted or reconnected) replaces the old.
        this.#peerInbound.get(peerIndex)?.close(`replica ${peerIndex} opened a new link`);
        this.#peerInbound.set(peerIndex, connection);
        connection.setLimits({
          frameBodyBytesMax: FRAME_BODY_BYTES_MAX,
          readBufferBytes: READ_BUFFER_BYTES_DEFAULT,
        });
        // The peer is evidently up: reconnect to it now rather than after the backoff.
        this.#peers.get(peerIndex)?.reconnectNow();
        return true;
      }
      if (!this.#admitClient(connection)) {
        refuse(`too many clients (${limits.clientsMax} connections, ConnectionLimits.clientsMax)`);
        return false;
      }
      connection.setLimits({
        frameBodyBytesMax: limits.clientFrameBodyBytesMax,
        writeBufferBytesMax: limits.clientWriteBufferBytesMax,
        readPauseBytes: limits.clientReadPauseBytes,
        framesPerTurnMax: limits.clientFramesPerTurnMax,
        readBufferBytes: CLIENT_READ_BUFFER_BYTES,
        gatherBytesMax: CLIENT_GATHER_BYTES_MAX,
        readBudget: this.#clientReadBudget,
      });
      if (role === "status") {
        // A status hello's index asks for the digest (1) or not (0).
        const answer = (status: ReplicaStatus) => {
          if (!connection.closed) connection.send(new TextEncoder().encode(JSON.stringify(status)));
        };
        if (peerIndex === 1) {
          this.#statusWithDigest().then(answer, (error) => {
            connection.close(`cannot compute the digest: ${String(error)}`);
          });
        } else {
          answer(this.status());
        }
      }
      return true;
    };
    const onMessageFrame = (body: Uint8Array) => {
      if (role === "status") return;
      const from = role === "replica" ? "replica" : "client";
      const decoded = decodeMessage(body, { from, replicaCount });
      if (!decoded.ok) {
        connection.close(`bad message from ${role} ${connection.remote}: ${decoded.error}`);
        return;
      }
      const message = decoded.message;
      if (role === "replica" && "replica" in message && message.replica !== peerIndex) {
        connection.close(
          `replica ${peerIndex} sent a message signed by replica ${message.replica}`,
        );
        return;
      }
      if (role === "client" && "clientId" in message) this.#route(message.clientId, connection);
      if (message.type === "request") {
        this.#requests++;
        if (this.#timedView >= 0) {
          this.#latency.requestArrived(message.clientId, message.requestNumber, performance.now());
        }
      } else if (message.type === "prepare_ok" && this.#timedView >= 0) {
        this.#latency.prepareOkArrived(message.replica, message.opNumber, performance.now());
      }
      if (this.#options.debug) {
        this.#options.log("debug", `<- ${role} ${peerIndex}: ${describeMessage(message)}`);
      }
      this.replica.onMessage(message as Message);
    };
    connection.start({
      onFrame: (body) => {
        switch (state) {
          case "ready":
            return onMessageFrame(body);
          case "verifying":
            if (early.length >= EARLY_FRAMES_MAX) {
              return connection.close(`more than ${EARLY_FRAMES_MAX} frames before its proof`);
            }
            early.push(body);
            return;
          case "challenged": {
            state = "verifying";
            // The frames after the proof are messages of the role.
            connection.setLimits({
              frameBodyBytesMax: role === "replica"
                ? FRAME_BODY_BYTES_MAX
                : limits.clientFrameBodyBytesMax,
            });
            handshake.onProof(body).then((problem) => {
              if (connection.closed) return;
              if (problem !== undefined) return refuse(problem);
              if (!ready()) return;
              const frames = early;
              early = [];
              for (const frame of frames) {
                if (connection.closed) return;
                onMessageFrame(frame);
              }
              this.#scheduleEffects();
            }, (error) => connection.close(`cannot check a proof: ${String(error)}`));
            return;
          }
          case "hello": {
            if (role !== undefined) {
              // The connector must wait for the challenge before it sends anything else.
              return refuse("a frame before the challenge was answered");
            }
            const outcome = handshake.onHello(body);
            if ("refuse" in outcome) {
              role = outcome.hello?.role;
              peerIndex = outcome.hello?.index ?? -1;
              return refuse(outcome.refuse);
            }
            role = outcome.hello.role;
            peerIndex = outcome.hello.index;
            if (outcome.challenge === undefined) {
              ready();
              return;
            }
            outcome.challenge.then((frame) => {
              if (connection.closed) return;
              connection.send(frame);
              state = "challenged";
            }, (error) => connection.close(`cannot make a challenge: ${String(error)}`));
            return;
          }
        }
      },
      onReadDone: () => this.#scheduleEffects(),
      onClose: (reason) => {
        clearTimeout(timer);
        this.#inbound.delete(connection);
        this.#handshaking.delete(connection);
        this.#clientConnections.delete(connection);
        if (role === "replica" && this.#peerInbound.get(peerIndex) === connection) {
          this.#peerInbound.delete(peerIndex);
        }
        for (const clientId of this.#routesOf.get(connection) ?? []) {
          if (this.#clients.get(clientId) === connection) this.#clients.delete(clientId);
        }
        this.#routesOf.delete(connection);
        if (reason !== undefined && !this.#closed) {
          this.#options.log("info", `closed connection from ${connection.remote}: ${reason}`);
        }
      },
    });
  }

  /** Replies to `clientId` go to `connection` from now on (the latest route is the one used). */
  #route(clientId: number, connection: Connection): void {
    const routes = this.#clients;
    const previous = routes.get(clientId);
    // Unchanged routes stay where they are: the oldest goes first when the map is full, and a
    // client that is still active makes its route again with its next request, before the reply
    // that needs it. (Moving it on every message would cost every request two map operations.)
    if (previous === connection) return;
    if (previous !== undefined) this.#routesOf.get(previous)?.delete(clientId);
    routes.delete(clientId);
    routes.set(clientId, connection);
    let ids = this.#routesOf.get(connection);
    if (ids === undefined) this.#routesOf.set(connection, ids = new Set());
    ids.add(clientId);
    if (routes.size > CLIENT_ROUTES_MAX) {
      const [oldest, owner] = routes.entries().next().value!;
      routes.delete(oldest);
      this.#routesOf.get(owner)?.delete(oldest);
    }
  }

  /**
   * Take `connection` into the client budget, making room by closing the client connection idle
   * longest if it has been idle for `clientIdleEvictMs`; false if there is no room.
   */
  #admitClient(connection: Connection): boolean {
    const limits = this.#limits;
    if (this.#clientConnections.size >= limits.clientsMax) {
      let idlest: Connection | undefined;
      for (const candidate of this.#clientConnections) {
        if (idlest === undefined || candidate.lastFrameAtMs < idlest.lastFrameAtMs) {
          idlest = candidate;
        }
      }
      if (idlest === undefined || Date.now() - idlest.lastFrameAtMs < limits.clientIdleEvictMs) {
        return false;
      }
      idlest.close("idle: its place went to a new client (ConnectionLimits.clientsMax)");
    }
    this.#clientConnections.add(connection);
    return true;
  }

  /** Close client connections holding the largest partial frames until the budget holds. */
  #shedReadBuffers(): void {
    const budget = this.#clientReadBudget;
    while (budget.bytesUsed > budget.bytesMax) {
      let largest: Connection | undefined;
      for (const candidate of this.#clientConnections) {
        if (largest === undefined || candidate.bufferedBytes > largest.bufferedBytes) {
          largest = candidate;
        }
      }
      if (largest === undefined || largest.bufferedBytes === 0) return;
      largest.close(
        `partial frames of all clients exceed ${budget.bytesMax} bytes ` +
          `(ConnectionLimits.clientReadBudgetBytes); this one held ${largest.bufferedBytes}`,
      );
    }
  }

  /** Close client connections idle too long, or whose writes stalled. */
  #checkConnections(): void {
    const now = Date.now();
    const { clientIdleTimeoutMs, clientWriteStallMs } = this.#limits;
    for (const connection of this.#clientConnections) {
      if (now - connection.lastFrameAtMs >= clientIdleTimeoutMs) {
        connection.close(
          `idle for ${clientIdleTimeoutMs} ms (ConnectionLimits.clientIdleTimeoutMs)`,
        );
      } else if (
        connection.writeStartedAtMs > 0 && now - connection.writeStartedAtMs >= clientWriteStallMs
      ) {
        connection.close(`not reading its replies for ${clientWriteStallMs} ms`);
      }
    }
  }

  /** One `warn` line per refusal, but the same reason at most once per interval. */
  #logRefusal(line: string, reason: string): void {
    // By the kind of reason: quoted values and numbers (a cluster id, an index, a version) are
    // the peer's to choose, and would otherwise make every refusal a new one.
    const kind = reason.replace(/"[^"]*"/g, '""').replace(/\d+/g, "#");
    const now = Date.now();
    const last = this.#refusalsLoggedAt.get(kind);
    if (last !== undefined && now - last < REFUSAL_LOG_INTERVAL_MS) return;
    if (this.#refusalsLoggedAt.size >= 64) {
      for (const [key, at] of this.#refusalsLoggedAt) {
        if (now - at >= REFUSAL_LOG_INTERVAL_MS) this.#refusalsLoggedAt.delete(key);
      }
      if (this.#refusalsLoggedAt.size >= 64) return;
    }
    this.#refusalsLoggedAt.set(kind, now);
    this.#options.log("warn", line);
  }

  #scheduleEffects(): void {
    if (this.#effectsScheduled) return;
    this.#effectsScheduled = true;
    queueMicrotask(() => {
      this.#effectsScheduled = false;
      this.#processEffects();
    });
  }

  /** Carry out what the core asked for: sends, replies, and a group-committed persist. */
  #processEffects(): void {
    if (this.#closed) return;
    const effects = this.replica.drainEffects();
    let lastMessage: Message | undefined;
    let lastFrame: Uint8Array | undefined;
    const r = this.replica;
    // Time requests and Prepares only as the normal primary of one view: across a view change a
    // reply or a PrepareOk would time the view change, not the request.
    const timedView = this.#options.timeLatencies === true && r.isPrimary && r.status === "normal"
      ? r.viewNumber
      : -1;
    if (timedView !== this.#timedView) {
      this.#timedView = timedView;
      this.#latency.forgetRequests();
      this.#latency.forgetPrepares();
    }
    let nowMs = -1;
    for (const effect of effects) {
      switch (effect.type) {
        case "send": {
          // A broadcast hands the same message object to every peer: encode it once.
          if (effect.message !== lastMessage) {
            lastMessage = effect.message;
            lastFrame = this.#frameOf(effect.message);
          }
          if (lastFrame === undefined) break;
          if (effect.message.type === "prepare") {
            this.#prepares++;
            const entries = effect.message.entries;
            this.#preparedEntries += entries.length;
            if (timedView >= 0 && entries.length > 0) {
              if (nowMs < 0) nowMs = performance.now();
              this.#latency.prepareSent(effect.to, entries[entries.length - 1]!.opNumber, nowMs);
            }
          }
          this.#peer(effect.to)?.sendFrame(lastFrame!);
          break;
        }
        case "reply": {
          this.#replies++;
          if (timedView >= 0 && effect.message.type === "reply") {
            if (nowMs < 0) nowMs = performance.now();
            this.#latency.replied(effect.clientId, effect.message.requestNumber, nowMs);
          }
          const connection = this.#clients.get(effect.clientId);
          const frame = connection === undefined ? undefined : this.#frameOf(effect.message);
          if (frame !== undefined) connection!.sendFrame(frame);
          break;
        }
        case "persist_log":
        case "persist_superblock":
        case "install_checkpoint":
        case "persist_membership":
          this.#persistQueue.push(effect);
          break;
        case "shut_down": {
          // §7.4 It lingers a little, answering clients with the new group's configuration: a
          // client that had not heard of the new epoch yet learns it here rather than finding
          // every address it knows gone.
          this.#options.log(
            "info",
            `left the group: epoch ${effect.epoch} runs without this replica (§7.3); ` +
              `exiting in ${SHUT_DOWN_LINGER_MS} ms`,
          );
          const timer = setTimeout(() => this.#options.onShutDown?.(), SHUT_DOWN_LINGER_MS);
          Deno.unrefTimer(timer);
          break;
        }
        case "checkpoint":
          this.#writeCheckpoint(effect);
          break;
        case "truncate_log":
          this.#truncateLog(effect.beforeOpNumber);
          break;
        case "send_checkpoint_chunks":
          this.#serveChunks(effect);
          break;
      }
    }
    // Start the disk write after the network writes queued above (they go out in microtasks
    // queued before this one): a backup's Prepare need not wait for the primary's own write.
    if (this.#persistQueue.length > 0 && !this.#persisting) {
      this.#persisting = true;
      queueMicrotask(() => this.#persist());
    }
  }

  /**
   * §5.1 Writes the checkpoint the core asked for, chunk by chunk as its reader yields them: each
   * write awaits the disk, so the replica serves between chunks. Then tells the core, which may
   * then truncate the log; on any failure (a full disk included) tells the core it failed, and the
   * core tries again at a later checkpoint.
   */
  #writeCheckpoint(effect: Extract<Effect, { readonly type: "checkpoint" }>): void {
    if (this.#checkpointing) {
      // The core asks for one at a time; two would share the data directory's one writer.
      effect.reader.close();
      this.#options.log(
        "warn",
        `checkpoint of op ${effect.opNumber} asked for while another is being written: not written`,
      );
      queueMicrotask(() => {
        if (this.#closed) return;
        this.replica.onCheckpointFailed(effect.opNumber);
        this.#processEffects();
      });
      return;
    }
    this.#checkpointing = true;
    this.#track(this.#checkpointLoop(effect));
  }

  /**
   * Runs `job` beside the replica; `close` waits for it. Jobs catch what the disk throws; one
   * that rejects met a bug, which goes unhandled, as in `#persist`.
   */
  #track(job: Promise<void>): void {
    this.#jobs.add(job);
    job.finally(() => this.#jobs.delete(job));
  }

  async #checkpointLoop(effect: Extract<Effect, { readonly type: "checkpoint" }>): Promise<void> {
    const { opNumber, viewNumber, metadata, reader } = effect;
    const started = performance.now();
    let writer: CheckpointWriter | undefined;
    let chunks: { hash: Uint8Array; length: number }[];
    let bytes: number;
    try {
      writer = await this.#dataDir.beginCheckpoint({ opNumber, viewNumber, metadata });
      for (;;) {
        if (this.#closed) throw new Error("the replica is closing");
        const chunk = reader.next();
        if (chunk === undefined) break;
        await writer.write(chunk);
      }
      const info = await writer.finish();
      chunks = info.chunks.map(({ hash, length }) => ({ hash, length }));
      bytes = info.bytes;
    } catch (error) {
      reader.close();
      await writer?.abort().catch(() => {});
      this.#checkpointing = false;
      if (this.#closed) return;
      const why = error instanceof DiskFullError
        ? `disk full writing ${error.file}`
        : error instanceof Error
        ? error.message
        : String(error);
      this.#options.log(
        "warn",
        `cannot write the checkpoint of op ${opNumber}: ${why}; the log keeps its entries until ` +
          "a later checkpoint is written",
      );
      this.replica.onCheckpointFailed(opNumber);
      this.#processEffects();
      return;
    }
    reader.close();
    this.#checkpointing = false;
    this.#checkpointsWritten++;
    if (this.#closed) return;
    this.#options.log(
      "info",
      `wrote the checkpoint of op ${opNumber} (${chunks.length} chunks, ${bytes} bytes) in ` +
        `${Math.round(performance.now() - started)} ms`,
    );
    this.replica.onCheckpointed({ opNumber, viewNumber, metadata, chunks });
    this.#processEffects();
  }

  /**
   * §5.1 Deletes the log before `beforeOpNumber` (whole segments: see `DataDir.truncateBefore`),
   * one truncation at a time; requests that arrive meanwhile are served by one truncation, to the
   * largest op-number asked. A failure costs only disk space: a warning, and the next request
   * deletes what this one did not.
   */
  #truncateLog(beforeOpNumber: number): void {
    this.#truncateWanted = Math.max(this.#truncateWanted, beforeOpNumber);
    if (!this.#truncating) this.#track(this.#truncateLoop());
  }

  async #truncateLoop(): Promise<void> {
    // Set and cleared inside: the loop may run to its end before its first await.
    this.#truncating = true;
    try {
      while (!this.#closed && this.#truncateDone < this.#truncateWanted) {
        const target = this.#truncateWanted;
        this.#truncateDone = target;
        try {
          const { deleted, logStartOpNumber } = await this.#dataDir.truncateBefore(target);
          if (deleted.length > 0 && !this.#closed) {
            this.#options.log(
              "info",
              `truncated the log before op ${target}: deleted ${deleted.join(", ")}; the log ` +
                `on disk starts at op ${logStartOpNumber}`,
            );
          }
        } catch (error) {
          if (this.#closed) return;
          this.#options.log(
            "warn",
            `cannot truncate the log before op ${target}: ${
              error instanceof Error ? error.message : String(error)
            }`,
          );
        }
      }
    } finally {
      this.#truncating = false;
    }
  }

  /**
   * §5.1 Sends `to` the chunks it asked for of this replica's checkpoint of `opNumber`, read from
   * disk one at a time. One request per peer is served at a time, a few wait behind it, and
   * more are dropped: the fetching replica asks again for whatever does not come.
   */
  #serveChunks(effect: Extract<Effect, { readonly type: "send_checkpoint_chunks" }>): void {
    const { to } = effect;
    let queue = this.#chunkQueues.get(to);
    if (queue === undefined) this.#chunkQueues.set(to, queue = []);
    if (queue.length >= CHUNK_REQUESTS_QUEUED_MAX) {
      if (this.#options.debug) {
        this.#options.log(
          "debug",
          `dropped replica ${to}'s request for chunks of the checkpoint of op ` +
            `${effect.opNumber}: ${queue.length} of its requests wait already`,
        );
      }
      return;
    }
    queue.push(effect);
    if (!this.#chunkServing.has(to)) this.#track(this.#chunkLoop(to, queue));
  }

  async #chunkLoop(to: number, queue: ChunkRequest[]): Promise<void> {
    this.#chunkServing.add(to);
    try {
      for (let request = queue.shift(); request !== undefined; request = queue.shift()) {
        if (this.#closed) return;
        await this.#sendChunks(request);
      }
    } finally {
      this.#chunkServing.delete(to);
    }
  }

  async #sendChunks({ to, opNumber, indexes }: ChunkRequest): Promise<void> {
    let checkpoint: LoadedCheckpoint | undefined;
    try {
      checkpoint = await this.#dataDir.openCheckpoint(opNumber);
    } catch (error) {
      if (!this.#closed) this.#chunkWarning(opNumber, error);
      return;
    }
    if (checkpoint === undefined) {
      if (this.#options.debug) {
        this.#options.log(
          "debug",
          `replica ${to} asked for chunks of the checkpoint of op ${opNumber}, no longer kept`,
        );
      }
      return;
    }
    const peer = this.#peer(to);
    if (peer === undefined) return;
    for (const index of indexes) {
      if (this.#closed) return;
      if (index >= checkpoint.chunks.length) continue;
      const waitedFrom = Date.now();
      while (peer.pendingWriteBytes > CHUNK_SEND_QUEUED_BYTES_MAX) {
        if (this.#closed || Date.now() - waitedFrom > CHUNK_SEND_WAIT_MS_MAX) return;
        await new Promise((resolve) => setTimeout(resolve, TICK_MS));
      }
      let bytes: Uint8Array;
      try {
        bytes = await checkpoint.readChunk(index);
      } catch (error) {
        if (this.#closed) return;
        // Replaced by a newer checkpoint since it was opened: not worth a warning.
        if ((await this.#dataDir.openCheckpoint(opNumber).catch(() => undefined)) === checkpoint) {
          this.#chunkWarning(opNumber, error);
        }
        return;
      }
      if (this.#closed) return;
      const frame = this.#frameOf({
        type: "checkpoint_chunk",
        epoch: this.replica.epoch,
        opNumber,
        index,
        bytes,
        replica: this.replica.replicaIndex,
      });
      if (frame !== undefined) peer.sendFrame(frame);
    }
  }

  #chunkWarning(opNumber: number, error: unknown): void {
    this.#options.log(
      "warn",
      `cannot read the checkpoint of op ${opNumber} to send it: ${
        error instanceof Error ? error.message : String(error)
      }`,
    );
  }

  /**
   * The frame of a message the core produced, or undefined (and one error line) if it is larger
   * than a frame may be: the core's limits keep its messages far below (`Limits`), so this is a
   * bug or limits configured past the transport's; dropping the message keeps the replica up,
   * and the protocol re-sends or times out as for a lost one.
   */
  #frameOf(message: Message): Uint8Array | undefined {
    try {
      return encodeFramedMessage(message);
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      this.#options.log("error", `cannot send ${describeMessage(message)}: ${error.message}`);
      return undefined;
    }
  }

  /**
   * One batch at a time: everything queued meanwhile goes in the next batch (group commit).
   *
   * A batch that finds the disk full is not reported durable, so the replica acknowledges none of
   * it (no PrepareOk, and a primary does not count itself) yet serves otherwise; the same batch is
   * written again every `DISK_FULL_RETRY_MS` until there is room, later effects queueing behind it.
   * While the group needs this replica for its quorums nothing commits, so the queue stays within
   * the core's pipeline limits; a group that goes on without it sends it what it commits, and the
   * queue grows with the replica's in-memory log. Any other failed write is fatal: a replica that
   * cannot write its disk must not go on.
   */
  async #persist(): Promise<void> {
    if (this.#closed) {
      this.#persisting = false;
      return;
    }
    const retried = this.#diskFullBatch;
    const batch = retried ?? this.#persistQueue;
    if (retried === undefined) this.#persistQueue = [];
    let id: number;
    try {
      id = await this.#dataDir.persist(batch);
    } catch (error) {
      if (error instanceof DiskFullError && !this.#closed) {
        if (retried === undefined) {
          this.#options.log(
            "warn",
            `disk full writing ${error.file}: not acknowledging writes until space returns`,
          );
        }
        this.#diskFullBatch = batch;
        // Still persisting: `#processEffects` starts no other batch meanwhile.
        setTimeout(() => this.#persist(), DISK_FULL_RETRY_MS);
        return;
      }
      this.#persisting = false;
      if (error instanceof DiskFullError) return; // Closing: the batch is simply not durable.
      // A DataDirError names the file, the offset and the system call's error; anything else is
      // a bug (a failed assertion), whose stack is worth its lines.
      const message = error instanceof DataDirError
        ? error.message
        : error instanceof Error
        ? error.stack ?? error.message
        : String(error);
      this.#options.log("error", `cannot persist to ${this.#dataDir.path}: ${message}; stopping`);
      if (this.#closed) return;
      await this.close();
      this.#options.onFatal?.(error);
      return;
    }
    this.#diskFullBatch = undefined;
    this.#persists++;
    if (retried !== undefined) this.#options.log("info", "disk has space again");
    this.#persisting = false;
    if (this.#closed) return;
    if (id > 0) this.replica.onPersisted(id);
    this.#processEffects();
  }
}

/** A request of a peer for chunks of a checkpoint (`send_checkpoint_chunks`). */
type ChunkRequest = Extract<Effect, { readonly type: "send_checkpoint_chunks" }>;

/** Feeds a checkpoint's chunks, read from disk, to a `CheckpointRestorer`. */
async function restore(app: StateMachine, loaded: LoadedCheckpoint): Promise<RestoredCheckpoint> {
  const restorer = new CheckpointRestorer(app, {
    opNumber: loaded.opNumber,
    viewNumber: loaded.viewNumber,
    metadata: loaded.metadata,
    chunks: loaded.chunks.map(({ hash, length }) => ({ hash, length })),
  });
  try {
    for await (const chunk of loaded.read()) restorer.chunk(chunk);
    return restorer.finish();
  } catch (error) {
    restorer.abort();
    throw error;
  }
}

/** An outbound link to one peer replica: connects, says hello, reconnects with backoff. */
class PeerLink {
  #connection: Connection | undefined;
  #connecting = false;
  #backoffMs = RECONNECT_MS_MIN;
  #closed = false;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #wasConnected = false;
  /** Frames sent before the link first connected (see `sendFrame`). */
  #early: Uint8Array[] = [];
  #earlyBytes = 0;

  /** The last refusal logged, so that a peer refusing on every reconnect is logged once. */
  #lastRefusal: string | undefined;
  /** A connection whose handshake is not done yet (`close` must close it too). */
  #handshaking: Connection | undefined;

  constructor(
    readonly address: { readonly host: string; readonly port: number },
    readonly selfIndex: number,
    readonly peerIndex: number,
    readonly enabled: boolean,
    readonly identity: ClusterIdentity,
    readonly tls: TlsMaterial | undefined,
    readonly log: (level: LogLevel | "error", text: string) => void,
    readonly appTag: string = "",
  ) {
    if (enabled) this.#connect();
  }

  /** Whether the link is up (its handshake done). */
  get connected(): boolean {
    return this.#connection !== undefined && !this.#connection.closed;
  }

  /** Bytes queued or being written on the link, 0 when it is down. */
  get pendingWriteBytes(): number {
    return this.#connection?.pendingWriteBytes ?? 0;
  }

  sendFrame(frame: Uint8Array): void {
    const connection = this.#connection;
    if (connection !== undefined && !connection.closed) return connection.sendFrame(frame);
    // Messages to an unreachable peer are dropped: the protocol re-sends what matters. Only the
    // first few, sent while a link never connected yet is being made (a new member's first
    // StartEpoch, §7), wait for it: else each first message costs a retry period.
    if (
      !this.#wasConnected && this.#early.length < EARLY_FRAMES_HELD_MAX &&
      this.#earlyBytes + frame.length <= EARLY_BYTES_HELD_MAX
    ) {
      this.#early.push(frame);
      this.#earlyBytes += frame.length;
    }
  }

  close(): void {
    this.#closed = true;
    this.#early = [];
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    this.#connection?.close();
    this.#handshaking?.close();
  }

  /** Skip the rest of the backoff if the link is down. */
  reconnectNow(): void {
    if (!this.enabled || this.#closed || this.#retryTimer === undefined) return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#backoffMs = RECONNECT_MS_MIN;
    this.#connect();
  }

  async #connect(): Promise<void> {
    if (this.#closed || this.#connecting) return;
    this.#connecting = true;
    try {
      const conn = await connectTo(this.address.host, this.address.port, this.tls);
      if (this.#closed) {
        conn.close();
        return;
      }
      // The peer sends nothing on this link but its handshake frames: a small read buffer.
      const connection = new Connection(conn, {
        frameBodyBytesMax: HANDSHAKE_BODY_BYTES_MAX,
        readBufferBytes: HANDSHAKE_READ_BUFFER_BYTES,
      });
      const handshake = new ConnectorHandshake(
        this.identity,
        "replica",
        this.selfIndex,
        this.peerIndex,
        this.appTag,
      );
      const where = `${this.address.host}:${this.address.port}`;
      this.#handshaking = connection;
      const usable = () => {
        if (this.#handshaking === connection) this.#handshaking = undefined;
        if (this.#closed) return connection.close();
        this.#connection = connection;
        for (const frame of this.#early) connection.sendFrame(frame);
        this.#early = [];
        this.#earlyBytes = 0;
        this.#backoffMs = RECONNECT_MS_MIN;
        this.#lastRefusal = undefined;
        if (!this.#wasConnected) {
          this.#wasConnected = true;
        } else {
          this.log("info", `reconnected to ${where}`);
        }
      };
      connection.send(handshake.hello);
      connection.start({
        // The peer sends nothing on this link but its handshake frames.
        onFrame: (body) => {
          if (!isHandshakeFrame(body)) return;
          handshake.onFrame(body).then((outcome) => {
            if (connection.closed) return;
            if ("error" in outcome) {
              if (outcome.error !== this.#lastRefusal) {
                this.#lastRefusal = outcome.error;
                this.log("warn", `link to replica at ${where}: ${outcome.error}`);
              }
              connection.close(outcome.error);
              return;
            }
            connection.send(outcome.send);
            usable();
          }, (error) => connection.close(`handshake failed: ${String(error)}`));
        },
        onClose: (reason) => {
          if (this.#handshaking === connection) this.#handshaking = undefined;
          if (this.#closed) return;
          if (this.#connection === connection && reason !== this.#lastRefusal) {
            this.log("info", `lost connection to ${where}${reason ? `: ${reason}` : ""}`);
          }
          this.#scheduleRetry();
        },
      });
      if (handshake.ready) usable();
    } catch {
      this.#scheduleRetry();
    } finally {
      this.#connecting = false;
    }
  }

  #scheduleRetry(): void {
    if (this.#closed) return;
    this.#connection = undefined;
    const delay = this.#backoffMs;
    this.#backoffMs = Math.min(RECONNECT_MS_MAX, this.#backoffMs * 2);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#connect();
    }, delay);
  }
}
