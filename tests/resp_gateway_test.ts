/**
 * The RESP gateway driven by real Redis tools: `redis-cli` and `redis-benchmark` (Debian's
 * redis-tools, which .ci/run installs) and the ioredis library, against `cluster up --resp-port 0`;
 * and the command layer against an in-memory store.
 */
import assert from "node:assert/strict";
import { Redis } from "ioredis";
import { ClientError } from "../src/client/client.ts";
import {
  decodeKvBatchResult,
  decodeKvResult,
  encodeKvBatch,
  encodeKvOperation,
  type KvOperation,
  type KvResult,
  KvStore,
} from "../src/app/kv.ts";
import {
  type ConnectionState,
  executeCommand,
  type KvSession,
  runCommands,
} from "../src/resp/gateway.ts";
import {
  type Cluster,
  OutputCollector,
  primaryRow,
  signalChild,
  statusRows,
  vstampArgs,
  waitFor,
  withCluster,
} from "./_process.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The real store, in memory, behind the gateway's view of a session. */
class MemorySession implements KvSession {
  readonly store = new KvStore();
  /** The operations of each request, to see what went in one batch. */
  readonly requests: KvOperation[][] = [];
  /** What happened, in order: "request n" (its operations) and "reply" (one handed on). */
  readonly events: string[] = [];
  batchOnce(operations: readonly KvOperation[]): Promise<KvResult[]> {
    // As KvClient: a prefix of at most 256 here, to see batches split.
    const taken = operations.slice(0, 256);
    this.requests.push(taken);
    this.events.push(`request ${taken.length}`);
    const context = { opNumber: 1, timestamp: 0, clientId: 1, requestNumber: 1 };
    if (taken.length === 1) {
      return Promise.resolve([
        decodeKvResult(this.store.apply(encodeKvOperation(taken[0]!), context)),
      ]);
    }
    const results = decodeKvBatchResult(this.store.apply(encodeKvBatch(taken), context));
    assert.ok(Array.isArray(results), JSON.stringify(results));
    return Promise.resolve(results);
  }
}

async function run(session: KvSession, state: ConnectionState, ...args: string[]) {
  const outcome = await executeCommand(
    args.map((arg) => encoder.encode(arg)),
    state,
    (use) => use(session),
  );
  return { text: decoder.decode(outcome.reply), close: outcome.close === true };
}

Deno.test("resp commands answer as Redis does", async () => {
  const session = new MemorySession();
  const state: ConnectionState = { id: 7, name: null };
  const r = (...args: string[]) => run(session, state, ...args).then((outcome) => outcome.text);
  assert.equal(await r("set", "a", "1"), "+OK\r\n");
  assert.equal(await r("GET", "a"), "$1\r\n1\r\n");
  assert.equal(await r("GET", "missing"), "$-1\r\n");
  assert.equal(await r("SET", "b", ""), "+OK\r\n");
  assert.equal(await r("EXISTS", "a", "b", "a", "c"), ":3\r\n");
  assert.equal(await r("DBSIZE"), ":2\r\n");
  assert.equal(await r("DEL", "a", "c", "b"), ":2\r\n");
  assert.equal(await r("DBSIZE"), ":0\r\n");
  assert.equal(await r("PING"), "+PONG\r\n");
  assert.equal(await r("PING", "hi"), "$2\r\nhi\r\n");
  assert.equal(await r("ECHO", "x\r\ny"), "$4\r\nx\r\ny\r\n");
  assert.equal(await r("GET"), "-ERR wrong number of arguments for 'get' command\r\n");
  assert.equal(await r("DEL"), "-ERR wrong number of arguments for 'del' command\r\n");
  assert.match(await r("SET", "a", "1", "EX", "10"), /^-ERR syntax error: SET options .*'EX'/);
  assert.equal(
    await r("FLUSHALL", "x\ny"),
    "-ERR unknown command 'FLUSHALL', with args beginning with: 'x y' \r\n",
  );
  assert.equal(await r("SELECT", "0"), "+OK\r\n");
  assert.equal(await r("SELECT", "1"), "-ERR DB index is out of range\r\n");
  // Beyond the store's limits: its error, and the connection goes on.
  assert.equal(
    await r("SET", "k".repeat(70 * 1024), "v"),
    "-ERR key is 71680 bytes, the limit is 65536\r\n",
  );
  assert.match(await r("EXISTS", "a", "k".repeat(70 * 1024)), /^-ERR key is 71680 bytes/);
  assert.deepEqual(await run(session, state, "QUIT"), { text: "+OK\r\n", close: true });
});

