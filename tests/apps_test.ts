/**
 * App modules (`src/app/app.ts`) and the two example apps: loading and checking a module, the
 * guard around a throwing `apply`, the REPL's parsing of any app's commands, the hello that names
 * the app, and each example's state machine (determinism, snapshots, its own invariants).
 */
import { strict as assert } from "node:assert";
import fc from "fast-check";
import {
  type App,
  APP_RESULT_BYTES_MAX,
  AppError,
  applyThrewMessage,
  defineApp,
  guardStateMachine,
  loadApp,
} from "../src/app/app.ts";
import type { ApplyContext, StateMachine } from "../src/app/state_machine.ts";
import { kvApp } from "../src/app/kv_app.ts";
import { app as counterApp } from "../examples/counter.ts";
import { app as ledgerApp } from "../examples/ledger.ts";
import { appHelpText, parseAppLine } from "../src/cli/repl_parse.ts";
import {
  AcceptorHandshake,
  ConnectorHandshake,
  decodeHello,
  encodeHello,
} from "../src/transport/handshake.ts";
import { Prng } from "../src/lib/prng.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function context(opNumber: number, timestamp = opNumber): ApplyContext {
  return { opNumber, timestamp, clientId: 1, requestNumber: opNumber };
}

/** The operation a REPL line gives for `app`, or a failed assertion. */
function encodeLine(app: App, line: string): Uint8Array {
  const parsed = parseAppLine(line, app.commands);
  assert.ok(!("error" in parsed) && parsed.kind === "command", `parse ${line}`);
  const operation = parsed.command.encode(parsed.args, parsed.raw);
  assert.ok(operation instanceof Uint8Array, `encode ${line}: ${JSON.stringify(operation)}`);
  return operation;
}

/** Runs REPL lines against a fresh machine of `app`, returning each formatted result. */
function runLines(app: App, lines: readonly string[], timestamps?: readonly number[]): string[] {
  const machine = app.createStateMachine();
  return lines.map((line, index) => {
    const parsed = parseAppLine(line, app.commands);
    assert.ok(!("error" in parsed) && parsed.kind === "command");
    const result = machine.apply(
      encodeLine(app, line),
      context(index + 1, timestamps?.[index] ?? index + 1),
    );
    return parsed.command.format(result);
  });
}

// ---------------------------------------------------------------- loading a module

