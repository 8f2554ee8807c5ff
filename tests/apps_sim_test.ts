/**
 * The simulator with apps other than the key-value store (`vstamp sim --app`): the examples pass
 * sweeps, a planted bug that reads the replica's clock in `apply` is caught as divergence, and a
 * throwing `apply` crashes no replica.
 */
import { strict as assert } from "node:assert";
import { fileURLToPath } from "node:url";
import { runSimulation } from "../src/sim/simulator.ts";
import { runSweep } from "../src/sim/sweep.ts";
import { app as counterApp } from "../examples/counter.ts";
import { app as ledgerApp } from "../examples/ledger.ts";
import { app as wallClockApp } from "./_apps/ledger_wall_clock.ts";
import { app as throwingApp } from "./_apps/throwing_counter.ts";
import { badQueryApp, readOnlyAllApp } from "./_apps/counter_bad_reads.ts";
import { runVstamp } from "./_process.ts";

/** Seeds per example in the suite; `vstamp sim --app ... --seeds 500` for more (README). */
const SEEDS = 30;

for (const app of [counterApp, ledgerApp]) {
  Deno.test(`sim: ${app.name} passes ${SEEDS} seeds, with faults, checkpoints and new epochs`, () => {
    let committed = 0;
    let transfers = 0;
    let epochs = 0;
    for (let seed = 1; seed <= SEEDS; seed++) {
      const result = runSimulation({ seed, app });
      assert.ok(result.ok, `seed ${seed}: ${result.failure}`);
      committed += result.stats.opsCommitted;
      transfers += result.stats.checkpointTransfers;
      epochs += result.stats.epochsStarted;
    }
    // The sweep exercised the app, not an idle group.
    assert.ok(committed > SEEDS * 100, `${committed} ops committed`);
    assert.ok(transfers > 0, "a checkpoint of the app was sent to another replica");
    assert.ok(epochs > 0, "a reconfiguration committed");
  });
}

Deno.test("sim: a ledger that reads Date.now() in apply is caught as divergence", () => {
  const failures = [1, 2, 3, 4, 5]
    .map((seed) => runSimulation({ seed, app: wallClockApp }))
    .filter((result) => !result.ok);
  // The replicas record the moment each applied a hold: any two that applied it in different
  // milliseconds differ (it fails on all five seeds here; one is enough to prove the check).
  assert.ok(failures.length > 0, "no seed caught the wall clock");
  for (const result of failures) {
    assert.match(result.failure!, /state digest at op \d+ differs from the model/);
  }
});

for (
  const [app, wrong] of [
    [badQueryApp, /differs from apply's result .*query must answer what apply would/],
    // (An INCR by 0 changes nothing, but its answer still is not apply's.)
    [readOnlyAllApp, /answered without the log, but apply changes the state|differs from apply's/],
  ] as const
) {
  Deno.test(`sim: reads without the log are checked against apply (${app.name} is caught)`, () => {
    let failure: string | undefined;
    for (let seed = 1; seed <= 20 && failure === undefined; seed++) {
      failure = runSimulation({ seed, app }).failure;
    }
    assert.match(failure ?? "no seed failed", wrong);
  });
}

Deno.test("sim: an apply that throws deterministically crashes no replica and diverges none", () => {
  for (let seed = 1; seed <= 5; seed++) {
    const result = runSimulation({ seed, app: throwingApp });
    assert.ok(result.ok, `seed ${seed}: ${result.failure}`);
    assert.ok(result.stats.opsCommitted > 50);
  }
});

Deno.test("sim: a sweep loads the app module by path in its workers", async () => {
  const failed: number[] = [];
  const summary = await runSweep({
    from: 1,
    count: 4,
    jobs: 1,
    app: fileURLToPath(new URL("./_apps/ledger_wall_clock.ts", import.meta.url)),
    onResult: (result) => result.ok || failed.push(result.seed),
  });
  // The worker ran the planted bug, not the key-value store: it fails where the KV passes.
  assert.equal(summary.passed + summary.failed.length, 4);
  assert.ok(summary.failed.length > 0, "the worker ran the module given");
  assert.match(summary.failed[0]!.failure!, /differs from the model/);
});

Deno.test("vstamp sim --app refuses an app without a workload, in one line", async () => {
  const result = await runVstamp(["sim", "--app", "tests/_apps/no_workload.ts", "--seeds", "1"]);
  assert.equal(result.code, 2);
  assert.equal(
    result.stderr.trim(),
    "--app tests/_apps/no_workload.ts: app counter@1 has no `workload`, which the simulator " +
      'needs to draw operations (see README, "Your own app")',
  );
});
