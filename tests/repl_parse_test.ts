import { strict as assert } from "node:assert";
import fc from "fast-check";
import {
  CLOSING_QUOTE_NOT_SEPARATED,
  helpText,
  parseReplLine,
  quoteBytes,
  REPL_COMMANDS,
  tokenize,
  UNBALANCED_QUOTES,
} from "../src/cli/repl_parse.ts";

const RANDOM_BYTES_RUNS = 2_000;
const RANDOM_LINE_RUNS = 2_000;

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values);
const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);

/** Tokenizes and returns the tokens as strings, failing the test on a tokenizer error. */
function tokenTexts(line: string): string[] {
  const tokens = tokenize(line);
  assert.ok(!("error" in tokens), `tokenize(${JSON.stringify(line)}) failed`);
  return tokens.map((token) => new TextDecoder().decode(token));
}

/** Byte strings of every kind: arbitrary bytes, and the UTF-8 of arbitrary Unicode text. */
const byteStrings = fc.oneof(
  fc.uint8Array({ maxLength: 64 }),
  fc.string({ unit: "binary", maxLength: 32 }).map(utf8),
  fc.string({ maxLength: 32 }).map(utf8),
);

Deno.test("tokenize splits on any whitespace and ignores leading and trailing spaces", () => {
  assert.deepEqual(tokenTexts("  SET   key\tvalue \r\n"), ["SET", "key", "value"]);
  assert.deepEqual(tokenize(""), []);
  assert.deepEqual(tokenize(" \t "), []);
});

Deno.test("tokenize keeps spaces inside double and single quotes", () => {
  assert.deepEqual(tokenTexts('set k "a b"'), ["set", "k", "a b"]);
  assert.deepEqual(tokenTexts("set k 'a b'"), ["set", "k", "a b"]);
  assert.deepEqual(tokenTexts('""'), [""]);
  assert.deepEqual(tokenTexts("'' x"), ["", "x"]);
});

Deno.test("tokenize reads escapes inside double quotes", () => {
  assert.deepEqual(tokenTexts('"a\\"b"'), ['a"b']);
  assert.deepEqual(tokenTexts('"a\\\\b"'), ["a\\b"]);
  assert.deepEqual(tokenTexts('"\\n\\r\\t\\b\\a"'), ["\n\r\t\b\x07"]);
  assert.deepEqual(tokenTexts('"\\q"'), ["q"]);
  assert.deepEqual(tokenTexts('"\\x41\\x4a"'), ["AJ"]);
  // An incomplete \x escape is a plain "x", as in redis-cli.
  assert.deepEqual(tokenTexts('"\\x4"'), ["x4"]);
  assert.deepEqual(tokenTexts('"\\xzz"'), ["xzz"]);
});

Deno.test("tokenize turns \\xHH into any byte and characters into UTF-8", () => {
  assert.deepEqual(tokenize('"\\xff\\x00"'), [bytes(0xff, 0x00)]);
  assert.deepEqual(tokenize('"\\xFF"'), [bytes(0xff)]);
  assert.deepEqual(tokenize('"héllo"'), [utf8("héllo")]);
  assert.deepEqual(tokenize("héllo 日本 😀"), [utf8("héllo"), utf8("日本"), utf8("😀")]);
});

Deno.test("tokenize treats single quotes literally except \\'", () => {
  assert.deepEqual(tokenTexts("'a\\nb'"), ["a\\nb"]);
  assert.deepEqual(tokenTexts("'it\\'s'"), ["it's"]);
  assert.deepEqual(tokenTexts("'say \"hi\"'"), ['say "hi"']);
  assert.deepEqual(tokenTexts('"it\'s"'), ["it's"]);
});

Deno.test("tokenize keeps backslashes outside quotes and joins a quote started mid-argument", () => {
  assert.deepEqual(tokenTexts("a\\nb"), ["a\\nb"]);
  assert.deepEqual(tokenTexts('a"b c"'), ["ab c"]);
});

Deno.test("tokenize rejects unbalanced quotes", () => {
  for (const line of ['SET k "abc', "SET k 'abc", '"', 'SET k "abc\\"', 'SET k "abc\\']) {
    assert.deepEqual(tokenize(line), { error: UNBALANCED_QUOTES }, line);
  }
  assert.equal(UNBALANCED_QUOTES, "unbalanced quotes");
});

