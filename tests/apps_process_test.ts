/**
 * App modules on real processes: `cluster up --app <module> --repl` driven over stdin for both
 * examples, and a REPL for one app refused by a group running another.
 */
import { strict as assert } from "node:assert";
import {
  runClusterRepl,
  runVstamp,
  startServer,
  statusRows,
  waitFor,
  withCluster,
} from "./_process.ts";

/** Runs `cluster up -n 3 --app <app> --repl` with `script` as stdin: the lines after the table. */
async function clusterRepl(app: string, script: readonly string[]) {
  const result = await runClusterRepl(
    script,
    ["--app", new URL(`../${app}`, import.meta.url).pathname],
    60_000,
  );
  assert.equal(result.code, 0, result.stderr);
  // The results follow the table and the "configuration written" line.
  const lines = result.stdout.split("\n");
  return lines.slice(lines.findIndex((line) => line.startsWith("configuration written")) + 1)
    .filter((line) => line !== "");
}

Deno.test("cluster up --app examples/counter.ts --repl runs the counter's commands", async () => {
  const out = await clusterRepl("examples/counter.ts", [
    "INCR visits 5",
    "incr visits -2",
    "GET visits",
    "INCR visits x",
    "SET a 1",
    "RESET visits",
    "GET visits",
    "QUIT",
  ]);
  assert.deepEqual(out, [
    "(integer) 5",
    "(integer) 3",
    "(integer) 3",
    "(error) by must be an integer, got x",
    `(error) ERR unknown command 'SET', type "help" for the list of commands`,
    "(integer) 0",
    "(integer) 0",
  ]);
});

