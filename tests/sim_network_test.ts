import { strict as assert } from "node:assert";
import fc from "fast-check";
import { Prng } from "../src/lib/prng.ts";
import { EventQueue } from "../src/sim/event_queue.ts";
import { type Delivery, Network, type NetworkOptions } from "../src/sim/network.ts";

// ---------------------------------------------------------------- Prng

function draws(prng: Prng, count: number): number[] {
  const values: number[] = [];
  for (let i = 0; i < count; i++) values.push(prng.nextUint32());
  return values;
}

Deno.test("Prng: the same seed gives the same sequence", () => {
  for (const seed of [0, 1, 42, -1, -123456789, 2 ** 32, 2 ** 40 + 7, Number.MAX_SAFE_INTEGER]) {
    assert.deepEqual(draws(new Prng(seed), 1000), draws(new Prng(seed), 1000));
  }
});

Deno.test("Prng: different seeds give different sequences", () => {
  const seeds = [0, 1, 2, -1, 2 ** 32, 2 ** 32 + 1, Number.MAX_SAFE_INTEGER];
  const streams = new Set(seeds.map((seed) => draws(new Prng(seed), 8).join(",")));
  assert.equal(streams.size, seeds.length);
});

Deno.test("Prng: the stream is pinned forever (known answers)", () => {
  // These values pin the seeding and the generator: if this test fails, old seeds no longer
  // replay, which must never happen silently.
  assert.deepEqual(draws(new Prng(0), 4), PINNED_SEED_0);
  assert.deepEqual(draws(new Prng(42), 4), PINNED_SEED_42);
  assert.deepEqual(draws(new Prng(42).fork(7), 4), PINNED_SEED_42_FORK_7);
});

Deno.test("Prng: int bounds are inclusive and every value appears", () => {
  const prng = new Prng(7);
  const counts = new Map<number, number>();
  for (let i = 0; i < 7000; i++) {
    const value = prng.int(-3, 3);
    assert.ok(Number.isInteger(value) && value >= -3 && value <= 3, `out of range: ${value}`);
    counts.set(value, (counts.get(value) ?? 0) + 1);
  }
  for (let value = -3; value <= 3; value++) {
    const count = counts.get(value) ?? 0;
    // Expected 1000 each; a fair generator stays far inside these bounds.
    assert.ok(count > 800 && count < 1200, `value ${value} appeared ${count} times`);
  }
  assert.equal(prng.int(5, 5), 5);
  for (let i = 0; i < 1000; i++) {
    const wide = prng.int(-(2 ** 40), 2 ** 45);
    assert.ok(Number.isSafeInteger(wide) && wide >= -(2 ** 40) && wide <= 2 ** 45);
    const full = prng.int(0, 2 ** 32 - 1);
    assert.ok(full >= 0 && full < 2 ** 32);
  }
  assert.throws(() => prng.int(2, 1), RangeError);
  assert.throws(() => prng.int(0.5, 1), RangeError);
});

Deno.test("Prng: float, chance, exponential, pick, shuffle", () => {
  const prng = new Prng(11);
  for (let i = 0; i < 10_000; i++) {
    const value = prng.float();
    assert.ok(value >= 0 && value < 1);
    assert.equal(prng.chance(0), false);
    assert.equal(prng.chance(1), true);
  }
  assert.throws(() => prng.chance(1.5), RangeError);
  assert.equal(prng.exponential(0), 0);
  let sum = 0;
  for (let i = 0; i < 20_000; i++) sum += prng.exponential(10);
  const mean = sum / 20_000;
  assert.ok(mean > 9.5 && mean < 10.5, `exponential mean ${mean}`);
  assert.throws(() => prng.pick([]), RangeError);
  const seen = new Set<string>();
  for (let i = 0; i < 300; i++) seen.add(prng.pick(["a", "b", "c"]));
  assert.deepEqual([...seen].sort(), ["a", "b", "c"]);
  const items = [1, 2, 3, 4, 5, 6, 7, 8];
  prng.shuffle(items);
  assert.deepEqual(items.slice().sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8]);
});

