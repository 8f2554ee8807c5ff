import { strict as assert } from "node:assert";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import {
  checkReplicaIndex,
  CONFIG_BYTES_MAX,
  ConfigError,
  formatAddress,
  generateSecret,
  loadConfig,
  loadIdentity,
  parseAddress,
  parseConfig,
  renderConfig,
  REPLICAS_MAX,
  type ServerConfig,
} from "../src/config.ts";

const PATH = "c.yaml";
const EXAMPLE_PATH = fileURLToPath(new URL("../server-config-example.yaml", import.meta.url));
const ROUND_TRIP_RUNS = 500;

/** A config file with the given list entries, each written verbatim after "- ". */
function configText(entries: readonly string[]): string {
  return `replicas_addresses:\n${entries.map((entry) => `  - ${entry}\n`).join("")}`;
}

/** Asserts that parsing `text` throws a ConfigError with exactly `message`, on one line. */
function assertConfigError(text: string, message: string): void {
  assert.throws(
    () => parseConfig(text, PATH),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.exitCode, 2);
      assert.equal(error.message, message);
      assert.ok(!error.message.includes("\n"), "the message should be one line");
      return true;
    },
  );
}

/** The message of the ConfigError that parsing `text` throws. */
function configErrorMessage(text: string): string {
  try {
    parseConfig(text, PATH);
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    assert.ok(!error.message.includes("\n"), "the message should be one line");
    return error.message;
  }
  assert.fail("expected a ConfigError");
}

async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vstamp_config_test_" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("parseAddress accepts IPv4, host names and bracketed IPv6", () => {
  assert.deepEqual(parseAddress("127.0.0.1:14621"), { host: "127.0.0.1", port: 14621 });
  assert.deepEqual(parseAddress("localhost:1"), { host: "localhost", port: 1 });
  assert.deepEqual(parseAddress("db-1.example.com:65535"), {
    host: "db-1.example.com",
    port: 65535,
  });
  assert.deepEqual(parseAddress("[::1]:14621"), { host: "::1", port: 14621 });
  assert.deepEqual(parseAddress("[2001:db8::7]:80"), { host: "2001:db8::7", port: 80 });
});

Deno.test("parseAddress rejects malformed addresses with a reason", () => {
  const cases: readonly [string, string][] = [
    ["localhost", '"localhost" is not host:port'],
    [":14621", '":14621" is not host:port'],
    ["", '"" is not host:port'],
    ["127.0.0.1:99999", '"127.0.0.1:99999": port must be 1..65535'],
    ["127.0.0.1:0", '"127.0.0.1:0": port must be 1..65535'],
    ["127.0.0.1:", '"127.0.0.1:": port must be 1..65535'],
    ["127.0.0.1:12.5", '"127.0.0.1:12.5": port must be 1..65535'],
    ["127.0.0.1:-1", '"127.0.0.1:-1": port must be 1..65535'],
    ["127.0.0.1:1e3", '"127.0.0.1:1e3": port must be 1..65535'],
    ["127.0.0.1: 80", '"127.0.0.1: 80": port must be 1..65535'],
    ["::1:14621", '"::1:14621": an IPv6 host must be in brackets, as in "[::1]:14621"'],
    ["[::1]14621", '"[::1]14621" is not [host]:port'],
    ["[::1", '"[::1" is not [host]:port'],
    ["[nothex]:1", '"[nothex]:1": host in brackets must be an IPv6 address'],
    ["127.0.0.256:1", '"127.0.0.256:1": host is not a valid IPv4 address'],
    ["127.1:1", '"127.1:1": host is not a valid IPv4 address'],
  ];
  for (const [text, error] of cases) {
    assert.deepEqual(parseAddress(text), { error }, text);
  }
  for (const text of ["my host:1", "a..b:1", "-a:1", "a_b:1", "a/b:1", "héllo:1"]) {
    const result = parseAddress(text);
    assert.ok("error" in result, text);
    assert.match(result.error, /host must be a name or IPv4 address/, text);
  }
  const long = parseAddress(`${"a.".repeat(127)}a:1`);
  assert.ok("error" in long);
  assert.match(long.error, /HOST_CHARS_MAX/);
});

Deno.test("formatAddress inverts parseAddress", () => {
  for (const text of ["127.0.0.1:14621", "localhost:1", "[::1]:14621", "[2001:db8::7]:80"]) {
    const address = parseAddress(text);
    assert.ok(!("error" in address), text);
    assert.equal(formatAddress(address), text);
  }
});

