/**
 * A planted bug for the simulator to catch: the example ledger reading the replica's own clock
 * (`Date.now()`) in `apply` instead of the primary's timestamp. Replicas apply an operation at
 * different moments, so they record different expiry times and expire different holds.
 *
 * @module
 */
import { type ApplyContext, defineApp } from "../../mod.ts";
import { app as ledger, Ledger } from "../../examples/ledger.ts";

class WallClockLedger extends Ledger {
  override apply(operation: Uint8Array, context: ApplyContext): Uint8Array {
    return super.apply(operation, { ...context, timestamp: Date.now() });
  }
}

export const app = defineApp({
  ...ledger,
  name: "ledger-wall-clock",
  createStateMachine: () => new WallClockLedger(),
});
