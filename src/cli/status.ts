/**
 * `vstamp status`: one row per replica, like `etcdctl endpoint status -w table`.
 *
 * @module
 */
import { Command, InvalidArgumentError } from "commander";
import { Client, ClientError } from "../client/client.ts";
import { fetchStatus } from "../client/status.ts";
import { ConfigError, type GroupAccess, loadAccess, loadConfig, parseAddress } from "../config.ts";
import type { NodeCounters, ReplicaStatus } from "../transport/node.ts";
import { parseCount } from "./sim.ts";

/** How long a replica may take to answer a status query with its digest. */
const DIGEST_STATUS_TIMEOUT_MS = 60_000;
/** `--watch` polls this often unless `--interval` says otherwise. */
const WATCH_INTERVAL_MS_DEFAULT = 1000;
/** The shortest `--interval`: each poll opens a connection to every replica. */
const WATCH_INTERVAL_MS_MIN = 50;
/** Move the cursor home and clear the screen (a terminal redraws in place, like `watch`). */
const CLEAR_SCREEN = "\x1b[H\x1b[2J";

interface StatusFlags {
  config?: string;
  host?: string;
  port?: number;
  json?: boolean;
  digest?: boolean;
  watch?: boolean;
  interval?: number;
  count?: number;
}

export interface StatusRow {
  readonly index: number;
  readonly address: string;
  readonly reachable: boolean;
  readonly status?: string | undefined;
  /** §7 The epoch the replica is in (its view is of that epoch). */
  readonly epoch?: number | undefined;
  readonly viewNumber?: number | undefined;
  readonly role?: string | undefined;
  readonly opNumber?: number | undefined;
  readonly commitNumber?: number | undefined;
  /** Committed ops the primary has executed and this replica has not. */
  readonly lag?: number | undefined;
  /** §5.1 The op-number of its newest checkpoint (0: none yet). */
  readonly checkpointOpNumber?: number | undefined;
  /** §5.1 The first op-number its log on disk holds (earlier ones are in the checkpoint). */
  readonly logStartOpNumber?: number | undefined;
  readonly pid?: number | undefined;
  /** The state digest after `commitNumber` ops (`--digest` only): equal states, equal digests. */
  readonly digest?: string | undefined;
  /** What the replica did since it started (`--json` only). */
  readonly counters?: NodeCounters | undefined;
  readonly error?: string | undefined;
  /** `--watch`: ops committed per second since the previous poll (unset on the first one). */
  readonly opsPerSecond?: number | undefined;
}

export function statusCommand(): Command {
  return new Command("status")
    .description(
      "Show every replica: reachable, status, view, role, op-number, commit-number, lag, checkpoint.",
    )
    .option("--config <file>", "the group's configuration file")
    .option("--host <host>", "or: a replica to locate the group from")
    .option("--port <port>", "its port (default 14621)", parseCount("--port"))
    .option("--json", "one JSON object per replica, one per line")
    .option(
      "--digest",
      "also each replica's state digest (replicas at the same commit-number must agree)",
    )
    .option("--watch", "redraw the table live, with each replica's ops/s, until Ctrl-C")
    .option(
      "--interval <ms>",
      `with --watch: poll every this many ms (default ${WATCH_INTERVAL_MS_DEFAULT})`,
      parseInterval,
    )
    .option("--count <n>", "with --watch: stop after n tables", parsePositive("--count"))
    .action(async (flags: StatusFlags) => {
      Deno.exitCode = await runStatus(flags);
    });
}

async function runStatus(flags: StatusFlags): Promise<number> {
  if (flags.watch !== true && (flags.interval !== undefined || flags.count !== undefined)) {
    console.error("--interval and --count go with --watch");
    return 2;
  }
  let addresses: string[];
  let access: GroupAccess;
  try {
    const config = flags.config === undefined ? undefined : await loadConfig(flags.config);
    access = await loadAccess(config);
    addresses = await resolveAddresses(flags, access);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      return error.exitCode;
    }
    if (error instanceof ClientError) {
      console.error(error.message);
      return 1;
    }
    throw error;
  }
  if (flags.watch === true) return await watchStatus(addresses, flags, access);
  const rows = await collectStatus(addresses, { digest: flags.digest === true, ...access });
  if (flags.json) {
    for (const row of rows) console.log(JSON.stringify(row));
  } else {
    console.log(renderTable(rows));
  }
  return rows.every((row) => row.reachable) ? 0 : 1;
}

