/**
 * One chaos run: a namespace with a mutex (maxHolders 1) and a semaphore (maxHolders 2) per backend, two
 * operator replicas with leader election, K workers per lock taking turns through the fenced registers,
 * and the nemesis injecting faults until enough grants were made (or the time cap). Then the faults are
 * healed, the workers finish what they started (quiescence), everything must be released, and the
 * checker reads the whole history. Returns the report; prints progress through `log`.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type * as k8s from "@kubernetes/client-node";
import { startEnvironment } from "../env/environment";
import { createNamespace, kubeConfig } from "../support/env";
import { grantHandover } from "../support/handover";
import { Api } from "../support/operator";
import { check, type Violation } from "./checker";
import { ClaimLog } from "./history";
import { CLUSTER_FAULT_KINDS, FAULT_KINDS, Nemesis, type Fault, type FaultKind, type Recovery, type ServerName } from "./nemesis";
import { OperatorFleet } from "./operators";
import { FencedRegister, type Rejection } from "./register";
import { errorText, now, Random, retry, secs, sleep } from "./util";
import { Worker, type ClaimRecord } from "./workers";

/**
 * The operators' leader election lease (renew deadline 4 s, retry 1 s): generous, so a busy machine does
 * not depose leaders by itself; a paused leader is paused for longer than this.
 */
const LEADER_LEASE_MS = 6000;

export type BackendName = "kubernetes" | "redis" | "etcd" | "zookeeper";
export const ALL_BACKENDS: readonly BackendName[] = ["kubernetes", "redis", "etcd", "zookeeper"];

/** Where the run's servers are, and how to reach the fault control endpoint. */
export interface ChaosTargets {
  /** The cluster's admin (the run's own clients). */
  kubeconfig: string;
  /** What operator replicas authenticate with: the deploy/ ServiceAccount's token (see test/env/operator-identity.ts). */
  operatorKubeconfig: string;
  /** The environment's control endpoint (KUBELOCK_TEST_CONTROL). */
  control: string;
  redisUrl?: string;
  /** One client URL, or a comma-separated list of them (a cluster's members). */
  etcdEndpoint?: string;
  zookeeperConnect?: string;
  /** The control endpoint can restart kube-apiserver (a local control plane). */
  apiServerRestart: boolean;
  /** Redis keeps its data across a restart (else restarting it would reset fencing counters: no restarts then). */
  redisPersistent: boolean;
  /** The backend servers that are clusters, with their member count: lose-member and lose-majority need one. */
  clusters: Partial<Record<ServerName, number>>;
}

/**
 * A private environment for chaos: its own control plane, Redis (persistent, as redis.ts requires for
 * fencing tokens to survive a restart), a 3-member ZooKeeper ensemble and a 3-member lock etcd cluster,
 * so faults never disturb other tests.
 */
export async function startChaosEnvironment(log: (line: string) => void): Promise<{ targets: ChaosTargets; stop: () => Promise<void> }> {
  const env = await startEnvironment({ clusters: 1, services: ["redis", "zookeeper", "etcd"], controllerManager: false, redisPersistence: true, clusteredBackends: true, log });
  const v = env.variables;
  return {
    targets: {
      kubeconfig: v.KUBECONFIG, operatorKubeconfig: v.KUBELOCK_TEST_OPERATOR_KUBECONFIG,
      control: v.KUBELOCK_TEST_CONTROL, redisUrl: v.KUBELOCK_TEST_REDIS_URL, etcdEndpoint: v.KUBELOCK_TEST_ETCD_ENDPOINT,
      zookeeperConnect: v.KUBELOCK_TEST_ZOOKEEPER_CONNECT, apiServerRestart: process.env.USE_EXISTING_CLUSTER !== "true", redisPersistent: true,
      clusters: env.members,
    },
    stop: env.stop,
  };
}

