/**
 * A Web Worker that runs simulator seeds for a sweep: it receives a list of seeds and posts one
 * result per seed (without the trace, which a replay of the seed prints).
 *
 * @module
 */
/// <reference lib="deno.worker" />
import type { PlantedBug } from "../vr/replica.ts";
import { runSimulation } from "./simulator.ts";

export interface SweepJob {
  readonly seeds: readonly number[];
  readonly replicas?: 1 | 3 | 5 | undefined;
  readonly plantedBug?: PlantedBug | undefined;
  readonly load?: "swarm" | "high" | undefined;
}

self.onmessage = (event: MessageEvent<SweepJob>) => {
  const job = event.data;
  for (const seed of job.seeds) {
    const result = runSimulation({
      seed,
      replicas: job.replicas,
      plantedBug: job.plantedBug,
      load: job.load,
    });
    self.postMessage(result);
  }
  self.postMessage({ done: true });
};
