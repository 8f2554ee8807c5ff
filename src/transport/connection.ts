/**
 * A TCP connection that reads and writes whole frames: reads go through the pure `FrameDecoder`
 * (any chunk boundaries), writes are buffered and flushed once per turn of the event loop, so many
 * messages produced in one turn cost one syscall.
 *
 * Every connection starts with a hello frame that says who is speaking (`handshake.ts`): a
 * client, a replica (and which one), or a status query. The receiving side validates each later
 * message against what that role may send.
 *
 * Resources a peer can make a connection hold are bounded: the largest frame it may send
 * (`frameBodyBytesMax`, small until the handshake is done), the bytes queued for it to read
 * (`writeBufferBytesMax`; past `readPauseBytes` the connection stops reading its requests until it
 * reads its answers: backpressure), and, through a shared `ReadBudget`, the bytes of partial
 * frames all connections of a kind may buffer at once.
 *
 * @module
 */
import { ScratchBuffer } from "../lib/msgpack_fast.ts";
import { encodeFrame, FrameDecoder, type FrameError } from "./frame.ts";
import { noDelay } from "./tls.ts";

/** Bytes a connection may have queued for writing before the peer is deemed too slow. */
export const WRITE_BUFFER_BYTES_MAX = 64 * 1024 * 1024;
/**
 * A connection with this many bytes queued for writing (or being written) stops reading until
 * they drain, by default: a client that sends requests but does not read its replies is not
 * served faster than it reads.
 */
export const READ_PAUSE_BYTES_DEFAULT = 8 * 1024 * 1024;
/** How long `sendAndClose` waits for its last frame to be written before it closes anyway. */
const CLOSE_AFTER_FLUSH_MS_MAX = 1000;
const EMPTY_CHUNK = new Uint8Array(0);
/**
 * The read buffer size by default: one read syscall takes at most this much. Each connection
 * has its own, so connections that carry little (a handshake, a client) are given less
 * (`ConnectionOptions.readBufferBytes`): 4,000 idle connections with 256 KiB each held over
 * 500 MiB of a replica's memory.
 */
export const READ_BUFFER_BYTES_DEFAULT = 256 * 1024;

/** The largest write gathered into the connection's reusable buffer. */
const GATHER_BUFFER_BYTES_MAX = 1024 * 1024;

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

/**
 * Bytes of partial frames that a set of connections may buffer together. A connection whose read
 * takes the total past `bytesMax` is told (`onOverBudget`), and the owner closes whichever
 * connections it judges best (the largest buffer) until the total is back under.
 */
export interface ReadBudget {
  bytesUsed: number;
  readonly bytesMax: number;
  onOverBudget(): void;
}

/** Limits of one connection; see the module comment. */
export interface ConnectionOptions {
  readonly frameBodyBytesMax?: number | undefined;
  readonly writeBufferBytesMax?: number | undefined;
  readonly readPauseBytes?: number | undefined;
  readonly readBudget?: ReadBudget | undefined;
  /**
   * At most this many frames are handed over per turn of the event loop; the rest wait, in the
   * decoder, until the replies to these are queued and the backpressure check has run. A read
   * can carry thousands of small requests, each of which may ask for a large reply.
   */
  readonly framesPerTurnMax?: number | undefined;
  /** The read buffer's size (`READ_BUFFER_BYTES_DEFAULT` by default). */
  readonly readBufferBytes?: number | undefined;
  /**
   * The largest write gathered into the connection's reusable buffer (1 MiB by default); larger
   * ones use a buffer of their own. The reusable buffer stays as large as the largest gathered
   * write, so connections that are many (clients) keep it small.
   */
  readonly gatherBytesMax?: number | undefined;
}

export interface ConnectionHandlers {
  /** A complete frame body arrived. */
  onFrame(body: Uint8Array): void;
  /** All frames of one read were handed over: a good moment to act on them together. */
  onReadDone?(): void;
  /** The connection closed; `reason` is set when it closed because of an error. */
  onClose?(reason: string | undefined): void;
}

