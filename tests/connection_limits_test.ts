/**
 * What a connection can make a replica hold is bounded (`ConnectionLimits` in
 * `src/transport/node.ts`): a one-replica group in this process, with the limits lowered so that
 * a handful of connections reach them.
 */
import { strict as assert } from "node:assert";
import { ClientError } from "../src/client/client.ts";
import { KvClient } from "../src/client/kv_client.ts";
import { encodeFrame } from "../src/transport/frame.ts";
import { encodeHello, newNonce } from "../src/transport/handshake.ts";
import type { ConnectionLimits } from "../src/transport/node.ts";
import { withNode } from "./_node.ts";
import { encodeMessage } from "../src/transport/codec.ts";
import { encodeKvOperation } from "../src/app/kv.ts";
import { waitFor } from "./_process.ts";

const DEADLINE_MS = 10_000;

/** A one-replica group with `limits` (`tests/_node.ts`); `logged` holds its log lines. */
function withLimits(
  limits: Partial<ConnectionLimits>,
  body: (address: string, port: number, logged: string[]) => Promise<void>,
): Promise<void> {
  return withNode(
    { connectionLimits: limits },
    ({ address, port, lines }) => body(address, port, lines),
  );
}

/** Whether the replica closed `conn` (a read returns end of file or an error). */
async function closedByPeer(conn: Deno.TcpConn): Promise<boolean> {
  const buffer = new Uint8Array(1024);
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) return true;
    }
  } catch {
    return true;
  }
}

function clientHello(): Uint8Array {
  return encodeFrame(
    encodeHello({
      role: "client",
      index: 0,
      clusterId: "",
      authenticate: false,
      nonce: newNonce(),
    }),
  );
}

async function open(port: number, count: number, first?: Uint8Array): Promise<Deno.TcpConn[]> {
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < count; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    if (first !== undefined) await conn.write(first);
    conns.push(conn);
  }
  return conns;
}

function closeAll(conns: readonly Deno.TcpConn[]): void {
  for (const conn of conns) {
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  }
}

async function serves(address: string): Promise<void> {
  const kv = await KvClient.connect({ addresses: [address], deadlineMs: DEADLINE_MS });
  try {
    await kv.set("k", "v");
    assert.equal(await kv.getString("k"), "v");
  } finally {
    kv.close();
  }
}

Deno.test("connections that never say hello do not lock clients out", async () => {
  await withLimits({ handshakingMax: 8, handshakeEvictMs: 0 }, async (address, port) => {
    const idle = await open(port, 20);
    try {
      const firstClosed = closedByPeer(idle[0]!);
      await serves(address);
      assert.ok(await firstClosed, "the oldest idle connection gave way");
    } finally {
      closeAll(idle);
    }
  });
});

Deno.test("a full handshake pool refuses newcomers while its connections are young", async () => {
  // A storm of real connections completes its handshakes in far less than handshakeEvictMs:
  // newcomers wait (they are refused and retry) rather than churn the ones in progress.
  await withLimits({ handshakingMax: 8, handshakeEvictMs: 60_000 }, async (_address, port) => {
    const young = await open(port, 8);
    const [late] = await open(port, 1);
    try {
      assert.ok(await closedByPeer(late!), "the newcomer is refused");
      const stillOpen = await Promise.race([
        closedByPeer(young[0]!),
        new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 300)),
      ]);
      assert.equal(stillOpen, false, "the oldest young connection is kept");
    } finally {
      closeAll([...young, late!]);
    }
  });
});

Deno.test("a connection that does not finish its handshake in time is closed", async () => {
  await withLimits({ handshakeTimeoutMs: 200 }, async (_address, port, logged) => {
    const [silent] = await open(port, 1);
    // Half a hello: a frame header and two bytes of its body.
    const [partial] = await open(port, 1, clientHello().subarray(0, 10));
    try {
      assert.ok(await closedByPeer(silent!));
      assert.ok(await closedByPeer(partial!));
      await waitFor(
        () => logged.some((line) => line.includes("no handshake within 200 ms")),
        DEADLINE_MS,
        "the log line",
      );
    } finally {
      closeAll([silent!, partial!]);
    }
  });
});

