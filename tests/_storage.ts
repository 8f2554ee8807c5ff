/**
 * Helpers of the storage tests (data directory, checkpoints, storage faults).
 *
 * @module
 */
import { DataDir, type DataDirOptions } from "../src/storage/data_dir.ts";
import type { LogEntry } from "../src/vr/message.ts";
import type { Effect, Superblock } from "../src/vr/replica.ts";

/** Runs `body` with the path of a data directory (not yet made) in a fresh temporary folder. */
export async function withDir(
  prefix: string,
  body: (path: string) => Promise<void>,
): Promise<void> {
  const root = await Deno.makeTempDir({ prefix });
  try {
    await body(`${root}/replica-0`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

/**
 * Opens without preallocation: most tests read the log file's layout, which is simplest when the
 * file ends where the records end. Preallocation has tests of its own.
 */
export function openDir(path: string, options: DataDirOptions = {}) {
  return DataDir.open(path, { logPreallocateBytes: 0, ...options });
}

export function logWrite(
  id: number,
  fromOpNumber: number,
  written: readonly LogEntry[],
  commitNumber: number,
): Effect {
  return { type: "persist_log", id, fromOpNumber, entries: written, commitNumber };
}

export function superblockWrite(id: number, superblock: Superblock): Effect {
  return { type: "persist_superblock", id, superblock };
}
