/**
 * `vstamp server`: serve one replica of the group described by the configuration file.
 *
 * @module
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { type App, appTag, guardStateMachine } from "../app/app.ts";
import { kvApp } from "../app/kv_app.ts";
import {
  checkReplicaIndex,
  CONFIG_PATH_DEFAULT,
  ConfigError,
  loadConfig,
  loadIdentity,
  loadTls,
  parseAddress,
  type ServerConfig,
} from "../config.ts";
import { DataDirError } from "../storage/data_dir.ts";
import { ReplicaNode } from "../transport/node.ts";
import { parseCount } from "./sim.ts";
import { type MetricsServer, serveMetrics } from "../transport/metrics_http.ts";
import { renderNodeMetrics } from "../metrics/node_metrics.ts";
import { appOption, withApp } from "./app_option.ts";
import { parsePort } from "./gateway.ts";

/** Where `--metrics-port` listens unless `--metrics-host` says otherwise: the page has no auth. */
export const METRICS_HOST_DEFAULT = "127.0.0.1";

export type LogLevelName = "debug" | "info" | "warn" | "error";
const LEVELS: Record<LogLevelName, number> = { debug: 0, info: 1, warn: 2, error: 3 };

interface ServerFlags {
  index: number;
  config: string;
  dataDir?: string;
  sync: "fsync" | "none";
  logLevel: LogLevelName;
  bind?: string;
  bindTlsCert?: string;
  bindTlsKey?: string;
  join?: boolean;
  metricsPort?: number;
  metricsHost: string;
  app?: string;
}

export function serverCommand(): Command {
  return new Command("server")
    .description("Serve replica --index of the group in the configuration file.")
    .requiredOption(
      "--index <i>",
      "which address of the configuration is this replica (0-based)",
      parseCount("--index"),
    )
    .option("--config <file>", "the group's configuration (YAML)", CONFIG_PATH_DEFAULT)
    .option(
      "--data-dir <dir>",
      "where this replica keeps its log (default ./vstamp-data/replica-<index>)",
    )
    .addOption(
      new Option(
        "--sync <mode>",
        "fsync: durable before acknowledging; none: written, not fsynced (survives a killed process, not a power failure)",
      )
        .choices(["fsync", "none"]).default("fsync"),
    )
    .addOption(
      new Option("--log-level <level>", "least severe log lines shown").choices(Object.keys(LEVELS))
        .default("info"),
    )
    .addOption(appOption())
    .option(
      "--join",
      "a new replica for a running group: wait until `vstamp reconfigure` adds its address " +
        "(--index names it in --config), fetch the state, then serve",
    )
    .option(
      "--metrics-port <port>",
      "serve Prometheus metrics on http://<metrics-host>:<port>/metrics (0: any free port, logged)",
      parsePort("--metrics-port"),
    )
    .option(
      "--metrics-host <host>",
      "the address --metrics-port binds (the page has no authentication)",
      METRICS_HOST_DEFAULT,
    )
    .addOption(
      new Option(
        "--bind <host:port>",
        "bind here first (port 0: any free port), print the port, then read the configuration path from stdin (used by `cluster up`)",
      )
        .hideHelp(),
    )
    .addOption(
      new Option(
        "--bind-tls-cert <file>",
        "with --bind: listen with TLS (used by `cluster up --tls`)",
      )
        .hideHelp(),
    )
    .addOption(new Option("--bind-tls-key <file>", "with --bind-tls-cert").hideHelp())
    .addHelpText(
      "after",
      `
Example (three terminals):
  cp server-config-example.yaml server-config.yaml
  vstamp server --index 0
  vstamp server --index 1
  vstamp server --index 2`,
    )
    .action(async (flags: ServerFlags) => {
      Deno.exitCode = await withApp(flags.app, (app) => runServer(flags, app));
    });
}

export function makeLogger(level: LogLevelName, prefix: string) {
  const threshold = LEVELS[level];
  return (lineLevel: LogLevelName, text: string) => {
    if (LEVELS[lineLevel] < threshold) return;
    console.error(`${new Date().toISOString()} ${prefix} ${lineLevel} ${text}`);
  };
}

