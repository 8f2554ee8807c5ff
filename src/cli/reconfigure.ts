/**
 * `vstamp reconfigure --config <current.yaml> --to <new.yaml>`: change a running group's members
 * (§7), one step at a time, each printed:
 *
 * 1. check the request: the new configuration is odd and without duplicates, a quorum of the
 *    current group answers, and every new address is a running replica (`server --join`);
 * 2. the Reconfiguration commits in the current group: the new epoch begins at its op-number;
 * 3. §7.3 a CheckEpoch commits through the new group: it holds the state and runs;
 * 4. the replicas that left exit by themselves once f'+1 new members started;
 * 5. the new group's status.
 *
 * @module
 */
import { Command } from "commander";
import { Client, ClientError } from "../client/client.ts";
import { ConfigError, type GroupAccess, loadAccess, loadConfig } from "../config.ts";
import { collectStatus, renderTable } from "./status.ts";
import { parseCount } from "./sim.ts";

/** How long the old replicas may take to exit after the new epoch runs. */
const LEAVE_TIMEOUT_MS_DEFAULT = 30_000;

interface ReconfigureFlags {
  config: string;
  to: string;
  timeout?: number;
}

export function reconfigureCommand(): Command {
  return new Command("reconfigure")
    .description(
      "Move a running group to a new configuration (§7): add, remove or replace replicas.",
    )
    .requiredOption("--config <file>", "the group's current configuration")
    .requiredOption("--to <file>", "the new configuration (start its new replicas with --join)")
    .option(
      "--timeout <ms>",
      "how long each step may take",
      parseCount("--timeout"),
    )
    .addHelpText(
      "after",
      `
Example: replace the third replica of a group of three.
  vstamp server --join --config new.yaml --index 2     (on the new machine)
  vstamp reconfigure --config server-config.yaml --to new.yaml`,
    )
    .action(async (flags: ReconfigureFlags) => {
      Deno.exitCode = await runReconfigure(flags);
    });
}

async function runReconfigure(flags: ReconfigureFlags): Promise<number> {
  let current: string[];
  let target: string[];
  let access: GroupAccess;
  try {
    const config = await loadConfig(flags.config);
    current = [...config.addressTexts];
    target = [...(await loadConfig(flags.to)).addressTexts];
    access = await loadAccess(config);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      return error.exitCode;
    }
    throw error;
  }
  try {
    await reconfigureGroup(current, target, access, {
      log: (line) => console.log(line),
      timeoutMs: flags.timeout,
    });
    console.log(
      `done: give every replica's --config the new configuration (${flags.to}); replicas ` +
        "restarted with the old one use the membership in their data directory",
    );
    return 0;
  } catch (error) {
    if (error instanceof ReconfigureError || error instanceof ClientError) {
      console.error(`reconfigure: ${error.message}`);
      return 1;
    }
    throw error;
  }
}

/** A reconfiguration refused or not completed, with a one-line reason. */
export class ReconfigureError extends Error {
  override name = "ReconfigureError";
}

/** What `reconfigureGroup` measured. */
export interface ReconfigureResult {
  readonly epoch: number;
  /** From asking to the Reconfiguration's commit, and to the CheckEpoch's. */
  readonly committedMs: number;
  readonly checkedMs: number;
  /** The old replicas that had not exited by the deadline. */
  readonly stillUp: readonly string[];
}

/** Why `target` cannot follow `current`, or undefined. */
export function targetProblem(
  current: readonly string[],
  target: readonly string[],
): string | undefined {
  if (target.length === 0) return "the new configuration has no replicas";
  if (target.length % 2 === 0) {
    return `the new configuration has ${target.length} replicas: a group needs an odd number`;
  }
  const seen = new Set<string>();
  for (const address of target) {
    if (seen.has(address)) return `the new configuration lists ${address} twice`;
    seen.add(address);
  }
  if (current.length === target.length && current.every((address, i) => address === target[i])) {
    return "the new configuration is the current one";
  }
  return undefined;
}