Deno.test("resp connect-time commands: HELLO 2, CLIENT, COMMAND, INFO", async () => {
  const session = new MemorySession();
  const state: ConnectionState = { id: 7, name: null };
  const r = (...args: string[]) => run(session, state, ...args).then((outcome) => outcome.text);
  assert.match(await r("HELLO"), /^\*14\r\n\$6\r\nserver\r\n.*\$5\r\nproto\r\n:2\r\n/s);
  assert.match(await r("HELLO", "3"), /^-NOPROTO /);
  assert.match(await r("HELLO", "2", "SETNAME", "app"), /^\*14\r\n/);
  assert.equal(await r("CLIENT", "GETNAME"), "$3\r\napp\r\n");
  assert.equal(await r("CLIENT", "SETNAME", "other"), "+OK\r\n");
  assert.equal(await r("CLIENT", "GETNAME"), "$5\r\nother\r\n");
  assert.match(await r("CLIENT", "SETNAME", "a b"), /^-ERR Client names cannot/);
  assert.equal(await r("CLIENT", "ID"), ":7\r\n");
  assert.equal(await r("CLIENT", "SETINFO", "LIB-NAME", "x"), "+OK\r\n");
  assert.match(await r("CLIENT", "KILL"), /^-ERR unknown subcommand 'KILL'/);
  assert.equal(await r("COMMAND"), "*0\r\n");
  assert.equal(await r("COMMAND", "DOCS"), "*0\r\n");
  assert.match(await r("COMMAND", "COUNT"), /^:\d+\r\n$/);
  assert.match(await r("INFO"), /loading:0/);
  assert.equal(session.store.size, 0);
});

Deno.test("resp pipelined commands go as batches, answered in order", async () => {
  const session = new MemorySession();
  const state: ConnectionState = { id: 1, name: null };
  const args = (...words: string[]) => words.map((word) => encoder.encode(word));
  const commands = [
    args("SET", "a", "1"),
    args("SET", "b", "2"),
    args("GET", "a"),
    args("PING"),
    args("DEL", "a", "b", "c"),
    args("EXISTS", "a", "b"),
    args("QUIT"),
    args("SET", "after", "quit"),
  ];
  const replies: string[] = [];
  const closed = await runCommands(commands, state, (use) => use(session), (reply) => {
    replies.push(decoder.decode(reply));
  });
  assert.equal(closed, true);
  assert.deepEqual(replies, [
    "+OK\r\n",
    "+OK\r\n",
    "$1\r\n1\r\n",
    "+PONG\r\n",
    ":2\r\n",
    ":0\r\n",
    "+OK\r\n",
  ]);
  // PING (answered here) splits the batches; nothing after QUIT ran.
  assert.deepEqual(session.requests.map((ops) => ops.length), [3, 5]);
  assert.equal(session.store.size, 0);
  // A command of more operations than a batch takes spans several, and is counted whole.
  const keys = Array.from({ length: 600 }, (_, i) => `k${i}`);
  for (const key of keys) await run(session, state, "SET", key, "v");
  session.requests.length = 0;
  assert.equal((await run(session, state, "DEL", ...keys, "missing")).text, ":600\r\n");
  assert.deepEqual(session.requests.map((ops) => ops.length), [256, 256, 89]);
  // A command that would cross a batch's end goes whole in the next one.
  session.requests.length = 0;
  const pipeline = [
    ...keys.slice(0, 200).map((key) => args("SET", key, "w")),
    args("DEL", ...keys.slice(0, 100)),
  ];
  await runCommands(pipeline, state, (use) => use(session), () => {});
  assert.deepEqual(session.requests.map((ops) => ops.length), [200, 100]);
  assert.equal(session.store.size, 100);
});

