/**
 * The server configuration file: one YAML file, shared by every replica, that lists the address of
 * each replica in the group. A replica learns which entry is its own from `--index`.
 *
 * ```yaml
 * replicas_addresses:
 *   - "127.0.0.1:14621"
 *   - "127.0.0.1:14622"
 *   - "127.0.0.1:14623"
 * cluster_id: "shop-orders"          # optional; names the group ("vstamp" by default)
 * secret_file: "vstamp.secret"       # optional; relative to this file
 * require_client_auth: false         # optional; clients must hold the secret too
 * checkpoint_interval_ops: 100000    # optional; a checkpoint every this many ops (§5.1)
 * log_retain_ops: 200000             # optional; log entries kept before the newest checkpoint
 * ```
 *
 * The checkpoint keys must be the same for every replica: replicas then checkpoint at the same
 * op-numbers, and a replica fetching a checkpoint may take each chunk from any of them.
 *
 * With a secret, replica links authenticate both ways (`src/transport/handshake.ts`), so a process
 * without the secret, or a replica of another cluster, cannot act as a replica. The secret is
 * never given on a command line (where `ps` shows it): it comes from the file named here, or from
 * the environment, `VSTAMP_SECRET_FILE` (a path) or `VSTAMP_SECRET` (the secret itself), which
 * take precedence over the file.
 *
 * Every mistake in the file is reported as a `ConfigError` whose message is one line naming the
 * file, the field and the offending value, so that an operator can fix it without reading code.
 *
 * @module
 */
import { parseDocument } from "yaml";
import {
  type ClusterIdentity,
  clusterIdProblem,
  importSecret,
  SECRET_BYTES_MIN,
} from "./transport/handshake.ts";
import type { TlsMaterial } from "./transport/tls.ts";

/** Where the server and the client look for the file when `--config` is not given. */
export const CONFIG_PATH_DEFAULT = "./server-config.yaml";

/**
 * The largest group the file may describe. Every replica sends each Prepare to every other, so
 * large groups cost quadratic traffic for little extra fault tolerance.
 */
export const REPLICAS_MAX = 15;

/** A configuration file is a few lines; anything bigger than this is the wrong file. */
export const CONFIG_BYTES_MAX = 1024 * 1024;

/** The longest host name DNS allows (RFC 1035). */
export const HOST_CHARS_MAX = 253;

/** Values quoted in error messages are cut to this many characters to keep the message one line. */
export const ERROR_VALUE_CHARS_MAX = 80;

/** The largest TCP port. */
const PORT_MAX = 65535;

/** The keys the file may hold at its top level. */
const REPLICAS_ADDRESSES_KEY = "replicas_addresses";
const CLUSTER_ID_KEY = "cluster_id";
const SECRET_FILE_KEY = "secret_file";
const REQUIRE_CLIENT_AUTH_KEY = "require_client_auth";
const TLS_CERT_FILE_KEY = "tls_cert_file";
const TLS_KEY_FILE_KEY = "tls_key_file";
const TLS_CA_FILE_KEY = "tls_ca_file";
const CHECKPOINT_INTERVAL_OPS_KEY = "checkpoint_interval_ops";
const LOG_RETAIN_OPS_KEY = "log_retain_ops";
/** The checkpoint keys' largest values: a checkpoint at least every 2^30 ops. */
export const CHECKPOINT_OPS_MAX = 2 ** 30;
const KEYS = [
  REPLICAS_ADDRESSES_KEY,
  CLUSTER_ID_KEY,
  SECRET_FILE_KEY,
  REQUIRE_CLIENT_AUTH_KEY,
  TLS_CERT_FILE_KEY,
  TLS_KEY_FILE_KEY,
  TLS_CA_FILE_KEY,
  CHECKPOINT_INTERVAL_OPS_KEY,
  LOG_RETAIN_OPS_KEY,
];
/** A PEM file of certificates or a key is a few kilobytes; anything bigger is the wrong file. */
export const PEM_FILE_BYTES_MAX = 1024 * 1024;

