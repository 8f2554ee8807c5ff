/**
 * Parsing for the interactive client (`vstamp repl`), in the style of redis-cli: a line is split
 * into arguments, the first names the command (case-insensitive), and the rest are keys and
 * values as raw bytes.
 *
 * Arguments are bytes, not text, so that any key or value can be typed: plain characters become
 * their UTF-8 bytes, and inside double quotes `\xHH` is one arbitrary byte. `quoteBytes` is the
 * inverse, so that every stored value can be shown in a form that can be pasted back.
 *
 * Errors are returned, not thrown, as text without redis-cli's `(error) ` prefix; the REPL adds it.
 * The module has no imports, so that it stays pure and loads without any permission.
 *
 * @module
 */
/** One parsed REPL line. */
export type ReplCommand =
  | { readonly kind: "set"; readonly key: Uint8Array; readonly value: Uint8Array }
  | { readonly kind: "get"; readonly key: Uint8Array }
  | { readonly kind: "del"; readonly key: Uint8Array }
  | { readonly kind: "size" }
  | { readonly kind: "help"; readonly topic?: string }
  | { readonly kind: "quit" }
  | { readonly kind: "empty" };

/** The commands the REPL understands, in the order help lists them. */
export const REPL_COMMANDS: readonly string[] = ["SET", "GET", "DEL", "SIZE", "HELP", "QUIT"];

/** A command name quoted in an error is cut to this many characters, as redis does. */
export const COMMAND_DISPLAY_CHARS_MAX = 64;

/** The tokenizer error for a quote that is never closed, worded as redis-cli's. */
export const UNBALANCED_QUOTES = "unbalanced quotes";

/** The tokenizer error for text glued to a closing quote, as in `"a"b`. */
export const CLOSING_QUOTE_NOT_SEPARATED =
  "a closing quote must be followed by a space or the end of the line";

/** Other spellings accepted for a command; redis-cli also leaves on `exit`. */
const COMMAND_ALIASES: Readonly<Record<string, string>> = { EXIT: "QUIT" };

/** Usage, summary, description and example of each command, for `help`. */
interface CommandHelp {
  readonly usage: string;
  readonly summary: string;
  /** Lines of at most 76 characters, so that help fits an 80-column terminal when indented. */
  readonly description: readonly string[];
  readonly example: string;
}

const COMMAND_HELP: Readonly<Record<string, CommandHelp>> = {
  SET: {
    usage: "SET key value",
    summary: "Store value under key; replies with the value.",
    description: [
      "Stores value under key, replacing any previous value, and replies with the",
      "value. Keys and values are any bytes; the server rejects ones over its size",
      "limits.",
    ],
    example: 'SET greeting "hello world"',
  },
  GET: {
    usage: "GET key",
    summary: "Reply with the value stored under key, or (nil).",
    description: ["Replies with the value stored under key, or (nil) if there is none."],
    example: "GET greeting",
  },
  DEL: {
    usage: "DEL key",
    summary: "Remove key; replies (integer) 1 if it existed, else 0.",
    description: [
      "Removes key and its value. Replies (integer) 1 if the key existed,",
      "(integer) 0 if it did not.",
    ],
    example: "DEL greeting",
  },
  SIZE: {
    usage: "SIZE",
    summary: "Reply with the number of keys in the store.",
    description: ["Replies with the number of keys in the store, as (integer) n."],
    example: "SIZE",
  },
  HELP: {
    usage: "HELP [command]",
    summary: "List the commands, or describe one.",
    description: [
      "Without an argument, lists every command; with one, shows its usage,",
      "description and an example.",
    ],
    example: "HELP SET",
  },
  QUIT: {
    usage: "QUIT",
    summary: "Leave the client (EXIT also works).",
    description: ["Closes the connection and leaves the client. EXIT does the same."],
    example: "QUIT",
  },
};

/** How many arguments, after the command name, each command takes. */
const ARITY: Readonly<Record<string, { readonly min: number; readonly max: number }>> = {
  SET: { min: 2, max: 2 },
  GET: { min: 1, max: 1 },
  DEL: { min: 1, max: 1 },
  SIZE: { min: 0, max: 0 },
  HELP: { min: 0, max: 1 },
  QUIT: { min: 0, max: 0 },
};

const BACKSLASH = 0x5c;
const DOUBLE_QUOTE = 0x22;
const SINGLE_QUOTE = 0x27;

/** The characters that separate arguments: C's isspace, as redis-cli uses. */
const WHITESPACE = new Set([" ", "\t", "\n", "\r", "\v", "\f"]);

/** The escapes redis-cli understands inside double quotes, besides `\xHH`. */
const ESCAPES: Readonly<Record<string, number>> = {
  n: 0x0a,
  r: 0x0d,
  t: 0x09,
  b: 0x08,
  a: 0x07,
};