Deno.test("resp: a request takes whole commands up to a batch's bytes, and its replies go first", async () => {
  const session = new MemorySession();
  const state: ConnectionState = { id: 2, name: null };
  const args = (...words: (string | Uint8Array)[]) =>
    words.map((word) => typeof word === "string" ? encoder.encode(word) : word);
  const big = new Uint8Array(600 * 1024);
  const keys = Array.from({ length: 8 }, (_, i) => `${i}`.padEnd(60 * 1024, "k"));
  const commands = [
    args("SET", "a", big),
    args("DEL", ...keys), // 480 KiB of keys: not in the SET's request, and not split.
    args("SET", "oversized", new Uint8Array(1024 * 1024 + 1)), // The store's error, alone.
    args("SET", "c", "3"),
    args("GET", "c"),
  ];
  const replies: string[] = [];
  const closed = await runCommands(commands, state, (use) => use(session), (reply) => {
    session.events.push("reply");
    replies.push(decoder.decode(reply).slice(0, 60));
  });
  assert.equal(closed, false);
  assert.deepEqual(replies, [
    "+OK\r\n",
    ":0\r\n",
    "-ERR value is 1048577 bytes, the limit is 1048576\r\n",
    "+OK\r\n",
    "$1\r\n3\r\n",
  ]);
  // Each request's replies are handed on before the next request goes.
  assert.deepEqual(session.events, [
    "request 1",
    "reply",
    "request 8",
    "reply",
    "reply",
    "request 2",
    "reply",
    "reply",
  ]);
});

Deno.test("resp: a command the group did not answer fails the rest, and the connection closes", async () => {
  const state: ConnectionState = { id: 3, name: null };
  const failing: KvSession = {
    batchOnce: () => Promise.reject(new ClientError("no answer from the group within 60000 ms")),
  };
  const replies: string[] = [];
  const closed = await runCommands(
    [[encoder.encode("SET"), encoder.encode("a"), encoder.encode("1")], [
      encoder.encode("GET"),
      encoder.encode("a"),
    ], [encoder.encode("PING")]],
    state,
    (use) => use(failing),
    (reply) => {
      replies.push(decoder.decode(reply));
    },
  );
  assert.equal(closed, true);
  assert.deepEqual(replies, [
    "-ERR no answer from the group within 60000 ms\r\n",
    "-ERR no answer from the group within 60000 ms\r\n",
  ]);
});

/** Output of a Redis tool, failing clearly when the tool is not installed. */
async function redisTool(tool: string, args: readonly string[], timeoutMs = 120_000) {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(tool, {
      args: [...args],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(timeoutMs),
    }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(`${tool} is not installed: apt-get install redis-tools (.ci/run does)`);
    }
    throw error;
  }
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** The port `cluster up --resp-port 0` printed. */
function respPort(cluster: Cluster): number {
  const match = /resp gateway listening on [^\n]*:(\d+)\n/.exec(cluster.output().stdout);
  assert.ok(match, `no gateway port in:\n${cluster.output().stdout}`);
  return Number(match[1]);
}

const CLUSTER_OPTIONS = { sync: "none", args: ["--resp-port", "0"] } as const;