/** The cluster id of a file that names none. */
export const CLUSTER_ID_DEFAULT = "vstamp";
/** A secret file is a line of text; anything bigger than this is the wrong file. */
export const SECRET_FILE_BYTES_MAX = 4096;

/** A configuration problem. The CLI prints the message and exits with `exitCode`. */
export class ConfigError extends Error {
  /** Exit status 2 is the usual one for a usage or configuration mistake. */
  readonly exitCode = 2;

  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** A replica's network address. An IPv6 host is held without its brackets. */
export interface Address {
  /** A host name or IP address. */
  readonly host: string;
  /** A TCP port, 1 to 65535. */
  readonly port: number;
}

/** A parsed and validated configuration file. */
export interface ServerConfig {
  /** The file it came from, for error messages. */
  readonly path: string;
  /** One address per replica; a replica's index in this list is its replica number. */
  readonly addresses: readonly Address[];
  /** The addresses exactly as written in the file, for messages and `cluster up`. */
  readonly addressTexts: readonly string[];
  /** The group's name: replicas of another cluster are refused. */
  readonly clusterId: string;
  /** The cluster secret's file, resolved against the configuration file's folder. */
  readonly secretFile?: string | undefined;
  /** Whether clients (and status queries) must authenticate with the secret. */
  readonly requireClientAuth: boolean;
  /**
   * TLS for every connection (`src/transport/tls.ts`), the files resolved against the
   * configuration file's folder: the CA that signed the replicas' certificates, and for a
   * replica its certificate and key (the same files on every machine when one certificate
   * names every replica's address, else each machine's own). Undefined: plain TCP.
   */
  readonly tls?: {
    readonly certFile?: string | undefined;
    readonly keyFile?: string | undefined;
    readonly caFile: string;
  } | undefined;
  /** §5.1 `Limits.checkpointOpsInterval`, if the file sets it. */
  readonly checkpointIntervalOps?: number | undefined;
  /** §5.1 `Limits.logRetainOps`, if the file sets it. */
  readonly logRetainOps?: number | undefined;
}

/**
 * One DNS label or IPv4 octet: letters, digits and hyphens, not starting or ending with a hyphen,
 * at most 63 characters.
 */
const HOST_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** Characters an IPv6 address may contain (hex digits, colons, and dots for an embedded IPv4). */
const IPV6_CHARACTERS = /^[0-9A-Fa-f:.]+$/;

/** A port is decimal digits without a sign, exponent or fraction. */
const PORT_DIGITS = /^[0-9]+$/;

/** Quotes a value for an error message: escaped so that it stays on one line, and cut short. */
function quote(text: string): string {
  const cut = text.length > ERROR_VALUE_CHARS_MAX
    ? `${text.slice(0, ERROR_VALUE_CHARS_MAX)}...`
    : text;
  return JSON.stringify(cut);
}

/** Describes a YAML value of the wrong type the way the user wrote it, for error messages. */
function describeValue(value: unknown): string {
  if (value === null || value === undefined) return "null";
  if (typeof value === "string") return quote(value);
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") {
    return String(value);
  }
  if (Array.isArray(value)) return "a list";
  if (value instanceof Uint8Array) return "binary data";
  if (value instanceof Date) return `the date ${value.toISOString()}`;
  if (value instanceof Map || typeof value === "object") return "a mapping";
  return typeof value;
}

/** Whether a host (without brackets) is a valid IPv6 address, checked by the URL parser. */
function isIpv6(host: string): boolean {
  if (!IPV6_CHARACTERS.test(host) || !host.includes(":")) return false;
  try {
    new URL(`http://[${host}]/`);
    return true;
  } catch {
    return false;
  }
}

