/**
 * The messages of Viewstamped Replication Revisited (Liskov & Cowling, 2012), with the paper's
 * names. Every message is a plain object with a `type` tag so that the transport can encode it
 * with a generic codec and validate it field by field before the core sees it.
 *
 * Replica-to-replica messages carry `replica`, the sender's member id, and `epoch`, the sender's
 * epoch (§7). A member id names one address of the group for good: in epoch 0 the ids are the
 * positions in the configuration; a reconfiguration gives each address new to the group the next
 * id (`src/vr/membership.ts`). Client-facing messages carry `clientId`.
 *
 * @module
 */

/**
 * A replica's member id: its position in the address book of the group (`Membership.addresses`),
 * which only grows. In epoch 0 it is the replica's position in the configuration.
 */
export type ReplicaIndex = number;

/**
 * One entry of the replicated log. Entries are tagged with the view in which the primary created
 * them: two logs holding an entry with the same op-number and view hold the same entries up to it
 * (the primary of a view starts from the log installed by its StartView and only appends), which
 * lets a view change ship log suffixes instead of whole logs (§5.3).
 */
export interface LogEntry {
  /** The op-number assigned by the primary. */
  readonly opNumber: number;
  /** The view in which the primary of that view created this entry. */
  readonly viewNumber: number;
  readonly clientId: number;
  readonly requestNumber: number;
  /** The operation for the state machine; opaque to the protocol. */
  readonly operation: Uint8Array;
  /** §4.4: a timestamp fixed by the primary, in milliseconds, non-decreasing along the log. */
  readonly timestamp: number;
}

// ---------------------------------------------------------------- client ↔ replica

/** §4.1 A client's request. `requestNumber` grows with each request of one client. */
export interface Request {
  readonly type: "request";
  readonly clientId: number;
  readonly requestNumber: number;
  readonly operation: Uint8Array;
}

/**
 * §4.1 The primary's reply to a client, once the request is committed and executed; for a read
 * answered without the log (§6.3, see `Commit.readRound`), once it is confirmed.
 */
export interface Reply {
  readonly type: "reply";
  readonly viewNumber: number;
  readonly clientId: number;
  readonly requestNumber: number;
  /** The op-number the request was executed at; for a read, the commit-number of the state read. */
  readonly opNumber: number;
  /**
   * The CRC-32C of the operation this reply answers: a client takes a reply for its request only
   * if it answers that very operation, not another that a restarted client with the same id sent
   * under the same number (see `RejectReason` "conflict").
   */
  readonly operationChecksum: number;
  readonly result: Uint8Array;
}

/**
 * §4.1 A replica that is not the primary tells a client which view it knows, so the client finds
 * the primary without waiting for a timeout. A hint only: it may be stale.
 */
export interface NotPrimary {
  readonly type: "not_primary";
  readonly clientId: number;
  readonly requestNumber: number;
  readonly viewNumber: number;
  readonly replica: ReplicaIndex;
}

/** §4.5 A restarted client asks for the latest request-number a replica has seen from it. */
export interface RequestNumberQuery {
  readonly type: "request_number_query";
  readonly clientId: number;
  readonly nonce: number;
}

/** §4.5 The answer: the largest request-number of `clientId` in this replica's log, or 0. */
export interface RequestNumberReply {
  readonly type: "request_number_reply";
  readonly clientId: number;
  readonly nonce: number;
  readonly requestNumber: number;
  readonly replica: ReplicaIndex;
}