Deno.test("cluster up --app examples/ledger.ts --repl runs the ledger's commands", async () => {
  const out = await clusterRepl("examples/ledger.ts", [
    "OPEN alice",
    "OPEN bob",
    "DEPOSIT alice 100",
    "TRANSFER alice bob 30",
    "TRANSFER alice bob 1000",
    "HOLD alice bob 20 600",
    "BALANCE alice",
    "CAPTURE 1",
    "BALANCE bob",
    "AUDIT",
    "QUIT",
  ]);
  assert.equal(out.length, 10, out.join("\n"));
  assert.deepEqual(out.slice(0, 5), [
    "OK",
    "OK",
    "alice: 100 available, 0 held",
    "alice: 70 available, 0 held",
    "(error) alice has only 70 available",
  ]);
  assert.match(out[5]!, /^hold 1 \(expires at \d{4}-\d\d-\d\dT/);
  assert.deepEqual(out.slice(6), [
    "alice: 50 available, 20 held",
    "bob: 50 available, 0 held",
    "bob: 50 available, 0 held",
    "supply 100, in accounts and holds 100, 2 accounts",
  ]);
});

Deno.test("a REPL for another app is refused by the group, naming both apps", async () => {
  await withCluster(1, async (cluster) => {
    const result = await runVstamp(
      ["repl", "--config", cluster.configPath, "--app", "examples/counter.ts"],
      { stdin: "INCR a\n" },
    );
    assert.equal(result.code, 1);
    assert.match(
      result.stderr,
      /refused: the client runs app counter@1, this replica runs kv@2 \(every replica of a group/,
    );
    // At the refusal, not at the client's deadline (which would say "no answer within").
    assert.match(result.stderr, /cannot use the group: /);
    assert.doesNotMatch(result.stderr, /no answer within/);
  }, { sync: "none" });
});

Deno.test("cluster up --app with a broken module is one line before anything starts", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vstamp-test-" });
  try {
    await Deno.writeTextFile(`${dir}/app.ts`, "export const app = { name: 'x' };\n");
    const result = await runVstamp(
      ["cluster", "up", "--app", "app.ts", "--config-out", "c.yaml", "--data-dir", "data"],
      { cwd: dir },
    );
    assert.equal(result.code, 2);
    assert.equal(result.stderr.trim(), "--app app.ts: the exported app has no string `version`");
    assert.equal(await Deno.stat(`${dir}/c.yaml`).then(() => true, () => false), false);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("a replica started with another app is refused by its peers, naming both apps", async () => {
  await withCluster(3, async (cluster) => {
    await cluster.killReplica(2);
    const server = startServer(2, cluster.configPath, `${cluster.dir}/other-2`, {
      sync: "none",
      cwd: cluster.dir,
      args: ["--app", new URL("../examples/counter.ts", import.meta.url).pathname],
    });
    try {
      await waitFor(
        () =>
          /refused: the replica runs app counter@1, this replica runs kv@2/.test(
            server.output().stderr,
          ),
        15_000,
        "the peers' refusal in the counter replica's log",
      );
      // The two replicas of the key-value store go on serving without it.
      const rows = await statusRows(cluster.configPath);
      assert.equal(rows.filter((row) => row.status === "normal" && row.index < 2).length, 2);
    } finally {
      await server.stop();
    }
  }, { sync: "none" });
});

Deno.test("a data directory of one app refuses to start a replica of another", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vstamp-test-" });
  try {
    const ledger = new URL("../examples/ledger.ts", import.meta.url).pathname;
    const args = ["--config-out", "c.yaml", "--data-dir", "data", "--sync", "none"];
    const first = await runVstamp(
      ["cluster", "up", "-n", "1", "--app", ledger, "--repl", ...args],
      { stdin: "OPEN alice\nQUIT\n", cwd: dir, timeoutMs: 60_000 },
    );
    assert.equal(first.code, 0, first.stderr);
    assert.equal(await Deno.readTextFile(`${dir}/data/replica-0/app.id`), "ledger@1\n");
    // The check comes before the replica listens: the port in c.yaml is never bound.
    const server = ["server", "--index", "0", "--config", "c.yaml", "--data-dir", "data/replica-0"];
    const counter = new URL("../examples/counter.ts", import.meta.url).pathname;
    const wrong = await runVstamp([...server, "--app", counter, "--sync", "none"], { cwd: dir });
    assert.equal(wrong.code, 1);
    assert.equal(
      wrong.stderr.trim(),
      "Cannot start replica 0: data/replica-0 holds the state of app ledger@1, not counter@1: " +
        "a wrong --app, or another group's data directory",
    );
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("cluster up --app --repl: a replica that joins (§7) runs the app and gets its state", async () => {
  const out = await clusterRepl("examples/counter.ts", [
    "INCR a 3",
    "replace 2",
    "remove 0 1",
    "GET a", // Answered by a group of the new replica alone.
    "QUIT",
  ]);
  assert.ok(out.some((line) => /^epoch 2 runs: /.test(line)), out.join("\n"));
  assert.deepEqual(out.filter((line) => line.startsWith("(")), ["(integer) 3", "(integer) 3"]);
});

Deno.test("bench --app sends the app's workload to a group of that app", async () => {
  const counter = new URL("../examples/counter.ts", import.meta.url).pathname;
  await withCluster(1, async (cluster) => {
    const result = await runVstamp([
      "bench",
      "--config",
      cluster.configPath,
      "--app",
      counter,
      "--requests",
      "200",
      "--warmup",
      "0",
      "--json",
    ], { cwd: cluster.dir });
    assert.equal(result.code, 0, result.stderr);
    const report = JSON.parse(result.stdout.trim().split("\n").at(-1)!);
    assert.equal(report.app, "counter@1");
    assert.equal(report.ops, 200);
    assert.equal(report.errors, 0);
    // The workload's INCRs and RESETs went through the log (its GETs need none): about 70%.
    const [row] = await statusRows(cluster.configPath);
    assert.ok(row!.commitNumber! > 100, `commit ${row!.commitNumber}`);
  }, { sync: "none", args: ["--app", counter] });
});