/** Checks a host name or IPv4 address; returns the reason it is invalid, or undefined. */
function hostNameProblem(host: string): string | undefined {
  if (host.length > HOST_CHARS_MAX) {
    return `host is longer than ${HOST_CHARS_MAX} characters (HOST_CHARS_MAX)`;
  }
  const labels = host.split(".");
  if (!labels.every((label) => HOST_LABEL.test(label))) {
    return "host must be a name or IPv4 address (letters, digits, dots, hyphens) " +
      "or an IPv6 address in brackets";
  }
  // An all-numeric host can only be meant as an IPv4 address, and a resolver would otherwise
  // accept odd forms such as "127.1"; insist on the dotted quad.
  if (labels.every((label) => /^[0-9]+$/.test(label))) {
    if (labels.length !== 4 || !labels.every((label) => Number(label) <= 255)) {
      return "host is not a valid IPv4 address";
    }
  }
  return undefined;
}

/**
 * Parses `host:port`, or `[ipv6]:port`. The host is a name or IPv4 address (letters, digits, dots,
 * hyphens) or a bracketed IPv6 address; the port is an integer 1..65535. An error begins with the
 * quoted text, so that a caller can prefix the field: `replicas_addresses[1] "localhost" is not
 * host:port`.
 */
export function parseAddress(text: string): Address | { readonly error: string } {
  const shown = quote(text);
  let host: string;
  let portText: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0 || text[close + 1] !== ":") return { error: `${shown} is not [host]:port` };
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    if (!isIpv6(host)) return { error: `${shown}: host in brackets must be an IPv6 address` };
  } else {
    const colon = text.lastIndexOf(":");
    if (colon <= 0) return { error: `${shown} is not host:port` };
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(":")) {
      return { error: `${shown}: an IPv6 host must be in brackets, as in "[::1]:14621"` };
    }
    const problem = hostNameProblem(host);
    if (problem !== undefined) return { error: `${shown}: ${problem}` };
  }
  const port = Number(portText);
  if (!PORT_DIGITS.test(portText) || port < 1 || port > PORT_MAX) {
    return { error: `${shown}: port must be 1..${PORT_MAX}` };
  }
  return { host, port };
}

/** Formats an address as `host:port`, with brackets around an IPv6 host; inverse of parseAddress. */
export function formatAddress(address: Address): string {
  return address.host.includes(":")
    ? `[${address.host}]:${address.port}`
    : `${address.host}:${address.port}`;
}

/** Two spellings of one address (host case, IPv6 zero compression) compare equal in this form. */
function canonicalAddress(address: Address): string {
  // The URL parser lowercases a host name and compresses an IPv6 address (keeping its brackets).
  const host = address.host.includes(":")
    ? new URL(`http://[${address.host}]/`).hostname
    : address.host.toLowerCase();
  return `${host}:${address.port}`;
}

/** The first line of a YAML library error, which already names the line and column. */
function firstLine(message: string): string {
  const line = message.split("\n", 1)[0] ?? message;
  return line.replace(/:\s*$/, "");
}

/** Parses YAML text into a plain value, or throws a ConfigError naming the file. */
function parseYaml(text: string, fail: (detail: string) => ConfigError): unknown {
  try {
    const document = parseDocument(text);
    const error = document.errors[0];
    if (error !== undefined) throw fail(`not valid YAML: ${firstLine(error.message)}`);
    // Maps keep keys of any type, so a collection used as a key is reported rather than
    // stringified with a warning on stderr.
    return document.toJS({ mapAsMap: true });
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    // The yaml library reads the LOG_TOKENS and LOG_STREAM environment variables while parsing;
    // without env permission that is a setup mistake, not a problem with the file.
    if (error instanceof Deno.errors.NotCapable) {
      throw new Error(
        "parsing YAML needs env access (the yaml library reads LOG_TOKENS and LOG_STREAM): " +
          "run with --allow-env",
      );
    }
    // toJS throws for documents it refuses to expand, such as excessive aliases.
    throw fail(
      `not valid YAML: ${firstLine(error instanceof Error ? error.message : String(error))}`,
    );
  }
}

/**
 * Parses and validates the text of a configuration file. `path` only names the file in errors.
 * Throws ConfigError for every mistake.
 */
