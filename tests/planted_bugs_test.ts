import { strict as assert } from "node:assert";
import { runSimulation, type SimulationOptions } from "../src/sim/simulator.ts";
import type { PlantedBug } from "../src/vr/replica.ts";

/**
 * Test the tester: each planted bug must make some seed fail within a bounded number of seeds,
 * and the failure must be the kind of violation the bug causes.
 */
function firstFailure(
  bug: PlantedBug,
  seedsMax: number,
  from = 1,
  options: Partial<SimulationOptions> = {},
) {
  for (let seed = from; seed < from + seedsMax; seed++) {
    const result = runSimulation({ ...options, seed, plantedBug: bug });
    if (!result.ok) return { seed, failure: result.failure ?? "" };
  }
  return undefined;
}

Deno.test("planted bug commit with too few PrepareOks is caught within 20 seeds", () => {
  const found = firstFailure("commit_with_too_few_prepare_oks", 20);
  assert.ok(found, "no seed failed");
  assert.match(found.failure, /lacks committed op|agreement|linearizab|differs/);
});

Deno.test("planted bug DoViewChange log chosen by op-number is caught within 600 seeds", () => {
  // With the core's checkpoint limits: with the small ones most seeds draw, the first seed that
  // catches it is 942 (measured), too many for the suite.
  const found = firstFailure("do_view_change_log_by_op_number", 600, 1, {
    defaultCheckpoints: true,
  });
  assert.ok(found, "no seed failed");
  assert.match(found.failure, /lacks committed op|agreement|differs|linearizab/);
});

Deno.test("planted bug retried request executed twice is caught within 20 seeds", () => {
  const found = firstFailure("execute_retried_request_twice", 20);
  assert.ok(found, "no seed failed");
  assert.match(found.failure, /exactly once/);
});

Deno.test("planted bug recovery without the nonce check is caught within 300 seeds", () => {
  // A replica crashes while recovering and the answers to its old Recovery reach the new one.
  const found = firstFailure("recovery_without_nonce_check", 300);
  assert.ok(found, "no seed failed");
  assert.match(found.failure, /recovered in view \d+ without op \d+/);
});

Deno.test("planted bug checkpoint without the client table is caught within 50 seeds", () => {
  // §5.1: a replica restored from such a checkpoint forgets who it served; a retried request
  // would execute again. Caught as soon as its table differs from the model's.
  const found = firstFailure("checkpoint_without_client_table", 50);
  assert.ok(found, "no seed failed");
  assert.match(found.failure, /client table at op \d+ differs|exactly once/);
  assert.ok(runSimulation({ seed: found.seed }).ok, "the correct core passes that seed");
});

Deno.test("planted bug truncating above the checkpoint is caught within 50 seeds", () => {
  const found = firstFailure("truncate_above_checkpoint", 50);
  assert.ok(found, "no seed failed");
  assert.match(found.failure, /beyond its checkpoint|without a checkpoint/);
  assert.ok(runSimulation({ seed: found.seed }).ok, "the correct core passes that seed");
});

Deno.test("planted bug installing an incomplete checkpoint is caught within 50 seeds", () => {
  const found = firstFailure("install_incomplete_checkpoint", 50);
  assert.ok(found, "no seed failed");
  assert.match(found.failure, /state digest at op \d+ differs|linearizab|differs from the model/);
  assert.ok(runSimulation({ seed: found.seed }).ok, "the correct core passes that seed");
});

Deno.test("correct core passes the seeds that catch the planted bugs", () => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) {
    const result = runSimulation({ seed });
    assert.ok(result.ok, `seed ${seed}: ${result.failure}`);
  }
});

Deno.test("planted bug GetState on every NewState is caught as a message storm", () => {
  // The seed that found the bug (see tests/sim_test.ts): with the fix removed, duplicated
  // NewStates multiply the GetStates in flight until the pending events pass the storm bound.
  // Reads go through the log, as they all did when the seed was found.
  const result = runSimulation({
    seed: 788778535,
    load: "high",
    plantedBug: "get_state_on_every_new_state",
    readsWithoutLog: false,
    // And without checkpoints: a replica that far behind now fetches one instead.
    defaultCheckpoints: true,
    // And without the reconfiguration seeds draw since §7.
    reconfigure: false,
  });
  assert.equal(result.ok, false);
  assert.match(result.failure ?? "", /message storm: \d+ events pending/);
});

