/**
 * Benchmark 6: before/after. The throughput workload (benchmark 3) against two operators in the same
 * invocation, alternating run by run: one from an earlier commit (BENCH_BEFORE_REF, checked out into a
 * temporary git worktree that shares this checkout's node_modules) and one from this checkout. Per run:
 * grants per second, API requests per grant (the API server's own counters) and the operator's CPU time
 * per grant (/proc). This is the "fix it, show before/after" step for the bottleneck that benchmarks 3
 * and 5 point at.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BenchContext } from "./context";
import { apiRequestCounts, difference } from "./lib/apimetrics";
import { pool } from "./lib/claims";
import { apiServerPid, cpuSeconds } from "./lib/proc";
import { envInt, fmt, median } from "./lib/stats";
import { operatorNamespace, type OperatorNamespace } from "./operator";
import { throughputRun } from "./throughput";

/**
 * The last commit before the profile-driven changes to the reconciler (waiting-claim rewrites, Events
 * of deleted claims, renewal-only lock status writes, per-request client overhead).
 */
const DEFAULT_BEFORE_REF = "8147bb5800f9c815071fb44ffe5ef460d69cdcfc";
const repoRoot = join(__dirname, "..");

interface Side { label: string; op: OperatorNamespace; rates: number[]; requests: number[]; cpuMs: number[]; apiServerCpuMs: number[]; byRequest: Map<string, number> }