Deno.test("with every client connection taken, a newcomer replaces an idle one or is refused", async () => {
  await withLimits({ clientsMax: 4, clientIdleEvictMs: 0 }, async (address, port) => {
    const idle = await open(port, 4, clientHello());
    try {
      await serves(address);
      assert.ok(await closedByPeer(idle[0]!), "the idlest client connection gave way");
    } finally {
      closeAll(idle);
    }
  });
  await withLimits({ clientsMax: 4, clientIdleEvictMs: 60_000 }, async (address, port) => {
    const busy = await open(port, 4, clientHello());
    try {
      await waitFor(
        async () => {
          try {
            await KvClient.connect({ addresses: [address], deadlineMs: 1_000 });
            return false;
          } catch (error) {
            assert.ok(error instanceof ClientError);
            // The refusal's reason reaches the user, not only "no answer".
            return /too many clients \(4 connections/.test(error.message);
          }
        },
        DEADLINE_MS,
        "a refusal naming the limit",
      );
    } finally {
      closeAll(busy);
    }
  });
});

Deno.test("an idle client connection is closed after the idle timeout", async () => {
  await withLimits({ clientIdleTimeoutMs: 300 }, async (address, port) => {
    const [idle] = await open(port, 1, clientHello());
    try {
      assert.ok(await closedByPeer(idle!));
      await serves(address); // A client that reconnects is served as before.
    } finally {
      closeAll([idle!]);
    }
  });
});

Deno.test("partial frames past the read budget close the connections holding most", async () => {
  const budget = 1024 * 1024;
  await withLimits({ clientReadBudgetBytes: budget }, async (address, port) => {
    // Each connection starts a frame of 900 KiB and sends 600 KiB of it: together past the budget.
    const header = new Uint8Array(8);
    new DataView(header.buffer).setUint32(0, 900 * 1024);
    const partial = new Uint8Array(600 * 1024);
    const conns = await open(port, 3, clientHello());
    try {
      for (const conn of conns) {
        await conn.write(header);
        await conn.write(partial);
      }
      const closed = await Promise.all(conns.map((conn) =>
        Promise.race([
          closedByPeer(conn),
          new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 2_000)),
        ])
      ));
      assert.ok(closed.filter((c) => c).length >= 1, `closed: ${closed}`);
      assert.ok(closed.filter((c) => c).length <= 2, "one connection's partial frame fits");
      await serves(address);
    } finally {
      closeAll(conns);
    }
  });
});

Deno.test("a client that does not read its replies is closed once its writes stall", async () => {
  await withLimits(
    { clientReadPauseBytes: 64 * 1024, clientWriteStallMs: 400 },
    async (address, port, logged) => {
      const kv = await KvClient.connect({ addresses: [address], deadlineMs: DEADLINE_MS });
      await kv.set("big", "x".repeat(16 * 1024));
      kv.close();
      const [greedy] = await open(port, 1, clientHello());
      try {
        // Ask for the big value many times over and never read an answer.
        const get = encodeFrame(encodeMessage({
          type: "request",
          clientId: 99,
          requestNumber: 1,
          operation: encodeKvOperation({ command: "GET", key: new TextEncoder().encode("big") }),
        }));
        const flood = (async () => {
          for (let i = 0; i < 2_000; i++) await greedy!.write(get);
        })().catch(() => {});
        await waitFor(
          () => logged.some((line) => line.includes("not reading its replies for 400 ms")),
          DEADLINE_MS,
          () => `the stalled writer closed; log: ${logged.slice(-5).join(" / ")}`,
        );
        await flood;
        await serves(address);
      } finally {
        closeAll([greedy!]);
      }
    },
  );
});