/** Why the primary refuses a request instead of executing it or answering it. */
export type RejectReason =
  /**
   * The request-number is the one of another request of this client (a different operation): a
   * client restarted with the same id reused it. The request was not executed under that number;
   * the client may send it again under a new one.
   */
  | "conflict"
  /**
   * The request-number is below the client's latest executed request: another client uses this
   * client-id with higher numbers. Not executed.
   */
  | "stale"
  /**
   * The group no longer knows the client (its client table is full and evicted it) and the
   * request-number is at or below the largest evicted one: the request may have been executed
   * before the eviction, and is not executed again. Its outcome is unknown to the client; it
   * numbers its next requests above `floor`.
   */
  | "evicted"
  /** The operation is larger than `Limits.operationBytesMax`. Not executed. */
  | "too_large"
  /**
   * §7 A Reconfiguration or CheckEpoch names another epoch than the primary's (`floor` is the
   * primary's epoch), or a request reached a primary whose log holds a Reconfiguration: the group
   * takes no other request until the new epoch starts.
   */
  | "epoch"
  /** §7 A Reconfiguration's new configuration is invalid (even size, duplicates, empty). */
  | "bad_configuration"
  /** §7 A Reconfiguration arrived while another one is in progress. Not executed. */
  | "reconfiguring"
  /**
   * The request-number is more than `REQUEST_NUMBER_AHEAD_MAX` beyond the primary's clock in
   * microseconds (or the floor): the client's clock is far ahead, or it is not numbering from its
   * clock. Not executed; `floor` is the largest number the primary would accept.
   */
  | "ahead";

/** The primary's answer to a request it will neither execute nor answer (see `RejectReason`). */
export interface Rejected {
  readonly type: "rejected";
  readonly clientId: number;
  readonly requestNumber: number;
  readonly reason: RejectReason;
  /**
   * A request-number the client's next requests must exceed: the latest executed request's
   * ("stale"), the client table's floor ("evicted"), else the rejected number.
   */
  readonly floor: number;
  readonly replica: ReplicaIndex;
}

/** §7.4 Anyone may ask a replica for the group's configuration and the view it knows. */
export interface Locate {
  readonly type: "locate";
  readonly clientId: number;
}

/**
 * §7 An administrator's request to change the group: from epoch `epoch` (the current one) to the
 * configuration `addresses` (odd in number, distinct). The primary replicates it as an operation;
 * once it commits, the group moves to epoch `epoch + 1` and the primary answers with the new
 * `Configuration` (`requestNumber` is this request's).
 */
export interface Reconfiguration {
  readonly type: "reconfiguration";
  readonly clientId: number;
  readonly requestNumber: number;
  readonly epoch: number;
  readonly addresses: readonly string[];
}

/**
 * §7.3 An administrator asks the group of epoch `epoch` (or a later one) to confirm it is running:
 * the primary commits it like a request, so its answer (a `Configuration`) means that a quorum of
 * the new group holds the state, and the old machines may be turned off.
 */
export interface CheckEpoch {
  readonly type: "check_epoch";
  readonly clientId: number;
  readonly requestNumber: number;
  readonly epoch: number;
}

/**
 * §7.4 The answer to Locate, Reconfiguration and CheckEpoch; also sent, unasked, to a client that
 * reaches a replica which left the group (it names the group that replaced it).
 */
export interface Configuration {
  readonly type: "configuration";
  readonly clientId: number;
  /** The request answered (Reconfiguration, CheckEpoch), 0 for Locate and unasked ones. */
  readonly requestNumber: number;
  /** The epoch `addresses` are the members of. */
  readonly epoch: number;
  readonly viewNumber: number;
  /** The members of `epoch`, in order (the primary of view v is the one at v - its first view). */
  readonly addresses: readonly string[];
  readonly replica: ReplicaIndex;
  /**
   * The client table's floor (see `Rejected`): a new client numbers its requests above it, so
   * that none is mistaken for a retry of an evicted client's.
   */
  readonly requestNumberFloor: number;
}

// ---------------------------------------------------------------- normal operation (§4.1)

/**
 * §4.1, batched (§6.2): the primary sends one or more consecutive log entries. The entries start
 * right after some op-number the backup may or may not hold; a backup appends them only in order.
 * `commitNumber` piggybacks the primary's commit-number.
 */