function parsePositive(name: string): (value: string) => number {
  const count = parseCount(name);
  return (value) => {
    const n = count(value);
    if (n < 1) throw new InvalidArgumentError(`${name} must be at least 1, got "${value}"`);
    return n;
  };
}

function parseInterval(value: string): number {
  const n = parseCount("--interval")(value);
  if (n < WATCH_INTERVAL_MS_MIN) {
    throw new InvalidArgumentError(
      `--interval must be at least ${WATCH_INTERVAL_MS_MIN} ms, got "${value}"`,
    );
  }
  return n;
}

/**
 * `status --watch`: polls every replica each interval and redraws the table, with the ops each
 * replica committed per second since the previous poll (the rise of its commit-number over the
 * time between the polls). On a terminal the table is redrawn in place; otherwise each table
 * follows the last, after a line with its time. Ctrl-C (or `--count`) stops it; the exit code is
 * the last poll's, as for one `status`.
 */
async function watchStatus(
  initialAddresses: readonly string[],
  flags: StatusFlags,
  access: GroupAccess,
): Promise<number> {
  let addresses = initialAddresses;
  let epochSeen = -1;
  const intervalMs = flags.interval ?? WATCH_INTERVAL_MS_DEFAULT;
  const tty = Deno.stdout.isTerminal();
  let stopped = false;
  let wake: (() => void) | undefined;
  const onInterrupt = () => {
    stopped = true;
    wake?.();
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  let previous: {
    readonly atMs: number;
    readonly addresses: readonly string[];
    readonly commits: (number | undefined)[];
  } | undefined;
  let code = 0;
  try {
    for (let drawn = 0; !stopped && (flags.count === undefined || drawn < flags.count); drawn++) {
      if (drawn > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, intervalMs);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
        if (stopped) break;
      }
      let polled = await collectStatus(addresses, { digest: flags.digest === true, ...access });
      // §7.4 The group moved to a later epoch: follow it to its new members.
      const epoch = Math.max(-1, ...polled.map((row) => row.epoch ?? -1));
      if (epochSeen >= 0 && epoch > epochSeen) {
        const moved = await followGroup(addresses, access);
        if (moved !== undefined && moved.join(",") !== addresses.join(",")) {
          addresses = moved;
          previous = undefined;
          polled = await collectStatus(addresses, { digest: flags.digest === true, ...access });
        }
      }
      epochSeen = Math.max(epochSeen, epoch);
      const atMs = performance.now();
      const rows = polled.map((row, index) => {
        const before = previous?.addresses[index] === row.address
          ? previous.commits[index]
          : undefined;
        if (previous === undefined || before === undefined || row.commitNumber === undefined) {
          return row;
        }
        const seconds = (atMs - previous.atMs) / 1000;
        return { ...row, opsPerSecond: Math.max(0, row.commitNumber - before) / seconds };
      });
      previous = {
        atMs,
        addresses: polled.map((row) => row.address),
        commits: polled.map((row) => row.commitNumber),
      };
      code = rows.every((row) => row.reachable) ? 0 : 1;
      if (flags.json) {
        for (const row of rows) console.log(JSON.stringify(row));
        continue;
      }
      const stamp = `${new Date().toISOString()}  every ${intervalMs} ms` +
        (tty ? "  (Ctrl-C stops)" : "");
      const table = renderTable(rows, undefined, { opsPerSecond: true });
      if (tty) {
        await Deno.stdout.write(new TextEncoder().encode(`${CLEAR_SCREEN}${stamp}\n${table}\n`));
      } else {
        console.log(`--- ${stamp}\n${table}`);
      }
    }
  } finally {
    Deno.removeSignalListener("SIGINT", onInterrupt);
  }
  return code;
}

/** The members of the group's current epoch, as a client locates them; undefined if none answers. */
async function followGroup(
  addresses: readonly string[],
  access: GroupAccess,
): Promise<string[] | undefined> {
  try {
    const client = await Client.connect({ addresses, deadlineMs: 3000, ...access });
    client.close();
    return [...client.addresses];
  } catch (error) {
    if (error instanceof ClientError) return undefined;
    throw error;
  }
}