async function withModule(source: string, body: (path: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vstamp-app-" });
  try {
    const path = `${dir}/app.ts`;
    await Deno.writeTextFile(path, source);
    await body(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function loadError(specifier: string): Promise<string> {
  try {
    await loadApp(specifier);
  } catch (error) {
    assert.ok(error instanceof AppError, String(error));
    assert.ok(!error.message.includes("\n"), `one line: ${error.message}`);
    return error.message;
  }
  assert.fail(`${specifier} loaded`);
}

Deno.test("loadApp loads the example apps by relative path and by file URL", async () => {
  const counter = await loadApp("examples/counter.ts");
  assert.equal(counter.name, "counter");
  const ledger = await loadApp(new URL("../examples/ledger.ts", import.meta.url).href);
  assert.equal(ledger.name, "ledger");
});

Deno.test("loadApp names a missing file in one line", async () => {
  assert.equal(await loadError("examples/nothere.ts"), "--app examples/nothere.ts: no such file");
});

Deno.test("loadApp names a module that does not compile", async () => {
  await withModule("export const app = (;\n", async (path) => {
    assert.match(await loadError(path), /: cannot load the module: /);
  });
});

Deno.test("loadApp names a module without an app export", async () => {
  await withModule("export const other = 1;\n", async (path) => {
    assert.match(await loadError(path), /the module exports no app \(export an App as `app`/);
  });
});

Deno.test("loadApp names the field an exported app lacks", async () => {
  await withModule(
    'export default { name: "x", version: "1", createStateMachine: () => ({}) };\n',
    async (path) => {
      assert.match(await loadError(path), /the exported app has no array `commands`$/);
    },
  );
  await withModule(
    'export const app = { name: "x", version: "1", createStateMachine() {}, commands: [{ name: "A", usage: "A", help: "h", encode() {} }] };\n',
    async (path) => {
      assert.match(await loadError(path), /commands\[0\] has no function `format`$/);
    },
  );
});

Deno.test("loadApp names a state machine that cannot be made or digested", async () => {
  const base = 'name: "x", version: "1", commands: []';
  await withModule(
    `export const app = { ${base}, createStateMachine() { throw new Error("no\\nway"); } };\n`,
    async (path) => assert.match(await loadError(path), /createStateMachine\(\) threw: no$/),
  );
  await withModule(
    `export const app = { ${base}, createStateMachine: () => ({ apply() {}, snapshot() {}, restore() {}, digest() { throw new Error("broken"); } }) };\n`,
    async (path) => assert.match(await loadError(path), /: digest\(\) threw: broken$/),
  );
  await withModule(
    `export const app = { ${base}, createStateMachine: () => ({ apply() {} }) };\n`,
    async (path) => assert.match(await loadError(path), /state machine has no method `digest`$/),
  );
});

Deno.test("defineApp refuses a command named like the REPL's own, and duplicates", () => {
  const command = { usage: "u", help: "h", encode: () => new Uint8Array(), format: () => "" };
  const app = (names: string[]) => ({
    name: "x",
    version: "1",
    createStateMachine: () => counterApp.createStateMachine(),
    commands: names.map((name) => ({ ...command, name })),
  });
  assert.throws(() => defineApp(app(["quit"])), /QUIT is the REPL's own command/);
  assert.throws(() => defineApp(app(["A", "a"])), /two commands are named A/);
  assert.throws(() => defineApp({ ...app([]), name: "has space" }), /printable ASCII/);
});

// ---------------------------------------------------------------- the guard

/** A machine whose apply throws on "boom" after changing its state. */
function throwingMachine(): StateMachine & { count: number } {
  return {
    count: 0,
    apply(operation) {
      this.count++;
      if (decoder.decode(operation) === "boom") throw new Error("boom at the top");
      return encoder.encode(`ok ${this.count}`);
    },
    digest() {
      return String(this.count);
    },
    snapshot: () => new Uint8Array(),
    restore() {},
  };
}

Deno.test("guardStateMachine turns a throw in apply into the same error result each time", () => {
  const results = [throwingMachine(), throwingMachine()].map((machine) => {
    const guarded = guardStateMachine(machine);
    assert.equal(decoder.decode(guarded.apply(encoder.encode("a"), context(1))), "ok 1");
    const result = guarded.apply(encoder.encode("boom"), context(2));
    assert.equal(applyThrewMessage(result), "boom at the top");
    // It goes on serving, and the half-made change (the count) is the same on both.
    assert.equal(decoder.decode(guarded.apply(encoder.encode("b"), context(3))), "ok 3");
    return { result, digest: guarded.digest() };
  });
  assert.deepEqual(results[0], results[1]);
});

Deno.test("guardStateMachine keeps readOnly and query only when the machine has both", () => {
  assert.equal(guardStateMachine(throwingMachine()).readOnly, undefined);
  const counter = guardStateMachine(counterApp.createStateMachine());
  const get = encodeLine(counterApp, "GET a");
  assert.equal(counter.readOnly?.(get), true);
  assert.equal(counter.readOnly?.(encodeLine(counterApp, "INCR a")), false);
});

// ---------------------------------------------------------------- the REPL and the hello

Deno.test("parseAppLine finds an app's command without regard to case and keeps HELP and QUIT", () => {
  const line = parseAppLine('incr "my counter" 3', counterApp.commands);
  assert.ok(!("error" in line) && line.kind === "command");
  assert.equal(line.command.name, "INCR");
  assert.deepEqual(line.args, ["my counter", "3"]);
  assert.deepEqual(parseAppLine("quit", counterApp.commands), { kind: "quit" });
  assert.deepEqual(parseAppLine("help incr", counterApp.commands), {
    kind: "help",
    topic: "incr",
  });
  assert.deepEqual(parseAppLine("SET a 1", counterApp.commands), {
    error: `ERR unknown command 'SET', type "help" for the list of commands`,
  });
});

Deno.test("appHelpText lists an app's commands and describes one", () => {
  const all = appHelpText(ledgerApp.commands);
  assert.match(all, /^Commands \(case-insensitive\):\n/);
  for (const usage of ["TRANSFER from to amount", "HOLD from to amount seconds", "QUIT"]) {
    assert.match(all, new RegExp(`^  ${usage} `, "m"), usage);
  }
  const hold = appHelpText(ledgerApp.commands, "hold");
  assert.ok(hold.startsWith("HOLD from to amount seconds\n  The money is taken"), hold);
  assert.match(hold, /Example: HOLD alice bob 20 60$/);
});

Deno.test("the key-value app encodes the REPL's commands as the store's operations", () => {
  assert.deepEqual(runLines(kvApp, ["SET a 1", "GET a", "DEL a", "SIZE"]), [
    "1",
    "1",
    "(integer) 1",
    "(integer) 0",
  ]);
  const set = parseAppLine("SET a", kvApp.commands);
  assert.ok(!("error" in set) && set.kind === "command");
  assert.deepEqual(set.command.encode(set.args, set.raw), {
    error: "ERR wrong number of arguments for 'set' command",
  });
});

Deno.test("a replica refuses a peer or client that names another app, naming both", () => {
  const identity = { clusterId: "c", key: undefined };
  const acceptor = (app?: string) =>
    new AcceptorHandshake({
      identity,
      requireClientAuth: false,
      replicaCount: 3,
      selfIndex: 0,
      app,
    });
  const hello = (role: "replica" | "client", app: string) =>
    new ConnectorHandshake(
      identity,
      role,
      role === "replica" ? 1 : 0,
      role === "replica" ? 0 : undefined,
      app,
    )
      .hello;
  const refused = acceptor("kv@1").onHello(hello("replica", "counter@1"));
  assert.ok("refuse" in refused);
  assert.equal(
    refused.refuse,
    "the replica runs app counter@1, this replica runs kv@1 " +
      "(every replica of a group, and its clients, must use the same --app)",
  );
  const client = acceptor("kv@1").onHello(hello("client", "ledger@1"));
  assert.ok("refuse" in client && client.refuse.startsWith("the client runs app ledger@1"));
  // The same app, a hello that names none (a status query), a replica that checks none: accepted.
  assert.ok(!("refuse" in acceptor("kv@1").onHello(hello("replica", "kv@1"))));
  assert.ok(!("refuse" in acceptor("kv@1").onHello(hello("client", ""))));
  assert.ok(!("refuse" in acceptor().onHello(hello("replica", "counter@1"))));
});

Deno.test("a hello round-trips its app tag and rejects a malformed one", () => {
  const base = {
    role: "client" as const,
    index: 0,
    clusterId: "c",
    authenticate: false,
    nonce: new Uint8Array(16),
  };
  const decoded = decodeHello(encodeHello({ ...base, app: "ledger@1" }));
  assert.ok(!("error" in decoded));
  assert.equal(decoded.app, "ledger@1");
  const bare = decodeHello(encodeHello(base));
  assert.ok(!("error" in bare) && bare.app === "");
  const bytes = encodeHello({ ...base, app: "ledger@1" });
  bytes[bytes.length - 9] = 20; // The length byte no longer fits the bytes after it.
  assert.match(JSON.stringify(decodeHello(bytes)), /an app tag of 1 to 100 bytes/);
});

// ---------------------------------------------------------------- the example apps

/** Random operations drawn by an app's own workload, from a fast-check seed. */
function workloadOps(app: App, seed: number, count: number): Uint8Array[] {
  const prng = new Prng(seed);
  return Array.from({ length: count }, () => app.workload!(prng).operation);
}

for (const app of [counterApp, ledgerApp]) {
  Deno.test(`${app.name}: equal operations give equal results and digests on two machines`, () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 }), fc.integer({ min: 1, max: 200 }), (
        seed,
        count,
      ) => {
        const a = app.createStateMachine();
        const b = app.createStateMachine();
        workloadOps(app, seed, count).forEach((operation, index) => {
          const ctx = context(index + 1, 1_000 * index);
          assert.deepEqual(a.apply(operation, ctx), b.apply(operation, ctx));
        });
        assert.equal(a.digest(), b.digest());
        assert.deepEqual(a.snapshot(), b.snapshot());
      }),
      { numRuns: 50 },
    );
  });

  Deno.test(`${app.name}: restore(snapshot()) gives the same digest, snapshot and answers`, () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 }), (seed) => {
        const ops = workloadOps(app, seed, 120);
        const original = app.createStateMachine();
        ops.slice(0, 80).forEach((op, index) => original.apply(op, context(index + 1, index * 50)));
        const copy = app.createStateMachine();
        copy.restore(original.snapshot());
        assert.equal(copy.digest(), original.digest());
        assert.deepEqual(copy.snapshot(), original.snapshot());
        ops.slice(80).forEach((op, index) => {
          const ctx = context(81 + index, (80 + index) * 50);
          assert.deepEqual(copy.apply(op, ctx), original.apply(op, ctx));
        });
        assert.equal(copy.digest(), original.digest());
      }),
      { numRuns: 50 },
    );
  });

  Deno.test(`${app.name}: untrusted bytes give an error result, never a throw`, () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.string({ maxLength: 40 }), (bytes, text) => {
        const machine = app.createStateMachine();
        for (const operation of [bytes, encoder.encode(text), encoder.encode(`{"op":${text}}`)]) {
          const result = JSON.parse(decoder.decode(machine.apply(operation, context(1))));
          assert.equal(typeof result, "object");
        }
      }),
    );
    assert.throws(
      () => app.createStateMachine().restore(encoder.encode("[1]")),
      /not a (counters|ledger) snapshot/,
    );
  });
}