export interface Prepare {
  readonly type: "prepare";
  /** §7 The sender's epoch. */
  readonly epoch: number;
  readonly viewNumber: number;
  readonly entries: readonly LogEntry[];
  readonly commitNumber: number;
  readonly replica: ReplicaIndex;
}

/** §4.1 A backup holds (durably) every entry of the view's log up to `opNumber`: cumulative. */
export interface PrepareOk {
  readonly type: "prepare_ok";
  /** §7 The sender's epoch. */
  readonly epoch: number;
  readonly viewNumber: number;
  readonly opNumber: number;
  readonly replica: ReplicaIndex;
  /**
   * The latest read round (`Commit.readRound`) this backup received from the primary of this
   * view, 0 if none: the backup was in this view, normal, after that round began.
   */
  readonly readRound: number;
}

/**
 * §4.1 The primary's commit-number when it has nothing to prepare; also the heartbeat. Backups
 * answer every Commit with a PrepareOk.
 *
 * §6.3 reads, without leases: a `readRound` above 0 starts a read round. The primary answers a
 * read-only request without a log entry once f backups echoed, in their PrepareOks, a round that
 * began after the read arrived (with its own vote, a majority was still in its view then, so no
 * later view had formed before the read, let alone committed), and once its commit-number reaches
 * the op-number its log had when the read arrived. No clocks are involved, unlike the paper's
 * leases.
 */
export interface Commit {
  readonly type: "commit";
  /** §7 The sender's epoch. */
  readonly epoch: number;
  readonly viewNumber: number;
  readonly commitNumber: number;
  readonly replica: ReplicaIndex;
  /** A read round of this view (numbered from 1), or 0 for a plain heartbeat. */
  readonly readRound: number;
}

// ---------------------------------------------------------------- view change (§4.2)

export interface StartViewChange {
  readonly type: "start_view_change";
  /** §7 The sender's epoch. */
  readonly epoch: number;
  readonly viewNumber: number;
  readonly replica: ReplicaIndex;
}

/**
 * §4.2 Sent to the new primary. Per §5.3 it carries only the uncommitted suffix of the sender's
 * log: the entries after `commitNumber` up to `opNumber`.
 */
export interface DoViewChange {
  readonly type: "do_view_change";
  /** §7 The sender's epoch. */
  readonly epoch: number;
  readonly viewNumber: number;
  /** The latest view in which the sender's status was normal. */
  readonly lastNormalView: number;
  readonly opNumber: number;
  readonly commitNumber: number;
  /** Entries `commitNumber + 1 .. opNumber`. */
  readonly entries: readonly LogEntry[];
  readonly replica: ReplicaIndex;
}

/**
 * §4.2 The new primary's log, as a suffix (§5.3): `entries` are the log after `anchorOpNumber`.
 * A replica installs it only if it holds the committed prefix up to `anchorOpNumber`; otherwise it
 * fetches that prefix first (§5.2). Also the answer to RequestStartView.
 */
export interface StartView {
  readonly type: "start_view";
  /** §7 The sender's epoch. */
  readonly epoch: number;
  readonly viewNumber: number;
  readonly anchorOpNumber: number;
  readonly entries: readonly LogEntry[];
  readonly opNumber: number;
  readonly commitNumber: number;
  readonly replica: ReplicaIndex;
}

/**
 * Correction to §5.2 (the checklist's second defect): a replica that learns of a newer view asks
 * that view's primary for its StartView state and adopts the view only when it installs it.
 */
export interface RequestStartView {
  readonly type: "request_start_view";
  /** §7 The sender's epoch. */
  readonly epoch: number;
  readonly viewNumber: number;
  /** The requester's commit-number: the primary ships the log after it if that fits. */
  readonly commitNumber: number;
  readonly replica: ReplicaIndex;
}

// ---------------------------------------------------------------- recovery (§4.3)

