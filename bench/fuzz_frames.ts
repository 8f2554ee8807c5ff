/**
 * A million fuzzed, authenticated replica frames against a real 3-replica group (the test
 * `tests/fuzz_test.ts` runs 20,000): a process holding the cluster secret poses as replicas and
 * sends frames from `tests/_fuzz.ts` to every replica while a client writes. At the end it checks
 * that no replica died, that the group serves, and that the replicas converged, and prints what
 * it measured, with whether the replicas' state digests agree (a lying peer may make them
 * disagree: VR tolerates crashes, not lies; see the README).
 *
 * Usage: deno run -A bench/fuzz_frames.ts [--frames N] [--seed S] [--mutate P]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { KvClient } from "../src/client/kv_client.ts";
import { fuzzWhileWriting, replicasAlive } from "../tests/_fuzz.ts";
import { startCluster, statusRows, waitFor } from "../tests/_process.ts";

const { values } = parseArgs({
  options: {
    frames: { type: "string", default: "1000000" },
    seed: { type: "string", default: String(Date.now() % 1_000_000) },
    mutate: { type: "string", default: "0.2" },
  },
});
const frames = Number(values.frames);
const seed = Number(values.seed);
const cluster = await startCluster(3, { sync: "none" });
const kv = await KvClient.connect({ addresses: cluster.addresses, deadlineMs: 30_000 });
let exitCode = 0;
try {
  let printed = 0;
  const report = await fuzzWhileWriting(cluster, kv, {
    frames,
    seed,
    mutateProbability: Number(values.mutate),
    onProgress: (sent) => {
      if (sent >= printed + 100_000) {
        printed = sent - (sent % 100_000);
        console.error(`  ${sent} frames sent`);
      }
    },
  });
  const alive = replicasAlive(cluster);
  await kv.set("after", "fuzz");
  const rows = await waitFor(
    async () => {
      const rows = await statusRows(cluster.configPath, { digest: true });
      const first = rows[0]!;
      return rows.every((row) =>
          row.reachable && row.status === "normal" && row.viewNumber === first.viewNumber &&
          row.opNumber === first.opNumber && row.commitNumber === first.commitNumber
        )
        ? rows
        : undefined;
    },
    60_000,
    "the replicas to converge",
  );
  const digests = new Set(rows.map((row) => row.digest));
  console.log(JSON.stringify({
    seed,
    frames: report.frames,
    seconds: Number(report.seconds.toFixed(1)),
    frames_per_s: Math.round(report.frames / report.seconds),
    links_closed_by_replicas: report.reconnects,
    writes_acknowledged: report.acknowledged,
    replicas_alive: alive,
    view: rows[0]!.viewNumber,
    op: rows[0]!.opNumber,
    digests_agree: digests.size === 1,
  }));
  if (alive.includes(false)) exitCode = 1;
} finally {
  kv.close();
  await cluster.stop();
}
Deno.exit(exitCode);
