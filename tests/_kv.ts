/** Key-value requests through the client library, asserting what the store answers. */
import { strict as assert } from "node:assert";
import { decodeKvResult, encodeKvOperation, type KvResult } from "../src/app/kv.ts";
import type { Client } from "../src/client/client.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export async function kvRequest(
  client: Client,
  operation: Parameters<typeof encodeKvOperation>[0],
): Promise<KvResult> {
  return decodeKvResult(await client.request(encodeKvOperation(operation)));
}

/** SET `key` `value`, asserting the store answers with the value. */
export async function set(client: Client, key: string, value: string): Promise<void> {
  const result = await kvRequest(client, {
    command: "SET",
    key: encoder.encode(key),
    value: encoder.encode(value),
  });
  assert.deepEqual(result, { kind: "bytes", value: encoder.encode(value) }, `SET ${key}`);
}

/** GET `key`: its value as text, or null. */
export async function get(client: Client, key: string): Promise<string | null> {
  const result = await kvRequest(client, { command: "GET", key: encoder.encode(key) });
  if (result.kind === "nil") return null;
  assert.equal(result.kind, "bytes", `GET ${key} gave ${JSON.stringify(result)}`);
  return decoder.decode((result as { value: Uint8Array }).value);
}
