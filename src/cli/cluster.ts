/**
 * `vstamp cluster up`: start a local group of real `server` processes on ephemeral ports.
 *
 * Each child binds port 0 itself and reports the port it got, so no other process can take the
 * port between choosing and binding it; the parent then writes the configuration file and hands
 * its path to every child on stdin. A child stops when its stdin closes, so none outlives the
 * cluster even if the cluster process is killed.
 *
 * @module
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { ClientError } from "../client/client.ts";
import {
  CHECKPOINT_OPS_MAX,
  generateSecret,
  type GroupAccess,
  loadAccess,
  loadConfig,
  renderConfig,
} from "../config.ts";
import type { App } from "../app/app.ts";
import { kvApp } from "../app/kv_app.ts";
import { RespGateway } from "../resp/gateway.ts";
import { absoluteAppSpecifier, appOption, withApp } from "./app_option.ts";
import {
  type ConsoleProcess,
  describeFaults,
  FAULT_HELP,
  FaultCommandError,
  type FaultTarget,
  runFaultCommand,
} from "./fault_console.ts";
import { listenError, parsePort } from "./gateway.ts";
import { ReconfigureError, reconfigureGroup } from "./reconfigure.ts";
import { FaultNetwork } from "./relays.ts";
import { runSession } from "./repl.ts";
import { collectStatus, renderTable } from "./status.ts";
import { parseCount } from "./sim.ts";

interface UpFlags {
  replicas: number;
  configOut: string;
  dataDir?: string;
  host: string;
  sync: "fsync" | "none";
  logLevel: string;
  repl?: boolean;
  faults?: boolean;
  tls?: boolean;
  checkpointInterval?: number;
  logRetain?: number;
  metrics?: boolean;
  respPort?: number;
  app?: string;
}

const encoder = new TextEncoder();

/** The commands `cluster up --repl` adds to the REPL's. */
const CLUSTER_HELP = `cluster commands (§7, live):
  members          the group's replicas, numbered, with their status
  add              start two new replicas and add them (a group stays odd)
  remove <i> <j>   remove replicas i and j (they exit once the new group runs)
  replace <i>      start a new replica and put it in place of replica i`;

/** How long the children may take to report their ports and to become reachable. */
const START_TIMEOUT_MS = 30_000;
/** How long children get to stop after SIGTERM before SIGKILL. */
const STOP_TIMEOUT_MS = 5_000;

function parseReplicaCount(value: string): number {
  const n = parseCount("-n")(value);
  if (n < 1 || n % 2 === 0 || n > 15) {
    throw new InvalidArgumentError(`-n must be an odd number from 1 to 15, got ${value}`);
  }
  return n;
}

/** Parse a count of ops from 1 to `CHECKPOINT_OPS_MAX`, with an error naming the option. */
function parsePositive(name: string): (value: string) => number {
  return (value: string) => {
    const n = parseCount(name)(value);
    if (n < 1 || n > CHECKPOINT_OPS_MAX) {
      throw new InvalidArgumentError(
        `${name} must be from 1 to ${CHECKPOINT_OPS_MAX}, got "${value}"`,
      );
    }
    return n;
  };
}

