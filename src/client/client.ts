/**
 * The client library: locates the group (§7.4), sends each request to the primary, re-sends it to
 * every replica on timeout (§4.1), follows view changes, numbers its requests and recovers its
 * request number after a restart (§4.5). One request outstanding per client id: a program that
 * wants concurrency uses several clients.
 *
 * @module
 */
import { type Address, formatAddress, parseAddress } from "../config.ts";
import { decodeMessage, encodeFramedMessage } from "../transport/codec.ts";
import { Connection } from "../transport/connection.ts";
import {
  type ClusterIdentity,
  ConnectorHandshake,
  HANDSHAKE_BODY_BYTES_MAX,
  isHandshakeFrame,
} from "../transport/handshake.ts";
import { FRAME_BODY_BYTES_MAX } from "../transport/frame.ts";
import { connectTo, type TlsMaterial } from "../transport/tls.ts";
import { crc32c } from "../lib/crc32c.ts";
import { LIMITS_DEFAULT } from "../vr/constants.ts";
import { ADDRESS_BOOK_MAX } from "../vr/membership.ts";
import type {
  ClientMessage,
  ClientReplyMessage,
  Configuration,
  Rejected,
  Reply,
} from "../vr/message.ts";

/** Thrown when the group cannot be reached or does not answer in time. */
export class ClientError extends Error {
  /** "ClientError". */
  override name = "ClientError";
}

/** How `Client.connect` reaches the group. */
export interface ClientOptions {
  /** One or more replica addresses to start from ("host:port"); the rest are located. */
  readonly addresses: readonly string[];
  /** The client id; a random one when absent. A given id recovers its request number. */
  readonly clientId?: number | undefined;
  /** Re-send to every replica after this long without an answer. */
  readonly retryMs?: number | undefined;
  /** Give up on a request (or on locating the group) after this long. */
  readonly deadlineMs?: number | undefined;
  /**
   * Share connections with other clients (a benchmark's or an application's many logical
   * clients): one connection per replica carries them all. By default a client has its own.
   */
  readonly transport?: ClientTransport | undefined;
  /**
   * The cluster secret's key and the cluster id (see `loadIdentity` in `src/config.ts`), for a
   * group that requires clients to authenticate (`require_client_auth`). Used only when the
   * client makes its own transport; a shared transport has its own.
   */
  readonly identity?: ClusterIdentity | undefined;
  /** TLS to the group (its CA), when it uses TLS; for a client's own transport, as `identity`. */
  readonly tls?: TlsMaterial | undefined;
  /**
   * The app this client speaks (`name@version`, `appTag` in `src/app/app.ts`): a replica running
   * another app refuses the connection, naming both. For a client's own transport, as `identity`.
   */
  readonly app?: string | undefined;
}

export const RETRY_MS_DEFAULT = 300;
export const DEADLINE_MS_DEFAULT = 10_000;
/** How often the transport checks its clients' retry and deadline times. */
const TIMER_MS = 20;
/** Frames kept for a replica while its connection opens. */
const WAITING_FRAMES_MAX = 16;
/** Largest client id: client ids travel as safe integers. */
export const CLIENT_ID_MAX = Number.MAX_SAFE_INTEGER;

interface Pending {
  requestNumber: number;
  frame: Uint8Array;
  readonly operation: Uint8Array;
  readonly operationChecksum: number;
  readonly resolve: (reply: Reply) => void;
  readonly reject: (error: Error) => void;
  retryAt: number;
  readonly deadline: number;
}

/**
 * A client of a group: sends one operation at a time to the primary, follows view changes and
 * reconfigurations, and takes only the reply to the very operation it sent (see README).
 */
export class Client {
  /** Its client id (§4.5). */
  readonly clientId: number;
  readonly #retryMs: number;
  readonly #deadlineMs: number;
  #addresses: Address[];
  #epoch = 0;
  /** `formatAddress` of each address: the transport's key for its connection. */
  #addressKeys: string[];
  #viewNumber = 0;
  #requestNumber = 0;
  readonly #transport: ClientTransport;
  readonly #ownsTransport: boolean;
  #pending: Pending | undefined;
  #waiters: ((message: ClientReplyMessage) => void)[] = [];
  #closed = false;

