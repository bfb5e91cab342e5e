/**
 * Benchmark 4: scale. N locks and N claims (one per lock) exist before the operator starts; time from
 * starting it until every claim is observed Granted, its peak RSS (VmHWM), and its CPU and API requests
 * while nothing changes afterwards.
 */
import * as k8s from "@kubernetes/client-node";
import type { BenchContext } from "./context";
import { apiRequestCounts, difference } from "./lib/apimetrics";
import { pool } from "./lib/claims";
import { cpuSeconds, procStatusKb as status } from "./lib/proc";
import { envInt, fmt, now, sleep } from "./lib/stats";
import { operatorNamespace } from "./operator";


export async function scaleBenchmark(ctx: BenchContext): Promise<void> {
  const n = envInt("BENCH_SCALE_N", 1000);
  const backend = process.env.BENCH_SCALE_BACKEND ?? "redis";
  const idleMs = envInt("BENCH_SCALE_IDLE_MS", 10_000);
  let createMs = 0;
  let start = 0;
  const op = await operatorNamespace(ctx, "bench-scale", {
    prepare: async (api) => {
      const t0 = now();
      await pool(n, 16, (i) => api.createLock(`lock-${i}`, { backend }));
      await pool(n, 16, (i) => api.createClaim(`claim-${i}`, { lockName: `lock-${i}` }));
      createMs = now() - t0;
      ctx.log(`scale: ${n} locks and ${n} claims created in ${fmt(createMs / 1000, 1)} s; starting the operator`);
      start = now();
    },
  });
  try {
    const syncedMs = now() - start;
    const granted = new Set<string>();
    let last = 0;
    const all = new Promise<void>((resolve) => {
      op.watch.on((type, claim, at) => {
        if (type === "DELETED" || claim.status?.phase !== "Granted" || granted.has(claim.metadata.name)) return;
        granted.add(claim.metadata.name);
        last = at;
        if (granted.size === n) resolve();
      });
    });
    const timeoutMs = envInt("BENCH_SCALE_TIMEOUT_MS", 600_000);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`scale: ${granted.size}/${n} granted after ${timeoutMs} ms`)), timeoutMs)))])
      .finally(() => clearTimeout(timer));
    const convergeMs = last - start;
    ctx.log(`scale: converged in ${fmt(convergeMs / 1000, 1)} s`);
    if (!op.pid) throw new Error("could not find the operator's process id");
    const cpuAtConverged = cpuSeconds(op.pid);
    await sleep(1000); // let the last writes settle
    const requestsBefore = await apiRequestCounts(ctx.kubeConfig);
    const cpuBefore = cpuSeconds(op.pid);
    await sleep(idleMs);
    const idleCpu = cpuSeconds(op.pid) - cpuBefore;
    const idleRequests = difference(requestsBefore, await apiRequestCounts(ctx.kubeConfig));
    const hwm = status(op.pid, "VmHWM");
    const rss = status(op.pid, "VmRSS");
    const idleTotal = [...idleRequests.values()].reduce((a, b) => a + b, 0);
    const phases = tally((await op.api.listClaims()).map((c) => c.status?.phase ?? "none"));
    const events = await ctx.kubeConfig.makeApiClient(k8s.CoreV1Api).listNamespacedEvent({ namespace: op.namespace });
    const reasons = tally(events.items.map((e) => `${e.involvedObject.kind} ${e.reason}`));

    const lost = (await op.api.listClaims()).filter((c) => c.status?.phase === "Lost").length;
    if (lost > 0) {
      ctx.findings.push(`4 scale: ${lost} of ${n} claims were Lost within ${fmt((now() - start) / 1000, 0)} s of the operator starting: their backend holds (30 s lease) expired before ` +
        "the operator renewed them. Renewal rides on the same lock queue (16 workers) as everything else (a requeue after lease/3 = 10 s, then a full reconcile: finalizer check, holders(), " +
        "renew, claim and lock status writes; the lock status changes every renewal because holders[].renewTime does), so once a full pass over all locks takes longer than the lease, " +
        "holds expire. Grants made are then taken back: a liveness and capacity limit (no safety issue: the claims say Lost).");
    }
    ctx.report.heading("4. Scale");
    ctx.report.text(
      `${n} DistributedLocks (backend ${backend}, maxHolders 1, default leaseDurationSeconds 30) and ${n} LockClaims (one per lock) were created ` +
        `(16 at a time, ${fmt(createMs / 1000, 1)} s) before the operator started; then the operator was started for the namespace. ` +
        `One run (converging ${n} locks takes long enough that repeating it five times does not fit the time budget; BENCH_SCALE_N sets N). ` +
        "Memory and CPU are read from /proc/<operator pid>/status and /proc/<pid>/stat.",
    );
    ctx.report.table(["measure", "value"], [
      ["operator start → caches synced (process start, tsx, list of locks, claims, pods)", `${fmt(syncedMs / 1000, 1)} s`],
      [`operator start → all ${n} claims observed Granted`, `${fmt(convergeMs / 1000, 1)} s (${fmt(n / (convergeMs / 1000), 1)} grants/s)`],
      ["operator CPU until converged (utime + stime)", `${fmt(cpuAtConverged, 1)} s`],
      ["operator peak RSS (VmHWM)", `${fmt(hwm / 1024, 0)} MiB (VmRSS now ${fmt(rss / 1024, 0)} MiB)`],
      [`operator CPU while idle after convergence (${idleMs / 1000} s)`, `${fmt(idleCpu, 2)} s = ${fmt((100 * idleCpu) / (idleMs / 1000), 1)}% of one core`],
      [`API requests while idle (${idleMs / 1000} s)`, `${fmt(idleTotal / (idleMs / 1000), 1)}/s: ${[...idleRequests].map(([k, v]) => `${k} ${v}`).join(", ") || "none"}`],
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
