/**
 * Fault-injecting TCP relays in front of replicas that run as real processes: `cluster up
 * --faults` (its fault console) and the tests that kill and partition real replicas.
 *
 * One listener stands in front of each replica, and the configuration file lists the listeners,
 * so every connection to replica `i` (from a peer, a client or `vstamp status`) passes through
 * relay `i`. Replicas are named by their id in the group's address book, as their hello frames
 * name them (the position in the first configuration, then the order they joined in). The proxy reads the connection's hello frame to learn who is speaking, so it can
 * cut one direction of one link: replica `a` sends to `b` only on the connection `a` opened to
 * `b`, and `b` answers on its own connection to `a`.
 *
 * Faults:
 * - `cut(from, to)`: closes the connections that carry `from → to` and refuses new ones until
 *   `heal`. TCP cannot lose bytes in the middle of a stream, so a cut link loses every message
 *   in flight on it, as a dropped packet stream would, and the sender sees its connection close.
 * - `delay(ms)`: every chunk forwarded waits this long first (order is kept).
 * - The upstream port of a replica can change (`setUpstream`): a restarted replica binds a new
 *   port and the configuration stays the same.
 *
 * TLS connections cannot be relayed this way (the hello is encrypted): `cluster up` refuses
 * `--faults` with `--tls`.
 *
 * @module
 */
import { concatBytes } from "../lib/bytes.ts";
import { FRAME_HEADER_BYTES } from "../transport/frame.ts";
import { decodeHello, HANDSHAKE_BODY_BYTES_MAX } from "../transport/handshake.ts";

/** A replica index, or "client" for any client (including status queries). */
export type Endpoint = number | "client";

interface Link {
  readonly inbound: Deno.TcpConn;
  upstream: Deno.TcpConn | undefined;
  readonly from: Endpoint;
  readonly to: number;
}

function linkKey(from: Endpoint, to: Endpoint): string {
  return `${from}>${to}`;
}

/** A relay for each replica, and the links cut between them. */
export class FaultNetwork {
  readonly #host: string;
  readonly #listeners: Deno.TcpListener[] = [];
  readonly #upstreams: (number | undefined)[] = [];
  readonly #cut = new Set<string>();
  readonly #links = new Set<Link>();
  #delayMs = 0;
  #closed = false;
  /** Connections refused or closed because of a cut, for a test to check the fault bit. */
  refused = 0;

  private constructor(n: number, host: string) {
    this.#host = host;
    for (let i = 0; i < n; i++) this.add();
  }

  /** Relays for `n` replicas, listening on free ports of `host` (replicas listen there too). */
  static start(n: number, host = "127.0.0.1"): FaultNetwork {
    return new FaultNetwork(n, host);
  }