Deno.test("Prng: a fork depends only on the original seed and the label", () => {
  const fresh = new Prng(99);
  const used = new Prng(99);
  draws(used, 12345);
  used.float();
  assert.deepEqual(draws(fresh.fork(3), 100), draws(used.fork(3), 100));
  // Distinct labels, and the parent itself, give distinct streams.
  const parentStream = draws(new Prng(99), 8).join(",");
  const streams = new Set([parentStream]);
  for (const label of [0, 1, 2, 3, -1, 2 ** 40]) streams.add(draws(fresh.fork(label), 8).join(","));
  assert.equal(streams.size, 7);
  // Drawing from a fork does not move the parent.
  const parent = new Prng(5);
  const child = parent.fork(1);
  draws(child, 50);
  assert.deepEqual(draws(parent, 10), draws(new Prng(5), 10));
});

// ---------------------------------------------------------------- EventQueue

Deno.test("EventQueue: pops in time order, FIFO among equal times (property)", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(
          fc.record({ push: fc.constant(true), time: fc.integer({ min: 0, max: 20 }) }),
          fc.record({ push: fc.constant(false), time: fc.constant(0) }),
        ),
        { maxLength: 300 },
      ),
      (operations) => {
        const queue = new EventQueue<number>();
        // The model: pending (time, id) pairs; the next pop is the smallest time, then smallest id.
        const model: { time: number; id: number }[] = [];
        let nextId = 0;
        for (const operation of operations) {
          if (operation.push) {
            queue.push(operation.time, nextId);
            model.push({ time: operation.time, id: nextId });
            nextId++;
          } else {
            // A stable sort by time keeps insertion order among equal times.
            model.sort((a, b) => a.time - b.time);
            const expected = model.shift();
            const popped = queue.pop();
            if (expected === undefined) {
              assert.equal(popped, undefined);
            } else {
              assert.ok(popped !== undefined);
              assert.equal(popped.time, expected.time);
              assert.equal(popped.item, expected.id);
            }
          }
          assert.equal(queue.size, model.length);
        }
        // Drain what is left and compare with a stable sort.
        model.sort((a, b) => a.time - b.time);
        const drained: { time: number; id: number }[] = [];
        assert.equal(queue.peekTime(), model[0]?.time);
        for (let entry = queue.pop(); entry !== undefined; entry = queue.pop()) {
          drained.push({ time: entry.time, id: entry.item });
        }
        assert.deepEqual(drained, model);
        assert.equal(queue.size, 0);
        assert.equal(queue.peekTime(), undefined);
      },
    ),
    { seed: 1, numRuns: 300 },
  );
});

Deno.test("EventQueue: fractional times and clear", () => {
  const queue = new EventQueue<string>();
  queue.push(2.5, "c");
  queue.push(0.25, "a");
  queue.push(1, "b");
  assert.equal(queue.peekTime(), 0.25);
  assert.equal(queue.pop()?.item, "a");
  queue.clear();
  assert.equal(queue.size, 0);
  assert.equal(queue.pop(), undefined);
  queue.push(3, "x");
  assert.equal(queue.pop()?.item, "x");
  assert.throws(() => queue.push(NaN, "nan"), RangeError);
});

// ---------------------------------------------------------------- Network

const NO_FAULTS: NetworkOptions = {
  delayMin: 3,
  delayMean: 5,
  lossProbability: 0,
  duplicateProbability: 0,
  linkCapacity: Infinity,
};

interface Arrival {
  readonly time: number;
  readonly from: number;
  readonly to: number;
  readonly message: string;
}

/** A network driven by its own event queue, as the simulator does with its larger event type. */
class Harness {
  readonly queue = new EventQueue<Delivery<string>>();
  readonly network: Network<string>;
  readonly arrivals: Arrival[] = [];
  now = 0;

  constructor(options: NetworkOptions, seed: number) {
    this.network = new Network<string>(
      options,
      new Prng(seed),
      (time, delivery) => this.queue.push(time, delivery),
    );
  }

  /** Deliver everything due up to `until` (everything by default). */
  run(until = Infinity): void {
    for (;;) {
      const time = this.queue.peekTime();
      if (time === undefined || time > until) break;
      const entry = this.queue.pop();
      if (entry === undefined) break;
      this.now = entry.time;
      const delivery = entry.item;
      if (this.network.onDeliver(delivery)) {
        this.arrivals.push({
          time: entry.time,
          from: delivery.from,
          to: delivery.to,
          message: delivery.message,
        });
      }
    }
  }

  /** Every message sent is accounted for once the queue is drained. */
  assertBalanced(): void {
    const stats = this.network.stats;
    const dropped = stats.dropped.loss + stats.dropped.partition + stats.dropped.overflow +
      stats.dropped.down;
    assert.equal(stats.sent + stats.duplicated, stats.delivered + dropped + this.queue.size);
  }
}