export interface Recovery {
  readonly type: "recovery";
  /** §7 The sender's epoch. */
  readonly epoch: number;
  readonly nonce: number;
  /** The requester's commit-number: the primary ships the log after it if that fits. */
  readonly commitNumber: number;
  readonly replica: ReplicaIndex;
}

/**
 * §4.3 Only a replica in status normal answers. The primary of `viewNumber` adds its log state:
 * `entries` after `anchorOpNumber`, `opNumber`, `commitNumber`; a backup sends `isPrimary: false`
 * and no entries.
 */
export interface RecoveryResponse {
  readonly type: "recovery_response";
  /** §7 The sender's epoch. */
  readonly epoch: number;
  readonly viewNumber: number;
  readonly nonce: number;
  readonly isPrimary: boolean;
  readonly anchorOpNumber: number;
  readonly entries: readonly LogEntry[];
  readonly opNumber: number;
  readonly commitNumber: number;
  readonly replica: ReplicaIndex;
}

// ---------------------------------------------------------------- state transfer (§5.2)

/** §5.2 Ask for the log after `opNumber`. */
export interface GetState {
  readonly type: "get_state";
  /** §7 The sender's epoch. */
  readonly epoch: number;
  readonly viewNumber: number;
  readonly opNumber: number;
  readonly replica: ReplicaIndex;
}

/**
 * §5.2 The answer: `entries` follow `anchorOpNumber` (the requester's op-number). Entries up to
 * `commitNumber` are committed and may be trusted by anyone; the rest only by a replica that is in
 * status normal in the same view as a responder that is also normal (`normal`).
 */
export interface NewState {
  readonly type: "new_state";
  /** §7 The sender's epoch. */
  readonly epoch: number;
  readonly viewNumber: number;
  readonly normal: boolean;
  readonly anchorOpNumber: number;
  readonly entries: readonly LogEntry[];
  readonly opNumber: number;
  readonly commitNumber: number;
  readonly replica: ReplicaIndex;
}

// ---------------------------------------------------------------- checkpoint transfer (§5.1)

/**
 * One chunk of a checkpoint, as its manifest names it: equal bytes have equal hashes, whichever
 * replica produced them, so a receiver fetches only the chunks it does not already hold.
 */
export interface CheckpointChunkInfo {
  /** SHA-256 of the chunk's bytes, 32 bytes. */
  readonly hash: Uint8Array;
  readonly length: number;
}

/**
 * §5.1 The answer to a GetState naming an op-number the sender's log no longer reaches back to
 * (entries up to a checkpoint leave the log): its newest checkpoint, described, not carried. The
 * state at `opNumber` is committed (a replica checkpoints only committed state), so any replica
 * may install it. The requester fetches the chunks with GetCheckpointChunks, checks each against
 * its hash, and installs the checkpoint only once it holds them all; then it asks for the log
 * after `opNumber` again.
 */
export interface CheckpointManifest {
  readonly type: "checkpoint_manifest";
  /** §7 The sender's epoch. */
  readonly epoch: number;
  /** The sender's view (a hint, like NewState's). */
  readonly viewNumber: number;
  /** The op-number of the last operation the checkpoint includes. */
  readonly opNumber: number;
  /**
   * What the core stores beside the chunks (`src/vr/checkpoint.ts`): the entry at `opNumber`
   * (its view and timestamp), the client table's floor and how many chunks are the state
   * machine's; opaque to the transport.
   */
  readonly metadata: Uint8Array;
  /** The client table's chunks, then the state machine's snapshot chunks. */
  readonly chunks: readonly CheckpointChunkInfo[];
  readonly replica: ReplicaIndex;
}

/** §5.1 Ask for chunks of the checkpoint of `opNumber` (by their place in its manifest). */
export interface GetCheckpointChunks {
  readonly type: "get_checkpoint_chunks";
  /** §7 The sender's epoch. */
  readonly epoch: number;
  readonly opNumber: number;
  /** Distinct, each below the chunk count; at most `CHECKPOINT_CHUNKS_PER_REQUEST_MAX` of them. */
  readonly indexes: readonly number[];
  readonly replica: ReplicaIndex;
}

