/**
 * The `vstamp` command line: a thin layer that parses arguments and wires the pieces.
 *
 * @module
 */
import { Command } from "commander";
import { benchCommand } from "./bench.ts";
import { clusterCommand } from "./cluster.ts";
import { gatewayCommand } from "./gateway.ts";
import { reconfigureCommand } from "./reconfigure.ts";
import { replCommand } from "./repl.ts";
import { serverCommand } from "./server.ts";
import { simCommand } from "./sim.ts";
import { statusCommand } from "./status.ts";

export const VERSION = "0.1.0";

export function buildCli(): Command {
  const program = new Command("vstamp")
    .description("Viewstamped Replication for TypeScript: a replicated key-value store and library")
    .version(VERSION)
    .showHelpAfterError()
    .configureOutput({ outputError: (text, write) => write(text) });
  program.addCommand(serverCommand());
  program.addCommand(replCommand());
  program.addCommand(clusterCommand());
  program.addCommand(statusCommand());
  program.addCommand(reconfigureCommand());
  program.addCommand(gatewayCommand());
  program.addCommand(benchCommand());
  program.addCommand(simCommand());
  return program;
}