export interface ChaosOptions {
  targets: ChaosTargets;
  backends: readonly BackendName[];
  /** Stop injecting once this many critical sections were accepted in total… */
  grants: number;
  /** …or this many seconds passed. */
  seconds: number;
  seed: number;
  kinds: readonly FaultKind[];
  /** Each kind alone once before mixing. */
  aloneFirst: boolean;
  mixChance: number;
  /** Mixed episodes that must come after the alone ones. */
  mixedAtLeast: number;
  /** Most faults in one mixed episode. */
  maxMix: number;
  workers: { mutex: number; semaphore: number };
  holdMs: [number, number];
  /** Long critical sections that span faults (see WorkerContext.longHolds); none by default. */
  longHolds?: { chance: number; ms: [number, number] };
  /** The locks' leaseDurationSeconds (ZooKeeper's session timeout is set to match). */
  leaseSeconds: number;
  gapMs: [number, number];
  recoveryTimeoutMs: number;
  /** After the nemesis stops: how long waiting claims may take to be granted, and claims to go. */
  quiescenceMs: number;
  log: (line: string) => void;
}

export interface ChaosReport {
  seed: number;
  namespace: string;
  durationMs: number;
  /** Accepted critical sections (a grant used). */
  grants: number;
  grantsByLock: Record<string, number>;
  claims: number;
  outcomes: Record<string, number>;
  faults: Record<string, number>;
  faultTargets: Record<string, number>;
  skippedFaults: Fault[];
  episodes: number;
  mixedEpisodes: number;
  longestRecovery?: { ms: number; episode: number; faults: string };
  recoveries: Recovery[];
  /** Every fault, injected or skipped, with times relative to the start. */
  timeline: string[];
  rejections: Rejection[];
  operatorStarts: number;
  historyResets: number;
  violations: Violation[];
  /** Operator logs and config (kept when there were violations). */
  logDir: string;
}

export const defaultChaosOptions = (targets: ChaosTargets, log: (line: string) => void): ChaosOptions => ({
  targets, backends: ALL_BACKENDS, grants: 10_000, seconds: 3600, seed: Date.now() % 1_000_000, kinds: availableKinds(targets),
  aloneFirst: true, mixChance: 0.4, mixedAtLeast: 1, maxMix: 3, workers: { mutex: 3, semaphore: 3 }, holdMs: [5, 60], leaseSeconds: 3,
  gapMs: [300, 1200], recoveryTimeoutMs: 60_000, quiescenceMs: 60_000, log,
});

export function availableKinds(targets: ChaosTargets): FaultKind[] {
  const clustered = Object.keys(targets.clusters).length > 0;
  return FAULT_KINDS.filter((k) => (k !== "restart-apiserver" || targets.apiServerRestart) && (clustered || !CLUSTER_FAULT_KINDS.includes(k)));
}

function operatorConfig(targets: ChaosTargets, backends: readonly BackendName[], namespace: string, leaseSeconds: number): string {
  const lines = ["defaultBackend: kubernetes", "clusterName: chaos", "backends:", "  - name: kubernetes", "    type: kubernetes", "    kubernetes: { requestTimeoutMs: 5000 }"];
  if (backends.includes("redis")) {
    lines.push("  - name: redis", "    type: redis", `    redis: { url: "${targets.redisUrl}", keyPrefix: "${namespace}", commandTimeoutMs: 1500, connectTimeoutMs: 1500 }`);
  }
  if (backends.includes("etcd")) {
    lines.push("  - name: etcd", "    type: etcd", `    etcd: { endpoints: ${JSON.stringify(targets.etcdEndpoint?.split(","))}, prefix: "/${namespace}", requestTimeoutMs: 1500, dialTimeoutMs: 1500 }`);
  }
  if (backends.includes("zookeeper")) {
    // Holds live as long as the session: its timeout plays the lease.
    lines.push("  - name: zookeeper", "    type: zookeeper", `    zookeeper: { connect: "${targets.zookeeperConnect}", rootPath: "/${namespace}", sessionTimeoutMs: ${leaseSeconds * 1000}, requestTimeoutMs: 1500 }`);
  }
  return lines.join("\n") + "\n";
}