/** Send `count` messages round-robin among `nodes`, one per time unit, then deliver them all. */
function exchange(harness: Harness, nodes: readonly number[], count: number): void {
  for (let i = 0; i < count; i++) {
    const from = nodes[i % nodes.length] as number;
    const to = nodes[(i * 7 + 1) % nodes.length] as number;
    harness.network.send(from, to, `m${i}`, i);
    harness.run(i);
  }
  harness.run();
}

Deno.test("Network: without faults every message arrives exactly once, after delayMin", () => {
  const harness = new Harness(NO_FAULTS, 1);
  const sentAt = new Map<string, number>();
  for (let i = 0; i < 500; i++) {
    const message = `m${i}`;
    sentAt.set(message, i);
    harness.network.send(i % 5, (i * 3) % 5, message, i);
    harness.run(i);
  }
  harness.run();
  assert.equal(harness.arrivals.length, 500);
  const seen = new Set<string>();
  let reordered = false;
  let previous = -1;
  for (const arrival of harness.arrivals) {
    assert.ok(!seen.has(arrival.message), `duplicate ${arrival.message}`);
    seen.add(arrival.message);
    const sent = sentAt.get(arrival.message);
    assert.ok(sent !== undefined);
    assert.ok(arrival.time - sent >= NO_FAULTS.delayMin);
    assert.ok(Number.isInteger(arrival.time));
    const index = Number(arrival.message.slice(1));
    if (index < previous) reordered = true;
    previous = index;
  }
  assert.ok(reordered, "an exponential extra delay should reorder some messages");
  assert.equal(harness.network.stats.delivered, 500);
  harness.assertBalanced();
});

Deno.test("Network: a constant delay (delayMean 0) delivers exactly delayMin later, in order", () => {
  const harness = new Harness({ ...NO_FAULTS, delayMean: 0 }, 2);
  for (let i = 0; i < 50; i++) harness.network.send(0, 1, `m${i}`, 10);
  harness.run();
  assert.deepEqual(
    harness.arrivals.map((arrival) => [arrival.time, arrival.message]),
    Array.from({ length: 50 }, (_, i) => [13, `m${i}`]),
  );
});

Deno.test("Network: loss 1 delivers nothing", () => {
  const harness = new Harness({ ...NO_FAULTS, lossProbability: 1 }, 3);
  exchange(harness, [0, 1, 2], 200);
  assert.equal(harness.arrivals.length, 0);
  assert.equal(harness.network.stats.dropped.loss, 200);
  harness.assertBalanced();
});

Deno.test("Network: duplicates are delivered and counted", () => {
  const harness = new Harness({ ...NO_FAULTS, duplicateProbability: 0.5 }, 4);
  exchange(harness, [0, 1, 2], 400);
  const stats = harness.network.stats;
  assert.ok(stats.duplicated > 100 && stats.duplicated < 300, `duplicated ${stats.duplicated}`);
  assert.equal(harness.arrivals.length, 400 + stats.duplicated);
  assert.equal(stats.delivered, 400 + stats.duplicated);
  const perMessage = new Map<string, number>();
  for (const arrival of harness.arrivals) {
    perMessage.set(arrival.message, (perMessage.get(arrival.message) ?? 0) + 1);
  }
  assert.equal(perMessage.size, 400);
  for (const count of perMessage.values()) assert.ok(count === 1 || count === 2);
  harness.assertBalanced();
});

Deno.test("Network: linkCapacity 1 drops a second concurrent message as overflow", () => {
  const harness = new Harness({ ...NO_FAULTS, linkCapacity: 1 }, 5);
  const network = harness.network;
  network.send(0, 1, "first", 0);
  network.send(0, 1, "second", 0);
  assert.equal(network.stats.dropped.overflow, 1);
  // Other directed links have their own capacity.
  network.send(1, 0, "reverse", 0);
  network.send(0, 2, "elsewhere", 0);
  assert.equal(network.stats.dropped.overflow, 1);
  harness.run();
  assert.deepEqual(harness.arrivals.map((arrival) => arrival.message).sort(), [
    "elsewhere",
    "first",
    "reverse",
  ]);
  // Once the first message arrived, the link has room again.
  network.send(0, 1, "third", harness.now);
  harness.run();
  assert.equal(harness.arrivals.at(-1)?.message, "third");
  assert.equal(network.stats.dropped.overflow, 1);
  harness.assertBalanced();
});

