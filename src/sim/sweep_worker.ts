/**
 * A Web Worker that runs simulator seeds for a sweep: it receives a list of seeds and posts one
 * result per seed (without the trace, which a replay of the seed prints).
 *
 * @module
 */
/// <reference lib="deno.worker" />
import type { PlantedBug } from "../vr/replica.ts";
import { type App, loadApp } from "../app/app.ts";
import { runSimulation } from "./simulator.ts";

export interface SweepJob {
  readonly seeds: readonly number[];
  readonly replicas?: 1 | 3 | 5 | undefined;
  readonly plantedBug?: PlantedBug | undefined;
  readonly load?: "swarm" | "high" | undefined;
  /** Another app than the key-value store: its module's absolute path or URL, loaded here. */
  readonly app?: string | undefined;
}

/** The app of the jobs, loaded by the first job that names it (the module's state is its own). */
let loaded: Promise<App> | undefined;

self.onmessage = async (event: MessageEvent<SweepJob>) => {
  const job = event.data;
  const app = job.app === undefined ? undefined : await (loaded ??= loadApp(job.app));
  for (const seed of job.seeds) {
    const result = runSimulation({
      seed,
      replicas: job.replicas,
      plantedBug: job.plantedBug,
      load: job.load,
      app,
    });
    self.postMessage(result);
  }
  self.postMessage({ done: true });
};
