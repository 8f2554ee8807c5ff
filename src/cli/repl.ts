/**
 * `vstamp repl`: an interactive client, like redis-cli. With stdin not a terminal it reads commands
 * line by line and prints only results, so it can be scripted.
 *
 * @module
 */
import { createInterface } from "node:readline/promises";
import process from "node:process";
import { Command } from "commander";
import { decodeKvResult, encodeKvOperation, formatKvResult, type KvOperation } from "../app/kv.ts";
import { Client, ClientError } from "../client/client.ts";
import { ConfigError, type GroupAccess, loadAccess, loadConfig } from "../config.ts";
import { helpText, parseReplLine } from "./repl_parse.ts";
import { parseCount } from "./sim.ts";

interface ReplFlags {
  host: string;
  port: number;
  id?: number;
  config?: string;
}

/** Lines of history kept in an interactive session. */
const HISTORY_LINES_MAX = 1000;

export function replCommand(): Command {
  return new Command("repl")
    .description("An interactive client: SET, GET, DEL, SIZE, help, QUIT.")
    .option("--host <host>", "a replica to start from", "127.0.0.1")
    .option("--port <port>", "its port", parseCount("--port"), 14621)
    .option(
      "--id <n>",
      "client id (default: a random one); reusing an id continues its request numbers",
      parseCount("--id"),
    )
    .option("--config <file>", "start from every replica of this configuration file instead")
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
      Deno.exitCode = await runRepl(flags);
    });
}

async function runRepl(flags: ReplFlags): Promise<number> {
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
  return await runSession(addresses, promptAddress, flags.id, access);
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
): Promise<number> {
  const interactive = Deno.stdin.isTerminal();
  let client: Client;
  try {
    client = await Client.connect({ addresses, clientId, ...access });
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
        `connected to a group of ${client.addresses.length} in epoch ${client.epoch} (client id ${client.clientId}); type help`,
      );
      while (true) {
        let line: string;
        try {
          line = await rl.question(prompt);
        } catch {
          break; // Ctrl-D or Ctrl-C.
        }
        if (extra !== undefined && await extra(line, client)) continue;
        if (!(await runLine(client, line))) break;
      }
    } else {
      for await (const line of rl) {
        if (extra !== undefined && await extra(line, client)) continue;
        if (!(await runLine(client, line))) break;
      }
    }
  } finally {
    rl.close();
    client.close();
  }
  return 0;
}

/** Run one line; false when the session should end. */
async function runLine(client: Client, line: string): Promise<boolean> {
  const command = parseReplLine(line);
  if ("error" in command) {
    console.log(`(error) ${command.error}`);
    return true;
  }
  let operation: KvOperation;
  switch (command.kind) {
    case "empty":
      return true;
    case "quit":
      return false;
    case "help":
      console.log(helpText(command.topic));
      return true;
    case "set":
      operation = { command: "SET", key: command.key, value: command.value };
      break;
    case "get":
      operation = { command: "GET", key: command.key };
      break;
    case "del":
      operation = { command: "DEL", key: command.key };
      break;
    case "size":
      operation = { command: "SIZE" };
      break;
  }
  try {
    const result = await client.request(encodeKvOperation(operation));
    console.log(formatKvResult(decodeKvResult(result)));
  } catch (error) {
    if (!(error instanceof ClientError)) throw error;
    console.log(`(error) ${error.message}`);
  }
  return true;
}
