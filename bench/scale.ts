/**
 * Benchmark 4: scale. N locks and N claims (one per lock; N = 10,000 by default) exist before the operator
 * starts; time from starting it until every claim is observed Granted, its peak RSS (VmHWM), and its CPU,
 * API requests and Redis commands while nothing changes afterwards (measured once every lock has had its first
 * status report due, STATUS_REPORT_MS after its grant: the steady state, not the quiet just after the grants). Then the operator is restarted: a fresh
 * one finds N Granted holds and is ready only once each has had a first renewal (its "caches synced" line
 * says how long those took). The operator runs from dist/ (the compiled JavaScript the container image runs),
 * with the image's Node.js flags (the Dockerfile's ENTRYPOINT).
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import * as k8s from "@kubernetes/client-node";
import type { BenchContext } from "./context";
import { apiRequestCounts, difference } from "./lib/apimetrics";
import { pool } from "./lib/claims";
import Redis from "ioredis";
import { cpuSeconds, procStatusKb as status } from "./lib/proc";
import { envInt, fmt, now, sleep } from "./lib/stats";
import { imageCommand, operatorConfig, operatorNamespace, spawnOperator } from "./operator";
import * as scripts from "../src/backends/redis/scripts";
import { STATUS_REPORT_MS } from "../src/api/types";

/** How long MONITOR samples which scripts the idle operator runs (after the idle window: MONITOR slows Redis). */
const MIX_MS = 3000;

/**
 * The locks' leaseDurationSeconds (BENCH_SCALE_LEASE_SECONDS, default 30, the locks' own default): each hold is
 * renewed every third of it, so n holds cost n ÷ (lease/3) renewals a second, linear in n.
 */
const LEASE_SECONDS = envInt("BENCH_SCALE_LEASE_SECONDS", 30);

