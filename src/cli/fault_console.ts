/**
 * The fault console of `cluster up --repl`: kill, restart, pause and resume replicas, and cut and
 * heal the links between them, to watch a view change (§4.2), a recovery (§4.3) and a state
 * transfer (§5.2) happen. Cutting links needs `cluster up --faults`, which routes peer traffic
 * through relays (`FaultNetwork`); the rest works on any local cluster.
 *
 * Replicas are named by their position in the `members` table (`0` is the first member). Each
 * command answers in one line.
 *
 * @module
 */
import type { FaultNetwork } from "./relays.ts";

/** The fault commands, as `help` lists them. */
export const FAULT_HELP = `fault commands (see what happens with status):
  status              the group's replicas, with their status, and the links cut
  kill <i>            kill replica i's process (SIGKILL); its data stays
  restart <i>         start replica i again on its data: it recovers (§4.3)
  pause <i>           stop replica i's process (SIGSTOP): it hangs, but its connections stay up
  resume <i>          let a paused replica run again (SIGCONT)
  cut <i> <j>         lose every message between replicas i and j, both ways (needs --faults)
  cut <i> <j> one-way lose only what i sends to j
  isolate <i>         cut replica i from every other replica (clients still reach it)
  heal [<i> <j>]      undo every cut, or only those between i and j`;

/** A replica process as the console sees it. */
export interface ConsoleProcess {
  readonly pid: number;
  /** Exited, or sent SIGKILL (it is gone, or about to be). */
  readonly exited: boolean;
  paused: boolean;
  kill(signal: Deno.Signal): void;
}

/** What the console acts on: `cluster up`'s processes and relays. */
export interface FaultTarget {
  /** The group's members now, by position. */
  readonly members: readonly string[];
  /** The relays, when `cluster up --faults` runs them. */
  readonly relays: FaultNetwork | undefined;
  /** The process that serves the member at `position`, if one was started. */
  processAt(position: number): ConsoleProcess | undefined;
  /** The member's id in the address book, as its relay and hello frames name it. */
  idAt(position: number): number;
  /** Start the member at `position` again, on its data directory: the new process. */
  restart(position: number): Promise<ConsoleProcess>;
  /** The status table and anything else `status` shows. */
  status(): Promise<string>;
}

/** A fault command went wrong: the line says what, nothing changed. */
export class FaultCommandError extends Error {}

/**
 * Run `line` if it is a fault command: the line to print, or undefined if it is not one (the
 * REPL runs it then). Throws `FaultCommandError` for a bad command.
 */