Deno.test("formatAddress round-trips random IPv4 addresses and ports", () => {
  const octet = fc.integer({ min: 0, max: 255 });
  fc.assert(
    fc.property(fc.tuple(octet, octet, octet, octet), fc.integer({ min: 1, max: 65535 }), (
      octets,
      port,
    ) => {
      const address = { host: octets.join("."), port };
      assert.deepEqual(parseAddress(formatAddress(address)), address);
    }),
    { numRuns: ROUND_TRIP_RUNS },
  );
});

Deno.test("parseConfig reads the seed project's format", () => {
  const config = parseConfig(
    configText(['"127.0.0.1:14621"', '"127.0.0.1:14622"', '"127.0.0.1:14623"']),
    PATH,
  );
  assert.equal(config.path, PATH);
  assert.deepEqual(config.addressTexts, ["127.0.0.1:14621", "127.0.0.1:14622", "127.0.0.1:14623"]);
  assert.deepEqual(config.addresses, [
    { host: "127.0.0.1", port: 14621 },
    { host: "127.0.0.1", port: 14622 },
    { host: "127.0.0.1", port: 14623 },
  ]);
});

Deno.test("parseConfig accepts unquoted entries, flow lists and a single replica", () => {
  const flow = parseConfig('replicas_addresses: ["a:1", "[::1]:2", b.example:3]\n', PATH);
  assert.deepEqual(flow.addressTexts, ["a:1", "[::1]:2", "b.example:3"]);
  const single = parseConfig(configText(["127.0.0.1:14621"]), PATH);
  assert.deepEqual(single.addresses, [{ host: "127.0.0.1", port: 14621 }]);
});

Deno.test("parseConfig rejects text that is not YAML, naming the reason and line", () => {
  const message = configErrorMessage('replicas_addresses:\n  - "127.0.0.1:14621\n');
  assert.match(
    message,
    /^Cannot read config "c\.yaml": not valid YAML: .+ at line \d+, column \d+$/,
  );
  const unclosed = configErrorMessage('replicas_addresses: ["a:1", "b:2"\n');
  assert.match(unclosed, /^Cannot read config "c\.yaml": not valid YAML: .*line 2/);
  assertConfigError(
    'replicas_addresses: ["a:1"]\nreplicas_addresses: ["b:1"]\n',
    'Cannot read config "c.yaml": not valid YAML: Map keys must be unique at line 2, column 1',
  );
});

Deno.test("parseConfig rejects a top level that is not a mapping", () => {
  assertConfigError(
    '- "127.0.0.1:14621"\n',
    'Cannot read config "c.yaml": the top level must be a mapping with replicas_addresses, ' +
      "got a list",
  );
  assertConfigError(
    "hello\n",
    'Cannot read config "c.yaml": the top level must be a mapping with replicas_addresses, ' +
      'got "hello"',
  );
  assertConfigError(
    "",
    'Cannot read config "c.yaml": the file is empty, expected a mapping with replicas_addresses',
  );
  assertConfigError(
    "# only a comment\n",
    'Cannot read config "c.yaml": the file is empty, expected a mapping with replicas_addresses',
  );
});

Deno.test("parseConfig rejects a missing replicas_addresses", () => {
  assertConfigError("{}\n", 'Cannot read config "c.yaml": replicas_addresses is missing');
});

Deno.test("parseConfig rejects an unknown top-level key", () => {
  assertConfigError(
    'replica_addresses:\n  - "127.0.0.1:14621"\n',
    'Cannot read config "c.yaml": unknown key "replica_addresses" ' +
      "(the keys are replicas_addresses, cluster_id, secret_file, require_client_auth, tls_cert_file, tls_key_file, tls_ca_file, checkpoint_interval_ops, log_retain_ops)",
  );
  assertConfigError(
    `${configText(['"127.0.0.1:14621"'])}timeout: 5\n`,
    'Cannot read config "c.yaml": unknown key "timeout" (the keys are replicas_addresses, cluster_id, secret_file, require_client_auth, tls_cert_file, tls_key_file, tls_ca_file, checkpoint_interval_ops, log_retain_ops)',
  );
  assertConfigError(
    "? [a]\n: 1\n",
    'Cannot read config "c.yaml": unknown key a list (the keys are replicas_addresses, cluster_id, secret_file, require_client_auth, tls_cert_file, tls_key_file, tls_ca_file, checkpoint_interval_ops, log_retain_ops)',
  );
  assertConfigError(
    "7: x\n",
    'Cannot read config "c.yaml": unknown key 7 (the keys are replicas_addresses, cluster_id, secret_file, require_client_auth, tls_cert_file, tls_key_file, tls_ca_file, checkpoint_interval_ops, log_retain_ops)',
  );
});

