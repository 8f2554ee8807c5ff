/**
 * A linearizability checker for the key-value histories that the simulator records.
 *
 * The search is the one of Wing & Gong as improved by Lowe and used by Porcupine ("Faster
 * linearizability checking via P-compositionality", Horn & Kroening 2015) and Knossos: the calls
 * and returns of the operations form a doubly linked list in time order; the search linearizes
 * ("lifts") any call that comes before the first pending return and whose recorded output the
 * model accepts, and backtracks when it meets a return whose operation it has not linearized. A
 * cache of visited (set of linearized operations, model state) pairs keeps the search from
 * exploring the same configuration twice, which makes it close to linear on the mostly
 * sequential histories that a simulator produces.
 *
 * Operations on distinct keys commute and a register is a local object, so the history is
 * linearizable if and only if the sub-history of every key is (P-compositionality): each key is
 * checked on its own, which keeps every search small.
 *
 * Indefinite operations (no answer) may take effect at any time after their invocation, so
 * `checkKey` adds a few refinements, argued there, that keep them from multiplying the search.
 * A linearizable history is usually confirmed along one path of the search; a history that is
 * not linearizable needs the search to be exhaustive up to the violation, which takes seconds for
 * thousands of highly concurrent operations on one key with many unanswered ones.
 *
 * @module
 */

/** What a client asked for, on one key. */
export type KvCall =
  | { readonly kind: "get" }
  | { readonly kind: "set"; readonly value: string }
  | { readonly kind: "del" };

/** One operation of a client history. */
export interface HistoryOperation {
  readonly clientId: number;
  readonly key: string;
  readonly call: KvCall;
  /** When the client sent it (any monotonic time unit). */
  readonly invokeTime: number;
  /** When the client got the answer; undefined for an indefinite operation (no answer: timeout, crashed client). */
  readonly returnTime: number | undefined;
  /** The answer: for get, the value or null (missing key); for set, the value set; for del, the number of keys removed (0 or 1). Ignored when returnTime is undefined. */
  readonly output: string | number | null;
}

export type LinearizabilityResult =
  | {
    readonly ok: true;
    readonly keysChecked: number;
    /** Every operation of the history, including those the checker could dismiss unsearched. */
    readonly operationsChecked: number;
  }
  | {
    readonly ok: false;
    readonly key: string;
    /** The first operation (in invocation order) that could not be linearized. */
    readonly firstUnlinearizable: HistoryOperation;
    /** The longest linearizable prefix found (a sequence of operations in linearization order). */
    readonly longestPrefix: readonly HistoryOperation[];
    /** A one-paragraph human readable explanation naming the key, the op and the prefix. */
    readonly message: string;
  };

/**
 * The default bound on search steps (about half a minute). A simulator history of a few thousand
 * operations needs a few steps per operation when it is linearizable and rarely more than a few
 * million when it is not, so reaching this bound means the history is too concurrent or too long
 * to be checked, not that it is wrong.
 */
export const SEARCH_STEPS_MAX_DEFAULT = 50_000_000;

/** An empty set of operations, shared because most cache entries have no indefinite ones. */
const NO_OPERATIONS: readonly number[] = Object.freeze([]);

/** How many operations at the end of the longest prefix the failure message lists. */
const MESSAGE_PREFIX_TAIL = 3;

/**
 * Check that `history` is linearizable with respect to a key-value store whose keys start absent.
 *
 * Throws a RangeError if an operation's times are not numbers or it returns before it is invoked,
 * and an Error if the search takes more than `searchStepsMax` steps (over all keys together).
 */
export function checkLinearizable(
  history: readonly HistoryOperation[],
  options?: { readonly searchStepsMax?: number },
): LinearizabilityResult {
  validateHistory(history);
  const budget = { steps: 0, stepsMax: options?.searchStepsMax ?? SEARCH_STEPS_MAX_DEFAULT };
  const indicesByKey = new Map<string, number[]>();
  history.forEach((op, index) => {
    const indices = indicesByKey.get(op.key);
    if (indices === undefined) {
      indicesByKey.set(op.key, [index]);
    } else {
      indices.push(index);
    }
  });
  // Sorting the keys makes the reported key independent of the order of the history.
  const keys = [...indicesByKey.keys()].sort();
  for (const key of keys) {
    const failure = checkKey(history, indicesByKey.get(key) ?? [], budget);
    if (failure !== undefined) {
      return {
        ok: false,
        key,
        firstUnlinearizable: operationAt(history, failure.firstUnlinearizable),
        longestPrefix: failure.longestPrefix.map((index) => operationAt(history, index)),
        message: failureMessage(history, key, failure),
      };
    }
  }
  return { ok: true, keysChecked: keys.length, operationsChecked: history.length };
}

