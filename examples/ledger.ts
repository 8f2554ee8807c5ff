/**
 * A replicated bank ledger: accounts, deposits, transfers, and holds that expire.
 *
 *   deno task vstamp cluster up -n 3 --app examples/ledger.ts --repl
 *
 * **Money is conserved**: the sum of every account's available balance and every open hold is
 * always the total deposited (`AUDIT` shows both); a transfer or a hold only moves money.
 *
 * **Holds expire by the primary's clock** (§4.4): a hold reserves money of one account for
 * another until it is captured, released, or its time runs out. Whether it has run out is
 * decided by `context.timestamp`, the time the primary fixed for the operation being applied,
 * never by the replica's own clock: every replica applies the same operation with the same
 * timestamp, so every replica expires the same holds at the same op. (Read `Date.now()` instead
 * and the replicas diverge: `vstamp sim` finds it, see tests/apps_sim_test.ts.) Expired holds
 * are released at the start of the next operation, which is why reads go through the log too:
 * a BALANCE answered from the state alone, without a timestamp, could show a hold that has run
 * out.
 *
 * Operations and results are JSON text; amounts are integers (cents, say).
 *
 * @module
 */
import { createHash } from "node:crypto";
import { type ApplyContext, defineApp, type StateMachine } from "../mod.ts";

/** The most money the ledger holds in all: beyond it doubles lose integers. */
const SUPPLY_MAX = Number.MAX_SAFE_INTEGER;
/** The longest account name, in characters. */
const NAME_LENGTH_MAX = 64;
/** The longest a hold may last: a day. */
const HOLD_MS_MAX = 24 * 60 * 60 * 1000;

/** An open hold: `amount` taken from `from`'s available money, for `to`, until `expiresAt`. */
interface Hold {
  readonly from: string;
  readonly to: string;
  readonly amount: number;
  readonly expiresAt: number;
}

type LedgerOp =
  | { readonly op: "open"; readonly name: string }
  | { readonly op: "deposit"; readonly name: string; readonly amount: number }
  | { readonly op: "transfer"; readonly from: string; readonly to: string; readonly amount: number }
  | {
    readonly op: "hold";
    readonly from: string;
    readonly to: string;
    readonly amount: number;
    readonly ms: number;
  }
  | { readonly op: "capture" | "release"; readonly hold: number }
  | { readonly op: "balance"; readonly name: string }
  | { readonly op: "audit" };

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

function json(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

function isName(value: unknown): value is string {
  return typeof value === "string" && value.length > 0 && value.length <= NAME_LENGTH_MAX;
}

function isAmount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) > 0;
}

/** The operation in `bytes`, or why it is not one: untrusted bytes never throw. */
function decode(bytes: Uint8Array): LedgerOp | { readonly error: string } {
  let op: Partial<Record<string, unknown>>;
  try {
    op = JSON.parse(decoder.decode(bytes));
  } catch {
    return { error: "operation is not JSON" };
  }
  if (typeof op !== "object" || op === null) return { error: "operation is not an object" };
  const badName = { error: `account names are 1 to ${NAME_LENGTH_MAX} characters` };
  const badAmount = { error: "amount must be a positive integer" };
  switch (op.op) {
    case "open":
    case "balance":
      return isName(op.name) ? { op: op.op, name: op.name } : badName;
    case "deposit":
      if (!isName(op.name)) return badName;
      return isAmount(op.amount) ? { op: "deposit", name: op.name, amount: op.amount } : badAmount;
    case "transfer":
    case "hold": {
      if (!isName(op.from) || !isName(op.to)) return badName;
      if (!isAmount(op.amount)) return badAmount;
      if (op.op === "transfer") {
        return { op: "transfer", from: op.from, to: op.to, amount: op.amount };
      }
      if (!isAmount(op.ms) || op.ms > HOLD_MS_MAX) {
        return { error: `a hold lasts 1 to ${HOLD_MS_MAX} ms` };
      }
      return { op: "hold", from: op.from, to: op.to, amount: op.amount, ms: op.ms };
    }
    case "capture":
    case "release":
      return isAmount(op.hold) ? { op: op.op, hold: op.hold } : { error: "no such hold" };
    case "audit":
      return { op: "audit" };
    default:
      // (Not echoing the op back: a result must stay small whatever a client sends.)
      return { error: "unknown op" };
  }
}