/**
 * The state machine a server runs for `app`: the key-value store as it is (it never throws),
 * any other app behind the guard that turns a throw in `apply` into an error result.
 */
export function serverStateMachine(app: App) {
  const machine = app.createStateMachine();
  return app === kvApp ? machine : guardStateMachine(machine);
}

async function runServer(flags: ServerFlags, app: App): Promise<number> {
  const log = makeLogger(flags.logLevel, `r${flags.index}`);
  if (flags.metricsPort === undefined) return await runReplica(flags, app, log, () => {});
  // The page is served from before the replica starts (a 503 until then), so that `cluster up`
  // learns its port with the replica's.
  let node: ReplicaNode | undefined;
  let metrics: MetricsServer;
  const where = `${flags.metricsHost}:${flags.metricsPort}`;
  try {
    metrics = serveMetrics(
      { hostname: flags.metricsHost, port: flags.metricsPort },
      () => node === undefined ? undefined : renderNodeMetrics(node.metrics()),
    );
  } catch (error) {
    console.error(
      `Cannot serve metrics on ${where}: ${
        error instanceof Deno.errors.AddrInUse
          ? "the address is in use"
          : error instanceof Error
          ? error.message
          : String(error)
      }`,
    );
    return 1;
  }
  const host = metrics.hostname.includes(":") ? `[${metrics.hostname}]` : metrics.hostname;
  log("info", `metrics on http://${host}:${metrics.port}/metrics`);
  if (flags.bind !== undefined) console.log(`metrics ${metrics.port}`);
  try {
    return await runReplica(flags, app, log, (started) => node = started);
  } finally {
    node = undefined;
    await metrics.close();
  }
}

