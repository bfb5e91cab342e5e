/**
 * Benchmark 5 (not in the default set; BENCH_ONLY=5): the throughput workload against an operator started
 * with `node --cpu-prof`, and where its CPU time went, by package and by function (self time).
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { tempDir } from "../test/support/temp";
import { join } from "node:path";
import type { BenchContext } from "./context";
import { pool } from "./lib/claims";
import { envInt, fmt } from "./lib/stats";
import { operatorNamespace } from "./operator";
import { throughputRun } from "./throughput";

interface ProfileNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
interface CpuProfile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number }

export async function profileBenchmark(ctx: BenchContext): Promise<void> {
  const claims = envInt("BENCH_PROFILE_CLAIMS", 200);
  const locks = envInt("BENCH_PROFILE_LOCKS", 20);
  const backends = (process.env.BENCH_PROFILE_BACKENDS ?? "redis").split(",").filter(Boolean);
  const dir = tempDir("kubelock-cpuprof-");
  const op = await operatorNamespace(ctx, "bench-prof", { nodeFlags: ["--cpu-prof", "--cpu-prof-dir", dir] });
  const rates: string[] = [];
  try {
    for (const backend of backends) {
      await pool(locks, 16, (l) => op.api.createLock(`${backend}-${l}`, { backend }));
      const run = await throughputRun(op, backend, "p", claims, locks, 300_000);
      rates.push(`${backend}: ${fmt(run.rate, 1)} grants/s`);
      ctx.log(`profile: ${backend}: ${fmt(run.rate, 1)} grants/s`);
    }
  } finally {
    await op.stop();
  }
  // One profile per thread (tsx runs a loader thread): the main thread's is the largest.
  const file = readdirSync(dir).filter((f) => f.endsWith(".cpuprofile")).sort((a, b) => statSync(join(dir, b)).size - statSync(join(dir, a)).size)[0];
  if (!file) throw new Error(`no .cpuprofile written in ${dir}`);
  const profile = JSON.parse(readFileSync(join(dir, file), "utf8")) as CpuProfile;

  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000));
  const wall = (profile.endTime - profile.startTime) / 1000;
  const byPackage = new Map<string, number>();
  const byFunction = new Map<string, number>();
  for (const [id, ms] of self) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    const pkg = category(url, functionName);
    byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + ms);
    if (pkg === "(idle)") continue;
    const name = `${functionName || "(anonymous)"} ${shortUrl(url)}:${lineNumber + 1}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + ms);
  }
  const busy = wall - (byPackage.get("(idle)") ?? 0);
  // Inclusive time of a few call paths: a sample counts when its stack (leaf first) matches.
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const inclusive = PATHS.map(() => 0);
  for (const [id, ms] of self) {
    const stack: ProfileNode["callFrame"][] = [];
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) stack.push(byId.get(at)!.callFrame);
    PATHS.forEach(([, matches], i) => (inclusive[i] += matches(stack) ? ms : 0));
  }
  const top = (m: Map<string, number>, n: number) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n);

  const share = (i: number) => `${fmt((100 * inclusive[i]) / busy, 1)}%`;
  const ranked = PATHS.map(([label], i) => [label, i] as const).sort((a, b) => inclusive[b[1]] - inclusive[a[1]]);
  ctx.findings.push(`5 operator CPU (profile, section 5): ${fmt(busy / 1000, 1)} s on the CPU for ${claims * backends.length} grants ` +
    `(${fmt(busy / (claims * backends.length), 0)} ms per grant, operator start-up and module loading included). Largest call paths (inclusive): ` +
    `${ranked.slice(0, 4).map(([label, i]) => `${label.replace(/`/g, "")} ${share(i)}`).join("; ")}. ` +
    `Top packages by self time: ${top(byPackage, 4).filter(([k]) => k !== "(idle)").map(([k, ms]) => `${k} ${fmt((100 * ms) / busy, 1)}%`).join(", ")}.`);
  ctx.report.heading("5. Where the operator's CPU goes (node --cpu-prof)");
  ctx.report.text(
    `The throughput workload (${claims} claims over ${locks} locks per backend; ${rates.join(", ")}) against an operator started as ` +
      `\`node --cpu-prof --import tsx src/cli/main.ts operator …\`. Profile: ${fmt(wall / 1000, 1)} s of wall time, ` +
      `${fmt(busy / 1000, 1)} s on the CPU (${fmt((100 * busy) / wall, 0)}% of one core; the rest idle, waiting on the API server and backends).`,
  );
  ctx.report.table(["self time by package", "ms", "% of busy"], top(byPackage, 12).filter(([k]) => k !== "(idle)").map(([k, ms]) => [k, fmt(ms, 0), fmt((100 * ms) / busy, 1)]));
  ctx.report.table(["call path (inclusive time)", "ms", "% of busy"], PATHS.map(([label], i) => [label, fmt(inclusive[i], 0), fmt((100 * inclusive[i]) / busy, 1)]));
  ctx.report.table(["function (self time)", "ms", "% of busy"], top(byFunction, 20).map(([k, ms]) => [`\`${k}\``, fmt(ms, 0), fmt((100 * ms) / busy, 1)]));
}

type Frame = ProfileNode["callFrame"];
const has = (stack: Frame[], name: string, url = "") => stack.some((f) => f.functionName === name && f.url.includes(url));
const PATHS: [string, (stack: Frame[]) => boolean][] = [
  ["client-node `applySecurityAuthentication`, run for every API request", (s) => has(s, "applySecurityAuthentication")],
  ["… of which `readFileSync` of the kubeconfig's CA/cert/key files (every request)", (s) => has(s, "readFileSync") && has(s, "bufferFromFileOrString")],
  ["… of which sha256 of CA/cert/key in src/kube/connection-reuse.ts (every request)", (s) => has(s, "createHash") && s.some((f) => f.url.includes("connection-reuse"))],
  ["TLS `createSecureContext` (a new connection to the API server)", (s) => has(s, "createSecureContext")],
  ["client-node `ObjectSerializer` (typed (de)serialization of responses)", (s) => s.some((f) => f.url.includes("ObjectSerializer"))],
  ["client-node `Watch` (parsing watch events)", (s) => s.some((f) => f.url.includes("client-node/dist/watch"))],
  ["`LockReconciler.grant` (src/controllers/lock-reconciler.ts)", (s) => has(s, "grant", "lock-reconciler")],
  ["`Informer` (src/runtime/informer.ts)", (s) => s.some((f) => f.url.includes("runtime/informer"))],
];

function category(url: string, functionName: string): string {
  if (!url) return functionName.startsWith("(") ? functionName : "(native)";
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1];
  if (url.startsWith("node:")) return "node internals";
  if (url.includes("/src/")) return "kubelock src/";
  return "other";
}

function shortUrl(url: string): string {
  return url.replace(/^file:\/\//, "").replace(/^.*\/node_modules\//, "").replace(/^.*\/work\/main\//, "");
}
