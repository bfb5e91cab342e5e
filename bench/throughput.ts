/**
 * Benchmark 3: throughput. 1,000 claims over 100 locks (maxHolders 1); a holder deletes each claim as soon
 * as a watch shows it Granted; grants per second until the last grant is observed. Baseline in the same
 * invocation: the API server's raw rate of merge patches to claim status, sequential and 16 at once. Floor,
 * interleaved run by run: the same workload served by the least granter (bench/lib/least-granter.ts).
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import * as k8s from "@kubernetes/client-node";
import { API_VERSION, CLAIM_PLURAL, GROUP, VERSION } from "../src/api/types";
import { createNamespace, eventually } from "../test/support/env";
import { Api } from "../test/support/operator";
import type { BenchContext } from "./context";
import { apiRequestCounts, difference } from "./lib/apimetrics";
import { ClaimWatch, patchClaimStatus, pool } from "./lib/claims";
import { envInt, fmt, now, ratio, summarize, type RunResult, type Summary } from "./lib/stats";
import { operatorNamespace, type OperatorNamespace } from "./operator";

const CONCURRENCY = 16;
/** The subject name of the least granter (bench/lib/least-granter.ts). */
const FLOOR = "least";

export async function throughputBenchmark(ctx: BenchContext): Promise<void> {
  const claims = envInt("BENCH_TP_CLAIMS", 150);
  const locks = envInt("BENCH_TP_LOCKS", 15);
  const timeoutMs = envInt("BENCH_TP_TIMEOUT_MS", 300_000);
  const backends = (process.env.BENCH_TP_BACKENDS ?? "kubernetes,redis").split(",").filter(Boolean);
  const raw = await rawPatchRates(ctx);
  const op = await operatorNamespace(ctx, "bench-tp");
  const least = await leastGranterNamespace(ctx);
  // Each subject: a backend of the operator, or the least granter (FLOOR); interleaved run by run.
  const subjects = [...backends, FLOOR].map((backend) => ({ backend, runs: [] as RunResult[], requests: new Map<string, number>() }));
  const served = (backend: string) => (backend === FLOOR ? least : op);
  try {
    for (const backend of backends) await pool(locks, CONCURRENCY, (l) => op.api.createLock(`${backend}-${l}`, { backend }));
    for (const { backend } of subjects) await throughputRun(served(backend), backend, "warm", Math.min(claims, locks), locks, timeoutMs);
    for (let r = 1; r <= ctx.runs; r++) {
      for (const { backend, runs, requests } of subjects) {
        const before = await apiRequestCounts(ctx.kubeConfig);
        runs.push(await throughputRun(served(backend), backend, String(r), claims, locks, timeoutMs));
        for (const [key, n] of difference(before, await apiRequestCounts(ctx.kubeConfig))) requests.set(key, (requests.get(key) ?? 0) + n);
        ctx.log(`throughput: ${backend}: run ${r}/${ctx.runs}: ${fmt(runs[runs.length - 1].rate, 1)} grants/s`);
      }
    }
  } finally {
    await op.stop();
    await least.stop();
  }
  const measured = subjects.map(({ backend, runs, requests }) =>
    ({ backend, summary: summarize(runs), perGrant: new Map([...requests].map(([k, n]) => [k, n / (claims * ctx.runs)])) }));
  const floor = measured.find((m) => m.backend === FLOOR)!;
  const results = measured.filter((m) => m !== floor);

  const { report } = ctx;
  report.heading("3. Throughput: grants per second through the operator");
  report.text(
    `${claims} LockClaims over ${locks} DistributedLocks (maxHolders 1, claim i on lock i mod ${locks}), created ${CONCURRENCY} at a time; ` +
      "a holder deletes each claim as soon as the watch shows it Granted. Rate = claims ÷ (first create → last Granted observed); " +
      "latency = each claim's create → its Granted observed (queueing included). One operator process (default settings: 16 lock workers). " +
      `Baseline, same invocation, a namespace with no operator: merge patches of claim status, one at a time and ${CONCURRENCY} at once (one claim per worker). ` +
      `Floor, same invocation, interleaved run by run with the operator: the least granter (bench/lib/least-granter.ts), a process that grants each lock's claims ` +
      "in the order its watch saw them with one status patch each (Granted) and nothing else: no backend, no Pending, no lock status; any operator must " +
      "make those requests too. " +
      `Medians of ${ctx.runs} runs (plus one unmeasured warm-up of ${Math.min(claims, locks)} claims per subject).` +
      (claims === 1000 && locks === 100 ? "" : ` The reference shape is 1,000 claims over 100 locks (BENCH_TP_CLAIMS=1000 BENCH_TP_LOCKS=100); ` +
        `this run keeps the same ${claims / locks} claims per lock (the same queue depth, so the same work per grant) at ${claims}/${locks}, so that ${ctx.runs} runs of both backends fit the time budget.`),
  );
  report.table(["what", "per second", "p50 ms", "p99 ms", "grants/s ÷ this", "per-run rates"], [
    ["raw: status patch, sequential", fmt(raw.sequential.rate, 0), fmt(raw.sequential.p50), fmt(raw.sequential.p99), "", raw.sequential.rates.map((x) => fmt(x, 0)).join(" ")],
    [`raw: status patch, ${CONCURRENCY} concurrent`, fmt(raw.concurrent.rate, 0), fmt(raw.concurrent.p50), fmt(raw.concurrent.p99), "", raw.concurrent.rates.map((x) => fmt(x, 0)).join(" ")],
    ...results.map(({ backend, summary: s }) => [`kubelock grants, ${backend} backend`, fmt(s.rate, 1), fmt(s.p50), fmt(s.p99),
      `${ratio(s.rate, raw.sequential.rate)} seq, ${ratio(s.rate, raw.concurrent.rate)} conc`, s.rates.map((x) => fmt(x, 1)).join(" ")]),
    ["floor: the least granter (no backend)", fmt(floor.summary.rate, 1), fmt(floor.summary.p50), fmt(floor.summary.p99),
      `${ratio(floor.summary.rate, raw.sequential.rate)} seq, ${ratio(floor.summary.rate, raw.concurrent.rate)} conc`, floor.summary.rates.map((x) => fmt(x, 1)).join(" ")],
  ]);
  report.text("API requests per grant during the measured runs (the API server's `apiserver_request_total`, all clients: operator, benchmark creating and deleting claims, Events; watches excluded):");
  const keys = [...new Set(measured.flatMap((r) => [...r.perGrant.keys()]))].sort();
  report.table(["request", ...measured.map((r) => (r === floor ? "least granter" : r.backend))], [
    ...keys.map((k) => [k, ...measured.map((r) => fmt(r.perGrant.get(k) ?? 0, 2))]),
    ["total", ...measured.map((r) => fmt([...r.perGrant.values()].reduce((a, b) => a + b, 0), 2))],
  ]);
  for (const { backend, summary, perGrant } of results) {
    const total = [...perGrant.values()].reduce((a, b) => a + b, 0);
    const per = (k: string) => perGrant.get(k) ?? 0;
    const own = per("POST lockclaims") + per("DELETE lockclaims");
    const leases = [...perGrant].filter(([k]) => k.endsWith(" leases")).reduce((a, [, n]) => a + n, 0);
    ctx.findings.push(`3 ${backend}: ${fmt(total, 1)} API requests per grant (table in section 3; ${fmt(total - own, 1)} by the operator, ${fmt(own, 1)} the benchmark's own create and delete), ` +
      `so the API server's ~${fmt(raw.concurrent.rate, 0)} status patches/s here cap grants near ${fmt(raw.concurrent.rate / total, 0)}/s before anything else; ` +
      `200 grants/s would need it to serve ~${fmt(200 * total, 0)} requests/s. Per grant: ${fmt(per("PATCH lockclaims/status"), 1)} claim status patches ` +
      "(Granted; Pending only for a claim still waiting a quarter of a second after it arrived; place moves batched every 2 s per lock; none for a deleted claim), " +
      `${fmt(per("PATCH distributedlocks/status"), 1)} lock status patches (the fencing mark before a claim's Granted only where it must grow: ` +
      "once per 1000 grants on a counter backend, never on the Lease backend; holders and counts at most every 2 s per lock), " +
      `${fmt(per("PATCH lockclaims"), 1)} claim metadata patches (none expected: claims carry no finalizer; a deleted claim's hold is released on its deletion), ` +
      `${fmt(per("POST events"), 1)} Events (none per grant)` + (leases > 0 ? `, ${fmt(leases, 1)} Lease requests (the Lease backend: a hand-off is one conditional update of the slot Lease; ` +
      "a create when a free slot is taken, a DELETE when nobody takes a released one over; reads from its cache)." : "."));
    const byOperator = total - own;
    const requestLimit = backend === "kubernetes" ? 4 : 3;
    ctx.targets.push({ target: `3 operator API requests per grant (${backend} backend) ≤ ${requestLimit}`, measured: `${fmt(byOperator, 1)} (${fmt(total, 1)} with the benchmark's own create and delete)`, met: byOperator <= requestLimit });
    ctx.targets.push({ target: `3 throughput (${backend} backend) ≥ 200 grants/s`, measured: `${fmt(summary.rate, 1)} grants/s`, met: summary.rate >= 200 });
    // The floor, counted: a grant needs at least the claim's Granted, plus the client's own create and delete (and
    // the Lease backend's update of the slot): at the raw patch rate, that many requests per grant bound the rate
    // from above. A claim that waits also shows its place (Pending). The floor, measured: the least granter.
    const floorRequests = 1 + own + (backend === "kubernetes" ? 1 : 0);
    const pending = Math.max(0, per("PATCH lockclaims/status") - 1);
    const leastTotal = [...floor.perGrant.values()].reduce((a, b) => a + b, 0);
    ctx.findings.push(`3 ${backend}: floor of the throughput ratio: at least ${fmt(floorRequests, 1)} requests per grant (the claim's Granted, ` +
      `the client's create and delete${backend === "kubernetes" ? ", the slot Lease's update" : ""}) allow at most ${ratio(raw.concurrent.rate / floorRequests, raw.concurrent.rate)} of the raw ` +
      `concurrent patch rate when every request costs what a status patch costs, ${ratio(raw.concurrent.rate / (floorRequests + pending), raw.concurrent.rate)} with the ` +
      `${fmt(pending, 1)} Pending writes per grant of claims that queued here (10 per lock); measured ${ratio(summary.rate, raw.concurrent.rate)} at ${fmt(total, 1)} requests per grant. ` +
      `Measured floor in the same runs: the least granter (one Granted patch per claim, no backend${backend === "kubernetes" ? ", so not even the slot Lease's update" : ""}) ` +
      `granted ${fmt(floor.summary.rate, 1)}/s = ${ratio(floor.summary.rate, raw.concurrent.rate)} of the raw concurrent patch rate at ${fmt(leastTotal, 1)} requests per grant; ` +
      `ours ${fmt(summary.rate, 1)}/s is ${fmt(summary.rate / floor.summary.rate, 2)} of its rate. ` +
      "Every write is also delivered to two watches (the granter's and this benchmark's), and on 2 cores the API server, its etcd, the granter and this benchmark share.");
    ctx.targets.push({
      target: `3 throughput (${backend} backend) ≥ 0.3× raw status-patch rate (${CONCURRENCY} concurrent)`,
      measured: `${ratio(summary.rate, raw.concurrent.rate)} (${fmt(raw.concurrent.rate, 0)} patches/s; sequential ${fmt(raw.sequential.rate, 0)}/s → ${ratio(summary.rate, raw.sequential.rate)}); ` +
        `floor, the least granter: ${ratio(floor.summary.rate, raw.concurrent.rate)}`,
      met: summary.rate >= 0.3 * raw.concurrent.rate,
    });
  }
}

