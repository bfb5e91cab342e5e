/** Figures of a process read from /proc (Linux). */
import { readdirSync, readFileSync } from "node:fs";

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/** CPU seconds the process used so far (utime + stime). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // fields from 3 (state) on
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND; // utime (14), stime (15)
}

/** A kB figure (VmHWM, VmRSS, …) from /proc/<pid>/status. */
export function procStatusKb(pid: number, field: string): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!match) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(match[1]);
}

/** The first process whose command line (arguments joined by spaces) satisfies `matches`. */
export function findProcess(matches: (commandLine: string) => boolean): number | undefined {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (matches(readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0").join(" "))) return Number(entry);
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

/** The kube-apiserver serving `server` (https://127.0.0.1:PORT) on this machine, if it runs here. */
export function apiServerPid(server: string | undefined): number | undefined {
  const port = server ? new URL(server).port : "";
  return port ? findProcess((cmd) => cmd.includes("kube-apiserver") && cmd.includes(`--secure-port=${port} `)) : undefined;
}
