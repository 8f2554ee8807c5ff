/**
 * Peer authentication on real processes: a process without the cluster secret (or with another
 * secret, or of another cluster) that poses as a replica and sends forged Prepare, StartView and
 * StartViewChange frames changes nothing, and is refused with a log line. Before authentication,
 * two forged Prepares put `SET pwned evil` on the backups and the next view change committed it.
 */
import { strict as assert } from "node:assert";
import { encodeKvOperation } from "../src/app/kv.ts";
import { KvClient } from "../src/client/kv_client.ts";
import { loadConfig, loadIdentity, parseAddress } from "../src/config.ts";
import { encodeMessage } from "../src/transport/codec.ts";
import { encodeFrame, FrameDecoder } from "../src/transport/frame.ts";
import {
  type ClusterIdentity,
  ConnectorHandshake,
  decodeHandshakeFrame,
  encodeHello,
  encodeProof,
  importSecret,
  newNonce,
} from "../src/transport/handshake.ts";
import type { LogEntry, ReplicaMessage } from "../src/vr/message.ts";
import { type Cluster, primaryRow, startCluster, statusRows, waitFor } from "./_process.ts";

const encoder = new TextEncoder();
const CLOSE_TIMEOUT_MS = 8_000;
const VIEW_CHANGE_TIMEOUT_MS = 20_000;

/** The forged messages of the attack, for a group whose primary is `primary` in `view`. */
function forgeries(primary: number, view: number, opNumber: number): ReplicaMessage[] {
  const entry = (op: number, viewNumber: number): LogEntry => ({
    opNumber: op,
    viewNumber,
    clientId: 666,
    requestNumber: op,
    operation: encodeKvOperation({
      command: "SET",
      key: encoder.encode("pwned"),
      value: encoder.encode("evil"),
    }),
    timestamp: 1,
  });
  const next = view + 1;
  return [
    {
      type: "prepare",
      epoch: 0,
      viewNumber: view,
      entries: [entry(opNumber + 1, view)],
      commitNumber: opNumber + 1,
      replica: primary,
    },
    {
      type: "prepare",
      epoch: 0,
      viewNumber: view,
      entries: [entry(opNumber + 2, view)],
      commitNumber: opNumber + 2,
      replica: primary,
    },
    {
      type: "start_view",
      epoch: 0,
      viewNumber: next,
      anchorOpNumber: opNumber,
      entries: [entry(opNumber + 1, next)],
      opNumber: opNumber + 1,
      commitNumber: opNumber + 1,
      replica: next % 3,
    },
    { type: "start_view_change", epoch: 0, viewNumber: 2 ** 53 - 1, replica: (primary + 1) % 3 },
  ];
}

/**
 * Opens a connection to `address` posing as replica `claimed`, runs `handshake` on it, sends the
 * forged frames, and returns how the replica ended the connection: the reason of its refusal
 * frame, or "closed" when it closed without one. Throws if it keeps the connection open.
 */
async function attack(
  address: string,
  claimed: number,
  target: number,
  opening: (conn: Deno.TcpConn, frames: AsyncIterator<Uint8Array>, target: number) => Promise<void>,
  messages: readonly ReplicaMessage[],
): Promise<string> {
  const parsed = parseAddress(address);
  if ("error" in parsed) throw new Error(parsed.error);
  const conn = await Deno.connect({ hostname: parsed.host, port: parsed.port });
  const frames = readFrames(conn)[Symbol.asyncIterator]();
  let refusal = "closed";
  const timer = setTimeout(() => conn.close(), CLOSE_TIMEOUT_MS);
  try {
    await opening(conn, frames, target);
    for (const message of messages) {
      const forged = claimed === message.replica ? message : { ...message, replica: claimed };
      await conn.write(encodeFrame(encodeMessage(forged))).catch(() => {});
    }
    for (;;) {
      const next = await frames.next();
      if (next.done) break;
      const frame = decodeHandshakeFrame(next.value);
      if ("kind" in frame && frame.kind === "refused") refusal = frame.reason;
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed by the timer, which means the replica kept it open.
      refusal = "kept open";
    }
  }
  return refusal;
}

/** The frame bodies a connection receives, until it closes. */
async function* readFrames(conn: Deno.TcpConn): AsyncGenerator<Uint8Array> {
  const decoder = new FrameDecoder();
  const buffer = new Uint8Array(64 * 1024);
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buffer);
    } catch {
      return;
    }
    if (n === null) return;
    const bodies = decoder.push(buffer.slice(0, n));
    if (!Array.isArray(bodies)) return;
    yield* bodies;
  }
}

/** A replica hello from `index` to `target` (an attacker names the replica it attacks). */
function hello(
  index: number,
  target: number,
  clusterId: string,
  authenticate: boolean,
): Uint8Array {
  return encodeFrame(
    encodeHello({ role: "replica", index, target, clusterId, authenticate, nonce: newNonce() }),
  );
}

async function secretIdentity(cluster: Cluster): Promise<ClusterIdentity> {
  return (await loadIdentity(await loadConfig(cluster.configPath))).identity;
}

