/**
 * A RESP (Redis protocol) gateway to a vstamp group: any unmodified Redis client or tool
 * (`redis-cli`, `redis-benchmark`, ioredis…) reads and writes the replicated key-value store.
 *
 * Every command goes through the protocol with the client library (`src/client`): writes through
 * the log, reads by §6.3 confirmation at the primary, nothing from a local cache, so the answers
 * are linearizable whichever gateway a client is connected to. The library follows the primary
 * across view changes and re-sends a request under its request-number until it is answered, so a
 * write in flight at a failover executes once, and the Redis client never sees the failover.
 *
 * VR allows one outstanding request per client id (§4.5), so the gateway keeps a pool of client
 * sessions (several ids on a few shared connections): each request borrows one for its round. The
 * store commands of a connection that arrive together (a pipeline) go as one KV `BATCH`, which the
 * group executes in order in one request, and the next batch goes once this one was answered, so a
 * connection sees its commands executed in the order it sent them, as Redis promises, and a
 * pipeline of 16 commands costs the group one request.
 *
 * @module
 */
import { ClientError, ClientTransport } from "../client/client.ts";
import { KEY_SIZE_MAX, type KvOperation, type KvResult, VALUE_SIZE_MAX } from "../app/kv.ts";
import { BATCH_BYTES_MAX, KvClient, operationBytes } from "../client/kv_client.ts";
import { appTag } from "../app/app.ts";
import { concatBytes } from "../lib/bytes.ts";
import { kvApp } from "../app/kv_app.ts";
import type { GroupAccess } from "../config.ts";
import { RESP_LIMITS_DEFAULT, type RespCommand, RespParser } from "./parser.ts";

/** What the gateway needs of a client session (a `KvClient`). */
export interface KvSession {
  /** Execute a prefix of `operations` (at least one) in order, in one request: its results. */
  batchOnce(operations: readonly KvOperation[]): Promise<KvResult[]>;
}

/** Where a RESP gateway listens, the group it serves, and its limits. */
export interface GatewayOptions {
  /** Replica addresses to locate the group from ("host:port"). */
  readonly addresses: readonly string[];
  /** The group's cluster id and secret, as `loadAccess` reads them from its configuration. */
  readonly access: GroupAccess;
  /** Address to listen on (default 127.0.0.1). */
  readonly host?: string | undefined;
  /** Port to listen on (0: any free one; `RespGateway.port` tells which). */
  readonly port: number;
  /** Client sessions (client ids) at most; more concurrent commands wait for one. */
  readonly sessionsMax?: number | undefined;
  /** Give up on a command after this long without an answer from the group. */
  readonly deadlineMs?: number | undefined;
  /** Redis connections at most; more are refused as Redis refuses them. */
  readonly connectionsMax?: number | undefined;
  /** Where one-line notices go (default: stderr). */
  readonly log?: ((line: string) => void) | undefined;
}

/**
 * Enough sessions for `redis-benchmark -c 200`; each is a client id in the group's table (which
 * holds 4,096), so a gateway takes few of them however many Redis connections it serves.
 */
export const SESSIONS_MAX_DEFAULT = 256;
/** Connections to each replica shared by the sessions (as `vstamp bench` shares them). */
const TRANSPORTS = 2;
/**
 * A failover (a view change after the primary's timeout) takes a second or two; the gateway waits
 * far longer before telling a Redis client that a command's outcome is unknown.
 */
export const GATEWAY_DEADLINE_MS_DEFAULT = 60_000;
/** Redis's default maxclients. */
export const CONNECTIONS_MAX_DEFAULT = 10_000;
/**
 * Most operations the gateway sends as one batch: a pipeline of up to this many commands of a
 * connection costs the group one request.
 */
