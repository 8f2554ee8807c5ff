import { strict as assert } from "node:assert";
import fc from "fast-check";
import {
  checkLinearizable,
  describeOperation,
  type HistoryOperation,
  type KvCall,
} from "../src/sim/linearizability.ts";

// ---------------------------------------------------------------- helpers

const GET: KvCall = { kind: "get" };
const DEL: KvCall = { kind: "del" };

function set(value: string): KvCall {
  return { kind: "set", value };
}

/** A definite operation; `returnTime` and `output` describe the answer the client got. */
function op(
  clientId: number,
  key: string,
  call: KvCall,
  invokeTime: number,
  returnTime: number,
  output: string | number | null,
): HistoryOperation {
  return { clientId, key, call, invokeTime, returnTime, output };
}

/** An operation whose client never got an answer. */
function indefinite(
  clientId: number,
  key: string,
  call: KvCall,
  invokeTime: number,
): HistoryOperation {
  return { clientId, key, call, invokeTime, returnTime: undefined, output: null };
}

function assertFailure(
  history: readonly HistoryOperation[],
  key: string,
  firstUnlinearizable: HistoryOperation,
): void {
  const result = checkLinearizable(history);
  assert.equal(result.ok, false, "expected the history to be rejected");
  if (result.ok) return;
  assert.equal(result.key, key);
  assert.equal(result.firstUnlinearizable, firstUnlinearizable);
}

function assertLinearizable(history: readonly HistoryOperation[]): void {
  const result = checkLinearizable(history);
  assert.equal(result.ok, true, result.ok ? "" : result.message);
}

/**
 * An obviously correct but exponential checker: try every order of the operations that respects
 * real time, over all keys at once (so it also checks the split by key), where an indefinite
 * operation may also be left out. Leaving an operation out is the same as placing it last, so the
 * search succeeds as soon as only indefinite operations remain.
 */
function bruteForce(history: readonly HistoryOperation[]): boolean {
  const returnOf = (o: HistoryOperation): number => o.returnTime ?? Infinity;
  const search = (remaining: readonly HistoryOperation[], store: Map<string, string>): boolean => {
    if (remaining.every((o) => o.returnTime === undefined)) return true;
    return remaining.some((candidate, index) => {
      // Whatever returned strictly before the candidate was invoked must come first.
      if (remaining.some((other) => returnOf(other) < candidate.invokeTime)) return false;
      const value = store.get(candidate.key) ?? null;
      const definite = candidate.returnTime !== undefined;
      const after = new Map(store);
      switch (candidate.call.kind) {
        case "get":
          if (definite && candidate.output !== value) return false;
          break;
        case "set":
          if (definite && candidate.output !== candidate.call.value) return false;
          after.set(candidate.key, candidate.call.value);
          break;
        case "del":
          if (definite && candidate.output !== (value === null ? 0 : 1)) return false;
          after.delete(candidate.key);
          break;
      }
      return search(remaining.filter((_, i) => i !== index), after);
    });
  };
  return search(history, new Map());
}

/** The raw material of one operation of a simulated execution. */
interface OperationPlan {
  readonly client: number;
  readonly key: string;
  readonly call: KvCall;
  /** Time the client waits after its previous answer. */
  readonly gap: number;
  /** Time from invocation to the instant the store executes the operation. */
  readonly executeDelay: number;
  /** Time from execution to the answer. */
  readonly answerDelay: number;
  readonly answered: boolean;
  /** For an unanswered operation: whether the store executed it anyway. */
  readonly executed: boolean;
}

interface Mutation {
  readonly index: number;
  readonly output: string | number | null;
}

const VALUES = ["a", "b", "c", "d", "e", "f"] as const;
const KEYS = ["k0", "k1"] as const;

/**
 * Build the history of a real execution of `plans` against a sequential store, so that it is
 * linearizable, then replace one output by `mutation`, which often makes it not linearizable.
 */