export async function scaleBenchmark(ctx: BenchContext): Promise<void> {
  const n = envInt("BENCH_SCALE_N", 10_000);
  const backend = process.env.BENCH_SCALE_BACKEND ?? "redis";
  const idleMs = envInt("BENCH_SCALE_IDLE_MS", 30_000);
  let createMs = 0;
  let start = 0;
  // Listing takes time linear in N (about 0.1 ms per object here, in pages of 500): 60 s, or 2 ms per lock beyond that.
  const syncTimeoutMs = Math.max(60_000, 2 * n);
  const granted = new Set<string>();
  let last = 0;
  let converged = () => {};
  const all = new Promise<void>((resolve) => (converged = resolve));
  const op = await operatorNamespace(ctx, "bench-scale", {
    compiled: true,
    nodeFlags: ["--trace-gc"], // one line per GC: what the JavaScript heap holds, to explain the RSS
    syncTimeoutMs,
    onClaimEvent: (type, claim, at) => {
      if (type === "DELETED" || claim.status?.phase !== "Granted" || granted.has(claim.metadata.name)) return;
      granted.add(claim.metadata.name);
      last = at;
      if (granted.size === n) converged();
    },
    prepare: async (api) => {
      const t0 = now();
      await pool(n, 16, (i) => api.createLock(`lock-${i}`, { backend, leaseDurationSeconds: LEASE_SECONDS }));
      await pool(n, 16, (i) => api.createClaim(`claim-${i}`, { lockName: `lock-${i}` }));
      createMs = now() - t0;
      ctx.log(`scale: ${n} locks and ${n} claims created in ${fmt(createMs / 1000, 1)} s; starting the operator`);
      start = now();
    },
  });
  try {
    const syncedMs = now() - start;
    const timeoutMs = envInt("BENCH_SCALE_TIMEOUT_MS", 1_800_000);
    let timer: NodeJS.Timeout | undefined;
    const progress = setInterval(() => ctx.log(`scale: ${granted.size}/${n} granted after ${fmt((now() - start) / 1000, 0)} s`), 30_000);
    await Promise.race([all, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`scale: ${granted.size}/${n} granted after ${timeoutMs} ms; ` +
      `operator errors: ${op.operator.output().split("\n").filter((l) => l.includes('"level":"error"')).slice(-3).join(" | ") || "none"}`)), timeoutMs)))])
      .finally(() => {
        clearTimeout(timer);
        clearInterval(progress);
      });
    const convergeMs = last - start;
    ctx.log(`scale: converged in ${fmt(convergeMs / 1000, 1)} s`);
    if (!op.pid) throw new Error("could not find the operator's process id");
    const cpuAtConverged = cpuSeconds(op.pid);
    // Idle is the steady state: every lock's first status report (STATUS_REPORT_MS after its grant) has fallen due.
    const settleMs = envInt("BENCH_SCALE_SETTLE_MS", STATUS_REPORT_MS + 30_000);
    ctx.log(`scale: measuring idle cost after ${fmt(settleMs / 1000, 0)} s`);
    await sleep(settleMs);
    const redis = new Redis(ctx.variables.KUBELOCK_TEST_REDIS_URL, { lazyConnect: true });
    await redis.connect();
    // Script calls only: INFO commandstats also counts every command a script runs inside Redis.
    const redisCalls = async () => [...(await redis.info("commandstats")).matchAll(/^cmdstat_(\w+):calls=(\d+)/gm)]
      .filter(([, cmd]) => cmd === "evalsha" || cmd === "eval").reduce((sum, [, , calls]) => sum + Number(calls), 0);
    const requestsBefore = await apiRequestCounts(ctx.kubeConfig);
    const cpuBefore = cpuSeconds(op.pid);
    const redisBefore = await redisCalls();
    await sleep(idleMs);
    const idleCpu = cpuSeconds(op.pid) - cpuBefore;
    const idleRedis = (await redisCalls()) - redisBefore;
    redis.disconnect();
    const mix = await scriptMix(ctx.variables.KUBELOCK_TEST_REDIS_URL, MIX_MS);
    const idleRequests = difference(requestsBefore, await apiRequestCounts(ctx.kubeConfig));
    const hwm = status(op.pid, "VmHWM");
    const heap = fullGcHeap(op.operator.output());
    const rss = status(op.pid, "VmRSS");
    const idleTotal = [...idleRequests.values()].reduce((a, b) => a + b, 0);
    const phases = tally((await op.api.listClaims()).map((c) => c.status?.phase ?? "none"));
    const events = await ctx.kubeConfig.makeApiClient(k8s.CoreV1Api).listNamespacedEvent({ namespace: op.namespace });
    const reasons = tally(events.items.map((e) => `${e.involvedObject.kind} ${e.reason}`));

    const lost = (await op.api.listClaims()).filter((c) => c.status?.phase === "Lost").length;

    // Restart: the holds stay in Redis (an operator never releases them on shutdown); the fresh one renews each
    // once before it reports ready.
    // A failure here is reported in its row; the figures above stand.
    let restarted: string;
    try {
      await op.operator.stop();
      const restartAt = now();
      const again = await spawnOperator(op.namespace, operatorConfig(ctx, "bench-scale"), [], undefined, true, undefined, syncTimeoutMs);
      const restartMs = now() - restartAt;
      await sleep(3000);
      const firstRenewalsMs = Number(/"caches synced".*?"firstRenewalsMs":(\d+)/.exec(again.output())?.[1] ?? NaN);
      const lostAfterRestart = (await op.api.listClaims()).filter((c) => c.status?.phase === "Lost").length;
      await again.stop();
      restarted = `${fmt(restartMs / 1000, 1)} s, of which first renewals ${fmt(firstRenewalsMs / 1000, 1)} s; claims Lost 3 s later: ${lostAfterRestart}`;
    } catch (err) {
      restarted = `failed: ${err instanceof Error ? err.message : String(err)}`;
    }
    ctx.log(`scale: restarted with ${n} Granted holds: ${restarted}`);
    ctx.targets.push({ target: `4 scale: ${n} locks and claims with peak RSS ≤ 200 MiB`, measured: `${fmt(hwm / 1024, 0)} MiB (VmHWM), converged in ${fmt(convergeMs / 1000, 0)} s`, met: hwm / 1024 <= 200 });
    const renewalsPerSecond = n / (LEASE_SECONDS / 3);
    ctx.findings.push(`4 scale: ${n} locks converged in ${fmt(convergeMs / 1000, 0)} s (${fmt(n / (convergeMs / 1000), 1)} grants/s), peak RSS ${fmt(hwm / 1024, 0)} MiB` +
      (heap ? ` (the JavaScript heap held at most ${fmt(heap.liveMiB, 0)} MiB live after a full collection, ${fmt((heap.liveMiB * 1024) / (2 * n), 1)} KiB per lock or claim: ` +
        "the caches' objects and the per-hold state; the rest is V8's reserved headroom, code and buffers)" : "") + ", " +
      `${lost} claims Lost. Idle (${fmt(settleMs / 1000, 0)} s after convergence, for ${idleMs / 1000} s): ${fmt((100 * idleCpu) / (idleMs / 1000), 1)}% of one core, ${fmt(idleTotal / (idleMs / 1000), 1)} API requests/s and ` +
      `${fmt(idleRedis / (idleMs / 1000), 0)} Redis script calls/s (by script: ${mix}), against ${fmt(renewalsPerSecond, 0)}/s backend renewals that ${n} holds with a ${LEASE_SECONDS} s lease need ` +
      "(one per hold per third of its lease: the cost of keeping TTL-based holds alive, done by the renewer without reconciles)" +
      (idleTotal === 0 ? "; no API request while nothing changes." : `; API requests while idle: ${[...idleRequests].map(([k, v]) => `${k} ${v}`).join(", ")} (lock status reports of renewals: at most one per lock per 5 minutes, and 20 a second in all).`));
    const image = imageCommand(join(__dirname, ".."));
    ctx.report.heading("4. Scale");
    ctx.report.text(
      `${n} DistributedLocks (backend ${backend}, maxHolders 1, leaseDurationSeconds ${LEASE_SECONDS}) and ${n} LockClaims (one per lock) were created ` +
        `(16 at a time, ${fmt(createMs / 1000, 1)} s) before the operator started; then the operator was started for the namespace. ` +
        `One run (converging ${n} locks takes long enough that repeating it five times does not fit the time budget; BENCH_SCALE_N sets N). ` +
        `The operator runs from dist/ as in the container image: \`node ${image.flags.join(" ")} ${image.script} operator\`. ` +
        "Memory and CPU are read from /proc/<operator pid>/status and /proc/<pid>/stat.",
    );
    ctx.report.table(["measure", "value"], [
      ["operator start → caches synced (process start, list of locks, claims, pods)", `${fmt(syncedMs / 1000, 1)} s`],
      [`operator start → all ${n} claims observed Granted`, `${fmt(convergeMs / 1000, 1)} s (${fmt(n / (convergeMs / 1000), 1)} grants/s)`],
      ["operator CPU until converged (utime + stime)", `${fmt(cpuAtConverged, 1)} s`],
      [`restart with ${n} Granted holds: start → caches synced (ready: every hold found renewed once)`,
        restarted],
      ["operator peak RSS (VmHWM)", `${fmt(hwm / 1024, 0)} MiB (VmRSS now ${fmt(rss / 1024, 0)} MiB)`],
      ["JavaScript heap after full collections (--trace-gc Mark-Compact)", heap
        ? `at most ${fmt(heap.liveMiB, 0)} MiB live (${fmt((heap.liveMiB * 1024) / (2 * n), 1)} KiB per lock or claim), after the last ${fmt(heap.lastLiveMiB, 0)} MiB; ` +
          `at most ${fmt(heap.committedMiB, 0)} MiB reserved for it; ${heap.count} full collections`
        : "no full collection ran"],
      [`operator CPU while idle (${idleMs / 1000} s, from ${fmt(settleMs / 1000, 0)} s after convergence)`, `${fmt(idleCpu, 2)} s = ${fmt((100 * idleCpu) / (idleMs / 1000), 1)}% of one core`],
      [`API requests while idle (${idleMs / 1000} s)`, `${fmt(idleTotal / (idleMs / 1000), 1)}/s: ${[...idleRequests].map(([k, v]) => `${k} ${v}`).join(", ") || "none"}`],
      [`Redis script calls (EVALSHA) while idle (${idleMs / 1000} s; INFO commandstats, all clients)`, `${fmt(idleRedis / (idleMs / 1000), 0)}/s (renewals expected: ${fmt(renewalsPerSecond, 0)}/s)`],
      [`Redis script calls by script, sampled with MONITOR for ${MIX_MS / 1000} s after the idle window`, mix],
      ["claims by phase at the end", phases],
      ["Events in the namespace by reason (whole run)", reasons],
    ]);
  } finally {
    await op.stop();
  }
}