function byKey<T>([a]: [string | number, T], [b]: [string | number, T]): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The ledger's state machine. */
export class Ledger implements StateMachine {
  /** Available (not held) money per account. */
  #accounts = new Map<string, number>();
  #holds = new Map<number, Hold>();
  #nextHold = 1;
  /** Everything ever deposited: always the sum of the accounts and the holds. */
  #supply = 0;

  apply(operation: Uint8Array, context: ApplyContext): Uint8Array {
    // §4.4 The primary's timestamp, the same on every replica, decides what has expired.
    this.#expire(context.timestamp);
    const op = decode(operation);
    if ("error" in op) return json(op);
    const error = (text: string) => json({ error: text });
    const missing = [
      "name" in op ? op.name : undefined,
      "from" in op ? op.from : undefined,
      "to" in op ? op.to : undefined,
    ].find((name) => name !== undefined && !this.#accounts.has(name) && op.op !== "open");
    if (missing !== undefined) return error(`no account ${missing}`);
    switch (op.op) {
      case "open":
        if (this.#accounts.has(op.name)) return error(`account ${op.name} exists`);
        this.#accounts.set(op.name, 0);
        return json({ ok: true });
      case "deposit":
        if (this.#supply + op.amount > SUPPLY_MAX) return error("the ledger is full");
        this.#supply += op.amount;
        this.#accounts.set(op.name, this.#accounts.get(op.name)! + op.amount);
        return this.#balance(op.name);
      case "transfer":
      case "hold": {
        const available = this.#accounts.get(op.from)!;
        if (available < op.amount) return error(`${op.from} has only ${available} available`);
        if (op.from === op.to) return error("from and to are the same account");
        this.#accounts.set(op.from, available - op.amount);
        if (op.op === "transfer") {
          this.#accounts.set(op.to, this.#accounts.get(op.to)! + op.amount);
          return this.#balance(op.from);
        }
        const id = this.#nextHold++;
        const expiresAt = context.timestamp + op.ms;
        this.#holds.set(id, { from: op.from, to: op.to, amount: op.amount, expiresAt });
        return json({ hold: id, expiresAt });
      }
      case "capture":
      case "release": {
        const hold = this.#holds.get(op.hold);
        if (hold === undefined) return error(`no hold ${op.hold} (captured, released or expired)`);
        this.#holds.delete(op.hold);
        const account = op.op === "capture" ? hold.to : hold.from;
        this.#accounts.set(account, this.#accounts.get(account)! + hold.amount);
        return this.#balance(account);
      }
      case "balance":
        return this.#balance(op.name);
      case "audit": {
        let total = 0;
        for (const available of this.#accounts.values()) total += available;
        for (const hold of this.#holds.values()) total += hold.amount;
        return json({ supply: this.#supply, total, accounts: this.#accounts.size });
      }
    }
  }

  #balance(name: string): Uint8Array {
    let held = 0;
    for (const hold of this.#holds.values()) if (hold.from === name) held += hold.amount;
    return json({ name, available: this.#accounts.get(name)!, held });
  }

  /** Release, in id order, every hold whose time is up at `now`. */
  #expire(now: number): void {
    for (const [id, hold] of this.#holds) {
      if (hold.expiresAt > now) continue;
      this.#holds.delete(id);
      this.#accounts.set(hold.from, this.#accounts.get(hold.from)! + hold.amount);
    }
  }

  /** Sorted by key, so that equal states give equal bytes whatever order built them. */
  snapshot(): Uint8Array {
    return json({
      accounts: [...this.#accounts].sort(byKey),
      holds: [...this.#holds].sort(byKey),
      nextHold: this.#nextHold,
      supply: this.#supply,
    });
  }

  restore(snapshot: Uint8Array): void {
    let state: {
      accounts: [string, number][];
      holds: [number, Hold][];
      nextHold: number;
      supply: number;
    };
    try {
      state = JSON.parse(decoder.decode(snapshot));
      if (!Array.isArray(state.accounts) || !Array.isArray(state.holds)) throw new Error();
    } catch {
      throw new Error("not a ledger snapshot");
    }
    const accounts = new Map(state.accounts);
    const holds = new Map(state.holds);
    let total = 0;
    for (const available of accounts.values()) total += available;
    for (const hold of holds.values()) total += hold.amount;
    if (total !== state.supply || !Number.isSafeInteger(state.nextHold)) {
      throw new Error("not a ledger snapshot: the money does not add up");
    }
    this.#accounts = accounts;
    this.#holds = holds;
    this.#nextHold = state.nextHold;
    this.#supply = state.supply;
  }

  digest(): string {
    return createHash("sha256").update(this.snapshot()).digest("hex").slice(0, 24);
  }
}

/** A result as the REPL prints it: a balance, a hold, an audit, OK, or `(error) ...`. */
function format(result: Uint8Array): string {
  const r = JSON.parse(decoder.decode(result));
  if (r.error !== undefined) return `(error) ${r.error}`;
  if (r.hold !== undefined) {
    return `hold ${r.hold} (expires at ${new Date(r.expiresAt).toISOString()})`;
  }
  if (r.supply !== undefined) {
    return `supply ${r.supply}, in accounts and holds ${r.total}, ${r.accounts} accounts` +
      (r.supply === r.total ? "" : " (MONEY NOT CONSERVED)");
  }
  if (r.name !== undefined) return `${r.name}: ${r.available} available, ${r.held} held`;
  return "OK";
}

/** A command whose arguments are `fields`, `amount`-like ones parsed as integers. */
function command(
  name: string,
  usage: string,
  help: string,
  op: string,
  fields: readonly string[],
  example?: string,
) {
  return {
    name,
    usage,
    help,
    ...(example === undefined ? {} : { example }),
    encode(args: readonly string[]) {
      if (args.length !== fields.length) return { error: `usage: ${usage}` };
      const out: Record<string, string | number> = { op };
      for (const [index, field] of fields.entries()) {
        const arg = args[index]!;
        if (field === "amount" || field === "hold" || field === "seconds") {
          const n = Number(arg);
          if (!/^\d+$/.test(arg) || !Number.isSafeInteger(n)) {
            return { error: `${field} must be a non-negative integer, got ${arg}` };
          }
          if (field === "seconds") out.ms = n * 1000;
          else out[field] = n;
        } else {
          out[field] = arg;
        }
      }
      return json(out);
    },
    format,
  };
}

/** The ledger app. */
export const app = defineApp({
  name: "ledger",
  version: "1",
  createStateMachine: () => new Ledger(),
  commands: [
    command("OPEN", "OPEN account", "Open an account with nothing in it.", "open", ["name"]),
    command(
      "DEPOSIT",
      "DEPOSIT account amount",
      "Add new money to an account (the only way money enters the ledger).",
      "deposit",
      ["name", "amount"],
      "DEPOSIT alice 100",
    ),
    command(
      "TRANSFER",
      "TRANSFER from to amount",
      "Move money between accounts, if from has it available.",
      "transfer",
      ["from", "to", "amount"],
      "TRANSFER alice bob 30",
    ),
    command(
      "HOLD",
      "HOLD from to amount seconds",
      "Reserve money of from for to; CAPTURE pays it, RELEASE or time returns it.\n" +
        "The money is taken from from's available balance at once. The hold expires\n" +
        "seconds after the primary's timestamp for this command, and is then\n" +
        "released at the first operation after that time.",
      "hold",
      ["from", "to", "amount", "seconds"],
      "HOLD alice bob 20 60",
    ),
    command("CAPTURE", "CAPTURE hold", "Pay a hold to its recipient.", "capture", ["hold"]),
    command("RELEASE", "RELEASE hold", "Return a hold to its payer.", "release", ["hold"]),
    command("BALANCE", "BALANCE account", "Available and held money.", "balance", ["name"]),
    command(
      "AUDIT",
      "AUDIT",
      "Total deposited beside the total in accounts and holds.",
      "audit",
      [],
    ),
  ],
  /** For `vstamp sim`: random commands on four accounts, holds of a second or less. */
  workload(random) {
    const name = () => `a${random.int(1, 4)}`;
    const roll = random.int(0, 19);
    const op = roll < 2
      ? { op: "open", name: name() }
      : roll < 5
      ? { op: "deposit", name: name(), amount: random.int(1, 100) }
      : roll < 10
      ? { op: "transfer", from: name(), to: name(), amount: random.int(1, 50) }
      : roll < 13
      ? { op: "hold", from: name(), to: name(), amount: random.int(1, 50), ms: random.int(1, 1000) }
      : roll < 15
      ? { op: random.pick(["capture", "release"]), hold: random.int(1, 30) }
      : roll < 18
      ? { op: "balance", name: name() }
      : { op: "audit" };
    return { operation: json(op) };
  },
});