function simulateHistory(
  plans: readonly OperationPlan[],
  mutation: Mutation | null,
): HistoryOperation[] {
  const clientClock = new Map<number, number>();
  const timed = plans.map((plan, index) => {
    const invokeTime = (clientClock.get(plan.client) ?? 0) + plan.gap;
    const executeTime = invokeTime + plan.executeDelay;
    const returnTime = executeTime + plan.answerDelay;
    // A client that got no answer gave up at some point and went on with its next request.
    clientClock.set(plan.client, plan.answered ? returnTime : executeTime);
    return { plan, index, invokeTime, executeTime, returnTime };
  });
  const outputs = new Map<number, string | number | null>();
  const store = new Map<string, string>();
  const byExecution = [...timed].sort((a, b) => a.executeTime - b.executeTime || a.index - b.index);
  for (const { plan, index } of byExecution) {
    if (!plan.answered && !plan.executed) continue;
    switch (plan.call.kind) {
      case "get":
        outputs.set(index, store.get(plan.key) ?? null);
        break;
      case "set":
        store.set(plan.key, plan.call.value);
        outputs.set(index, plan.call.value);
        break;
      case "del":
        outputs.set(index, store.delete(plan.key) ? 1 : 0);
        break;
    }
  }
  return timed.map(({ plan, index, invokeTime, returnTime }) => ({
    clientId: plan.client,
    key: plan.key,
    call: plan.call,
    invokeTime,
    returnTime: plan.answered ? returnTime : undefined,
    output: mutation !== null && mutation.index % plans.length === index
      ? mutation.output
      : outputs.get(index) ?? null,
  }));
}

interface SmallHistoryShape {
  readonly lengthMax: number;
  /** One operation in this many goes unanswered. */
  readonly unansweredOneIn: number;
  /** How many distinct values sets write; few values make identical writes frequent. */
  readonly valueCount: number;
}

/**
 * Small histories of real executions over one or two keys and one to three clients, with small
 * integer times so that touching and equal times are frequent. Two histories in three get a
 * mutated output, and some mutations change nothing, so about half of them are linearizable.
 */
function smallHistory(shape: SmallHistoryShape): fc.Arbitrary<HistoryOperation[]> {
  const values = VALUES.slice(0, shape.valueCount);
  const call: fc.Arbitrary<KvCall> = fc.oneof(
    fc.constant(GET),
    fc.constantFrom(...values).map(set),
    fc.constant(DEL),
  );
  const plan = (clients: number, keys: number): fc.Arbitrary<OperationPlan> =>
    fc.record({
      client: fc.integer({ min: 1, max: clients }),
      key: fc.constantFrom(...KEYS.slice(0, keys)),
      call,
      gap: fc.integer({ min: 0, max: 3 }),
      executeDelay: fc.integer({ min: 0, max: 3 }),
      answerDelay: fc.integer({ min: 0, max: 3 }),
      answered: fc.integer({ min: 1, max: shape.unansweredOneIn }).map((n) => n !== 1),
      executed: fc.boolean(),
    });
  const mutation: fc.Arbitrary<Mutation | null> = fc.option(
    fc.record({
      index: fc.nat(),
      output: fc.oneof(fc.constantFrom(...values), fc.constant(null), fc.constantFrom(0, 1)),
    }),
    { freq: 3 },
  );
  return fc
    .record({ clients: fc.integer({ min: 1, max: 3 }), keys: fc.integer({ min: 1, max: 2 }) })
    .chain(({ clients, keys }) =>
      fc.tuple(
        fc.array(plan(clients, keys), { minLength: 1, maxLength: shape.lengthMax }),
        mutation,
      )
    )
    .map(([plans, mutation]) => simulateHistory(plans, mutation));
}

const SMALL_HISTORY = smallHistory({ lengthMax: 7, unansweredOneIn: 6, valueCount: 3 });

/**
 * Small histories with arbitrary times and outputs, not from any execution, to reach the shapes
 * that a simulated execution makes rare.
 */
const ARBITRARY_HISTORY: fc.Arbitrary<HistoryOperation[]> = fc.array(
  fc.record({
    clientId: fc.integer({ min: 1, max: 3 }),
    key: fc.constantFrom(...KEYS),
    call: fc.oneof(
      fc.constant(GET),
      fc.constantFrom(...VALUES.slice(0, 4)).map(set),
      fc.constant(DEL),
    ),
    invokeTime: fc.integer({ min: 0, max: 8 }),
    duration: fc.option(fc.integer({ min: 0, max: 5 }), { freq: 3 }),
    output: fc.oneof(
      fc.constantFrom(...VALUES.slice(0, 4)),
      fc.constant(null),
      fc.constantFrom(0, 1),
    ),
    setAnswersItsValue: fc.integer({ min: 0, max: 2 }).map((n) => n !== 0),
  }).map(({ clientId, key, call, invokeTime, duration, output, setAnswersItsValue }) => ({
    clientId,
    key,
    call,
    invokeTime,
    returnTime: duration === null ? undefined : invokeTime + duration,
    // A set answering anything but its value fails at once, which teaches little.
    output: call.kind === "set" && setAnswersItsValue ? call.value : output,
  })),
  { minLength: 1, maxLength: 8 },
);

