/** PodProcesses: which processes `kubelock hold` stops, read from a /proc laid out as in a pod. */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { PodProcesses } from "../../src/cli/pod-processes";

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A fake /proc: pid → the cgroup line its process would show from inside our container's cgroup namespace. */
function proc(cgroups: Record<number, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "kubelock-proc-"));
  dirs.push(dir);
  for (const [pid, cgroup] of Object.entries(cgroups)) {
    mkdirSync(join(dir, pid));
    writeFileSync(join(dir, pid, "cgroup"), `0::${cgroup}\n`);
  }
  mkdirSync(join(dir, "self-is-not-a-pid"));
  return dir;
}

test("in a shared process namespace: the other containers' processes, not PID 1 (pause) and not ours", () => {
  const pod = proc({ 1: "/../pause", 7: "/", 8: "/", 12: "/../work", 13: "/../work", 20: "/../other-sidecar" });
  const processes = new PodProcesses(pod, 7);
  assert.equal(processes.shared(), true);
  assert.deepEqual(processes.others().sort((a, b) => a - b), [12, 13, 20]);
});

test("without a shared namespace there is nothing to guard: shared() is false and others() empty", () => {
  const alone = proc({ 1: "/", 9: "/" });
  assert.equal(new PodProcesses(alone, 1).shared(), false, "we are PID 1");
  assert.equal(new PodProcesses(alone, 9).shared(), false, "PID 1 is in our cgroup");
  assert.deepEqual(new PodProcesses(alone, 9).others(), []);
});

test("signal counts what it reached and reports refusals; a process that just ended is not an error", () => {
  const pod = proc({ 1: "/../pause", 7: "/", 999_999_999: "/../work" }); // no such process on this machine
  const result = new PodProcesses(pod, 7).signal("SIGTERM");
  assert.deepEqual(result, { signalled: 0, refused: [] });
});