const GATEWAY_BATCH_OPERATIONS = 256;
/** Bytes read from a connection at a time (Redis reads 16 KiB too). */
const READ_BYTES = 16 * 1024;
/** Replies kept before they are written, within one chunk of pipelined commands. */
const REPLY_BYTES_FLUSH = 64 * 1024;
/** Longest text of an argument quoted in an error, as Redis cuts them. */
const QUOTED_CHARS_MAX = 128;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---- Replies (RESP2) ----

export function simpleString(text: string): Uint8Array {
  return encoder.encode(`+${text}\r\n`);
}

/** An error reply: `text` starts with its code (ERR, NOPROTO…); line ends become spaces. */
export function errorReply(text: string): Uint8Array {
  return encoder.encode(`-${text.replace(/[\r\n]+/g, " ")}\r\n`);
}

export function integerReply(value: number): Uint8Array {
  return encoder.encode(`:${value}\r\n`);
}

export function bulkReply(value: Uint8Array | string | null): Uint8Array {
  if (value === null) return NIL;
  const bytes = typeof value === "string" ? encoder.encode(value) : value;
  const header = encoder.encode(`$${bytes.byteLength}\r\n`);
  const out = new Uint8Array(header.byteLength + bytes.byteLength + 2);
  out.set(header, 0);
  out.set(bytes, header.byteLength);
  out.set(CRLF, header.byteLength + bytes.byteLength);
  return out;
}

export function arrayReply(items: readonly Uint8Array[]): Uint8Array {
  return concatBytes([encoder.encode(`*${items.length}\r\n`), ...items]);
}

const CRLF = Uint8Array.of(0x0d, 0x0a);
const NIL = encoder.encode("$-1\r\n");
const OK = simpleString("OK");
const PONG = simpleString("PONG");

/** An argument as Redis quotes it in an error: printable, cut to `QUOTED_CHARS_MAX`. */
function quoted(arg: Uint8Array): string {
  const text = decoder.decode(arg.subarray(0, QUOTED_CHARS_MAX)).replace(/[\r\n]/g, " ");
  return `'${text}'`;
}

// ---- Commands ----

/** The state of one Redis connection that commands see and change. */
export interface ConnectionState {
  readonly id: number;
  name: Uint8Array | null;
}

/** What a command does: its reply, and whether the connection closes after it (QUIT). */
export interface CommandOutcome {
  readonly reply: Uint8Array;
  readonly close?: boolean;
}

/** The commands the gateway serves, for COMMAND COUNT and the README. */
export const COMMANDS = [
  "SET",
  "GET",
  "DEL",
  "EXISTS",
  "DBSIZE",
  "PING",
  "ECHO",
  "HELLO",
  "CLIENT",
  "COMMAND",
  "INFO",
  "SELECT",
  "QUIT",
] as const;

/**
 * What a command needs: a reply made here (`local`), or operations of the store and how to make
 * the reply from their results (`store`).
 */
export type CommandPlan =
  | { readonly kind: "local"; readonly run: () => CommandOutcome }
  | {
    readonly kind: "store";
    readonly operations: readonly KvOperation[];
    readonly reply: (results: readonly KvResult[]) => Uint8Array;
  };

/**
 * Decide what one Redis command does, changing nothing yet. Errors of the command (arity, syntax)
 * are local error replies; nothing here throws for anything a client sent.
 */
