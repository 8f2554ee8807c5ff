/**
 * `vstamp repl`: an interactive client, like redis-cli. With stdin not a terminal it reads commands
 * line by line and prints only results, so it can be scripted.
 *
 * @module
 */
import { createInterface } from "node:readline/promises";
import process from "node:process";
import { Command } from "commander";
import { type App, appTag, formatResult } from "../app/app.ts";
import { kvApp } from "../app/kv_app.ts";
import { Client, ClientError } from "../client/client.ts";
import { ConfigError, type GroupAccess, loadAccess, loadConfig } from "../config.ts";
import { appOption, withApp } from "./app_option.ts";
import { appHelpText, parseAppLine } from "./repl_parse.ts";
import { parseCount } from "./sim.ts";

interface ReplFlags {
  host: string;
  port: number;
  id?: number;
  config?: string;
  app?: string;
}

/** Lines of history kept in an interactive session. */
const HISTORY_LINES_MAX = 1000;

export function replCommand(): Command {
  return new Command("repl")
    .description(
      "An interactive client: SET, GET, DEL, SIZE, help, QUIT (or the commands of --app).",
    )
    .option("--host <host>", "a replica to start from", "127.0.0.1")
    .option("--port <port>", "its port", parseCount("--port"), 14621)
    .option(
      "--id <n>",
      "client id (default: a random one); reusing an id continues its request numbers",
      parseCount("--id"),
    )
    .option("--config <file>", "start from every replica of this configuration file instead")
    .addOption(appOption())
    .addHelpText(
      "after",
      `
Example:
  vstamp repl --port 14621 --id 12345
  127.0.0.1:14621> SET greeting "hello world"
  hello world
  127.0.0.1:14621> GET greeting
  hello world

Scripted: printf 'SET a 1\\nGET a\\n' | vstamp repl --config c.yaml`,
    )
    .action(async (flags: ReplFlags) => {
      Deno.exitCode = await withApp(flags.app, (app) => runRepl(flags, app));
    });
}

async function runRepl(flags: ReplFlags, app: App): Promise<number> {
  let addresses: string[];
  let promptAddress: string;
  let access: GroupAccess;
  try {
    const config = flags.config === undefined ? undefined : await loadConfig(flags.config);
    access = await loadAccess(config);
    if (config !== undefined) {
      addresses = [...config.addressTexts];
      promptAddress = addresses[0]!;
    } else {
      const host = flags.host.includes(":") ? `[${flags.host}]` : flags.host;
      promptAddress = `${host}:${flags.port}`;
      addresses = [promptAddress];
    }
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      return error.exitCode;
    }
    throw error;
  }
  return await runSession(addresses, promptAddress, flags.id, access, undefined, app);
}

/** Connect to the group at `addresses` and read commands until QUIT or end of input. */
export async function runSession(
  addresses: readonly string[],
  promptAddress: string,
  clientId?: number | undefined,
  access?: GroupAccess | undefined,
  /**
   * More commands (`cluster up --repl`'s): given each line first; true when it handled the line,
   * false to let the REPL run it.
   */
  extra?: ((line: string, client: Client) => Promise<boolean>) | undefined,
  /** The app whose commands the REPL knows; the key-value store by default. */
  app: App = kvApp,
): Promise<number> {
  const interactive = Deno.stdin.isTerminal();
  let client: Client;
  try {
    client = await Client.connect({ addresses, clientId, ...access, app: appTag(app) });
  } catch (error) {
    if (error instanceof ClientError) {
      console.error(`Could not connect to ${addresses.join(", ")}: ${error.message}`);
      return 1;
    }
    throw error;
  }
  const rl = createInterface({
    input: process.stdin,
    output: interactive ? process.stdout : undefined,
    terminal: interactive,
    historySize: HISTORY_LINES_MAX,
  });
  const prompt = `${promptAddress}> `;
  try {
    if (interactive) {
      console.log(
        `connected to a group of ${client.addresses.length} in epoch ${client.epoch} (client id ${client.clientId}, app ${
          appTag(app)
        }); type help`,
      );
      while (true) {
        let line: string;
        try {
          line = await rl.question(prompt);
        } catch {
          break; // Ctrl-D or Ctrl-C.
        }
        if (extra !== undefined && await extra(line, client)) continue;
        if (!(await runLine(client, app, line))) break;
      }
    } else {
      for await (const line of rl) {
        if (extra !== undefined && await extra(line, client)) continue;
        if (!(await runLine(client, app, line))) break;
      }
    }
  } finally {
    rl.close();
    client.close();
  }
  return 0;
}

/** Run one line; false when the session should end. */
async function runLine(client: Client, app: App, line: string): Promise<boolean> {
  const parsed = parseAppLine(line, app.commands);
  if ("error" in parsed) {
    console.log(`(error) ${parsed.error}`);
    return true;
  }
  switch (parsed.kind) {
    case "empty":
      return true;
    case "quit":
      return false;
    case "help":
      console.log(appHelpText(app.commands, parsed.topic));
      return true;
  }
  const { command } = parsed;
  let operation: Uint8Array | { readonly error: string };
  try {
    operation = command.encode(parsed.args, parsed.raw);
  } catch (error) {
    operation = { error: `${command.name}: ${error instanceof Error ? error.message : error}` };
  }
  if (!(operation instanceof Uint8Array)) {
    console.log(`(error) ${operation.error}`);
    return true;
  }
  try {
    console.log(formatResult(command, await client.request(operation)));
  } catch (error) {
    if (!(error instanceof ClientError)) throw error;
    console.log(`(error) ${error.message}`);
  }
  return true;
}
