/**
 * Bad input on real processes: garbage on a replica's TCP port, and mistakes in the configuration
 * file given to `vstamp server`.
 */
import { strict as assert } from "node:assert";
import { decodeKvResult, encodeKvOperation } from "../src/app/kv.ts";
import { Client } from "../src/client/client.ts";
import { parseAddress } from "../src/config.ts";
import { encodeMessage } from "../src/transport/codec.ts";
import {
  encodeHello,
  HANDSHAKE_BODY_BYTES_MAX,
  newNonce,
  type Role,
} from "../src/transport/handshake.ts";
import { encodeFrame, FRAME_BODY_BYTES_MAX } from "../src/transport/frame.ts";
import { CONNECTION_LIMITS_DEFAULT } from "../src/transport/node.ts";
import { runVstamp, startCluster, statusRows } from "./_process.ts";

const encoder = new TextEncoder();

/** How long a replica may take to drop a connection that sent it garbage. */
const CLOSE_TIMEOUT_MS = 5_000;

function randomBytes(length: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(length));
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** A hello without a secret, as a client (or a process posing as a replica) sends it. */
function hello(role: Role, index: number): Uint8Array {
  return encodeHello({ role, index, clusterId: "", authenticate: false, nonce: newNonce() });
}

const clientHello = () => encodeFrame(hello("client", 0));

/** A well-formed client request frame. */
function requestFrame(): Uint8Array {
  return encodeFrame(encodeMessage({
    type: "request",
    clientId: 77,
    requestNumber: 1,
    operation: encodeKvOperation({ command: "SIZE" }),
  }));
}

interface BadInput {
  readonly name: string;
  readonly bytes: () => Uint8Array;
  /** Whether the replica must close the connection (else the test closes it). */
  readonly closedByReplica: boolean;
}

