/**
 * Connection floods against a real 3-replica group (`ConnectionLimits` in src/transport/node.ts):
 *
 * 1. `--idle N` connections to the primary that never say hello: is a new client served, and how
 *    soon (the oldest connection in its handshake gives way to a new one)?
 * 2. `--idle N` connections that say a client hello and then nothing: a new client is refused
 *    while every client place is taken by connections idle less than `clientIdleEvictMs`, then
 *    takes the place of the idlest: how long until it is served?
 * 3. `--partial N` client connections that each start a frame of `--frame-bytes` and never finish
 *    it: how much does the primary's resident memory grow (the partial frames of all clients
 *    together are bounded by `clientReadBudgetBytes`)?
 *
 * Prints one JSON line per scenario. Usage:
 *   deno run -A bench/flood.ts [--idle 4200] [--partial 64] [--frame-bytes 2097152]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { KvClient } from "../src/client/kv_client.ts";
import { parseAddress } from "../src/config.ts";
import { encodeFrame } from "../src/transport/frame.ts";
import { encodeHello, newNonce } from "../src/transport/handshake.ts";
import { primaryRow, startCluster, statusRows } from "../tests/_process.ts";

const { values } = parseArgs({
  options: {
    idle: { type: "string", default: "4200" },
    partial: { type: "string", default: "64" },
    "frame-bytes": { type: "string", default: String(2 * 1024 * 1024) },
  },
});
const idle = Number(values.idle);
const partial = Number(values.partial);
const frameBytes = Number(values["frame-bytes"]);

function residentMiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kib = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? "0");
  return Math.round(kib / 1024);
}

async function openMany(host: string, port: number, count: number, first?: Uint8Array) {
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < count; i++) {
    try {
      const conn = await Deno.connect({ hostname: host, port });
      if (first !== undefined) await conn.write(first).catch(() => {});
      conns.push(conn);
    } catch {
      break; // Out of descriptors or refused: report what was opened.
    }
  }
  return conns;
}

function closeAll(conns: Deno.TcpConn[]): void {
  for (const conn of conns) {
    try {
      conn.close();
    } catch {
      // Closed by the replica already.
    }
  }
}

/** How long until a fresh client connects and gets a SET answered (ms), within `deadlineMs`. */
async function timeToServe(addresses: readonly string[], deadlineMs: number): Promise<number> {
  const started = performance.now();
  for (;;) {
    try {
      const kv = await KvClient.connect({ addresses, deadlineMs: 2_000 });
      try {
        await kv.set("flood", "served");
      } finally {
        kv.close();
      }
      return Math.round(performance.now() - started);
    } catch (error) {
      if (performance.now() - started > deadlineMs) throw error;
    }
  }
}

const cluster = await startCluster(3, { sync: "none" });
try {
  const primary = primaryRow(await statusRows(cluster.configPath))!;
  const { host, port } = parseAddress(primary.address) as { host: string; port: number };
  const pid = cluster.pids[primary.index]!;
  const addresses = [primary.address];
  const base = residentMiB(pid);

  const silent = await openMany(host, port, idle);
  const silentServed = await timeToServe(addresses, 30_000);
  console.log(JSON.stringify({
    scenario: "connections that never say hello",
    opened: silent.length,
    new_client_served_after_ms: silentServed,
    primary_rss_mib: residentMiB(pid),
  }));
  closeAll(silent);

  const hello = encodeFrame(
    encodeHello({
      role: "client",
      index: 0,
      clusterId: "",
      authenticate: false,
      nonce: newNonce(),
    }),
  );
  const idleClients = await openMany(host, port, idle, hello);
  const idleServed = await timeToServe(addresses, 60_000);
  console.log(JSON.stringify({
    scenario: "client connections that say hello, then nothing",
    opened: idleClients.length,
    new_client_served_after_ms: idleServed,
    primary_rss_mib: residentMiB(pid),
  }));
  closeAll(idleClients);

  const before = residentMiB(pid);
  const header = new Uint8Array(8);
  new DataView(header.buffer).setUint32(0, frameBytes);
  const chunk = new Uint8Array(frameBytes - 1);
  const partials = await openMany(host, port, partial, hello);
  let sent = 0;
  for (const conn of partials) {
    try {
      await conn.write(header);
      await conn.write(chunk);
      sent++;
    } catch {
      // The replica closed it (over the budget): that is the bound at work.
    }
  }
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  // Connections the replica closed (the read budget at work): a read ends at once.
  const closed = (await Promise.all(partials.map((conn) =>
    Promise.race([
      conn.read(new Uint8Array(16)).then((n) => n === null, () => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 200)),
    ])
  ))).filter((c) => c).length;
  const partialServed = await timeToServe(addresses, 30_000);
  console.log(JSON.stringify({
    scenario: "client connections that start a large frame and never finish it",
    opened: partials.length,
    frame_bytes: frameBytes,
    fully_sent: sent,
    closed_by_replica: closed,
    offered_mib: Math.round((partials.length * frameBytes) / 1024 / 1024),
    primary_rss_mib_before: before,
    primary_rss_mib_after: residentMiB(pid),
    primary_rss_mib_at_start: base,
    new_client_served_after_ms: partialServed,
  }));
  closeAll(partials);
} finally {
  await cluster.stop();
}