export function parseConfig(text: string, path: string): ServerConfig {
  const fail = (detail: string) => new ConfigError(`Cannot read config ${quote(path)}: ${detail}`);
  if (text.length > CONFIG_BYTES_MAX) {
    throw fail(`the file is larger than ${CONFIG_BYTES_MAX} bytes (CONFIG_BYTES_MAX)`);
  }
  const root = parseYaml(text, fail);
  if (root === null || root === undefined) {
    throw fail(`the file is empty, expected a mapping with ${REPLICAS_ADDRESSES_KEY}`);
  }
  if (!(root instanceof Map)) {
    throw fail(
      `the top level must be a mapping with ${REPLICAS_ADDRESSES_KEY}, got ` +
        describeValue(root),
    );
  }
  // A misspelt key would otherwise be ignored silently and leave the setting at its default.
  for (const key of root.keys()) {
    if (!KEYS.includes(key)) {
      throw fail(`unknown key ${describeValue(key)} (the keys are ${KEYS.join(", ")})`);
    }
  }
  if (!root.has(REPLICAS_ADDRESSES_KEY)) {
    throw fail(`${REPLICAS_ADDRESSES_KEY} is missing`);
  }
  const entries: unknown = root.get(REPLICAS_ADDRESSES_KEY);
  if (!Array.isArray(entries)) {
    throw fail(
      `${REPLICAS_ADDRESSES_KEY} must be a list of "host:port" strings, got ` +
        describeValue(entries),
    );
  }
  if (entries.length === 0) throw fail(`${REPLICAS_ADDRESSES_KEY} must not be empty`);
  if (entries.length > REPLICAS_MAX) {
    throw fail(
      `${REPLICAS_ADDRESSES_KEY} must have at most ${REPLICAS_MAX} entries (REPLICAS_MAX), got ` +
        entries.length,
    );
  }
  // A group of 2f+1 replicas tolerates f failures; an extra replica adds a vote to every quorum
  // without tolerating one more failure, so an even count is almost certainly a mistake.
  if (entries.length % 2 === 0) {
    throw fail(
      `${REPLICAS_ADDRESSES_KEY} must have an odd number of entries, got ${entries.length}`,
    );
  }
  const addresses: Address[] = [];
  const addressTexts: string[] = [];
  const seen = new Map<string, number>();
  entries.forEach((entry: unknown, index) => {
    const field = `${REPLICAS_ADDRESSES_KEY}[${index}]`;
    if (typeof entry !== "string") {
      throw fail(`${field} must be a "host:port" string, got ${describeValue(entry)}`);
    }
    const parsed = parseAddress(entry);
    if ("error" in parsed) throw fail(`${field} ${parsed.error}`);
    const canonical = canonicalAddress(parsed);
    const first = seen.get(canonical);
    if (first !== undefined) {
      throw fail(`${field} ${quote(entry)} duplicates ${REPLICAS_ADDRESSES_KEY}[${first}]`);
    }
    seen.set(canonical, index);
    addresses.push(parsed);
    addressTexts.push(entry);
  });
  const clusterIdValue: unknown = root.get(CLUSTER_ID_KEY) ?? CLUSTER_ID_DEFAULT;
  if (typeof clusterIdValue !== "string" || clusterIdValue === "") {
    throw fail(
      `${CLUSTER_ID_KEY} must be a non-empty string, got ${describeValue(clusterIdValue)}`,
    );
  }
  const idProblem = clusterIdProblem(clusterIdValue);
  if (idProblem !== undefined) {
    throw fail(`${CLUSTER_ID_KEY} ${quote(clusterIdValue)} ${idProblem}`);
  }
  const secretFileValue: unknown = root.get(SECRET_FILE_KEY);
  if (secretFileValue !== undefined && (typeof secretFileValue !== "string" || !secretFileValue)) {
    throw fail(`${SECRET_FILE_KEY} must be a path, got ${describeValue(secretFileValue)}`);
  }
  const requireClientAuth: unknown = root.get(REQUIRE_CLIENT_AUTH_KEY) ?? false;
  if (typeof requireClientAuth !== "boolean") {
    throw fail(
      `${REQUIRE_CLIENT_AUTH_KEY} must be true or false, got ${describeValue(requireClientAuth)}`,
    );
  }
  const tlsPath = (key: string): string | undefined => {
    const value: unknown = root.get(key);
    if (value === undefined) return undefined;
    if (typeof value !== "string" || value === "") {
      throw fail(`${key} must be a path, got ${describeValue(value)}`);
    }
    return resolveBeside(path, value);
  };
  const certFile = tlsPath(TLS_CERT_FILE_KEY);
  const keyFile = tlsPath(TLS_KEY_FILE_KEY);
  const caFile = tlsPath(TLS_CA_FILE_KEY);
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw fail(`${TLS_CERT_FILE_KEY} and ${TLS_KEY_FILE_KEY} go together`);
  }
  if (certFile !== undefined && caFile === undefined) {
    throw fail(`${TLS_CERT_FILE_KEY} needs ${TLS_CA_FILE_KEY}, the CA clients verify it against`);
  }
  const opsCount = (key: string): number | undefined => {
    const value: unknown = root.get(key);
    if (value === undefined) return undefined;
    if (
      !Number.isSafeInteger(value) || (value as number) < 1 ||
      (value as number) > CHECKPOINT_OPS_MAX
    ) {
      throw fail(
        `${key} must be a whole number from 1 to ${CHECKPOINT_OPS_MAX}, got ${
          describeValue(value)
        }`,
      );
    }
    return value as number;
  };
  const checkpointIntervalOps = opsCount(CHECKPOINT_INTERVAL_OPS_KEY);
  const logRetainOps = opsCount(LOG_RETAIN_OPS_KEY);
  return {
    ...(checkpointIntervalOps === undefined ? {} : { checkpointIntervalOps }),
    ...(logRetainOps === undefined ? {} : { logRetainOps }),
    path,
    addresses,
    addressTexts,
    ...(caFile === undefined ? {} : { tls: { certFile, keyFile, caFile } }),
    clusterId: clusterIdValue,
    secretFile: secretFileValue === undefined
      ? undefined
      : resolveBeside(path, secretFileValue as string),
    requireClientAuth,
  };
}