const BAD_INPUTS: readonly BadInput[] = [
  { name: "random bytes", bytes: () => randomBytes(4096), closedByReplica: false },
  {
    name: "a hello, then random bytes",
    bytes: () => concat(clientHello(), randomBytes(4096)),
    closedByReplica: false,
  },
  {
    name: "a hello, then a frame with a bad checksum",
    bytes: () => {
      const frame = requestFrame();
      frame[4]! ^= 0xff;
      return concat(clientHello(), frame);
    },
    closedByReplica: true,
  },
  {
    name: "a hello, then a truncated frame",
    bytes: () => {
      const frame = requestFrame();
      return concat(clientHello(), frame.subarray(0, frame.length - 3));
    },
    closedByReplica: false,
  },
  {
    name: "a header claiming a huge length",
    bytes: () => new Uint8Array([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
    closedByReplica: true,
  },
  {
    name: "a hello, then a header claiming one byte over the limit",
    bytes: () => {
      const header = new Uint8Array(8);
      new DataView(header.buffer).setUint32(0, FRAME_BODY_BYTES_MAX + 1);
      return concat(clientHello(), header);
    },
    closedByReplica: true,
  },
  {
    name: "a client hello, then a prepare",
    bytes: () =>
      concat(
        clientHello(),
        encodeFrame(
          encodeMessage({
            type: "prepare",
            epoch: 0,
            viewNumber: 0,
            commitNumber: 0,
            replica: 1,
            entries: [],
          }),
        ),
      ),
    closedByReplica: true,
  },
  {
    name: "a client hello, then a body that is not msgpack",
    bytes: () => concat(clientHello(), encodeFrame(encoder.encode("not a message"))),
    closedByReplica: true,
  },
  {
    name: "a hello with an unknown role",
    bytes: () => {
      const body = hello("client", 0);
      body[5] = 9;
      return concat(encodeFrame(body), requestFrame());
    },
    closedByReplica: true,
  },
  {
    name: "a hello from a replica index out of range",
    bytes: () => concat(encodeFrame(hello("replica", 200)), requestFrame()),
    closedByReplica: true,
  },
  {
    name: "a hello of protocol version 1 (before authentication)",
    bytes: () =>
      concat(encodeFrame(new Uint8Array([0x76, 0x73, 0x74, 0x70, 1, 0, 0, 0])), requestFrame()),
    closedByReplica: true,
  },
  {
    name: "a frame header over the handshake limit before any hello",
    bytes: () => {
      const header = new Uint8Array(8);
      new DataView(header.buffer).setUint32(0, HANDSHAKE_BODY_BYTES_MAX + 1);
      return header;
    },
    closedByReplica: true,
  },
  {
    name: "a client hello, then a header over the client frame limit",
    bytes: () => {
      const header = new Uint8Array(8);
      new DataView(header.buffer).setUint32(
        0,
        CONNECTION_LIMITS_DEFAULT.clientFrameBodyBytesMax + 1,
      );
      return concat(clientHello(), header);
    },
    closedByReplica: true,
  },
  {
    // The group has a secret (`cluster up` makes one): a replica link must prove it holds it.
    name: "a replica hello without the secret, then a prepare",
    bytes: () =>
      concat(
        encodeFrame(hello("replica", 1)),
        encodeFrame(encodeMessage({
          type: "prepare",
          epoch: 0,
          viewNumber: 0,
          commitNumber: 0,
          replica: 1,
          entries: [],
        })),
      ),
    closedByReplica: true,
  },
];

/** Reads until the peer closes the connection (EOF or reset); throws after `timeoutMs`. */
async function awaitPeerClose(conn: Deno.TcpConn, timeoutMs: number): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  const timer = setTimeout(() => conn.close(), timeoutMs);
  const started = Date.now();
  try {
    while ((await conn.read(buffer)) !== null) { /* discard */ }
  } catch (error) {
    if (error instanceof Deno.errors.BadResource) {
      throw new Error(`the replica kept the connection open for ${Date.now() - started} ms`);
    }
    // A reset also means the replica closed it.
  } finally {
    clearTimeout(timer);
  }
}

async function sendRaw(address: string, input: BadInput): Promise<void> {
  const parsed = parseAddress(address);
  if ("error" in parsed) throw new Error(parsed.error);
  const conn = await Deno.connect({ hostname: parsed.host, port: parsed.port });
  try {
    try {
      await conn.write(input.bytes());
    } catch {
      // The replica may drop the connection before it has read everything.
    }
    if (input.closedByReplica) await awaitPeerClose(conn, CLOSE_TIMEOUT_MS);
  } finally {
    try {
      conn.close();
    } catch {
      // Closed by awaitPeerClose's timer.
    }
  }
}

Deno.test("random and truncated frames do not stop a replica serving", async () => {
  const cluster = await startCluster(3);
  const client = await Client.connect({ addresses: cluster.addresses, deadlineMs: 8_000 });
  try {
    let n = 0;
    for (const input of BAD_INPUTS) {
      for (const [index, address] of cluster.addresses.entries()) {
        const what = `${input.name} to replica ${index}`;
        await sendRaw(address, input).catch((error) => {
          throw new Error(`${what}: ${error instanceof Error ? error.message : error}`);
        });
        const key = encoder.encode(`key-${n}`);
        const value = encoder.encode(`after ${what}`);
        n++;
        assert.deepEqual(
          decodeKvResult(await client.request(encodeKvOperation({ command: "SET", key, value }))),
          { kind: "bytes", value },
          `SET after ${what}`,
        );
        assert.deepEqual(
          decodeKvResult(await client.request(encodeKvOperation({ command: "GET", key }))),
          { kind: "bytes", value },
          `GET after ${what}`,
        );
        const rows = await statusRows(cluster.configPath);
        for (const row of rows) {
          assert.ok(row.reachable && row.status === "normal", `${what}: ${JSON.stringify(row)}`);
        }
      }
    }
  } finally {
    client.close();
    await cluster.stop();
  }
});

// ---------------------------------------------------------------- configuration errors

/** The quoted form of a path in config error messages, as a regular expression. */
function quotedPath(path: string): string {
  return JSON.stringify(path).replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * Runs `vstamp server --index <index> --config <file>` where the file holds `yaml` (no file when
 * undefined) and checks: exit status 2, nothing on stdout, exactly one line on stderr matching
 * `expected(quotedPath)`.
 */
async function assertConfigRejected(
  yaml: string | undefined,
  expected: (path: string) => RegExp,
  index = 0,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vstamp-test-" });
  try {
    const path = `${dir}/server-config.yaml`;
    if (yaml !== undefined) await Deno.writeTextFile(path, yaml);
    const result = await runVstamp(
      ["server", "--index", String(index), "--config", path, "--data-dir", `${dir}/data`],
      { cwd: dir },
    );
    assert.equal(result.code, 2, `exit status; stderr: ${result.stderr}`);
    assert.equal(result.stdout, "");
    assert.ok(result.stderr.endsWith("\n"), JSON.stringify(result.stderr));
    const lines = result.stderr.slice(0, -1).split("\n");
    assert.equal(lines.length, 1, `one line on stderr, got ${JSON.stringify(result.stderr)}`);
    assert.match(lines[0]!, expected(quotedPath(path)));
    // Nothing started: no data directory was created.
    await assert.rejects(Deno.stat(`${dir}/data`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const THREE =
  'replicas_addresses:\n  - "127.0.0.1:9001"\n  - "127.0.0.1:9002"\n  - "127.0.0.1:9003"\n';

Deno.test("server with a missing config file exits 2 printing one line", async () => {
  await assertConfigRejected(
    undefined,
    (path) => new RegExp(`^Cannot read config ${path}: file not found`),
  );
});

Deno.test("server with invalid YAML in its config exits 2 printing one line", async () => {
  await assertConfigRejected(
    'replicas_addresses: ["127.0.0.1:9001"\n',
    (path) =>
      new RegExp(`^Cannot read config ${path}: not valid YAML: .* at line \\d+, column \\d+$`),
  );
});

Deno.test("server with an even number of replicas in its config exits 2 printing one line", async () => {
  await assertConfigRejected(
    'replicas_addresses:\n  - "127.0.0.1:9001"\n  - "127.0.0.1:9002"\n',
    (path) =>
      new RegExp(
        `^Cannot read config ${path}: replicas_addresses must have an odd number of entries, got 2$`,
      ),
  );
});

Deno.test("server with a duplicate address in its config exits 2 printing one line", async () => {
  await assertConfigRejected(
    'replicas_addresses:\n  - "127.0.0.1:9001"\n  - "127.0.0.1:9002"\n  - "127.0.0.1:9001"\n',
    (path) =>
      new RegExp(
        `^Cannot read config ${path}: replicas_addresses\\[2\\] "127\\.0\\.0\\.1:9001" duplicates replicas_addresses\\[0\\]$`,
      ),
  );
});

Deno.test("server with an address that is not host:port exits 2 printing one line", async () => {
  await assertConfigRejected(
    'replicas_addresses:\n  - "127.0.0.1:9001"\n  - "localhost"\n  - "127.0.0.1:9003"\n',
    (path) =>
      new RegExp(
        `^Cannot read config ${path}: replicas_addresses\\[1\\] "localhost" is not host:port$`,
      ),
  );
});

Deno.test("server with a port out of range in its config exits 2 printing one line", async () => {
  await assertConfigRejected(
    'replicas_addresses:\n  - "127.0.0.1:65536"\n  - "127.0.0.1:9002"\n  - "127.0.0.1:9003"\n',
    (path) =>
      new RegExp(
        `^Cannot read config ${path}: replicas_addresses\\[0\\] "127\\.0\\.0\\.1:65536": port must be 1\\.\\.65535$`,
      ),
  );
});

Deno.test("server with --index out of range exits 2 printing one line", async () => {
  await assertConfigRejected(
    THREE,
    (path) =>
      new RegExp(
        `^Cannot use config ${path}: --index 5 is out of range, the file has 3 replicas \\(0\\.\\.2\\)$`,
      ),
    5,
  );
});

Deno.test("server with replicas_addresses not a list exits 2 printing one line", async () => {
  await assertConfigRejected(
    'replicas_addresses: "127.0.0.1:9001"\n',
    (path) =>
      new RegExp(
        `^Cannot read config ${path}: replicas_addresses must be a list of "host:port" strings, got "127\\.0\\.0\\.1:9001"$`,
      ),
  );
});