export async function beforeAfterBenchmark(ctx: BenchContext): Promise<void> {
  const ref = process.env.BENCH_BEFORE_REF ?? DEFAULT_BEFORE_REF;
  const claims = envInt("BENCH_BA_CLAIMS", 150);
  const locks = envInt("BENCH_BA_LOCKS", 15);
  const backends = (process.env.BENCH_BA_BACKENDS ?? "redis,kubernetes").split(",").filter(Boolean);
  const timeoutMs = envInt("BENCH_TP_TIMEOUT_MS", 300_000);
  const apiServer = apiServerPid(ctx.kubeConfig.getCurrentCluster()?.server);
  const worktree = checkout(ref);
  // A commit's short hash and its subject's first clause, cut at 100 characters.
  const describe = (rev: string) => {
    const line = git(["log", "-1", "--format=%h %s", rev]);
    const sentence = line.split(/[.;] /)[0];
    return sentence.length > 100 ? `${sentence.slice(0, 99)}…` : sentence;
  };
  const rows: string[][] = [];
  const breakdown: string[][] = [];
  try {
    for (const backend of backends) {
      const sides: Side[] = [];
      try {
        for (const [label, root] of [["before", worktree.root], ["after", undefined]] as const) {
          const op = await operatorNamespace(ctx, `bench-ba-${label}`, { root });
          sides.push({ label, op, rates: [], requests: [], cpuMs: [], apiServerCpuMs: [], byRequest: new Map() });
          await pool(locks, 16, (l) => op.api.createLock(`${backend}-${l}`, { backend }));
          await throughputRun(op, backend, "warm", locks, locks, timeoutMs);
        }
        for (let r = 1; r <= ctx.runs; r++) {
          for (const side of r % 2 === 1 ? sides : [...sides].reverse()) {
            if (side.op.pid === undefined) throw new Error(`the ${side.label} operator's process was not found`);
            const requestsBefore = await apiRequestCounts(ctx.kubeConfig);
            const cpuBefore = cpuSeconds(side.op.pid);
            const apiServerBefore = apiServer === undefined ? NaN : cpuSeconds(apiServer);
            const run = await throughputRun(side.op, backend, String(r), claims, locks, timeoutMs);
            const cpu = cpuSeconds(side.op.pid) - cpuBefore;
            side.apiServerCpuMs.push(apiServer === undefined ? NaN : ((cpuSeconds(apiServer) - apiServerBefore) * 1000) / claims);
            const requests = difference(requestsBefore, await apiRequestCounts(ctx.kubeConfig));
            const total = [...requests.values()].reduce((a, b) => a + b, 0);
            side.rates.push(run.rate);
            side.requests.push(total / claims);
            side.cpuMs.push((cpu * 1000) / claims);
            for (const [k, n] of requests) side.byRequest.set(k, (side.byRequest.get(k) ?? 0) + n / (claims * ctx.runs));
            ctx.log(`before/after: ${backend} ${side.label} run ${r}/${ctx.runs}: ${fmt(run.rate, 1)} grants/s, ${fmt(total / claims, 1)} requests and ${fmt((cpu * 1000) / claims, 0)} ms CPU per grant`);
          }
        }
      } finally {
        for (const side of sides) await side.op.stop();
      }
      const [before, after] = sides;
      const change = (b: number, a: number) => (b > 0 ? `${(a / b).toFixed(2)}×` : "–");
      for (const [what, pick] of [["grants/s", (s: Side) => s.rates], ["API requests per grant", (s: Side) => s.requests], ["operator CPU ms per grant", (s: Side) => s.cpuMs],
        ["kube-apiserver CPU ms per grant", (s: Side) => s.apiServerCpuMs]] as const) {
        const b = median(pick(before));
        const a = median(pick(after));
        rows.push([backend, what, fmt(b), fmt(a), change(b, a), pick(before).map((x) => fmt(x)).join(" "), pick(after).map((x) => fmt(x)).join(" ")]);
      }
      const keys = [...new Set([...before.byRequest.keys(), ...after.byRequest.keys()])].sort();
      for (const k of keys) breakdown.push([backend, k, fmt(before.byRequest.get(k) ?? 0, 2), fmt(after.byRequest.get(k) ?? 0, 2)]);
      ctx.findings.push(`6 before/after (${backend}): ${fmt(median(before.rates), 1)} → ${fmt(median(after.rates), 1)} grants/s, ` +
        `${fmt(median(before.requests), 1)} → ${fmt(median(after.requests), 1)} API requests and ${fmt(median(before.cpuMs), 0)} → ${fmt(median(after.cpuMs), 0)} ms of operator CPU per grant (section 6).`);
    }
  } finally {
    worktree.remove();
  }

  const { report } = ctx;
  report.heading("6. Before/after: the profile-driven fixes");
  report.text(
    `The throughput workload of section 3 (${claims} claims over ${locks} locks, maxHolders 1, holders delete their claim once Granted) ` +
      `against two operators, alternating run by run in this invocation, each in its own namespace: **before** = commit ${describe(ref)}; ` +
      `**after** = this checkout (${describe("HEAD")}${git(["status", "--porcelain", "--", "src"]) ? ", with uncommitted changes under src/" : ""}). ` +
      `Medians of ${ctx.runs} runs each (one warm-up each first). API requests count every client (the benchmark's own create and delete ` +
      "of each claim included); CPU is utime + stime from /proc, of the operator and of kube-apiserver (which serves every client).",
  );
  report.table(["backend", "measure", "before", "after", "after ÷ before", "per-run before", "per-run after"], rows);
  report.text("API requests per grant by kind (all runs):");
  report.table(["backend", "request", "before", "after"], breakdown);
}

/** `ref` checked out (detached) into a temporary worktree that uses this checkout's node_modules. */
export function checkout(ref: string): { root: string; remove: () => void } {
  const root = join(mkdtempSync(join(tmpdir(), "kubelock-before-")), "repo");
  try {
    git(["worktree", "add", "--detach", root, ref]);
  } catch (err) {
    throw new Error(`cannot check out BENCH_BEFORE_REF=${ref} (a shallow clone lacks it; fetch the history or set another ref): ${(err as Error).message}`);
  }
  symlinkSync(join(repoRoot, "node_modules"), join(root, "node_modules"));
  return {
    root,
    remove: () => {
      try {
        git(["worktree", "remove", "--force", root]);
      } finally {
        rmSync(join(root, ".."), { recursive: true, force: true });
      }
    },
  };
}

function git(args: string[]): string {
  return execFileSync("git", args, { cwd: repoRoot, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
}