Deno.test("planted bug read without a read round is caught within 1,000 seeds", () => {
  // A client whose guess of the primary is stale reads from a deposed primary, which answers
  // from its old state. Rarer than the others: about 2 seeds in 1,000 catch it (first at 710).
  const found = firstFailure("read_without_round", 1_000);
  assert.ok(found, "no seed failed");
  assert.match(found.failure, /a stale read at op \d+; op \d+ was committed before it was sent/);
  assert.ok(runSimulation({ seed: found.seed }).ok, "the correct core passes that seed");
});

Deno.test("planted bug reply by number only is caught when restarted clients reuse numbers", () => {
  // Restarted clients number their requests as §4.5 suggests, from what the replicas know of
  // them, and reuse numbers; the planted bug then answers a new request with an old one's reply.
  const found = firstFailure("reply_by_number_only", 300, 1, { restartNumbering: "query" });
  assert.ok(found, "no seed failed");
  assert.match(
    found.failure,
    /answers an operation no client sent under it|uncommitted request|read differs from the model/,
  );
  const correct = runSimulation({ seed: found.seed, restartNumbering: "query" });
  assert.doesNotMatch(
    correct.failure ?? "",
    /answers an operation no client sent under it|uncommitted request|read differs from the model/,
  );
});

Deno.test("planted simulator bug: a damaged log handed over as trusted loses a committed op", () => {
  // The simulator's disk, as a data directory would that took damage in the middle of the log for
  // a torn tail: the replica restarts from the intact prefix as if it were its whole log, without
  // entries it acknowledged. Once a view change takes its log (with a lagging replica's, which
  // lacks them too), a committed op is gone. About 4 seeds in 1,000 catch it (first at 497).
  let found: { seed: number; failure: string } | undefined;
  for (let seed = 1; seed <= 1_500 && found === undefined; seed++) {
    const result = runSimulation({ seed, replicas: 3, trustDamagedLogs: true });
    if (!result.ok) {
      assert.ok(result.stats.corruptedLogs > 0, `seed ${seed} failed without a damaged log`);
      found = { seed, failure: result.failure ?? "" };
    }
  }
  assert.ok(found, "no seed failed");
  assert.match(
    found.failure,
    /lacks committed op|agreement|without op \d+|linearizab|differs|before the Reconfiguration/,
  );
  // The same seed, with the damaged log handed over as the data directory does (untrusted, the
  // superblock marked recovering): the replica recovers (§4.3) and nothing is lost.
  const correct = runSimulation({ seed: found.seed, replicas: 3 });
  assert.ok(correct.ok, `seed ${found.seed}: ${correct.failure}`);
  assert.ok(correct.stats.corruptedLogs > 0 && correct.stats.recoveries > 0);
});

// §7 reconfiguration. Measured: the first seed that catches each is 1, 13 and 37.

Deno.test("planted bug new epoch started before the Reconfiguration committed is caught", () => {
  const found = firstFailure("start_epoch_before_reconfiguration_committed", 40);
  assert.ok(found, "no seed failed");
  // Most often as a new member normal in the new epoch before it executed the Reconfiguration.
  assert.match(
    found.failure,
    /before the Reconfiguration at op|lacks committed op|agreement|differs|linearizab|not converged/,
  );
  assert.ok(runSimulation({ seed: found.seed }).ok, "the correct core passes that seed");
});

Deno.test("planted bug old replicas shut down before f'+1 EpochStarted is caught", () => {
  // The new group is left with one member holding the state; losing it stalls the group.
  // (It needs a new member with the state to lose its log as the old ones go: seed 85 first.)
  const found = firstFailure("shut_down_before_quorum_started", 150);
  assert.ok(found, "no seed failed");
  assert.match(found.failure, /not converged|lacks committed op|agreement|differs/);
  assert.ok(runSimulation({ seed: found.seed }).ok, "the correct core passes that seed");
});

Deno.test("planted bug request accepted by the old primary after the Reconfiguration is caught", () => {
  // Only requests that reach the old primary between its Reconfiguration and the commit count.
  const found = firstFailure("accept_request_after_reconfiguration", 120);
  assert.ok(found, "no seed failed");
  assert.match(found.failure, /agreement|differs|linearizab|lacks committed op/);
  assert.ok(runSimulation({ seed: found.seed }).ok, "the correct core passes that seed");
});
