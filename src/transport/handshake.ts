/**
 * Who is speaking on a connection, and proof of it: the hello that opens every connection, and the
 * challenge-response that authenticates it when the group has a cluster secret.
 *
 * A group is named by its cluster id and, optionally, shares a secret (never on a command line:
 * a file or the environment, see `src/config.ts`). A replica accepts messages on a replica link
 * only after the link proved, both ways, that each end holds the secret of the same cluster id:
 *
 * ```text
 * connector → acceptor  hello      "vstp", version, role, index, target, flags, cluster id, nonce C,
 *                                   [app]
 * acceptor  → connector challenge  "vsth", 1, nonce A, HMAC(secret, "acceptor", id, role, index,
 *                                   target, C, A)
 * connector → acceptor  proof      "vsth", 3, HMAC(secret, "connector", id, role, index, target,
 *                                   A, C)
 * ```
 *
 * Each proof covers both nonces, so neither side can replay an answer it saw on another
 * connection, and the roles' labels differ, so a proof cannot be reflected back to its maker.
 * The hello names the replica the connector meant to reach (`target`), and both proofs cover it:
 * a process that takes a replica's address (a stopped replica's port) cannot relay an honest
 * replica's handshake to a third replica, which refuses a link made for another. The
 * HMAC is WebCrypto's HMAC-SHA-256. An acceptor that refuses a connection says why in a `refused`
 * frame (`"vsth", 2, reason`) before it closes, so that the other end can log the reason.
 *
 * Clients (and `vstamp status`) authenticate the same way when they hold the secret or when the
 * group requires it (`require_client_auth`); otherwise a client's hello is accepted at once, so a
 * client costs no extra round trip.
 *
 * The hello may end with the app the connector runs or speaks (`name@version`, one length byte
 * and the bytes; see `src/app/app.ts`): an acceptor that knows its own app refuses a peer or a
 * client that names another one, so that replicas of different services never form a group and a
 * REPL for one service is not pointed at another. A hello without it (a status query, a tool)
 * is accepted.
 *
 * Handshake frames start with the bytes "vsth"; a message body is a msgpack array, whose first
 * byte is never 0x76 ('v'), so a connector can tell a refusal from a message at any time.
 *
 * @module
 */

/** A connection's role, as its hello declares it. */
export type Role = "client" | "replica" | "status";

/** The version of the hello. Version 1 (before authentication) is refused with a clear reason. */
export const HELLO_VERSION = 2;
/** The longest cluster id, in bytes of UTF-8. */
export const CLUSTER_ID_BYTES_MAX = 64;
/** Bytes of each side's random nonce. */
export const NONCE_BYTES = 16;
/** Bytes of an HMAC-SHA-256 proof. */
export const PROOF_BYTES = 32;
/**
 * The largest frame body a connection may send before its handshake is complete: a hello, a
 * proof or a refusal is far smaller. A peer that has not said who it is cannot make a replica
 * buffer more than this.
 */
export const HANDSHAKE_BODY_BYTES_MAX = 512;
/** A connection that has not completed its handshake this long after it opened is closed. */
export const HANDSHAKE_TIMEOUT_MS = 5_000;
/** The shortest secret accepted, in bytes: 128 bits. */
export const SECRET_BYTES_MIN = 16;
/** The longest app tag (`name@version`) a hello carries, in bytes. */
export const APP_TAG_BYTES_MAX = 100;
/** The longest reason a refusal carries, in bytes. */
const REASON_BYTES_MAX = 400;

const HELLO_MAGIC = [0x76, 0x73, 0x74, 0x70]; // "vstp"
const HANDSHAKE_MAGIC = [0x76, 0x73, 0x74, 0x68]; // "vsth"
const ROLE_CODES: Record<Role, number> = { client: 0, replica: 1, status: 2 };
/** The hello's `target` when the connector does not know which replica it reaches (a client). */
export const TARGET_ANY = 0xffff;
/** Set in the hello's flags when the connector holds a secret and will answer a challenge. */
const FLAG_AUTHENTICATE = 1;
const KIND_CHALLENGE = 1;
const KIND_REFUSED = 2;
const KIND_PROOF = 3;
/** Magic, version, role, index (u16), target (u16), flags, cluster id length. */
const HELLO_FIXED_BYTES = 12;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** What a connection says about itself in its first frame. */
export interface Hello {
  readonly role: Role;
  /**
   * For a replica: its index in the configuration. For a status query: 1 to ask for the state
   * digest, 0 not to. For a client: 0.
   */
  readonly index: number;
  /**
   * The replica the connector meant to reach: its index for a replica link, `TARGET_ANY` (the
   * default) for a client that does not know it.
   */
  readonly target?: number | undefined;
  /** The cluster the connector belongs to; a client that does not know it sends "". */
  readonly clusterId: string;
  /** Whether the connector holds the cluster secret and will answer a challenge. */
  readonly authenticate: boolean;
  /** The connector's nonce, `NONCE_BYTES` random bytes. */
  readonly nonce: Uint8Array;
  /** The app the connector runs or speaks (`name@version`); "" or absent when it does not say. */
  readonly app?: string | undefined;
}