Deno.test("parseConfig rejects replicas_addresses that is not a list", () => {
  assertConfigError(
    'replicas_addresses: "127.0.0.1:14621"\n',
    'Cannot read config "c.yaml": replicas_addresses must be a list of "host:port" strings, ' +
      'got "127.0.0.1:14621"',
  );
  assertConfigError(
    "replicas_addresses:\n",
    'Cannot read config "c.yaml": replicas_addresses must be a list of "host:port" strings, ' +
      "got null",
  );
  assertConfigError(
    "replicas_addresses:\n  a: 1\n",
    'Cannot read config "c.yaml": replicas_addresses must be a list of "host:port" strings, ' +
      "got a mapping",
  );
});

Deno.test("parseConfig rejects an empty list", () => {
  assertConfigError(
    "replicas_addresses: []\n",
    'Cannot read config "c.yaml": replicas_addresses must not be empty',
  );
});

Deno.test("parseConfig rejects an even number of replicas", () => {
  assertConfigError(
    configText(['"127.0.0.1:14621"', '"127.0.0.1:14622"']),
    'Cannot read config "c.yaml": replicas_addresses must have an odd number of entries, got 2',
  );
});

Deno.test("parseConfig rejects more than REPLICAS_MAX replicas", () => {
  const ok = Array.from({ length: REPLICAS_MAX }, (_, i) => `"127.0.0.1:${14621 + i}"`);
  assert.equal(parseConfig(configText(ok), PATH).addresses.length, REPLICAS_MAX);
  const tooMany = Array.from({ length: REPLICAS_MAX + 2 }, (_, i) => `"127.0.0.1:${14621 + i}"`);
  assertConfigError(
    configText(tooMany),
    `Cannot read config "c.yaml": replicas_addresses must have at most ${REPLICAS_MAX} entries ` +
      `(REPLICAS_MAX), got ${REPLICAS_MAX + 2}`,
  );
});

Deno.test("parseConfig rejects an entry that is not a string", () => {
  assertConfigError(
    configText(['"127.0.0.1:14621"', "14622", '"127.0.0.1:14623"']),
    'Cannot read config "c.yaml": replicas_addresses[1] must be a "host:port" string, got 14622',
  );
  assertConfigError(
    configText(['"127.0.0.1:14621"', "~", '"127.0.0.1:14623"']),
    'Cannot read config "c.yaml": replicas_addresses[1] must be a "host:port" string, got null',
  );
  assertConfigError(
    configText(['"127.0.0.1:14621"', '"127.0.0.1:14622"', "[a, b]"]),
    'Cannot read config "c.yaml": replicas_addresses[2] must be a "host:port" string, got a list',
  );
});

Deno.test("parseConfig rejects an entry that is not host:port", () => {
  assertConfigError(
    configText(['"127.0.0.1:14621"', '"localhost"', '"127.0.0.1:14623"']),
    'Cannot read config "c.yaml": replicas_addresses[1] "localhost" is not host:port',
  );
});

Deno.test("parseConfig rejects a port out of range", () => {
  assertConfigError(
    configText(['"127.0.0.1:14621"', '"127.0.0.1:14622"', '"127.0.0.1:99999"']),
    'Cannot read config "c.yaml": replicas_addresses[2] "127.0.0.1:99999": port must be 1..65535',
  );
});

Deno.test("parseConfig rejects duplicate addresses", () => {
  assertConfigError(
    configText(['"127.0.0.1:14621"', '"127.0.0.1:14622"', '"127.0.0.1:14621"']),
    'Cannot read config "c.yaml": replicas_addresses[2] "127.0.0.1:14621" duplicates ' +
      "replicas_addresses[0]",
  );
  // Different spellings of one address are still the same replica.
  assertConfigError(
    configText(['"LocalHost:1"', '"localhost:1"', '"b:1"']),
    'Cannot read config "c.yaml": replicas_addresses[1] "localhost:1" duplicates ' +
      "replicas_addresses[0]",
  );
  assertConfigError(
    configText(['"[::1]:1"', '"[0:0:0:0:0:0:0:1]:1"', '"b:1"']),
    'Cannot read config "c.yaml": replicas_addresses[1] "[0:0:0:0:0:0:0:1]:1" duplicates ' +
      "replicas_addresses[0]",
  );
});