Deno.test("counter: INCR, GET and RESET in the REPL's words", () => {
  assert.deepEqual(
    runLines(counterApp, ["INCR a", "INCR a 5", "INCR a -6", "GET a", "INCR b 2", "RESET b"]),
    ["(integer) 1", "(integer) 6", "(integer) 0", "(integer) 0", "(integer) 2", "(integer) 0"],
  );
  const parsed = parseAppLine("INCR a x", counterApp.commands);
  assert.ok(!("error" in parsed) && parsed.kind === "command");
  assert.deepEqual(parsed.command.encode(parsed.args, parsed.raw), {
    error: "by must be an integer, got x",
  });
});

Deno.test("ledger: money is conserved under random transfers, holds and deposits", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 31 }), fc.integer({ min: 1, max: 300 }), (
      seed,
      count,
    ) => {
      const machine = ledgerApp.createStateMachine();
      let deposited = 0;
      workloadOps(ledgerApp, seed, count).forEach((operation, index) => {
        const op = JSON.parse(decoder.decode(operation));
        const result = JSON.parse(
          decoder.decode(machine.apply(operation, context(index + 1, index * 100))),
        );
        if (op.op === "deposit" && result.error === undefined) deposited += op.amount;
        const audit = JSON.parse(decoder.decode(
          machine.apply(encodeLine(ledgerApp, "AUDIT"), context(index + 1, index * 100)),
        ));
        assert.equal(audit.supply, deposited);
        assert.equal(audit.total, deposited, `money in accounts and holds after op ${index + 1}`);
        if (result.available !== undefined) assert.ok(result.available >= 0);
      });
    }),
    { numRuns: 100 },
  );
});

