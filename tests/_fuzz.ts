/**
 * A fuzzer of authenticated replica frames (used by `tests/fuzz_test.ts` and
 * `bench/fuzz_frames.ts`): it holds the cluster secret, opens replica links posing as one replica
 * to another, and sends well-formed replica messages whose every number is drawn from edge values
 * around the group's state (0, the current view and op-number and their neighbours, 2^20, 2^32,
 * `VIEW_NUMBER_MAX`, 2^53−1, ...), and some of them mutated byte by byte (the frame's checksum made
 * right again, so that the decoder, not the frame check, meets them).
 *
 * What it shows: no message a peer holding the secret can send crashes a replica or wedges the
 * group. VR tolerates crashed peers, not lying ones, so it does not claim that such a peer cannot
 * break safety; see the README ("Trusting peers").
 *
 * @module
 */
import { encodeKvOperation } from "../src/app/kv.ts";
import type { KvClient } from "../src/client/kv_client.ts";
import { loadConfig, loadIdentity, parseAddress } from "../src/config.ts";
import { Prng } from "../src/lib/prng.ts";
import { CHUNK_INDEX_LIMIT, encodeMessage, EPOCH_MAX } from "../src/transport/codec.ts";
import { encodeFrame, FRAME_BODY_BYTES_MAX, FrameDecoder } from "../src/transport/frame.ts";
import { type ClusterIdentity, ConnectorHandshake } from "../src/transport/handshake.ts";
import {
  CHECKPOINT_METADATA_BYTES,
  CHUNK_HASH_BYTES,
  encodeCheckpointMetadata,
} from "../src/vr/checkpoint.ts";
import {
  CHECKPOINT_CHUNKS_PER_REQUEST_MAX,
  OP_NUMBER_MAX,
  VIEW_NUMBER_MAX,
} from "../src/vr/constants.ts";
import type { CheckpointChunkInfo, LogEntry, ReplicaMessage } from "../src/vr/message.ts";
import { REPLICA_MESSAGE_TYPES } from "../src/vr/message.ts";
import { initialMembership } from "../src/vr/membership.ts";
import { type Cluster, primaryRow, statusRows } from "./_process.ts";

/** What the fuzzer knows of the group, to aim its numbers near the real ones. */
export interface FuzzContext {
  viewNumber: number;
  opNumber: number;
  commitNumber: number;
}

const encoder = new TextEncoder();

/** Frames posing as replica `claimed` to replica `target`, drawn from one seed. */
export class FrameFuzzer {
  readonly #prng: Prng;
  readonly #replicaCount: number;

  constructor(seed: number, replicaCount: number) {
    this.#prng = new Prng(seed);
    this.#replicaCount = replicaCount;
  }

