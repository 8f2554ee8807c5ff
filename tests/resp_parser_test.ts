import assert from "node:assert/strict";
import fc from "fast-check";
import { concatBytes } from "../src/lib/bytes.ts";
import {
  RESP_LIMITS_DEFAULT,
  type RespCommand,
  RespParser,
  splitInline,
} from "../src/resp/parser.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A command as a client library sends it: an array of bulk strings. */
function encodeCommand(args: readonly Uint8Array[]): Uint8Array {
  const parts: Uint8Array[] = [encoder.encode(`*${args.length}\r\n`)];
  for (const arg of args) {
    parts.push(encoder.encode(`$${arg.byteLength}\r\n`), arg, encoder.encode("\r\n"));
  }
  return concatBytes(parts);
}

function texts(commands: readonly RespCommand[]): string[][] {
  return commands.map((args) => args.map((arg) => decoder.decode(arg)));
}

function parseAll(text: string, parser = new RespParser()) {
  return parser.feed(encoder.encode(text));
}

Deno.test("resp parser reads arrays of bulk strings", () => {
  const result = parseAll(
    "*3\r\n$3\r\nSET\r\n$1\r\na\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n",
  );
  assert.equal(result.error, undefined);
  assert.deepEqual(texts(result.commands), [["SET", "a", "hello"], ["GET", "a"]]);
});

Deno.test("resp parser keeps binary bulk strings intact", () => {
  const value = Uint8Array.of(0, 13, 10, 255, 36, 42);
  const result = new RespParser().feed(encodeCommand([encoder.encode("SET"), value, value]));
  assert.equal(result.error, undefined);
  assert.deepEqual(result.commands, [[encoder.encode("SET"), value, value]]);
});

Deno.test("resp parser reads inline commands with quotes, and ignores empty lines and arrays", () => {
  const result = parseAll("PING\r\n\r\nSET k \"a b\\n\\x41\"\n*0\r\n  get  'it\\'s'  \r\n");
  assert.equal(result.error, undefined);
  assert.deepEqual(texts(result.commands), [["PING"], ["SET", "k", "a b\nA"], ["get", "it's"]]);
});

Deno.test("resp inline split refuses unbalanced quotes", () => {
  assert.equal(splitInline(encoder.encode('SET k "open')), undefined);
  assert.equal(splitInline(encoder.encode('SET k "a"b')), undefined);
  assert.deepEqual(splitInline(encoder.encode("")), []);
});

Deno.test("resp parser gives a protocol error for bad input and then nothing more", () => {
  const cases: [string, string][] = [
    ["*x\r\n", "invalid multibulk length"],
    [`*${RESP_LIMITS_DEFAULT.argumentsMax + 1}\r\n`, "invalid multibulk length"],
    ["*1\r\n+GET\r\n", "expected '$', got '+'"],
    ["*1\r\n$-1\r\n", "invalid bulk length"],
    [`*1\r\n$${RESP_LIMITS_DEFAULT.bulkBytesMax + 1}\r\n`, "invalid bulk length"],
    ["*1\r\n$3\r\nGETxx", "expected CRLF after a bulk string"],
    ['SET a "b\r\n', "unbalanced quotes in request"],
    ["*1\r\n$99999999999999999999\r\n", "invalid bulk length"],
  ];
  for (const [input, error] of cases) {
    const parser = new RespParser();
    const result = parseAll(`PING\r\n${input}`, parser);
    assert.deepEqual(texts(result.commands), [["PING"]], input);
    assert.equal(result.error, error, input);
    // The stream cannot be resynchronised: the parser stays stopped.
    assert.equal(parseAll("PING\r\n", parser).error, error);
    assert.deepEqual(parseAll("PING\r\n", parser).commands, []);
  }
});

Deno.test("resp parser bounds lines without an end", () => {
  const long = "a".repeat(RESP_LIMITS_DEFAULT.lineBytesMax + 10);
  assert.equal(parseAll(long).error, "too big inline request");
  assert.equal(
    parseAll(`*${"1".repeat(RESP_LIMITS_DEFAULT.lineBytesMax + 10)}`).error,
    "too big mbulk count string",
  );
  // Just below the limit, an unfinished line waits for more.
  assert.equal(parseAll("a".repeat(1000)).error, undefined);
});