export async function runChaos(o: ChaosOptions, registerCleanup: (cleanup: () => Promise<void>) => void = () => undefined): Promise<ChaosReport> {
  const t0 = now();
  const log = (line: string) => o.log(`[${secs(now() - t0).padStart(6)}] ${line}`);
  const random = new Random(o.seed);
  const kc: k8s.KubeConfig = kubeConfig(o.targets.kubeconfig);
  const namespace = await createNamespace("chaos", kc);
  // Leader election runs in this namespace: the replicas (the deploy/ ServiceAccount) hand ZooKeeper sessions over here.
  if (o.backends.includes("zookeeper")) await grantHandover(kc, namespace);
  const logDir = mkdtempSync(join(tmpdir(), `kubelock-${namespace}-`));
  const configFile = join(logDir, "config.yaml");
  writeFileSync(configFile, operatorConfig(o.targets, o.backends, namespace, o.leaseSeconds));
  log(`chaos: seed ${o.seed}, namespace ${namespace}, backends ${o.backends.join(", ")}, faults ${o.kinds.join(", ")}; logs in ${logDir}`);

  const api = new Api(namespace, kc);
  const locks = o.backends.flatMap((backend) => [
    { name: `${backend}-mutex`, backend, maxHolders: 1 },
    { name: `${backend}-sem`, backend, maxHolders: 2 },
  ]);
  const registers = new Map(locks.map((l) => [l.name, new FencedRegister(l.name, l.maxHolders)]));
  for (const l of locks) {
    await retry(`create lock ${l.name}`, () => api.createLock(l.name, { backend: l.backend, maxHolders: l.maxHolders, leaseDurationSeconds: o.leaseSeconds }).catch((err) => {
      if ((err as { code?: number }).code !== 409) throw err; // created by an attempt whose answer was lost
    }), now() + 60_000);
  }

  const history = new ClaimLog(namespace, kc);
  await history.start();
  const lastGrant = new Map<string, number>();
  const granted = new Set<string>();
  history.on((e) => {
    if (e.phase === "Granted" && e.fencingToken && e.type !== "DELETED" && !granted.has(e.name)) {
      granted.add(e.name);
      lastGrant.set(e.lock, e.t);
    }
  });

  const fleet = new OperatorFleet({
    kubeconfig: o.targets.operatorKubeconfig, kc, namespace, configFile, logDir, leaseName: "kubelock-chaos", replicas: 2,
    leaderElection: { lease: `${LEADER_LEASE_MS}ms`, renewDeadline: "4s", retryPeriod: "1s" }, maxStarts: 500, log,
  });
  registerCleanup(() => fleet.stop());
  const servers = (["redis", "zookeeper", "etcd"] as const).filter((s) => o.backends.includes(s));
  const records: ClaimRecord[] = [];
  const accepted = () => [...registers.values()].reduce((n, r) => n + r.sections.length, 0);
  let stopping = false;
  let deadline = t0 + o.seconds * 1000 + 4 * o.recoveryTimeoutMs + o.quiescenceMs;
  const nemesis = new Nemesis({
    control: o.targets.control, fleet, random, servers, kinds: o.kinds, lockLeaseMs: o.leaseSeconds * 1000, leaderLeaseMs: LEADER_LEASE_MS,
    restartable: servers.filter((s) => s !== "redis" || o.targets.redisPersistent),
    clusters: Object.fromEntries(servers.filter((s) => o.targets.clusters[s]).map((s) => [s, o.targets.clusters[s]])),
    aloneFirst: o.aloneFirst, mixChance: o.mixChance, mixedAtLeast: o.mixedAtLeast, maxMix: o.maxMix, gapMs: o.gapMs, recoveryTimeoutMs: o.recoveryTimeoutMs,
    lastGrant: (lock) => lastGrant.get(lock), locks: locks.map((l) => l.name),
    done: () => accepted() >= o.grants || now() - t0 >= o.seconds * 1000, log,
  });
  registerCleanup(() => nemesis.healAll());

  const leftovers: Violation[] = [];
  let workersDone: Promise<unknown> = Promise.resolve();
  try {
    await fleet.start();
    log(`chaos: ${fleet.replicas.length} operator replicas up; starting ${locks.length} locks' workers`);
    const ctx = {
      api, log: history, registers, records, random, holdMs: o.holdMs, longHolds: o.longHolds, maxCycles: 100_000,
      stopping: () => stopping, deadline: () => deadline, report: log,
    };
    const workers = locks.flatMap((l) => Array.from({ length: l.maxHolders === 1 ? o.workers.mutex : o.workers.semaphore }, (_, i) => new Worker(`${l.name}-w${i}`, l.name, ctx)));
    workersDone = Promise.all(workers.map((w) => w.run()));
    const progress = setInterval(() => log(`chaos: ${accepted()} grants, ${records.length} claims, ${nemesis.faults.length} faults`), 10_000);
    try {
      await nemesis.run();
    } finally {
      clearInterval(progress);
    }
    // Quiescence: no more faults; what waits must be granted, and every worker finishes its cycle.
    stopping = true;
    deadline = now() + o.quiescenceMs;
    log(`chaos: nemesis done (${nemesis.faults.length} faults); quiescence: workers finish, everything must be released`);
    await workersDone;
    leftovers.push(...(await awaitReleased(api, locks.map((l) => l.name), deadline)));
  } finally {
    stopping = true;
    deadline = Math.min(deadline, now());
    await nemesis.healAll();
    await workersDone;
    await fleet.stop();
    await history.stop();
  }
  leftovers.push(...refusedRequests(fleet, nemesis.faults));

  const violations = [
    ...check({ locks, registers, events: history.events, records, recoveries: nemesis.recoveries, t0 }),
    ...leftovers,
  ];
  const count = <T>(items: T[], key: (item: T) => string) => items.reduce<Record<string, number>>((acc, item) => ((acc[key(item)] = (acc[key(item)] ?? 0) + 1), acc), {});
  const injected = nemesis.faults.filter((f) => !f.skipped);
  const longest = nemesis.recoveries.reduce<Recovery | undefined>((best, r) => (!best || r.longest > best.longest ? r : best), undefined);
  const episodes = new Map<number, number>();
  for (const f of injected) episodes.set(f.episode, (episodes.get(f.episode) ?? 0) + 1);
  const report: ChaosReport = {
    seed: o.seed, namespace, durationMs: now() - t0, grants: accepted(),
    grantsByLock: Object.fromEntries([...registers].map(([name, r]) => [name, r.sections.length])),
    claims: records.length, outcomes: count(records, (r) => r.outcome ?? "unfinished"),
    faults: count(injected, (f) => f.kind), faultTargets: count(injected, (f) => `${f.kind}(${f.target.replace(/-\d+$|\/[\d,]+$/, "")})`),
    skippedFaults: nemesis.faults.filter((f) => f.skipped), episodes: episodes.size, mixedEpisodes: [...episodes.values()].filter((n) => n > 1).length,
    longestRecovery: longest && { ms: longest.longest, episode: longest.episode, faults: longest.faults },
    recoveries: nemesis.recoveries,
    timeline: nemesis.faults.map((f) => `episode ${f.episode}: ${f.kind}(${f.target}) ${f.skipped ? `skipped: ${f.skipped}` : `injected +${secs(f.injectedAt - t0)}, healed ${f.healedAt === undefined ? "never" : `+${secs(f.healedAt - t0)}`}`}`),
    rejections: [...registers.values()].flatMap((r) => r.rejections),
    operatorStarts: fleet.starts, historyResets: history.resets, violations, logDir,
  };
  if (violations.length === 0) rmSync(logDir, { recursive: true, force: true });
  return report;
}

