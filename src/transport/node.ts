/**
 * The node driver: runs the pure replica core over TCP with real ticks and the real clock, and
 * persists what the core asks to persist in the replica's data directory before reporting it
 * durable. This and `connection.ts` are the only code that touches sockets.
 *
 * @module
 */
import process from "node:process";
import type { StateMachine } from "../app/state_machine.ts";
import type { ServerConfig } from "../config.ts";
import { DataDir } from "../storage/data_dir.ts";
import { TICK_MS } from "../vr/constants.ts";
import type { Message, ReplicaMessage } from "../vr/message.ts";
import { describeMessage } from "../vr/message.ts";
import { type Effect, type LogLevel, Replica } from "../vr/replica.ts";
import { decodeMessage, encodeFramedMessage } from "./codec.ts";
import {
  Connection,
  decodeHello,
  encodeHello,
  IO_COUNTERS,
  type IoCounters,
} from "./connection.ts";

/** Inbound connections a replica accepts at once (clients and peers together). */
export const CONNECTIONS_MAX = 4096;
/** Peer reconnection backoff: doubles from the minimum up to the maximum. */
export const RECONNECT_MS_MIN = 20;
export const RECONNECT_MS_MAX = 1000;

export interface NodeOptions {
  readonly config: ServerConfig;
  readonly index: number;
  readonly dataDir: string;
  readonly sync?: "fsync" | "none" | undefined;
  readonly app: StateMachine;
  /** A listener already bound to this replica's address (used by `cluster up`). */
  readonly listener?: Deno.Listener | undefined;
  readonly log: (level: LogLevel | "error", text: string) => void;
  readonly debug?: boolean | undefined;
}