  private constructor(options: ClientOptions, addresses: Address[]) {
    this.clientId = options.clientId ?? randomClientId();
    this.#retryMs = options.retryMs ?? RETRY_MS_DEFAULT;
    this.#deadlineMs = options.deadlineMs ?? DEADLINE_MS_DEFAULT;
    this.#addresses = addresses;
    this.#addressKeys = addresses.map(formatAddress);
    this.#ownsTransport = options.transport === undefined;
    this.#transport = options.transport ??
      new ClientTransport({ identity: options.identity, tls: options.tls, app: options.app });
    this.#transport.register(this.clientId, this);
  }

  /**
   * Locate the group from the given addresses: ask them for the configuration and the view, and,
   * for a caller-chosen client id, the latest request number the group has seen from it.
   */
  static async connect(options: ClientOptions): Promise<Client> {
    const addresses: Address[] = [];
    for (const text of options.addresses) {
      const parsed = parseAddress(text);
      if ("error" in parsed) throw new ClientError(`bad address: ${parsed.error}`);
      addresses.push(parsed);
    }
    if (addresses.length === 0) throw new ClientError("no replica address given");
    if (
      options.clientId !== undefined &&
      (!Number.isSafeInteger(options.clientId) || options.clientId < 1)
    ) {
      throw new ClientError(`client id must be a positive integer, got ${options.clientId}`);
    }
    const client = new Client(options, addresses);
    try {
      await client.#locate();
      if (options.clientId !== undefined) await client.#recoverRequestNumber();
    } catch (error) {
      client.close();
      throw client.#explain(error);
    }
    return client;
  }

  /** The number of this client's latest request (0 before the first). */
  get requestNumber(): number {
    return this.#requestNumber;
  }

  /** The view this client believes current (to guess the primary). */
  get viewNumber(): number {
    return this.#viewNumber;
  }

  /** The addresses of the group's replicas as it knows them now. */
  get addresses(): readonly string[] {
    return [...this.#addressKeys];
  }

  /** Send one operation and wait for its result. */
  async request(operation: Uint8Array): Promise<Uint8Array> {
    if (this.#closed) throw new ClientError("client is closed");
    if (this.#pending !== undefined) {
      throw new ClientError("one request at a time per client id; use several clients");
    }
    if (operation.byteLength > LIMITS_DEFAULT.operationBytesMax) {
      // The primary would drop it unanswered, and the caller wait for the deadline.
      throw new ClientError(
        `an operation of ${operation.byteLength} bytes exceeds the limit of ` +
          `${LIMITS_DEFAULT.operationBytesMax} bytes (Limits.operationBytesMax)`,
      );
    }
    const requestNumber = this.#nextRequestNumber();
    const frame = this.#requestFrame(requestNumber, operation);
    const now = Date.now();
    const reply = await new Promise<Reply>((resolve, reject) => {
      this.#pending = {
        requestNumber,
        frame,
        operation,
        operationChecksum: crc32c(operation),
        resolve,
        reject,
        retryAt: now + this.#retryMs,
        deadline: now + this.#deadlineMs,
      };
      this.#send(this.#primary(), frame);
    });
    return reply.result;
  }

  /**
   * Called by the transport's timer: re-send a request that timed out to every replica (§4.1),
   * and give up at the deadline. One timer per transport, not one per request.
   */
  checkTimers(now: number): void {
    const pending = this.#pending;
    if (pending === undefined) return;
    // A replica runs another app: so does its group (every replica runs one app), and waiting
    // for the deadline would change nothing.
    const appRefusal = this.#transport.appRefusal;
    if (appRefusal !== undefined) {
      this.#pending = undefined;
      pending.reject(new ClientError(`cannot use the group: ${appRefusal}`));
      return;
    }
    if (now >= pending.deadline) {
      this.#pending = undefined;
      pending.reject(this.#explain(
        new ClientError(
          `no answer from the group (${this.addresses.join(", ")}) within ${this.#deadlineMs} ms`,
        ),
      ));
      return;
    }
    if (now >= pending.retryAt) {
      pending.retryAt = now + this.#retryMs;
      for (let i = 0; i < this.#addresses.length; i++) this.#send(i, pending.frame);
      // §7.4 The group may have moved on (a reconfiguration): one replica says where it is now.
      const asked = Math.floor(Math.random() * this.#addresses.length);
      this.#send(asked, encodeFramedMessage({ type: "locate", clientId: this.clientId }));
    }
  }

  /** Stop: a pending request fails, and its own transport (if it made one) closes. */
  close(): void {
    this.#closed = true;
    this.#transport.unregister(this.clientId);
    if (this.#ownsTransport) this.#transport.close();
  }

  /**
   * The next request-number: one above the last, and never below the clock in microseconds, so
   * that a client restarted with the same id numbers its requests above any number its earlier
   * run used (that one sent at most one request per microsecond), whatever the group remembers
   * of them: reads answered without the log (§6.3) leave no trace in its client table.
   */
  #nextRequestNumber(): number {
    this.#requestNumber = Math.max(this.#requestNumber + 1, Date.now() * 1000);
    return this.#requestNumber;
  }

  #requestFrame(requestNumber: number, operation: Uint8Array): Uint8Array {
    const message: ClientMessage = {
      type: "request",
      clientId: this.clientId,
      requestNumber,
      operation,
    };
    return encodeFramedMessage(message);
  }

  /** The primary refused the pending request (see `RejectReason`). */
  #onRejected(message: Rejected): void {
    const pending = this.#pending;
    if (pending === undefined || message.requestNumber !== pending.requestNumber) return;
    // A floor to number above (conflict, stale, evicted); "ahead" names a ceiling instead.
    if (message.reason !== "ahead" && message.floor > this.#requestNumber) {
      this.#requestNumber = message.floor;
    }
    const fail = (text: string) => {
      this.#pending = undefined;
      pending.reject(new ClientError(text));
    };
    const id = `client ${this.clientId}`;
    switch (message.reason) {
      case "conflict":
        // Never executed under that number, nor under another: safe to send under a new one.
        pending.requestNumber = this.#nextRequestNumber();
        pending.frame = this.#requestFrame(pending.requestNumber, pending.operation);
        this.#send(this.#primary(), pending.frame);
        return;
      case "stale":
        return fail(
          `${id}: the group executed request ${message.floor} of this client id, after ours ` +
            `(${message.requestNumber}): is another client using the same id?`,
        );
      case "evicted":
        return fail(
          `${id}: the group no longer remembers this client (its client table is full) and ` +
            `cannot tell whether request ${message.requestNumber} was executed; later requests ` +
            `are numbered afresh`,
        );
      case "too_large":
        return fail(`${id}: the operation is larger than the group accepts`);
      case "ahead":
        return fail(
          `${id}: request-number ${message.requestNumber} is more than a day ahead of the ` +
            `primary's clock (is this machine's clock right?)`,
        );
    }
  }

