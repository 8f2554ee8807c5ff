/**
 * Run many simulator seeds in parallel Web Workers and add up what they exercised.
 *
 * @module
 */
import type { PlantedBug } from "../vr/replica.ts";
import { emptyStats, type SimulationResult, type SimulationStats } from "./simulator.ts";
import type { SweepJob } from "./sweep_worker.ts";

export interface SweepOptions {
  readonly from: number;
  readonly count: number;
  readonly replicas?: 1 | 3 | 5 | undefined;
  readonly plantedBug?: PlantedBug | undefined;
  readonly load?: "swarm" | "high" | undefined;
  /** Another app than the key-value store: its module's absolute path or URL (see `loadApp`). */
  readonly app?: string | undefined;
  /** Number of workers; defaults to the number of cores. */
  readonly jobs?: number | undefined;
  /** Called as each seed finishes (in completion order). */
  readonly onResult?: ((result: SimulationResult) => void) | undefined;
}

export interface SweepSummary {
  readonly passed: number;
  readonly failed: readonly SimulationResult[];
  readonly totals: SimulationStats;
  /** §5.1 Seeds in which a replica checkpointed, and in which one fetched a checkpoint. */
  readonly seedsWithCheckpoints: number;
  readonly seedsWithTransfers: number;
  /** §7 Seeds in which a new epoch started (a reconfiguration committed). */
  readonly seedsWithEpochs: number;
  /** §7 Seeds in which a second new epoch started (two reconfigurations, one after the other). */
  readonly seedsWithTwoEpochs: number;
  readonly seconds: number;
}

/** Seeds handed to a worker at a time: small enough to balance the load across workers. */
const SEEDS_PER_JOB = 8;

export async function runSweep(options: SweepOptions): Promise<SweepSummary> {
  const started = performance.now();
  const totals: SimulationStats = emptyStats();
  let seedsWithCheckpoints = 0;
  let seedsWithTransfers = 0;
  let seedsWithEpochs = 0;
  let seedsWithTwoEpochs = 0;
  const failed: SimulationResult[] = [];
  let passed = 0;
  const seeds: number[] = [];
  for (let i = 0; i < options.count; i++) seeds.push(options.from + i);
  let next = 0;
  const jobs = Math.max(1, Math.min(options.jobs ?? navigator.hardwareConcurrency, options.count));

  const runWorker = () =>
    new Promise<void>((resolve, reject) => {
      const worker = new Worker(new URL("./sweep_worker.ts", import.meta.url).href, {
        type: "module",
      });
      const sendJob = () => {
        if (next >= seeds.length) {
          worker.terminate();
          resolve();
          return;
        }
        const job: SweepJob = {
          seeds: seeds.slice(next, next + SEEDS_PER_JOB),
          replicas: options.replicas,
          plantedBug: options.plantedBug,
          load: options.load,
          app: options.app,
        };
        next += job.seeds.length;
        worker.postMessage(job);
      };
      worker.onmessage = (event: MessageEvent<SimulationResult | { done: true }>) => {
        const data = event.data;
        if ("done" in data) {
          sendJob();
          return;
        }
        for (const key of Object.keys(totals) as (keyof SimulationStats)[]) {
          totals[key] += data.stats[key];
        }
        if (data.stats.checkpointsTaken > 0) seedsWithCheckpoints++;
        if (data.stats.checkpointTransfers > 0) seedsWithTransfers++;
        if (data.stats.epochsStarted > 0) seedsWithEpochs++;
        if (data.stats.epochsStarted > 1) seedsWithTwoEpochs++;
        if (data.ok) passed++;
        else failed.push(data);
        options.onResult?.(data);
      };
      worker.onerror = (event) => {
        event.preventDefault();
        worker.terminate();
        reject(new Error(`simulator worker failed: ${event.message}`));
      };
      sendJob();
    });

  const workers: Promise<void>[] = [];
  for (let i = 0; i < jobs; i++) workers.push(runWorker());
  await Promise.all(workers);
  failed.sort((a, b) => a.seed - b.seed);
  return {
    passed,
    failed,
    totals,
    seedsWithCheckpoints,
    seedsWithTransfers,
    seedsWithEpochs,
    seedsWithTwoEpochs,
    seconds: (performance.now() - started) / 1000,
  };
}