/** After quiescence every claim must be gone (finalizers done) and no lock may show a holder. */
async function awaitReleased(api: Api, locks: string[], deadline: number): Promise<Violation[]> {
  let claims: string[] = [];
  let holders: string[] = [];
  while (now() < deadline) {
    try {
      claims = (await retry("list claims", () => api.listClaims(), deadline)).map((c) => `${c.metadata.name} phase=${c.status?.phase ?? "-"} deleting=${!!c.metadata.deletionTimestamp}`);
      holders = [];
      for (const lock of locks) {
        const status = (await retry(`get lock ${lock}`, () => api.getLock(lock), deadline)).status;
        for (const h of status?.holders ?? []) holders.push(`${lock}: ${h.claim} token ${h.fencingToken}`);
      }
      if (claims.length === 0 && holders.length === 0) return [];
    } catch (err) {
      claims = [`(could not list: ${errorText(err)})`];
    }
    await sleep(250);
  }
  const out: Violation[] = [];
  if (claims.length > 0) out.push({ kind: "left-behind", class: "liveness", summary: `${claims.length} claims still exist after quiescence`, evidence: claims.slice(0, 20) });
  if (holders.length > 0) out.push({ kind: "left-behind", class: "liveness", summary: `locks still show holders after every claim was deleted`, evidence: holders.slice(0, 20) });
  return out;
}

