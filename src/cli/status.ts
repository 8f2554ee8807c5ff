/**
 * `vstamp status`: one row per replica, like `etcdctl endpoint status -w table`.
 *
 * @module
 */
import { Command } from "commander";
import { Client, ClientError } from "../client/client.ts";
import { fetchStatus } from "../client/status.ts";
import { ConfigError, type GroupAccess, loadAccess, loadConfig, parseAddress } from "../config.ts";
import type { NodeCounters, ReplicaStatus } from "../transport/node.ts";
import { parseCount } from "./sim.ts";

/** How long a replica may take to answer a status query with its digest. */
const DIGEST_STATUS_TIMEOUT_MS = 60_000;

interface StatusFlags {
  config?: string;
  host?: string;
  port?: number;
  json?: boolean;
  digest?: boolean;
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
    .action(async (flags: StatusFlags) => {
      Deno.exitCode = await runStatus(flags);
    });
}

async function runStatus(flags: StatusFlags): Promise<number> {
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
  const rows = await collectStatus(addresses, { digest: flags.digest === true, ...access });
  if (flags.json) {
    for (const row of rows) console.log(JSON.stringify(row));
  } else {
    console.log(renderTable(rows));
  }
  return rows.every((row) => row.reachable) ? 0 : 1;
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

export function renderTable(rows: readonly StatusRow[], pids?: readonly number[]): string {
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
    ...(digests ? [row.digest ?? "-"] : []),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  const line = "+" + widths.map((w) => "-".repeat(w + 2)).join("+") + "+";
  const format = (cells: string[]) =>
    "| " + cells.map((cell, i) => cell.padEnd(widths[i]!)).join(" | ") + " |";
  return [line, format(header), line, ...body.map(format), line].join("\n");
}