async function runReplica(
  flags: ServerFlags,
  app: App,
  log: ReturnType<typeof makeLogger>,
  onStarted: (node: ReplicaNode) => void,
): Promise<number> {
  let listener: Deno.Listener | undefined;
  let config: ServerConfig;
  let identity: Awaited<ReturnType<typeof loadIdentity>>;
  let tls: Awaited<ReturnType<typeof loadTls>>;
  try {
    if (flags.bind !== undefined) {
      // Port 0 (any free port) is allowed here, unlike in a configuration file.
      const anyPort = flags.bind.endsWith(":0");
      const address = parseAddress(anyPort ? `${flags.bind.slice(0, -2)}:1` : flags.bind);
      if ("error" in address) throw new InvalidArgumentError(`--bind: ${address.error}`);
      const port = anyPort ? 0 : address.port;
      listener = flags.bindTlsCert === undefined || flags.bindTlsKey === undefined
        ? Deno.listen({ hostname: address.host, port })
        : Deno.listenTls({
          hostname: address.host,
          port,
          cert: await Deno.readTextFile(flags.bindTlsCert),
          key: await Deno.readTextFile(flags.bindTlsKey),
        });
      console.log(`listening ${(listener.addr as Deno.NetAddr).port}`);
      const path = await readLine();
      if (path === undefined) {
        log("error", "stdin closed before the configuration path arrived");
        return 1;
      }
      flags.config = path;
    }
    config = await loadConfig(flags.config);
    checkReplicaIndex(config, flags.index);
    identity = await loadIdentity(config);
    tls = await loadTls(config, { replica: true });
    if (flags.bind !== undefined && (tls === undefined) !== (flags.bindTlsCert === undefined)) {
      throw new ConfigError(
        `Cannot use config ${config.path}: TLS (tls_* keys) and --bind-tls-cert go together`,
      );
    }
  } catch (error) {
    listener?.close();
    if (error instanceof ConfigError) {
      console.error(error.message);
      return error.exitCode;
    }
    throw error;
  }
  const dataDir = flags.dataDir ?? `./vstamp-data/replica-${flags.index}`;
  let node: ReplicaNode;
  // Set once the wait below begins; a fatal error before then has nothing to stop yet.
  let onFatal = () => {};
  let onShutDown = () => {};
  try {
    node = await ReplicaNode.start({
      onFatal: () => onFatal(),
      onShutDown: () => onShutDown(),
      join: flags.join === true,
      config,
      index: flags.index,
      dataDir,
      sync: flags.sync,
      identity: identity.identity,
      tls,
      app: serverStateMachine(app),
      appTag: appTag(app),
      listener,
      log,
      debug: flags.logLevel === "debug",
      timeLatencies: flags.metricsPort !== undefined,
    });
  } catch (error) {
    listener?.close();
    if (error instanceof DataDirError) {
      console.error(`Cannot open data directory: ${error.message}`);
      return 1;
    }
    if (error instanceof Deno.errors.AddrInUse) {
      console.error(
        `Cannot listen on ${
          config.addressTexts[flags.index]
        }: the address is in use (is replica ${flags.index} already running?)`,
      );
      return 1;
    }
    console.error(
      `Cannot start replica ${flags.index}: ${
        error instanceof Error ? error.message : String(error)
      }`,
    );
    return 1;
  }
  onStarted(node);
  const r = node.replica;
  if (identity.source === undefined) {
    log(
      "warn",
      `no cluster secret (secret_file in ${config.path}, VSTAMP_SECRET_FILE or VSTAMP_SECRET): ` +
        `any process that can reach ${node.address} can act as a replica of this group`,
    );
  } else {
    log("info", `cluster "${config.clusterId}", secret from ${identity.source}`);
  }
  log(
    "info",
    r.replicaIndex < 0
      ? `waiting on ${node.address} to join a group (data in ${dataDir}, sync ${flags.sync})`
      : `serving ${
        appTag(app)
      } as replica ${r.replicaIndex} of ${r.replicaCount} in epoch ${r.epoch} on ${node.address}, data in ${dataDir} (sync ${flags.sync}); ${r.status} in view ${r.viewNumber}, op ${r.opNumber}, commit ${r.commitNumber}`,
  );
  let stopWatchingStdin: (() => void) | undefined;
  let exitCode = 0;
  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (why: string) => {
      if (stopping) return;
      stopping = true;
      stopWatchingStdin?.();
      log("info", `${why}: stopping`);
      Deno.removeSignalListener("SIGINT", onInt);
      Deno.removeSignalListener("SIGTERM", onTerm);
      node.close().then(resolve, resolve);
    };
    const onInt = () => stop("SIGINT");
    const onTerm = () => stop("SIGTERM");
    // The node has logged why (one line) and closed: a server without its replica exits.
    onFatal = () => {
      exitCode = 1;
      stop("cannot go on");
    };
    // §7.3 It left the group, and the new one runs without it: nothing more to do here.
    onShutDown = () => stop("left the group");
    Deno.addSignalListener("SIGINT", onInt);
    Deno.addSignalListener("SIGTERM", onTerm);
    if (flags.bind !== undefined) {
      // Started by `cluster up`: when its end of our stdin closes (even if it was killed), stop,
      // so that no server outlives its cluster. Stopping for another reason cancels the read, or
      // the pending read would keep the process alive.
      const reader = Deno.stdin.readable.getReader();
      stopWatchingStdin = () => reader.cancel().catch(() => {});
      (async () => {
        try {
          while (!(await reader.read()).done) { /* `cluster up` sends nothing more */ }
        } catch {
          // Cancelled, or stdin failed: either way the cluster is gone or we are stopping.
        }
        stop("cluster gone (stdin closed)");
      })();
    }
  });
  return exitCode;
}

/** Read one line from stdin (without the newline), or undefined at end of input. */
async function readLine(): Promise<string | undefined> {
  const reader = Deno.stdin.readable.getReader();
  const decoder = new TextDecoder();
  let text = "";
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) return text.length > 0 ? text : undefined;
      text += decoder.decode(value, { stream: true });
      const newline = text.indexOf("\n");
      if (newline >= 0) return text.slice(0, newline).trim();
    }
  } finally {
    reader.releaseLock();
  }
}