/** A small deterministic generator (mulberry32), so that the large history is the same each run. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A history of 5,000 operations on 5 keys from 4 clients, from a real execution: every operation
 * takes effect at a store-wide instant, and its interval reaches back and forward a little around
 * it, so that neighbouring operations of other clients overlap. One operation in fifty gets no
 * answer, and half of those take effect anyway.
 */
function largeHistory(): HistoryOperation[] {
  const random = seededRandom(7);
  const pick = <T>(items: readonly T[], fallback: T): T =>
    items[Math.floor(random() * items.length)] ?? fallback;
  const keys = ["k0", "k1", "k2", "k3", "k4"];
  const clients = [1, 2, 3, 4];
  const clientClock = new Map<number, number>();
  const store = new Map<string, string>();
  const history: HistoryOperation[] = [];
  let now = 0;
  for (let n = 0; n < 5_000; n++) {
    const clientId = pick(clients, 1);
    const key = pick(keys, "k0");
    // The store executes the operation once the client has sent it.
    now = Math.max(now + 1 + Math.floor(random() * 3), clientClock.get(clientId) ?? 0);
    const invokeTime = Math.max(clientClock.get(clientId) ?? 0, now - Math.floor(random() * 6));
    const returnTime = now + Math.floor(random() * 6);
    const answered = random() >= 0.02;
    // A client that gets no answer times out and goes on.
    clientClock.set(clientId, returnTime + 1);
    const executed = answered || random() < 0.5;
    const roll = random();
    let call: KvCall;
    let output: string | number | null;
    if (roll < 0.5) {
      call = GET;
      output = store.get(key) ?? null;
    } else if (roll < 0.9) {
      const value = `v${n}`;
      call = set(value);
      output = value;
      if (executed) store.set(key, value);
    } else {
      call = DEL;
      output = store.has(key) ? 1 : 0;
      if (executed) store.delete(key);
    }
    history.push(
      answered
        ? { clientId, key, call, invokeTime, returnTime, output }
        : { clientId, key, call, invokeTime, returnTime: undefined, output: null },
    );
  }
  return history;
}

// ---------------------------------------------------------------- agreement with brute force

Deno.test("checkLinearizable agrees with a brute-force search on small histories", () => {
  fc.assert(
    fc.property(SMALL_HISTORY, (history) => {
      assert.equal(checkLinearizable(history).ok, bruteForce(history));
    }),
    { numRuns: 2_000 },
  );
});

Deno.test("checkLinearizable agrees with a brute-force search when many answers are lost", () => {
  const history = smallHistory({ lengthMax: 8, unansweredOneIn: 3, valueCount: 6 });
  fc.assert(
    fc.property(history, (history) => {
      assert.equal(checkLinearizable(history).ok, bruteForce(history));
    }),
    { numRuns: 2_000 },
  );
});

Deno.test("checkLinearizable agrees with a brute-force search on arbitrary histories", () => {
  fc.assert(
    fc.property(ARBITRARY_HISTORY, (history) => {
      assert.equal(checkLinearizable(history).ok, bruteForce(history));
    }),
    { numRuns: 2_000 },
  );
});

Deno.test("the small history generator yields both linearizable and non-linearizable histories", () => {
  const samples = fc.sample(SMALL_HISTORY, { numRuns: 1_000, seed: 42 });
  const linearizable = samples.filter(bruteForce).length;
  assert.ok(linearizable > 250 && linearizable < 750, `${linearizable} of 1000 linearizable`);
});

// ---------------------------------------------------------------- non-linearizable histories

Deno.test("checkLinearizable rejects a stale read after a completed write", () => {
  const write = op(1, "k", set("x"), 0, 10, "x");
  const read = op(2, "k", GET, 20, 30, null);
  assertFailure([write, read], "k", read);
});

Deno.test("checkLinearizable rejects a read of a value never written", () => {
  const write = op(1, "k", set("x"), 0, 10, "x");
  const read = op(2, "k", GET, 5, 30, "y");
  assertFailure([write, read], "k", read);
});