const HEX_DIGIT = /^[0-9A-Fa-f]$/;

/**
 * Characters shown as themselves in quoted output: letters, marks, numbers, punctuation, symbols
 * and the plain space. Control, format and unassigned characters and other separators are
 * escaped, since printed raw they could drive the terminal or hide in the output.
 */
const PRINTABLE_CHARACTER = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]$/u;

/** Printable ASCII that needs no quoting to stay one argument. */
const BARE_ARGUMENT = /^[!#-&(-[\]-~]+$/;

const UTF8_STRICT = new TextDecoder("utf-8", { fatal: true });
/** Decodes a help topic; invalid bytes become U+FFFD, which then names no command. */
const UTF8_LENIENT = new TextDecoder("utf-8");

/** Appends the UTF-8 encoding of one code point; a lone surrogate becomes U+FFFD, as TextEncoder. */
function pushUtf8(out: number[], codePoint: number): void {
  const point = codePoint >= 0xd800 && codePoint <= 0xdfff ? 0xfffd : codePoint;
  if (point < 0x80) {
    out.push(point);
  } else if (point < 0x800) {
    out.push(0xc0 | (point >> 6), 0x80 | (point & 0x3f));
  } else if (point < 0x10000) {
    out.push(0xe0 | (point >> 12), 0x80 | ((point >> 6) & 0x3f), 0x80 | (point & 0x3f));
  } else {
    out.push(
      0xf0 | (point >> 18),
      0x80 | ((point >> 12) & 0x3f),
      0x80 | ((point >> 6) & 0x3f),
      0x80 | (point & 0x3f),
    );
  }
}

/**
 * Splits a line into arguments the way redis-cli does. Whitespace separates arguments. Inside
 * double quotes, `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\a` and `\xHH` (any byte) are escapes, and a
 * backslash before any other character stands for that character. Inside single quotes everything
 * is literal except `\'`. A quote may start mid-argument (`a"b c"` is `ab c`), but a closing quote
 * must end the argument. Each argument is returned as bytes: characters as UTF-8, `\xHH` as is.
 */
export function tokenize(line: string): Uint8Array[] | { readonly error: string } {
  const chars = Array.from(line);
  const tokens: Uint8Array[] = [];
  let i = 0;
  for (;;) {
    while (i < chars.length && WHITESPACE.has(chars[i]!)) i++;
    if (i >= chars.length) return tokens;
    const bytes: number[] = [];
    let quote: "none" | "double" | "single" = "none";
    let ended = false;
    while (!ended) {
      const char = chars[i];
      if (quote === "none") {
        if (char === undefined || WHITESPACE.has(char)) {
          ended = true;
        } else if (char === '"') {
          quote = "double";
          i++;
        } else if (char === "'") {
          quote = "single";
          i++;
        } else {
          pushUtf8(bytes, char.codePointAt(0)!);
          i++;
        }
        continue;
      }
      if (char === undefined) return { error: UNBALANCED_QUOTES };
      const next = chars[i + 1];
      if (quote === "double") {
        const high = chars[i + 2];
        const low = chars[i + 3];
        if (
          char === "\\" && next === "x" && high !== undefined && low !== undefined &&
          HEX_DIGIT.test(high) && HEX_DIGIT.test(low)
        ) {
          bytes.push(parseInt(high + low, 16));
          i += 4;
        } else if (char === "\\" && next !== undefined) {
          const escaped = own(ESCAPES, next);
          if (escaped !== undefined) bytes.push(escaped);
          else pushUtf8(bytes, next.codePointAt(0)!);
          i += 2;
        } else if (char === '"') {
          if (next !== undefined && !WHITESPACE.has(next)) {
            return { error: CLOSING_QUOTE_NOT_SEPARATED };
          }
          i++;
          ended = true;
        } else {
          pushUtf8(bytes, char.codePointAt(0)!);
          i++;
        }
      } else {
        if (char === "\\" && next === "'") {
          bytes.push(SINGLE_QUOTE);
          i += 2;
        } else if (char === "'") {
          if (next !== undefined && !WHITESPACE.has(next)) {
            return { error: CLOSING_QUOTE_NOT_SEPARATED };
          }
          i++;
          ended = true;
        } else {
          pushUtf8(bytes, char.codePointAt(0)!);
          i++;
        }
      }
    }
    tokens.push(Uint8Array.from(bytes));
  }
}

/** The escape sequence for one byte inside double quotes. */
function escapeByte(byte: number): string {
  switch (byte) {
    case BACKSLASH:
      return "\\\\";
    case DOUBLE_QUOTE:
      return '\\"';
    case 0x0a:
      return "\\n";
    case 0x0d:
      return "\\r";
    case 0x09:
      return "\\t";
    default:
      return byte >= 0x20 && byte <= 0x7e
        ? String.fromCharCode(byte)
        : `\\x${byte.toString(16).padStart(2, "0")}`;
  }
}

/**
 * Writes bytes as one REPL argument that `tokenize` reads back as the same bytes: bare when it is
 * plain printable ASCII, otherwise in double quotes with escapes. Valid UTF-8 keeps its printable
 * characters as they are; every other non-ASCII or control byte is written `\xHH`.
 */
export function quoteBytes(bytes: Uint8Array): string {
  let text: string | undefined;
  try {
    text = UTF8_STRICT.decode(bytes);
  } catch {
    text = undefined;
  }
  if (text !== undefined && BARE_ARGUMENT.test(text)) return text;
  let out = '"';
  if (text === undefined) {
    for (const byte of bytes) out += escapeByte(byte);
  } else {
    for (const char of text) {
      if (char.length === 1 && char.charCodeAt(0) < 0x80) {
        out += escapeByte(char.charCodeAt(0));
      } else if (PRINTABLE_CHARACTER.test(char)) {
        out += char;
      } else {
        const encoded: number[] = [];
        pushUtf8(encoded, char.codePointAt(0)!);
        for (const byte of encoded) out += escapeByte(byte);
      }
    }
  }
  return `${out}"`;
}

/** ASCII-only upper case, so that no non-ASCII name folds into a command (as `ſet` would). */
function asciiUpper(bytes: Uint8Array): string {
  let out = "";
  for (const byte of bytes) {
    out += String.fromCharCode(byte >= 0x61 && byte <= 0x7a ? byte - 0x20 : byte);
  }
  return out;
}

/** A record's own entry, never one inherited from Object.prototype (`constructor`, ...). */
function own<T>(record: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

/** A command name as typed, for error messages: as text if printable, quoted otherwise. */
function displayName(bytes: Uint8Array): string {
  let text: string | undefined;
  try {
    text = UTF8_STRICT.decode(bytes);
  } catch {
    text = undefined;
  }
  if (text !== undefined && Array.from(text).every((char) => PRINTABLE_CHARACTER.test(char))) {
    const chars = Array.from(text);
    return chars.length > COMMAND_DISPLAY_CHARS_MAX
      ? `${chars.slice(0, COMMAND_DISPLAY_CHARS_MAX).join("")}...`
      : text;
  }
  return bytes.length > COMMAND_DISPLAY_CHARS_MAX
    ? `${quoteBytes(bytes.subarray(0, COMMAND_DISPLAY_CHARS_MAX))}...`
    : quoteBytes(bytes);
}

/** The error a command gives for the wrong number of arguments, worded as redis does. */
export function wrongArguments(name: string): { readonly error: string } {
  return { error: `ERR wrong number of arguments for '${name.toLowerCase()}' command` };
}

/**
 * Parses one REPL line into a command. Errors are redis-style text without the `(error) ` prefix:
 * `ERR wrong number of arguments for 'set' command`, `ERR unknown command 'FOO', ...`; a
 * tokenizer error (`unbalanced quotes`) is returned as `tokenize` gives it.
 */
export function parseReplLine(line: string): ReplCommand | { readonly error: string } {
  const tokens = tokenize(line);
  if ("error" in tokens) return tokens;
  const [first, ...args] = tokens;
  if (first === undefined) return { kind: "empty" };
  const typed = asciiUpper(first);
  const name = own(COMMAND_ALIASES, typed) ?? typed;
  const arity = own(ARITY, name);
  if (arity === undefined) {
    return {
      error: `ERR unknown command '${displayName(first)}', type "help" for the list of commands`,
    };
  }
  if (args.length < arity.min || args.length > arity.max) return wrongArguments(typed);
  const [a, b] = args;
  switch (name) {
    case "SET":
      return { kind: "set", key: a!, value: b! };
    case "GET":
      return { kind: "get", key: a! };
    case "DEL":
      return { kind: "del", key: a! };
    case "SIZE":
      return { kind: "size" };
    case "HELP":
      return a === undefined ? { kind: "help" } : { kind: "help", topic: UTF8_LENIENT.decode(a) };
    default:
      return { kind: "quit" };
  }
}

/**
 * Help text for the key-value store's REPL: without a topic, every command with a one-line
 * summary and the quoting rules; with a command name (any case), its usage, description and
 * example; with an unknown topic, an `ERR` line pointing back at `help`. (`appHelpText` for the
 * store's commands.)
 */
export function helpText(topic?: string): string {
  const commands = (["SET", "GET", "DEL", "SIZE"] as const).map((name) => ({
    name,
    ...kvCommandHelp(name),
  }));
  return appHelpText(commands, topic);
}

// ---------------------------------------------------------------- any app's commands

/** What the REPL needs of an app's command to parse and describe it (see `AppCommand`). */
export interface ReplAppCommand {
  readonly name: string;
  readonly usage: string;
  readonly help: string;
  readonly example?: string;
}

/** One line for an app's REPL: one of its commands with its arguments, or the REPL's own. */
export type ReplAppLine<C extends ReplAppCommand> =
  | {
    readonly kind: "command";
    readonly command: C;
    /** The arguments as text (invalid UTF-8 replaced by U+FFFD). */
    readonly args: readonly string[];
    /** The same arguments as the bytes typed. */
    readonly raw: readonly Uint8Array[];
  }
  | { readonly kind: "help"; readonly topic?: string }
  | { readonly kind: "quit" }
  | { readonly kind: "empty" };

/**
 * Parses one REPL line against an app's commands: tokenized as `tokenize` does, the first
 * argument names the command (ASCII case-insensitive). HELP, QUIT and EXIT are the REPL's own.
 */
export function parseAppLine<C extends ReplAppCommand>(
  line: string,
  commands: readonly C[],
): ReplAppLine<C> | { readonly error: string } {
  const tokens = tokenize(line);
  if ("error" in tokens) return tokens;
  const [first, ...raw] = tokens;
  if (first === undefined) return { kind: "empty" };
  const typed = asciiUpper(first);
  const name = own(COMMAND_ALIASES, typed) ?? typed;
  if (name === "QUIT") return raw.length === 0 ? { kind: "quit" } : wrongArguments(typed);
  if (name === "HELP") {
    if (raw.length > 1) return wrongArguments(typed);
    return raw[0] === undefined ? { kind: "help" } : {
      kind: "help",
      topic: UTF8_LENIENT.decode(raw[0]),
    };
  }
  const command = commands.find((c) => c.name.toUpperCase() === name);
  if (command === undefined) {
    return {
      error: `ERR unknown command '${displayName(first)}', type "help" for the list of commands`,
    };
  }
  return { kind: "command", command, args: raw.map((arg) => UTF8_LENIENT.decode(arg)), raw };
}

/**
 * Help for an app's REPL, in the form of `helpText`: without a topic, every command with the
 * first line of its help, then HELP and QUIT and the quoting rules; with a command name, its
 * usage, the rest of its help and its example.
 */
export function appHelpText(commands: readonly ReplAppCommand[], topic?: string): string {
  const replOwn = (name: "HELP" | "QUIT"): ReplAppCommand => {
    const help = COMMAND_HELP[name]!;
    return { ...help, name, help: [help.summary, ...help.description].join("\n") };
  };
  const all: ReplAppCommand[] = [...commands, replOwn("HELP"), replOwn("QUIT")];
  if (topic === undefined) {
    const width = Math.max(...all.map((c) => c.usage.length));
    return [
      "Commands (case-insensitive):",
      ...all.map((c) => `  ${c.usage.padEnd(width)}  ${c.help.split("\n", 1)[0]}`),
      "",
      'Arguments are separated by spaces; quote one that holds spaces: "a b".',
      'Inside double quotes, \\" \\\\ \\n \\r \\t and \\xHH (any byte) are escapes;',
      "inside single quotes everything is literal except \\'.",
      'Type "help <command>" for details.',
    ].join("\n");
  }
  const upper = topic.replace(/[a-z]/g, (c) => c.toUpperCase());
  const name = own(COMMAND_ALIASES, upper) ?? upper;
  const command = all.find((c) => c.name.toUpperCase() === name);
  if (command === undefined) {
    const shown = displayName(new TextEncoder().encode(topic));
    return `ERR unknown help topic '${shown}', type "help" for the list of commands`;
  }
  const lines = command.help.split("\n");
  const details = lines.length > 1 ? lines.slice(1) : lines;
  return [
    command.usage,
    ...details.map((line) => `  ${line}`),
    ...(command.example === undefined ? [] : [`  Example: ${command.example}`]),
  ].join("\n");
}

/**
 * The help and the number of arguments of the key-value store's commands, for its app module
 * (`src/app/kv_app.ts`), so that `repl` and `repl --app kv` describe and check them alike.
 */
export function kvCommandHelp(name: "SET" | "GET" | "DEL" | "SIZE"): {
  readonly usage: string;
  readonly help: string;
  readonly example: string;
  readonly arity: number;
} {
  const help = COMMAND_HELP[name]!;
  return {
    usage: help.usage,
    help: [help.summary, ...help.description].join("\n"),
    example: help.example,
    arity: ARITY[name]!.max,
  };
}