export function clusterCommand(): Command {
  const cluster = new Command("cluster").description("Run a local group of replicas.");
  cluster.addCommand(
    new Command("up")
      .description("Start n replicas as separate processes on free ports; Ctrl-C stops them all.")
      .option("-n, --replicas <n>", "number of replicas (odd)", parseReplicaCount, 3)
      .option(
        "--config-out <file>",
        "write the group's configuration here",
        "./vstamp-cluster.yaml",
      )
      .option(
        "--data-dir <dir>",
        "replica i keeps its data in <dir>/replica-<i> (default ./vstamp-data/cluster, " +
          "or ./vstamp-data/cluster-<app name> with --app)",
      )
      .option("--host <host>", "address to bind", "127.0.0.1")
      .option("--repl", "also open a REPL on the group here; QUIT stops the cluster")
      .addOption(appOption())
      .option(
        "--faults",
        "route peer traffic through relays here, so that the REPL can cut and heal links",
      )
      .option(
        "--resp-port <port>",
        "also serve the Redis protocol here, in this process (0: any free port, printed)",
        parsePort("--resp-port"),
      )
      .option(
        "--tls",
        "TLS on every connection, with a local CA and certificate made by openssl (kept in <data-dir>/tls)",
      )
      .option("--metrics", "serve each replica's Prometheus metrics on a free port (printed)")
      .addOption(
        new Option("--sync <mode>", "as for `server`").choices(["fsync", "none"]).default("fsync"),
      )
      .option(
        "--checkpoint-interval <ops>",
        "a checkpoint every this many ops (checkpoint_interval_ops; default 100000)",
        parsePositive("--checkpoint-interval"),
      )
      .option(
        "--log-retain <ops>",
        "log entries kept before the newest checkpoint (log_retain_ops; default 200000)",
        parsePositive("--log-retain"),
      )
      .addOption(
        new Option("--log-level <level>", "as for `server`").choices([
          "debug",
          "info",
          "warn",
          "error",
        ])
          .default("warn"),
      )
      .addHelpText(
        "after",
        `
Examples:
  vstamp cluster up -n 3 --repl        a group and a prompt to type into
  vstamp cluster up -n 3 --app examples/ledger.ts --repl
                                       the same, replicating the example ledger
  vstamp cluster up -n 5 --repl --faults
                                       ... and kill, pause, cut and heal replicas there
  vstamp cluster up -n 3 --config-out c.yaml
  vstamp cluster up -n 3 --resp-port 6380    then: redis-cli -p 6380 SET a 1
  vstamp repl --config c.yaml          (in another terminal)
  vstamp status --config c.yaml`,
      )
      .action(async (flags: UpFlags) => {
        // Loaded here first, so that a module that cannot serve is one line before any child
        // starts; each child loads it again by its absolute path.
        Deno.exitCode = await withApp(flags.app, (app) => clusterUp(flags, app));
      }),
  );
  return cluster;
}

/** The permissions `vstamp` runs with (as the `vstamp` task in deno.json gives them). */
export const RUN_PERMISSIONS: readonly string[] = [
  "--allow-read",
  "--allow-write",
  "--allow-net",
  "--allow-env",
  "--allow-run",
  "--allow-sys",
  // msgpackr would load its optional native addon through FFI (and Deno would prompt for it on a
  // terminal); the pure TypeScript path is what we measure and ship.
  "--deny-ffi",
];

/** The command that runs another vstamp subcommand the way this process was run. */
export function vstampCommand(args: readonly string[]): { command: string; args: string[] } {
  const main = Deno.mainModule;
  // A compiled binary carries its own code: run it directly. Under `deno run`, run the same main
  // module with the same permissions and configuration.
  if (main.includes("/deno-compile-")) return { command: Deno.execPath(), args: [...args] };
  const configFile = new URL("../../deno.json", import.meta.url);
  const runArgs = ["run", ...RUN_PERMISSIONS];
  if (configFile.protocol === "file:") runArgs.push(`--config=${configFile.pathname}`);
  return { command: Deno.execPath(), args: [...runArgs, main, ...args] };
}

interface Child {
  readonly index: number;
  readonly process: Deno.ChildProcess;
  readonly stdin: WritableStreamDefaultWriter<Uint8Array>;
  port: number;
  /** The address the group knows it by: its own port, or its relay's (`--faults`). */
  address: string;
  /** With `--metrics`: the port of its `/metrics` page. */
  metricsPort?: number;
  exited: boolean;
  /** Sent SIGKILL by the fault console (`exited` follows when the process is gone). */
  killed: boolean;
  /** SIGSTOP'ed by the fault console. */
  paused: boolean;
}

