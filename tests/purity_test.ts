import { strict as assert } from "node:assert";

/** What the protocol core must never touch: clock, randomness, timers, I/O, await. */
const FORBIDDEN: readonly [RegExp, string][] = [
  [/\bDate\b/, "the clock (Date)"],
  [/performance\.now/, "the clock (performance.now)"],
  [/Math\.random/, "randomness (Math.random)"],
  [/crypto\./, "randomness (crypto)"],
  [/\bsetTimeout\b|\bsetInterval\b|\bqueueMicrotask\b/, "timers"],
  [/\bDeno\./, "I/O (Deno.*)"],
  [/\bfetch\(/, "I/O (fetch)"],
  [/\bawait\b|\basync\b/, "await/async"],
  [/from "node:|from "npm:|import\("/, "I/O or outside modules"],
];

Deno.test("protocol core src/vr stays free of clock, randomness, timers and I/O", async () => {
  const directory = new URL("../src/vr/", import.meta.url);
  let files = 0;
  for await (const entry of Deno.readDir(directory)) {
    if (!entry.isFile || !entry.name.endsWith(".ts")) continue;
    files++;
    const text = await Deno.readTextFile(new URL(entry.name, directory));
    const code = text.split("\n").filter((line) => !/^\s*(\*|\/\/|\/\*)/.test(line)).join("\n");
    for (const [pattern, what] of FORBIDDEN) {
      assert.ok(!pattern.test(code), `src/vr/${entry.name} uses ${what}`);
    }
  }
  assert.ok(files >= 5, `expected the core's files, found ${files}`);
});