Deno.test("resp parser bounds a command's total size", () => {
  const limits = { ...RESP_LIMITS_DEFAULT, commandBytesMax: 10 };
  const parser = new RespParser(limits);
  const result = parser.feed(
    encodeCommand([encoder.encode("SET"), encoder.encode("k"), encoder.encode("1234567")]),
  );
  assert.equal(result.error, "command larger than 10 bytes");
});

const argument = fc.uint8Array({ maxLength: 40 });
const command = fc.array(argument, { minLength: 1, maxLength: 6 });

Deno.test("resp parser gives the same commands whatever the chunk boundaries", () => {
  fc.assert(
    fc.property(
      fc.array(command, { minLength: 1, maxLength: 8 }),
      fc.array(fc.nat(), { maxLength: 12 }),
      (commands, cuts) => {
        const stream = concatBytes(commands.map(encodeCommand));
        const points = [...new Set(cuts.map((cut) => cut % (stream.byteLength + 1)))].sort((a, b) =>
          a - b
        );
        const parser = new RespParser();
        const got: RespCommand[] = [];
        let from = 0;
        // One read buffer, reused and overwritten after every feed, as the gateway reuses its.
        const scratch = new Uint8Array(stream.byteLength);
        for (const point of [...points, stream.byteLength]) {
          const chunk = scratch.subarray(0, point - from);
          chunk.set(stream.subarray(from, point));
          const result = parser.feed(chunk);
          scratch.fill(0x2a);
          assert.equal(result.error, undefined);
          got.push(...result.commands);
          from = point;
        }
        assert.deepEqual(got, commands);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("resp parser never throws on arbitrary bytes, and stops at an error", () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 8 }), (chunks) => {
      const parser = new RespParser({ ...RESP_LIMITS_DEFAULT, lineBytesMax: 32, bulkBytesMax: 64 });
      let stopped: string | undefined;
      for (const chunk of chunks) {
        const result = parser.feed(chunk);
        if (stopped !== undefined) {
          assert.equal(result.error, stopped);
          assert.equal(result.commands.length, 0);
        }
        stopped = result.error;
        for (const args of result.commands) assert.ok(args.length >= 1);
      }
    }),
    { numRuns: 500 },
  );
});

Deno.test("resp parser reads a mutated stream intact up to the mutation, without throwing", () => {
  fc.assert(
    fc.property(
      fc.array(command, { minLength: 1, maxLength: 4 }),
      fc.nat(),
      fc.integer({ min: 0, max: 255 }),
      (commands, at, byte) => {
        const encoded = commands.map(encodeCommand);
        const stream = concatBytes(encoded);
        const mutated = at % stream.byteLength;
        stream[mutated] = byte;
        // The commands that end before the mutated byte.
        let intact = 0;
        for (let end = 0; intact < encoded.length; intact++) {
          end += encoded[intact]!.byteLength;
          if (end > mutated) break;
        }
        const result = new RespParser().feed(stream);
        assert.deepEqual(result.commands.slice(0, intact), commands.slice(0, intact));
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("resp parser: arguments and lines over 64 KiB, fed in small pieces, come out whole", () => {
  // Past the buffer the parser keeps between feeds: the path that grows and keeps an owned buffer.
  const value = new Uint8Array(300 * 1024).map((_, i) => (i * 31) & 0xff);
  const command = encodeCommand([encoder.encode("SET"), encoder.encode("big"), value]);
  const inline = encoder.encode(`ECHO ${"y".repeat(60_000)}\r\n`);
  const stream = concatBytes([command, inline, command]);
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 5000 }),
      fc.integer({ min: 1, max: 2 ** 31 }),
      (max, s) => {
        const parser = new RespParser();
        const commands: RespCommand[] = [];
        let seed = s;
        for (let at = 0; at < stream.byteLength;) {
          seed = (seed * 1103515245 + 12345) % 2 ** 31;
          const size = 1 + (seed % max);
          const result = parser.feed(stream.subarray(at, at + size));
          assert.equal(result.error, undefined);
          commands.push(...result.commands);
          at += size;
        }
        assert.equal(commands.length, 3);
        assert.deepEqual(commands[0]![2], value);
        assert.equal(commands[1]![1]!.byteLength, 60_000);
        assert.deepEqual(commands[2], commands[0]);
      },
    ),
    { numRuns: 20 },
  );
});
