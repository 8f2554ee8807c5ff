/**
 * `vstamp sim`: replay one simulator seed, or sweep many in parallel.
 *
 * @module
 */
import { Command, InvalidArgumentError, Option } from "commander";
import type { PlantedBug } from "../vr/replica.ts";
import { runSimulation, type SimulationResult, type SimulationStats } from "../sim/simulator.ts";
import { runSweep } from "../sim/sweep.ts";
import { type App, appTag } from "../app/app.ts";
import { kvApp } from "../app/kv_app.ts";
import { absoluteAppSpecifier, appOption, withApp } from "./app_option.ts";

const PLANTED_BUGS: readonly PlantedBug[] = [
  "commit_with_too_few_prepare_oks",
  "do_view_change_log_by_op_number",
  "recovery_without_nonce_check",
  "execute_retried_request_twice",
  "read_without_round",
  "get_state_on_every_new_state",
  "recovery_forgets_persisted_view",
  "adopt_newer_view_before_its_state",
  "checkpoint_without_client_table",
  "truncate_above_checkpoint",
  "install_incomplete_checkpoint",
];

/** Parse a non-negative integer option, with an error naming the option. */
export function parseCount(name: string): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(n)) {
      throw new InvalidArgumentError(`${name} must be a non-negative integer, got "${value}"`);
    }
    return n;
  };
}

function parseReplicas(value: string): 1 | 3 | 5 {
  if (value === "1" || value === "3" || value === "5") return Number(value) as 1 | 3 | 5;
  throw new InvalidArgumentError(`--replicas must be 1, 3 or 5, got "${value}"`);
}

interface SimFlags {
  seed?: number;
  seeds?: number;
  from?: number;
  replicas?: 1 | 3 | 5;
  jobs?: number;
  load: "swarm" | "high";
  trace?: boolean;
  plantedBug?: PlantedBug;
  trustDamagedLogs?: boolean;
  app?: string;
}

export function simCommand(): Command {
  return new Command("sim")
    .description(
      "Run the deterministic simulator: replay one seed (--seed) or sweep many (--seeds).",
    )
    .option("--seed <n>", "replay this seed; prints its trace if it fails", parseCount("--seed"))
    .option("--seeds <k>", "run a sweep of k seeds", parseCount("--seeds"))
    .option(
      "--from <s>",
      "first seed of the sweep (default: a fresh random one, printed)",
      parseCount("--from"),
    )
    .option("--replicas <n>", "replica count 1, 3 or 5 (default: drawn per seed)", parseReplicas)
    .option("--jobs <n>", "parallel workers (default: one per core)", parseCount("--jobs"))
    .addOption(
      new Option("--load <mode>", "request rate: drawn per seed, or every client always busy")
        .choices(["swarm", "high"]).default("swarm"),
    )
    .option("--trace", "with --seed: print the trace even when the seed passes")
    .addOption(appOption())
    .addOption(
      new Option("--planted-bug <bug>", "plant a known bug (to see the simulator catch it)")
        .choices(PLANTED_BUGS),
    )
    .option(
      "--trust-damaged-logs",
      "with --seed: plant a simulator bug, a damaged log handed over as trusted (see the tests)",
    )
    .addHelpText(
      "after",
      `
Examples:
  vstamp sim --seeds 1000              a sweep from a random seed, one worker per core
  vstamp sim --seeds 200 --replicas 5  only 5-replica groups
  vstamp sim --seed 4242               replay one seed; a failure prints its trace
  vstamp sim --app examples/ledger.ts --seeds 500
                                       the same faults, replicating the example ledger`,
    )
    .action(async (flags: SimFlags, command: Command) => {
      if ((flags.seed === undefined) === (flags.seeds === undefined)) {
        command.error("error: give exactly one of --seed <n> or --seeds <k>", { exitCode: 2 });
      }
      if (flags.trustDamagedLogs === true && flags.seed === undefined) {
        command.error("error: --trust-damaged-logs needs --seed <n>", { exitCode: 2 });
      }
      Deno.exitCode = await withApp(flags.app, async (app) => {
        if (app.workload === undefined) {
          console.error(
            `--app ${flags.app}: app ${appTag(app)} has no \`workload\`, which the simulator ` +
              'needs to draw operations (see README, "Your own app")',
          );
          return 2;
        }
        if (app !== kvApp && (flags.plantedBug !== undefined || flags.trustDamagedLogs === true)) {
          console.error("--planted-bug and --trust-damaged-logs run with the key-value store only");
          return 2;
        }
        return flags.seed !== undefined ? replay(flags, app) : await sweep(flags, app);
      });
    });
}