/** A frame of the handshake after the hello. */
export type HandshakeFrame =
  | { readonly kind: "challenge"; readonly nonce: Uint8Array; readonly proof: Uint8Array }
  | { readonly kind: "refused"; readonly reason: string }
  | { readonly kind: "proof"; readonly proof: Uint8Array };

/** The identity a process presents and checks: its cluster id and, if any, the secret's key. */
export interface ClusterIdentity {
  /** The group's name (`cluster_id` in the configuration). */
  readonly clusterId: string;
  /** The HMAC key made from the cluster secret; undefined when the group has no secret. */
  readonly key: CryptoKey | undefined;
}

/** Why a cluster id cannot be used, or undefined when it can. */
export function clusterIdProblem(clusterId: string): string | undefined {
  const bytes = encoder.encode(clusterId).length;
  if (bytes > CLUSTER_ID_BYTES_MAX) {
    return `is ${bytes} bytes long, more than ${CLUSTER_ID_BYTES_MAX} (CLUSTER_ID_BYTES_MAX)`;
  }
  // Printable ASCII only: it is shown in log lines and error messages.
  if (!/^[\x21-\x7e]*$/.test(clusterId)) {
    return "may hold printable ASCII characters only (no spaces)";
  }
  return undefined;
}

/** The HMAC-SHA-256 key of a secret (at least `SECRET_BYTES_MIN` bytes; the caller checks). */
export function importSecret(secret: Uint8Array): Promise<CryptoKey> {
  return crypto.subtle.importKey(
    "raw",
    new Uint8Array(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    [
      "sign",
    ],
  );
}

/** `NONCE_BYTES` fresh random bytes. */
export function newNonce(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
}

export function encodeHello(hello: Hello): Uint8Array {
  const id = encoder.encode(hello.clusterId);
  const app = encoder.encode(hello.app ?? "").subarray(0, APP_TAG_BYTES_MAX);
  const appBytes = app.length === 0 ? 0 : 1 + app.length;
  const out = new Uint8Array(HELLO_FIXED_BYTES + id.length + NONCE_BYTES + appBytes);
  out.set(HELLO_MAGIC, 0);
  out[4] = HELLO_VERSION;
  out[5] = ROLE_CODES[hello.role];
  out[6] = (hello.index >> 8) & 0xff;
  out[7] = hello.index & 0xff;
  const target = hello.target ?? TARGET_ANY;
  out[8] = (target >> 8) & 0xff;
  out[9] = target & 0xff;
  out[10] = hello.authenticate ? FLAG_AUTHENTICATE : 0;
  out[11] = id.length;
  out.set(id, HELLO_FIXED_BYTES);
  out.set(hello.nonce, HELLO_FIXED_BYTES + id.length);
  if (appBytes > 0) {
    out[HELLO_FIXED_BYTES + id.length + NONCE_BYTES] = app.length;
    out.set(app, HELLO_FIXED_BYTES + id.length + NONCE_BYTES + 1);
  }
  return out;
}

/** The hello in `body`, or why it is not one (a message an operator can act on). */
export function decodeHello(body: Uint8Array): Hello | { readonly error: string } {
  if (body.length < 5 || HELLO_MAGIC.some((byte, i) => body[i] !== byte)) {
    return { error: "the first frame is not a vstamp hello (is this a vstamp peer?)" };
  }
  if (body[4] !== HELLO_VERSION) {
    return {
      error: `hello: protocol version ${body[4]} is not ${HELLO_VERSION} ` +
        `(every replica and client of a group must run the same vstamp release)`,
    };
  }
  if (body.length < HELLO_FIXED_BYTES) return { error: "hello: truncated" };
  const role = (Object.keys(ROLE_CODES) as Role[]).find((r) => ROLE_CODES[r] === body[5]);
  if (role === undefined) return { error: `hello: unknown role ${body[5]}` };
  const flags = body[10]!;
  if ((flags & ~FLAG_AUTHENTICATE) !== 0) return { error: `hello: unknown flags ${flags}` };
  const idLength = body[11]!;
  if (idLength > CLUSTER_ID_BYTES_MAX) {
    return { error: `hello: cluster id of ${idLength} bytes exceeds ${CLUSTER_ID_BYTES_MAX}` };
  }
  const appAt = HELLO_FIXED_BYTES + idLength + NONCE_BYTES;
  const appLength = body[appAt] ?? 0;
  if (
    body.length !== appAt &&
    (appLength === 0 || appLength > APP_TAG_BYTES_MAX || body.length !== appAt + 1 + appLength)
  ) {
    return {
      error: `hello: ${body.length} bytes, expected ${appAt}, or ${appAt + 1} and an app tag ` +
        `of 1 to ${APP_TAG_BYTES_MAX} bytes`,
    };
  }
  let app = "";
  if (body.length > appAt) {
    try {
      app = decoder.decode(body.subarray(appAt + 1));
    } catch {
      return { error: "hello: the app tag is not UTF-8" };
    }
    if (!/^[\x21-\x7e]+$/.test(app)) return { error: "hello: the app tag is not printable ASCII" };
  }
  let clusterId: string;
  try {
    clusterId = decoder.decode(body.subarray(HELLO_FIXED_BYTES, HELLO_FIXED_BYTES + idLength));
  } catch {
    return { error: "hello: the cluster id is not UTF-8" };
  }
  const problem = clusterIdProblem(clusterId);
  if (problem !== undefined) return { error: `hello: the cluster id ${problem}` };
  return {
    role,
    index: (body[6]! << 8) | body[7]!,
    target: (body[8]! << 8) | body[9]!,
    clusterId,
    authenticate: (flags & FLAG_AUTHENTICATE) !== 0,
    nonce: body.slice(HELLO_FIXED_BYTES + idLength, appAt),
    app,
  };
}

function handshakeFrame(kind: number, parts: readonly Uint8Array[]): Uint8Array {
  let length = HANDSHAKE_MAGIC.length + 1;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  out.set(HANDSHAKE_MAGIC, 0);
  out[4] = kind;
  let offset = 5;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

export function encodeChallenge(nonce: Uint8Array, proof: Uint8Array): Uint8Array {
  return handshakeFrame(KIND_CHALLENGE, [nonce, proof]);
}

export function encodeProof(proof: Uint8Array): Uint8Array {
  return handshakeFrame(KIND_PROOF, [proof]);
}

export function encodeRefused(reason: string): Uint8Array {
  let bytes = encoder.encode(reason);
  if (bytes.length > REASON_BYTES_MAX) bytes = bytes.subarray(0, REASON_BYTES_MAX);
  return handshakeFrame(KIND_REFUSED, [bytes]);
}

/** Whether `body` is a handshake frame (as opposed to a message, a msgpack array). */
export function isHandshakeFrame(body: Uint8Array): boolean {
  // Every reply a client reads passes here: compare the bytes, no closure.
  return body.length >= 5 && body[0] === 0x76 && body[1] === 0x73 && body[2] === 0x74 &&
    body[3] === 0x68;
}

/** The handshake frame in `body`, or why it is not a valid one. */
export function decodeHandshakeFrame(
  body: Uint8Array,
): HandshakeFrame | { readonly error: string } {
  if (!isHandshakeFrame(body)) return { error: "expected a handshake frame" };
  const payload = body.subarray(5);
  switch (body[4]) {
    case KIND_CHALLENGE:
      if (payload.length !== NONCE_BYTES + PROOF_BYTES) return { error: "malformed challenge" };
      return {
        kind: "challenge",
        nonce: payload.slice(0, NONCE_BYTES),
        proof: payload.slice(NONCE_BYTES),
      };
    case KIND_PROOF:
      if (payload.length !== PROOF_BYTES) return { error: "malformed proof" };
      return { kind: "proof", proof: payload.slice() };
    case KIND_REFUSED: {
      let reason: string;
      try {
        reason = decoder.decode(payload);
      } catch {
        reason = "(reason not UTF-8)";
      }
      // Printable characters only: the reason goes into a log line.
      return { kind: "refused", reason: reason.replace(/[^\x20-\x7e]/g, "?") };
    }
    default:
      return { error: `unknown handshake frame kind ${body[4]}` };
  }
}

/**
 * The proof that the side named by `label` holds the key: an HMAC over the cluster id, the
 * connection's declared role and index, and both nonces, the prover's peer's first.
 */
export async function computeProof(
  key: CryptoKey,
  label: "acceptor" | "connector",
  clusterId: string,
  hello: Pick<Hello, "role" | "index" | "target">,
  peerNonce: Uint8Array,
  ownNonce: Uint8Array,
): Promise<Uint8Array> {
  const text = encoder.encode(`vstamp ${label} v${HELLO_VERSION}\0${clusterId}\0`);
  const target = hello.target ?? TARGET_ANY;
  const data = new Uint8Array(text.length + 5 + peerNonce.length + ownNonce.length);
  data.set(text, 0);
  data[text.length] = ROLE_CODES[hello.role];
  data[text.length + 1] = (hello.index >> 8) & 0xff;
  data[text.length + 2] = hello.index & 0xff;
  data[text.length + 3] = (target >> 8) & 0xff;
  data[text.length + 4] = target & 0xff;
  data.set(peerNonce, text.length + 5);
  data.set(ownNonce, text.length + 5 + peerNonce.length);
  return new Uint8Array(await crypto.subtle.sign("HMAC", key, data));
}

/** Compares two proofs in time independent of where they differ. */
export function proofsEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let index = 0; index < a.length; index++) difference |= a[index]! ^ b[index]!;
  return difference === 0;
}