/** What `vstamp status` shows for one replica. */
export interface ReplicaStatus {
  readonly index: number;
  readonly address: string;
  readonly status: string;
  readonly viewNumber: number;
  readonly role: "primary" | "backup";
  readonly opNumber: number;
  readonly commitNumber: number;
  readonly lastNormalView: number;
  readonly clients: number;
  readonly uptimeSeconds: number;
  readonly pid: number;
  /** Counters since the process started: how well messages and disk writes are batched. */
  readonly counters: NodeCounters;
  /**
   * The state machine's digest after executing every op up to `commitNumber`; only when asked
   * for, since it costs the replica a pass over its state.
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

export class ReplicaNode {
  readonly replica: Replica;
  readonly #options: NodeOptions;
  readonly #listener: Deno.Listener;
  readonly #dataDir: DataDir;
  readonly #peers: PeerLink[] = [];
  readonly #clients = new Map<number, Connection>();
  readonly #inbound = new Set<Connection>();
  #persistQueue: Effect[] = [];
  #persisting = false;
  #ticker: ReturnType<typeof setInterval> | undefined;
  #closed = false;
  #effectsScheduled = false;
  readonly #started = Date.now();
  #prepares = 0;
  #preparedEntries = 0;
  #replies = 0;
  #persists = 0;

  private constructor(
    options: NodeOptions,
    listener: Deno.Listener,
    dataDir: DataDir,
    replica: Replica,
  ) {
    this.#options = options;
    this.#listener = listener;
    this.#dataDir = dataDir;
    this.replica = replica;
  }

  static async start(options: NodeOptions): Promise<ReplicaNode> {
    const { config, index } = options;
    const address = config.addresses[index]!;
    const opened = await DataDir.open(options.dataDir, { sync: options.sync ?? "fsync" });
    let listener: Deno.Listener;
    try {
      listener = options.listener ?? Deno.listen({ hostname: address.host, port: address.port });
    } catch (error) {
      await opened.dataDir.close();
      throw error;
    }
    const replica = new Replica({
      replicaIndex: index,
      addresses: config.addressTexts,
      app: options.app,
      seed: crypto.getRandomValues(new Uint32Array(1))[0]!,
      durable: opened.state,
      log: (level, text) => options.log(level, text),
      debug: options.debug,
    });
    const node = new ReplicaNode(options, listener, opened.dataDir, replica);
    node.#run();
    return node;
  }

  get address(): string {
    return this.#options.config.addressTexts[this.#options.index]!;
  }

  status(options: { readonly digest?: boolean } = {}): ReplicaStatus {
    const r = this.replica;
    return {
      index: r.replicaIndex,
      address: this.address,
      status: r.status,
      viewNumber: r.viewNumber,
      role: r.isPrimary ? "primary" : "backup",
      opNumber: r.opNumber,
      commitNumber: r.commitNumber,
      lastNormalView: r.lastNormalView,
      clients: this.#clients.size,
      uptimeSeconds: Math.round((Date.now() - this.#started) / 1000),
      pid: Deno.pid,
      counters: this.counters(),
      ...(options.digest === true ? { digest: r.app.digest() } : {}),
    };
  }

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

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#ticker !== undefined) clearInterval(this.#ticker);
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    for (const peer of this.#peers) peer.close();
    for (const connection of this.#inbound) connection.close();
    while (this.#persisting) await new Promise((resolve) => setTimeout(resolve, 1));
    await this.#dataDir.close();
  }

  #run(): void {
    const { config, index } = this.#options;
    for (let peer = 0; peer < config.addresses.length; peer++) {
      this.#peers.push(
        new PeerLink(config.addresses[peer]!, index, peer !== index, this.#options.log),
      );
    }
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
        if (this.#inbound.size >= CONNECTIONS_MAX) {
          this.#options.log("warn", `refusing a connection: ${CONNECTIONS_MAX} already open`);
          conn.close();
          continue;
        }
        this.#serve(new Connection(conn as Deno.TcpConn));
      }
    } catch (error) {
      if (!this.#closed) this.#options.log("error", `listener failed: ${String(error)}`);
    }
  }

  #serve(connection: Connection): void {
    this.#inbound.add(connection);
    let role: "client" | "replica" | "status" | undefined;
    let peerIndex = -1;
    const replicaCount = this.#options.config.addresses.length;
    connection.start({
      onFrame: (body) => {
        if (role === undefined) {
          const hello = decodeHello(body);
          if ("error" in hello) {
            connection.close(hello.error);
            return;
          }
          if (hello.role === "replica" && hello.index >= replicaCount) {
            connection.close(`hello from replica ${hello.index}: out of range`);
            return;
          }
          role = hello.role;
          peerIndex = hello.index;
          // The peer is evidently up: reconnect to it now rather than after the backoff.
          if (role === "replica") this.#peers[peerIndex]?.reconnectNow();
          if (role === "status") {
            // A status hello's index asks for the digest (1) or not (0).
            const status = this.status({ digest: hello.index === 1 });
            connection.send(new TextEncoder().encode(JSON.stringify(status)));
          }
          return;
        }
        if (role === "status") return;
        const decoded = decodeMessage(body, { from: role, replicaCount });
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
        if (role === "client" && "clientId" in message) {
          this.#clients.set(message.clientId, connection);
        }
        if (this.#options.debug) {
          this.#options.log("debug", `<- ${role} ${peerIndex}: ${describeMessage(message)}`);
        }
        this.replica.onMessage(message as Message);
      },
      onReadDone: () => this.#scheduleEffects(),
      onClose: (reason) => {
        this.#inbound.delete(connection);
        if (role === "client") {
          for (const [clientId, conn] of this.#clients) {
            if (conn === connection) this.#clients.delete(clientId);
          }
        }
        if (reason !== undefined && !this.#closed) {
          this.#options.log("info", `closed connection from ${connection.remote}: ${reason}`);
        }
      },
    });
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
    for (const effect of effects) {
      switch (effect.type) {
        case "send": {
          // A broadcast hands the same message object to every peer: encode it once.
          if (effect.message !== lastMessage) {
            lastMessage = effect.message;
            lastFrame = encodeFramedMessage(effect.message as ReplicaMessage);
          }
          if (effect.message.type === "prepare") {
            this.#prepares++;
            this.#preparedEntries += effect.message.entries.length;
          }
          this.#peers[effect.to]!.sendFrame(lastFrame!);
          break;
        }
        case "reply": {
          this.#replies++;
          const connection = this.#clients.get(effect.clientId);
          if (connection !== undefined) connection.sendFrame(encodeFramedMessage(effect.message));
          break;
        }
        case "persist_log":
        case "persist_superblock":
          this.#persistQueue.push(effect);
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

  /** One batch at a time: everything queued meanwhile goes in the next batch (group commit). */
  async #persist(): Promise<void> {
    let id = 0;
    try {
      if (!this.#closed) {
        const batch = this.#persistQueue;
        this.#persistQueue = [];
        this.#persists++;
        id = await this.#dataDir.persist(batch);
      }
    } catch (error) {
      // A replica that cannot write its disk must not go on acknowledging anything: stop loudly.
      this.#persisting = false;
      this.#options.log("error", `cannot persist to ${this.#dataDir.path}: ${String(error)}`);
      await this.close();
      throw error;
    }
    this.#persisting = false;
    if (this.#closed) return;
    if (id > 0) this.replica.onPersisted(id);
    this.#processEffects();
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

  constructor(
    readonly address: { readonly host: string; readonly port: number },
    readonly selfIndex: number,
    readonly enabled: boolean,
    readonly log: (level: LogLevel | "error", text: string) => void,
  ) {
    if (enabled) this.#connect();
  }

  sendFrame(frame: Uint8Array): void {
    const connection = this.#connection;
    // Messages to an unreachable peer are dropped: the protocol re-sends what matters.
    if (connection !== undefined && !connection.closed) connection.sendFrame(frame);
  }

  close(): void {
    this.#closed = true;
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    this.#connection?.close();
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
      const conn = await Deno.connect({ hostname: this.address.host, port: this.address.port });
      if (this.#closed) {
        conn.close();
        return;
      }
      const connection = new Connection(conn);
      this.#connection = connection;
      this.#backoffMs = RECONNECT_MS_MIN;
      connection.send(encodeHello({ role: "replica", index: this.selfIndex }));
      if (!this.#wasConnected) {
        this.#wasConnected = true;
      } else {
        this.log("info", `reconnected to ${this.address.host}:${this.address.port}`);
      }
      connection.start({
        onFrame: () => {}, // Peers never answer on this connection.
        onClose: (reason) => {
          if (this.#closed) return;
          this.log(
            "info",
            `lost connection to ${this.address.host}:${this.address.port}${
              reason ? `: ${reason}` : ""
            }`,
          );
          this.#scheduleRetry();
        },
      });
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