Deno.test("checkLinearizable rejects sequential gets seeing the new value then the old one", () => {
  const write = op(1, "k", set("x"), 0, 100, "x");
  const newRead = op(2, "k", GET, 10, 20, "x");
  const oldRead = op(3, "k", GET, 30, 40, null);
  assertFailure([write, newRead, oldRead], "k", oldRead);
});

Deno.test("checkLinearizable rejects a del that removes a missing key", () => {
  const write = op(1, "k", set("x"), 0, 10, "x");
  const firstDel = op(1, "k", DEL, 20, 30, 1);
  const secondDel = op(2, "k", DEL, 40, 50, 1);
  assertFailure([write, firstDel, secondDel], "k", secondDel);
});

Deno.test("checkLinearizable rejects a lost write", () => {
  const first = op(1, "k", set("x"), 0, 10, "x");
  const second = op(2, "k", set("y"), 20, 30, "y");
  const read = op(1, "k", GET, 40, 50, "x");
  assertFailure([first, second, read], "k", read);
});

Deno.test("checkLinearizable reports the longest linearizable prefix", () => {
  const first = op(1, "k", set("x"), 0, 10, "x");
  const second = op(2, "k", set("y"), 20, 30, "y");
  const read = op(1, "k", GET, 40, 50, "x");
  const result = checkLinearizable([first, second, read]);
  assert.equal(result.ok, false);
  if (result.ok) return;
  assert.deepEqual(result.longestPrefix, [first, second]);
});

Deno.test("checkLinearizable explains a failure naming the key, the operation and the prefix", () => {
  const history = [
    op(1, "k1", set("a"), 0, 10, "a"),
    op(1, "k1", set("b"), 20, 30, "b"),
    op(1, "k1", set("c"), 40, 50, "c"),
    op(1, "k1", set("d"), 60, 70, "d"),
    op(3, "k1", GET, 120, 130, "a"),
  ];
  const result = checkLinearizable(history);
  assert.equal(result.ok, false);
  if (result.ok) return;
  assert.equal(
    result.message,
    'key "k1": operation #4 (client 3, get -> "a" invoked at 120, returned 130) cannot be ' +
      "linearized; longest linearizable prefix has 4 operations: ..., " +
      '#1 (client 1, set "b" invoked at 20, returned 30), ' +
      '#2 (client 1, set "c" invoked at 40, returned 50), ' +
      '#3 (client 1, set "d" invoked at 60, returned 70) ' +
      "(operations are numbered by their index in the history).",
  );
});

// ---------------------------------------------------------------- linearizable histories

Deno.test("checkLinearizable accepts a get concurrent with a set returning the old value", () => {
  assertLinearizable([op(1, "k", set("x"), 0, 10, "x"), op(2, "k", GET, 5, 15, null)]);
});

Deno.test("checkLinearizable accepts a get concurrent with a set returning the new value", () => {
  assertLinearizable([op(1, "k", set("x"), 0, 10, "x"), op(2, "k", GET, 5, 15, "x")]);
});

Deno.test("checkLinearizable treats operations touching in time as concurrent", () => {
  assertLinearizable([op(1, "k", set("x"), 0, 10, "x"), op(2, "k", GET, 10, 15, null)]);
});

Deno.test("checkLinearizable accepts an indefinite set whose effect is seen later", () => {
  assertLinearizable([
    op(1, "k", set("x"), 0, 10, "x"),
    indefinite(2, "k", set("y"), 20),
    op(1, "k", GET, 30, 40, "x"),
    op(1, "k", GET, 50, 60, "y"),
  ]);
});

Deno.test("checkLinearizable accepts an indefinite set whose effect is never seen", () => {
  assertLinearizable([
    op(1, "k", set("x"), 0, 10, "x"),
    indefinite(2, "k", set("y"), 20),
    op(1, "k", GET, 30, 40, "x"),
    op(1, "k", DEL, 50, 60, 1),
  ]);
});

Deno.test("checkLinearizable ignores an indefinite get", () => {
  const result = checkLinearizable([
    op(1, "k", set("x"), 0, 10, "x"),
    { ...indefinite(2, "k", GET, 20), output: "never written" },
  ]);
  assert.deepEqual(result, { ok: true, keysChecked: 1, operationsChecked: 2 });
});

