/**
 * A TCP connection that reads and writes whole frames: reads go through the pure `FrameDecoder`
 * (any chunk boundaries), writes are buffered and flushed once per turn of the event loop, so many
 * messages produced in one turn cost one syscall.
 *
 * Every connection starts with a hello frame that says who is speaking: a client, a replica (and
 * which one), or a status query. The receiving side validates each later message against what
 * that role may send.
 *
 * @module
 */
import { ScratchBuffer } from "../lib/msgpack_fast.ts";
import { encodeFrame, FrameDecoder } from "./frame.ts";

/** Bytes a connection may have queued for writing before the peer is deemed too slow. */
export const WRITE_BUFFER_BYTES_MAX = 64 * 1024 * 1024;
/** The read buffer size: one read syscall takes at most this much. */
const READ_BUFFER_BYTES = 256 * 1024;

/** The largest write gathered into the connection's reusable buffer. */
const GATHER_BUFFER_BYTES_MAX = 1024 * 1024;

export type Role = "client" | "replica" | "status";

const HELLO_MAGIC = [0x76, 0x73, 0x74, 0x70]; // "vstp"
const HELLO_VERSION = 1;
const ROLE_CODES: Record<Role, number> = { client: 0, replica: 1, status: 2 };

export interface Hello {
  readonly role: Role;
  /** For a replica: its index in the configuration. */
  readonly index: number;
}

export function encodeHello(hello: Hello): Uint8Array {
  return new Uint8Array([
    ...HELLO_MAGIC,
    HELLO_VERSION,
    ROLE_CODES[hello.role],
    (hello.index >> 8) & 0xff,
    hello.index & 0xff,
  ]);
}

export function decodeHello(body: Uint8Array): Hello | { readonly error: string } {
  if (body.length !== 8 || HELLO_MAGIC.some((byte, i) => body[i] !== byte)) {
    return { error: "the first frame is not a vstamp hello (is this a vstamp peer?)" };
  }
  if (body[4] !== HELLO_VERSION) {
    return { error: `hello: protocol version ${body[4]} is not ${HELLO_VERSION}` };
  }
  const role = (Object.keys(ROLE_CODES) as Role[]).find((r) => ROLE_CODES[r] === body[5]);
  if (role === undefined) return { error: `hello: unknown role ${body[5]}` };
  return { role, index: (body[6]! << 8) | body[7]! };
}

/** Counters of socket activity, shared by the connections of one process (see `vstamp status`). */
export interface IoCounters {
  /** Read calls that returned data, and the bytes and frames they carried. */
  reads: number;
  bytesIn: number;
  framesIn: number;
  /** Write calls, and the bytes and frames they carried. */
  writes: number;
  bytesOut: number;
  framesOut: number;
}

/** This process's counters. */
export const IO_COUNTERS: IoCounters = {
  reads: 0,
  bytesIn: 0,
  framesIn: 0,
  writes: 0,
  bytesOut: 0,
  framesOut: 0,
};

export interface ConnectionHandlers {
  /** A complete frame body arrived. */
  onFrame(body: Uint8Array): void;
  /** All frames of one read were handed over: a good moment to act on them together. */
  onReadDone?(): void;
  /** The connection closed; `reason` is set when it closed because of an error. */
  onClose?(reason: string | undefined): void;
}

export class Connection {
  readonly #conn: Deno.TcpConn;
  readonly #decoder = new FrameDecoder();
  #handlers: ConnectionHandlers | undefined;
  #queued: Uint8Array[] = [];
  #queuedBytes = 0;
  #flushScheduled = false;
  #writing = false;
  /** Queued frames are gathered here for the one write in flight. */
  readonly #gather = new ScratchBuffer(GATHER_BUFFER_BYTES_MAX);
  #closed = false;
  readonly remote: string;

  constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    const address = conn.remoteAddr as Deno.NetAddr;
    this.remote = `${address.hostname}:${address.port}`;
    try {
      conn.setNoDelay(true);
    } catch {
      // Not every platform supports it; only latency suffers.
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Start reading; frames go to `handlers`. */
  start(handlers: ConnectionHandlers): void {
    this.#handlers = handlers;
    this.#readLoop();
  }

  /** Queue one frame body; it goes out with everything else queued in this turn. */
  send(body: Uint8Array): void {
    this.sendFrame(encodeFrame(body));
  }

  /** Queue an already framed message. */
  sendFrame(frame: Uint8Array): void {
    if (this.#closed) return;
    IO_COUNTERS.framesOut++;
    this.#queued.push(frame);
    this.#queuedBytes += frame.length;
    if (this.#queuedBytes > WRITE_BUFFER_BYTES_MAX) {
      this.close(`peer too slow: more than ${WRITE_BUFFER_BYTES_MAX} bytes queued`);
      return;
    }
    if (!this.#flushScheduled && !this.#writing) {
      this.#flushScheduled = true;
      queueMicrotask(() => this.#flush());
    }
  }

  close(reason?: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queued = [];
    this.#queuedBytes = 0;
    try {
      this.#conn.close();
    } catch {
      // Already closed by the peer.
    }
    this.#handlers?.onClose?.(reason);
  }

  async #flush(): Promise<void> {
    this.#flushScheduled = false;
    if (this.#writing || this.#closed) return;
    this.#writing = true;
    try {
      while (this.#queued.length > 0 && !this.#closed) {
        const chunks = this.#queued;
        const total = this.#queuedBytes;
        this.#queued = [];
        this.#queuedBytes = 0;
        let buffer: Uint8Array;
        if (chunks.length === 1) {
          buffer = chunks[0]!;
        } else {
          buffer = this.#gather.take(total);
          let offset = 0;
          for (const chunk of chunks) {
            buffer.set(chunk, offset);
            offset += chunk.length;
          }
        }
        let written = 0;
        while (written < buffer.length) {
          IO_COUNTERS.writes++;
          written += await this.#conn.write(buffer.subarray(written));
        }
        IO_COUNTERS.bytesOut += buffer.length;
      }
    } catch (error) {
      this.close(`write failed: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      this.#writing = false;
    }
  }

  async #readLoop(): Promise<void> {
    const buffer = new Uint8Array(READ_BUFFER_BYTES);
    try {
      while (!this.#closed) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        IO_COUNTERS.reads++;
        IO_COUNTERS.bytesIn += n;
        // The decoder may keep views of what it is given, so hand it its own copy.
        const bodies = this.#decoder.push(buffer.slice(0, n));
        if (!Array.isArray(bodies)) {
          this.close(`bad frame from ${this.remote}: ${bodies.error}`);
          return;
        }
        IO_COUNTERS.framesIn += bodies.length;
        for (const body of bodies) {
          if (this.#closed) return;
          this.#handlers!.onFrame(body);
        }
        this.#handlers!.onReadDone?.();
      }
      this.close();
    } catch (error) {
      if (this.#closed) return;
      this.close(`read failed: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
}