/**
 * Format an operation for humans, e.g. `client 3, set "x" invoked at 120, returned 130`. The key
 * is left out because reports name it once for all the operations they list.
 */
export function describeOperation(op: HistoryOperation): string {
  const answered = op.returnTime !== undefined;
  let call: string;
  switch (op.call.kind) {
    case "get":
      call = answered ? `get -> ${formatOutput(op.output)}` : "get";
      break;
    case "set": {
      call = `set ${JSON.stringify(op.call.value)}`;
      // A set's answer is only worth showing when it is not the value set, which is a bug.
      if (answered && op.output !== op.call.value) call += ` -> ${formatOutput(op.output)}`;
      break;
    }
    case "del":
      call = answered ? `del -> ${formatOutput(op.output)}` : "del";
      break;
  }
  const returned = answered ? `returned ${op.returnTime}` : "no answer";
  return `client ${op.clientId}, ${call} invoked at ${op.invokeTime}, ${returned}`;
}

/** What the search of one key found when it failed; operations are indices into the history. */
interface KeyFailure {
  readonly firstUnlinearizable: number;
  readonly longestPrefix: readonly number[];
}

/** The step budget shared by the searches of all keys. */
interface SearchBudget {
  steps: number;
  readonly stepsMax: number;
}

function validateHistory(history: readonly HistoryOperation[]): void {
  history.forEach((op, index) => {
    if (!Number.isFinite(op.invokeTime)) {
      throw new RangeError(
        `operation #${index} has invoke time ${op.invokeTime}; expected a finite number`,
      );
    }
    // The negated comparison also rejects NaN.
    if (op.returnTime !== undefined && !(op.returnTime >= op.invokeTime)) {
      throw new RangeError(
        `operation #${index} returns at ${op.returnTime}, before its invocation at ${op.invokeTime}`,
      );
    }
  });
}

/**
 * Apply `op` to the register state of its key. Returns the next state, or undefined when the
 * recorded output contradicts the state; outputs of indefinite operations are not checked.
 */
function step(state: string | null, op: HistoryOperation): string | null | undefined {
  const definite = op.returnTime !== undefined;
  switch (op.call.kind) {
    case "get":
      return !definite || op.output === state ? state : undefined;
    case "set":
      return !definite || op.output === op.call.value ? op.call.value : undefined;
    case "del":
      return !definite || op.output === (state === null ? 0 : 1) ? null : undefined;
  }
}

/**
 * The operations of one key that the search must place. An indefinite operation can always be
 * linearized last, which is the same as never taking effect, so it only matters when some
 * definite operation could observe it:
 *
 * - an indefinite get changes nothing;
 * - right after an indefinite `set v`, the next operation that is not an indefinite get is either
 *   a write (which hides it) or a definite get returning v or a definite del returning 1; if no
 *   such get or del exists, removing the set from any linearization leaves it valid;
 * - likewise, an indefinite del is only observable by a definite get returning null or a definite
 *   del returning 0.
 *
 * Dropping these operations removes branching that would otherwise double the search space for
 * every timed-out write, which matters most when the history is not linearizable and the search
 * must be exhaustive.
 */
function relevantOperations(
  history: readonly HistoryOperation[],
  indices: readonly number[],
): number[] {
  const getOutputs = new Set<string | number | null>();
  let delReturnedZero = false;
  let delReturnedOne = false;
  for (const index of indices) {
    const op = operationAt(history, index);
    if (op.returnTime === undefined) continue;
    if (op.call.kind === "get") getOutputs.add(op.output);
    if (op.call.kind === "del") {
      if (op.output === 0) delReturnedZero = true;
      if (op.output === 1) delReturnedOne = true;
    }
  }
  return indices.filter((index) => {
    const op = operationAt(history, index);
    if (op.returnTime !== undefined) return true;
    switch (op.call.kind) {
      case "get":
        return false;
      case "set":
        return getOutputs.has(op.call.value) || delReturnedOne;
      case "del":
        return getOutputs.has(null) || delReturnedZero;
    }
  });
}

