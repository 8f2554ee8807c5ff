/**
 * §7 A data directory records the id of its replica: a restart under another replica's identity
 * (a wrong `--index`, another replica's directory) is refused with a message naming both.
 */
import { strict as assert } from "node:assert";
import { KvStore } from "../src/app/kv.ts";
import { parseConfig, renderConfig } from "../src/config.ts";
import { REPLICA_ID_FILE } from "../src/storage/data_dir.ts";
import { ReplicaNode } from "../src/transport/node.ts";

async function startAs(index: number, dataDir: string, addresses: string[]): Promise<ReplicaNode> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    return await ReplicaNode.start({
      config: parseConfig(renderConfig(addresses), "test.yaml"),
      index,
      dataDir,
      sync: "none",
      app: new KvStore(),
      listener,
      log: () => {},
    });
  } catch (error) {
    listener.close();
    throw error;
  }
}

Deno.test("§7 a data directory refuses to run as another replica than the one it recorded", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "vstamp_identity_test_" });
  // Three addresses nobody listens on but the one started: the node starts without its peers.
  const addresses = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"];
  try {
    const first = await startAs(1, dataDir, addresses);
    await first.close();
    assert.equal(await Deno.readTextFile(`${dataDir}/${REPLICA_ID_FILE}`), "1\n");
    await assert.rejects(
      () => startAs(0, dataDir, addresses),
      /is the data directory of replica 1 \(127\.0\.0\.1:2\), not of replica 0 \(127\.0\.0\.1:1\): a wrong --index/,
    );
    // Its own index still starts, even on other ports (as `cluster up` gives it).
    const again = await startAs(1, dataDir, ["127.0.0.1:4", "127.0.0.1:5", "127.0.0.1:6"]);
    await again.close();
    // A damaged record is named, not guessed around.
    await Deno.writeTextFile(`${dataDir}/${REPLICA_ID_FILE}`, "one\n");
    await assert.rejects(() => startAs(1, dataDir, addresses), /replica\.id: not a replica id/);
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