Deno.test("ledger: a hold expires by the primary's timestamp, not before", () => {
  const lines = [
    "OPEN alice",
    "OPEN bob",
    "DEPOSIT alice 100",
    "HOLD alice bob 40 10", // At t = 1,000 ms, for 10 s: until t = 11,000.
    "BALANCE alice", // t = 10,999: still held.
    "BALANCE alice", // t = 11,000: expired, back to alice.
    "CAPTURE 1",
  ];
  assert.deepEqual(runLines(ledgerApp, lines, [1, 2, 3, 1_000, 10_999, 11_000, 11_001]), [
    "OK",
    "OK",
    "alice: 100 available, 0 held",
    "hold 1 (expires at 1970-01-01T00:00:11.000Z)",
    "alice: 60 available, 40 held",
    "alice: 100 available, 0 held",
    "(error) no hold 1 (captured, released or expired)",
  ]);
  // Captured before it expires, it pays bob.
  assert.deepEqual(
    runLines(ledgerApp, [...lines.slice(0, 4), "CAPTURE 1", "BALANCE bob", "AUDIT"], [
      1,
      2,
      3,
      1_000,
      10_999,
      20_000,
      20_001,
    ]).slice(4),
    [
      "bob: 40 available, 0 held",
      "bob: 40 available, 0 held",
      "supply 100, in accounts and holds 100, 2 accounts",
    ],
  );
});

