/**
 * The hello and challenge-response of `src/transport/handshake.ts`, both sides in memory.
 */
import { strict as assert } from "node:assert";
import {
  AcceptorHandshake,
  type ClusterIdentity,
  ConnectorHandshake,
  decodeHandshakeFrame,
  decodeHello,
  encodeHello,
  encodeProof,
  importSecret,
  newNonce,
  type Role,
} from "../src/transport/handshake.ts";

const encoder = new TextEncoder();

async function identity(clusterId: string, secret?: string): Promise<ClusterIdentity> {
  return {
    clusterId,
    key: secret === undefined ? undefined : await importSecret(encoder.encode(secret)),
  };
}

function acceptor(
  own: ClusterIdentity,
  options: { requireClientAuth?: boolean } = {},
): AcceptorHandshake {
  return new AcceptorHandshake({
    identity: own,
    requireClientAuth: options.requireClientAuth ?? false,
    replicaCount: 3,
    selfIndex: 0,
  });
}

/** Runs the whole handshake; returns what the acceptor decided and the connector concluded. */
async function handshake(
  own: ClusterIdentity,
  peer: ClusterIdentity,
  role: Role = "replica",
  options: { requireClientAuth?: boolean } = {},
): Promise<{ acceptor: string; connector: string }> {
  const side = acceptor(own, options);
  const connector = new ConnectorHandshake(peer, role, role === "replica" ? 1 : 0, 0);
  const outcome = side.onHello(connector.hello);
  if ("refuse" in outcome) return { acceptor: `refused: ${outcome.refuse}`, connector: "-" };
  if (outcome.challenge === undefined) return { acceptor: "accepted", connector: "ready" };
  const answer = await connector.onFrame(await outcome.challenge);
  if ("error" in answer) return { acceptor: "waiting", connector: answer.error };
  const problem = await side.onProof(answer.send);
  return { acceptor: problem ?? "authenticated", connector: "ready" };
}

Deno.test("handshake authenticates a replica link with the same secret and cluster id", async () => {
  const a = await identity("orders", "0123456789abcdef0123");
  const b = await identity("orders", "0123456789abcdef0123");
  assert.deepEqual(await handshake(a, b), { acceptor: "authenticated", connector: "ready" });
});

Deno.test("handshake refuses a replica without the secret, or of another cluster", async () => {
  const own = await identity("orders", "0123456789abcdef0123");
  const noSecret = await handshake(own, await identity("orders"));
  assert.match(noSecret.acceptor, /^refused: a replica link must authenticate/);
  const otherCluster = await handshake(own, await identity("billing", "0123456789abcdef0123"));
  assert.match(
    otherCluster.acceptor,
    /^refused: cluster id "billing" is not this group's "orders"/,
  );
  // A client that does not know the cluster id may still connect, but a replica may not.
  const anyId = await handshake(own, await identity("", "0123456789abcdef0123"));
  assert.match(anyId.acceptor, /^refused: cluster id "" is not/);
});

Deno.test("handshake with a wrong secret fails on both sides", async () => {
  const own = await identity("orders", "0123456789abcdef0123");
  const wrong = await identity("orders", "fedcba9876543210fedc");
  const result = await handshake(own, wrong);
  // The connector sees that the acceptor's proof is not made with its secret, and stops there.
  assert.match(result.connector, /failed to prove it holds the cluster secret/);
  // A forger that sends a proof anyway is refused by the acceptor.
  const side = acceptor(own);
  const hello = encodeHello({
    role: "replica",
    index: 1,
    target: 0,
    clusterId: "orders",
    authenticate: true,
    nonce: newNonce(),
  });
  const outcome = side.onHello(hello);
  assert.ok(!("refuse" in outcome) && outcome.challenge !== undefined);
  await outcome.challenge;
  assert.match(
    (await side.onProof(encodeProof(crypto.getRandomValues(new Uint8Array(32)))))!,
    /does not hold this group's cluster secret/,
  );
});