export function planCommand(args: RespCommand, connection: ConnectionState): CommandPlan {
  // ASCII only, as Redis compares names: "ſet" is not SET.
  const name = decoder.decode(args[0]!).replace(/[a-z]+/g, (word) => word.toUpperCase());
  const local = (reply: Uint8Array): CommandPlan => ({ kind: "local", run: () => ({ reply }) });
  const store = (
    operations: readonly KvOperation[],
    reply: (results: readonly KvResult[]) => Uint8Array,
  ): CommandPlan => {
    // A key or value beyond the store's limits is this command's error, not its batch's.
    const tooLarge = storeLimitError(operations);
    return tooLarge !== undefined ? local(errorReply(`ERR ${tooLarge}`)) : {
      kind: "store",
      operations,
      // A result that is an error (a key or value beyond the store's limits) is the reply.
      reply: (results) => {
        const failed = results.find((result) => result.kind === "error");
        return failed?.kind === "error" ? errorReply(`ERR ${failed.message}`) : reply(results);
      },
    };
  };
  const wrongArity = () =>
    local(errorReply(`ERR wrong number of arguments for '${name.toLowerCase()}' command`));
  switch (name) {
    case "GET":
      if (args.length !== 2) return wrongArity();
      return store([{ command: "GET", key: args[1]! }], ([result]) => bulkReply(bytesOf(result)));
    case "SET":
      if (args.length < 3) return wrongArity();
      if (args.length > 3) {
        // NX, XX, EX, PX, GET, KEEPTTL: the store has no expiry nor conditional writes.
        return local(
          errorReply(`ERR syntax error: SET options are not supported (got ${quoted(args[3]!)})`),
        );
      }
      return store([{ command: "SET", key: args[1]!, value: args[2]! }], () => OK);
    case "DEL":
      // One DEL per key, in one batch when they fit (see `runCommands`).
      if (args.length < 2) return wrongArity();
      return store(
        args.slice(1).map((key) => ({ command: "DEL", key })),
        (results) => integerReply(results.filter((r) => r.kind === "integer" && r.value).length),
      );
    case "EXISTS":
      // As Redis, a key named twice counts twice.
      if (args.length < 2) return wrongArity();
      return store(
        args.slice(1).map((key) => ({ command: "GET", key })),
        (results) => integerReply(results.filter((r) => r.kind === "bytes").length),
      );
    case "DBSIZE":
      if (args.length !== 1) return wrongArity();
      return store(
        [{ command: "SIZE" }],
        ([result]) =>
          result?.kind === "integer"
            ? integerReply(result.value)
            : errorReply(`ERR SIZE: unexpected ${result?.kind} result`),
      );
    case "PING":
      if (args.length > 2) return wrongArity();
      return local(args.length === 2 ? bulkReply(args[1]!) : PONG);
    case "ECHO":
      if (args.length !== 2) return wrongArity();
      return local(bulkReply(args[1]!));
    case "QUIT":
      return { kind: "local", run: () => ({ reply: OK, close: true }) };
    case "HELLO":
      // Run when its turn comes, not when planned: they change the connection's state.
      return { kind: "local", run: () => hello(args, connection) };
    case "CLIENT":
      return { kind: "local", run: () => client(args, connection) };
    case "COMMAND":
      return { kind: "local", run: () => command(args) };
    case "INFO":
      // ioredis's ready check reads `loading` from INFO before it sends anything else.
      return local(bulkReply(
        "# Server\r\nredis_version:7.0.0\r\nvstamp:gateway\r\nredis_mode:standalone\r\n" +
          "\r\n# Persistence\r\nloading:0\r\n",
      ));
    case "SELECT":
      if (args.length !== 2) return wrongArity();
      // One keyspace: database 0 (clients configured with a db select it at connect time).
      return local(
        decoder.decode(args[1]!) === "0" ? OK : errorReply("ERR DB index is out of range"),
      );
    default: {
      const rest = args.slice(1, 1 + 16).map((arg) => `${quoted(arg)} `).join("");
      return local(
        errorReply(`ERR unknown command ${quoted(args[0]!)}, with args beginning with: ${rest}`),
      );
    }
  }
}

/** The store's message for a key or value over its limits, as the store words it. */
function storeLimitError(operations: readonly KvOperation[]): string | undefined {
  for (const operation of operations) {
    if (operation.command === "SIZE") continue;
    if (operation.key.byteLength > KEY_SIZE_MAX) {
      return `key is ${operation.key.byteLength} bytes, the limit is ${KEY_SIZE_MAX}`;
    }
    if (operation.command === "SET" && operation.value.byteLength > VALUE_SIZE_MAX) {
      return `value is ${operation.value.byteLength} bytes, the limit is ${VALUE_SIZE_MAX}`;
    }
  }
  return undefined;
}