Deno.test("tokenize rejects text glued to a closing quote", () => {
  for (const line of ['"a"b', "'a'b", 'SET "k""v"']) {
    assert.deepEqual(tokenize(line), { error: CLOSING_QUOTE_NOT_SEPARATED }, line);
  }
});

Deno.test("tokenize never throws on random lines", () => {
  fc.assert(
    fc.property(fc.string({ unit: "binary", maxLength: 64 }), (line) => {
      const result = tokenize(line);
      assert.ok(Array.isArray(result) || typeof result.error === "string");
    }),
    { numRuns: RANDOM_LINE_RUNS },
  );
});

Deno.test("parseReplLine parses every command, case-insensitively", () => {
  assert.deepEqual(parseReplLine("SET key value"), {
    kind: "set",
    key: utf8("key"),
    value: utf8("value"),
  });
  assert.deepEqual(parseReplLine('set k "a b"'), {
    kind: "set",
    key: utf8("k"),
    value: utf8("a b"),
  });
  assert.deepEqual(parseReplLine("GET k"), { kind: "get", key: utf8("k") });
  assert.deepEqual(parseReplLine("gEt k"), { kind: "get", key: utf8("k") });
  assert.deepEqual(parseReplLine("DEL k"), { kind: "del", key: utf8("k") });
  assert.deepEqual(parseReplLine("SIZE"), { kind: "size" });
  assert.deepEqual(parseReplLine("size"), { kind: "size" });
  assert.deepEqual(parseReplLine("help"), { kind: "help" });
  assert.deepEqual(parseReplLine("help SET"), { kind: "help", topic: "SET" });
  assert.deepEqual(parseReplLine("HELP get"), { kind: "help", topic: "get" });
  assert.deepEqual(parseReplLine("QUIT"), { kind: "quit" });
  assert.deepEqual(parseReplLine("quit"), { kind: "quit" });
  assert.deepEqual(parseReplLine("exit"), { kind: "quit" });
});

Deno.test("parseReplLine gives empty for a blank line", () => {
  assert.deepEqual(parseReplLine(""), { kind: "empty" });
  assert.deepEqual(parseReplLine("   \t"), { kind: "empty" });
});

Deno.test("parseReplLine stores exact bytes from \\xHH and UTF-8 from text", () => {
  assert.deepEqual(parseReplLine('SET k "\\xff\\x00"'), {
    kind: "set",
    key: utf8("k"),
    value: bytes(0xff, 0x00),
  });
  assert.deepEqual(parseReplLine('SET k "héllo"'), {
    kind: "set",
    key: utf8("k"),
    value: bytes(0x68, 0xc3, 0xa9, 0x6c, 0x6c, 0x6f),
  });
  assert.deepEqual(parseReplLine('SET "" ""'), { kind: "set", key: bytes(), value: bytes() });
});

Deno.test("parseReplLine reports wrong numbers of arguments like redis", () => {
  const cases: readonly [string, string][] = [
    ["SET key value with spaces", "set"],
    ["SET key", "set"],
    ["set", "set"],
    ["GET", "get"],
    ["GET a b", "get"],
    ["DEL", "del"],
    ["DEL a b", "del"],
    ["SIZE x", "size"],
    ["HELP a b", "help"],
    ["QUIT now", "quit"],
    ["EXIT now", "exit"],
  ];
  for (const [line, name] of cases) {
    assert.deepEqual(
      parseReplLine(line),
      { error: `ERR wrong number of arguments for '${name}' command` },
      line,
    );
  }
});

Deno.test("parseReplLine reports an unknown command as typed", () => {
  assert.deepEqual(parseReplLine("FOO"), {
    error: `ERR unknown command 'FOO', type "help" for the list of commands`,
  });
  assert.deepEqual(parseReplLine("foo bar baz"), {
    error: `ERR unknown command 'foo', type "help" for the list of commands`,
  });
  // Only ASCII letters fold: the long s would otherwise upper-case to "SET".
  assert.deepEqual(parseReplLine("ſet k v"), {
    error: `ERR unknown command 'ſet', type "help" for the list of commands`,
  });
  assert.deepEqual(parseReplLine('"\\x01x"'), {
    error: `ERR unknown command '"\\x01x"', type "help" for the list of commands`,
  });
  assert.deepEqual(parseReplLine("constructor"), {
    error: `ERR unknown command 'constructor', type "help" for the list of commands`,
  });
  const long = parseReplLine("x".repeat(500));
  assert.ok("error" in long);
  assert.ok(long.error.length < 200, "a long command name should be cut short");
});

