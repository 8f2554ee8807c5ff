/**
 * The example counter with a bug that throws: an increment by 5 changes the counter and then
 * throws. The throw is deterministic, so the guard gives every replica the same error result and
 * the same (half-changed) state; the simulator must see no crash and no divergence.
 *
 * @module
 */
import { type ApplyContext, defineApp } from "../../mod.ts";
import { app as counter, Counters } from "../../examples/counter.ts";

class ThrowingCounters extends Counters {
  override apply(operation: Uint8Array, context: ApplyContext): Uint8Array {
    const result = super.apply(operation);
    if (new TextDecoder().decode(operation).includes('"by":5')) {
      throw new Error(`planted throw at op ${context.opNumber}`);
    }
    return result;
  }
}

export const app = defineApp({
  ...counter,
  name: "counter-throwing",
  createStateMachine: () => new ThrowingCounters(),
});