/** §5.1 One chunk of the checkpoint of `opNumber`; the receiver checks it against the hash. */
export interface CheckpointChunk {
  readonly type: "checkpoint_chunk";
  /** §7 The sender's epoch. */
  readonly epoch: number;
  readonly opNumber: number;
  readonly index: number;
  readonly bytes: Uint8Array;
  readonly replica: ReplicaIndex;
}

// ---------------------------------------------------------------- reconfiguration (§7)

/** §7 A membership as StartEpoch and NewEpoch carry it (see `Membership`, `src/vr/membership.ts`). */
interface EpochNews {
  readonly epoch: number;
  /** The op-number of the Reconfiguration that began `epoch`. */
  readonly opNumber: number;
  /** The first view of `epoch` (the view after the one the Reconfiguration was created in). */
  readonly startViewNumber: number;
  /** The address book, by member id. */
  readonly addresses: readonly string[];
  /** The member ids of `epoch`, in order. */
  readonly members: readonly number[];
  /** The member ids of the epoch before. */
  readonly previousMembers: readonly number[];
  readonly replica: ReplicaIndex;
}

/**
 * §7.1 The membership of epoch `epoch`, as the Reconfiguration at `opNumber` made it: sent to the
 * members of the new group (they fetch the state up to `opNumber` and start), and re-sent by the
 * replicas that leave until f'+1 new members answered EpochStarted. A replica adopts it only once
 * it holds the Reconfiguration at `opNumber` committed (or a checkpoint after it).
 */
export interface StartEpoch extends EpochNews {
  readonly type: "start_epoch";
}

/** §7.2 Sent to a replica that sent a message of an older epoch: the group is in `epoch` now. */
export interface NewEpoch extends EpochNews {
  readonly type: "new_epoch";
}

/** §7.1 A member of `epoch` holds its state and runs: sent to the replicas that left. */
export interface EpochStarted {
  readonly type: "epoch_started";
  readonly epoch: number;
  readonly replica: ReplicaIndex;
}

/** Messages clients send to replicas. */
export type ClientMessage =
  | Request
  | RequestNumberQuery
  | Locate
  | Reconfiguration
  | CheckEpoch;

/** Messages replicas send to clients. */
export type ClientReplyMessage =
  | Reply
  | NotPrimary
  | RequestNumberReply
  | Configuration
  | Rejected;

/** Messages replicas send to each other. */
export type ReplicaMessage =
  | Prepare
  | PrepareOk
  | Commit
  | StartViewChange
  | DoViewChange
  | StartView
  | RequestStartView
  | Recovery
  | RecoveryResponse
  | GetState
  | NewState
  | CheckpointManifest
  | GetCheckpointChunks
  | CheckpointChunk
  | StartEpoch
  | NewEpoch
  | EpochStarted;

export type Message = ClientMessage | ClientReplyMessage | ReplicaMessage;

export type MessageType = Message["type"];

/** The types a replica accepts from a client connection. */
export const CLIENT_MESSAGE_TYPES: readonly ClientMessage["type"][] = [
  "request",
  "request_number_query",
  "locate",
  "reconfiguration",
  "check_epoch",
];

/** The types a replica accepts from a peer replica. */
export const REPLICA_MESSAGE_TYPES: readonly ReplicaMessage["type"][] = [
  "prepare",
  "prepare_ok",
  "commit",
  "start_view_change",
  "do_view_change",
  "start_view",
  "request_start_view",
  "recovery",
  "recovery_response",
  "get_state",
  "new_state",
  "checkpoint_manifest",
  "get_checkpoint_chunks",
  "checkpoint_chunk",
  "start_epoch",
  "new_epoch",
  "epoch_started",
];

