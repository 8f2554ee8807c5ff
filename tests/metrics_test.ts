/**
 * Metrics: the histogram, the latency tracker and the text format on their own, then a real
 * cluster's `/metrics` pages parsed strictly, and `status --watch`.
 */
import { strict as assert } from "node:assert";
import { Client } from "../src/client/client.ts";
import { PromHistogram } from "../src/metrics/histogram.ts";
import { LatencyTracker, PENDING_REQUESTS_MAX } from "../src/metrics/latency.ts";
import { PrometheusText } from "../src/metrics/prometheus.ts";
import { serveMetrics } from "../src/transport/metrics_http.ts";
import { Cluster as SimCluster, kvSet, ofType } from "./_harness.ts";
import { set } from "./_kv.ts";
import { runVstamp, waitFor, withCluster } from "./_process.ts";

// ------------------------------------------------------------------ a strict parser

interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

interface Family {
  help?: string;
  type?: string;
  readonly samples: Sample[];
}

const SAMPLE_LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL_PAIR = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\["\\n])*)"(?:,|$)/;

/**
 * Parses the text format and throws, naming the line, on anything it does not expect: a line
 * that is neither a comment nor a sample, a sample before its family's HELP and TYPE, a value
 * that is not a number, a label pair that does not parse, a family declared twice.
 */
function parsePrometheus(text: string): Map<string, Family> {
  assert.ok(text.endsWith("\n"), "the page ends with a newline");
  const families = new Map<string, Family>();
  const familyOf = (name: string) => {
    for (const suffix of ["_bucket", "_sum", "_count"]) {
      const base = name.slice(0, -suffix.length);
      if (name.endsWith(suffix) && families.get(base)?.type === "histogram") return base;
    }
    return name;
  };
  text.slice(0, -1).split("\n").forEach((line, at) => {
    const where = `line ${at + 1} ${JSON.stringify(line)}`;
    const comment = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (comment !== null) {
      const [, kind, name, rest] = comment as unknown as [string, string, string, string];
      let family = families.get(name);
      if (family === undefined) families.set(name, family = { samples: [] });
      assert.equal(family.samples.length, 0, `${where}: after the family's samples`);
      if (kind === "HELP") {
        assert.equal(family.help, undefined, `${where}: HELP twice`);
        family.help = rest;
      } else {
        assert.equal(family.type, undefined, `${where}: TYPE twice`);
        assert.ok(["counter", "gauge", "histogram"].includes(rest), `${where}: type`);
        family.type = rest;
      }
      return;
    }
    const match = SAMPLE_LINE.exec(line);
    assert.ok(match !== null, `${where}: not a sample`);
    const [, name, labelText, valueText] = match as unknown as [
      string,
      string,
      string | undefined,
      string,
    ];
    const labels: Record<string, string> = {};
    let rest = labelText ?? "";
    while (rest.length > 0) {
      const pair = LABEL_PAIR.exec(rest);
      assert.ok(pair !== null, `${where}: bad labels at ${JSON.stringify(rest)}`);
      assert.equal(labels[pair[1]!], undefined, `${where}: label ${pair[1]} twice`);
      labels[pair[1]!] = pair[2]!.replace(/\\(["\\n])/g, (_, c) => c === "n" ? "\n" : c);
      rest = rest.slice(pair[0].length);
    }
    const value = valueText === "+Inf" ? Infinity : valueText === "-Inf" ? -Infinity : Number(
      valueText,
    );
    assert.ok(valueText === "NaN" || !Number.isNaN(value), `${where}: value`);
    const family = families.get(familyOf(name));
    assert.ok(family?.help !== undefined && family.type !== undefined, `${where}: no HELP/TYPE`);
    if (family.type !== "histogram") assert.equal(name, familyOf(name), where);
    family.samples.push({ name, labels, value });
  });
  for (const [name, family] of families) {
    assert.ok(family.help !== undefined && family.type !== undefined, `${name}: HELP and TYPE`);
    if (family.type === "counter") {
      for (const s of family.samples) assert.ok(s.value >= 0, `${name}: a counter below 0`);
    }
    if (family.type === "histogram") checkHistogram(name, family);
  }
  return families;
}

/** Per label set: buckets in increasing `le`, counts never falling, `+Inf` equal to `_count`. */
function checkHistogram(name: string, family: Family): void {
  const series = new Map<string, { buckets: [number, number][]; sum?: number; count?: number }>();
  for (const sample of family.samples) {
    const { le, ...rest } = sample.labels;
    const key = JSON.stringify(rest);
    let entry = series.get(key);
    if (entry === undefined) series.set(key, entry = { buckets: [] });
    if (sample.name === `${name}_bucket`) {
      assert.ok(le !== undefined, `${name}: a bucket without le`);
      entry.buckets.push([le === "+Inf" ? Infinity : Number(le), sample.value]);
    } else if (sample.name === `${name}_sum`) entry.sum = sample.value;
    else entry.count = sample.value;
  }
  for (const [key, entry] of series) {
    const what = `${name}${key}`;
    assert.ok(entry.buckets.length >= 2, `${what}: buckets`);
    for (let i = 1; i < entry.buckets.length; i++) {
      assert.ok(entry.buckets[i]![0] > entry.buckets[i - 1]![0], `${what}: le increases`);
      assert.ok(entry.buckets[i]![1] >= entry.buckets[i - 1]![1], `${what}: counts never fall`);
    }
    const last = entry.buckets[entry.buckets.length - 1]!;
    assert.equal(last[0], Infinity, `${what}: the last bucket is +Inf`);
    assert.equal(last[1], entry.count, `${what}: +Inf equals _count`);
    assert.ok(entry.sum !== undefined && entry.sum >= 0, `${what}: _sum`);
  }
}

/** The one sample of `name` whose labels include `labels`. */
function valueOf(
  families: Map<string, Family>,
  name: string,
  labels: Record<string, string> = {},
): number {
  const family = families.get(name.replace(/_(bucket|count|sum)$/, "")) ?? families.get(name);
  const found =
    family?.samples.filter((s) =>
      s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
    ) ?? [];
  assert.equal(found.length, 1, `one sample of ${name} ${JSON.stringify(labels)}`);
  return found[0]!.value;
}

// ------------------------------------------------------------------ units

Deno.test("core counts view changes, recoveries and state transfers as they happen", () => {
  const cluster = new SimCluster();
  const stats = (i: number) => cluster.replica(i).protocolStats;
  cluster.cut(0, 2);
  for (let s = 1; s <= 3; s++) {
    cluster.request(0, 1, s, kvSet(`k${s}`, `v${s}`));
    cluster.run();
  }
  assert.deepEqual(stats(2), { viewChanges: 0, recoveries: 0, stateTransfers: 0 });
  assert.equal(cluster.replica(0).clientTableSize, 1);
  // §5.2 r2 missed ops 1-3: the Prepare of op 4 makes it fetch them, in one NewState.
  cluster.heal();
  cluster.request(0, 1, 4, kvSet("k4", "v4"));
  cluster.deliver(ofType("prepare", 0, 2));
  cluster.run();
  assert.equal(cluster.replica(2).opNumber, 4);
  assert.equal(stats(2).stateTransfers, 1);
  // §4.2 The primary goes: both backups change views once.
  cluster.crash(0);
  for (let t = 0; t < 40 && cluster.replica(1).viewNumber === 0; t++) {
    cluster.tick(1);
    cluster.tick(2);
    cluster.run();
  }
  assert.equal(cluster.replica(1).viewNumber, 1);
  assert.equal(stats(1).viewChanges, 1);
  assert.equal(stats(2).viewChanges, 1);
  // §4.3 A replica that lost its disk recovers.
  cluster.crash(2, { diskless: true });
  cluster.restart(2);
  assert.equal(stats(2).recoveries, 1);
});

Deno.test("histogram puts a value equal to a bound in that bound's bucket", () => {
  const histogram = new PromHistogram([0.001, 0.01]);
  for (const value of [0.0005, 0.001, 0.002, 0.01, 5]) histogram.observe(value);
  assert.deepEqual(histogram.cumulative(), [2, 4, 5]);
  assert.equal(histogram.count, 5);
  assert.ok(Math.abs(histogram.sum - 5.0135) < 1e-12);
});

Deno.test("latency tracker times a request from its first arrival to its reply", () => {
  const tracker = new LatencyTracker();
  tracker.requestArrived(7, 100, 1_000);
  tracker.requestArrived(7, 100, 1_004); // A retry keeps the first arrival.
  tracker.replied(7, 99, 1_005); // A reply to another request times nothing.
  assert.equal(tracker.requestDuration.count, 0);
  tracker.replied(7, 100, 1_010);
  assert.equal(tracker.requestDuration.count, 1);
  assert.ok(Math.abs(tracker.requestDuration.sum - 0.010) < 1e-12);
  tracker.replied(7, 100, 1_020); // The stored reply sent again: already timed.
  assert.equal(tracker.requestDuration.count, 1);
});

Deno.test("latency tracker forgets the oldest request when full", () => {
  const tracker = new LatencyTracker();
  for (let id = 1; id <= PENDING_REQUESTS_MAX + 1; id++) tracker.requestArrived(id, 1, 0);
  assert.equal(tracker.trackedClients, PENDING_REQUESTS_MAX);
  tracker.replied(1, 1, 5);
  assert.equal(tracker.requestDuration.count, 0, "the oldest was forgotten");
  tracker.replied(2, 1, 5);
  assert.equal(tracker.requestDuration.count, 1);
});

Deno.test("latency tracker times Prepares per backup until a cumulative PrepareOk", () => {
  const tracker = new LatencyTracker();
  tracker.prepareSent(1, 5, 0);
  tracker.prepareSent(1, 5, 3); // Re-sent: timed from the first send.
  tracker.prepareSent(1, 9, 2);
  tracker.prepareSent(2, 9, 0);
  tracker.prepareOkArrived(1, 4, 1); // Covers nothing sent.
  assert.equal(tracker.prepareOkDuration.get(1), undefined);
  tracker.prepareOkArrived(1, 9, 10); // Covers both Prepares to backup 1.
  const one = tracker.prepareOkDuration.get(1)!;
  assert.equal(one.count, 2);
  assert.ok(Math.abs(one.sum - (0.010 + 0.008)) < 1e-12);
  assert.equal(tracker.prepareOkDuration.get(2), undefined, "backup 2 has not answered");
  tracker.forgetPrepares();
  tracker.prepareOkArrived(2, 9, 10);
  assert.equal(tracker.prepareOkDuration.get(2), undefined, "forgotten at a view change");
});

Deno.test("text format escapes label values and parses back", () => {
  const histogram = new PromHistogram([0.1, 1]);
  histogram.observe(0.5);
  const text = new PrometheusText({ replica: "0" })
    .counter("t_total", "a counter", [[{ path: 'a"b\\c\nd' }, 3]])
    .histogram("t_seconds", "a histogram", [[{}, histogram]])
    .render();
  const families = parsePrometheus(text);
  assert.equal(families.get("t_total")!.samples[0]!.labels.path, 'a"b\\c\nd');
  assert.equal(valueOf(families, "t_seconds_bucket", { le: "0.1" }), 0);
  assert.equal(valueOf(families, "t_seconds_bucket", { le: "1" }), 1);
  assert.equal(valueOf(families, "t_seconds_count"), 1);
  assert.throws(() => new PrometheusText().gauge("bad name", "x", []), /bad or repeated/);
});

Deno.test("parser refuses what a scraper would refuse", () => {
  for (
    const text of [
      "x 1\n", // no HELP/TYPE
      "# HELP x a\n# TYPE x gauge\nx one\n",
      '# HELP x a\n# TYPE x gauge\nx{a="1} 1\n',
      "# HELP x a\n# TYPE x counter\nx -1\n",
      '# HELP h a\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
    ]
  ) {
    assert.throws(() => parsePrometheus(text), Error, JSON.stringify(text));
  }
});

Deno.test("metrics endpoint serves only GET /metrics, 503 until there is a page", async () => {
  let page: string | undefined;
  const server = serveMetrics({ hostname: "127.0.0.1", port: 0 }, () => page);
  try {
    const base = `http://127.0.0.1:${server.port}`;
    const starting = await fetch(`${base}/metrics`);
    assert.equal(starting.status, 503);
    await starting.body?.cancel();
    page = "# HELP x a\n# TYPE x gauge\nx 1\n";
    const ok = await fetch(`${base}/metrics`);
    assert.equal(ok.status, 200);
    assert.match(ok.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
    assert.equal(await ok.text(), page);
    const missing = await fetch(`${base}/other`);
    assert.equal(missing.status, 404);
    assert.match(await missing.text(), /only \/metrics/);
    const post = await fetch(`${base}/metrics`, { method: "POST", body: "x" });
    assert.equal(post.status, 405);
    await post.body?.cancel();
  } finally {
    await server.close();
  }
});

// ------------------------------------------------------------------ a real cluster

async function scrape(url: string): Promise<Map<string, Family>> {
  const response = await fetch(url);
  assert.equal(response.status, 200, url);
  return parsePrometheus(await response.text());
}

/** The metrics URLs `cluster up --metrics` printed, by replica. */
function metricsUrls(stdout: string, n: number): string[] {
  const urls: string[] = [];
  for (const match of stdout.matchAll(/metrics of replica (\d+): (http:\/\/\S+\/metrics)/g)) {
    urls[Number(match[1])] = match[2]!;
  }
  assert.equal(urls.filter((url) => url !== undefined).length, n, stdout);
  return urls;
}

const WRITES = 30;

Deno.test("cluster up --metrics: every replica's page parses, and counters move with writes", async () => {
  await withCluster(3, async (cluster) => {
    const urls = metricsUrls(cluster.output().stdout, 3);
    const before = await Promise.all(urls.map(scrape));
    const primary = before.findIndex((page) => valueOf(page, "vstamp_is_primary") === 1);
    assert.ok(primary >= 0, "one replica says it is the primary");
    const client = await Client.connect({ addresses: cluster.addresses, deadlineMs: 10_000 });
    try {
      for (let i = 0; i < WRITES; i++) await set(client, `k${i}`, `v${i}`);
    } finally {
      client.close();
    }
    // Backups learn of the last commits from the next Prepare or Commit: wait for them.
    const after: Map<string, Family>[] = await waitFor(
      async () => {
        const pages = await Promise.all(urls.map(scrape));
        return pages.every((page) => valueOf(page, "vstamp_commit_number") >= WRITES)
          ? pages
          : null;
      },
      10_000,
      "every replica to commit the writes",
    );
    for (const [index, page] of after.entries()) {
      for (const family of page.values()) {
        for (const sample of family.samples) {
          assert.equal(sample.labels.replica, String(index), `${sample.name} names its replica`);
        }
      }
      for (
        const name of [
          "vstamp_requests_total",
          "vstamp_commits_total",
          "vstamp_view_changes_total",
          "vstamp_recoveries_total",
          "vstamp_state_transfers_total",
          "vstamp_checkpoints_total",
          "vstamp_log_entries",
          "vstamp_client_table_entries",
          "vstamp_connections",
          "vstamp_view",
          "vstamp_epoch",
          "vstamp_status",
          "vstamp_request_duration_seconds",
          "vstamp_prepare_ok_duration_seconds",
        ]
      ) {
        assert.ok(page.has(name), `replica ${index} shows ${name}`);
      }
      assert.equal(valueOf(page, "vstamp_status", { status: "normal" }), 1);
      assert.equal(valueOf(page, "vstamp_view_changes_total"), 0);
      assert.ok(valueOf(page, "vstamp_log_entries") >= WRITES);
      assert.ok(valueOf(page, "vstamp_client_table_entries") >= 1);
      assert.equal(valueOf(page, "vstamp_connections", { kind: "peer_in" }), 2);
      assert.ok(
        valueOf(page, "vstamp_commits_total") >=
          valueOf(before[index]!, "vstamp_commits_total") + WRITES,
        `replica ${index}: commits_total rose by the writes`,
      );
    }
    const p = after[primary]!;
    assert.ok(
      valueOf(p, "vstamp_requests_total") >=
        valueOf(before[primary]!, "vstamp_requests_total") + WRITES,
    );
    assert.ok(valueOf(p, "vstamp_request_duration_seconds_count") >= WRITES);
    assert.ok(valueOf(p, "vstamp_request_duration_seconds_sum") > 0);
    // Every write needs f = 1 PrepareOk: at least one backup's histogram counts them all.
    const acked = p.get("vstamp_prepare_ok_duration_seconds")!.samples
      .filter((s) => s.name === "vstamp_prepare_ok_duration_seconds_count")
      .map((s) => s.value);
    assert.ok(acked.length >= 1 && Math.max(...acked) >= 1, `PrepareOk counts ${acked}`);
  }, { sync: "none", args: ["--metrics"] });
});

Deno.test("status --watch --count 2 redraws the table with ops/s while writes run", async () => {
  await withCluster(3, async (cluster) => {
    const client = await Client.connect({ addresses: cluster.addresses, deadlineMs: 10_000 });
    let writing = true;
    const writer = (async () => {
      for (let i = 0; writing; i++) await set(client, `w${i % 50}`, String(i));
    })();
    let result;
    try {
      result = await runVstamp(
        ["status", "--watch", "--count", "2", "--interval", "500", "--config", cluster.configPath],
        { cwd: cluster.dir },
      );
    } finally {
      writing = false;
      await writer;
      client.close();
    }
    assert.equal(result.code, 0, result.stderr);
    const tables = result.stdout.split(/^--- /m).slice(1);
    assert.equal(tables.length, 2, result.stdout);
    assert.ok(!result.stdout.includes("\x1b["), "no escape codes when stdout is not a terminal");
    const opsColumn = (table: string) => {
      const lines = table.split("\n").filter((line) => line.startsWith("|"));
      const header = lines[0]!.split("|").map((cell) => cell.trim());
      const at = header.indexOf("OPS/S");
      assert.ok(at > 0, `an OPS/S column in ${table}`);
      return lines.slice(1).map((line) => line.split("|").map((cell) => cell.trim())[at]!);
    };
    assert.deepEqual(opsColumn(tables[0]!), ["-", "-", "-"], "no rate before a second poll");
    const rates = opsColumn(tables[1]!).map(Number);
    assert.equal(rates.length, 3);
    assert.ok(rates.every((rate) => Number.isFinite(rate) && rate > 0), `ops/s ${rates}`);
  }, { sync: "none" });
});

Deno.test("status refuses --count without --watch, and a bad --interval", async () => {
  const noWatch = await runVstamp(["status", "--count", "2", "--config", "/nonexistent.yaml"]);
  assert.equal(noWatch.code, 2);
  assert.match(noWatch.stderr, /--interval and --count go with --watch/);
  const bad = await runVstamp(["status", "--watch", "--interval", "5"]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /--interval must be at least 50 ms, got "5"/);
});

Deno.test("cluster up --metrics: a view change shows at the survivors, and the new primary times requests", async () => {
  await withCluster(3, async (cluster) => {
    const urls = metricsUrls(cluster.output().stdout, 3);
    const before = await Promise.all(urls.map(scrape));
    const old = before.findIndex((page) => valueOf(page, "vstamp_is_primary") === 1);
    assert.ok(old >= 0);
    await cluster.killReplica(old);
    const client = await Client.connect({ addresses: cluster.addresses, deadlineMs: 15_000 });
    try {
      for (let i = 0; i < 5; i++) await set(client, `after${i}`, String(i));
    } finally {
      client.close();
    }
    const survivors = [0, 1, 2].filter((i) => i !== old);
    const pages = await Promise.all(survivors.map((i) => scrape(urls[i]!)));
    for (const page of pages) {
      assert.ok(valueOf(page, "vstamp_view_changes_total") >= 1);
      assert.ok(valueOf(page, "vstamp_view") >= 1);
    }
    const now = pages.findIndex((page) => valueOf(page, "vstamp_is_primary") === 1);
    assert.ok(now >= 0, "a survivor is the new primary");
    assert.ok(valueOf(pages[now]!, "vstamp_request_duration_seconds_count") >= 5);
    // The old primary's links are down: the new primary counts one replica link each way.
    assert.equal(valueOf(pages[now]!, "vstamp_connections", { kind: "peer_in" }), 1);
  }, { sync: "none", args: ["--metrics"] });
});