export class Connection {
  readonly #conn: Deno.Conn;
  readonly #decoder: FrameDecoder;
  #handlers: ConnectionHandlers | undefined;
  #queued: Uint8Array[] = [];
  #queuedBytes = 0;
  /** Bytes handed to the write in flight and not yet written. */
  #writingBytes = 0;
  #writeBufferBytesMax: number;
  #readPauseBytes: number;
  /** Set while reading is paused for backpressure; resolved when the writes drain. */
  #drained: (() => void) | undefined;
  #readBudget: ReadBudget | undefined;
  #framesPerTurnMax: number;
  #readBufferBytes: number;
  /** This connection's part of `#readBudget.bytesUsed`. */
  #budgetBytes = 0;
  /** `Date.now()` when the connection was made. */
  readonly openedAtMs = Date.now();
  /** `Date.now()` when the last whole frame arrived (or the connection opened). */
  lastFrameAtMs = Date.now();
  /** `Date.now()` when the write in flight began, 0 when none is in flight. */
  writeStartedAtMs = 0;
  #flushScheduled = false;
  #writing = false;
  /** Queued frames are gathered here for the one write in flight. */
  #gather: ScratchBuffer;
  #closed = false;
  /** Set by `sendAndClose`: the reason to close with once the queue is written. */
  #closeAfterFlush: string | undefined;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  readonly remote: string;