Deno.test("Network: a duplicate needs room on the link", () => {
  const harness = new Harness({ ...NO_FAULTS, duplicateProbability: 1, linkCapacity: 1 }, 5);
  for (let i = 0; i < 20; i++) {
    harness.network.send(0, 1, `m${i}`, harness.now);
    harness.run();
  }
  assert.equal(harness.network.stats.duplicated, 0);
  assert.equal(harness.arrivals.length, 20);
  const roomy = new Harness({ ...NO_FAULTS, duplicateProbability: 1, linkCapacity: 2 }, 5);
  roomy.network.send(0, 1, "twice", 0);
  roomy.run();
  assert.deepEqual(roomy.arrivals.map((arrival) => arrival.message), ["twice", "twice"]);
  assert.equal(roomy.network.stats.duplicated, 1);
  roomy.assertBalanced();
});

Deno.test("Network: cutOneWay blocks only one direction", () => {
  const harness = new Harness(NO_FAULTS, 6);
  const network = harness.network;
  network.cutOneWay(0, 1);
  assert.ok(network.isCut(0, 1));
  assert.ok(!network.isCut(1, 0));
  assert.equal(network.stats.partitions, 1);
  network.cutOneWay(0, 1);
  assert.equal(network.stats.partitions, 1, "a cut that changes nothing is not counted");
  network.send(0, 1, "blocked", 0);
  network.send(1, 0, "passes", 0);
  harness.run();
  assert.deepEqual(harness.arrivals.map((arrival) => arrival.message), ["passes"]);
  assert.equal(network.stats.dropped.partition, 1);
  harness.assertBalanced();
});

Deno.test("Network: a cut made while a message is in flight drops it at arrival", () => {
  const harness = new Harness(NO_FAULTS, 7);
  const network = harness.network;
  network.send(0, 1, "in flight", 0);
  network.cutOneWay(0, 1);
  harness.run();
  assert.equal(harness.arrivals.length, 0);
  assert.equal(network.stats.dropped.partition, 1);
  harness.assertBalanced();
});

Deno.test("Network: isolate cuts a node off both ways, heal restores everything", () => {
  const harness = new Harness(NO_FAULTS, 8);
  const network = harness.network;
  const nodes = [0, 1, 2, 3, 4];
  network.isolate(2, nodes);
  assert.equal(network.stats.partitions, 1);
  for (const a of nodes) {
    for (const b of nodes) {
      const expected = a !== b && (a === 2 || b === 2);
      assert.equal(network.isCut(a, b), expected, `${a}→${b}`);
    }
  }
  network.send(2, 0, "out", 0);
  network.send(0, 2, "in", 0);
  network.send(0, 1, "others", 0);
  network.send(2, 2, "self", 0);
  harness.run();
  assert.deepEqual(harness.arrivals.map((arrival) => arrival.message).sort(), ["others", "self"]);
  network.heal();
  for (const a of nodes) for (const b of nodes) assert.ok(!network.isCut(a, b));
  network.send(2, 0, "healed", harness.now);
  harness.run();
  assert.equal(harness.arrivals.at(-1)?.message, "healed");
  harness.assertBalanced();
});

Deno.test("Network: splitHalves cuts between two non-empty sides", () => {
  const nodes = [0, 1, 2, 3, 4, 5, 6];
  const sizes = new Set<number>();
  for (let seed = 0; seed < 60; seed++) {
    const network = new Network<string>(NO_FAULTS, new Prng(seed), () => {});
    network.splitHalves(nodes);
    assert.equal(network.stats.partitions, 1);
    // Two nodes are on the same side exactly when the link between them is not cut.
    const side = nodes.filter((node) => !network.isCut(0, node));
    const other = nodes.filter((node) => network.isCut(0, node));
    assert.ok(side.length > 0 && other.length > 0);
    for (const a of nodes) {
      for (const b of nodes) {
        const sameSide = side.includes(a) === side.includes(b);
        assert.equal(network.isCut(a, b), !sameSide, `${a}→${b}`);
      }
    }
    sizes.add(side.length);
  }
  assert.ok(sizes.size > 2, "side sizes should vary with the seed");
  const network = new Network<string>(NO_FAULTS, new Prng(0), () => {});
  assert.throws(() => network.splitHalves([3]), RangeError);
  assert.throws(() => network.splitHalves([1, 1]), RangeError);
});

