/**
 * Assertions for the protocol core. A failed assertion is a bug: it stops the replica loudly
 * instead of letting it act on a broken state.
 *
 * @module
 */

/** Thrown when an invariant of the protocol core does not hold. */
export class AssertionError extends Error {
  override name = "AssertionError";
}

/**
 * Throws an AssertionError with `message` unless `condition` holds. A message that interpolates
 * values should be a function: assertions run on every operation, and building a string that is
 * almost never read would cost more than the check.
 */
export function assert(
  condition: boolean,
  message: string | (() => string),
): asserts condition {
  if (!condition) throw new AssertionError(typeof message === "string" ? message : message());
}