/** The types a client accepts from a replica. */
export const CLIENT_REPLY_TYPES: readonly ClientReplyMessage["type"][] = [
  "reply",
  "not_primary",
  "request_number_reply",
  "configuration",
  "rejected",
];

/** A short human-readable description of a message, for traces and logs. */
export function describeMessage(message: Message): string {
  switch (message.type) {
    case "request":
      return `request c=${message.clientId} s=${message.requestNumber}`;
    case "reply":
      return `reply v=${message.viewNumber} c=${message.clientId} s=${message.requestNumber} op=${message.opNumber}`;
    case "not_primary":
      return `not_primary v=${message.viewNumber} c=${message.clientId} s=${message.requestNumber}`;
    case "request_number_query":
      return `request_number_query c=${message.clientId}`;
    case "request_number_reply":
      return `request_number_reply c=${message.clientId} s=${message.requestNumber}`;
    case "locate":
      return `locate c=${message.clientId}`;
    case "configuration":
      return `configuration e=${message.epoch} v=${message.viewNumber} ${
        message.addresses.join(",")
      }`;
    case "reconfiguration":
      return `reconfiguration c=${message.clientId} s=${message.requestNumber} e=${message.epoch} ${
        message.addresses.join(",")
      }`;
    case "check_epoch":
      return `check_epoch c=${message.clientId} s=${message.requestNumber} e=${message.epoch}`;
    case "start_epoch":
    case "new_epoch":
      return `${message.type} e=${message.epoch} n=${message.opNumber} v=${message.startViewNumber} members=${
        message.members.join(",")
      }`;
    case "epoch_started":
      return `epoch_started e=${message.epoch}`;
    case "rejected":
      return `rejected c=${message.clientId} s=${message.requestNumber} ${message.reason}`;
    case "prepare": {
      const first = message.entries[0]?.opNumber ?? 0;
      const last = message.entries[message.entries.length - 1]?.opNumber ?? 0;
      return `prepare v=${message.viewNumber} ops=${first}..${last} k=${message.commitNumber}`;
    }
    case "prepare_ok":
      return `prepare_ok v=${message.viewNumber} n=${message.opNumber}`;
    case "commit":
      return `commit v=${message.viewNumber} k=${message.commitNumber}`;
    case "start_view_change":
      return `start_view_change v=${message.viewNumber}`;
    case "do_view_change":
      return `do_view_change v=${message.viewNumber} v'=${message.lastNormalView} n=${message.opNumber} k=${message.commitNumber} entries=${message.entries.length}`;
    case "start_view":
      return `start_view v=${message.viewNumber} anchor=${message.anchorOpNumber} n=${message.opNumber} k=${message.commitNumber}`;
    case "request_start_view":
      return `request_start_view v=${message.viewNumber} k=${message.commitNumber}`;
    case "recovery":
      return `recovery x=${message.nonce} k=${message.commitNumber}`;
    case "recovery_response":
      return `recovery_response v=${message.viewNumber} x=${message.nonce} primary=${message.isPrimary} n=${message.opNumber} k=${message.commitNumber}`;
    case "get_state":
      return `get_state v=${message.viewNumber} n=${message.opNumber}`;
    case "checkpoint_manifest":
      return `checkpoint_manifest v=${message.viewNumber} op=${message.opNumber} chunks=${message.chunks.length}`;
    case "get_checkpoint_chunks":
      return `get_checkpoint_chunks op=${message.opNumber} chunks=${message.indexes.join(",")}`;
    case "checkpoint_chunk":
      return `checkpoint_chunk op=${message.opNumber} chunk=${message.index} bytes=${message.bytes.length}`;
    case "new_state":
      return `new_state v=${message.viewNumber} normal=${message.normal} anchor=${message.anchorOpNumber} entries=${message.entries.length} n=${message.opNumber} k=${message.commitNumber}`;
  }
}