Deno.test("handshake: a proof is bound to its connection's nonces and role", async () => {
  const own = await identity("orders", "0123456789abcdef0123");
  const peer = await identity("orders", "0123456789abcdef0123");
  // A proof recorded on one connection does not open another (fresh acceptor nonce).
  const first = acceptor(own);
  const connector = new ConnectorHandshake(peer, "replica", 1, 0);
  const outcome = first.onHello(connector.hello);
  assert.ok(!("refuse" in outcome) && outcome.challenge !== undefined);
  const answer = await connector.onFrame(await outcome.challenge);
  assert.ok("send" in answer);
  const second = acceptor(own);
  const replayed = second.onHello(connector.hello);
  assert.ok(!("refuse" in replayed) && replayed.challenge !== undefined);
  await replayed.challenge;
  assert.match((await second.onProof(answer.send))!, /authentication failed/);
  // The acceptor's proof cannot be reflected as the connector's (the labels differ).
  const third = acceptor(own);
  const reflector = new ConnectorHandshake(peer, "replica", 2, 0);
  const reflected = third.onHello(reflector.hello);
  assert.ok(!("refuse" in reflected) && reflected.challenge !== undefined);
  const challenge = decodeHandshakeFrame(await reflected.challenge);
  assert.ok("kind" in challenge && challenge.kind === "challenge");
  assert.match((await third.onProof(encodeProof(challenge.proof)))!, /authentication failed/);
});

Deno.test("handshake: clients need no round trip unless the group requires it", async () => {
  const own = await identity("orders", "0123456789abcdef0123");
  assert.deepEqual(await handshake(own, await identity(""), "client"), {
    acceptor: "accepted",
    connector: "ready",
  });
  const required = await handshake(own, await identity(""), "client", { requireClientAuth: true });
  assert.match(required.acceptor, /^refused: this group requires clients to authenticate/);
  // A client with the secret authenticates, with or without the cluster id.
  const withSecret = await handshake(
    own,
    await identity("", "0123456789abcdef0123"),
    "status",
    { requireClientAuth: true },
  );
  assert.deepEqual(withSecret, { acceptor: "authenticated", connector: "ready" });
  // A client with a secret cannot connect to a group that has none (a misconfiguration).
  const noGroupSecret = await handshake(
    await identity("orders"),
    await identity("", "0123456789abcdef0123"),
    "client",
  );
  assert.match(noGroupSecret.acceptor, /^refused: the peer holds a cluster secret/);
});

Deno.test("decodeHello names what is wrong with a bad hello", () => {
  const good = encodeHello({
    role: "client",
    index: 0,
    clusterId: "orders",
    authenticate: false,
    nonce: newNonce(),
  });
  assert.deepEqual((decodeHello(good) as { clusterId: string }).clusterId, "orders");
  assert.match(
    (decodeHello(new Uint8Array([0x76, 0x73, 0x74, 0x70, 1, 0, 0, 0])) as { error: string })
      .error,
    /protocol version 1 is not 2/,
  );
  assert.match(
    (decodeHello(encoder.encode("GET / HTTP/1.1")) as { error: string }).error,
    /not a vstamp hello/,
  );
  const truncated = good.subarray(0, good.length - 1);
  assert.match((decodeHello(truncated) as { error: string }).error, /hello: \d+ bytes, expected/);
  const badFlags = good.slice();
  badFlags[10] = 0x80;
  assert.match((decodeHello(badFlags) as { error: string }).error, /unknown flags/);
  const badId = good.slice();
  badId[12] = 0x20; // A space in the cluster id.
  assert.match((decodeHello(badId) as { error: string }).error, /printable ASCII/);
});

Deno.test("handshake: a replica link made for one replica cannot be relayed to another", async () => {
  // A process on replica 1's address (its port, while it is down) receives replica 0's link and
  // passes its hello, the challenge and the proof between replica 0 and replica 2.
  const secret = await identity("orders", "0123456789abcdef0123");
  const honest = new ConnectorHandshake(secret, "replica", 0, 1); // Replica 0 dials replica 1.
  const replica2 = new AcceptorHandshake({
    identity: secret,
    requireClientAuth: false,
    replicaCount: 3,
    selfIndex: 2,
  });
  const outcome = replica2.onHello(honest.hello);
  assert.ok("refuse" in outcome);
  assert.match(outcome.refuse, /the link was made for replica 1, this is replica 2/);
  // A replica hello that names no target is refused too; a client's may name none.
  const anyTarget = replica2.onHello(new ConnectorHandshake(secret, "replica", 0).hello);
  assert.ok("refuse" in anyTarget);
  const client = replica2.onHello(new ConnectorHandshake(await identity(""), "client", 0).hello);
  assert.ok(!("refuse" in client));
});
