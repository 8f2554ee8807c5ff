/**
 * A typed client for the replicated key-value store: `get`, `set`, `del` and `size` over the
 * generic `Client`, which locates the group, follows the primary and retries.
 *
 * @module
 */
import { decodeKvResult, encodeKvOperation, type KvOperation, type KvResult } from "../app/kv.ts";
import { Client, ClientError, type ClientOptions } from "./client.ts";

/** The store answered with an error result (a malformed or oversized operation). */
export class KvError extends ClientError {
  /** "KvError". */
  override name = "KvError";
}

/** A key or value: bytes as they are, or a string in UTF-8. */
export type KvBytes = Uint8Array | string;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function bytesOf(value: KvBytes): Uint8Array {
  return typeof value === "string" ? encoder.encode(value) : value;
}

/** A client of the key-value store: `get`, `getString`, `set`, `del`, `size`. */
export class KvClient {
  /** The underlying protocol client (its id, the view it believes current). */
  readonly client: Client;

  private constructor(client: Client) {
    this.client = client;
  }

  /** Locate the group from `options.addresses` and return a client for the store. */
  static async connect(options: ClientOptions): Promise<KvClient> {
    return new KvClient(await Client.connect(options));
  }

  /** The value stored under `key`, or null when there is none. */
  async get(key: KvBytes): Promise<Uint8Array | null> {
    const result = await this.#run({ command: "GET", key: bytesOf(key) });
    if (result.kind === "nil") return null;
    if (result.kind === "bytes") return result.value;
    throw new KvError(`GET: unexpected ${result.kind} result`);
  }

  /** `get`, decoded as UTF-8. */
  async getString(key: KvBytes): Promise<string | null> {
    const value = await this.get(key);
    return value === null ? null : decoder.decode(value);
  }

  /** Store `value` under `key`, replacing any previous value. */
  async set(key: KvBytes, value: KvBytes): Promise<void> {
    const result = await this.#run({ command: "SET", key: bytesOf(key), value: bytesOf(value) });
    if (result.kind !== "bytes") throw new KvError(`SET: unexpected ${result.kind} result`);
  }

  /** Remove `key`; true if it was there. */
  async del(key: KvBytes): Promise<boolean> {
    return (await this.#integer({ command: "DEL", key: bytesOf(key) })) === 1;
  }

  /** The number of keys in the store. */
  size(): Promise<number> {
    return this.#integer({ command: "SIZE" });
  }

  /** Close the underlying client. */
  close(): void {
    this.client.close();
  }

  async #integer(operation: KvOperation): Promise<number> {
    const result = await this.#run(operation);
    if (result.kind !== "integer") {
      throw new KvError(`${operation.command}: unexpected ${result.kind} result`);
    }
    return result.value;
  }

  async #run(operation: KvOperation): Promise<KvResult> {
    const result = decodeKvResult(await this.client.request(encodeKvOperation(operation)));
    if (result.kind === "error") throw new KvError(`${operation.command}: ${result.message}`);
    return result;
  }
}