/**
 * The latest time at which each operation (of one key, in invocation order) must take effect.
 * That is its return time when it has one. An indefinite `set v` that is the only writer of v and
 * whose value some definite get returned must take effect before that get, hence before the
 * earliest return of such a get: bounding it there stops the search from trying it in every
 * position up to the end of the history. Any other indefinite operation is unbounded.
 */
function latestEffectTimes(operations: readonly HistoryOperation[]): number[] {
  const writers = new Map<string, number>();
  const earliestRead = new Map<string, number>();
  for (const op of operations) {
    if (op.call.kind === "set") writers.set(op.call.value, (writers.get(op.call.value) ?? 0) + 1);
    if (op.call.kind === "get" && op.returnTime !== undefined && typeof op.output === "string") {
      earliestRead.set(op.output, Math.min(earliestRead.get(op.output) ?? Infinity, op.returnTime));
    }
  }
  return operations.map((op) => {
    if (op.returnTime !== undefined) return op.returnTime;
    if (op.call.kind !== "set" || writers.get(op.call.value) !== 1) return Infinity;
    // A read that returned before the set was even sent makes the history fail anyway; clamping
    // keeps the return entry after the call entry.
    return Math.max(op.invokeTime, earliestRead.get(op.call.value) ?? Infinity);
  });
}

/** Whether the sorted array `small` is a subset of the sorted array `large`. */
function isSortedSubset(small: readonly number[], large: readonly number[]): boolean {
  let j = 0;
  for (const value of small) {
    while (j < large.length && at(large, j) < value) j++;
    if (j === large.length || at(large, j) !== value) return false;
    j++;
  }
  return true;
}

/**
 * Search a linearization of the operations of one key; undefined when one exists.
 *
 * This is Porcupine's search with refinements that keep indefinite operations, which never
 * return and so stay candidates until the end, from multiplying the search space. They rest on
 * two facts about indefinite operations, each of which turns any linearization into one of the
 * form the search looks for:
 *
 * - An indefinite operation placed right before a set or an indefinite del can be moved to the
 *   end, which is the same as never taking effect: that write hides it, and nothing checks an
 *   indefinite del's output. So the search only places an indefinite operation if the very next
 *   operation it places observes it (a definite get or del).
 * - Two indefinite operations with the same effect and no bound on when they take effect can be
 *   swapped. So the unbounded ones form chains of interchangeable operations in invocation
 *   order, and the search only places the first operation left in a chain.
 *
 * Unbounded operations stay out of the entry list, whose scans they would otherwise lengthen until
 * the end of the history; the search tries the chains only when no call of the entry list fits,
 * and succeeds as soon as every definite operation is placed (the indefinite ones left go last).
 *
 * The cache also skips a configuration when one with the same definite operations, the same
 * state, at least as much freedom for the next operation and a subset of its indefinite
 * operations was visited: a completion of the larger one completes the smaller one too, with the
 * extra indefinite operations placed last, so the smaller one's search covers it.
 *
 * The definite operations are encoded in the cache key sparsely, as the first one not yet
 * linearized (in invocation order) followed by those linearized after it. All operations before
 * the first unlinearized one are linearized, and those after it that are can only be the few
 * invoked before it returned, so the key stays short however long the history is.
 */
