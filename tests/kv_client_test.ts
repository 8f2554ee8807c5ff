import { strict as assert } from "node:assert";
import { KEY_SIZE_MAX, VALUE_SIZE_MAX } from "../src/app/kv.ts";
import { ClientError } from "../src/client/client.ts";
import { KvClient, KvError } from "../src/client/kv_client.ts";
import { withNode } from "./_node.ts";

/** A one-replica group in this process (`tests/_node.ts`). */
function withGroup(body: (address: string) => Promise<void>): Promise<void> {
  return withNode({}, ({ address }) => body(address));
}

Deno.test("KvClient set, get, del and size against a live replica", async () => {
  await withGroup(async (address) => {
    const kv = await KvClient.connect({ addresses: [address] });
    try {
      assert.equal(await kv.get("missing"), null);
      await kv.set("greeting", "hello world");
      await kv.set(new Uint8Array([0, 255]), new Uint8Array([1, 2, 3]));
      assert.equal(await kv.getString("greeting"), "hello world");
      assert.deepEqual(await kv.get(new Uint8Array([0, 255])), new Uint8Array([1, 2, 3]));
      assert.equal(await kv.size(), 2);
      assert.equal(await kv.del("greeting"), true);
      assert.equal(await kv.del("greeting"), false);
      assert.equal(await kv.size(), 1);
    } finally {
      kv.close();
    }
  });
});

Deno.test("KvClient turns an error result into a KvError naming the command", async () => {
  await withGroup(async (address) => {
    const kv = await KvClient.connect({ addresses: [address] });
    try {
      await assert.rejects(
        kv.set(new Uint8Array(KEY_SIZE_MAX + 1), "v"),
        (error: unknown) =>
          error instanceof KvError &&
          /^SET: key is \d+ bytes, the limit is \d+/.test(error.message),
      );
      // The store is unchanged and the client goes on.
      assert.equal(await kv.size(), 0);
    } finally {
      kv.close();
    }
  });
});

Deno.test("a value too large for an operation is refused at once, naming the limit", async () => {
  await withGroup(async (address) => {
    const kv = await KvClient.connect({ addresses: [address], deadlineMs: 30_000 });
    try {
      const started = Date.now();
      await assert.rejects(
        kv.set("big", new Uint8Array(2 * 1024 * 1024)),
        (error: unknown) =>
          error instanceof ClientError &&
          /operation of \d+ bytes exceeds the limit of 2097152 bytes/.test(error.message),
      );
      // Not after the deadline, as when the primary dropped it unanswered.
      assert.ok(Date.now() - started < 5_000);
      // Over the store's own value limit but within an operation: the store's error.
      await assert.rejects(
        kv.set("big", new Uint8Array(VALUE_SIZE_MAX + 1)),
        (error: unknown) => error instanceof KvError && /value is \d+ bytes/.test(error.message),
      );
      assert.equal(await kv.size(), 0);
    } finally {
      kv.close();
    }
  });
});

Deno.test("a client restarted with its id numbers requests above its earlier run's, reads included", async () => {
  await withGroup(async (address) => {
    const first = await KvClient.connect({ addresses: [address], clientId: 4242 });
    await first.set("a", "1");
    // Reads are answered without the log (§6.3): the group keeps no record of their numbers.
    for (let i = 0; i < 20; i++) assert.equal(await first.getString("a"), "1");
    const last = first.client.requestNumber;
    first.close();
    const second = await KvClient.connect({ addresses: [address], clientId: 4242 });
    try {
      await second.set("a", "2");
      assert.ok(second.client.requestNumber > last, "no number of the earlier run is reused");
      assert.equal(await second.getString("a"), "2", "the restarted client's write ran");
    } finally {
      second.close();
    }
  });
});
