/**
 * The latency floor of a replicated write between Deno processes on this machine: the message
 * pattern of one VR write (client → primary → backups → primary → client) with no work at all in
 * any process. `vstamp bench --clients 1` can be compared with it (see the README's benchmarks).
 *
 * Usage: deno run --allow-net --allow-run --allow-read bench/relay_floor.ts [--requests N]
 *
 * Prints p50/p90/p99 of the round trip with two backups (the primary forwards to both and answers
 * on the first reply, as a 3-replica group does) and with one.
 *
 * @module
 */

const MESSAGE_BYTES = 100;

function listen(onConnection: (conn: Deno.TcpConn) => void): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const conn of listener) {
      conn.setNoDelay(true);
      onConnection(conn);
    }
  })();
  return (listener.addr as Deno.NetAddr).port;
}

async function connect(port: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  return conn;
}

/** A backup: sends back whatever it reads. */
function backup(): void {
  const port = listen(async (conn) => {
    const buffer = new Uint8Array(65536);
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) return;
      await conn.write(buffer.subarray(0, n));
    }
  });
  console.log(port);
}

/** The primary: forwards a client's message to every backup, answers on the first reply. */
async function primary(backupPorts: number[]): Promise<void> {
  const backups = await Promise.all(backupPorts.map(connect));
  let client: Deno.TcpConn | undefined;
  let waiting = false;
  let message = new Uint8Array(0);
  for (const conn of backups) {
    (async () => {
      const buffer = new Uint8Array(65536);
      for (;;) {
        if ((await conn.read(buffer)) === null) return;
        if (waiting) {
          waiting = false;
          await client!.write(message);
        }
      }
    })();
  }
  const port = listen(async (conn) => {
    client = conn;
    const buffer = new Uint8Array(65536);
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) return;
      message = buffer.slice(0, n);
      waiting = true;
      for (const backupConn of backups) backupConn.write(message);
    }
  });
  console.log(port);
}

/** Starts this script in `role` and returns the port it printed, and the child to stop later. */
async function start(role: string, args: string[] = []): Promise<[number, Deno.ChildProcess]> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", import.meta.filename!, role, ...args],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${role} exited before it printed its port`);
    text += value;
  }
  reader.releaseLock();
  return [Number(text.trim()), child];
}

async function measure(backupCount: number, requests: number): Promise<void> {
  const children: Deno.ChildProcess[] = [];
  const ports: number[] = [];
  for (let i = 0; i < backupCount; i++) {
    const [port, child] = await start("backup");
    ports.push(port);
    children.push(child);
  }
  const [primaryPort, primaryChild] = await start("primary", ports.map(String));
  children.push(primaryChild);
  const conn = await connect(primaryPort);
  const out = new Uint8Array(MESSAGE_BYTES);
  const buffer = new Uint8Array(65536);
  const samples: number[] = [];
  for (let i = 0; i < requests + requests / 10; i++) {
    const started = performance.now();
    await conn.write(out);
    let got = 0;
    while (got < MESSAGE_BYTES) got += (await conn.read(buffer)) ?? MESSAGE_BYTES;
    if (i >= requests / 10) samples.push(performance.now() - started); // After a warm-up.
  }
  conn.close();
  for (const child of children) child.kill();
  await Promise.all(children.map((child) => child.status));
  samples.sort((a, b) => a - b);
  const at = (q: number) => (samples[Math.floor(q * (samples.length - 1))]! * 1000).toFixed(0);
  console.log(
    `${backupCount} backup${backupCount === 1 ? "" : "s"}: round trip p50 ${at(0.5)} µs, ` +
      `p90 ${at(0.9)} µs, p99 ${at(0.99)} µs (${samples.length} requests)`,
  );
}

const [role, ...rest] = Deno.args;
if (role === "backup") {
  backup();
} else if (role === "primary") {
  await primary(rest.map(Number));
} else {
  const index = Deno.args.indexOf("--requests");
  const requests = index >= 0 ? Number(Deno.args[index + 1]) : 20_000;
  if (!Number.isSafeInteger(requests) || requests < 10) {
    console.error("--requests must be an integer of at least 10");
    Deno.exit(2);
  }
  await measure(2, requests);
  await measure(1, requests);
}
