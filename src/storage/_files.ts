/**
 * File helpers the data directory and its checkpoints share.
 *
 * @module
 */

/** Reads `length` bytes at `offset`, fewer only at the end of the file. */
export async function readAt(
  file: Deno.FsFile,
  offset: number,
  length: number,
): Promise<Uint8Array> {
  await file.seek(offset, Deno.SeekMode.Start);
  const bytes = new Uint8Array(length);
  let filled = 0;
  while (filled < length) {
    const count = await file.read(bytes.subarray(filled));
    if (count === null) break;
    filled += count;
  }
  return filled === length ? bytes : bytes.subarray(0, filled);
}

/** fsyncs a directory, so that a rename or a removal in it is durable. */
export async function syncDirectory(path: string): Promise<void> {
  const directory = await Deno.open(path, { read: true });
  try {
    await directory.sync();
  } finally {
    directory.close();
  }
}

export async function removeIfPresent(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

/** An error's message, for a message of ours that names the file. */
export function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