Deno.test("ledger: a transfer needs the money available and both accounts", () => {
  assert.deepEqual(
    runLines(ledgerApp, [
      "OPEN alice",
      "DEPOSIT alice 10",
      "TRANSFER alice bob 5",
      "OPEN bob",
      "TRANSFER alice bob 11",
      "TRANSFER alice bob 10",
      "BALANCE bob",
    ]),
    [
      "OK",
      "alice: 10 available, 0 held",
      "(error) no account bob",
      "OK",
      "(error) alice has only 10 available",
      "alice: 0 available, 0 held",
      "bob: 10 available, 0 held",
    ],
  );
});

Deno.test("the guard turns a result too large for a reply into an error result", () => {
  const big: StateMachine = {
    apply: (operation) => new Uint8Array(operation[0] === 1 ? APP_RESULT_BYTES_MAX + 1 : 3),
    digest: () => "",
    snapshot: () => new Uint8Array(),
    restore: () => {},
  };
  const guarded = guardStateMachine(big);
  assert.equal(guarded.apply(Uint8Array.of(0), context(1)).byteLength, 3);
  const message = applyThrewMessage(guarded.apply(Uint8Array.of(1), context(2)));
  assert.match(message ?? "", /^result of 1048577 bytes, over the 1048576 a reply may carry$/);
});

Deno.test("loadApp names a module whose snapshot cannot be restored, or whose app cannot be read", async () => {
  await withModule(
    `export const app = {
      name: "broken", version: "1", commands: [],
      createStateMachine: () => ({
        apply: () => new Uint8Array(), digest: () => "d",
        snapshot: () => new Uint8Array(), restore: () => { throw new Error("not a snapshot"); },
      }),
    };`,
    async (path) => {
      assert.match(
        await loadError(path),
        /restore\(snapshot\(\)\) of the empty state failed: not a snapshot$/,
      );
    },
  );
  await withModule(
    `export const app = { get name() { throw new Error("no name today"); } };`,
    async (path) => {
      assert.match(await loadError(path), /the exported app cannot be read: no name today$/);
    },
  );
  await withModule(`export const app = ;`, async (path) => {
    // The syntax error keeps where it is (a later line of Deno's message).
    assert.match(await loadError(path), /cannot load the module: .*app\.ts:1:\d+/);
  });
});
