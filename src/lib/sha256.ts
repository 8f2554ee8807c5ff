/**
 * SHA-256, synchronous, from the runtime's native implementation (about ten times the speed of
 * hashing in JavaScript). Drivers hand it to the protocol core (`ReplicaOptions.chunkHash`), which
 * names checkpoint chunks by it (§5.1) and, being pure, imports nothing that reaches the runtime.
 *
 * @module
 */
import { createHash } from "node:crypto";

/** The SHA-256 of `bytes`, 32 bytes. */
export function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(bytes).digest());
}
