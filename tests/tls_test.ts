/**
 * TLS on every connection (`src/transport/tls.ts`): `cluster up --tls` makes a local CA and a
 * certificate, the replicas link over TLS, and a client that verifies the CA is served; one that
 * speaks plain TCP, or trusts another CA, is not.
 */
import { strict as assert } from "node:assert";
import { ClientError } from "../src/client/client.ts";
import { KvClient } from "../src/client/kv_client.ts";
import { loadConfig, loadTls } from "../src/config.ts";
import { startCluster, statusRows } from "./_process.ts";
import { fetchStatus } from "../src/client/status.ts";
import { parseAddress } from "../src/config.ts";

Deno.test({
  name: "a group under TLS serves clients that verify its CA, and no others",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const cluster = await startCluster(3, { sync: "none", tls: true });
    try {
      const config = await loadConfig(cluster.configPath);
      const tls = await loadTls(config);
      assert.ok(tls !== undefined && tls.caCerts.length === 1);
      const kv = await KvClient.connect({ addresses: cluster.addresses, tls, deadlineMs: 10_000 });
      try {
        await kv.set("secret", "over tls");
        assert.equal(await kv.getString("secret"), "over tls");
      } finally {
        kv.close();
      }
      // The replicas' links run over TLS too: every replica is normal in one view, and a status
      // query needs the CA as well.
      const address = parseAddress(cluster.addresses[0]!) as { host: string; port: number };
      const status = await fetchStatus(address, 2_000, { tls });
      assert.ok(!("error" in status), JSON.stringify(status));
      const plainStatus = await fetchStatus(address, 1_000);
      assert.ok("error" in plainStatus, "plain TCP gets no status from a TLS replica");
      await assert.rejects(
        KvClient.connect({ addresses: cluster.addresses, deadlineMs: 1_500 }),
        ClientError,
      );
      // A CA of its own does not verify the group's certificate.
      const selfSigned = tls.caCerts[0]!.replace(/[A-Za-z0-9+/]{8}(?=\n)/, "AAAAAAAA");
      await assert.rejects(
        KvClient.connect({
          addresses: cluster.addresses,
          tls: { caCerts: [selfSigned] },
          deadlineMs: 1_500,
        }),
      );
      const rows = await statusRows(cluster.addresses, { tls });
      assert.ok(rows.every((row) => row.reachable && row.status === "normal"));
    } finally {
      await cluster.stop();
    }
  },
});
