/**
 * End-to-end tests on real processes: `cluster up`, `repl`, `status`, `server`, and the client
 * library against a group whose replicas are killed and restarted.
 */
import { strict as assert } from "node:assert";
import { Client } from "../src/client/client.ts";
import { renderConfig } from "../src/config.ts";
import {
  type Cluster,
  primaryRow,
  processGone,
  runClusterRepl,
  type RunningProcess,
  runVstamp,
  signal,
  signalChild,
  startCluster,
  startServer,
  statusRows,
  vstampArgs,
  waitFor,
  withCluster,
} from "./_process.ts";
import { get, set } from "./_kv.ts";

const encoder = new TextEncoder();

/** How long a request may take, view changes included, before the test fails. */
const REQUEST_DEADLINE_MS = 8_000;
/** How long the group may take to settle after a replica was killed or restarted. */
const SETTLE_TIMEOUT_MS = 15_000;

/** A client of `cluster` that waits up to REQUEST_DEADLINE_MS per request. */
function connectClient(cluster: Cluster): Promise<Client> {
  return Client.connect({ addresses: cluster.addresses, deadlineMs: REQUEST_DEADLINE_MS });
}

Deno.test("repl scripted session prints redis-style results", async (t) => {
  await withCluster(3, async (cluster) => {
    const repl = (stdin: string) =>
      runVstamp(["repl", "--config", cluster.configPath], { stdin, cwd: cluster.dir });

    await t.step("SET GET DEL SIZE print one result per line", async () => {
      const result = await repl("SET a 1\nGET a\nDEL a\nGET a\nSIZE\n");
      assert.equal(result.stderr, "");
      assert.equal(result.code, 0);
      assert.equal(result.stdout, "1\n1\n(integer) 1\n(nil)\n(integer) 0\n");
    });

    await t.step("a quoted value with spaces round-trips", async () => {
      const result = await repl(
        `SET "my key" "hello world"\nGET "my key"\nSET k2 'single quoted'\nGET k2\n`,
      );
      assert.equal(result.code, 0);
      assert.equal(result.stdout, "hello world\nhello world\nsingle quoted\nsingle quoted\n");
    });

    await t.step("help lists every command", async () => {
      const result = await repl("help\n");
      assert.equal(result.code, 0);
      assert.match(result.stdout, /^Commands \(case-insensitive\):\n/);
      for (const usage of ["SET key value", "GET key", "DEL key", "SIZE", "QUIT"]) {
        assert.match(result.stdout, new RegExp(`^  ${usage} `, "m"), usage);
      }
    });

    await t.step("an unknown command prints (error) and the session goes on", async () => {
      const result = await repl("FROB x\nSET after-error ok\n");
      assert.equal(result.code, 0);
      assert.equal(
        result.stdout,
        `(error) ERR unknown command 'FROB', type "help" for the list of commands\nok\n`,
      );
    });

    await t.step("QUIT ends the session before the lines after it", async () => {
      const quit = await repl("SET q before\nQUIT\nSET q after\nSET after-quit 1\n");
      assert.equal(quit.code, 0);
      assert.equal(quit.stdout, "before\n");
      const check = await repl("GET q\nGET after-quit\n");
      assert.equal(check.stdout, "before\n(nil)\n");
    });
  });
});

Deno.test("killing the primary gives a new view and no acknowledged write is lost", async () => {
  await withCluster(3, async (cluster) => {
    const client = await connectClient(cluster);
    try {
      const acknowledged = new Map<string, string>();
      const writeKey = async (key: string) => {
        const value = `value-of-${key}`;
        await set(client, key, value);
        acknowledged.set(key, value);
      };
      for (let i = 0; i < 20; i++) await writeKey(`before-${i}`);

      const before = await statusRows(cluster.configPath);
      const oldPrimary = primaryRow(before);
      assert.ok(oldPrimary !== undefined, "a primary before the kill");
      assert.equal(oldPrimary.viewNumber, 0);
      const oldPid = cluster.pids[oldPrimary.index]!;
      assert.equal(oldPrimary.pid, oldPid);

      // Kill it while a write is in flight, so that the client has to fail over mid-request.
      const inFlight = writeKey("in-flight");
      await cluster.killReplica(oldPrimary.index);
      await inFlight;
      for (let i = 0; i < 20; i++) {
        const started = Date.now();
        await writeKey(`after-${i}`);
        assert.ok(Date.now() - started < REQUEST_DEADLINE_MS);
      }

      for (const [key, value] of acknowledged) {
        assert.equal(await get(client, key), value, `acknowledged key ${key}`);
      }

      const rows = await waitFor(
        async () => {
          const rows = await statusRows(cluster.configPath);
          const primary = primaryRow(rows);
          return primary !== undefined && primary.index !== oldPrimary.index &&
              rows.filter((row) => row.reachable).every((row) => row.status === "normal")
            ? rows
            : undefined;
        },
        SETTLE_TIMEOUT_MS,
        "a new primary with every live replica normal",
      );
      const primary = primaryRow(rows)!;
      assert.ok(primary.viewNumber! > 0, `view ${primary.viewNumber} after the kill`);
      assert.equal(rows[oldPrimary.index]!.reachable, false, "the killed replica is unreachable");
      assert.equal(rows.filter((row) => row.role === "primary").length, 1);
    } finally {
      client.close();
    }
  });
});