Deno.test("parseConfig keeps error messages on one line for odd values", () => {
  const newline = configErrorMessage(configText(['"a\\nb:1"']));
  assert.ok(newline.startsWith('Cannot read config "c.yaml": replicas_addresses[0] "a\\nb:1": '));
  const long = configErrorMessage(configText([`"${"x".repeat(500)}"`]));
  assert.ok(long.length < 200, "a long value should be cut short");
  assert.match(long, /"x+\.\.\." is not host:port$/);
});

Deno.test("checkReplicaIndex accepts every index of the file and rejects the rest", () => {
  const config: ServerConfig = parseConfig(configText(["a:1", "a:2", "a:3"]), PATH);
  for (const index of [0, 1, 2]) checkReplicaIndex(config, index);
  for (const index of [3, -1, 1.5, Number.NaN]) {
    assert.throws(
      () => checkReplicaIndex(config, index),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.equal(error.exitCode, 2);
        assert.equal(
          error.message,
          `Cannot use config "c.yaml": --index ${index} is out of range, the file has 3 replicas ` +
            "(0..2)",
        );
        return true;
      },
    );
  }
});

Deno.test("renderConfig output parses back to the same addresses", () => {
  const texts = ["127.0.0.1:14621", "[::1]:14622", "node-3.example:14623"];
  const config = parseConfig(renderConfig(texts), "rendered.yaml");
  assert.deepEqual(config.addressTexts, texts);
  assert.deepEqual(config.addresses.map(formatAddress), texts);
});

Deno.test("loadConfig reads the example file as three local addresses", async () => {
  const config = await loadConfig(EXAMPLE_PATH);
  assert.equal(config.path, EXAMPLE_PATH);
  assert.deepEqual(config.addressTexts, ["127.0.0.1:14621", "127.0.0.1:14622", "127.0.0.1:14623"]);
  assert.deepEqual(config.addresses.map((address) => address.port), [14621, 14622, 14623]);
});

Deno.test("loadConfig reads a file written by renderConfig", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/server-config.yaml`;
    await Deno.writeTextFile(path, renderConfig(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]));
    const config = await loadConfig(path);
    assert.deepEqual(config.addressTexts, ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
  });
});

Deno.test("loadConfig reports a missing file with a hint", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/x.yaml`;
    await assert.rejects(loadConfig(path), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(
        error.message,
        `Cannot read config "${path}": file not found (copy server-config-example.yaml to ` +
          "server-config.yaml, or pass --config)",
      );
      return true;
    });
  });
});

Deno.test("loadConfig rejects a file larger than CONFIG_BYTES_MAX", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/big.yaml`;
    await Deno.writeTextFile(path, `# ${"x".repeat(CONFIG_BYTES_MAX)}\n`);
    await assert.rejects(loadConfig(path), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(
        error.message,
        `Cannot read config "${path}": the file is larger than ${CONFIG_BYTES_MAX} bytes ` +
          "(CONFIG_BYTES_MAX)",
      );
      return true;
    });
  });
});

Deno.test("loadConfig rejects a file that is not YAML or not UTF-8", async () => {
  await withTempDir(async (dir) => {
    const yamlPath = `${dir}/bad.yaml`;
    await Deno.writeTextFile(yamlPath, "replicas_addresses: [\n");
    await assert.rejects(loadConfig(yamlPath), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /^Cannot read config ".*bad\.yaml": not valid YAML: .*line \d+/);
      return true;
    });
    const binaryPath = `${dir}/binary.yaml`;
    await Deno.writeFile(binaryPath, new Uint8Array([0xff, 0xfe, 0x00]));
    await assert.rejects(loadConfig(binaryPath), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.message, `Cannot read config "${binaryPath}": the file is not UTF-8 text`);
      return true;
    });
  });
});

Deno.test("loadConfig rejects a directory", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(loadConfig(dir), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.message, `Cannot read config "${dir}": it is not a file`);
      return true;
    });
  });
});

Deno.test({
  name: "parseConfig without env permission says the yaml library needs it",
  permissions: { env: false },
  fn() {
    assert.throws(
      () => parseConfig(configText(['"127.0.0.1:14621"']), PATH),
      (error: unknown) => {
        assert.ok(error instanceof Error && !(error instanceof ConfigError));
        assert.match(error.message, /--allow-env/);
        return true;
      },
    );
  },
});

