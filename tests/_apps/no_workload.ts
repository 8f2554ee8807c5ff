/** The example counter without a workload: `vstamp sim` cannot drive it. */
import { defineApp } from "../../mod.ts";
import { app as counter } from "../../examples/counter.ts";

export const app = defineApp({
  name: counter.name,
  version: counter.version,
  createStateMachine: counter.createStateMachine,
  commands: counter.commands,
});