function replay(flags: SimFlags, app: App): number {
  const result = runSimulation({
    app: app === kvApp ? undefined : app,
    seed: flags.seed!,
    replicas: flags.replicas,
    plantedBug: flags.plantedBug,
    load: flags.load,
    trustDamagedLogs: flags.trustDamagedLogs,
    trace: true,
  });
  if (!result.ok || flags.trace === true) {
    console.log(`parameters: ${JSON.stringify(result.parameters)}`);
    for (const line of result.trace ?? []) console.log(line);
  }
  console.log(describeStats(result.stats));
  if (result.ok) {
    console.log(`seed ${result.seed}: passed (trace hash ${result.traceHash})`);
    return 0;
  }
  console.log(`seed ${result.seed}: FAILED: ${result.failure}`);
  return 1;
}

async function sweep(flags: SimFlags, app: App): Promise<number> {
  const count = flags.seeds!;
  const from = flags.from ?? freshSeed();
  console.log(
    `sweep: seeds ${from}..${from + count - 1}${
      flags.replicas ? `, ${flags.replicas} replicas` : ""
    }${flags.plantedBug ? `, planted bug ${flags.plantedBug}` : ""}${
      app === kvApp ? "" : `, app ${appTag(app)}`
    }`,
  );
  let done = 0;
  const progressEvery = Math.max(1, Math.floor(count / 10));
  const summary = await runSweep({
    from,
    count,
    replicas: flags.replicas,
    plantedBug: flags.plantedBug,
    load: flags.load,
    jobs: flags.jobs,
    app: app === kvApp ? undefined : absoluteAppSpecifier(flags.app!),
    onResult: (result: SimulationResult) => {
      done++;
      if (!result.ok) {
        console.log(`seed ${result.seed} FAILED: ${firstLine(result.failure ?? "")}`);
        console.log(`  replay: vstamp sim --seed ${result.seed}${replayFlags(flags)}`);
      }
      if (done % progressEvery === 0 && done < count) console.log(`  ${done}/${count} seeds done`);
    },
  });
  const t = summary.totals;
  console.log(describeStats(t));
  console.log(
    `checkpoints: taken in ${summary.seedsWithCheckpoints} of ${count} seeds, fetched from ` +
      `another replica in ${summary.seedsWithTransfers}`,
  );
  console.log(
    `reconfigurations (§7): ${t.reconfigurations} issued, a new epoch started in ` +
      `${summary.seedsWithEpochs} of ${count} seeds (a second one in ` +
      `${summary.seedsWithTwoEpochs}); ${t.shutDowns} old replicas shut down (${t.turnedOff} turned ` +
      `off by the operator an epoch later); ` +
      `clients redirected ${t.clientsRedirected} times`,
  );
  console.log(
    `speed: ${(count / (summary.seconds / 60)).toFixed(0)} seeds/min, ${
      (t.events / summary.seconds).toFixed(0)
    } events/s (${summary.seconds.toFixed(1)} s)`,
  );
  console.log(`seeds: ${summary.passed} passed, ${summary.failed.length} failed`);
  return summary.failed.length > 0 ? 1 : 0;
}

function replayFlags(flags: SimFlags): string {
  let out = "";
  if (flags.replicas !== undefined) out += ` --replicas ${flags.replicas}`;
  if (flags.load === "high") out += " --load high";
  if (flags.plantedBug !== undefined) out += ` --planted-bug ${flags.plantedBug}`;
  if (flags.app !== undefined) out += ` --app ${flags.app}`;
  return out;
}

export function describeStats(t: SimulationStats): string {
  return `exercised: ${t.opsCommitted} ops committed, ${t.requestsCompleted} requests completed ` +
    `(${t.readsWithoutLog} reads answered without the log, ${t.batchesCompleted} batches), ` +
    `${t.viewChanges} view changes, ${t.recoveries} recoveries, ${t.restartsFromDisk} restarts from disk, ` +
    `${t.stateTransfers} state transfers, ${t.spareSwaps} spare swaps, ${t.crashes} crashes, ${t.partitions} partitions, ` +
    `${t.clientRestarts} client restarts, ${t.rejectedEvicted} evicted and ${t.rejectedConflict} conflicting requests rejected, ` +
    `${t.tornWrites} torn log writes, ${t.corruptedLogs} damaged logs, ${t.corruptedCheckpoints} damaged checkpoints, ${t.tornSuperblocks} torn superblock writes, ` +
    `${t.checkpointsTaken} checkpoints (${t.checkpointWritesLost} lost to a crash mid-write), ` +
    `${t.logTruncations} log truncations, ${t.checkpointTransfers} checkpoint transfers ` +
    `(${t.checkpointChunksSent} chunks sent, ${t.checkpointChunksReused} found locally), ` +
    `${t.messagesSent} messages sent, ${t.messagesDropped} dropped, ${t.messagesDuplicated} duplicated, ` +
    `${t.events} events`;
}

function firstLine(text: string): string {
  const index = text.indexOf("\n");
  return index < 0 ? text : text.slice(0, index);
}

/** A seed nobody has tried: from the clock and the OS random source, outside the core. */
function freshSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0]! % 1_000_000_000;
}