/** `relative` resolved against the folder of the file `path` (absolute paths stay as they are). */
function resolveBeside(path: string, relative: string): string {
  if (relative.startsWith("/")) return relative;
  const slash = path.lastIndexOf("/");
  return slash < 0 ? relative : `${path.slice(0, slash + 1)}${relative}`;
}

/** Where a process found the cluster secret, for log lines; undefined when it has none. */
export type SecretSource = string | undefined;

/**
 * The cluster identity a process presents: the configuration's cluster id (or `clusterId`, or
 * "" for a client that does not know it) and the secret from `VSTAMP_SECRET`,
 * `VSTAMP_SECRET_FILE` or the configuration's `secret_file`, in that order. Throws ConfigError
 * naming the file for a secret that cannot be read or is too short.
 */
export async function loadIdentity(
  config: Pick<ServerConfig, "clusterId" | "secretFile"> | undefined,
  options: { readonly secretFile?: string | undefined } = {},
): Promise<{ readonly identity: ClusterIdentity; readonly source: SecretSource }> {
  const clusterId = config?.clusterId ?? "";
  const fromEnv = Deno.env.get("VSTAMP_SECRET");
  let secret: Uint8Array | undefined;
  let source: SecretSource;
  if (fromEnv !== undefined && fromEnv !== "") {
    secret = new TextEncoder().encode(fromEnv.trim());
    source = "VSTAMP_SECRET";
    if (secret.length < SECRET_BYTES_MIN) {
      throw new ConfigError(
        `VSTAMP_SECRET is ${secret.length} bytes; a cluster secret needs at least ` +
          `${SECRET_BYTES_MIN} (try: openssl rand -hex 32)`,
      );
    }
  } else {
    const path = options.secretFile ?? (Deno.env.get("VSTAMP_SECRET_FILE") || undefined) ??
      config?.secretFile;
    if (path !== undefined) {
      secret = await readSecretFile(path);
      source = path;
    }
  }
  return {
    identity: { clusterId, key: secret === undefined ? undefined : await importSecret(secret) },
    source,
  };
}