function checkKey(
  history: readonly HistoryOperation[],
  keyIndices: readonly number[],
  budget: SearchBudget,
): KeyFailure | undefined {
  // Operations are numbered by rank in invocation order, the order of their call entries.
  const ops = relevantOperations(history, keyIndices).sort((a, b) =>
    operationAt(history, a).invokeTime - operationAt(history, b).invokeTime || a - b
  );
  const operations = ops.map((index) => operationAt(history, index));
  const opCount = operations.length;
  const definite = operations.map((op) => op.returnTime !== undefined);
  const definiteBefore = new Int32Array(opCount + 1);
  definite.forEach((isDefinite, rank) => {
    definiteBefore[rank + 1] = at(definiteBefore, rank) + (isDefinite ? 1 : 0);
  });
  const definiteCount = at(definiteBefore, opCount);
  if (definiteCount === 0) return undefined;
  const observer = operations.map((op, rank) => at(definite, rank) && op.call.kind !== "set");
  const latest = latestEffectTimes(operations);
  const unbounded = latest.map((time) => time === Infinity);

  // The chains of unbounded operations, each in invocation order, with how many of each are
  // placed. Sets of values that no definite get returns are interchangeable whatever their
  // values: only a del returning 1 can observe them, and it sees the same thing.
  const readValues = new Set<string | number | null>();
  operations.forEach((op, rank) => {
    if (op.call.kind === "get" && at(definite, rank)) readValues.add(op.output);
  });
  const chainByEffect = new Map<string, number[]>();
  const chainOf = new Int32Array(opCount).fill(-1);
  operations.forEach((op, rank) => {
    if (!at(unbounded, rank)) return;
    let effect: string = op.call.kind;
    if (op.call.kind === "set" && readValues.has(op.call.value)) effect = "set " + op.call.value;
    const chain = chainByEffect.get(effect) ?? [];
    chainByEffect.set(effect, chain);
    chain.push(rank);
  });
  const chains = [...chainByEffect.values()];
  chains.forEach((chain, index) => {
    for (const rank of chain) chainOf[rank] = index;
  });
  const chainPlaced = new Int32Array(chains.length);

  // Entry 2r is the call of the operation of rank r and entry 2r + 1 its return, so an entry's
  // operation is `entry >> 1` and its match is `entry ^ 1`.
  const entryTime = (entry: number): number =>
    (entry & 1) === 0 ? at(operations, entry >> 1).invokeTime : at(latest, entry >> 1);
  const entries: number[] = [];
  for (let rank = 0; rank < opCount; rank++) {
    if (!at(unbounded, rank)) entries.push(2 * rank, 2 * rank + 1);
  }
  entries.sort((a, b) => {
    const byTime = entryTime(a) - entryTime(b);
    if (byTime !== 0 && !Number.isNaN(byTime)) return byTime;
    // Calls go before returns at equal times so that touching operations count as concurrent;
    // the entry number then keeps invocation order, which makes the search deterministic. Two
    // infinite return times (allowed, if odd) give NaN and fall through here too.
    const byKind = (a & 1) - (b & 1);
    return byKind !== 0 ? byKind : a - b;
  });
  const head = 2 * opCount;
  const tail = head + 1;
  const next = new Int32Array(2 * opCount + 2);
  const prev = new Int32Array(2 * opCount + 2);
  let last = head;
  for (const entry of entries) {
    next[last] = entry;
    prev[entry] = last;
    last = entry;
  }
  next[last] = tail;
  prev[tail] = last;

  const unlink = (entry: number): void => {
    const before = at(prev, entry);
    const after = at(next, entry);
    next[before] = after;
    prev[after] = before;
  };
  const relink = (entry: number): void => {
    next[at(prev, entry)] = entry;
    prev[at(next, entry)] = entry;
  };
  const firstReturnTime = (): number => {
    let entry = at(next, head);
    while ((entry & 1) === 0) entry = at(next, entry);
    return entryTime(entry);
  };

  // The linearized operations: a bitset by rank; for the definite ones, their count and the
  // lowest rank of one not linearized yet; the indefinite ones as a sorted array, which the cache
  // compares as sets.
  const placed = new Uint32Array(Math.ceil(opCount / 32));
  const isPlaced = (rank: number): boolean => (at(placed, rank >> 5) & (1 << (rank & 31))) !== 0;
  const flipPlaced = (rank: number): void => {
    placed[rank >> 5] = at(placed, rank >> 5) ^ (1 << (rank & 31));
  };
  let definitePlaced = 0;
  let firstUnplaced = definite.indexOf(true);
  const indefinitePlaced: number[] = [];
  // Placing lifts the operation out of the entry list, or moves its chain on; relinking in the
  // reverse order of unlinking restores the list exactly (dancing links).
  const place = (rank: number): void => {
    flipPlaced(rank);
    const chain = at(chainOf, rank);
    if (chain === -1) {
      unlink(2 * rank);
      unlink(2 * rank + 1);
    } else {
      chainPlaced[chain] = at(chainPlaced, chain) + 1;
    }
    if (!at(definite, rank)) {
      let position = indefinitePlaced.length;
      while (position > 0 && at(indefinitePlaced, position - 1) > rank) position -= 1;
      indefinitePlaced.splice(position, 0, rank);
      return;
    }
    definitePlaced += 1;
    while (
      firstUnplaced < opCount && (!at(definite, firstUnplaced) || isPlaced(firstUnplaced))
    ) {
      firstUnplaced += 1;
    }
  };
  const unplace = (rank: number): void => {
    flipPlaced(rank);
    const chain = at(chainOf, rank);
    if (chain === -1) {
      relink(2 * rank + 1);
      relink(2 * rank);
    } else {
      chainPlaced[chain] = at(chainPlaced, chain) - 1;
    }
    if (!at(definite, rank)) {
      indefinitePlaced.splice(indefinitePlaced.lastIndexOf(rank), 1);
      return;
    }
    definitePlaced -= 1;
    firstUnplaced = Math.min(firstUnplaced, rank);
  };

  // `mustObserve` marks the configurations that just placed an indefinite operation, where only
  // an observer may come next.
  const cacheKey = (state: string | null, mustObserve: boolean): string => {
    let key = String(firstUnplaced);
    let beyond = definitePlaced - at(definiteBefore, firstUnplaced);
    for (let rank = firstUnplaced + 1; beyond > 0; rank++) {
      if (at(definite, rank) && isPlaced(rank)) {
        key += "," + rank;
        beyond -= 1;
      }
    }
    // The key so far holds only digits, commas and the mark, so the state after the bar is
    // unambiguous.
    if (mustObserve) key += "!";
    return state === null ? key + "|" : key + "|s" + state;
  };
  // For each cache key, the sets of indefinite operations it was visited with (sorted ranks).
  const visited = new Map<string, (readonly number[])[]>();
  const coveredBy = (key: string, indefinite: readonly number[]): boolean =>
    visited.get(key)?.some((subset) => isSortedSubset(subset, indefinite)) ?? false;
  const visit = (state: string | null, mustObserve: boolean): boolean => {
    const key = cacheKey(state, mustObserve);
    if (coveredBy(key, indefinitePlaced)) return false;
    if (mustObserve && coveredBy(cacheKey(state, false), indefinitePlaced)) return false;
    const indefinite = indefinitePlaced.length === 0 ? NO_OPERATIONS : indefinitePlaced.slice();
    const seen = visited.get(key);
    if (seen === undefined) {
      visited.set(key, [indefinite]);
      return true;
    }
    // The sets that contain the new one can no longer cover anything it does not.
    let kept = 0;
    for (const subset of seen) {
      if (!isSortedSubset(indefinite, subset)) seen[kept++] = subset;
    }
    seen.length = kept;
    seen.push(indefinite);
    return true;
  };

  const placedRanks: number[] = [];
  const statesBefore: (string | null)[] = [];
  let state: string | null = null;
  let mustObserve = false;
  // The next call to try: an entry of the list until its first return entry, then the chains
  // from `chainCursor` on, whose next operation must be invoked by that return (`timeLimit`).
  let entry = at(next, head);
  let chainPass = false;
  let chainCursor = 0;
  let timeLimit = 0;

  // The longest dead end so far. Its prefix shares the bottom of the stack up to `lowWater`, the
  // lowest the stack went since, so only the rest is copied when a longer one is found.
  const longest: number[] = [];
  let longestFound = false;
  let lowWater = 0;
  let firstUnlinearizable = -1;

  for (;;) {
    if (definitePlaced === definiteCount) return undefined;
    budget.steps += 1;
    if (budget.steps > budget.stepsMax) {
      throw new Error(
        `linearizability search too large: more than ${budget.stepsMax} steps (key ${
          JSON.stringify(at(operations, 0).key)
        }, ${opCount} operations); check a shorter or less concurrent history`,
      );
    }
    let candidate = -1;
    if (!chainPass) {
      if ((entry & 1) === 0) {
        candidate = entry >> 1;
        entry = at(next, entry);
      } else {
        // The first return entry: the calls after it must wait for its operation.
        chainPass = true;
        chainCursor = mustObserve ? chains.length : 0;
        timeLimit = entryTime(entry);
      }
    } else if (chainCursor < chains.length) {
      const chain = at(chains, chainCursor);
      const rank = chain[at(chainPlaced, chainCursor)];
      if (rank !== undefined && at(operations, rank).invokeTime <= timeLimit) candidate = rank;
      chainCursor += 1;
    } else {
      // Every call that could come next was tried, so this configuration is a dead end.
      if (!longestFound || placedRanks.length > longest.length) {
        longestFound = true;
        longest.length = lowWater;
        for (let depth = lowWater; depth < placedRanks.length; depth++) {
          longest.push(at(placedRanks, depth));
        }
        lowWater = placedRanks.length;
        // The first definite operation left, in invocation order, is the one that could not be
        // placed; an indefinite one can always wait.
        let first = at(next, head);
        while ((first & 1) !== 0 || !at(definite, first >> 1)) first = at(next, first);
        firstUnlinearizable = at(ops, first >> 1);
      }
      const rank = placedRanks.pop();
      const stateBefore = statesBefore.pop();
      if (rank === undefined || stateBefore === undefined) {
        return { firstUnlinearizable, longestPrefix: longest.map((rank) => at(ops, rank)) };
      }
      lowWater = Math.min(lowWater, placedRanks.length);
      state = stateBefore;
      const below = placedRanks[placedRanks.length - 1];
      mustObserve = below !== undefined && !at(definite, below);
      unplace(rank);
      // Resume the scan right after the operation just taken back.
      const chain = at(chainOf, rank);
      chainPass = chain !== -1;
      if (chainPass) {
        chainCursor = chain + 1;
        timeLimit = firstReturnTime();
      } else {
        entry = at(next, 2 * rank);
      }
      continue;
    }
    if (candidate === -1 || (mustObserve && !at(observer, candidate))) continue;
    const nextState = step(state, at(operations, candidate));
    if (nextState === undefined) continue;
    const isDefinite = at(definite, candidate);
    place(candidate);
    if (!visit(nextState, !isDefinite)) {
      unplace(candidate);
      continue;
    }
    placedRanks.push(candidate);
    statesBefore.push(state);
    state = nextState;
    mustObserve = !isDefinite;
    entry = at(next, head);
    chainPass = false;
  }
}