/** The report as text: figures, faults, recovery, and every violation with its evidence. */
/** How long after a restarted kube-apiserver answered a refusal is still put down to the restart. */
const RESTART_REFUSALS_MS = 2000;

/**
 * Replicas run as the deploy/ ServiceAccount: a request refused them (403) is a permission deploy/rbac.yaml
 * lacks, unless a kube-apiserver was restarting then (it answers before its authorizer has loaded the roles).
 */
function refusedRequests(fleet: OperatorFleet, faults: Fault[]): Violation[] {
  const restarts = faults.filter((f) => f.kind === "restart-apiserver" && !f.skipped);
  const duringRestart = (at: number) => restarts.some((f) => at >= f.injectedAt && at <= (f.healedAt ?? Infinity) + RESTART_REFUSALS_MS);
  const refused = fleet.all.flatMap((r) => r.refused.filter((x) => !duringRestart(x.at)).map((x) => `operator-${r.index}: ${x.line}`));
  if (refused.length === 0) return [];
  return [{ kind: "api-refused", class: "liveness", summary: `the API server refused operator replicas ${refused.length} request(s)`, evidence: refused.slice(0, 5) }];
}

export function formatReport(r: ChaosReport): string {
  const kv = (o: Record<string, number>) => Object.entries(o).sort().map(([k, v]) => `${k} ${v}`).join(", ") || "none";
  const lines = [
    `chaos report (seed ${r.seed}, namespace ${r.namespace}, ${secs(r.durationMs)})`,
    `  grants (accepted critical sections): ${r.grants}  [${kv(r.grantsByLock)}]`,
    `  claims: ${r.claims}  [${kv(r.outcomes)}]`,
    `  faults injected: ${Object.values(r.faults).reduce((a, b) => a + b, 0)} in ${r.episodes} episodes (${r.mixedEpisodes} mixed)  [${kv(r.faults)}]`,
    `  fault targets: ${kv(r.faultTargets)}`,
    ...(r.skippedFaults.length ? [`  faults skipped: ${r.skippedFaults.map((f) => `${f.kind}: ${f.skipped}`).join("; ")}`] : []),
    `  longest recovery (fault healed → next grant on every lock): ${r.longestRecovery ? `${Number.isFinite(r.longestRecovery.ms) ? secs(r.longestRecovery.ms) : "never"} after episode ${r.longestRecovery.episode} (${r.longestRecovery.faults})` : "-"}`,
    `  stale holders fenced off by a mutex register: ${r.rejections.length}`,
    ...r.rejections.slice(0, 5).map((x) => `    ${x.claim} (worker ${x.worker}) token ${x.token} rejected: ${x.highestClaim} had entered with ${x.highest}`),
    `  operator replicas started: ${r.operatorStarts}; claim watch restarted from a list ${r.historyResets} times`,
    `  violations: ${r.violations.length} (safety ${r.violations.filter((v) => v.class !== "liveness").length}, liveness ${r.violations.filter((v) => v.class === "liveness").length})`,
  ];
  for (const v of r.violations) {
    lines.push(`  VIOLATION (${v.class ?? "safety"}) ${v.kind}${v.lock ? ` [${v.lock}]` : ""}: ${v.summary}`);
    for (const e of v.evidence) lines.push(`      ${e}`);
  }
  if (r.violations.length > 0) lines.push("  fault timeline:", ...r.timeline.map((t) => `    ${t}`), `  operator logs: ${r.logDir}`);
  return lines.join("\n");
}
