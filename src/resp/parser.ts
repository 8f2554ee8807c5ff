/**
 * An incremental parser of RESP2 requests (the Redis protocol), as Redis reads them: arrays of
 * bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\na\r\n`, what every client library sends) and inline
 * commands (`GET a\r\n`, what a person types into telnet). Bytes arrive in chunks cut anywhere;
 * the parser keeps the command it is in the middle of and returns every command completed so far.
 *
 * Every byte is untrusted: every length is bounded before anything is allocated for it, and bad
 * input gives a protocol error, after which Redis replies `-ERR Protocol error: …` and closes the
 * connection (the stream cannot be resynchronised). The parser does no I/O.
 *
 * @module
 */

/** One command: its arguments as bytes, the command name first. */
export type RespCommand = Uint8Array[];

/** The limits of one command. */
export interface RespLimits {
  /** Largest bulk string: one argument (Redis: proto-max-bulk-len). */
  readonly bulkBytesMax: number;
  /** Most arguments in one command (Redis: 1024 * 1024). */
  readonly argumentsMax: number;
  /** Most bytes of arguments in one command, all together. */
  readonly commandBytesMax: number;
  /** Longest inline command or header line (Redis: PROTO_INLINE_MAX_SIZE, 64 KiB). */
  readonly lineBytesMax: number;
}

/**
 * Defaults sized to the key-value store: no key or value exceeds 1 MiB (`VALUE_SIZE_MAX`), and
 * no operation the group accepts exceeds a few MiB, so a larger argument could never be used.
 */
export const RESP_LIMITS_DEFAULT: RespLimits = {
  bulkBytesMax: 1024 * 1024 + 1024,
  argumentsMax: 64 * 1024,
  commandBytesMax: 8 * 1024 * 1024,
  lineBytesMax: 64 * 1024,
};

/** The outcome of `feed`: the commands completed, and the protocol error that ended the stream. */
export interface RespFeedResult {
  readonly commands: RespCommand[];
  /** Set once the input is not RESP: reply `-ERR Protocol error: <error>` and close. */
  readonly error?: string;
}

const CR = 0x0d;
/** The size of a buffer made for a cut command, and the largest kept across feeds beyond it. */
const BUFFER_BYTES_INITIAL = 4 * 1024;
const BUFFER_BYTES_KEPT_MAX = 64 * 1024;
const EMPTY = new Uint8Array(0);
const LF = 0x0a;

/** Where the parser is inside the current command. */
type State =
  | { readonly kind: "start" }
  | { readonly kind: "array"; readonly count: number; readonly args: Uint8Array[]; bytes: number }
  | {
    readonly kind: "bulk";
    readonly count: number;
    readonly args: Uint8Array[];
    bytes: number;
    readonly length: number;
  };

export class RespParser {
  readonly #limits: RespLimits;
  /**
   * Unparsed bytes: `#buffer[#start, #end)`. Between feeds it is owned, and empty unless a command
   * was cut by a chunk's end; during a feed that found it empty, it is the caller's chunk itself.
   */
  #buffer: Uint8Array = EMPTY;
  #borrowed = false;
  #start = 0;
  #end = 0;
  #state: State = { kind: "start" };
  #error: string | undefined;
  /** How far past `#start` the current line was already searched for its end (see `#line`). */
  #lineScanned = 0;

  constructor(limits: RespLimits = RESP_LIMITS_DEFAULT) {
    this.#limits = limits;
  }

  /** The protocol error that stopped this parser, if one did. */
  get error(): string | undefined {
    return this.#error;
  }