Deno.test("parseReplLine passes tokenizer errors through", () => {
  assert.deepEqual(parseReplLine('SET k "abc'), { error: UNBALANCED_QUOTES });
  assert.deepEqual(parseReplLine('SET k "a"b'), { error: CLOSING_QUOTE_NOT_SEPARATED });
});

Deno.test("quoteBytes leaves plain ASCII bare and quotes everything else", () => {
  assert.equal(quoteBytes(utf8("key")), "key");
  assert.equal(quoteBytes(utf8("a-b_c.d:1")), "a-b_c.d:1");
  assert.equal(quoteBytes(bytes()), '""');
  assert.equal(quoteBytes(utf8("a b")), '"a b"');
  assert.equal(quoteBytes(utf8('say "hi"\\')), '"say \\"hi\\"\\\\"');
  assert.equal(quoteBytes(utf8("it's")), '"it\'s"');
  assert.equal(quoteBytes(utf8("a\nb\r\t")), '"a\\nb\\r\\t"');
  assert.equal(quoteBytes(bytes(0xff, 0x00)), '"\\xff\\x00"');
  assert.equal(quoteBytes(utf8("héllo")), '"héllo"');
  // Terminal-driving characters are escaped even inside valid UTF-8.
  assert.equal(quoteBytes(utf8("a\x1b[2Jb")), '"a\\x1b[2Jb"');
  assert.equal(quoteBytes(utf8("\u202e")), '"\\xe2\\x80\\xae"');
});

Deno.test("quoteBytes output tokenizes back to the same bytes", () => {
  fc.assert(
    fc.property(byteStrings, (value) => {
      assert.deepEqual(tokenize(quoteBytes(value)), [value]);
    }),
    { numRuns: RANDOM_BYTES_RUNS },
  );
});

Deno.test("parseReplLine SET with quoted random keys and values gives back the same bytes", () => {
  fc.assert(
    fc.property(byteStrings, byteStrings, (key, value) => {
      assert.deepEqual(parseReplLine(`SET ${quoteBytes(key)} ${quoteBytes(value)}`), {
        kind: "set",
        key,
        value,
      });
    }),
    { numRuns: RANDOM_BYTES_RUNS },
  );
});

Deno.test("helpText overview lists every command with a summary", () => {
  const text = helpText();
  for (const name of REPL_COMMANDS) {
    assert.match(text, new RegExp(`^  ${name}\\b.*\\S$`, "m"), name);
  }
  assert.match(text, /\\xHH/);
  assert.deepEqual([...REPL_COMMANDS], ["SET", "GET", "DEL", "SIZE", "HELP", "QUIT"]);
});

Deno.test("helpText for a command gives usage, description and example in any case", () => {
  const text = helpText("set");
  assert.equal(text, helpText("SET"));
  assert.match(text, /^SET key value\n/);
  assert.match(text, /Example: SET greeting "hello world"/);
  for (const name of REPL_COMMANDS) {
    const help = helpText(name);
    assert.ok(help.startsWith(name), name);
    assert.match(help, /Example: /, name);
  }
  assert.equal(helpText("exit"), helpText("QUIT"));
});

Deno.test("helpText for an unknown topic says so and points at help", () => {
  assert.equal(
    helpText("FOO"),
    `ERR unknown help topic 'FOO', type "help" for the list of commands`,
  );
  assert.match(helpText("constructor"), /^ERR unknown help topic 'constructor'/);
});

Deno.test("every example in the help parses", () => {
  for (const name of REPL_COMMANDS) {
    const example = /Example: (.*)$/m.exec(helpText(name))?.[1];
    assert.ok(example !== undefined, name);
    const command = parseReplLine(example);
    assert.ok(!("error" in command), `${name}: ${example}`);
    assert.equal(command.kind, name.toLowerCase());
  }
});

Deno.test("helpText fits an 80-column terminal", () => {
  for (const topic of [undefined, ...REPL_COMMANDS]) {
    for (const line of helpText(topic).split("\n")) {
      assert.ok(line.length <= 80, `${topic ?? "overview"}: ${line}`);
    }
  }
});