Deno.test("checkLinearizable accepts an indefinite set read on both sides of a read of the old value", () => {
  // The set must go between the read of null and the two reads of "a", all at time 1.
  assertLinearizable([
    indefinite(1, "k", set("a"), 1),
    op(2, "k", GET, 0, 1, "a"),
    op(1, "k", GET, 1, 1, null),
    op(1, "k", GET, 1, 1, "a"),
  ]);
});

Deno.test("checkLinearizable accepts indefinite sets explaining a del and then a read", () => {
  // One of the sets must precede the del and a set of "b" must follow it.
  assertLinearizable([
    indefinite(1, "k", set("b"), 0),
    op(1, "k", DEL, 0, 0, 1),
    indefinite(1, "k", set("a"), 0),
    indefinite(1, "k", set("b"), 0),
    op(1, "k", GET, 1, 1, "b"),
  ]);
});

Deno.test("checkLinearizable accepts an indefinite set read only after a del it precedes", () => {
  // "c" must be set after the del, and the del needs "a" set before it.
  assertLinearizable([
    indefinite(1, "k", set("a"), 0),
    op(1, "k", GET, 0, 0, "a"),
    indefinite(1, "k", set("c"), 0),
    op(1, "k", DEL, 0, 0, 1),
    op(1, "k", GET, 1, 1, "c"),
  ]);
});

Deno.test("checkLinearizable rejects an indefinite set seen before its invocation", () => {
  const read = op(1, "k", GET, 0, 10, "y");
  assertFailure([read, indefinite(2, "k", set("y"), 20)], "k", read);
});

Deno.test("checkLinearizable accepts an empty history", () => {
  assert.deepEqual(checkLinearizable([]), { ok: true, keysChecked: 0, operationsChecked: 0 });
});

Deno.test("checkLinearizable accepts a large mostly sequential history", () => {
  const result = checkLinearizable(largeHistory());
  assert.equal(result.ok, true, result.ok ? "" : result.message);
});

Deno.test("checkLinearizable rejects a large history ending with a read of a value never written", () => {
  const history = largeHistory();
  const end = Math.max(...history.map((o) => o.returnTime ?? o.invokeTime));
  const badRead = op(1, "k2", GET, end + 1, end + 2, "never written");
  assertFailure([...history, badRead], "k2", badRead);
});

// ---------------------------------------------------------------- keys and limits

Deno.test("checkLinearizable reports the key whose sub-history is not linearizable", () => {
  const staleRead = op(2, "b", GET, 20, 30, null);
  const history = [
    op(1, "a", set("x"), 0, 10, "x"),
    op(1, "b", set("y"), 0, 10, "y"),
    op(2, "a", GET, 20, 30, "x"),
    staleRead,
  ];
  assertFailure(history, "b", staleRead);
});

Deno.test("checkLinearizable reports the first failing key in sorted order", () => {
  const badB = op(2, "b", GET, 0, 10, "never written");
  const badA = op(2, "a", GET, 0, 10, "never written");
  assertFailure([badB, badA], "a", badA);
});

Deno.test("checkLinearizable throws when the search exceeds its step bound", () => {
  const history = Array.from({ length: 8 }, (_, i) => op(i, "k", set(`v${i}`), 0, 100, `v${i}`));
  assert.throws(
    () =>
      checkLinearizable([...history, op(9, "k", GET, 200, 300, "never written")], {
        searchStepsMax: 10,
      }),
    /search too large/,
  );
});

Deno.test("checkLinearizable throws on an operation returning before its invocation", () => {
  assert.throws(() => checkLinearizable([op(1, "k", GET, 10, 5, null)]), RangeError);
});

// ---------------------------------------------------------------- describeOperation

Deno.test("describeOperation formats a definite set", () => {
  assert.equal(
    describeOperation(op(3, "k", set("x"), 120, 130, "x")),
    'client 3, set "x" invoked at 120, returned 130',
  );
});

Deno.test("describeOperation formats a get with its answer", () => {
  assert.equal(
    describeOperation(op(1, "k", GET, 1, 2, null)),
    "client 1, get -> null invoked at 1, returned 2",
  );
});

Deno.test("describeOperation formats an indefinite del", () => {
  assert.equal(
    describeOperation(indefinite(2, "k", DEL, 7)),
    "client 2, del invoked at 7, no answer",
  );
});
