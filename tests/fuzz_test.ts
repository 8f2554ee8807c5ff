/**
 * Mutated authenticated replica frames against a real group: a process holding the cluster
 * secret poses as replicas and sends fuzzed frames (`tests/_fuzz.ts`) to every replica while a
 * client writes. No replica may crash, and afterwards the group must serve and converge. (The
 * benchmark `bench/fuzz_frames.ts` runs a million frames; this runs a bounded number.)
 */
import { strict as assert } from "node:assert";
import { KvClient } from "../src/client/kv_client.ts";
import { fuzzWhileWriting, replicasAlive } from "./_fuzz.ts";
import { startCluster, statusRows, waitFor } from "./_process.ts";

const FRAMES = 20_000;
const CONVERGE_TIMEOUT_MS = 30_000;

Deno.test({
  name: "fuzzed authenticated replica frames crash no replica and leave the group serving",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const seed = Number(Deno.env.get("VSTAMP_FUZZ_SEED") ?? Date.now() % 1_000_000);
    const cluster = await startCluster(3, { sync: "none" });
    const kv = await KvClient.connect({ addresses: cluster.addresses, deadlineMs: 20_000 });
    try {
      const report = await fuzzWhileWriting(cluster, kv, {
        frames: FRAMES,
        seed,
        mutateProbability: 0.2,
      }).catch((error) => {
        throw new Error(`seed ${seed}: ${error}`);
      });
      console.log(
        `fuzz seed ${seed}: ${report.frames} frames in ${report.seconds.toFixed(1)} s, ` +
          `${report.reconnects} links closed by the replicas, ${report.acknowledged} writes acknowledged`,
      );
      replicasAlive(cluster).forEach((alive, index) =>
        assert.ok(
          alive,
          `seed ${seed}: replica ${index} died; the output:\n${cluster.output().stderr}`,
        )
      );
      // Served and converged: one view, every replica normal at one op- and commit-number.
      await kv.set("after", "fuzz");
      assert.equal(await kv.getString("after"), "fuzz");
      await waitFor(
        async () => {
          const rows = await statusRows(cluster.configPath);
          const first = rows[0]!;
          return rows.every((row) =>
            row.reachable && row.status === "normal" && row.viewNumber === first.viewNumber &&
            row.opNumber === first.opNumber && row.commitNumber === first.commitNumber
          );
        },
        CONVERGE_TIMEOUT_MS,
        `seed ${seed}: the replicas to converge`,
      );
      assert.ok(!/assert|uncaught|panic/i.test(cluster.output().stderr), cluster.output().stderr);
    } finally {
      kv.close();
      await cluster.stop();
    }
  },
});