function failureMessage(
  history: readonly HistoryOperation[],
  key: string,
  failure: KeyFailure,
): string {
  const describe = (index: number): string =>
    `#${index} (${describeOperation(operationAt(history, index))})`;
  const prefix = failure.longestPrefix;
  const count = `${prefix.length} operation${prefix.length === 1 ? "" : "s"}`;
  let listed = "";
  if (prefix.length > 0) {
    const tail = prefix.slice(-MESSAGE_PREFIX_TAIL).map(describe).join(", ");
    listed = prefix.length > MESSAGE_PREFIX_TAIL ? `: ..., ${tail}` : `: ${tail}`;
  }
  return `key ${JSON.stringify(key)}: operation ${
    describe(failure.firstUnlinearizable)
  } cannot be linearized; longest linearizable prefix has ${count}${listed}` +
    " (operations are numbered by their index in the history).";
}

function formatOutput(output: string | number | null): string {
  return typeof output === "string" ? JSON.stringify(output) : String(output);
}

function operationAt(history: readonly HistoryOperation[], index: number): HistoryOperation {
  const op = history[index];
  if (op === undefined) throw new Error(`no operation #${index} in the history`);
  return op;
}

/** Read an index that the search's invariants guarantee to be in bounds. */
function at<T>(array: ArrayLike<T>, index: number): T {
  const value = array[index];
  if (value === undefined) throw new Error(`linearizability search read out of bounds`);
  return value;
}