  /** A relay for one more replica (one that joins the group): its address. */
  add(): string {
    const index = this.#listeners.length;
    const listener = Deno.listen({ hostname: this.#host, port: 0 });
    this.#listeners.push(listener);
    this.#upstreams.push(undefined);
    this.#accept(listener, index);
    return this.#address(listener);
  }

  /** The addresses to put in the configuration file, one per replica. */
  get addresses(): string[] {
    return this.#listeners.map((listener) => this.#address(listener));
  }

  /** The links cut now, as `from>to` (`client>2`: clients cannot reach replica 2). */
  get cuts(): string[] {
    return [...this.#cut].sort();
  }

  #address(listener: Deno.TcpListener): string {
    const port = (listener.addr as Deno.NetAddr).port;
    return this.#host.includes(":") ? `[${this.#host}]:${port}` : `${this.#host}:${port}`;
  }

  /** Where replica `index` listens now (undefined while it is down). */
  setUpstream(index: number, port: number | undefined): void {
    this.#upstreams[index] = port;
  }

  /** Stop carrying `from → to`. A client link is cut both ways (one connection carries both). */
  cut(from: Endpoint, to: Endpoint): void {
    this.#cut.add(linkKey(from, to));
    for (const link of this.#links) {
      if (this.#isCut(link)) this.#drop(link, true);
    }
  }

  /** Cut every link to and from replica `index`, clients included. */
  isolate(index: number, n: number): void {
    this.cut("client", index);
    this.cutFromReplicas(index, n);
  }

  /** Cut every link between replica `index` and the other replicas; clients still reach it. */
  cutFromReplicas(index: number, n: number): void {
    for (let other = 0; other < n; other++) {
      if (other === index) continue;
      this.cut(index, other);
      this.cut(other, index);
    }
  }

  delay(ms: number): void {
    this.#delayMs = ms;
  }

  /**
   * Undo every cut and delay, or only the cut of `from → to` (connections closed by a cut stay
   * closed; peers reconnect).
   */
  heal(from?: Endpoint, to?: Endpoint): void {
    if (from !== undefined && to !== undefined) {
      this.#cut.delete(linkKey(from, to));
      return;
    }
    this.#cut.clear();
    this.#delayMs = 0;
  }

  close(): void {
    this.#closed = true;
    for (const listener of this.#listeners) {
      try {
        listener.close();
      } catch {
        // Already closed.
      }
    }
    for (const link of this.#links) this.#drop(link, false);
  }

  #isCut(link: Link): boolean {
    if (this.#cut.has(linkKey(link.from, link.to))) return true;
    return link.from === "client" && this.#cut.has(linkKey(link.to, "client"));
  }

  #drop(link: Link, fault: boolean): void {
    this.#links.delete(link);
    if (fault) this.refused++;
    for (const conn of [link.inbound, link.upstream]) {
      try {
        conn?.close();
      } catch {
        // Already closed.
      }
    }
  }

  async #accept(listener: Deno.TcpListener, to: number): Promise<void> {
    try {
      for await (const inbound of listener) this.#serve(inbound, to);
    } catch {
      // The listener was closed.
    }
  }

  async #serve(inbound: Deno.TcpConn, to: number): Promise<void> {
    // The hello is the first frame of every connection: its header says how long it is.
    let first = await readAtLeast(inbound, FRAME_HEADER_BYTES);
    const bodyLength = first === undefined
      ? 0
      : new DataView(first.buffer, first.byteOffset, 4).getUint32(0);
    if (first !== undefined && first.length < FRAME_HEADER_BYTES + bodyLength) {
      first = bodyLength > HANDSHAKE_BODY_BYTES_MAX
        ? undefined
        : await readMore(inbound, first, FRAME_HEADER_BYTES + bodyLength);
    }
    if (first === undefined || this.#closed) {
      inbound.close();
      return;
    }
    const hello = decodeHello(first.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + bodyLength));
    const from: Endpoint = "error" in hello || hello.role !== "replica" ? "client" : hello.index;
    const link: Link = { inbound, upstream: undefined, from, to };
    const port = this.#upstreams[to];
    if (this.#isCut(link) || port === undefined) {
      // Only refusals because of a cut count as faults; a replica that is down refuses too.
      if (this.#isCut(link)) this.refused++;
      inbound.close();
      return;
    }
    this.#links.add(link);
    try {
      link.upstream = await Deno.connect({ hostname: this.#host, port });
      link.upstream.setNoDelay(true);
      inbound.setNoDelay(true);
    } catch {
      this.#drop(link, false);
      return;
    }
    if (!this.#links.has(link)) {
      // Cut while connecting.
      link.upstream.close();
      return;
    }
    await Promise.all([
      this.#pump(link, first, inbound, link.upstream),
      this.#pump(link, undefined, link.upstream, inbound),
    ]);
  }

  /** Copies `source` to `sink` until either closes, then closes the link. */
  async #pump(
    link: Link,
    head: Uint8Array | undefined,
    source: Deno.TcpConn,
    sink: Deno.TcpConn,
  ): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      if (head !== undefined) await writeAll(sink, head);
      for (;;) {
        const n = await source.read(buffer);
        if (n === null || !this.#links.has(link)) break;
        const chunk = buffer.slice(0, n);
        if (this.#delayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.#delayMs));
        if (!this.#links.has(link)) break;
        await writeAll(sink, chunk);
      }
    } catch {
      // Either side closed.
    }
    if (this.#links.has(link)) this.#drop(link, false);
  }
}

/** `head`, then what `readAtLeast` reads until there are `count` bytes in all. */
async function readMore(
  conn: Deno.TcpConn,
  head: Uint8Array,
  count: number,
): Promise<Uint8Array | undefined> {
  const rest = await readAtLeast(conn, count - head.length);
  return rest === undefined ? undefined : concatBytes([head, rest]);
}

async function readAtLeast(conn: Deno.TcpConn, count: number): Promise<Uint8Array | undefined> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buffer = new Uint8Array(64 * 1024);
  try {
    while (total < count) {
      const n = await conn.read(buffer);
      if (n === null) return undefined;
      chunks.push(buffer.slice(0, n));
      total += n;
    }
  } catch {
    return undefined;
  }
  return concatBytes(chunks);
}

async function writeAll(conn: Deno.TcpConn, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await conn.write(bytes.subarray(written));
}