async function clusterUp(options: UpFlags, app: App): Promise<number> {
  // Each app's group keeps its data apart: a data directory refuses a replica of another app.
  const flags = {
    ...options,
    dataDir: options.dataDir ??
      (app === kvApp ? "./vstamp-data/cluster" : `./vstamp-data/cluster-${app.name}`),
  };
  const appArgs = flags.app === undefined ? [] : ["--app", absoluteAppSpecifier(flags.app)];
  if (flags.faults === true && flags.tls === true) {
    console.error(
      "cluster up: --faults cannot be used with --tls (the relays read who is speaking from " +
        "each connection's first frame, which TLS encrypts)",
    );
    return 2;
  }
  if (flags.respPort !== undefined && app !== kvApp) {
    console.error(
      `cluster up: --resp-port serves the key-value store to Redis clients; the group runs ` +
        `app ${app.name}`,
    );
    return 2;
  }
  if (flags.faults === true && flags.repl !== true) {
    console.error("cluster up: --faults is for the fault console of --repl: add --repl");
    return 2;
  }
  /** Indexed by `Child.index`: a restarted replica takes its old place. */
  const children: Child[] = [];
  const relays = flags.faults === true ? FaultNetwork.start(0, flags.host) : undefined;
  let gateway: RespGateway | undefined;
  let stopping = false;
  const stopAll = async () => {
    if (stopping) return;
    stopping = true;
    await gateway?.close();
    relays?.close();
    for (const child of children) {
      if (!child.exited) {
        try {
          // A stopped process takes SIGTERM only once it runs again.
          if (child.paused) child.process.kill("SIGCONT");
          child.process.kill("SIGTERM");
        } catch {
          // Already gone.
        }
      }
    }
    const deadline = Date.now() + STOP_TIMEOUT_MS;
    for (const child of children) {
      const remaining = Math.max(1, deadline - Date.now());
      const timer = setTimeout(() => {
        try {
          child.process.kill("SIGKILL");
        } catch {
          // Already gone.
        }
      }, remaining);
      await child.process.status;
      clearTimeout(timer);
      try {
        await child.stdin.close();
      } catch {
        // The child is gone; its stdin with it.
      }
    }
  };
  const onSignal = () => {
    console.error("stopping the cluster");
    stopAll().then(() => Deno.exit(0));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    const tlsFiles = flags.tls === true
      ? await localCertificates(flags.dataDir, flags.host)
      : undefined;
    const spawnChild = (index: number, join: boolean, bindPort = 0, position = index): Child => {
      const { command, args } = vstampCommand([
        "server",
        ...(join ? ["--join"] : []),
        ...(tlsFiles === undefined
          ? []
          : ["--bind-tls-cert", tlsFiles.certFile, "--bind-tls-key", tlsFiles.keyFile]),
        "--index",
        String(join ? 0 : position),
        "--bind",
        `${hostText}:${bindPort}`,
        "--data-dir",
        `${flags.dataDir}/replica-${index}`,
        "--sync",
        flags.sync,
        "--log-level",
        flags.logLevel,
        ...(flags.metrics === true ? ["--metrics-port", "0", "--metrics-host", flags.host] : []),
        ...appArgs,
      ]);
      const process = new Deno.Command(command, {
        args,
        stdin: "piped",
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const child: Child = {
        index,
        process,
        stdin: process.stdin.getWriter(),
        port: 0,
        address: "",
        exited: false,
        killed: false,
        paused: false,
      };
      children[index] = child;
      process.status.then((status) => {
        child.exited = true;
        if (!stopping) {
          console.error(`replica ${index} (pid ${process.pid}) exited with code ${status.code}`);
        }
      });
      return child;
    };
    const hostText = flags.host.includes(":") ? `[${flags.host}]` : flags.host;
    for (let index = 0; index < flags.replicas; index++) spawnChild(index, false);
    await Promise.all(children.map((child) => readPort(child)));
    for (const child of children) {
      child.address = relays === undefined ? `${hostText}:${child.port}` : relays.add();
      relays?.setUpstream(child.index, child.port);
    }
    const addresses = children.map((child) => child.address);
    const group = await clusterIdentity(flags.dataDir);
    const configText = (list: readonly string[]) =>
      renderConfig(list, {
        ...group,
        ...(tlsFiles === undefined ? {} : { tls: tlsFiles }),
        checkpointIntervalOps: flags.checkpointInterval,
        logRetainOps: flags.logRetain,
      });
    await Deno.writeTextFile(flags.configOut, configText(addresses));
    const access = await loadAccess(await loadConfig(flags.configOut));
    for (const child of children) await child.stdin.write(encoder.encode(`${flags.configOut}\n`));
    const rows = await waitUntilServing(addresses, access, children);
    console.log(renderTable(rows, children.map((child) => child.process.pid)));
    for (const child of flags.metrics === true ? children : []) {
      console.log(
        `metrics of replica ${child.index}: http://${hostText}:${child.metricsPort}/metrics`,
      );
    }
    if (flags.respPort !== undefined) {
      try {
        gateway = RespGateway.start({ addresses, access, host: flags.host, port: flags.respPort });
      } catch (error) {
        const why = listenError(error, flags.host, flags.respPort);
        if (why === undefined) throw error;
        throw new Error(`--resp-port: ${why}`);
      }
      console.log(`resp gateway listening on ${hostText}:${gateway.port}`);
    }
    console.log(`configuration written to ${flags.configOut}`);
    if (flags.repl) {
      // §7 live: new processes join, members leave; the configuration file follows the group.
      let members = [...addresses];
      const childOf = (address: string | undefined) =>
        children.find((child) => child.address === address);
      const pidOf = (address: string) => {
        const child = childOf(address);
        return child === undefined || child.exited ? undefined : child.process.pid;
      };
      const startJoiner = async (): Promise<string> => {
        const child = spawnChild(children.length, true);
        const port = await readPort(child);
        const address = relays === undefined ? `${hostText}:${port}` : relays.add();
        child.address = address;
        relays?.setUpstream(child.index, port);
        if (child.metricsPort !== undefined) {
          console.log(
            `metrics of replica ${child.index}: http://${hostText}:${child.metricsPort}/metrics`,
          );
        }
        // A joining replica takes its own address from the file (and the group's identity).
        const path = `${flags.configOut}.join-${child.index}`;
        await Deno.writeTextFile(path, configText([address]));
        await child.stdin.write(encoder.encode(`${path}\n`));
        return address;
      };
      const change = async (target: string[]) => {
        await reconfigureGroup(members, target, access, { log: (line) => console.log(line) });
        members = target;
        await Deno.writeTextFile(flags.configOut, configText(members));
        console.log(`configuration written to ${flags.configOut}`);
      };
      // The fault console: its commands act on the processes and relays here.
      const consoleProcess = (child: Child): ConsoleProcess => ({
        get pid() {
          return child.process.pid;
        },
        get exited() {
          return child.exited || child.killed;
        },
        get paused() {
          return child.paused;
        },
        set paused(value: boolean) {
          child.paused = value;
        },
        kill(signal: Deno.Signal) {
          if (signal === "SIGKILL") {
            child.killed = true;
            relays?.setUpstream(child.index, undefined);
          }
          child.process.kill(signal);
        },
      });
      const faults: FaultTarget = {
        get members() {
          return members;
        },
        relays,
        processAt: (position) => {
          const child = childOf(members[position]);
          return child === undefined ? undefined : consoleProcess(child);
        },
        idAt: (position) => childOf(members[position])?.index ?? position,
        restart: async (position) => {
          const old = childOf(members[position]);
          if (old === undefined) {
            throw new FaultCommandError(`replica ${position} was not started here`);
          }
          await old.process.status; // Killed: gone in a moment.
          await old.stdin.close().catch(() => {});
          // Without relays it must listen where the group knows it: its old port.
          const child = spawnChild(old.index, false, relays === undefined ? old.port : 0, position);
          const port = await readPort(child);
          child.address = old.address;
          relays?.setUpstream(child.index, port);
          await child.stdin.write(encoder.encode(`${flags.configOut}\n`));
          return consoleProcess(child);
        },
        status: async () => {
          const rows = await collectStatus(members, access);
          const pids = members.map((address) => pidOf(address) ?? 0);
          return `${renderTable(rows, pids)}\n${describeFaults(faults)}`;
        },
      };
      const extra = async (line: string): Promise<boolean> => {
        try {
          const answer = await runFaultCommand(line, faults);
          if (answer !== undefined) {
            console.log(answer);
            return true;
          }
        } catch (error) {
          if (!(error instanceof FaultCommandError || error instanceof ClientError)) throw error;
          console.log(`(error) ${error.message}`);
          return true;
        }
        const words = line.trim().split(/\s+/);
        const command = words[0]?.toLowerCase() ?? "";
        const positionsOf = () =>
          words.slice(1).map((word) => {
            const n = Number(word);
            if (!/^\d+$/.test(word) || n >= members.length) {
              throw new ReconfigureError(
                `no replica ${word}: the group has ${members.length} (0 to ${
                  members.length - 1
                }; see members)`,
              );
            }
            return n;
          });
        try {
          switch (command) {
            case "help":
              console.log(`${CLUSTER_HELP}\n${FAULT_HELP}`);
              return false;
            case "members": {
              const rows = await collectStatus(members, access);
              console.log(renderTable(rows, members.map((address) => pidOf(address) ?? 0)));
              return true;
            }
            case "add": {
              if (words.length !== 1) throw new ReconfigureError("usage: add (adds two replicas)");
              const added = [await startJoiner(), await startJoiner()];
              await change([...members, ...added]);
              return true;
            }
            case "remove": {
              const positions = positionsOf();
              if (positions.length !== 2 || positions[0] === positions[1]) {
                throw new ReconfigureError(
                  "usage: remove <i> <j>: a group needs an odd number of replicas, so two go",
                );
              }
              await change(members.filter((_, at) => !positions.includes(at)));
              return true;
            }
            case "replace": {
              const positions = positionsOf();
              if (positions.length !== 1) throw new ReconfigureError("usage: replace <i>");
              const added = await startJoiner();
              await change(members.map((address, at) => at === positions[0] ? added : address));
              return true;
            }
            default:
              return false;
          }
        } catch (error) {
          if (!(error instanceof ReconfigureError || error instanceof ClientError)) throw error;
          console.log(`(error) ${error.message}`);
          return true;
        }
      };
      await runSession(addresses, addresses[0]!, undefined, access, extra, app);
      await stopAll();
      return 0;
    }
    const appFlag = flags.app === undefined ? "" : ` --app ${absoluteAppSpecifier(flags.app)}`;
    console.log(
      `try: vstamp repl --config ${flags.configOut}${appFlag}    (Ctrl-C here stops the cluster)`,
    );
    // Stay in the foreground until a signal stops everything.
    await Promise.all(children.map((child) => child.process.status));
    if (!stopping) {
      console.error("every replica exited");
      return 1;
    }
    return 0;
  } catch (error) {
    console.error(`cluster up failed: ${error instanceof Error ? error.message : String(error)}`);
    await stopAll();
    return 1;
  }
}

/**
 * The group's cluster id and secret file, kept with its data (`<dataDir>/cluster.id`,
 * `<dataDir>/cluster.secret`, readable by this user only): a group restarted on the same data
 * keeps its identity, and a new one gets a fresh id and secret.
 */
async function clusterIdentity(
  dataDir: string,
): Promise<{ readonly clusterId: string; readonly secretFile: string }> {
  await Deno.mkdir(dataDir, { recursive: true });
  const idPath = `${dataDir}/cluster.id`;
  const secretFile = await Deno.realPath(dataDir).then((dir) => `${dir}/cluster.secret`);
  let clusterId: string;
  try {
    clusterId = (await Deno.readTextFile(idPath)).trim();
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    clusterId = `local-${generateSecret().slice(0, 12)}`;
    await Deno.writeTextFile(idPath, `${clusterId}\n`);
  }
  try {
    await Deno.stat(secretFile);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    await Deno.writeTextFile(secretFile, `${generateSecret()}\n`, { mode: 0o600 });
  }
  return { clusterId, secretFile };
}

/**
 * A local CA and one certificate for every replica (all on `host`), made with openssl and kept in
 * `<dataDir>/tls`, reused when present.
 */
async function localCertificates(
  dataDir: string,
  host: string,
): Promise<{ readonly certFile: string; readonly keyFile: string; readonly caFile: string }> {
  const dir = `${await Deno.realPath(dataDir).catch(async () => {
    await Deno.mkdir(dataDir, { recursive: true });
    return Deno.realPath(dataDir);
  })}/tls`;
  const files = {
    certFile: `${dir}/replica.pem`,
    keyFile: `${dir}/replica.key`,
    caFile: `${dir}/ca.pem`,
  };
  if (await Deno.stat(files.certFile).then(() => true, () => false)) return files;
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const name = /^[0-9.]+$/.test(host) || host.includes(":") ? `IP:${host}` : `DNS:${host}`;
  const run = async (args: string[]) => {
    let output: Deno.CommandOutput;
    try {
      output = await new Deno.Command("openssl", {
        args,
        cwd: dir,
        stdout: "null",
        stderr: "piped",
      })
        .output();
    } catch (error) {
      throw new Error(
        `cluster up --tls needs openssl to make a local CA (${
          error instanceof Error ? error.message : error
        }); install it (apt-get install openssl) or give the files in a configuration`,
      );
    }
    if (!output.success) {
      throw new Error(
        `openssl ${args[0]} failed: ${new TextDecoder().decode(output.stderr).trim()}`,
      );
    }
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await run([
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "3650",
    "-subj",
    "/CN=vstamp local CA",
  ]);
  await run([
    "req",
    ...ec,
    "-keyout",
    "replica.key",
    "-out",
    "replica.csr",
    "-subj",
    "/CN=vstamp replica",
  ]);
  await Deno.writeTextFile(`${dir}/replica.ext`, `subjectAltName=${name},DNS:localhost\n`);
  await run([
    "x509",
    "-req",
    "-in",
    "replica.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "replica.pem",
    "-days",
    "3650",
    "-extfile",
    "replica.ext",
  ]);
  return files;
}

/** Read the child's "listening <port>" line (and "metrics <port>" before it) from its stdout. */
async function readPort(child: Child): Promise<number> {
  const reader = child.process.stdout.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const deadline = setTimeout(() => reader.cancel(), START_TIMEOUT_MS);
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`replica ${child.index} exited before reporting its port`);
      text += decoder.decode(value, { stream: true });
      const match = /listening (\d+)\n/.exec(text);
      if (match) {
        child.port = Number(match[1]);
        // `server --metrics-port` prints "metrics <port>" before it binds the replica's port.
        const metrics = /metrics (\d+)\n/.exec(text);
        if (metrics) child.metricsPort = Number(metrics[1]);
        // Keep draining stdout so the child never blocks writing to it.
        (async () => {
          try {
            while (!(await reader.read()).done) { /* discard */ }
          } catch {
            // The child is gone.
          }
        })();
        return child.port;
      }
    }
  } finally {
    clearTimeout(deadline);
  }
}

async function waitUntilServing(
  addresses: readonly string[],
  access: GroupAccess,
  children: readonly Child[],
) {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (true) {
    // A child that exited said why on stderr (which it shares with us): waiting is in vain.
    const exited = children.find((child) => child.exited);
    if (exited !== undefined) throw new Error(`replica ${exited.index} exited before serving`);
    const rows = await collectStatus(addresses, access);
    if (rows.every((row) => row.reachable && row.status === "normal")) return rows;
    if (Date.now() > deadline) {
      throw new Error(`replicas not serving after ${START_TIMEOUT_MS} ms:\n${renderTable(rows)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
