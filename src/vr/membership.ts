/**
 * §7 Who the group is: the members of the current epoch, the epoch before, and the address book
 * that gives every address the group ever had a member id for good.
 *
 * The group's configuration is replicated state: a Reconfiguration is an entry of the log, and
 * executing it moves every replica, at the same op-number, from one membership to the next
 * (`nextMembership`). So a replica knows the membership after op c exactly as it knows the state
 * machine's: from the log, or from a checkpoint of op c, whose metadata carries it.
 *
 * The group's own operations (a Reconfiguration, a CheckEpoch) are log entries of client-id 0,
 * which no client may use: they never reach the state machine or the client table.
 *
 * @module
 */
import type { ReplicaIndex } from "./message.ts";

/** The most members one epoch may have. */
export const MEMBERS_MAX = 63;
/** The most addresses the address book may hold: a group can replace a member about 1,000 times. */
export const ADDRESS_BOOK_MAX = 1024;
/** The longest address, in UTF-16 code units (the codec bounds it in the same unit). */
export const ADDRESS_LENGTH_MAX = 256;
/** The client-id of the group's own log entries (Reconfiguration, CheckEpoch). */
export const GROUP_CLIENT_ID = 0;

export interface Membership {
  readonly epoch: number;
  /** The address book: member id → address. Only grows; ids are never reused. */
  readonly addresses: readonly string[];
  /** The member ids of this epoch, in order: its replica k is `members[k]`. */
  readonly members: readonly ReplicaIndex[];
  /** The member ids of the epoch before (empty in epoch 0). */
  readonly previousMembers: readonly ReplicaIndex[];
  /** The first view of this epoch (0 in epoch 0). */
  readonly startViewNumber: number;
  /** The op-number of the Reconfiguration that began this epoch (0 in epoch 0). */
  readonly opNumber: number;
}

/** The membership of a brand-new group: epoch 0, whose member ids are the positions. */
export function initialMembership(addresses: readonly string[]): Membership {
  return {
    epoch: 0,
    addresses: [...addresses],
    members: addresses.map((_, index) => index),
    previousMembers: [],
    startViewNumber: 0,
    opNumber: 0,
  };
}

/**
 * The primary of `viewNumber` (a view of this epoch): §4's round robin over the members, by the
 * view-number alone, so that a client that knows the members and a view finds the primary.
 */
export function primaryOf(membership: Membership, viewNumber: number): ReplicaIndex {
  const members = membership.members;
  return members[viewNumber % members.length]!;
}

/** The addresses of the members of the current epoch, in order. */
export function memberAddresses(membership: Membership): string[] {
  return membership.members.map((id) => membership.addresses[id]!);
}

/** Whether two memberships are the same. */
export function sameMembership(a: Membership, b: Membership): boolean {
  return a.epoch === b.epoch && a.startViewNumber === b.startViewNumber &&
    a.opNumber === b.opNumber && sameList(a.addresses, b.addresses) &&
    sameList(a.members, b.members) && sameList(a.previousMembers, b.previousMembers);
}

function sameList<T>(a: readonly T[], b: readonly T[]): boolean {
  return a.length === b.length && a.every((value, index) => value === b[index]);
}

/**
 * Why `addresses` cannot be the configuration of a new epoch after `current`, or undefined: it
 * must be a non-empty odd number of distinct, non-empty addresses, other than the current one,
 * and leave room in the address book.
 */
export function configurationProblem(
  addresses: readonly string[],
  current: Membership,
): string | undefined {
  if (addresses.length === 0) return "the configuration is empty";
  if (addresses.length % 2 === 0) {
    return `a group needs an odd number of replicas, the configuration has ${addresses.length}`;
  }
  if (addresses.length > MEMBERS_MAX) {
    return `${addresses.length} replicas, more than ${MEMBERS_MAX}`;
  }
  const seen = new Set<string>();
  for (const address of addresses) {
    if (typeof address !== "string" || address.length === 0) return "an address is empty";
    if (address.length > ADDRESS_LENGTH_MAX) {
      return `address ${address.slice(0, 40)}… is longer than ${ADDRESS_LENGTH_MAX}`;
    }
    if (seen.has(address)) return `address ${address} appears twice`;
    seen.add(address);
  }
  if (sameList(addresses, memberAddresses(current))) {
    return "the configuration is the current one";
  }
  const known = new Set(current.addresses);
  const added = addresses.filter((address) => !known.has(address)).length;
  if (current.addresses.length + added > ADDRESS_BOOK_MAX) {
    return `the address book would exceed ${ADDRESS_BOOK_MAX} addresses`;
  }
  return undefined;
}

/**
 * The membership after executing the Reconfiguration to `addresses` (checked with
 * `configurationProblem`) at op `opNumber`, created in view `viewNumber`: addresses new to the
 * group get the next member ids, and the new epoch starts at the next view, so that the views of
 * log entries keep growing along the log across epochs (entries are told apart by op-number and
 * view, `LogEntry`).
 */
