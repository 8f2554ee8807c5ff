/**
 * The interface between the protocol and the service it replicates.
 *
 * @module
 */

/** What the primary fixed for an operation (§4.4); every replica passes the same values. */
export interface ApplyContext {
  /** The op-number of the operation in the replicated log. */
  readonly opNumber: number;
  /** Milliseconds chosen by the primary; non-decreasing along the log. */
  readonly timestamp: number;
  /** The client that sent the operation. */
  readonly clientId: number;
  /** That client's number for the request (§4.5). */
  readonly requestNumber: number;
}

/**
 * A deterministic state machine. The protocol calls `apply` for every committed operation, in
 * op-number order, on every replica that runs the service.
 *
 * ## Contract
 *
 * **Determinism.** `apply` never throws for any input bytes — a malformed operation yields an
 * error result, the same on every replica — and its result and its change to the state depend
 * only on the state and its arguments: not on the clock, randomness, the machine, the order in
 * which a hash map happens to iterate, or what was read from the state before. Replicas that
 * applied the same operations hold equal states.
 *
 * **Digest.** `digest()` depends only on the state, never on the history that built it: equal
 * states give equal digests and different states, with overwhelming probability, different ones.
 * Replicas and the simulator compare digests to find divergence, the simulator after every step,
 * so it should be cheap (the key-value store keeps its digest up to date in O(1) per change). A
 * checkpoint records the digest taken together with `beginSnapshot` (no `apply` between them),
 * and whoever installs it passes that digest to `finish`, which checks it before replacing
 * anything: the digest of a state must be computable before the state is live.
 *
 * **Snapshots** (§5.1: checkpoints and state transfer). A snapshot is the whole state as a
 * sequence of chunks, read with `beginSnapshot` and installed with `beginRestore`:
 * - *Consistent*: the chunks of a reader describe the state at the moment `beginSnapshot` was
 *   called, however many operations `apply` executes while they are read (copy-on-write), so a
 *   replica keeps serving while it writes a checkpoint or sends one.
 * - *Deterministic*: equal states and equal `chunkBytesTarget` give byte-identical chunks,
 *   whatever history built the states and whatever `apply` did while they were read. Chunks can
 *   then be compared by hash, and a replica that receives a snapshot need only be sent the chunks
 *   it does not already hold.
 * - *Local*: a chunk's meaning does not depend on its position in the sequence (a chunk with the
 *   right hash may come from anywhere: an older checkpoint of the receiver, another sender), and
 *   a small change to the state changes few chunks (boundaries chosen by content, not by offset),
 *   so that the snapshots of a replica before and after a short absence share most chunks.
 * - *Equivalent*: installing the chunks of a snapshot, in order, gives a state with the same
 *   digest, the same answer to every operation and `query`, and the same snapshots; and so does
 *   `restore(snapshot())`.
 * - *Atomic installation*: until `finish`, the live state is untouched; a rejected chunk or an
 *   `abort` leaves nothing behind.
 *
 * **Memory.** No chunk is larger than about four times `chunkBytesTarget`, except one holding a
 * single record of the state that is larger by itself (the machine documents its largest
 * record), so a state of many gigabytes never needs one contiguous buffer. An open reader costs
 * memory for what changes before the reader reaches it (at most about a copy of the state, if
 * everything changes), so it should be read promptly and closed if abandoned. A restore holds the
 * new state next to the live one until `finish` (about twice the state at the peak).
 *
 * `snapshot` and `restore` are the one-buffer forms, for small states and tests. The chunked forms
 * are optional so that every existing machine keeps working: the protocol calls them through
 * `beginSnapshotOf` and `beginRestoreOf`, which fall back on the one-buffer forms.
 */
export interface StateMachine {
  /**
   * Execute one committed operation and return its result for the client. The replica keeps the
   * result (client table) and sends it, but never modifies it, so an implementation may keep a
   * view of it in its state. The operation's bytes are the log's: read them, do not keep views of
   * them, do not modify them.
   */
  apply(operation: Uint8Array, context: ApplyContext): Uint8Array;
  /**
   * Optional, with `query` (§6.3): whether `operation` only reads. The primary answers such an
   * operation from its state, without a log entry or a disk write, once it has confirmed that it
   * is still the primary (see `Commit` in `src/vr/message.ts`). Must not throw.
   */
  readOnly?(operation: Uint8Array): boolean;
  /**
   * Execute an operation `readOnly` accepted against the current state, changing nothing; the
   * result must equal what `apply` would return in this state.
   */
  query?(operation: Uint8Array): Uint8Array;
  /** A short fingerprint of the whole state: equal states give equal digests (see above). */
  digest(): string;
  /**
   * The whole state in one buffer: deterministic (equal states, equal bytes), and what `restore`
   * accepts.
   */
  snapshot(): Uint8Array;
  /**
   * Replace the whole state by one from `snapshot`. Throws an Error if the bytes are not a
   * snapshot, and then leaves the state unchanged.
   */
  restore(snapshot: Uint8Array): void;
  /**
   * Start reading a consistent snapshot of the state as it is now, in chunks of about
   * `chunkBytesTarget` bytes (`Infinity`: one chunk). `apply` may be called between chunks. See
   * `SnapshotReader` and the contract above; throws a RangeError unless the target is positive.
   */
  beginSnapshot?(chunkBytesTarget: number): SnapshotReader;
  /** Start installing a snapshot chunk by chunk; see `SnapshotWriter`. */
  beginRestore?(): SnapshotWriter;
}

