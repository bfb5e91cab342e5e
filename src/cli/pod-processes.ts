/**
 * The other containers' processes of this pod, seen through a shared process namespace
 * (`shareProcessNamespace: true`), so that `kubelock hold` can stop the pod's work when its grant is lost.
 *
 * In a shared namespace PID 1 is the pod's infrastructure (pause) process, and each container's processes sit
 * in a cgroup of their own: "ours" are those in this process's cgroup, "the pod's work" every other process
 * except PID 1. Without a shared namespace PID 1 is in this container (our own entrypoint) and there is
 * nothing else to see: `shared()` says so, and `hold` refuses to start rather than guard nothing.
 * Signalling needs the same user as the target (or CAP_KILL): run the containers as one user.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

export class PodProcesses {
  constructor(private readonly proc = "/proc", private readonly self = process.pid) {}

  /** Whether this process shares its process namespace with other containers of the pod. */
  shared(): boolean {
    const own = this.cgroupOf(this.self);
    const init = this.cgroupOf(1);
    return this.self !== 1 && own !== undefined && init !== undefined && own !== init;
  }

  /** PIDs of the pod's other containers' processes (not PID 1, not this container's). */
  others(): number[] {
    const own = this.cgroupOf(this.self);
    const pids: number[] = [];
    for (const entry of readdirSync(this.proc)) {
      if (!/^[0-9]+$/.test(entry)) continue;
      const pid = Number(entry);
      if (pid === 1 || pid === this.self) continue;
      const cgroup = this.cgroupOf(pid);
      if (cgroup !== undefined && cgroup !== own) pids.push(pid);
    }
    return pids;
  }

  /** Sends `signal` to every process of `others()`; returns how many it reached and the errors it got. */
  signal(signal: NodeJS.Signals): { signalled: number; refused: string[] } {
    let signalled = 0;
    const refused: string[] = [];
    for (const pid of this.others()) {
      try {
        process.kill(pid, signal);
        signalled++;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== "ESRCH") refused.push(`pid ${pid}: ${code ?? String(err)}`); // ESRCH: it just ended
      }
    }
    return { signalled, refused };
  }

  private cgroupOf(pid: number): string | undefined {
    try {
      return readFileSync(join(this.proc, String(pid), "cgroup"), "utf8").trim();
    } catch {
      return undefined; // gone, or not ours to read
    }
  }
}
