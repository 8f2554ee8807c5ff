/**
 * Mutated authenticated replica frames against a real group: a process holding the cluster
 * secret poses as replicas and sends fuzzed frames (`tests/_fuzz.ts`) to every replica while a
 * client writes. No replica may crash, and afterwards the group must serve and converge. (The
 * benchmark `bench/fuzz_frames.ts` runs a million frames; this runs a bounded number.)
 */
import { strict as assert } from "node:assert";
import { KvClient } from "../src/client/kv_client.ts";
import { loadConfig, loadIdentity, parseAddress } from "../src/config.ts";
import { type FuzzContext, fuzzGroup } from "./_fuzz.ts";
import { primaryRow, startCluster, statusRows, waitFor } from "./_process.ts";

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
      const { identity } = await loadIdentity(await loadConfig(cluster.configPath));
      const addresses = cluster.addresses.map((text) =>
        parseAddress(text) as {
          host: string;
          port: number;
        }
      );
      let writing = true;
      let acknowledged = 0;
      const writer = (async () => {
        for (let i = 0; writing; i++) {
          await kv.set(`key${i % 4}`, `value${i}`);
          acknowledged++;
        }
      })();
      const context = async (): Promise<FuzzContext> => {
        const primary = primaryRow(await statusRows(cluster.configPath));
        return {
          viewNumber: primary?.viewNumber ?? 0,
          opNumber: primary?.opNumber ?? 0,
          commitNumber: primary?.commitNumber ?? 0,
        };
      };
      const report = await fuzzGroup({
        addresses,
        identity,
        frames: FRAMES,
        seed,
        mutateProbability: 0.2,
        context,
      });
      writing = false;
      await writer.catch((error) => {
        throw new Error(`seed ${seed}: a write failed during the fuzz: ${error}`);
      });
      console.log(
        `fuzz seed ${seed}: ${report.frames} frames in ${report.seconds.toFixed(1)} s, ` +
          `${report.reconnects} links closed by the replicas, ${acknowledged} writes acknowledged`,
      );
      // `cluster up` reports a replica that exits ("replica 0 (pid 123) exited with code 1"); a
      // signal to every replica must find it still running.
      for (const [index, pid] of cluster.pids.entries()) {
        let alive = true;
        try {
          Deno.kill(pid, "SIGCONT");
        } catch {
          alive = false;
        }
        assert.ok(
          alive && !/exited with code/.test(cluster.output().stderr),
          `seed ${seed}: replica ${index} died; the output:\n${cluster.output().stderr}`,
        );
      }
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