function tally(values: string[]): string {
  const counts = new Map<string, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(", ") || "none";
}

/**
 * The JavaScript heap as the operator's --trace-gc lines report it at each full collection
 * ("Mark-Compact 95.3 (101.2) -> 80.1 (99.0) MB": used (reserved) before -> after): the most it held live
 * after one, the last such figure, and the most it reserved.
 */
function fullGcHeap(output: string): { liveMiB: number; lastLiveMiB: number; committedMiB: number; count: number } | undefined {
  const runs = [...output.matchAll(/Mark-Compact[^\n]*?([\d.]+) \(([\d.]+)\) -> ([\d.]+) \(([\d.]+)\) MB/g)]
    .map((m) => ({ live: Number(m[3]), committed: Math.max(Number(m[2]), Number(m[4])) }));
  if (runs.length === 0) return undefined;
  // V8 prints MB meaning MiB (2^20 bytes).
  return { liveMiB: Math.max(...runs.map((r) => r.live)), lastLiveMiB: runs[runs.length - 1].live, committedMiB: Math.max(...runs.map((r) => r.committed)), count: runs.length };
}

/** Script calls a second by script (EVALSHA by SHA-1 of src/backends/redis/scripts.ts's scripts), sampled with MONITOR. */
async function scriptMix(url: string, ms: number): Promise<string> {
  const names = new Map(Object.entries(scripts).filter(([, lua]) => typeof lua === "string")
    .map(([name, lua]) => [createHash("sha1").update(lua as string).digest("hex"), name]));
  const redis = new Redis(url);
  const counts = new Map<string, number>();
  const monitor = await redis.monitor();
  monitor.on("monitor", (_time: string, args: string[]) => {
    if (args[0]?.toLowerCase() !== "evalsha") return;
    const name = names.get(args[1]) ?? "other";
    counts.set(name, (counts.get(name) ?? 0) + 1);
  });
  await sleep(ms);
  monitor.disconnect();
  redis.disconnect();
  return [...counts].sort((a, b) => b[1] - a[1]).map(([name, n]) => `${name} ${fmt(n / (ms / 1000), 0)}/s`).join(", ") || "none";
}