function bytesOf(result: KvResult | undefined): Uint8Array | null {
  return result?.kind === "bytes" ? result.value : null;
}

/** Runs `use` with a session of the pool (`SessionPool.with`). */
export type WithSession = <T>(use: (session: KvSession) => Promise<T>) => Promise<T>;

/**
 * Run a connection's commands in their order, handing each reply to `emit` in that order; true if
 * one of them closes the connection (QUIT: the commands after it are not run).
 *
 * The operations of consecutive store commands go together as batches (`KvClient.batch`): each
 * batch is one request, so its operations execute in this order with nothing of another client
 * between them (a DEL of several keys is atomic when it fits in one), and the next batch goes once
 * this one was answered. A pipeline thus costs the group one request per batch, not per command.
 */
export async function runCommands(
  commands: readonly RespCommand[],
  connection: ConnectionState,
  withSession: WithSession,
  emit: (reply: Uint8Array) => void | Promise<void>,
): Promise<boolean> {
  let next = 0;
  while (next < commands.length) {
    const plan = planCommand(commands[next]!, connection);
    next++;
    if (plan.kind === "local") {
      const outcome = plan.run();
      await emit(outcome.reply);
      if (outcome.close) return true;
      continue;
    }
    // This store command and the ones right after it, up to a batch's worth of operations.
    const plans = [plan];
    let count = plan.operations.length;
    while (next < commands.length) {
      const following = planCommand(commands[next]!, connection);
      // A command goes whole in the next batch rather than across two (a DEL of several keys
      // stays atomic); one that ends the batch is planned again (planning changes nothing).
      if (
        following.kind !== "store" ||
        count + following.operations.length > GATEWAY_BATCH_OPERATIONS
      ) {
        break;
      }
      plans.push(following);
      count += following.operations.length;
      next++;
    }
    if (await runStorePlans(plans, withSession, emit)) return true;
  }
  return false;
}

/**
 * Run consecutive store commands, one request at a time: each request takes whole commands (as
 * many as fit: `GATEWAY_BATCH_OPERATIONS` operations, `BATCH_BYTES_MAX` bytes), so a command that
 * fits in one runs atomically; only a command too large by itself goes in pieces. The replies of
 * a request are handed to `emit` (written) before the next request goes, so a connection holds one
 * request's results at most. True when the connection must close: the group did not answer in
 * time, so a write's outcome is unknown, and a later command must not overtake it.
 */
async function runStorePlans(
  plans: readonly Extract<CommandPlan, { kind: "store" }>[],
  withSession: WithSession,
  emit: (reply: Uint8Array) => void | Promise<void>,
): Promise<boolean> {
  const operations = plans.flatMap((plan) => plan.operations);
  // Where each plan's operations end in `operations`.
  const ends: number[] = [];
  for (const plan of plans) ends.push((ends[ends.length - 1] ?? 0) + plan.operations.length);
  let done = 0;
  let planAt = 0;
  let results: KvResult[] = [];
  while (done < operations.length) {
    let end = done;
    let count = 0;
    let bytes = 0;
    for (let p = planAt; p < plans.length; p++) {
      const slice = operations.slice(Math.max(done, p === 0 ? 0 : ends[p - 1]!), ends[p]!);
      const size = slice.reduce((sum, operation) => sum + operationBytes(operation), 0);
      if (
        end > done &&
        (count + slice.length > GATEWAY_BATCH_OPERATIONS || bytes + size > BATCH_BYTES_MAX)
      ) {
        break;
      }
      end = ends[p]!;
      count += slice.length;
      bytes += size;
    }
    let answered: KvResult[];
    try {
      answered = await withSession((session) => session.batchOnce(operations.slice(done, end)));
    } catch (error) {
      if (!(error instanceof ClientError)) throw error;
      // No answer from the group in time (the outcome of a write is then unknown), or a reply
      // that made no sense: every command not answered yet gets the error, and the connection
      // closes (a client reconnects, knowing the state is unknown).
      for (; planAt < plans.length; planAt++) await emit(errorReply(`ERR ${error.message}`));
      return true;
    }
    // The store may stop a batch early (the size of its results): the rest goes next round.
    for (const result of answered) {
      results.push(result);
      done++;
      const plan = plans[planAt]!;
      if (results.length === plan.operations.length) {
        await emit(plan.reply(results));
        results = [];
        planAt++;
      }
    }
  }
  return false;
}

