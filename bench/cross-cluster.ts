/**
 * Benchmark 7: clusters sharing a backend. Four clusters (the environment's API server and three more, each with
 * its own etcd), one operator each with its own clusterName, all on the environment's Redis. Per run: 4 locks of
 * the same names in every cluster and 200 claims over them, created at once round robin over locks and clusters;
 * each claim is deleted (its hold released) the moment a watch sees it Granted. Measured: grants per second, and
 * the order the grants followed (fencing tokens, per lock) against the order claims joined the backend's queue
 * (sampled from `waiting()` every few ms) and against the order they were created, as inversions (pairs served out
 * of order) and Kendall's tau. Baseline in the same run, alternating run by run: the operators of
 * BENCH_QUEUE_BEFORE_REF, the commit before the backend queue, on the same workload.
 */
import { randomBytes } from "node:crypto";
import * as k8s from "@kubernetes/client-node";
import type { LockBackend } from "../src/backends/backend";
import { createBackend } from "../src/backends/registry";
import { controlPlaneBinaries, startControlPlane, type ControlPlane } from "../test/env/controlplane";
import { installCrds } from "../test/env/environment";
import { kubeConfig } from "../test/support/env";
import { Api, type OperatorProcess } from "../test/support/operator";
import { checkout } from "./before-after";
import type { BenchContext } from "./context";
import { ClaimWatch, pool } from "./lib/claims";
import { envInt, fmt, median, now, ratio, sleep } from "./lib/stats";
import { spawnOperator } from "./operator";

const DEFAULT_BEFORE_REF = "4eee3e3";
const CLUSTERS = 4;
const SAMPLE_MS = 5;

interface Cluster { kubeconfig: string; kc: k8s.KubeConfig }
interface Side { label: string; namespace: string; operators: OperatorProcess[]; watches: ClaimWatch[]; apis: Api[] }
interface RunStats { rate: number; entryInversions: number; entryPairs: number; creationInversions: number; creationPairs: number }

export async function crossClusterBenchmark(ctx: BenchContext): Promise<void> {
  const claims = envInt("BENCH_XC_CLAIMS", 200);
  const locks = envInt("BENCH_XC_LOCKS", 4);
  const ref = process.env.BENCH_QUEUE_BEFORE_REF ?? DEFAULT_BEFORE_REF;
  const tag = randomBytes(3).toString("hex");
  const planes: ControlPlane[] = [];
  const sides: Side[] = [];
  const worktree = checkout(ref);
  const sampler = await createBackend({ name: "redis", type: "redis", kubeConfig: ctx.kubeConfig, settings: { url: ctx.variables.KUBELOCK_TEST_REDIS_URL, keyPrefix: `xc-${tag}` } });
  try {
    const binDir = await controlPlaneBinaries();
    const clusters: Cluster[] = [{ kubeconfig: ctx.variables.KUBECONFIG, kc: ctx.kubeConfig }];
    for (let i = 2; i <= CLUSTERS; i++) {
      ctx.log(`cross-cluster: starting control plane ${i}`);
      const plane = await startControlPlane(binDir, { name: `bench-cluster${i}`, controllerManager: false });
      planes.push(plane);
      await installCrds(ctx.variables.KUBELOCK_TEST_KUBECTL, plane.kubeconfig);
      clusters.push({ kubeconfig: plane.kubeconfig, kc: kubeConfig(plane.kubeconfig) });
    }
    for (const [label, root] of [["before", worktree.root], ["after", undefined]] as const) {
      const namespace = `bench-xc-${label}-${tag}`;
      const side: Side = { label, namespace, operators: [], watches: [], apis: [] };
      sides.push(side);
      for (const [c, cluster] of clusters.entries()) {
        await cluster.kc.makeApiClient(k8s.CoreV1Api).createNamespace({ body: { metadata: { name: namespace } } });
        const config = `clusterName: c${c + 1}\nbackends:\n  - name: redis\n    type: redis\n    redis: { url: "${ctx.variables.KUBELOCK_TEST_REDIS_URL}", keyPrefix: xc-${tag} }\n`;
        side.operators.push(await spawnOperator(namespace, config, [], root, false, cluster.kubeconfig));
        const watch = new ClaimWatch(namespace, cluster.kc);
        await watch.start();
        side.watches.push(watch);
        side.apis.push(new Api(namespace, cluster.kc));
      }
    }
    const results = new Map<string, RunStats[]>(sides.map((s) => [s.label, []]));
    for (let r = 1; r <= ctx.runs; r++) {
      for (const side of r % 2 === 1 ? sides : [...sides].reverse()) {
        results.get(side.label)!.push(await run(side, `r${r}`, claims, locks, side.label === "after" ? sampler : undefined));
        ctx.log(`cross-cluster: ${side.label} run ${r}/${ctx.runs}: ${fmt(results.get(side.label)!.at(-1)!.rate, 1)} grants/s`);
      }
    }
    write(ctx, results, { claims, locks, ref });
  } finally {
    for (const side of sides) {
      side.watches.forEach((w) => w.stop());
      await Promise.allSettled(side.operators.map((o) => o.stop()));
    }
    await sampler.close();
    for (const plane of planes) await plane.stop();
    worktree.remove();
  }
}