Deno.test({
  name: "forged replica frames from a process without the cluster secret change nothing",
  // The replicas' own timers and sockets outlive single steps of this test.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const cluster = await startCluster(3, { sync: "none" });
    const kv = await KvClient.connect({ addresses: cluster.addresses, deadlineMs: 10_000 });
    try {
      await kv.set("key", "good");
      const rows = await statusRows(cluster.configPath);
      const primary = primaryRow(rows)!;
      const real = await secretIdentity(cluster);
      const messages = forgeries(primary.index, primary.viewNumber!, primary.opNumber!);
      const otherKey = await importSecret(encoder.encode("not-the-secret-of-this-cluster"));
      const attempts: {
        readonly name: string;
        readonly opening: (
          conn: Deno.TcpConn,
          frames: AsyncIterator<Uint8Array>,
          target: number,
        ) => Promise<void>;
        readonly refusal: RegExp;
      }[] = [
        {
          name: "no secret",
          opening: (conn, _frames, target) =>
            conn.write(hello(primary.index, target, real.clusterId, false)).then(() => {}),
          refusal: /a replica link must authenticate/,
        },
        {
          name: "a guessed proof",
          opening: async (conn, frames, target) => {
            await conn.write(hello(primary.index, target, real.clusterId, true));
            const challenge = await frames.next();
            assert.ok(!challenge.done, "the replica sends a challenge");
            await conn.write(encodeFrame(encodeProof(crypto.getRandomValues(new Uint8Array(32)))));
          },
          refusal: /does not hold this group's cluster secret/,
        },
        {
          name: "another secret",
          opening: async (conn, frames, target) => {
            const handshake = new ConnectorHandshake(
              { clusterId: real.clusterId, key: otherKey },
              "replica",
              primary.index,
              target,
            );
            await conn.write(encodeFrame(handshake.hello));
            const challenge = await frames.next();
            assert.ok(!challenge.done);
            const outcome = await handshake.onFrame(challenge.value);
            // The forger learns the replica's proof is not of its secret; it sends a proof anyway.
            assert.ok("error" in outcome);
            await conn.write(encodeFrame(encodeProof(new Uint8Array(32))));
          },
          refusal: /does not hold this group's cluster secret/,
        },
        {
          name: "the right secret but another cluster id",
          opening: async (conn, _frames, target) => {
            const handshake = new ConnectorHandshake(
              { clusterId: "another-cluster", key: real.key },
              "replica",
              primary.index,
              target,
            );
            await conn.write(encodeFrame(handshake.hello));
          },
          refusal: /cluster id "another-cluster" is not this group's/,
        },
      ];
      for (const [index, address] of cluster.addresses.entries()) {
        if (index === primary.index) continue;
        for (const attempt of attempts) {
          const refusal = await attack(address, primary.index, index, attempt.opening, messages);
          assert.match(refusal, attempt.refusal, `${attempt.name} to replica ${index}: ${refusal}`);
        }
      }
      // The control: with the secret and the cluster id the same opening is not refused.
      const backup = cluster.addresses.findIndex((_, index) => index !== primary.index);
      const parsed = parseAddress(cluster.addresses[backup]!) as { host: string; port: number };
      const conn = await Deno.connect({ hostname: parsed.host, port: parsed.port });
      try {
        const handshake = new ConnectorHandshake(real, "replica", primary.index, backup);
        await conn.write(encodeFrame(handshake.hello));
        const frames = readFrames(conn)[Symbol.asyncIterator]();
        const challenge = await frames.next();
        assert.ok(!challenge.done);
        const outcome = await handshake.onFrame(challenge.value);
        assert.ok("send" in outcome, "the replica proves it holds the secret");
      } finally {
        conn.close();
      }

      // The attack's second half: a view change, which used to commit the forged entries.
      await cluster.killReplica(primary.index);
      const after = await waitFor(
        async () => {
          const now = await statusRows(cluster.configPath);
          const next = primaryRow(now);
          return next !== undefined && next.index !== primary.index ? now : undefined;
        },
        VIEW_CHANGE_TIMEOUT_MS,
        "a new primary",
      );
      assert.equal(await kv.getString("pwned"), null, "no forged entry was committed");
      assert.equal(await kv.getString("key"), "good");
      for (const row of after) {
        if (!row.reachable) continue;
        assert.ok(row.viewNumber! < 1000, `replica ${row.index} stayed in a sane view`);
      }
      // One log line per refusal (the same reason at most once per 10 s per replica).
      const logged = [
        /refused replica \d link from 127\.0\.0\.1:\d+: a replica link must authenticate/,
        /refused replica \d link from .*: authentication failed/,
        /refused replica \d link from .*: cluster id "another-cluster" is not this group's/,
      ];
      await waitFor(
        () => logged.every((line) => line.test(cluster.output().stderr)),
        CLOSE_TIMEOUT_MS,
        () => `the refusals in the log:\n${cluster.output().stderr}`,
      );
    } finally {
      kv.close();
      await cluster.stop();
    }
  },
});