  /** Take the next chunk of the stream; returns every command it completed. */
  feed(chunk: Uint8Array): RespFeedResult {
    const commands: RespCommand[] = [];
    if (this.#error !== undefined) return { commands, error: this.#error };
    this.#append(chunk);
    for (;;) {
      const outcome = this.#step();
      if (outcome === undefined) break; // Needs more bytes.
      if (typeof outcome === "string") {
        this.#error = outcome;
        this.#buffer = EMPTY;
        this.#borrowed = false;
        this.#start = this.#end = 0;
        return { commands, error: outcome };
      }
      if (outcome !== true) commands.push(outcome);
    }
    this.#settle();
    return { commands };
  }

  #append(chunk: Uint8Array): void {
    const pending = this.#end - this.#start;
    if (pending === 0) {
      // The usual case, a chunk of whole commands: parse it where it is, copying nothing.
      this.#buffer = chunk;
      this.#borrowed = true;
      this.#start = 0;
      this.#end = chunk.byteLength;
      return;
    }
    if (this.#end + chunk.byteLength > this.#buffer.byteLength) {
      // Compact, and grow only as far as the unparsed bytes need: at most one bulk string or
      // one line beyond the limits, since complete pieces leave the buffer as they are parsed.
      const needed = pending + chunk.byteLength;
      if (needed > this.#buffer.byteLength) {
        const grown = new Uint8Array(Math.max(needed, 2 * this.#buffer.byteLength));
        grown.set(this.#buffer.subarray(this.#start, this.#end), 0);
        this.#buffer = grown;
      } else {
        this.#buffer.copyWithin(0, this.#start, this.#end);
      }
      this.#start = 0;
      this.#end = pending;
    }
    this.#buffer.set(chunk, this.#end);
    this.#end += chunk.byteLength;
  }

  /**
   * After a feed: keep what is left of a cut command in a buffer of its own (the caller reuses
   * its chunk), and nothing once everything was parsed, so an idle connection holds no buffer
   * and one that sent a large argument gives the memory back.
   */
  #settle(): void {
    const pending = this.#end - this.#start;
    if (pending === 0) {
      this.#buffer = EMPTY;
      this.#start = this.#end = 0;
    } else if (
      this.#borrowed ||
      (this.#buffer.byteLength > BUFFER_BYTES_KEPT_MAX && this.#buffer.byteLength > 4 * pending)
    ) {
      // Room to grow geometrically: a large argument arriving in many small reads is copied a
      // few times in all, not once per read (and a buffer much larger than its bytes shrinks).
      const owned = new Uint8Array(Math.max(2 * pending, BUFFER_BYTES_INITIAL));
      owned.set(this.#buffer.subarray(this.#start, this.#end), 0);
      this.#buffer = owned;
      this.#start = 0;
      this.#end = pending;
    }
    this.#borrowed = false;
  }

  /**
   * Parse one piece: a command (returned), a piece of one (true), more bytes needed (undefined)
   * or a protocol error (its text).
   */
  #step(): RespCommand | true | string | undefined {
    const state = this.#state;
    if (state.kind === "bulk") return this.#bulkBody(state);
    if (this.#start === this.#end) return undefined;
    const line = this.#line();
    if (line === undefined) {
      if (this.#end - this.#start > this.#limits.lineBytesMax) {
        return state.kind === "start" && this.#buffer[this.#start] !== 0x2a
          ? "too big inline request"
          : "too big mbulk count string";
      }
      return undefined;
    }
    const [from, to] = line;
    if (state.kind === "start") {
      if (this.#buffer[from] !== 0x2a) return this.#inline(from, to); // Not '*'.
      const count = parseInteger(this.#buffer, from + 1, to);
      if (count === undefined || count > this.#limits.argumentsMax) {
        return "invalid multibulk length";
      }
      // Redis ignores an empty or null array.
      if (count <= 0) return true;
      this.#state = { kind: "array", count, args: [], bytes: 0 };
      return true;
    }
    // In an array: a bulk string's header.
    if (this.#buffer[from] !== 0x24) {
      return `expected '$', got '${printable(this.#buffer[from]!)}'`;
    }
    const length = parseInteger(this.#buffer, from + 1, to);
    if (length === undefined || length < 0 || length > this.#limits.bulkBytesMax) {
      return "invalid bulk length";
    }
    if (state.bytes + length > this.#limits.commandBytesMax) {
      return `command larger than ${this.#limits.commandBytesMax} bytes`;
    }
    this.#state = { ...state, kind: "bulk", length };
    return true;
  }

  #bulkBody(state: Extract<State, { kind: "bulk" }>): RespCommand | true | string | undefined {
    if (this.#end - this.#start < state.length + 2) return undefined;
    const at = this.#start + state.length;
    if (this.#buffer[at] !== CR || this.#buffer[at + 1] !== LF) {
      return "expected CRLF after a bulk string";
    }
    state.args.push(this.#buffer.slice(this.#start, at));
    this.#start = at + 2;
    const bytes = state.bytes + state.length;
    if (state.args.length === state.count) {
      this.#state = { kind: "start" };
      return state.args;
    }
    this.#state = { kind: "array", count: state.count, args: state.args, bytes };
    return true;
  }

  /**
   * The next line, `[from, to)` without its line end, consumed; undefined if it is incomplete.
   * A line ends with CRLF, or, in an inline command, LF alone (as Redis accepts).
   */
  #line(): [number, number] | undefined {
    const buffer = this.#buffer;
    const limit = Math.min(this.#end, this.#start + this.#limits.lineBytesMax + 2);
    // A line that arrives a byte at a time is searched once in all, not once per byte.
    for (let i = this.#start + this.#lineScanned; i < limit; i++) {
      if (buffer[i] !== LF) continue;
      const from = this.#start;
      const to = i > from && buffer[i - 1] === CR ? i - 1 : i;
      this.#start = i + 1;
      this.#lineScanned = 0;
      return [from, to];
    }
    this.#lineScanned = Math.max(0, limit - this.#start);
    return undefined;
  }

  /** An inline command: arguments separated by spaces, quoted as redis-cli quotes them. */
  #inline(from: number, to: number): RespCommand | true | string {
    const args = splitInline(this.#buffer.subarray(from, to));
    if (args === undefined) return "unbalanced quotes in request";
    if (args.length === 0) return true; // An empty line: ignored, as Redis does.
    if (args.length > this.#limits.argumentsMax) return "invalid multibulk length";
    return args;
  }
}

/** A decimal integer of at most 15 digits (optionally negative), or undefined. */
function parseInteger(bytes: Uint8Array, from: number, to: number): number | undefined {
  let at = from;
  const negative = bytes[at] === 0x2d;
  if (negative) at++;
  if (at === to || to - at > 15) return undefined;
  let value = 0;
  for (; at < to; at++) {
    const digit = bytes[at]! - 0x30;
    if (digit < 0 || digit > 9) return undefined;
    value = value * 10 + digit;
  }
  return negative ? -value : value;
}

function printable(byte: number): string {
  return byte >= 0x20 && byte < 0x7f ? String.fromCharCode(byte) : `\\x${byte.toString(16)}`;
}

const SPACE = new Set([0x20, 0x09, 0x0a, 0x0d, 0x0b, 0x0c]);

/**
 * Split an inline command as Redis's `sdssplitargs` does: spaces separate arguments; "double
 * quotes" take \n \r \t \b \a \\ \" and \xHH escapes; 'single quotes' take \' only. A closing
 * quote must be followed by a space or the end. Undefined for unbalanced quotes.
 */
export function splitInline(line: Uint8Array): Uint8Array[] | undefined {
  const args: Uint8Array[] = [];
  let i = 0;
  while (i < line.byteLength) {
    while (i < line.byteLength && SPACE.has(line[i]!)) i++;
    if (i === line.byteLength) break;
    const out: number[] = [];
    const quote = line[i] === 0x22 || line[i] === 0x27 ? line[i]! : undefined;
    if (quote === undefined) {
      while (i < line.byteLength && !SPACE.has(line[i]!)) out.push(line[i++]!);
    } else {
      i++;
      for (;;) {
        if (i >= line.byteLength) return undefined; // No closing quote.
        const byte = line[i]!;
        if (byte === quote) {
          i++;
          if (i < line.byteLength && !SPACE.has(line[i]!)) return undefined;
          break;
        }
        if (byte === 0x5c && i + 1 < line.byteLength) {
          const next = line[i + 1]!;
          if (quote === 0x27) {
            if (next === 0x27) {
              out.push(0x27);
              i += 2;
              continue;
            }
          } else {
            const hex = next === 0x78 && i + 3 < line.byteLength
              ? parseHex(line[i + 2]!, line[i + 3]!)
              : undefined;
            if (hex !== undefined) {
              out.push(hex);
              i += 4;
              continue;
            }
            const escaped = ESCAPES.get(next) ?? next;
            out.push(escaped);
            i += 2;
            continue;
          }
        }
        out.push(byte);
        i++;
      }
    }
    args.push(Uint8Array.from(out));
  }
  return args;
}

const ESCAPES = new Map([[0x6e, 0x0a], [0x72, 0x0d], [0x74, 0x09], [0x62, 0x08], [0x61, 0x07]]);

function parseHex(high: number, low: number): number | undefined {
  const h = hexDigit(high);
  const l = hexDigit(low);
  return h === undefined || l === undefined ? undefined : h * 16 + l;
}

function hexDigit(byte: number): number | undefined {
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  if (byte >= 0x61 && byte <= 0x66) return byte - 0x57;
  if (byte >= 0x41 && byte <= 0x46) return byte - 0x37;
  return undefined;
}
