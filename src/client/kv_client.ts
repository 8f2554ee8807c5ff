/**
 * A typed client for the replicated key-value store: `get`, `set`, `del` and `size` over the
 * generic `Client`, which locates the group, follows the primary and retries.
 *
 * @module
 */
import {
  BATCH_OPERATIONS_MAX,
  decodeKvBatchResult,
  decodeKvResult,
  encodeKvBatch,
  encodeKvOperation,
  type KvOperation,
  type KvResult,
} from "../app/kv.ts";
import { appTag } from "../app/app.ts";
import { kvApp } from "../app/kv_app.ts";
import { Client, ClientError, type ClientOptions } from "./client.ts";

/** The store answered with an error result (a malformed or oversized operation). */
export class KvError extends ClientError {
  /** "KvError". */
  override name = "KvError";
}

/** A key or value: bytes as they are, or a string in UTF-8. */
export type KvBytes = Uint8Array | string;

const encoder = new TextEncoder();
/**
 * The most bytes of operations `batch` puts in one request, below the group's 2 MiB limit on an
 * operation; a larger operation goes alone.
 */
export const BATCH_BYTES_MAX = 1024 * 1024;
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
    // It speaks the key-value store: a group of another app refuses it, naming both.
    return new KvClient(await Client.connect({ app: appTag(kvApp), ...options }));
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

  /**
   * Execute `operations` in this order, as few requests as they fit in (a batch: one request, one
   * log entry, or none if they only read, §6.3), each operation's result in its place, errors
   * included (they are not thrown). Operations of one batch execute together, nothing of any
   * other client between them; a long list goes as several batches, one after another.
   */
  async batch(operations: readonly KvOperation[]): Promise<KvResult[]> {
    const results: KvResult[] = [];
    while (results.length < operations.length) {
      results.push(...await this.batchOnce(operations.slice(results.length)));
    }
    return results;
  }

  /**
   * One request of `batch`: the longest prefix of `operations` that fits in one (at most
   * `BATCH_OPERATIONS_MAX` operations and `BATCH_BYTES_MAX` bytes; at least one), executed
   * together. Returns the results of the operations executed, in order: all of that prefix, or
   * fewer where the store stopped once its results reached `BATCH_RESULT_BYTES_MAX` (at least one).
   * A caller that must hold little (the RESP gateway) hands these on before the next request.
   */
  async batchOnce(operations: readonly KvOperation[]): Promise<KvResult[]> {
    if (operations.length === 0) return [];
    let bytes = 0;
    const encoded: KvOperation[] = [];
    for (const operation of operations) {
      if (encoded.length >= BATCH_OPERATIONS_MAX) break;
      const size = operationBytes(operation);
      if (encoded.length > 0 && bytes + size > BATCH_BYTES_MAX) break;
      encoded.push(operation);
      bytes += size;
    }
    if (encoded.length === 1) return [await this.#result(encoded[0]!)];
    const answer = decodeKvBatchResult(await this.client.request(encodeKvBatch(encoded)));
    if (!Array.isArray(answer)) throw new KvError(`BATCH: ${answer.message}`);
    if (answer.length === 0 || answer.length > encoded.length) {
      throw new KvError(`BATCH: ${answer.length} results for ${encoded.length} operations`);
    }
    return answer;
  }

  /** Close the underlying client. */
  close(): void {
    this.client.close();
  }

  async #result(operation: KvOperation): Promise<KvResult> {
    return decodeKvResult(await this.client.request(encodeKvOperation(operation)));
  }

  async #integer(operation: KvOperation): Promise<number> {
    const result = await this.#run(operation);
    if (result.kind !== "integer") {
      throw new KvError(`${operation.command}: unexpected ${result.kind} result`);
    }
    return result.value;
  }

  async #run(operation: KvOperation): Promise<KvResult> {
    const result = await this.#result(operation);
    if (result.kind === "error") throw new KvError(`${operation.command}: ${result.message}`);
    return result;
  }
}

/** About the bytes `operation` takes in a batch (its key and value, and a few of framing). */
/** About how many bytes `operation` takes in a batch (what `BATCH_BYTES_MAX` counts). */
export function operationBytes(operation: KvOperation): number {
  if (operation.command === "SIZE") return 8;
  return 16 + operation.key.byteLength +
    (operation.command === "SET" ? operation.value.byteLength : 0);
}