Deno.test("a killed backup restarted with its data directory rejoins and catches up", async () => {
  await withCluster(3, async (cluster) => {
    let restarted: RunningProcess | undefined;
    const client = await connectClient(cluster);
    try {
      for (let i = 0; i < 10; i++) await set(client, `before-${i}`, `${i}`);
      const rows = await statusRows(cluster.configPath);
      const backup = rows.find((row) => row.role === "backup")!;
      const index = backup.index;
      const pid = cluster.pids[index]!;
      assert.equal(backup.pid, pid);

      await cluster.killReplica(index);
      // The other two are a quorum: writes go on without the backup.
      for (let i = 0; i < 30; i++) await set(client, `while-down-${i}`, `${i}`);
      const down = await statusRows(cluster.configPath);
      assert.equal(down[index]!.reachable, false);

      restarted = startServer(index, cluster.configPath, cluster.replicaDataDir(index), {
        cwd: cluster.dir,
      });
      const newPid = restarted.process.pid;
      const settled = await waitFor(
        async () => {
          const rows = await statusRows(cluster.configPath);
          const primary = primaryRow(rows);
          const row = rows[index]!;
          return primary !== undefined && row.reachable && row.pid === newPid &&
              row.status === "normal" && row.commitNumber === primary.commitNumber &&
              row.lag === 0
            ? rows
            : undefined;
        },
        SETTLE_TIMEOUT_MS,
        () => `replica ${index} to catch up; its stderr:\n${restarted?.output().stderr}`,
      );
      const primary = primaryRow(settled)!;
      // 10 + 30 SETs were committed before the restart.
      assert.ok(primary.commitNumber! >= 40, `commit ${primary.commitNumber}`);
      assert.equal(settled[index]!.opNumber, primary.opNumber);
    } finally {
      client.close();
      await restarted?.stop();
    }
  });
});

Deno.test("status shows every replica", async () => {
  await withCluster(3, async (cluster) => {
    const result = await runVstamp(["status", "--config", cluster.configPath, "--json"], {
      cwd: cluster.dir,
    });
    assert.equal(result.code, 0, result.stderr);
    const rows = result.stdout.trimEnd().split("\n").map((line) => JSON.parse(line));
    assert.equal(rows.length, 3);
    rows.forEach((row, index) => {
      assert.equal(row.index, index);
      assert.equal(row.address, cluster.addresses[index]);
      assert.equal(row.reachable, true);
      assert.equal(row.status, "normal");
      assert.equal(row.viewNumber, 0);
      assert.equal(row.lag, 0);
      assert.equal(row.pid, cluster.pids[index]);
    });
    assert.deepEqual(
      rows.filter((row) => row.role === "primary").map((row) => row.index),
      [0],
      "exactly one primary, replica 0 in view 0",
    );
  });
});

Deno.test("status --digest: replicas at one commit-number report one state digest", async () => {
  await withCluster(3, async (cluster) => {
    const client = await connectClient(cluster);
    try {
      const digestRows = () => statusRows(cluster.configPath, { digest: true });
      const empty = (await digestRows())[0]!.digest;
      for (let i = 0; i < 5; i++) await set(client, `key-${i}`, `value-${i}`);
      // The backups learn the last commit from the next Commit or Prepare: wait for it.
      const rows = await waitFor(
        async () => {
          const rows = await digestRows();
          return rows.every((row) => row.commitNumber === 5) ? rows : undefined;
        },
        SETTLE_TIMEOUT_MS,
        () => "every replica to commit op 5",
      );
      assert.ok(typeof rows[0]!.digest === "string" && rows[0]!.digest.length > 0);
      assert.notEqual(rows[0]!.digest, empty, "five SETs changed the state");
      assert.deepEqual(rows.map((row) => row.digest), rows.map(() => rows[0]!.digest));
      // Without --digest the replicas are not asked for it; with it the table has a column.
      assert.equal((await statusRows(cluster.configPath))[0]!.digest, undefined);
      const table = await runVstamp(["status", "--config", cluster.configPath, "--digest"], {
        cwd: cluster.dir,
      });
      assert.equal(table.code, 0, table.stderr);
      assert.match(table.stdout, /DIGEST/);
      assert.ok(table.stdout.includes(rows[0]!.digest!), table.stdout);
    } finally {
      client.close();
    }
  });
});

/**
 * Runs `body` with a fresh cluster, and afterwards makes sure that none of its servers is left,
 * whether `body` stopped them or failed.
 */