/** The secret in a file: its text without surrounding white space. */
async function readSecretFile(path: string): Promise<Uint8Array> {
  const fail = (detail: string) =>
    new ConfigError(`Cannot read secret file ${quote(path)}: ${detail}`);
  let bytes: Uint8Array;
  try {
    const info = await Deno.stat(path);
    if (!info.isFile) throw fail("it is not a file");
    if (info.size > SECRET_FILE_BYTES_MAX) {
      throw fail(`the file is larger than ${SECRET_FILE_BYTES_MAX} bytes (SECRET_FILE_BYTES_MAX)`);
    }
    bytes = await readBounded(path, SECRET_FILE_BYTES_MAX);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    if (error instanceof Deno.errors.NotFound) throw fail("file not found");
    throw fail(error instanceof Error ? firstLine(error.message) : String(error));
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes).trim();
  } catch {
    throw fail("the file is not UTF-8 text");
  }
  const secret = new TextEncoder().encode(text);
  if (secret.length < SECRET_BYTES_MIN) {
    throw fail(
      `the secret is ${secret.length} bytes; at least ${SECRET_BYTES_MIN} are needed ` +
        `(try: openssl rand -hex 32 > ${path})`,
    );
  }
  return secret;
}

/**
 * The TLS material the configuration names (`tls_*` keys), read from its files: the CA for
 * anyone, and the certificate and key when `replica` (a server). Undefined without TLS. Throws
 * ConfigError naming the file that cannot be read.
 */
export async function loadTls(
  config: Pick<ServerConfig, "tls"> | undefined,
  options: { readonly replica?: boolean } = {},
): Promise<TlsMaterial | undefined> {
  const tls = config?.tls;
  if (tls === undefined) return undefined;
  const read = async (file: string) => {
    const fail = (detail: string) =>
      new ConfigError(`Cannot read TLS file ${quote(file)}: ${detail}`);
    try {
      const info = await Deno.stat(file);
      if (!info.isFile) throw fail("it is not a file");
      if (info.size > PEM_FILE_BYTES_MAX) throw fail(`larger than ${PEM_FILE_BYTES_MAX} bytes`);
      const text = new TextDecoder().decode(await readBounded(file, PEM_FILE_BYTES_MAX));
      if (!text.includes("-----BEGIN ")) throw fail("not a PEM file");
      return text;
    } catch (error) {
      if (error instanceof ConfigError) throw error;
      if (error instanceof Deno.errors.NotFound) throw fail("file not found");
      throw fail(error instanceof Error ? firstLine(error.message) : String(error));
    }
  };
  const caCerts = [await read(tls.caFile)];
  if (options.replica !== true) return { caCerts };
  if (tls.certFile === undefined || tls.keyFile === undefined) {
    throw new ConfigError(
      `Cannot use config: a replica needs ${TLS_CERT_FILE_KEY} and ${TLS_KEY_FILE_KEY} with ` +
        TLS_CA_FILE_KEY,
    );
  }
  return { caCerts, cert: await read(tls.certFile), key: await read(tls.keyFile) };
}

/** What a client needs to reach a group: its identity (cluster id, secret) and its TLS. */
export interface GroupAccess {
  /** The group's cluster id and secret (the handshake proves both). */
  readonly identity: ClusterIdentity;
  /** TLS for every connection, or undefined for plain TCP. */
  readonly tls: TlsMaterial | undefined;
}

/**
 * A client's access to the group of `config` (or, without one, from the environment only): the
 * identity of `loadIdentity` and the TLS of `loadTls`. Throws ConfigError as they do.
 */
export async function loadAccess(config: ServerConfig | undefined): Promise<GroupAccess> {
  return { identity: (await loadIdentity(config)).identity, tls: await loadTls(config) };
}

/** A new random secret, as the text of a secret file (64 hex digits: 256 bits). */
export function generateSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** Reads at most `limit` bytes of a file; returns more than `limit` bytes only if it is bigger. */
async function readBounded(path: string, limit: number): Promise<Uint8Array> {
  using file = await Deno.open(path, { read: true });
  const buffer = new Uint8Array(limit + 1);
  let filled = 0;
  while (filled < buffer.length) {
    const count = await file.read(buffer.subarray(filled));
    if (count === null) break;
    filled += count;
  }
  return buffer.subarray(0, filled);
}

