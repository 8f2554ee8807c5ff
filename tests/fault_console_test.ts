/**
 * The fault console of `cluster up --repl --faults`: pause the primary and watch a view change,
 * cut and heal links, kill a replica and restart it on its data, all from the REPL.
 */
import { strict as assert } from "node:assert";
import { runClusterRepl, runVstamp } from "./_process.ts";

/** The rows of every status table in `out`, as cells. */
function tableRows(out: string): string[][] {
  return out.split("\n").filter((line) => /^\| \d+ /.test(line)).map((line) =>
    line.split("|").slice(1, -1).map((cell) => cell.trim())
  );
}

Deno.test("cluster up --repl --faults: pause, cut, kill and restart replicas from the REPL", async () => {
  const script = [
    "SET a 1",
    "pause 0", // The primary of view 0 hangs: the backups elect another.
    "SET b 2",
    "status",
    "resume 0",
    "cut 0 1",
    "cut 1 2 one-way",
    "status",
    "heal",
    "kill 2",
    "kill 2", // Refused: not running.
    "SET c 3",
    "restart 2",
    "GET a",
    "isolate 1",
    "heal 0 9", // Refused: no replica 9.
    "heal",
    "help",
    "QUIT",
  ];
  const result = await runClusterRepl(script, ["--faults"]);
  assert.equal(result.code, 0, result.stderr);
  const out = result.stdout;
  assert.match(out, /^replica 0 \(pid \d+\) paused; `resume 0` lets it run$/m);
  // The write after the pause committed in a later view, with a new primary.
  const rows = tableRows(out);
  // Startup table (3 rows), then the status after the pause: replica 0 does not answer, and
  // the others are in view 1 or later.
  const afterPause = rows.slice(3, 6);
  assert.match(afterPause[0]!.join(" "), /no \(/, out);
  assert.ok(afterPause.slice(1).every((cells) => Number(cells[6]) >= 1), out);
  assert.match(out, /^down: none; paused: 0; links cut: none$/m);
  assert.match(out, /^replica 0 \(pid \d+\) resumed$/m);
  assert.match(out, /^cut: replicas 0 and 1 no longer hear each other$/m);
  assert.match(out, /^cut: what replica 1 sends to replica 2 is lost/m);
  assert.match(out, /links cut: 0->1, 1->0, 1->2$/m);
  assert.match(out, /^heal: every link carries messages again \(3 cut before\)$/m);
  assert.match(out, /^replica 2 \(pid \d+\) killed; `restart 2` brings it back on its data$/m);
  assert.match(out, /^\(error\) replica 2 is not running \(restart 2 starts it\)$/m);
  assert.match(out, /^replica 2 restarted \(pid \d+\); it recovers from its peers/m);
  assert.match(out, /^isolate: replica 1 hears no other replica/m);
  assert.match(out, /^\(error\) no replica 9: the group has 3/m);
  assert.match(out, /kill <i> +kill replica i's process/);
  // Every write was acknowledged and the read after them all sees the first.
  const values = out.split("\n").filter((line) => /^[123]$/.test(line));
  assert.deepEqual(values, ["1", "2", "3", "1"], out);
});

Deno.test("cluster up: --faults needs --repl, and cannot relay TLS", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vstamp-test-" });
  try {
    const common = ["--config-out", `${dir}/c.yaml`, "--data-dir", `${dir}/data`];
    const alone = await runVstamp(["cluster", "up", "--faults", ...common], { cwd: dir });
    assert.equal(alone.code, 2);
    assert.match(alone.stderr, /--faults is for the fault console of --repl: add --repl/);
    const tls = await runVstamp(["cluster", "up", "--repl", "--faults", "--tls", ...common], {
      cwd: dir,
      stdin: "QUIT\n",
    });
    assert.equal(tls.code, 2);
    assert.match(tls.stderr, /--faults cannot be used with --tls/);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