async function withClusterToStop(n: number, body: (cluster: Cluster) => Promise<void>) {
  const cluster = await startCluster(n);
  let passed = false;
  try {
    await body(cluster);
    passed = true;
  } finally {
    await cluster.stop();
    if (!passed) {
      console.error(`cluster stdout:\n${cluster.output().stdout}`);
      console.error(`cluster stderr:\n${cluster.output().stderr}`);
      // The pids may be orphans now; kill the ones still running.
      for (const pid of cluster.pids) if (!processGone(pid)) signal(pid, "SIGKILL");
    }
  }
}

function describeAlive(pids: readonly number[]): string {
  return `alive: ${pids.filter((pid) => !processGone(pid)).join(", ") || "none"}`;
}

Deno.test("cluster up stops every child on SIGTERM", async () => {
  await withClusterToStop(3, async (cluster) => {
    const alive = await statusRows(cluster.configPath);
    assert.deepEqual(alive.map((row) => row.pid), cluster.pids, "every child serves");
    cluster.process.kill("SIGTERM");
    const status = await cluster.process.status;
    assert.equal(status.code, 0);
    await waitFor(
      () => cluster.pids.every(processGone),
      10_000,
      () => `every child gone; ${describeAlive(cluster.pids)}`,
    );
  });
});

Deno.test("cluster up children stop when the cluster is killed", async () => {
  await withClusterToStop(3, async (cluster) => {
    const alive = await statusRows(cluster.configPath);
    assert.deepEqual(alive.map((row) => row.pid), cluster.pids, "every child serves");
    cluster.process.kill("SIGKILL");
    await cluster.process.status;
    // Their stdin, held by the cluster, is closed: each stops on its own.
    await waitFor(
      () => cluster.pids.every(processGone),
      10_000,
      () => `every child gone; ${describeAlive(cluster.pids)}`,
    );
  });
});

// Regression: with --bind, a pending read of stdin once kept the process alive after SIGTERM.
Deno.test({
  name: "server started by cluster up exits on SIGTERM while its stdin is open",
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "vstamp-test-" });
    const server = new Deno.Command(Deno.execPath(), {
      args: vstampArgs([
        "server",
        "--index",
        "0",
        "--bind",
        "127.0.0.1:0",
        "--data-dir",
        `${dir}/data`,
        "--log-level",
        "warn",
      ]),
      cwd: dir,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const stdin = server.stdin.getWriter();
    try {
      const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      const port = await waitFor(
        async () => {
          const { value, done } = await reader.read();
          if (done) throw new Error(`stdout ended: ${text}`);
          text += value;
          return /listening (\d+)\n/.exec(text)?.[1];
        },
        10_000,
        "the server to print its port",
      );
      reader.releaseLock();
      server.stdout.cancel().catch(() => {});
      const address = `127.0.0.1:${port}`;
      const configPath = `${dir}/one.yaml`;
      await Deno.writeTextFile(configPath, renderConfig([address]));
      await stdin.write(encoder.encode(`${configPath}\n`));
      await waitFor(
        async () => (await statusRows([address]))[0]!.status === "normal",
        10_000,
        "the server to serve",
      );
      server.kill("SIGTERM");
      // Its stdin stays open, as under `cluster up`.
      const exited = await waitFor(
        () => Promise.race([server.status, new Promise((r) => setTimeout(r, 50, false))]),
        4_000,
        "the server to exit after SIGTERM",
      );
      assert.equal((exited as Deno.CommandStatus).code, 0);
    } finally {
      signalChild(server, "SIGKILL");
      await stdin.close().catch(() => {});
      await server.status;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test("cluster up --repl replaces, adds and removes replicas live (§7)", async () => {
  const result = await runClusterRepl([
    "SET a 1",
    "remove 1", // Refused: a group stays odd.
    "replace 2",
    "GET a",
    "add",
    "SET b 2",
    "remove 0 1",
    "GET a",
    "GET b",
    "members",
    "QUIT",
  ]);
  assert.equal(result.code, 0, result.stderr);
  const out = result.stdout;
  assert.match(out, /\(error\) usage: remove <i> <j>: a group needs an odd number of replicas/);
  for (const epoch of [1, 2, 3]) {
    assert.match(out, new RegExp(`epoch ${epoch} runs: a CheckEpoch committed`), out);
  }
  assert.match(out, /the old replicas .* left the group \(each exits by itself/);
  // SET a, GET a after the replacement, SET b, then GET a and GET b after the removal: the
  // values survive every epoch.
  const results = out.split("\n").filter((line) => line === "1" || line === "2");
  assert.deepEqual(results, ["1", "1", "2", "1", "2"], out);
  // The configuration file names the group's members now: three, in epoch 3.
  const rows = out.split("\n").filter((line) => /^\| \d+ /.test(line));
  assert.ok(rows.length >= 3, out);
  assert.equal(result.addressCount, 3);
});
