/**
 * `vstamp gateway`: serve the Redis protocol (RESP2) in front of a group, so that Redis clients
 * and tools use the replicated key-value store unmodified (`src/resp/gateway.ts`).
 *
 * @module
 */
import { Command, InvalidArgumentError } from "commander";
import { CONFIG_PATH_DEFAULT, ConfigError, loadAccess, loadConfig } from "../config.ts";
import { GATEWAY_DEADLINE_MS_DEFAULT, RespGateway, SESSIONS_MAX_DEFAULT } from "../resp/gateway.ts";
import { parseCount } from "./sim.ts";

interface GatewayFlags {
  config: string;
  host: string;
  port: number;
  sessions: number;
  deadlineMs: number;
}

export function gatewayCommand(): Command {
  return new Command("gateway")
    .description("Serve the Redis protocol (RESP2) for the group: redis-cli, redis-benchmark, …")
    .option("--config <file>", "the group's configuration (YAML)", CONFIG_PATH_DEFAULT)
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option(
      "--port <port>",
      "port to listen on (0: any free one, printed)",
      parsePort("--port"),
      6379,
    )
    .option(
      "--sessions <n>",
      "client sessions (client ids) at most: concurrent commands beyond wait",
      parsePositive("--sessions"),
      SESSIONS_MAX_DEFAULT,
    )
    .option(
      "--deadline-ms <ms>",
      "answer a command that the group did not answer in this long with an error",
      parsePositive("--deadline-ms"),
      GATEWAY_DEADLINE_MS_DEFAULT,
    )
    .addHelpText(
      "after",
      `
Example:
  vstamp cluster up -n 3 --config-out c.yaml
  vstamp gateway --config c.yaml --port 6380
  redis-cli -p 6380 SET a 1`,
    )
    .action(async (flags: GatewayFlags) => {
      Deno.exitCode = await runGateway(flags);
    });
}

/** A parser of a TCP port, 0 to 65535, whose errors name the option. */
export function parsePort(name: string): (value: string) => number {
  return (value: string) => {
    const n = parseCount(name)(value);
    if (n > 65535) {
      throw new InvalidArgumentError(`${name} must be from 0 to 65535, got "${value}"`);
    }
    return n;
  };
}

function parsePositive(name: string): (value: string) => number {
  return (value: string) => {
    const n = parseCount(name)(value);
    if (n < 1) throw new InvalidArgumentError(`${name} must be at least 1, got "${value}"`);
    return n;
  };
}

/** Why `RespGateway.start` could not listen on `host:port`, in one line. */
export function listenError(error: unknown, host: string, port: number): string | undefined {
  if (error instanceof Deno.errors.AddrInUse) {
    return `cannot listen on ${host}:${port}: the address is in use`;
  }
  if (
    error instanceof Deno.errors.AddrNotAvailable || error instanceof Deno.errors.NotFound ||
    error instanceof Deno.errors.PermissionDenied ||
    (error instanceof Error && /lookup address/.test(error.message))
  ) {
    return `cannot listen on ${host}:${port}: ${error.message}`;
  }
  return undefined;
}

async function runGateway(flags: GatewayFlags): Promise<number> {
  let gateway: RespGateway;
  try {
    const config = await loadConfig(flags.config);
    gateway = RespGateway.start({
      addresses: config.addressTexts,
      access: await loadAccess(config),
      host: flags.host,
      port: flags.port,
      sessionsMax: flags.sessions,
      deadlineMs: flags.deadlineMs,
    });
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      return error.exitCode;
    }
    const why = listenError(error, flags.host, flags.port);
    if (why !== undefined) {
      console.error(`vstamp gateway: ${why}`);
      return 1;
    }
    throw error;
  }
  console.log(`resp gateway listening on ${flags.host}:${gateway.port}`);
  const stop = () => {
    gateway.close().then(() => Deno.exit(0));
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await gateway.done;
  return 0;
}
