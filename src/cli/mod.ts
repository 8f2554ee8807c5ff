/**
 * The `vstamp` command line: a thin layer that parses arguments and wires the pieces.
 *
 * @module
 */
import { Command } from "commander";
import { simCommand } from "./sim.ts";

export const VERSION = "0.1.0";

export function buildCli(): Command {
  const program = new Command("vstamp")
    .description("Viewstamped Replication for TypeScript: a replicated key-value store and library")
    .version(VERSION)
    .showHelpAfterError()
    .configureOutput({ outputError: (text, write) => write(text) });
  program.addCommand(simCommand());
  return program;
}
