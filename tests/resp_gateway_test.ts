/**
 * The RESP gateway driven by real Redis tools: `redis-cli` and `redis-benchmark` (Debian's
 * redis-tools, which .ci/run installs) and the ioredis library, against `cluster up --resp-port 0`;
 * and the command layer against an in-memory store.
 */
import assert from "node:assert/strict";
import { Redis } from "ioredis";
import { type ConnectionState, executeCommand, type KvSession } from "../src/resp/gateway.ts";
import { type Cluster, primaryRow, statusRows, waitFor, withCluster } from "./_process.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** An in-memory store with the gateway's view of the group. */
class MemorySession implements KvSession {
  readonly map = new Map<string, Uint8Array>();
  get(key: Uint8Array) {
    return Promise.resolve(this.map.get(decoder.decode(key)) ?? null);
  }
  set(key: Uint8Array, value: Uint8Array) {
    this.map.set(decoder.decode(key), value);
    return Promise.resolve();
  }
  del(key: Uint8Array) {
    return Promise.resolve(this.map.delete(decoder.decode(key)));
  }
  size() {
    return Promise.resolve(this.map.size);
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
  assert.equal(session.map.size, 0);
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
      } finally {
        redis.disconnect();
      }
    });

    await t.step("redis-benchmark -c 200 -P 16 completes without errors", async () => {
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
      const keys = Number(await cli("DBSIZE"));
      assert.ok(keys > 20 && keys <= 100 + 22, `DBSIZE ${keys}`);
    });
  }, CLUSTER_OPTIONS);
});

Deno.test("resp gateway: a Redis client writing through a primary failover loses no acknowledged write", async () => {
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
      const loops = clients.map(async (redis, w) => {
        for (let i = 0; !stop; i++) {
          // Keys are rewritten, so a value read back names the latest write.
          const key = `w${w}:${i % 50}`;
          const value = `${w}-${i}`;
          try {
            assert.equal(await redis.set(key, value), "OK");
            acknowledged.set(key, value);
            if (killed) acknowledgedAfterKill++;
          } catch (error) {
            errors.push(`${key}: ${error instanceof Error ? error.message : error}`);
            return;
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
