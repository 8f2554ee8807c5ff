/**
 * The `vstamp` executable.
 *
 * @module
 */
import { buildCli } from "./src/cli/mod.ts";

if (import.meta.main) {
  await buildCli().parseAsync(Deno.args, { from: "user" });
}