/** One run: locks `<run>-l<j>` in every cluster, `claims` claims over them, each deleted once Granted. */
async function run(side: Side, runId: string, claims: number, locks: number, sampler?: LockBackend): Promise<RunStats> {
  const lockName = (j: number) => `${runId}-l${j}`;
  await pool(side.apis.length * locks, 8, (i) => side.apis[i % side.apis.length].createLock(lockName(Math.floor(i / side.apis.length)), { backend: "redis" }));
  const name = (i: number) => `${runId}-c${String(i).padStart(4, "0")}`;
  const granted = new Map<string, { token: bigint; uid: string }>();
  let done!: () => void;
  const all = new Promise<void>((resolve) => (done = resolve));
  const stops = side.watches.map((watch, c) => watch.on((type, claim) => {
    const n = claim.metadata.name;
    if (type === "DELETED" || claim.status?.phase !== "Granted" || !n.startsWith(`${runId}-`) || granted.has(n)) return;
    granted.set(n, { token: BigInt(claim.status.fencingToken!), uid: claim.metadata.uid! });
    void side.apis[c].deleteClaim(n).catch(() => undefined);
    if (granted.size === claims) done();
  }));
  // The backend queue's entry order, per lock: holderIds (claim UIDs) in the order they last joined it. An entry
  // withdrawn (its cluster queued a claim of higher priority first) and queued again joins at the back.
  const entered = Array.from({ length: locks }, () => new Map<string, number>());
  const present = Array.from({ length: locks }, () => new Set<string>());
  let joins = 0;
  let sampling = !!sampler;
  const sampling$ = (async () => {
    while (sampling) {
      await Promise.all(entered.map(async (seen, j) => {
        const sample = await sampler!.waiting(`${side.namespace}/${lockName(j)}`).catch(() => undefined);
        if (!sample) return;
        const now = new Set(sample.map((w) => w.holderId));
        for (const id of now) if (!present[j].has(id)) seen.set(id, joins++);
        present[j] = now;
      }));
      await sleep(SAMPLE_MS);
    }
  })();
  const started = now();
  try {
    await pool(claims, 16, (i) => side.apis[Math.floor(i / locks) % side.apis.length].createClaim(name(i), { lockName: lockName(i % locks) }));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${side.label}: ${granted.size} of ${claims} claims granted in 10 min`)), 600_000)));
    await Promise.race([all, timedOut]).finally(() => clearTimeout(timer));
  } finally {
    sampling = false;
    await sampling$;
    stops.forEach((stop) => stop());
  }
  const rate = claims / ((now() - started) / 1000);
  const stats: RunStats = { rate, entryInversions: 0, entryPairs: 0, creationInversions: 0, creationPairs: 0 };
  for (let j = 0; j < locks; j++) {
    const served = Array.from({ length: claims }, (_, i) => i).filter((i) => i % locks === j).map((i) => ({ created: i, ...granted.get(name(i))! }));
    const count = (order: number[], tokens: bigint[]) => {
      let inversions = 0;
      let pairs = 0;
      for (let a = 0; a < order.length; a++) for (let b = a + 1; b < order.length; b++) {
        pairs++;
        if ((order[a] < order[b]) !== (tokens[a] < tokens[b])) inversions++;
      }
      return [inversions, pairs];
    };
    const [ci, cp] = count(served.map((s) => s.created), served.map((s) => s.token));
    const queued = served.filter((s) => entered[j].has(s.uid));
    const [ei, ep] = count(queued.map((s) => entered[j].get(s.uid)!), queued.map((s) => s.token));
    Object.assign(stats, { creationInversions: stats.creationInversions + ci, creationPairs: stats.creationPairs + cp, entryInversions: stats.entryInversions + ei, entryPairs: stats.entryPairs + ep });
  }
  return stats;
}

function write(ctx: BenchContext, results: Map<string, RunStats[]>, p: { claims: number; locks: number; ref: string }): void {
  const [before, after] = [results.get("before")!, results.get("after")!];
  const m = (runs: RunStats[], f: (s: RunStats) => number) => median(runs.map(f));
  const tau = (inv: number, pairs: number) => (pairs > 0 ? fmt(1 - (2 * inv) / pairs, 2) : "n/a");
  ctx.report.heading("7. Clusters sharing a backend: grants and their order");
  ctx.report.text(
    `${CLUSTERS} clusters (this environment's API server and ${CLUSTERS - 1} more, each with its own etcd), one operator each (clusterName c1..c${CLUSTERS}), all on one Redis. ` +
      `Per run: ${p.locks} locks of the same names in every cluster, ${p.claims} claims over them created at once (claim i on lock i mod ${p.locks}, in cluster ⌊i/${p.locks}⌋ mod ${CLUSTERS}), ` +
      "each deleted the moment a watch sees it Granted. Grant order per lock = fencing-token order. Entry order = the order claims last joined the backend's queue (one withdrawn and queued again counts from its return) " +
      `(\`waiting()\` sampled every ${SAMPLE_MS} ms; claims granted on arrival never queue and are left out). Inversions = pairs served in the other order; tau = Kendall's tau (1 = same order). ` +
      `Baseline "before": operators of ${p.ref} (no backend queue: each cluster retries tryAcquire when a hold goes), same workload, alternating run by run. Medians of ${ctx.runs} runs.`,
  );
  const row = (label: string, runs: RunStats[]) => [label, fmt(m(runs, (s) => s.rate), 1),
    runs === after ? `${fmt(m(runs, (s) => s.entryInversions), 0)} of ${fmt(m(runs, (s) => s.entryPairs), 0)} (tau ${tau(m(runs, (s) => s.entryInversions), m(runs, (s) => s.entryPairs))})` : "no queue",
    `${fmt(m(runs, (s) => s.creationInversions), 0)} of ${fmt(m(runs, (s) => s.creationPairs), 0)} (tau ${tau(m(runs, (s) => s.creationInversions), m(runs, (s) => s.creationPairs))})`,
    runs.map((s) => fmt(s.rate, 1)).join(" ")];
  ctx.report.table(["operators", "grants/s", "inversions vs backend entry order", "inversions vs creation order", "per-run grants/s"], [row("before", before), row("after", after)]);
  const rate = [m(after, (s) => s.rate), m(before, (s) => s.rate)];
  const inversions = Math.max(...after.map((s) => s.entryInversions));
  ctx.targets.push({ target: `7 cross-cluster: grant order follows backend entry order (0 inversions in every run)`, measured: `at most ${inversions} inversions of ${fmt(m(after, (s) => s.entryPairs), 0)} pairs per run`, met: inversions === 0 });
  ctx.findings.push(`7 cross-cluster: ${CLUSTERS} operators sharing one Redis granted ${fmt(rate[0], 1)} claims/s (${ratio(rate[0], rate[1])} of the operators without the backend queue, ${fmt(rate[1], 1)}/s); ` +
    `inversions against the backend's entry order ${after.map((s) => s.entryInversions).join(", ")} per run; against creation order ${fmt(m(after, (s) => s.creationInversions), 0)} (before ${fmt(m(before, (s) => s.creationInversions), 0)}) of ${fmt(m(after, (s) => s.creationPairs), 0)} pairs.`);
}