/** Run one command (as `runCommands`); its reply, and whether the connection closes. */
export async function executeCommand(
  args: RespCommand,
  connection: ConnectionState,
  withSession: WithSession,
): Promise<CommandOutcome> {
  const replies: Uint8Array[] = [];
  const close = await runCommands([args], connection, withSession, (reply) => {
    replies.push(reply);
  });
  return { reply: concatBytes(replies), close };
}

/** HELLO [protover [AUTH user pass] [SETNAME name]]: RESP2 only. */
function hello(args: RespCommand, connection: ConnectionState): CommandOutcome {
  if (args.length >= 2) {
    const version = decoder.decode(args[1]!);
    if (version !== "2") {
      return {
        reply: errorReply(
          `NOPROTO unsupported protocol version (this gateway speaks RESP2, got ${
            quoted(args[1]!)
          })`,
        ),
      };
    }
  }
  for (let i = 2; i < args.length; i++) {
    const option = decoder.decode(args[i]!).toUpperCase();
    if (option === "SETNAME" && i + 1 < args.length) {
      connection.name = args[++i]!;
    } else if (option === "AUTH") {
      return { reply: errorReply("ERR AUTH is not supported: the gateway has no users") };
    } else {
      return { reply: errorReply(`ERR Syntax error in HELLO option ${quoted(args[i]!)}`) };
    }
  }
  const text = (value: string) => bulkReply(value);
  return {
    reply: arrayReply([
      text("server"),
      text("redis"),
      text("version"),
      text("7.0.0"),
      text("proto"),
      integerReply(2),
      text("id"),
      integerReply(connection.id),
      text("mode"),
      text("standalone"),
      text("role"),
      text("master"),
      text("modules"),
      arrayReply([]),
    ]),
  };
}

/** CLIENT SETNAME / GETNAME / ID / SETINFO: what client libraries send at connect time. */
function client(args: RespCommand, connection: ConnectionState): CommandOutcome {
  const sub = args.length >= 2 ? decoder.decode(args[1]!).toUpperCase() : "";
  switch (sub) {
    case "SETNAME":
      if (args.length !== 3) break;
      if (args[2]!.some((byte) => byte <= 0x20 || byte >= 0x7f)) {
        return {
          reply: errorReply(
            "ERR Client names cannot contain spaces, newlines or special characters.",
          ),
        };
      }
      connection.name = args[2]!.byteLength === 0 ? null : args[2]!;
      return { reply: OK };
    case "GETNAME":
      if (args.length !== 2) break;
      return { reply: bulkReply(connection.name) };
    case "ID":
      if (args.length !== 2) break;
      return { reply: integerReply(connection.id) };
    case "SETINFO":
      // LIB-NAME / LIB-VER: accepted and forgotten.
      if (args.length !== 4) break;
      return { reply: OK };
    default:
      return {
        reply: errorReply(
          `ERR unknown subcommand ${
            args.length >= 2 ? quoted(args[1]!) : "''"
          }. Try SETNAME, GETNAME, ID, SETINFO.`,
        ),
      };
  }
  return {
    reply: errorReply(`ERR wrong number of arguments for 'client|${sub.toLowerCase()}' command`),
  };
}

/**
 * COMMAND, COMMAND DOCS, COMMAND INFO: empty (clients use them for hints, not to decide what to
 * send); COMMAND COUNT: the commands served.
 */