/**
 * The connector's side of the handshake, driven by the frames the acceptor sends. `start` gives
 * the hello to send; `onFrame` takes each frame that arrives before the connection is ready and
 * says what to do.
 */
export class ConnectorHandshake {
  readonly #identity: ClusterIdentity;
  readonly #hello: Hello;
  #ready: boolean;

  /**
   * `target`: the replica this connection means to reach, if known (a replica link). `app`: the
   * app this end runs or speaks (`name@version`), for the acceptor to check; "" says nothing.
   */
  constructor(
    identity: ClusterIdentity,
    role: Role,
    index: number,
    target: number = TARGET_ANY,
    app: string = "",
  ) {
    this.#identity = identity;
    this.#hello = {
      role,
      index,
      target,
      clusterId: identity.clusterId,
      authenticate: identity.key !== undefined,
      nonce: newNonce(),
      app,
    };
    // Without a secret there is nothing to prove: messages may follow the hello at once.
    this.#ready = identity.key === undefined;
  }

  /** The hello frame body. */
  get hello(): Uint8Array {
    return encodeHello(this.#hello);
  }

  /** Whether messages may be sent: the hello needed no challenge, or the proof went out. */
  get ready(): boolean {
    return this.#ready;
  }

  /**
   * Handle a handshake frame from the acceptor: returns the proof frame to send (the connection
   * is then ready), or why the connection must close (a refusal's reason, a failed proof).
   */
  async onFrame(
    body: Uint8Array,
  ): Promise<{ readonly send: Uint8Array } | { readonly error: string }> {
    const frame = decodeHandshakeFrame(body);
    if ("error" in frame) return frame;
    if (frame.kind === "refused") return { error: `refused: ${frame.reason}` };
    if (frame.kind !== "challenge" || this.#ready || this.#identity.key === undefined) {
      return { error: `unexpected ${frame.kind} frame` };
    }
    const key = this.#identity.key;
    // Both proofs cover the cluster id the hello named (the acceptor checked it is its own, or
    // "" from a client that does not know the id and proves only that it holds the secret).
    const clusterId = this.#hello.clusterId;
    const expected = await computeProof(
      key,
      "acceptor",
      clusterId,
      this.#hello,
      this.#hello.nonce,
      frame.nonce,
    );
    if (!proofsEqual(expected, frame.proof)) {
      return {
        error: "the peer failed to prove it holds the cluster secret (a different secret?)",
      };
    }
    const proof = await computeProof(
      key,
      "connector",
      clusterId,
      this.#hello,
      frame.nonce,
      this.#hello.nonce,
    );
    this.#ready = true;
    return { send: encodeProof(proof) };
  }
}