  /** A number near the group's state, or an edge of the number space. */
  #number(context: FuzzContext): number {
    const p = this.#prng;
    switch (p.int(0, 13)) {
      case 0:
        return 0;
      case 1:
        return 1;
      case 2:
        return context.viewNumber;
      case 3:
        return context.viewNumber + p.int(1, 3);
      case 4:
        return Math.max(0, context.viewNumber - 1);
      case 5:
        return context.opNumber;
      case 6:
        return context.opNumber + p.int(1, 5);
      case 7:
        return context.commitNumber;
      case 8:
        return Math.max(0, context.commitNumber - p.int(1, 5));
      case 9:
        return 2 ** 20;
      case 10:
        return 2 ** 32;
      case 11:
        return p.pick([VIEW_NUMBER_MAX, VIEW_NUMBER_MAX + 1]);
      case 12:
        return Number.MAX_SAFE_INTEGER;
      default:
        return p.int(0, 2 ** 31);
    }
  }

  #entries(context: FuzzContext, viewNumber: number, first: number, count: number): LogEntry[] {
    const p = this.#prng;
    const entries: LogEntry[] = [];
    let timestamp = p.int(0, 1000);
    for (let i = 0; i < count; i++) {
      timestamp += p.int(0, 10);
      entries.push({
        opNumber: first + i,
        viewNumber: Math.min(viewNumber, this.#number(context)),
        clientId: p.int(1, 5),
        requestNumber: p.int(1, 1000),
        operation: encodeKvOperation({
          command: "SET",
          key: encoder.encode(`fuzz${p.int(0, 3)}`),
          value: encoder.encode(`v${p.int(0, 99)}`),
        }),
        timestamp,
      });
    }
    return entries;
  }

  #bytes(length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) out[i] = this.#prng.int(0, 255);
    return out;
  }

  /** A checkpoint chunk's index: small, or an edge below 2^32. */
  #chunkIndex(context: FuzzContext): number {
    const p = this.#prng;
    return p.chance(0.7) ? p.int(0, 4) : this.#number(context) % CHUNK_INDEX_LIMIT;
  }

  /** A checkpoint's metadata: well-formed around `opNumber` mostly, else random bytes. */
  #metadata(context: FuzzContext, opNumber: number, chunkCount: number): Uint8Array {
    const p = this.#prng;
    if (p.chance(0.2)) return this.#bytes(CHECKPOINT_METADATA_BYTES + p.int(1, 64));
    return encodeCheckpointMetadata({
      opNumber: p.chance(0.8) ? opNumber : this.#number(context),
      entryViewNumber: this.#number(context),
      entryTimestamp: p.int(0, 1000),
      requestNumberFloor: p.pick([0, this.#number(context)]),
      membership: initialMembership(
        Array.from({ length: this.#replicaCount }, (_, i) => `fuzz:${i}`),
      ),
      tableChunkCount: p.int(0, chunkCount),
    });
  }

  /** A few chunks of a made-up checkpoint: random hashes, small or edge lengths. */
  #chunks(context: FuzzContext): CheckpointChunkInfo[] {
    const p = this.#prng;
    const chunks: CheckpointChunkInfo[] = [];
    for (let i = p.int(1, 3); i > 0; i--) {
      chunks.push({
        hash: this.#bytes(CHUNK_HASH_BYTES),
        length: p.chance(0.7)
          ? p.int(0, 64)
          : Math.min(this.#number(context), FRAME_BODY_BYTES_MAX),
      });
    }
    return chunks;
  }

  /** One replica message of a random type, as replica `claimed` might send it. */
  message(context: FuzzContext, claimed: number): ReplicaMessage {
    const p = this.#prng;
    const n = () => this.#number(context);
    const type = p.pick(REPLICA_MESSAGE_TYPES);
    const viewNumber = n();
    const replica = claimed;
    // The group never reconfigures in a fuzz run: its messages are of epoch 0.
    const epoch = 0;
    switch (type) {
      case "prepare":
        return {
          type,
          epoch,
          viewNumber,
          entries: this.#entries(context, viewNumber, Math.max(1, n()), p.int(0, 3)),
          commitNumber: n(),
          replica,
        };
      case "prepare_ok":
        return { type, epoch, viewNumber, opNumber: n(), replica, readRound: p.pick([0, 1, n()]) };
      case "commit":
        return {
          type,
          epoch,
          viewNumber,
          commitNumber: n(),
          replica,
          readRound: p.pick([0, 1, n()]),
        };
      case "start_view_change":
        return { type, epoch, viewNumber, replica };
      case "do_view_change": {
        const commitNumber = n();
        const count = p.int(0, 2);
        return {
          type,
          epoch,
          viewNumber,
          lastNormalView: Math.min(viewNumber, n()),
          opNumber: commitNumber + count,
          commitNumber,
          entries: this.#entries(context, viewNumber, commitNumber + 1, count),
          replica,
        };
      }
      case "start_view": {
        const anchor = n();
        const count = p.int(0, 2);
        const opNumber = anchor + count;
        return {
          type,
          epoch,
          viewNumber,
          anchorOpNumber: anchor,
          entries: this.#entries(context, viewNumber, anchor + 1, count),
          opNumber,
          commitNumber: Math.min(opNumber, n()),
          replica,
        };
      }
      case "request_start_view":
        return { type, epoch, viewNumber, commitNumber: n(), replica };
      case "recovery":
        return { type, epoch, nonce: p.int(1, 2 ** 31), commitNumber: n(), replica };
      case "recovery_response": {
        const isPrimary = p.chance(0.5);
        const anchor = n();
        const count = isPrimary ? p.int(0, 2) : 0;
        const opNumber = isPrimary ? anchor + count : 0;
        return {
          type,
          epoch,
          viewNumber,
          nonce: p.int(1, 2 ** 31),
          isPrimary,
          anchorOpNumber: isPrimary ? anchor : 0,
          entries: this.#entries(context, viewNumber, anchor + 1, count),
          opNumber,
          commitNumber: Math.min(opNumber, n()),
          replica,
        };
      }
      case "get_state":
        return { type, epoch, viewNumber, opNumber: n(), replica };
      case "new_state": {
        const anchor = n();
        const count = p.int(0, 2);
        const opNumber = anchor + count + p.int(0, 2);
        return {
          type,
          epoch,
          viewNumber,
          normal: p.chance(0.5),
          anchorOpNumber: anchor,
          entries: this.#entries(context, viewNumber, anchor + 1, count),
          opNumber,
          commitNumber: Math.min(opNumber, n()),
          replica,
        };
      }
      case "checkpoint_manifest": {
        const opNumber = n();
        const chunks = this.#chunks(context);
        return {
          type,
          epoch,
          viewNumber,
          opNumber,
          metadata: this.#metadata(context, opNumber, chunks.length),
          chunks,
          replica,
        };
      }
      case "get_checkpoint_chunks": {
        const indexes = new Set<number>();
        const count = p.int(1, Math.min(4, CHECKPOINT_CHUNKS_PER_REQUEST_MAX));
        for (let i = 0; i < count; i++) indexes.add(this.#chunkIndex(context));
        return { type, epoch, opNumber: n(), indexes: [...indexes], replica };
      }
      case "checkpoint_chunk":
        return {
          type,
          epoch,
          opNumber: n(),
          index: this.#chunkIndex(context),
          bytes: this.#bytes(p.int(0, 64)),
          replica,
        };
      case "start_epoch":
      case "new_epoch": {
        // A later epoch (or an edge one) whose members are some of the group's and new ones.
        const next = p.chance(0.8) ? p.int(1, 2) : p.pick([0, EPOCH_MAX]);
        const addresses: string[] = [];
        for (let i = this.#replicaCount + p.int(0, 3); i > 0; i--) addresses.push(`fuzz:${i}`);
        const members = new Set<number>();
        for (let i = p.int(1, 3); i > 0; i--) members.add(p.int(0, addresses.length - 1));
        return {
          type,
          epoch: next,
          opNumber: Math.min(n(), OP_NUMBER_MAX),
          startViewNumber: Math.min(n(), VIEW_NUMBER_MAX),
          addresses,
          members: [...members],
          previousMembers: next === 0 ? [] : [...Array(this.#replicaCount).keys()],
          replica,
        };
      }
      case "epoch_started":
        return { type, epoch: p.pick([0, 1, 2, EPOCH_MAX]), replica };
    }
  }

  /**
   * The next frame: a message (claimed from `claimed`), its body mutated byte by byte with
   * probability `mutateProbability`; the frame's own length and checksum are always right.
   */
  frame(context: FuzzContext, claimed: number, mutateProbability: number): Uint8Array {
    const p = this.#prng;
    const body = encodeMessage(this.message(context, claimed));
    if (!p.chance(mutateProbability)) return encodeFrame(body);
    let bytes = body.slice();
    for (let i = p.int(1, 3); i > 0; i--) {
      const at = p.int(0, Math.max(0, bytes.length - 1));
      switch (p.int(0, 3)) {
        case 0:
          bytes[at] = bytes[at]! ^ (1 << p.int(0, 7));
          break;
        case 1:
          bytes[at] = p.pick([0x00, 0xff, 0xc1, 0xcf, 0x90, 0xdc]);
          break;
        case 2:
          bytes = bytes.slice(0, at);
          break;
        default: {
          const copy = new Uint8Array(bytes.length + 4);
          copy.set(bytes.subarray(0, at), 0);
          copy.set(bytes.subarray(at, at + 4), at);
          copy.set(bytes.subarray(at), at + Math.min(4, bytes.length - at));
          bytes = copy;
        }
      }
    }
    return encodeFrame(bytes);
  }

  /** A replica index other than `target`: the one the fuzzer poses as on a link to `target`. */
  claimedFor(target: number): number {
    return (target + this.#prng.int(1, this.#replicaCount - 1)) % this.#replicaCount;
  }
}

/**
 * An authenticated replica link posing as replica `claimed` to the replica at `host:port`.
 * Resolves once the handshake is done; `write` sends frames; `closed` tells whether the replica
 * hung up (it closes a link on a message it cannot decode).
 */
export class FuzzLink {
  closed = false;
  readonly #conn: Deno.TcpConn;
  /** The replica this link poses as. */
  readonly claimed: number;

  private constructor(conn: Deno.TcpConn, claimed: number) {
    this.#conn = conn;
    this.claimed = claimed;
  }

  static async open(
    host: string,
    port: number,
    identity: ClusterIdentity,
    claimed: number,
    target: number,
  ): Promise<FuzzLink> {
    const conn = await Deno.connect({ hostname: host, port });
    const handshake = new ConnectorHandshake(identity, "replica", claimed, target);
    await conn.write(encodeFrame(handshake.hello));
    const decoder = new FrameDecoder();
    const buffer = new Uint8Array(1024);
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) {
        conn.close();
        throw new Error("the replica closed the link during the handshake");
      }
      const bodies = decoder.push(buffer.slice(0, n));
      if (!Array.isArray(bodies)) throw new Error(bodies.error);
      if (bodies.length === 0) continue;
      const outcome = await handshake.onFrame(bodies[0]!);
      if ("error" in outcome) {
        conn.close();
        throw new Error(outcome.error);
      }
      await conn.write(encodeFrame(outcome.send));
      break;
    }
    const link = new FuzzLink(conn, claimed);
    // Drain whatever the replica sends (nothing, on a replica link) and notice when it hangs up.
    (async () => {
      try {
        while ((await conn.read(buffer)) !== null) { /* discard */ }
      } catch {
        // Reset: closed too.
      }
      link.closed = true;
    })();
    return link;
  }

  async write(bytes: Uint8Array): Promise<void> {
    if (this.closed) return;
    try {
      await this.#conn.write(bytes);
    } catch {
      this.closed = true;
    }
  }

  close(): void {
    this.closed = true;
    try {
      this.#conn.close();
    } catch {
      // Closed already.
    }
  }
}

/** What a fuzz run did. */
export interface FuzzReport {
  readonly frames: number;
  /** Links the replicas hung up on (a frame they could not decode) and the fuzzer opened again. */
  readonly reconnects: number;
  readonly seconds: number;
}

/**
 * Sends `frames` fuzzed frames to the replicas at `addresses`, round robin, in writes of
 * `batch` frames, over authenticated links (reopened when a replica hangs up). `context` is
 * asked now and then for the group's state, to aim the numbers.
 */
export async function fuzzGroup(options: {
  readonly addresses: readonly { host: string; port: number }[];
  readonly identity: ClusterIdentity;
  readonly frames: number;
  readonly seed: number;
  readonly mutateProbability: number;
  readonly context: () => Promise<FuzzContext>;
  readonly batch?: number;
  readonly onProgress?: (sent: number) => void;
}): Promise<FuzzReport> {
  const started = performance.now();
  const n = options.addresses.length;
  const fuzzer = new FrameFuzzer(options.seed, n);
  const links: (FuzzLink | undefined)[] = new Array(n).fill(undefined);
  const batch = options.batch ?? 100;
  let context = await options.context();
  let sent = 0;
  let reconnects = 0;
  let round = 0;
  while (sent < options.frames) {
    if (round++ % 50 === 0) {
      context = await options.context().catch(() => context);
      options.onProgress?.(sent);
    }
    for (let target = 0; target < n && sent < options.frames; target++) {
      let link = links[target];
      if (link === undefined || link.closed) {
        if (link !== undefined) reconnects++;
        const address = options.addresses[target]!;
        link = await FuzzLink.open(
          address.host,
          address.port,
          options.identity,
          fuzzer.claimedFor(target),
          target,
        ).catch(() => undefined);
        links[target] = link;
        if (link === undefined) continue; // Down or busy: try again next round.
      }
      const count = Math.min(batch, options.frames - sent);
      const frames: Uint8Array[] = [];
      let bytes = 0;
      for (let i = 0; i < count; i++) {
        const frame = fuzzer.frame(context, link.claimed, options.mutateProbability);
        frames.push(frame);
        bytes += frame.length;
      }
      const out = new Uint8Array(bytes);
      let offset = 0;
      for (const frame of frames) {
        out.set(frame, offset);
        offset += frame.length;
      }
      await link.write(out);
      sent += count;
    }
  }
  for (const link of links) link?.close();
  return { frames: sent, reconnects, seconds: (performance.now() - started) / 1000 };
}

/**
 * Fuzzes the group of `cluster` (`fuzzGroup`, its numbers aimed at the primary's state) while
 * `kv` writes, one write after another; returns the report and how many writes were
 * acknowledged. Throws if a write fails.
 */
export async function fuzzWhileWriting(
  cluster: Cluster,
  kv: KvClient,
  options: Pick<
    Parameters<typeof fuzzGroup>[0],
    "frames" | "seed" | "mutateProbability" | "onProgress"
  >,
): Promise<FuzzReport & { readonly acknowledged: number }> {
  const { identity } = await loadIdentity(await loadConfig(cluster.configPath));
  const addresses = cluster.addresses.map((text) =>
    parseAddress(text) as { host: string; port: number }
  );
  let writing = true;
  let acknowledged = 0;
  const writer = (async () => {
    for (let i = 0; writing; i++) {
      await kv.set(`key${i % 4}`, `value${i}`);
      acknowledged++;
    }
  })();
  const context = async (): Promise<FuzzContext> => {
    const primary = primaryRow(await statusRows(cluster.configPath));
    return {
      viewNumber: primary?.viewNumber ?? 0,
      opNumber: primary?.opNumber ?? 0,
      commitNumber: primary?.commitNumber ?? 0,
    };
  };
  try {
    const report = await fuzzGroup({ ...options, addresses, identity, context });
    return { ...report, acknowledged };
  } finally {
    writing = false;
    await writer;
  }
}

/**
 * Which replicas of `cluster` still run: a signal reaches them, and `cluster up` reported none
 * exiting ("replica 0 (pid 123) exited with code 1").
 */
export function replicasAlive(cluster: Cluster): boolean[] {
  const exited = /exited with code/.test(cluster.output().stderr);
  return cluster.pids.map((pid) => {
    try {
      Deno.kill(pid, "SIGCONT");
      return !exited;
    } catch {
      return false;
    }
  });
}