  /** Add why a replica refused this client's connection, if one did, to a time-out's message. */
  #explain<E>(error: E): E | ClientError {
    const refusal = this.#transport.lastRefusal;
    if (!(error instanceof ClientError) || refusal === undefined) return error;
    if (error.message.includes(refusal)) return error;
    return new ClientError(`${error.message}; ${refusal}`);
  }

  #primary(): number {
    return this.#viewNumber % this.#addresses.length;
  }

  #send(index: number, frame: Uint8Array): void {
    // Replies name member ids, which grow with reconfigurations (§7): any id the group may use.
    this.#transport.send(
      this.#addressKeys[index]!,
      this.#addresses[index]!,
      frame,
      ADDRESS_BOOK_MAX,
    );
  }

  /** §7 The epoch of the configuration this client uses. */
  get epoch(): number {
    return this.#epoch;
  }

  /**
   * §7.4 Take the configuration a replica sent if it is of a later epoch (or the first one):
   * the group was reconfigured, and requests go to its new members from now on.
   */
  #adopt(configuration: Configuration, first: boolean): boolean {
    if (!first && configuration.epoch <= this.#epoch) return false;
    const addresses: Address[] = [];
    for (const text of configuration.addresses) {
      const parsed = parseAddress(text);
      if ("error" in parsed) return false; // A bad answer: the next one will do.
      addresses.push(parsed);
    }
    if (addresses.length === 0) return false;
    this.#addresses = addresses;
    this.#addressKeys = addresses.map(formatAddress);
    // Views are of an epoch: a later epoch's may be lower than the ones this client saw.
    this.#viewNumber = configuration.epoch > this.#epoch
      ? configuration.viewNumber
      : Math.max(this.#viewNumber, configuration.viewNumber);
    this.#epoch = configuration.epoch;
    // Above every number of a client the group evicted (ClientTable.requestNumberFloor).
    this.#requestNumber = Math.max(this.#requestNumber, configuration.requestNumberFloor);
    return true;
  }

  /**
   * §7 Ask the group to move to a new configuration (`addresses`, odd in number, distinct):
   * resolves with the new epoch's configuration once the Reconfiguration committed, which this
   * client then uses. Rejects with a one-line reason if the group refuses it (an invalid
   * configuration, or another reconfiguration in progress) or does not answer in time.
   */
  /** @ignore For `vstamp reconfigure`; not part of the library's API. */
  async reconfigure(addresses: readonly string[]): Promise<Configuration> {
    const epoch = this.#epoch;
    const requestNumber = this.#nextRequestNumber();
    const answer = (await this.#ask(
      { type: "reconfiguration", clientId: this.clientId, requestNumber, epoch, addresses },
      (message) =>
        (message.type === "configuration" && message.epoch > epoch) ||
        (message.type === "rejected" && message.requestNumber === requestNumber),
      1,
    ))[0]!;
    if (answer.type === "rejected") {
      throw new ClientError(
        answer.reason === "reconfiguring"
          ? "the group is already changing its configuration: wait for it, then try again"
          : answer.reason === "bad_configuration"
          ? "the group refused the configuration (an even number of replicas, duplicates, or " +
            "the current configuration)"
          : `the group refused the reconfiguration (${answer.reason})`,
      );
    }
    const configuration = answer as Configuration;
    this.#adopt(configuration, false);
    return configuration;
  }

  /**
   * @ignore For `vstamp reconfigure`; not part of the library's API.
   * §7.3 Ask the group of this client's epoch to confirm it runs: the primary commits the check,
   * so its answer means a quorum of the group holds the state (the old machines may go).
   */
  async checkEpoch(): Promise<Configuration> {
    const epoch = this.#epoch;
    const requestNumber = this.#nextRequestNumber();
    const [answer] = await this.#ask(
      { type: "check_epoch", clientId: this.clientId, requestNumber, epoch },
      (message) =>
        message.type === "configuration" && message.requestNumber === requestNumber &&
        message.epoch >= epoch,
      1,
    );
    return answer as Configuration;
  }

  /** @internal A reply for this client, from the transport. */
  onMessage(message: ClientReplyMessage): void {
    for (const waiter of this.#waiters) waiter(message);
    switch (message.type) {
      case "reply": {
        if (message.viewNumber > this.#viewNumber) this.#viewNumber = message.viewNumber;
        const pending = this.#pending;
        // The reply must answer this very operation: under a reused number (a restarted client
        // with the same id) an old request's reply may still be on its way.
        if (
          pending !== undefined && message.requestNumber === pending.requestNumber &&
          message.operationChecksum === pending.operationChecksum
        ) {
          this.#pending = undefined;
          pending.resolve(message);
        }
        break;
      }
      case "not_primary":
        if (message.viewNumber > this.#viewNumber) {
          this.#viewNumber = message.viewNumber;
          const pending = this.#pending;
          // Go straight to the primary that the hint names.
          if (pending?.requestNumber === message.requestNumber) {
            this.#send(this.#primary(), pending.frame);
          }
        }
        break;
      case "rejected":
        this.#onRejected(message);
        break;
      case "configuration": {
        if (!this.#adopt(message, false)) break;
        const pending = this.#pending;
        if (pending !== undefined) this.#send(this.#primary(), pending.frame);
        break;
      }
      case "request_number_reply":
        break;
    }
  }

  /** Ask every known replica until one answers with the configuration (§7.4). */
  async #locate(): Promise<void> {
    const answer = await this.#ask(
      { type: "locate", clientId: this.clientId },
      (message) => message.type === "configuration",
      1,
    );
    const configuration = answer[0]!;
    if (configuration.type !== "configuration") return;
    for (const text of configuration.addresses) {
      const parsed = parseAddress(text);
      if ("error" in parsed) throw new ClientError(`replica sent a bad address: ${parsed.error}`);
    }
    this.#adopt(configuration, true);
  }

  /**
   * §4.5 A client id used before: continue above the largest request number f+1 replicas know.
   * Reads answered without the log (§6.3) are known only to the primary, so its answer is waited
   * for a little longer than the others'.
   */
  async #recoverRequestNumber(): Promise<void> {
    const f = (this.#addresses.length - 1) / 2;
    const nonce = crypto.getRandomValues(new Uint32Array(1))[0]!;
    const answers = await this.#ask(
      { type: "request_number_query", clientId: this.clientId, nonce },
      (message) => message.type === "request_number_reply" && message.nonce === nonce,
      f + 1,
      this.#primary(),
    );
    let latest = 0;
    for (const answer of answers) {
      if (answer.type === "request_number_reply") latest = Math.max(latest, answer.requestNumber);
    }
    // +2 per §4.5: a request may have been in flight that no answer reflects yet. The clock
    // (`#nextRequestNumber`) usually puts the next number far above this anyway.
    this.#requestNumber = Math.max(this.#requestNumber, latest + 1);
  }

  /**
   * Send a query to every replica until `count` distinct replicas answered, `wanted` among them if
   * it answers before the query is sent again.
   */
  #ask(
    query: ClientMessage,
    accept: (message: ClientReplyMessage) => boolean,
    count: number,
    wanted?: number,
  ): Promise<ClientReplyMessage[]> {
    const deadline = Date.now() + this.#deadlineMs;
    return new Promise((resolve, reject) => {
      const answers = new Map<number, ClientReplyMessage>();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const waiter = (message: ClientReplyMessage) => {
        if (!accept(message)) return;
        const from = "replica" in message ? message.replica : answers.size;
        answers.set(from, message);
        if (answers.size >= count && (wanted === undefined || answers.has(wanted))) done();
      };
      const done = () => {
        finish();
        resolve([...answers.values()]);
      };
      const finish = () => {
        if (timer !== undefined) clearTimeout(timer);
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
      };
      this.#waiters.push(waiter);
      const attempt = () => {
        if (answers.size >= count) return done(); // Enough, without `wanted`.
        const appRefusal = this.#transport.appRefusal;
        if (appRefusal !== undefined) {
          // The group runs another app: no answer will come (see `checkTimers`).
          finish();
          reject(new ClientError(`cannot use the group: ${appRefusal}`));
          return;
        }
        if (Date.now() >= deadline) {
          finish();
          reject(
            new ClientError(
              `cannot reach the group at ${
                this.addresses.join(", ")
              }: no answer within ${this.#deadlineMs} ms`,
            ),
          );
          return;
        }
        const frame = encodeFramedMessage(query);
        for (let i = 0; i < this.#addresses.length; i++) this.#send(i, frame);
        timer = setTimeout(attempt, Math.min(this.#retryMs, 100));
      };
      attempt();
    });
  }
}

function randomClientId(): number {
  const words = crypto.getRandomValues(new Uint32Array(2));
  // 52 random bits: a safe integer, never 0.
  return (words[0]! & 0xfffff) * 0x100000000 + words[1]! + 1;
}

/**
 * Connections to replicas, one per address, shared by any number of clients: replies are routed
 * to the client whose id they carry.
 */
export class ClientTransport {
  readonly #identity: ClusterIdentity;
  readonly #tls: TlsMaterial | undefined;
  readonly #app: string;
  readonly #connections = new Map<string, Connection>();
  /** Every open connection, those still in their handshake included: `close` closes them all. */
  readonly #open = new Set<Connection>();
  /** Frames for replicas whose connection is being opened. */
  readonly #waiting = new Map<string, Uint8Array[]>();
  readonly #clients = new Map<number, Client>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #closed = false;
  /** The last reason a replica gave for refusing a connection, with its address. */
  lastRefusal: string | undefined;
  /** A refusal because this transport's clients speak another app than the replica runs. */
  appRefusal: string | undefined;

  /**
   * `identity` is presented to every replica (by default none: a group without client auth);
   * `tls` is how to reach a group that uses TLS; `app` the app its clients speak (see
   * `ClientOptions.app`).
   */
  constructor(
    options: {
      readonly identity?: ClusterIdentity | undefined;
      readonly tls?: TlsMaterial | undefined;
      readonly app?: string | undefined;
    } = {},
  ) {
    this.#identity = options.identity ?? { clusterId: "", key: undefined };
    this.#tls = options.tls;
    this.#app = options.app ?? "";
  }

  /** @ignore Called by `Client`: route replies for `clientId` to it. */
  register(clientId: number, client: Client): void {
    if (this.#clients.has(clientId)) {
      throw new ClientError(`client id ${clientId} is already in use on this transport`);
    }
    this.#clients.set(clientId, client);
    this.#timer ??= setInterval(() => {
      const now = Date.now();
      for (const each of this.#clients.values()) each.checkTimers(now);
    }, TIMER_MS);
  }

  /** @ignore Called by `Client.close`. */
  unregister(clientId: number): void {
    this.#clients.delete(clientId);
    if (this.#clients.size === 0 && this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }

  /** @internal Dispatch a reply to the client it names. */
  deliver(message: ClientReplyMessage): void {
    this.#clients.get(message.clientId)?.onMessage(message);
  }

  /**
   * @ignore Called by `Client`.
   * Send a frame to a replica, connecting first if needed (frames wait meanwhile). `key` is
   * `formatAddress(address)`, which the caller keeps rather than rebuilding it per request.
   */
  send(key: string, address: Address, frame: Uint8Array, replicaCount: number): void {
    const existing = this.#connections.get(key);
    if (existing !== undefined && !existing.closed) {
      existing.sendFrame(frame);
      return;
    }
    let queue = this.#waiting.get(key);
    if (queue === undefined) {
      queue = [];
      this.#waiting.set(key, queue);
      this.#connect(key, address, replicaCount);
    }
    // Only the latest frames matter: older ones are re-sent by the retry logic anyway.
    if (queue.length >= WAITING_FRAMES_MAX) queue.shift();
    queue.push(frame);
  }

  /** Close every connection; the clients that share it can send no more. */
  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    for (const connection of this.#open) connection.close();
    this.#open.clear();
    this.#connections.clear();
    this.#waiting.clear();
  }

  async #connect(key: string, address: Address, replicaCount: number): Promise<void> {
    let conn: Deno.Conn;
    try {
      conn = await connectTo(address.host, address.port, this.#tls);
    } catch {
      // Unreachable: drop what waited; the retry logic tries again later.
      this.#waiting.delete(key);
      return;
    }
    if (this.#closed) {
      conn.close();
      return;
    }
    // A client never stops reading its replies: were it to pause at its queue of requests while
    // the replica pauses at its queue of replies, each would wait for the other.
    const connection = new Connection(conn, {
      frameBodyBytesMax: HANDSHAKE_BODY_BYTES_MAX,
      readPauseBytes: Infinity,
    });
    const handshake = new ConnectorHandshake(this.#identity, "client", 0, undefined, this.#app);
    connection.send(handshake.hello);
    this.#open.add(connection);
    const usable = () => {
      if (this.#closed) return connection.close();
      // Replies may be as large as any frame.
      connection.setLimits({ frameBodyBytesMax: FRAME_BODY_BYTES_MAX });
      this.#connections.set(key, connection);
      const queue = this.#waiting.get(key) ?? [];
      this.#waiting.delete(key);
      for (const frame of queue) connection.sendFrame(frame);
    };
    connection.start({
      onFrame: (body) => {
        if (isHandshakeFrame(body)) {
          handshake.onFrame(body).then((outcome) => {
            if (connection.closed) return;
            if ("error" in outcome) {
              this.lastRefusal = `${key} ${outcome.error}`;
              if (/ runs app /.test(outcome.error)) this.appRefusal = this.lastRefusal;
              connection.close(outcome.error);
              return;
            }
            connection.send(outcome.send);
            usable();
          }, (error) => connection.close(`handshake failed: ${String(error)}`));
          return;
        }
        // Nothing but the handshake until it is done: with a secret, a reply before the
        // replica proved it holds it could come from anyone on the path.
        if (!handshake.ready) return connection.close("a message before the handshake");
        const decoded = decodeMessage(body, { from: "reply", replicaCount });
        if (!decoded.ok) {
          connection.close(`bad reply: ${decoded.error}`);
          return;
        }
        this.deliver(decoded.message as ClientReplyMessage);
      },
      onClose: () => {
        this.#open.delete(connection);
        if (this.#connections.get(key) === connection) this.#connections.delete(key);
        // Frames that waited for a handshake that failed: the retry logic sends them again.
        if (!this.#connections.has(key)) this.#waiting.delete(key);
      },
    });
    if (handshake.ready) usable();
  }
}