/** Reads, parses and validates a configuration file. Throws ConfigError for every mistake. */
export async function loadConfig(path: string): Promise<ServerConfig> {
  const fail = (detail: string) => new ConfigError(`Cannot read config ${quote(path)}: ${detail}`);
  let bytes: Uint8Array;
  try {
    const info = await Deno.stat(path);
    if (!info.isFile) throw fail("it is not a file");
    // The size is checked before reading so that a wrong path to a huge file fails fast; the
    // bounded read below catches a file that grows in between.
    if (info.size > CONFIG_BYTES_MAX) {
      throw fail(`the file is larger than ${CONFIG_BYTES_MAX} bytes (CONFIG_BYTES_MAX)`);
    }
    bytes = await readBounded(path, CONFIG_BYTES_MAX);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    if (error instanceof Deno.errors.NotFound) {
      throw fail(
        "file not found (copy server-config-example.yaml to server-config.yaml, or pass --config)",
      );
    }
    const reason = error instanceof Error ? firstLine(error.message) : String(error);
    throw fail(reason);
  }
  if (bytes.length > CONFIG_BYTES_MAX) {
    throw fail(`the file is larger than ${CONFIG_BYTES_MAX} bytes (CONFIG_BYTES_MAX)`);
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw fail("the file is not UTF-8 text");
  }
  return parseConfig(text, path);
}

/** Checks that `--index` names a replica of the file. Throws ConfigError otherwise. */
export function checkReplicaIndex(config: ServerConfig, index: number): void {
  const count = config.addresses.length;
  if (!Number.isSafeInteger(index) || index < 0 || index >= count) {
    throw new ConfigError(
      `Cannot use config ${quote(config.path)}: --index ${index} is out of range, ` +
        `the file has ${count} ${count === 1 ? "replica" : "replicas"} (0..${count - 1})`,
    );
  }
}

/**
 * Renders a configuration file for the given addresses, as `cluster up --config-out` writes it.
 * Each address is written as a JSON string, which is also a valid YAML double-quoted scalar.
 */
export function renderConfig(
  addresses: readonly string[],
  options: {
    readonly clusterId?: string;
    readonly secretFile?: string;
    readonly tls?: { readonly certFile: string; readonly keyFile: string; readonly caFile: string };
    readonly checkpointIntervalOps?: number | undefined;
    readonly logRetainOps?: number | undefined;
  } = {},
): string {
  const lines = [
    "# vstamp server configuration, shared by every replica of the group.",
    "# Each replica is started with --index N to pick its own address from this list.",
    addresses.length === 0 ? `${REPLICAS_ADDRESSES_KEY}: []` : `${REPLICAS_ADDRESSES_KEY}:`,
    ...addresses.map((address) => `  - ${JSON.stringify(address)}`),
  ];
  if (options.clusterId !== undefined) {
    lines.push(`${CLUSTER_ID_KEY}: ${JSON.stringify(options.clusterId)}`);
  }
  if (options.secretFile !== undefined) {
    lines.push(`${SECRET_FILE_KEY}: ${JSON.stringify(options.secretFile)}`);
  }
  if (options.tls !== undefined) {
    lines.push(`${TLS_CERT_FILE_KEY}: ${JSON.stringify(options.tls.certFile)}`);
    lines.push(`${TLS_KEY_FILE_KEY}: ${JSON.stringify(options.tls.keyFile)}`);
    lines.push(`${TLS_CA_FILE_KEY}: ${JSON.stringify(options.tls.caFile)}`);
  }
  if (options.checkpointIntervalOps !== undefined) {
    lines.push(`${CHECKPOINT_INTERVAL_OPS_KEY}: ${options.checkpointIntervalOps}`);
  }
  if (options.logRetainOps !== undefined) {
    lines.push(`${LOG_RETAIN_OPS_KEY}: ${options.logRetainOps}`);
  }
  return `${lines.join("\n")}\n`;
}
