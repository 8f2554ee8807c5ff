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
  readonly clientId: number;
  readonly requestNumber: number;
}

/**
 * A deterministic state machine. The protocol calls `apply` for every committed operation, in
 * op-number order, on every replica that runs the service.
 *
 * Contract: `apply` never throws for any input bytes — a malformed operation yields an error
 * result, the same on every replica — and its result depends only on the state and its arguments.
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
  /** A short fingerprint of the whole state: equal states give equal digests. */
  digest(): string;
  /** The whole state, for state transfer by checkpoint (§5.1). */
  snapshot(): Uint8Array;
  /** Replace the whole state by one from `snapshot`. Throws if the bytes are not a snapshot. */
  restore(snapshot: Uint8Array): void;
}