Deno.test("Network: a down node sends nothing and receives nothing", () => {
  const harness = new Harness(NO_FAULTS, 9);
  const network = harness.network;
  network.send(0, 1, "before crash", 0);
  network.setNodeUp(1, false);
  network.send(1, 0, "from down", 0);
  network.send(0, 1, "to down", 0);
  harness.run();
  assert.equal(harness.arrivals.length, 0);
  assert.equal(network.stats.dropped.down, 3);
  network.setNodeUp(1, true);
  network.send(0, 1, "after restart", harness.now);
  harness.run();
  assert.deepEqual(harness.arrivals.map((arrival) => arrival.message), ["after restart"]);
  harness.assertBalanced();
});

Deno.test("Network: setFaultsEnabled(false) stops loss, duplication and overflow", () => {
  const faulty: NetworkOptions = {
    delayMin: 1,
    delayMean: 4,
    lossProbability: 0.9,
    duplicateProbability: 0.9,
    linkCapacity: 2,
  };
  const harness = new Harness(faulty, 10);
  harness.network.setFaultsEnabled(false);
  for (let i = 0; i < 300; i++) harness.network.send(0, 1, `m${i}`, 0);
  harness.run();
  const stats = harness.network.stats;
  assert.equal(harness.arrivals.length, 300);
  assert.equal(stats.duplicated, 0);
  assert.deepEqual(stats.dropped, { loss: 0, partition: 0, overflow: 0, down: 0 });
  // Delays still apply.
  assert.ok(harness.arrivals.every((arrival) => arrival.time >= 1));
  assert.ok(new Set(harness.arrivals.map((arrival) => arrival.time)).size > 1);
  // And faults come back when enabled again.
  harness.network.setFaultsEnabled(true);
  exchange(harness, [0, 1], 300);
  assert.ok(stats.dropped.loss > 0 && stats.duplicated > 0);
  harness.assertBalanced();
});

Deno.test("Network: the same seed gives the same delivery schedule", () => {
  const options: NetworkOptions = {
    delayMin: 1,
    delayMean: 6,
    lossProbability: 0.1,
    duplicateProbability: 0.1,
    linkCapacity: 4,
  };
  function schedule(seed: number): Arrival[] {
    const harness = new Harness(options, seed);
    const nodes = [0, 1, 2, 3, 4, 100, 101];
    for (let i = 0; i < 2000; i++) {
      if (i === 500) harness.network.splitHalves(nodes);
      if (i === 900) harness.network.heal();
      if (i === 1200) harness.network.cutOneWay(1, 2);
      const from = nodes[(i * 5) % nodes.length] as number;
      const to = nodes[(i * 3 + 2) % nodes.length] as number;
      harness.network.send(from, to, `m${i}`, i);
      harness.run(i);
    }
    harness.run();
    harness.assertBalanced();
    return harness.arrivals;
  }
  const first = schedule(1234);
  assert.ok(first.length > 1000);
  assert.deepEqual(schedule(1234), first);
  assert.notDeepEqual(schedule(1235), first);
});

Deno.test("Network: invalid options and node identifiers are rejected", () => {
  const make = (options: NetworkOptions) => new Network<string>(options, new Prng(0), () => {});
  assert.throws(() => make({ ...NO_FAULTS, delayMin: 0 }), RangeError);
  assert.throws(() => make({ ...NO_FAULTS, delayMean: -1 }), RangeError);
  assert.throws(() => make({ ...NO_FAULTS, lossProbability: 2 }), RangeError);
  assert.throws(() => make({ ...NO_FAULTS, duplicateProbability: NaN }), RangeError);
  assert.throws(() => make({ ...NO_FAULTS, linkCapacity: 1.5 }), RangeError);
  const network = make(NO_FAULTS);
  assert.throws(() => network.send(-1, 0, "x", 0), RangeError);
  assert.throws(() => network.send(0, 1.5, "x", 0), RangeError);
  assert.throws(() => network.send(0, 1 << 20, "x", 0), RangeError);
});

// Recorded from the implementation once and never to be changed; see the known-answer test.
const PINNED_SEED_0 = [3737715805, 2584255861, 2876756834, 3286328325];
const PINNED_SEED_42 = [1776835114, 4165204688, 17111135, 2317295270];
const PINNED_SEED_42_FORK_7 = [3400034564, 1681441912, 3577345066, 4037538938];