export async function throughputRun(op: Pick<OperatorNamespace, "api" | "watch">, backend: string, run: string, claims: number, locks: number, timeoutMs: number): Promise<RunResult> {
  const prefix = `${backend}-t${run}-`;
  const createdAt = new Map<string, number>();
  const latencies: number[] = [];
  const granted = new Set<string>();
  let deleted = 0;
  let lastGrant = 0;
  const failures: string[] = [];
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));
  const off = op.watch.on((type, claim, at) => {
    const name = claim.metadata.name;
    if (!name.startsWith(prefix)) return;
    if (type === "DELETED") {
      if (++deleted === claims) finish();
      return;
    }
    if (claim.status?.phase !== "Granted" || granted.has(name)) return;
    granted.add(name);
    lastGrant = at;
    latencies.push(at - (createdAt.get(name) ?? at));
    op.api.deleteClaim(name).catch((err: Error) => failures.push(`delete ${name}: ${err.message}`));
  });
  try {
    const start = now();
    await pool(claims, CONCURRENCY, async (i) => {
      createdAt.set(`${prefix}${i}`, now());
      await op.api.createClaim(`${prefix}${i}`, { lockName: `${backend}-${i % locks}` });
    });
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([done, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(
      `throughput ${backend} run ${run}: after ${timeoutMs} ms, ${granted.size}/${claims} granted, ${deleted} deleted${failures.length ? `; ${failures[0]}` : ""}`)), timeoutMs)))])
      .finally(() => clearTimeout(timer));
    return { rate: claims / ((lastGrant - start) / 1000), latencies };
  } finally {
    off();
  }
}