/**
 * A snapshot being read. A machine documents how many may be open at once (the key-value store:
 * any number, each costing memory for what changes before it is read).
 */
export interface SnapshotReader {
  /**
   * The next chunk, or undefined after the last one: the reader is then finished, and
   * undefined is all it returns from then on. The chunk is the caller's to keep. A call costs
   * time in proportion to its chunk, so that a caller can spread a large snapshot over many turns
   * of the event loop. Throws an Error after `close`.
   */
  next(): Uint8Array | undefined;
  /** Abandon the reader and free what it holds. Idempotent; harmless after the last chunk. */
  close(): void;
}

/** A snapshot being installed, chunk by chunk, in the order the reader produced them. */
export interface SnapshotWriter {
  /**
   * Check and take one chunk. Throws an Error naming the problem if `bytes` is not the next
   * chunk of a snapshot (malformed, or out of order with the chunks before it); the chunk then
   * has no effect and the writer stays usable, so the right chunk may still follow (from another
   * sender, say). The bytes are not kept: the caller may reuse the buffer.
   */
  chunk(bytes: Uint8Array): void;
  /**
   * Replace the whole live state by the chunks taken, at once. With `expectedDigest`, first
   * check that the new state has that digest, and throw an Error without replacing anything if
   * it does not (the writer then stays usable: `abort` it). Throws after `finish` or `abort`.
   */
  finish(expectedDigest?: string): void;
  /** Discard the chunks taken; the live state stays as it is. Idempotent. */
  abort(): void;
}

/**
 * `machine.beginSnapshot(chunkBytesTarget)`, or for a machine without it, the one-buffer
 * `snapshot()` taken now and handed out in slices of `chunkBytesTarget` bytes. The slices are
 * deterministic but not local: a change near the start of the state shifts every slice after it.
 */
export function beginSnapshotOf(machine: StateMachine, chunkBytesTarget: number): SnapshotReader {
  if (machine.beginSnapshot !== undefined) return machine.beginSnapshot(chunkBytesTarget);
  checkChunkBytesTarget(chunkBytesTarget);
  let whole: Uint8Array | undefined = machine.snapshot();
  let offset = 0;
  let closed = false;
  return {
    next(): Uint8Array | undefined {
      if (closed) throw new Error("snapshot reader is closed");
      // An empty snapshot is still one (empty) chunk, so that `restore` gets what it produced.
      if (whole === undefined || (offset >= whole.byteLength && offset > 0)) {
        whole = undefined;
        return undefined;
      }
      const end = Math.min(whole.byteLength, offset + chunkBytesTarget);
      const slice = whole.slice(offset, end);
      offset = end;
      if (whole.byteLength === 0) whole = undefined;
      return slice;
    },
    close(): void {
      closed = true;
      whole = undefined;
    },
  };
}

/**
 * `machine.beginRestore()`, or for a machine without it, a writer that gathers the chunks and
 * hands their concatenation to `restore()` at `finish`: such a machine checks nothing before
 * then, and needs the whole snapshot in one buffer.
 */
export function beginRestoreOf(machine: StateMachine): SnapshotWriter {
  if (machine.beginRestore !== undefined) return machine.beginRestore();
  let parts: Uint8Array[] = [];
  let done = false;
  const checkOpen = (): void => {
    if (done) throw new Error("snapshot writer is finished or aborted");
  };
  return {
    chunk(bytes: Uint8Array): void {
      checkOpen();
      parts.push(bytes.slice());
    },
    finish(expectedDigest?: string): void {
      checkOpen();
      const whole = new Uint8Array(parts.reduce((sum, part) => sum + part.byteLength, 0));
      let offset = 0;
      for (const part of parts) {
        whole.set(part, offset);
        offset += part.byteLength;
      }
      // `restore` leaves the state unchanged when it throws; a wrong digest is found only after
      // it succeeded, so the old state is kept to be put back.
      const previous = expectedDigest === undefined ? undefined : machine.snapshot();
      machine.restore(whole);
      if (previous !== undefined && machine.digest() !== expectedDigest) {
        const digest = machine.digest();
        machine.restore(previous);
        throw new Error(`snapshot has digest ${digest}, expected ${expectedDigest}`);
      }
      done = true;
      parts = [];
    },
    abort(): void {
      done = true;
      parts = [];
    },
  };
}

/** Throws a RangeError unless `chunkBytesTarget` is a positive number (Infinity allowed). */
export function checkChunkBytesTarget(chunkBytesTarget: number): void {
  if (!(chunkBytesTarget > 0)) {
    throw new RangeError(`chunkBytesTarget must be positive, got ${chunkBytesTarget}`);
  }
}