async function resolveAddresses(flags: StatusFlags, access: GroupAccess): Promise<string[]> {
  if (flags.config !== undefined) return [...(await loadConfig(flags.config)).addressTexts];
  if (flags.host !== undefined || flags.port !== undefined) {
    const host = flags.host ?? "127.0.0.1";
    const start = `${host.includes(":") ? `[${host}]` : host}:${flags.port ?? 14621}`;
    const client = await Client.connect({ addresses: [start], deadlineMs: 3000, ...access });
    client.close();
    return [...client.addresses];
  }
  return [...(await loadConfig("./server-config.yaml")).addressTexts];
}

/** Ask every replica at once and compute each one's lag behind the primary. */
export async function collectStatus(
  addresses: readonly string[],
  options: { readonly digest?: boolean } & Partial<GroupAccess> = {},
): Promise<StatusRow[]> {
  const answers = await Promise.all(addresses.map((text) => {
    const address = parseAddress(text);
    if ("error" in address) return Promise.resolve({ error: address.error });
    // A digest reads the whole state, chunk by chunk between the replica's other work.
    return fetchStatus(
      address,
      options.digest === true ? DIGEST_STATUS_TIMEOUT_MS : undefined,
      options,
    );
  }));
  let primary: ReplicaStatus | undefined;
  for (const answer of answers) {
    if ("error" in answer) continue;
    if (answer.role === "primary" && answer.status === "normal") {
      if (
        primary === undefined || answer.epoch > primary.epoch ||
        (answer.epoch === primary.epoch && answer.viewNumber > primary.viewNumber)
      ) {
        primary = answer;
      }
    }
  }
  return answers.map((answer, index) => {
    if ("error" in answer) {
      return { index, address: addresses[index]!, reachable: false, error: answer.error };
    }
    return {
      index,
      address: addresses[index]!,
      reachable: true,
      status: answer.status,
      epoch: answer.epoch,
      viewNumber: answer.viewNumber,
      role: answer.role,
      opNumber: answer.opNumber,
      commitNumber: answer.commitNumber,
      lag: primary === undefined
        ? undefined
        : Math.max(0, primary.commitNumber - answer.commitNumber),
      checkpointOpNumber: answer.checkpointOpNumber,
      logStartOpNumber: answer.logStartOpNumber,
      pid: answer.pid,
      ...(answer.digest !== undefined ? { digest: answer.digest } : {}),
      counters: answer.counters,
    };
  });
}

export function renderTable(
  rows: readonly StatusRow[],
  pids?: readonly number[],
  options: { readonly opsPerSecond?: boolean } = {},
): string {
  const header = [
    "INDEX",
    "ADDRESS",
    "REACHABLE",
    "STATUS",
    "EPOCH",
    "VIEW",
    "ROLE",
    "OP",
    "COMMIT",
    "LAG",
    "CHECKPOINT",
  ];
  if (pids !== undefined) header.splice(2, 0, "PID");
  if (options.opsPerSecond === true) header.push("OPS/S");
  const digests = rows.some((row) => row.digest !== undefined);
  if (digests) header.push("DIGEST");
  const body = rows.map((row, index) => [
    String(row.index),
    row.address,
    ...(pids !== undefined ? [String(pids[index] ?? "-")] : []),
    row.reachable ? "yes" : `no (${row.error})`,
    row.status ?? "-",
    row.epoch === undefined ? "-" : String(row.epoch),
    row.viewNumber === undefined ? "-" : String(row.viewNumber),
    row.role ?? "-",
    row.opNumber === undefined ? "-" : String(row.opNumber),
    row.commitNumber === undefined ? "-" : String(row.commitNumber),
    row.lag === undefined ? "-" : String(row.lag),
    row.checkpointOpNumber === undefined ? "-" : String(row.checkpointOpNumber),
    ...(options.opsPerSecond === true
      ? [row.opsPerSecond === undefined ? "-" : row.opsPerSecond.toFixed(0)]
      : []),
    ...(digests ? [row.digest ?? "-"] : []),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  const line = "+" + widths.map((w) => "-".repeat(w + 2)).join("+") + "+";
  const format = (cells: string[]) =>
    "| " + cells.map((cell, i) => cell.padEnd(widths[i]!)).join(" | ") + " |";
  return [line, format(header), line, ...body.map(format), line].join("\n");
}