  constructor(conn: Deno.Conn, options: ConnectionOptions = {}) {
    this.#conn = conn;
    this.#decoder = new FrameDecoder(options.frameBodyBytesMax);
    this.#writeBufferBytesMax = options.writeBufferBytesMax ?? WRITE_BUFFER_BYTES_MAX;
    this.#readPauseBytes = options.readPauseBytes ?? READ_PAUSE_BYTES_DEFAULT;
    this.#readBudget = options.readBudget;
    this.#framesPerTurnMax = options.framesPerTurnMax ?? Infinity;
    this.#readBufferBytes = options.readBufferBytes ?? READ_BUFFER_BYTES_DEFAULT;
    this.#gather = new ScratchBuffer(options.gatherBytesMax ?? GATHER_BUFFER_BYTES_MAX);
    const address = conn.remoteAddr as Deno.NetAddr;
    this.remote = `${address.hostname}:${address.port}`;
    noDelay(conn);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Bytes received and not yet decoded into frames (a partial frame). */
  get bufferedBytes(): number {
    return this.#decoder.bufferedBytes;
  }

  /** Bytes queued or being written to the peer. */
  get pendingWriteBytes(): number {
    return this.#queuedBytes + this.#writingBytes;
  }

  /**
   * Change the limits once the peer has said who it is: they apply from the next frame on
   * (frames are handed over one at a time, see `FrameDecoder.pushEach`).
   */
  setLimits(options: ConnectionOptions): void {
    if (options.frameBodyBytesMax !== undefined) {
      this.#decoder.bodyBytesMax = options.frameBodyBytesMax;
    }
    if (options.writeBufferBytesMax !== undefined) {
      this.#writeBufferBytesMax = options.writeBufferBytesMax;
    }
    if (options.readPauseBytes !== undefined) this.#readPauseBytes = options.readPauseBytes;
    if (options.framesPerTurnMax !== undefined) this.#framesPerTurnMax = options.framesPerTurnMax;
    if (options.readBufferBytes !== undefined) this.#readBufferBytes = options.readBufferBytes;
    if (options.gatherBytesMax !== undefined) {
      this.#gather = new ScratchBuffer(options.gatherBytesMax);
    }
    if (options.readBudget !== undefined && options.readBudget !== this.#readBudget) {
      this.#accountBuffered(0);
      this.#readBudget = options.readBudget;
      this.#accountBuffered(this.#decoder.bufferedBytes);
    }
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
    if (this.#queuedBytes + this.#writingBytes > this.#writeBufferBytesMax) {
      this.close(`peer too slow: more than ${this.#writeBufferBytesMax} bytes queued for it`);
      return;
    }
    if (!this.#flushScheduled && !this.#writing) {
      this.#flushScheduled = true;
      queueMicrotask(() => this.#flush());
    }
  }

  /**
   * Send one last frame (a refusal that says why) and close once it is written, or at once if the
   * peer does not read it. Frames that arrive meanwhile are ignored.
   */
  sendAndClose(body: Uint8Array, reason: string): void {
    if (this.#closed || this.#closeAfterFlush !== undefined) return;
    this.send(body);
    this.#closeAfterFlush = reason;
    // A peer that does not read cannot hold the connection open.
    this.#closeTimer = setTimeout(() => this.close(reason), CLOSE_AFTER_FLUSH_MS_MAX);
  }

  close(reason?: string): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#closeTimer !== undefined) clearTimeout(this.#closeTimer);
    this.#queued = [];
    this.#queuedBytes = 0;
    this.#decoder.fail("closed");
    this.#accountBuffered(0);
    this.#drained?.();
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
        this.#writingBytes = total;
        this.writeStartedAtMs = Date.now();
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
        this.#writingBytes = 0;
      }
    } catch (error) {
      this.close(`write failed: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      this.#writing = false;
      this.#writingBytes = 0;
      this.writeStartedAtMs = 0;
      if (this.#drained !== undefined && this.pendingWriteBytes < this.#readPauseBytes) {
        this.#drained();
      }
      if (this.#closeAfterFlush !== undefined && this.#queued.length === 0 && !this.#closed) {
        // A lingering close: closing a socket with unread input makes the kernel reset the
        // connection, and the peer may lose the frame that says why. Shut the sending side and
        // discard input until the peer closes (or the timer set by sendAndClose fires).
        try {
          this.#conn.closeWrite();
        } catch {
          this.close(this.#closeAfterFlush);
        }
      }
    }
  }

  /** Keep `#readBudget.bytesUsed` equal to the sum of its connections' partial frames. */
  #accountBuffered(bytes: number): void {
    const budget = this.#readBudget;
    if (budget === undefined) return;
    budget.bytesUsed += bytes - this.#budgetBytes;
    this.#budgetBytes = bytes;
    if (bytes > 0 && budget.bytesUsed > budget.bytesMax) budget.onOverBudget();
  }

  async #readLoop(): Promise<void> {
    let buffer = new Uint8Array(this.#readBufferBytes);
    let frames = 0;
    const onBody = (body: Uint8Array) => {
      if (this.#closed || this.#closeAfterFlush !== undefined) return false;
      IO_COUNTERS.framesIn++;
      this.#handlers!.onFrame(body);
      return !this.#closed && ++frames < this.#framesPerTurnMax;
    };
    try {
      while (!this.#closed) {
        if (this.pendingWriteBytes >= this.#readPauseBytes) {
          // Backpressure: read nothing more from a peer that does not read what it asked for.
          await new Promise<void>((resolve) => this.#drained = resolve);
          this.#drained = undefined;
          continue;
        }
        let error: FrameError | undefined;
        if (frames >= this.#framesPerTurnMax) {
          // Frames left over from the last turn: let the replies to the last ones be queued
          // first (the node handles effects in a microtask queued before this continuation).
          await Promise.resolve();
          if (this.#closed) return;
          if (this.pendingWriteBytes >= this.#readPauseBytes) continue;
          frames = 0;
          error = this.#decoder.pushEach(EMPTY_CHUNK, onBody);
        } else {
          // `setLimits` may have changed the size (the handshake is over).
          if (buffer.length !== this.#readBufferBytes) {
            buffer = new Uint8Array(this.#readBufferBytes);
          }
          const n = await this.#conn.read(buffer);
          if (n === null) break;
          if (this.#closeAfterFlush !== undefined) continue; // Discarded: see sendAndClose.
          IO_COUNTERS.reads++;
          IO_COUNTERS.bytesIn += n;
          frames = 0;
          // The decoder may keep views of what it is given, so hand it its own copy.
          error = this.#decoder.pushEach(buffer.slice(0, n), onBody);
        }
        if (this.#closed) return;
        if (error !== undefined) {
          this.close(`bad frame from ${this.remote}: ${error.error}`);
          return;
        }
        // Once per read, not per frame: a read that completed no frame does not count as
        // activity, so a peer that trickles a byte at a time still reaches the idle timeout.
        if (frames > 0) this.lastFrameAtMs = Date.now();
        this.#accountBuffered(this.#decoder.bufferedBytes);
        if (this.#closed) return;
        this.#handlers!.onReadDone?.();
      }
      this.close(this.#closeAfterFlush);
    } catch (error) {
      if (this.#closed) return;
      this.close(`read failed: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
}