Deno.test("parseConfig reads cluster_id, secret_file (beside the file) and require_client_auth", () => {
  const config = parseConfig(
    `${configText(['"127.0.0.1:1"'])}cluster_id: "orders"\nsecret_file: "orders.secret"\n` +
      "require_client_auth: true\n",
    "/etc/vstamp/c.yaml",
  );
  assert.equal(config.clusterId, "orders");
  assert.equal(config.secretFile, "/etc/vstamp/orders.secret");
  assert.equal(config.requireClientAuth, true);
  const plain = parseConfig(configText(['"127.0.0.1:1"']), PATH);
  assert.equal(plain.clusterId, "vstamp");
  assert.equal(plain.secretFile, undefined);
  assert.equal(plain.requireClientAuth, false);
  assert.equal(
    parseConfig(`${configText(['"127.0.0.1:1"'])}secret_file: /abs/s\n`, "d/c.yaml").secretFile,
    "/abs/s",
  );
  const rendered = parseConfig(
    renderConfig(["127.0.0.1:1"], { clusterId: "x-1", secretFile: "/s" }),
    PATH,
  );
  assert.equal(rendered.clusterId, "x-1");
  assert.equal(rendered.secretFile, "/s");
});

Deno.test("parseConfig names a bad cluster_id, secret_file or require_client_auth", () => {
  const base = configText(['"127.0.0.1:1"']);
  assertConfigError(
    `${base}cluster_id: ""\n`,
    'Cannot read config "c.yaml": cluster_id must be a non-empty string, got ""',
  );
  assertConfigError(
    `${base}cluster_id: "a b"\n`,
    'Cannot read config "c.yaml": cluster_id "a b" may hold printable ASCII characters only ' +
      "(no spaces)",
  );
  assertConfigError(
    `${base}cluster_id: 7\n`,
    'Cannot read config "c.yaml": cluster_id must be a non-empty string, got 7',
  );
  assertConfigError(
    `${base}secret_file: [a]\n`,
    'Cannot read config "c.yaml": secret_file must be a path, got a list',
  );
  assertConfigError(
    `${base}require_client_auth: "yes"\n`,
    'Cannot read config "c.yaml": require_client_auth must be true or false, got "yes"',
  );
});

Deno.test("loadIdentity reads the secret file and refuses a short or missing one", async () => {
  await withTempDir(async (dir) => {
    const good = `${dir}/good.secret`;
    await Deno.writeTextFile(good, `${generateSecret()}\n`);
    const loaded = await loadIdentity({ clusterId: "orders", secretFile: good });
    assert.equal(loaded.identity.clusterId, "orders");
    assert.ok(loaded.identity.key !== undefined);
    assert.equal(loaded.source, good);
    const none = await loadIdentity({ clusterId: "orders", secretFile: undefined });
    assert.equal(none.identity.key, undefined);
    assert.equal(none.source, undefined);
    const short = `${dir}/short.secret`;
    await Deno.writeTextFile(short, "tooshort\n");
    await assert.rejects(
      loadIdentity({ clusterId: "orders", secretFile: short }),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.match(
          error.message,
          /^Cannot read secret file ".*short\.secret": the secret is 8 bytes; at least 16 are needed/,
        );
        return true;
      },
    );
    await assert.rejects(
      loadIdentity({ clusterId: "orders", secretFile: `${dir}/absent` }),
      /Cannot read secret file ".*absent": file not found/,
    );
  });
});

Deno.test("parseConfig reads the checkpoint keys and renderConfig writes them", () => {
  const text = renderConfig(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], {
    checkpointIntervalOps: 5000,
    logRetainOps: 200,
  });
  const config = parseConfig(text, PATH);
  assert.equal(config.checkpointIntervalOps, 5000);
  assert.equal(config.logRetainOps, 200);
  const plain = parseConfig(configText(['"127.0.0.1:1"']), PATH);
  assert.equal(plain.checkpointIntervalOps, undefined);
  assert.equal(plain.logRetainOps, undefined);
});

Deno.test("parseConfig rejects checkpoint keys that are not whole numbers in range", () => {
  const base = configText(['"127.0.0.1:1"']);
  for (const [value, shown] of [["0", "0"], ["-3", "-3"], ["1.5", "1.5"], ['"many"', '"many"']]) {
    assertConfigError(
      `${base}checkpoint_interval_ops: ${value}\n`,
      `Cannot read config "c.yaml": checkpoint_interval_ops must be a whole number from 1 to ` +
        `1073741824, got ${shown}`,
    );
  }
  assertConfigError(
    `${base}log_retain_ops: 1073741825\n`,
    `Cannot read config "c.yaml": log_retain_ops must be a whole number from 1 to 1073741824, ` +
      "got 1073741825",
  );
});