Deno.test("resp gateway serves redis-cli, redis-benchmark and ioredis", async (t) => {
  await withCluster(3, async (cluster) => {
    const port = respPort(cluster);
    const cli = async (...args: string[]) => {
      const result = await redisTool("redis-cli", ["-p", String(port), ...args]);
      assert.equal(result.code, 0, result.stderr);
      return result.stdout.trimEnd();
    };

    await t.step("redis-cli SET, GET, DEL of several keys, EXISTS, DBSIZE, PING", async () => {
      assert.equal(await cli("SET", "a", "1"), "OK");
      assert.equal(await cli("GET", "a"), "1");
      assert.equal(await cli("SET", "b", "two words"), "OK");
      assert.equal(await cli("GET", "b"), "two words");
      assert.equal(await cli("EXISTS", "a", "b", "nope"), "2");
      assert.equal(await cli("DBSIZE"), "2");
      assert.equal(await cli("DEL", "a", "b", "nope"), "2");
      assert.equal(await cli("EXISTS", "a"), "0");
      assert.equal(await cli("GET", "a"), "");
      assert.equal(await cli("PING"), "PONG");
      assert.equal(await cli("ECHO", "hello"), "hello");
    });

    await t.step("redis-cli gets Redis's unknown-command error", async () => {
      assert.equal(
        await cli("LPUSH", "list", "x"),
        "ERR unknown command 'LPUSH', with args beginning with: 'list' 'x'",
      );
    });

    await t.step(
      "a malformed request gets a protocol error and the connection closes",
      async () => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        await conn.write(encoder.encode("*1\r\n$x\r\n"));
        let text = "";
        const buffer = new Uint8Array(1024);
        for (;;) {
          const n = await conn.read(buffer);
          if (n === null) break;
          text += decoder.decode(buffer.subarray(0, n));
        }
        conn.close();
        assert.equal(text, "-ERR Protocol error: invalid bulk length\r\n");
        // The gateway still serves others.
        assert.equal(await cli("PING"), "PONG");
      },
    );

    await t.step("ioredis: pipelined writes in order, binary values", async () => {
      const redis = new Redis({ port, host: "127.0.0.1", maxRetriesPerRequest: 0 });
      try {
        const pipeline = redis.pipeline();
        for (let i = 0; i < 200; i++) pipeline.set(`p${i % 20}`, `v${i}`);
        const results = await pipeline.exec();
        assert.equal(results?.length, 200);
        for (const [error, reply] of results!) {
          assert.equal(error, null);
          assert.equal(reply, "OK");
        }
        // Each connection's commands ran in order: the last write of each key won.
        const reads = redis.pipeline();
        for (let k = 0; k < 20; k++) reads.get(`p${k}`);
        const values = (await reads.exec())!.map(([, value]) => value);
        assert.deepEqual(values, Array.from({ length: 20 }, (_, k) => `v${180 + k}`));
        const binary = Buffer.from([0, 13, 10, 255, 36, 42, 0]);
        assert.equal(await redis.set(Buffer.from([1, 0, 2]), binary), "OK");
        assert.deepEqual(await redis.getBuffer(Buffer.from([1, 0, 2])), binary);
        await assert.rejects(redis.call("HSET", "h", "f", "v"), /unknown command 'HSET'/);
        // Large values: a batch of GETs stops at the store's result limit and goes on.
        const big = (i: number) => Buffer.alloc(600 * 1024, i);
        const writes = redis.pipeline();
        for (let i = 0; i < 5; i++) writes.set(`big${i}`, big(i));
        assert.deepEqual((await writes.exec())!.map(([error]) => error), [
          null,
          null,
          null,
          null,
          null,
        ]);
        const gets = redis.pipeline();
        for (let i = 0; i < 5; i++) gets.getBuffer(`big${i}`);
        const got = (await gets.exec())!.map(([, value]) => value);
        assert.deepEqual(got, [0, 1, 2, 3, 4].map(big));
      } finally {
        redis.disconnect();
      }
    });

    await t.step(
      "vstamp gateway: a second gateway sees at once what the first acknowledged",
      async () => {
        const process = new Deno.Command(Deno.execPath(), {
          args: vstampArgs(["gateway", "--config", cluster.configPath, "--port", "0"]),
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        const stdout = new OutputCollector(process.stdout);
        const stderr = new OutputCollector(process.stderr);
        try {
          await stdout.waitForText("\n", 30_000);
          const match = /^resp gateway listening on 127\.0\.0\.1:(\d+)\n/.exec(stdout.text);
          assert.ok(match, stdout.text);
          const other = match[1]!;
          for (let i = 0; i < 20; i++) {
            assert.equal(await cli("SET", "shared", `v${i}`), "OK");
            const read = await redisTool("redis-cli", ["-p", other, "GET", "shared"]);
            assert.equal(read.stdout.trimEnd(), `v${i}`);
          }
        } finally {
          signalChild(process, "SIGTERM");
          await process.status;
          await Promise.all([stdout.done, stderr.done]);
        }
        assert.equal(stderr.text, "");
      },
    );

    await t.step("redis-benchmark -c 200 -P 16 completes without errors", async () => {
      const before = Number(await cli("DBSIZE"));
      const result = await redisTool("redis-benchmark", [
        "-p",
        String(port),
        "-t",
        "set,get",
        "-c",
        "200",
        "-P",
        "16",
        "-n",
        "4000",
        "-r",
        "100",
        "-q",
      ]);
      const text = `${result.stdout}${result.stderr}`;
      assert.equal(result.code, 0, text);
      assert.doesNotMatch(text, /Error|error:/);
      assert.match(text, /SET: [\d.]+ requests per second/);
      assert.match(text, /GET: [\d.]+ requests per second/);
      // Its SETs went to at most 100 keys (-r 100), new to the store.
      const added = Number(await cli("DBSIZE")) - before;
      assert.ok(added > 0 && added <= 100, `DBSIZE grew by ${added}`);
    });
  }, CLUSTER_OPTIONS);
});

Deno.test("resp gateway: Redis clients writing through a primary failover lose no acknowledged write", async () => {
  await withCluster(3, async (cluster) => {
    const port = respPort(cluster);
    const writers = 4;
    const acknowledged = new Map<string, string>();
    let killed = false;
    let acknowledgedAfterKill = 0;
    let stop = false;
    const errors: string[] = [];
    const clients = Array.from(
      { length: writers },
      () => new Redis({ port, host: "127.0.0.1", maxRetriesPerRequest: 0 }),
    );
    try {
      // Half the writers send one SET at a time, half pipelines of 8 (which go as batches).
      const loops = clients.map(async (redis, w) => {
        const pipelined = w % 2 === 1;
        for (let i = 0; !stop; i += pipelined ? 8 : 1) {
          // Keys are rewritten, so a value read back names the latest write.
          const writes = Array.from({ length: pipelined ? 8 : 1 }, (_, j) => ({
            key: `w${w}:${(i + j) % 50}`,
            value: `${w}-${i + j}`,
          }));
          try {
            if (pipelined) {
              const pipeline = redis.pipeline();
              for (const { key, value } of writes) pipeline.set(key, value);
              const results = (await pipeline.exec())!;
              for (const [error, reply] of results) {
                if (error !== null) throw error;
                assert.equal(reply, "OK");
              }
            } else {
              assert.equal(await redis.set(writes[0]!.key, writes[0]!.value), "OK");
            }
          } catch (error) {
            errors.push(`${writes[0]!.key}: ${error instanceof Error ? error.message : error}`);
            return;
          }
          for (const { key, value } of writes) {
            acknowledged.set(key, value);
            if (killed) acknowledgedAfterKill++;
          }
        }
      });
      await waitFor(() => acknowledged.size >= 100, 30_000, "100 acknowledged writes");
      const primary = primaryRow(await statusRows(cluster.addresses));
      assert.ok(primary, "a primary");
      await cluster.killReplica(primary.index);
      killed = true;
      await waitFor(
        () => acknowledgedAfterKill >= 200 || errors.length > 0,
        60_000,
        () => `200 writes acknowledged after the kill (${acknowledgedAfterKill})`,
      );
      stop = true;
      await Promise.all(loops);
      assert.deepEqual(errors, []);
      const newPrimary = primaryRow(await statusRows(cluster.addresses));
      assert.ok(newPrimary && newPrimary.index !== primary.index, "a new primary");
      // Every acknowledged write is there, with its value, through the same gateway.
      const reads = clients[0]!.pipeline();
      const keys = [...acknowledged.keys()];
      for (const key of keys) reads.get(key);
      const values = (await reads.exec())!.map(([, value]) => value);
      assert.deepEqual(values, keys.map((key) => acknowledged.get(key)));
    } finally {
      stop = true;
      for (const redis of clients) redis.disconnect();
    }
  }, CLUSTER_OPTIONS);
});