export function nextMembership(
  current: Membership,
  addresses: readonly string[],
  opNumber: number,
  viewNumber: number,
): Membership {
  const book = [...current.addresses];
  const members = addresses.map((address) => {
    const known = book.indexOf(address);
    if (known >= 0) return known;
    book.push(address);
    return book.length - 1;
  });
  return {
    epoch: current.epoch + 1,
    addresses: book,
    members,
    previousMembers: current.members,
    startViewNumber: viewNumber + 1,
    opNumber,
  };
}

/** Why `membership` (from a message, a file or a checkpoint) is not well formed, or undefined. */
export function membershipProblem(membership: Membership): string | undefined {
  const { addresses, members, previousMembers } = membership;
  for (
    const [name, value] of [
      ["epoch", membership.epoch],
      ["startViewNumber", membership.startViewNumber],
      ["opNumber", membership.opNumber],
    ] as const
  ) {
    if (!Number.isSafeInteger(value) || value < 0) return `${name} ${value} is not a natural`;
  }
  if (addresses.length === 0 || addresses.length > ADDRESS_BOOK_MAX) {
    return `an address book of ${addresses.length} addresses`;
  }
  if (new Set(addresses).size !== addresses.length) return "an address book with duplicates";
  for (const address of addresses) {
    if (
      typeof address !== "string" || address.length === 0 || address.length > ADDRESS_LENGTH_MAX
    ) {
      return "an address book with an invalid address";
    }
  }
  for (
    const [name, list] of [["members", members], ["previousMembers", previousMembers]] as const
  ) {
    if (list.length > MEMBERS_MAX) return `${list.length} ${name}`;
    if (new Set(list).size !== list.length) return `${name} with duplicates`;
    if (list.some((id) => !Number.isInteger(id) || id < 0 || id >= addresses.length)) {
      return `${name} outside the address book`;
    }
  }
  if (members.length === 0 || members.length % 2 === 0) return `${members.length} members`;
  if (membership.epoch === 0 ? previousMembers.length !== 0 : previousMembers.length === 0) {
    return `epoch ${membership.epoch} with ${previousMembers.length} previous members`;
  }
  return undefined;
}

// ---------------------------------------------------------------- the group's log entries

/** What a log entry of client-id 0 asks of the group. */
export type GroupOperation =
  | {
    readonly kind: "reconfiguration";
    /** The administrator's client and request, answered once the entry commits. */
    readonly clientId: number;
    readonly requestNumber: number;
    readonly addresses: readonly string[];
  }
  | {
    readonly kind: "check_epoch";
    readonly clientId: number;
    readonly requestNumber: number;
    readonly epoch: number;
  };

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** The operation bytes of a group entry: JSON, which is small here and easy to read in a dump. */
export function encodeGroupOperation(operation: GroupOperation): Uint8Array {
  return encoder.encode(JSON.stringify(operation));
}

/** The group operation in `bytes`, or a description of what is wrong with them. */
export function decodeGroupOperation(bytes: Uint8Array): GroupOperation | string {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(bytes));
  } catch {
    return "not a group operation (invalid JSON)";
  }
  if (typeof value !== "object" || value === null) return "not a group operation";
  const record = value as Record<string, unknown>;
  const natural = (name: string) =>
    Number.isSafeInteger(record[name]) && (record[name] as number) >= 0;
  if (!natural("clientId") || !natural("requestNumber")) {
    return "a group operation without its client";
  }
  if (record.kind === "reconfiguration") {
    const addresses = record.addresses;
    if (!Array.isArray(addresses) || addresses.some((address) => typeof address !== "string")) {
      return "a reconfiguration without its addresses";
    }
    return {
      kind: "reconfiguration",
      clientId: record.clientId as number,
      requestNumber: record.requestNumber as number,
      addresses: addresses as string[],
    };
  }
  if (record.kind === "check_epoch") {
    if (!natural("epoch")) return "a check_epoch without its epoch";
    return {
      kind: "check_epoch",
      clientId: record.clientId as number,
      requestNumber: record.requestNumber as number,
      epoch: record.epoch as number,
    };
  }
  return `a group operation of kind ${String(record.kind)}`;
}

// ---------------------------------------------------------------- on disk and in checkpoints

/** `membership` as bytes (JSON), for the data directory and checkpoint metadata. */
export function encodeMembership(membership: Membership): Uint8Array {
  return encoder.encode(JSON.stringify({
    epoch: membership.epoch,
    addresses: membership.addresses,
    members: membership.members,
    previousMembers: membership.previousMembers,
    startViewNumber: membership.startViewNumber,
    opNumber: membership.opNumber,
  }));
}

/** The membership in `bytes`, checked with `membershipProblem`, or what is wrong with them. */
export function decodeMembership(bytes: Uint8Array): Membership | string {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(bytes));
  } catch {
    return "membership: invalid JSON";
  }
  if (typeof value !== "object" || value === null) return "membership: not an object";
  const record = value as Record<string, unknown>;
  const list = (name: string) => Array.isArray(record[name]) ? record[name] as unknown[] : [];
  const membership: Membership = {
    epoch: record.epoch as number,
    addresses: list("addresses") as string[],
    members: list("members") as number[],
    previousMembers: list("previousMembers") as number[],
    startViewNumber: record.startViewNumber as number,
    opNumber: record.opNumber as number,
  };
  const problem = membershipProblem(membership);
  return problem === undefined ? membership : `membership: ${problem}`;
}