/**
 * Move the group at `current` to `target`, printing each step with `log`. Throws
 * `ReconfigureError` with a one-line reason when the request is refused before anything changed.
 */
export async function reconfigureGroup(
  current: readonly string[],
  target: readonly string[],
  access: GroupAccess,
  options: { readonly log: (line: string) => void; readonly timeoutMs?: number | undefined },
): Promise<ReconfigureResult> {
  const log = options.log;
  const timeoutMs = options.timeoutMs ?? LEAVE_TIMEOUT_MS_DEFAULT;
  const problem = targetProblem(current, target);
  if (problem !== undefined) throw new ReconfigureError(problem);
  const rows = await collectStatus(current, access);
  const serving = rows.filter((row) => row.reachable && row.status !== "transitioning");
  const quorum = Math.floor(current.length / 2) + 1;
  if (serving.length < quorum) {
    throw new ReconfigureError(
      `only ${serving.length} of the ${current.length} current replicas answer; a ` +
        `reconfiguration needs ${quorum} (a quorum) to commit: ${
          rows.filter((row) => !row.reachable).map((row) => row.address).join(", ")
        } unreachable`,
    );
  }
  const epoch = Math.max(...serving.map((row) => row.epoch ?? 0));
  const added = target.filter((address) => !current.includes(address));
  const removed = current.filter((address) => !target.includes(address));
  if (added.length > 0) {
    const newRows = await collectStatus(added, access);
    const missing = newRows.filter((row) => !row.reachable);
    if (missing.length > 0) {
      throw new ReconfigureError(
        `new replica ${missing.map((row) => row.address).join(", ")} does not answer: start it ` +
          "first (vstamp server --join --config <new.yaml> --index <i>)",
      );
    }
  }
  log(
    `epoch ${epoch}: ${current.join(", ")} -> ${target.join(", ")}` +
      (added.length > 0 ? `; adding ${added.join(", ")}` : "") +
      (removed.length > 0 ? `; removing ${removed.join(", ")}` : ""),
  );
  const started = performance.now();
  const client = await Client.connect({
    addresses: current,
    deadlineMs: timeoutMs,
    ...access,
  });
  let committedMs: number;
  let checkedMs: number;
  try {
    const configuration = await client.reconfigure(target);
    committedMs = performance.now() - started;
    const got = configuration.addresses.join(", ");
    if (got !== target.join(", ")) {
      throw new ReconfigureError(
        `the group moved to epoch ${configuration.epoch} with ${got}, not the configuration ` +
          "asked for (another reconfiguration came first)",
      );
    }
    log(
      `epoch ${configuration.epoch} began: the Reconfiguration committed in the old group ` +
        `(${Math.round(committedMs)} ms)`,
    );
    const checked = await client.checkEpoch();
    checkedMs = performance.now() - started;
    log(
      `epoch ${checked.epoch} runs: a CheckEpoch committed through the new group ` +
        `(${Math.round(checkedMs)} ms); the old replicas may be turned off`,
    );
  } finally {
    client.close();
  }
  // §7.3 The replicas that left exit once f'+1 new members told them they started.
  let stillUp = [...removed];
  const deadline = Date.now() + timeoutMs;
  while (stillUp.length > 0 && Date.now() < deadline) {
    const left = await collectStatus(stillUp, access);
    stillUp = left.filter((row) => row.reachable && row.status !== "shut_down").map((row) =>
      row.address
    );
    if (stillUp.length > 0) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  if (removed.length > 0) {
    log(
      stillUp.length === 0
        ? `the old replicas ${removed.join(", ")} left the group (each exits by itself, after ` +
          "answering clients with the new configuration for a few seconds)"
        : `still up after ${timeoutMs} ms: ${stillUp.join(", ")} (they exit once they hear ` +
          "that the new group started; it is safe to stop them)",
    );
  }
  log(renderTable(await collectStatus(target, access)));
  return { epoch: epoch + 1, committedMs, checkedMs, stillUp };
}