/** What the acceptor checks a hello against. */
export interface AcceptorOptions {
  readonly identity: ClusterIdentity;
  /** Whether clients and status queries must authenticate too. */
  readonly requireClientAuth: boolean;
  /** Replica indexes must be below this, and not `selfIndex`. */
  readonly replicaCount: number;
  readonly selfIndex: number;
  /** The app this replica runs (`name@version`): a hello naming another one is refused. */
  readonly app?: string | undefined;
}

/** What to do after a hello: refuse, accept at once, or send a challenge and wait for a proof. */
export type HelloOutcome =
  | { readonly refuse: string; readonly hello?: Hello | undefined }
  | { readonly hello: Hello; readonly challenge: undefined }
  | { readonly hello: Hello; readonly challenge: Promise<Uint8Array> };

/** The acceptor's side of the handshake for one connection. */
export class AcceptorHandshake {
  readonly #options: AcceptorOptions;
  #hello: Hello | undefined;
  readonly #nonce = newNonce();

  constructor(options: AcceptorOptions) {
    this.#options = options;
  }

  /** Check the connection's first frame. */
  onHello(body: Uint8Array): HelloOutcome {
    const { identity, requireClientAuth, replicaCount, selfIndex } = this.#options;
    const hello = decodeHello(body);
    if ("error" in hello) return { refuse: hello.error };
    if (hello.role === "replica") {
      if (hello.index >= replicaCount || hello.index === selfIndex) {
        return { refuse: `hello from replica ${hello.index}: not a peer of replica ${selfIndex}` };
      }
    }
    const target = hello.target ?? TARGET_ANY;
    // A new process not yet told its group (§7, `selfIndex` -1) does not know its member id: the
    // StartEpoch that names it comes on a link made for that id.
    if (
      selfIndex >= 0 && target !== selfIndex &&
      (hello.role === "replica" || target !== TARGET_ANY)
    ) {
      return {
        hello,
        refuse: `the link was made for replica ${target}, this is replica ${selfIndex} ` +
          "(a wrong address in a configuration, or a relay)",
      };
    }
    const anyId = hello.clusterId === "" && hello.role !== "replica";
    if (hello.clusterId !== identity.clusterId && !anyId) {
      return {
        hello,
        refuse: `cluster id "${hello.clusterId}" is not this group's "${identity.clusterId}"`,
      };
    }
    const app = this.#options.app ?? "";
    if (app !== "" && hello.app !== undefined && hello.app !== "" && hello.app !== app) {
      return {
        hello,
        refuse: `the ${hello.role} runs app ${hello.app}, this replica runs ${app} ` +
          "(every replica of a group, and its clients, must use the same --app)",
      };
    }
    const key = identity.key;
    if (hello.authenticate && key === undefined) {
      return {
        hello,
        refuse: "the peer holds a cluster secret but this replica has none " +
          "(give every replica and client of a group the same secret)",
      };
    }
    if (key !== undefined && !hello.authenticate) {
      if (hello.role === "replica") {
        return {
          hello,
          refuse: "a replica link must authenticate: the peer has no cluster secret",
        };
      }
      if (requireClientAuth) {
        return {
          hello,
          refuse: "this group requires clients to authenticate: give the client the secret",
        };
      }
    }
    this.#hello = hello;
    if (!hello.authenticate) return { hello, challenge: undefined };
    const challenge = computeProof(
      key!,
      "acceptor",
      hello.clusterId,
      hello,
      hello.nonce,
      this.#nonce,
    )
      .then((proof) => encodeChallenge(this.#nonce, proof));
    return { hello, challenge };
  }

  /** Check the connector's proof: undefined when it holds the secret, else why not. */
  async onProof(body: Uint8Array): Promise<string | undefined> {
    const hello = this.#hello;
    const key = this.#options.identity.key;
    if (hello === undefined || key === undefined) return "a proof before the hello";
    const frame = decodeHandshakeFrame(body);
    if ("error" in frame) return frame.error;
    if (frame.kind !== "proof") return `expected a proof, got a ${frame.kind} frame`;
    const expected = await computeProof(
      key,
      "connector",
      hello.clusterId,
      hello,
      this.#nonce,
      hello.nonce,
    );
    return proofsEqual(expected, frame.proof)
      ? undefined
      : "authentication failed: the peer does not hold this group's cluster secret";
  }
}
