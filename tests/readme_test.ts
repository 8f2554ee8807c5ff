/**
 * The README's "Embed vstamp in your program" example: type-checked and run as a user would, with
 * the permissions the README names.
 */
import { strict as assert } from "node:assert";
import { fileURLToPath } from "node:url";

const ROOT = new URL("../", import.meta.url);
/** The permissions the README tells a user to run the example with. */
const EXAMPLE_PERMISSIONS = [
  "--allow-read",
  "--allow-write",
  "--allow-net",
  "--allow-env",
  "--deny-ffi",
];

/** The first ```ts block after `marker` in the README. */
async function readmeBlock(marker: string): Promise<string> {
  const readme = await Deno.readTextFile(new URL("README.md", ROOT));
  const at = readme.indexOf(marker);
  assert.ok(at >= 0, `README has no ${marker}`);
  const match = /```ts\n([\s\S]*?)\n```/.exec(readme.slice(at));
  assert.ok(match !== null, `no ts block after ${marker}`);
  return match[1]!;
}

Deno.test("README embed example type-checks and runs a replica and a client in one process", async () => {
  const source = await readmeBlock("<!-- embed-example -->");
  assert.match(source, /ReplicaNode\.start/);
  assert.match(
    await Deno.readTextFile(new URL("README.md", ROOT)),
    new RegExp(`deno run ${EXAMPLE_PERMISSIONS.join(" ")} embed\\.ts`),
    "the README names the permissions this test uses",
  );
  const dir = await Deno.makeTempDir({ prefix: "vstamp-readme-" });
  try {
    // The example imports "./mod.ts" as if it sat at the top of the repository.
    const path = `${dir}/embed.ts`;
    await Deno.writeTextFile(path, source.replaceAll('from "./', `from "${ROOT.href}`));
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--check",
        `--config=${fileURLToPath(new URL("deno.json", ROOT))}`,
        ...EXAMPLE_PERMISSIONS,
        path,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, stderr);
    assert.equal(new TextDecoder().decode(output.stdout), "(integer) 5\n", stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