function command(args: RespCommand): CommandOutcome {
  const sub = args.length >= 2 ? decoder.decode(args[1]!).toUpperCase() : "";
  if (sub === "COUNT") return { reply: integerReply(COMMANDS.length) };
  return { reply: arrayReply([]) };
}

// ---- Sessions ----

/**
 * A pool of client sessions on a few shared transports, created as concurrency needs them, up to
 * `sessionsMax`; a command that finds none free waits its turn (first come, first served).
 */
export class SessionPool {
  readonly #options: GatewayOptions;
  readonly #transports: ClientTransport[];
  readonly #idle: KvClient[] = [];
  /** Commands waiting for a session: given one as it is released, or failed at `close`. */
  readonly #waiting: {
    readonly resolve: (session: KvClient) => void;
    readonly reject: (error: Error) => void;
  }[] = [];
  readonly #all: KvClient[] = [];
  #creating = 0;
  /** The group's addresses as the sessions last learned them (§7: they follow epochs). */
  #addresses: readonly string[];
  #closed = false;

  constructor(options: GatewayOptions) {
    this.#options = options;
    this.#addresses = options.addresses;
    this.#transports = Array.from(
      { length: TRANSPORTS },
      // It speaks the key-value store: a group of another app refuses it, naming both.
      () => new ClientTransport({ ...options.access, app: appTag(kvApp) }),
    );
  }

  /** Run `use` with a session of its own for its duration. */
  async with<T>(use: (session: KvSession) => Promise<T>): Promise<T> {
    const session = await this.#acquire();
    try {
      return await use(session);
    } finally {
      this.#release(session);
    }
  }

  close(): void {
    this.#closed = true;
    for (const waiter of this.#waiting.splice(0)) {
      waiter.reject(new ClientError("the gateway is closing"));
    }
    for (const session of this.#all) session.close();
    for (const transport of this.#transports) transport.close();
  }

  async #acquire(): Promise<KvClient> {
    if (this.#closed) throw new ClientError("the gateway is closing");
    const idle = this.#idle.pop();
    if (idle !== undefined) return idle;
    const max = this.#options.sessionsMax ?? SESSIONS_MAX_DEFAULT;
    if (this.#all.length + this.#creating < max) {
      this.#creating++;
      try {
        const session = await KvClient.connect({
          addresses: this.#addresses,
          transport: this.#transports[(this.#all.length + this.#creating) % TRANSPORTS],
          deadlineMs: this.#options.deadlineMs ?? GATEWAY_DEADLINE_MS_DEFAULT,
        });
        this.#all.push(session);
        return session;
      } finally {
        this.#creating--;
      }
    }
    return await new Promise((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }

  #release(session: KvClient): void {
    this.#addresses = session.client.addresses;
    const next = this.#waiting.shift();
    if (next !== undefined) next.resolve(session);
    else this.#idle.push(session);
  }
}

// ---- The server ----

/**
 * A RESP2 (Redis protocol) server in front of a group running the key-value store: every command
 * goes through the client library, so answers are linearizable and survive a failover.
 */
export class RespGateway {
  readonly #listener: Deno.TcpListener;
  readonly #pool: SessionPool;
  readonly #options: GatewayOptions;
  readonly #connections = new Set<Deno.TcpConn>();
  readonly #served: Promise<void>;
  #nextConnectionId = 1;
  #closed = false;

  private constructor(listener: Deno.TcpListener, options: GatewayOptions) {
    this.#listener = listener;
    this.#options = options;
    this.#pool = new SessionPool(options);
    this.#served = this.#accept();
  }

  /** Listen on `options.host:options.port` and serve until `close`. */
  static start(options: GatewayOptions): RespGateway {
    const listener = Deno.listen({ hostname: options.host ?? "127.0.0.1", port: options.port });
    return new RespGateway(listener, options);
  }

  /** Settles once the gateway stopped accepting connections (after `close`). */
  get done(): Promise<void> {
    return this.#served;
  }

  /** The port listened on (the one the system chose for port 0). */
  get port(): number {
    return (this.#listener.addr as Deno.NetAddr).port;
  }

  /** Stop listening, close every Redis connection and the group's client sessions. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#listener.close();
    for (const conn of this.#connections) closeQuietly(conn);
    this.#pool.close();
    await this.#served;
  }

  #log(line: string): void {
    (this.#options.log ?? ((text) => console.error(text)))(line);
  }

  async #accept(): Promise<void> {
    const max = this.#options.connectionsMax ?? CONNECTIONS_MAX_DEFAULT;
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#closed) return;
        // Out of file descriptors and the like: note it and go on accepting.
        this.#log(`resp gateway: accept failed: ${error instanceof Error ? error.message : error}`);
        continue;
      }
      if (this.#connections.size >= max) {
        conn.write(errorReply("ERR max number of clients reached")).then(
          () => closeQuietly(conn),
          () => closeQuietly(conn),
        );
        continue;
      }
      this.#connections.add(conn);
      this.#serve(conn).catch((error) => {
        // A peer that went away mid-reply is routine; anything else is worth a line.
        if (
          this.#closed || error instanceof Deno.errors.BrokenPipe ||
          error instanceof Deno.errors.ConnectionReset
        ) {
          return; // (Closing, the gateway closed the connection under it.)
        }
        this.#log(
          `resp gateway: connection failed: ${error instanceof Error ? error.message : error}`,
        );
      }).finally(() => {
        this.#connections.delete(conn);
        closeQuietly(conn);
      });
    }
  }

  /**
   * Read, parse, run each command in order, write the replies. The next chunk is read only once
   * every command of this one was answered: a client that pipelines faster than the group
   * answers is held back by TCP, and the gateway buffers at most one chunk and one command.
   */
  async #serve(conn: Deno.TcpConn): Promise<void> {
    // Replies are small and a pipelined client waits for them: no Nagle delay.
    conn.setNoDelay(true);
    const parser = new RespParser(RESP_LIMITS_DEFAULT);
    const state: ConnectionState = { id: this.#nextConnectionId++, name: null };
    const chunk = new Uint8Array(READ_BYTES);
    const withSession: WithSession = (use) => this.#pool.with(use);
    for (;;) {
      let n: number | null;
      try {
        n = await conn.read(chunk);
      } catch {
        return; // Reset by the peer.
      }
      if (n === null) return;
      const { commands, error } = parser.feed(chunk.subarray(0, n));
      const replies: Uint8Array[] = [];
      let pending = 0;
      const flush = async () => {
        if (replies.length === 0) return;
        const bytes = replies.length === 1 ? replies[0]! : concatBytes(replies);
        replies.length = 0;
        pending = 0;
        await writeAll(conn, bytes);
      };
      const close = await runCommands(commands, state, withSession, async (reply) => {
        replies.push(reply);
        pending += reply.byteLength;
        if (pending >= REPLY_BYTES_FLUSH) await flush();
      });
      if (close) {
        await flush();
        return;
      }
      if (error !== undefined) replies.push(errorReply(`ERR Protocol error: ${error}`));
      await flush();
      if (error !== undefined) return;
    }
  }
}

/**
 * How long a write to a Redis client may wait for the client to read (30 s, as a replica waits on
 * a stalled client): a client that pipelines and never reads its replies is closed, and gives
 * back what its replies held.
 */
const WRITE_STALL_MS = 30_000;

/** The client read nothing for `WRITE_STALL_MS`: its connection was closed. */
class WriteStalled extends Error {}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.byteLength) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stalled = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        closeQuietly(conn);
        reject(new WriteStalled(`the client read nothing for ${WRITE_STALL_MS} ms: closed`));
      }, WRITE_STALL_MS);
    });
    const write = conn.write(bytes.subarray(at));
    write.catch(() => {}); // Rejected once the stall closed the connection: handled below.
    try {
      at += await Promise.race([write, stalled]);
    } finally {
      clearTimeout(timer);
    }
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
