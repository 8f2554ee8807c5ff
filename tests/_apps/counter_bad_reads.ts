/**
 * Two planted bugs in the example counter's reads without the log (§6.3), for the simulator to
 * catch: `badQueryApp` answers GET by `query` one more than `apply` would, and `readOnlyAllApp`
 * calls every operation read-only, so an INCR is answered without the log and never executed.
 */
import { defineApp } from "../../src/app/app.ts";
import type { ApplyContext } from "../../src/app/state_machine.ts";
import { app as counter, Counters } from "../../examples/counter.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

class BadQuery extends Counters {
  #inApply = false;
  override apply(operation: Uint8Array, context?: ApplyContext): Uint8Array {
    this.#inApply = true;
    try {
      return super.apply(operation, context);
    } finally {
      this.#inApply = false;
    }
  }
  override query(operation: Uint8Array): Uint8Array {
    const result = super.query(operation);
    if (this.#inApply) return result; // apply's GET goes through query: right there.
    const parsed = JSON.parse(decoder.decode(result));
    return encoder.encode(JSON.stringify({ ...parsed, value: (parsed.value ?? 0) + 1 }));
  }
}

class AllReadOnly extends Counters {
  override readOnly(_operation: Uint8Array): boolean {
    return true;
  }
}

export const badQueryApp = defineApp({
  ...counter,
  name: "counter-bad-query",
  createStateMachine: () => new BadQuery(),
});

export const readOnlyAllApp = defineApp({
  ...counter,
  name: "counter-readonly-all",
  createStateMachine: () => new AllReadOnly(),
});
