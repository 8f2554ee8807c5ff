/**
 * A replica's `/metrics` page: every number of `ReplicaNode.metrics()`, named `vstamp_*`, with
 * `# HELP` and `# TYPE`, each sample labelled `replica="<member id>"`.
 *
 * @module
 */
import type { NodeMetrics } from "../transport/node.ts";
import { PrometheusText } from "./prometheus.ts";

/** The statuses `vstamp_status` has a sample for (1 for the replica's, 0 for the others). */
export const STATUSES: readonly string[] = [
  "normal",
  "view_change",
  "recovering",
  "transitioning",
  "shut_down",
];

export function renderNodeMetrics(m: NodeMetrics): string {
  const one = (value: number) => [[{}, value] as const];
  const text = new PrometheusText({ replica: String(m.replica) });
  text
    .counter(
      "vstamp_requests_total",
      "Client requests received (retries included).",
      one(m.requests),
    )
    .counter("vstamp_replies_total", "Replies produced for clients.", one(m.replies))
    .counter(
      "vstamp_commits_total",
      "Ops committed while this process ran (the commit-number's rise since it started).",
      one(m.commits),
    )
    .gauge(
      "vstamp_commit_number",
      "The commit-number: ops committed in the group's history.",
      one(m.commitNumber),
    )
    .gauge(
      "vstamp_op_number",
      "The op-number: the latest op in this replica's log.",
      one(m.opNumber),
    )
    .counter(
      "vstamp_view_changes_total",
      "View changes this replica began or joined (4.2).",
      one(m.viewChanges),
    )
    .counter("vstamp_recoveries_total", "Recoveries this replica began (4.3).", one(m.recoveries))
    .counter(
      "vstamp_state_transfers_total",
      "State transfers that brought news: log entries (kind=log, 5.2) or a checkpoint fetched and installed (kind=checkpoint, 5.1).",
      [[{ kind: "log" }, m.stateTransfers], [{ kind: "checkpoint" }, m.checkpointsInstalled]],
    )
    .counter(
      "vstamp_checkpoints_total",
      "Checkpoints this process wrote to disk (5.1).",
      one(m.checkpointsWritten),
    )
    .gauge(
      "vstamp_checkpoint_op_number",
      "The op-number of the newest durable checkpoint, 0 if none.",
      one(m.checkpointOpNumber),
    )
    .gauge(
      "vstamp_log_entries",
      "Log entries held (those after the last truncation).",
      one(m.logEntries),
    )
    .gauge(
      "vstamp_client_table_entries",
      "Clients in the client table (4.5).",
      one(m.clientTableEntries),
    )
    .gauge(
      "vstamp_connections",
      "Authenticated connections: replica links in and out, clients (status queries included).",
      [
        [{ kind: "peer_in" }, m.connections.peerIn],
        [{ kind: "peer_out" }, m.connections.peerOut],
        [{ kind: "client" }, m.connections.client],
      ],
    )
    .counter("vstamp_prepares_total", "Prepare messages sent (one per backup).", one(m.prepares))
    .counter(
      "vstamp_persists_total",
      "Batches written to the log (one write, and one fsync with --sync fsync, each).",
      one(m.persists),
    )
    .counter(
      "vstamp_network_bytes_total",
      "Bytes read and written on every connection of this process.",
      [[{ direction: "in" }, m.bytesIn], [{ direction: "out" }, m.bytesOut]],
    )
    .counter(
      "vstamp_cpu_seconds_total",
      "CPU time this process used.",
      [[{ mode: "user" }, m.cpuUserSeconds], [{ mode: "system" }, m.cpuSystemSeconds]],
    )
    .gauge("vstamp_epoch", "The epoch (7).", one(m.epoch))
    .gauge("vstamp_view", "The view-number.", one(m.viewNumber))
    .gauge(
      "vstamp_status",
      "1 for the replica's status, 0 for the others.",
      STATUSES.map((status) => [{ status }, status === m.status ? 1 : 0] as const),
    )
    .gauge(
      "vstamp_is_primary",
      "1 if this replica is the primary of its view.",
      one(m.isPrimary ? 1 : 0),
    )
    .gauge("vstamp_uptime_seconds", "Seconds since the process started.", one(m.uptimeSeconds))
    .histogram(
      "vstamp_request_duration_seconds",
      "At the primary: a client's request arriving to its reply leaving (reads and writes).",
      [[{}, m.latency.requestDuration]],
    )
    .histogram(
      "vstamp_prepare_ok_duration_seconds",
      "At the primary, per backup (member id): a Prepare sent to the first PrepareOk covering it.",
      [...m.latency.prepareOkDuration].sort(([a], [b]) => a - b).map(([backup, histogram]) =>
        [{ backup: String(backup) }, histogram] as const
      ),
    );
  return text.render();
}