export async function runFaultCommand(
  line: string,
  target: FaultTarget,
): Promise<string | undefined> {
  const words = line.trim().split(/\s+/);
  const command = words[0]?.toLowerCase() ?? "";
  const args = words.slice(1);
  const position = (word: string | undefined): number => {
    const n = Number(word);
    if (word === undefined || !/^\d+$/.test(word) || n >= target.members.length) {
      throw new FaultCommandError(
        `no replica ${word ?? "given"}: the group has ${target.members.length} (0 to ${
          target.members.length - 1
        }; see status)`,
      );
    }
    return n;
  };
  const usage = (text: string) => new FaultCommandError(`usage: ${text}`);
  const running = (at: number): ConsoleProcess => {
    const process = target.processAt(at);
    if (process === undefined || process.exited) {
      throw new FaultCommandError(`replica ${at} is not running (restart ${at} starts it)`);
    }
    return process;
  };
  const relays = (): FaultNetwork => {
    if (target.relays === undefined) {
      throw new FaultCommandError(
        `${command} needs peer traffic through relays: start the cluster with --faults`,
      );
    }
    return target.relays;
  };
  switch (command) {
    case "status": {
      if (args.length !== 0) throw usage("status");
      return await target.status();
    }
    case "kill": {
      if (args.length !== 1) throw usage("kill <i>");
      const at = position(args[0]);
      const process = running(at);
      process.kill("SIGKILL");
      return `replica ${at} (pid ${process.pid}) killed; \`restart ${at}\` brings it back on its data`;
    }
    case "restart": {
      if (args.length !== 1) throw usage("restart <i>");
      const at = position(args[0]);
      const before = target.processAt(at);
      if (before !== undefined && !before.exited) {
        throw new FaultCommandError(`replica ${at} is running (pid ${before.pid}): kill it first`);
      }
      const process = await target.restart(at);
      return `replica ${at} restarted (pid ${process.pid}); it recovers from its peers (§4.3)`;
    }
    case "pause": {
      if (args.length !== 1) throw usage("pause <i>");
      const at = position(args[0]);
      const process = running(at);
      if (process.paused) throw new FaultCommandError(`replica ${at} is paused already`);
      process.kill("SIGSTOP");
      process.paused = true;
      return `replica ${at} (pid ${process.pid}) paused; \`resume ${at}\` lets it run`;
    }
    case "resume": {
      if (args.length !== 1) throw usage("resume <i>");
      const at = position(args[0]);
      const process = running(at);
      if (!process.paused) throw new FaultCommandError(`replica ${at} is not paused`);
      process.kill("SIGCONT");
      process.paused = false;
      return `replica ${at} (pid ${process.pid}) resumed`;
    }
    case "cut": {
      const oneWay = args.length === 3 && /^one-?way$/i.test(args[2]!);
      if (args.length !== 2 && !oneWay) throw usage("cut <i> <j> [one-way]");
      const [a, b] = [position(args[0]), position(args[1])];
      if (a === b) throw new FaultCommandError("cut: name two different replicas");
      const network = relays();
      network.cut(target.idAt(a), target.idAt(b));
      if (!oneWay) network.cut(target.idAt(b), target.idAt(a));
      return oneWay
        ? `cut: what replica ${a} sends to replica ${b} is lost (replica ${b} still reaches ${a})`
        : `cut: replicas ${a} and ${b} no longer hear each other`;
    }
    case "isolate": {
      if (args.length !== 1) throw usage("isolate <i>");
      const at = position(args[0]);
      const network = relays();
      for (let other = 0; other < target.members.length; other++) {
        if (other === at) continue;
        network.cut(target.idAt(at), target.idAt(other));
        network.cut(target.idAt(other), target.idAt(at));
      }
      return `isolate: replica ${at} hears no other replica, and none hears it`;
    }
    case "heal": {
      const network = relays();
      if (args.length === 0) {
        const cut = network.cuts.length;
        network.heal();
        return `heal: every link carries messages again (${cut} cut before)`;
      }
      if (args.length !== 2) throw usage("heal [<i> <j>]");
      const [a, b] = [position(args[0]), position(args[1])];
      network.heal(target.idAt(a), target.idAt(b));
      network.heal(target.idAt(b), target.idAt(a));
      return `heal: replicas ${a} and ${b} hear each other again`;
    }
    default:
      return undefined;
  }
}

/** The line `status` adds below the table: the processes paused and the links cut. */
export function describeFaults(target: FaultTarget): string {
  const paused: number[] = [];
  const down: number[] = [];
  for (let at = 0; at < target.members.length; at++) {
    const process = target.processAt(at);
    if (process === undefined || process.exited) down.push(at);
    else if (process.paused) paused.push(at);
  }
  const positionOf = new Map<number, number>();
  for (let at = 0; at < target.members.length; at++) positionOf.set(target.idAt(at), at);
  const cuts = (target.relays?.cuts ?? []).map((key) => {
    const [from, to] = key.split(">").map((id) =>
      id === "client" ? "clients" : positionOf.get(Number(id)) ?? `id ${id}`
    );
    return `${from}->${to}`;
  });
  const parts = [
    `down: ${down.length === 0 ? "none" : down.join(", ")}`,
    `paused: ${paused.length === 0 ? "none" : paused.join(", ")}`,
    target.relays === undefined
      ? "links: direct (no --faults)"
      : `links cut: ${cuts.length === 0 ? "none" : cuts.join(", ")}`,
  ];
  return parts.join("; ");
}
