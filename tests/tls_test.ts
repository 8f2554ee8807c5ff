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
import { connectTo } from "../src/transport/tls.ts";

/** A self-signed CA certificate (PEM) made with openssl in `dir`. */
async function makeCa(dir: string): Promise<string> {
  const output = await new Deno.Command("openssl", {
    args: [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      "other-ca.key",
      "-out",
      "other-ca.pem",
      "-days",
      "1",
      "-subj",
      "/CN=another CA",
    ],
    cwd: dir,
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  return await Deno.readTextFile(`${dir}/other-ca.pem`);
}

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
      // Another CA (a real one, made here) does not verify the group's certificate: the
      // connection fails at the certificate, not for want of a parsable CA.
      const otherCa = await makeCa(cluster.dir);
      await assert.rejects(
        connectTo(address.host, address.port, { caCerts: [otherCa] }),
        /certificate|issuer/i,
      );
      await assert.rejects(
        KvClient.connect({
          addresses: cluster.addresses,
          tls: { caCerts: [otherCa] },
          deadlineMs: 1_500,
        }),
        ClientError,
      );
      // The group's own CA does, on the same path.
      (await connectTo(address.host, address.port, tls)).close();
      const rows = await statusRows(cluster.addresses, { tls });
      assert.ok(rows.every((row) => row.reachable && row.status === "normal"));
    } finally {
      await cluster.stop();
    }
  },
});
