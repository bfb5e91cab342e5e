/**
 * A command started in a process group of its own (a new session: Node's `detached`), so that a
 * signal reaches everything it started: `sh -c 'worker & wait'` leaves no worker behind when the
 * group is signalled, where signalling the shell alone would.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";

export class ProcessGroup {
  readonly child: ChildProcess;

  constructor(commandLine: string[], env: NodeJS.ProcessEnv) {
    this.child = spawn(commandLine[0], commandLine.slice(1), { stdio: "inherit", env, detached: true });
  }

  /** The group's id: the leader's pid (undefined if the command could not be started). */
  get id(): number | undefined {
    return this.child.pid;
  }

  /** Sends `signal` to every process of the group; a group already gone is fine. */
  signal(signal: NodeJS.Signals): void {
    if (this.id === undefined) return;
    try {
      process.kill(-this.id, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
    }
  }

  /**
   * Whether a process of the group still runs. Exited processes that nobody reaped yet (zombies, e.g.
   * orphans when this process is PID 1) do not count; /proc tells them apart where it exists.
   */
  alive(): boolean {
    if (this.id === undefined) return false;
    try {
      process.kill(-this.id, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ESRCH") return false;
      throw err;
    }
    return livingMembers(this.id) !== 0;
  }
}

/** How many running (not zombie) processes /proc lists in group `pgid`; undefined without /proc. */
function livingMembers(pgid: number): number | undefined {
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return undefined;
  }
  let count = 0;
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // exited meanwhile
    }
    // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after the last ")".
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(pgrp) === pgid && state !== "Z" && state !== "X") count++;
  }
  return count;
}