/** Merge patches of claim status in a namespace no operator watches: one at a time, and CONCURRENCY at once. */
async function rawPatchRates(ctx: BenchContext): Promise<{ sequential: Summary; concurrent: Summary }> {
  const sequentialPatches = envInt("BENCH_RAW_PATCHES", 300);
  const namespace = await createNamespace("bench-rawpatch", ctx.kubeConfig);
  const custom = ctx.kubeConfig.makeApiClient(k8s.CustomObjectsApi);
  const name = (i: number) => `probe-${i}`;
  await pool(CONCURRENCY, CONCURRENCY, (i) => custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: CLAIM_PLURAL, body: {
    apiVersion: API_VERSION, kind: "LockClaim", metadata: { name: name(i), namespace }, spec: { lockName: "none" },
  } }));
  let seq = 0;
  const measure = async (patches: number, concurrency: number): Promise<RunResult> => {
    const latencies: number[] = [];
    const start = now();
    await Promise.all(Array.from({ length: concurrency }, async (_, w) => {
      for (let i = 0; i < patches / concurrency; i++) {
        const t0 = now();
        await patchClaimStatus(custom, namespace, name(w), { phase: "Pending", position: ++seq });
        latencies.push(now() - t0);
      }
    }));
    return { rate: latencies.length / ((now() - start) / 1000), latencies };
  };
  const sequential: RunResult[] = [];
  const concurrent: RunResult[] = [];
  try {
    await measure(50, CONCURRENCY); // warm-up
    for (let r = 0; r < ctx.runs; r++) {
      sequential.push(await measure(sequentialPatches, 1));
      concurrent.push(await measure(sequentialPatches * 3, CONCURRENCY));
    }
  } finally {
    await ctx.kubeConfig.makeApiClient(k8s.CoreV1Api).deleteNamespace({ name: namespace }).catch(() => undefined);
  }
  return { sequential: summarize(sequential), concurrent: summarize(concurrent) };
}

/** A fresh namespace served by the least granter (bench/lib/least-granter.ts) instead of the operator. */
async function leastGranterNamespace(ctx: BenchContext): Promise<Pick<OperatorNamespace, "api" | "watch"> & { stop(): Promise<void> }> {
  const namespace = await createNamespace("bench-least", ctx.kubeConfig);
  const watch = new ClaimWatch(namespace, ctx.kubeConfig);
  await watch.start();
  const child = spawn(process.execPath, ["--import", "tsx", join(__dirname, "lib/least-granter.ts"), namespace], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (d: Buffer) => (output += d));
  child.stderr.on("data", (d: Buffer) => (output += d));
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  const stop = async () => {
    watch.stop();
    if (child.exitCode === null) child.kill("SIGTERM");
    await exited;
  };
  try {
    await eventually("the least granter's watch", () => (output.includes("caches synced") ? true : child.exitCode === null ? undefined : Promise.reject(new Error(output))), 60_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return { api: new Api(namespace, ctx.kubeConfig), watch, stop };
}
