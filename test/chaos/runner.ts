/**
 * One chaos run: a namespace with a mutex (maxHolders 1) and a semaphore (maxHolders 2) per backend (Redis twice:
 * a standalone server, and a master with a replica through Redis Sentinel, `redis-sentinel`), two
 * operator replicas with leader election, K workers per lock taking turns through the fenced registers,
 * `kubelock run` holders on the Lease backend's mutex, and the nemesis injecting faults until enough grants
 * were made (or the time cap). With a second cluster (its own API server, one operator replica, the same
 * namespace and lock names), both clusters share the Redis, etcd and ZooKeeper locks, through the same
 * registers. Meanwhile the truth poller compares the claims with the backend servers. Then the faults are
 * healed, the workers finish what they started (quiescence), everything must be released, and the checker
 * reads the whole history. Returns the report; prints progress through `log`.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as k8s from "@kubernetes/client-node";
import { KubernetesLeaseBackend } from "../../src/backends/kubernetes/backend";
import { createBackend } from "../../src/backends/registry";
import { startEnvironment } from "../env/environment";
import { SENTINEL_MASTER, SentinelRedis } from "../env/redis-setups";
import { createNamespace, kubeConfig } from "../support/env";
import { Api } from "../support/operator";
import { check, excuseDataLoss, STATUS_FROZEN_GRACE_MS, type DataLoss, type History, type Violation } from "./checker";
import { CliHolder, SectionServer, type CliRecord } from "./cli-holders";
import { Counters } from "./faults/data-loss";
import { ClaimLog } from "./history";
import type { MasterFailure } from "./faults/types";
import { CLUSTER_FAULT_KINDS, DATA_LOSS_KINDS, FAULT_KINDS, Nemesis, type Fault, type FaultKind, type Recovery, type ServerName } from "./nemesis";
import { libfaketime } from "../env/faketime";
import { OperatorFleet } from "./operators";
import { FencedRegister, type Rejection } from "./register";
import { apiServerOf, type Upstreams } from "./relays";
import { TruthPoller, type HolderReader } from "./truth";
import { errorText, now, Random, retry, secs, sleep } from "./util";
import { Worker, type ClaimRecord } from "./workers";

/**
 * The operators' leader election lease (renew deadline 4 s, retry 1 s): generous, so a busy machine does
 * not depose leaders by itself; a paused leader is paused for longer than this.
 */
const LEADER_LEASE_MS = 6000;
/**
 * ZooKeeper holds live as long as the operator's session, which a new leader resumes: the session timeout (the
 * ZooKeeper locks' lease) must outlast the worst failover (leader lease + 2.2 retry periods of polling + the
 * hand-over), else a paused or killed leader's holds go before anyone can show them Lost.
 */
const ZOOKEEPER_LEASE_SECONDS = 12;
const leaseOf = (backend: BackendName, leaseSeconds: number) => (backend === "zookeeper" ? Math.max(leaseSeconds, ZOOKEEPER_LEASE_SECONDS) : leaseSeconds);

/** The backends as the operators' config names them; `redis-sentinel` is a backend of type redis through Sentinel. */
export type BackendName = "kubernetes" | "redis" | "redis-sentinel" | "etcd" | "zookeeper" | "postgresql";
export const ALL_BACKENDS: readonly BackendName[] = ["kubernetes", "redis", "redis-sentinel", "etcd", "zookeeper", "postgresql"];
/** The backends two clusters can share (the Lease backend lives in each cluster's own API server). */
const SHARED_BACKENDS: readonly BackendName[] = ["redis", "redis-sentinel", "etcd", "zookeeper", "postgresql"];
/** `waitReplicas` of the `redis-sentinel` backend: a grant is reported only once the replica has it. */
const SENTINEL_WAIT = { replicas: 1, timeoutMs: 1000 };

/** Where the run's servers are, and how to reach the fault control endpoint. */
export interface ChaosTargets {
  /** The cluster's admin (the run's own clients). */
  kubeconfig: string;
  /** What operator replicas authenticate with: the deploy/ ServiceAccount's token (see test/env/operator-identity.ts). */
  operatorKubeconfig: string;
  /** A second cluster's API server, when the environment has one: it shares the backends. */
  secondKubeconfig?: string;
  secondOperatorKubeconfig?: string;
  /** The environment's control endpoint (KUBELOCK_TEST_CONTROL). */
  control: string;
  redisUrl?: string;
  /** One client URL, or a comma-separated list of them (a cluster's members). */
  etcdEndpoint?: string;
  zookeeperConnect?: string;
  postgresqlUrl?: string;
  /** The control endpoint can restart kube-apiserver (a local control plane). */
  apiServerRestart: boolean;
  /** Redis keeps its data across a restart (else restarting it would reset fencing counters: no restarts then). */
  redisPersistent: boolean;
  /** The backend servers that are clusters, with their member count: lose-member and lose-majority need one. */
  clusters: Partial<Record<ServerName, number>>;
  /**
   * A Redis master with a replica and three sentinels (test/env/redis-setups.ts), started by the harness: the
   * `redis-sentinel` backend's servers, and its failover (failover-redis).
   */
  redisSentinel?: SentinelRedis;
}

/**
 * A private environment for chaos: its own control planes (two unless CHAOS_CLUSTERS=1), Redis (persistent,
 * as redis.ts requires for fencing tokens to survive a restart), a 3-member ZooKeeper ensemble and a 3-member
 * lock etcd cluster, so faults never disturb other tests; and a Redis Sentinel setup (master, replica, three
 * sentinels) of its own.
 */
export async function startChaosEnvironment(log: (line: string) => void): Promise<{ targets: ChaosTargets; stop: () => Promise<void> }> {
  const clusters = process.env.CHAOS_CLUSTERS === "1" || process.env.USE_EXISTING_CLUSTER === "true" ? 1 : 2;
  const env = await startEnvironment({ clusters, services: ["redis", "zookeeper", "etcd", "postgresql"], controllerManager: false, redisPersistence: true, clusteredBackends: true, log });
  let sentinel: SentinelRedis;
  try {
    sentinel = await SentinelRedis.create();
  } catch (err) {
    await env.stop();
    throw err;
  }
  log(`environment: redis through Sentinel: master :${await sentinel.masterPort()}, sentinels ${sentinel.sentinels.map((s) => `:${s.port}`).join(", ")}`);
  const v = env.variables;
  return {
    targets: {
      kubeconfig: v.KUBECONFIG, operatorKubeconfig: v.KUBELOCK_TEST_OPERATOR_KUBECONFIG, secondKubeconfig: v.KUBELOCK_TEST_KUBECONFIG_2,
      secondOperatorKubeconfig: v.KUBELOCK_TEST_OPERATOR_KUBECONFIG_2, control: v.KUBELOCK_TEST_CONTROL, redisUrl: v.KUBELOCK_TEST_REDIS_URL,
      etcdEndpoint: v.KUBELOCK_TEST_ETCD_ENDPOINT, zookeeperConnect: v.KUBELOCK_TEST_ZOOKEEPER_CONNECT, postgresqlUrl: v.KUBELOCK_TEST_POSTGRESQL_URL, apiServerRestart: process.env.USE_EXISTING_CLUSTER !== "true",
      redisPersistent: true, clusters: env.members, redisSentinel: sentinel,
    },
    stop: async () => {
      await sentinel.destroy().catch(() => undefined);
      await env.stop();
    },
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
  /** With aloneFirst: two kinds per episode (an operator fault with another, else two that need no operator), to cover every kind sooner. */
  pairUp?: boolean;
  mixChance: number;
  /** Mixed episodes that must come after the alone ones. */
  mixedAtLeast: number;
  /** Most faults in one mixed episode. */
  maxMix: number;
  workers: { mutex: number; semaphore: number };
  /** Workers per shared lock in the second cluster. */
  secondClusterWorkers: number;
  /** `kubelock run` holders on the Lease backend's mutex (0: none, and no half-open-holder faults). */
  cliHolders: number;
  holdMs: [number, number];
  /** How failover-redis may fail the Sentinel master (default: crash or hang, at random). */
  masterFailures?: readonly MasterFailure[];
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
  /** Clusters sharing the backends. */
  clusters: number;
  /** Accepted critical sections (a grant used). */
  grants: number;
  grantsByLock: Record<string, number>;
  claims: number;
  outcomes: Record<string, number>;
  /** `kubelock run` invocations by exit code, and the first few that did not exit 0 with their stderr's tail. */
  cliRuns: Record<string, number>;
  cliFailures: string[];
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
  /** For each rejection: when, what the claim showed in every cluster's history, and a `kubelock run`'s stderr. */
  rejectionStories: string[][];
  operatorStarts: number;
  historyResets: number;
  /** Truth poller rounds judged, and those with a read that failed. */
  truthRounds: number;
  truthIncomplete: number;
  violations: Violation[];
  /** Overlaps a backend's data loss explains (see checker.ts), listed apart. */
  excused: Violation[];
  /** Operator logs and config (kept when there were violations or fenced stale holders). */
  logDir: string;
  /** The run's start on its clock (violations' `at` are on it). */
  t0: number;
}

/** A fault's target without what differs every time (replica numbers, members, skews, claim names). */
const coarse = (target: string): string =>
  target.replace(/operator-\d+/g, "operator").replace(/replicas [\d,]+/, "replicas").replace(/\/[\d,]+$/, "").replace(/ \(.*\)$/, "").replace(/-w\d+$/, "").replace(/ [+-][\d.]+s$/, "");

export const defaultChaosOptions = (targets: ChaosTargets, log: (line: string) => void): ChaosOptions => ({
  targets, backends: ALL_BACKENDS, grants: 10_000, seconds: 3600, seed: Date.now() % 1_000_000, kinds: availableKinds(targets),
  aloneFirst: true, mixChance: 0.4, mixedAtLeast: 1, maxMix: 3, workers: { mutex: 3, semaphore: 3 }, secondClusterWorkers: 1, cliHolders: 2,
  holdMs: [5, 60], leaseSeconds: 3, gapMs: [300, 1200], recoveryTimeoutMs: 60_000, quiescenceMs: 60_000, log,
});

/** The fault kinds the targets allow (with every backend in use and `kubelock run` holders). */
export function availableKinds(targets: ChaosTargets): FaultKind[] {
  const clustered = Object.keys(targets.clusters).length > 0;
  let faketime = true;
  try {
    libfaketime();
  } catch {
    faketime = false;
  }
  return FAULT_KINDS.filter((k) => (k !== "restart-apiserver" || targets.apiServerRestart) && (clustered || !CLUSTER_FAULT_KINDS.includes(k))
    && (k !== "shared-default-config" || !!targets.secondKubeconfig) && (k !== "wipe-redis" || !!targets.redisUrl) && (k !== "skew-clock" || faketime)
    && (k !== "failover-redis" || !!targets.redisSentinel));
}

/**
 * The configured backends (besides the built-in kubernetes one) at `addresses`, as config entries. The sentinels
 * are reached directly, not through relays: they name the master by its own address, which a relay cannot change.
 */
function backendSettings(addresses: Upstreams, backends: readonly BackendName[], namespace: string, leaseSeconds: number,
  sentinels: { host: string; port: number }[] | undefined): { name: BackendName; type: string; settings: Record<string, unknown> }[] {
  const out: { name: BackendName; type: string; settings: Record<string, unknown> }[] = [];
  if (backends.includes("redis") && addresses.redis) {
    out.push({ name: "redis", type: "redis", settings: { url: addresses.redis, keyPrefix: namespace, commandTimeoutMs: 1500, connectTimeoutMs: 1500 } });
  }
  if (backends.includes("redis-sentinel") && sentinels) {
    out.push({ name: "redis-sentinel", type: "redis", settings: { url: `redis://${SENTINEL_MASTER}`, sentinels, sentinelName: SENTINEL_MASTER, keyPrefix: namespace,
      commandTimeoutMs: 1500, connectTimeoutMs: 1500, waitReplicas: SENTINEL_WAIT } });
  }
  if (backends.includes("etcd") && addresses.etcd) {
    out.push({ name: "etcd", type: "etcd", settings: { endpoints: addresses.etcd, prefix: `/${namespace}`, requestTimeoutMs: 1500, dialTimeoutMs: 1500 } });
  }
  if (backends.includes("zookeeper") && addresses.zookeeper) {
    // Holds live as long as the session: its timeout plays the lease.
    out.push({ name: "zookeeper", type: "zookeeper", settings: { connect: addresses.zookeeper.join(","), rootPath: `/${namespace}`, sessionTimeoutMs: leaseOf("zookeeper", leaseSeconds) * 1000, requestTimeoutMs: 1500 } });
  }
  if (backends.includes("postgresql") && addresses.postgresql) {
    out.push({ name: "postgresql", type: "postgresql", settings: { url: addresses.postgresql, table: namespace.replace(/-/g, "_"), requestTimeoutMs: 1500 } });
  }
  return out;
}

/** An operator config: the backends at `addresses`; clusterName as given (undefined: left out, as the shipped config does). */
function operatorConfig(addresses: Upstreams, clusterName: string | undefined, backends: readonly BackendName[], namespace: string, leaseSeconds: number,
  sentinels: { host: string; port: number }[] | undefined): string {
  // The built-in Lease backend's settings go in the top-level `kubernetes:` block (no entry may take its name).
  const lines = ["defaultBackend: kubernetes", ...(clusterName === undefined ? [] : [`clusterName: ${clusterName}`]), "kubernetes: { requestTimeoutMs: 5000 }", "backends:"];
  for (const b of backendSettings(addresses, backends, namespace, leaseSeconds, sentinels)) lines.push(`  - name: ${b.name}`, `    type: ${b.type}`, `    ${b.type}: ${JSON.stringify(b.settings)}`);
  return lines.join("\n") + "\n";
}

/** One cluster of the run: its API, fleet, claim history and locks. */
interface Cluster {
  name: string;
  kubeconfig: string;
  kc: k8s.KubeConfig;
  api: Api;
  history: ClaimLog;
  fleet: OperatorFleet;
  locks: { name: string; backend: BackendName; maxHolders: number }[];
}

export async function runChaos(o: ChaosOptions, registerCleanup: (cleanup: () => Promise<void>) => void = () => undefined): Promise<ChaosReport> {
  const t0 = now();
  const log = (line: string) => o.log(`[${secs(now() - t0).padStart(6)}] ${line}`);
  const random = new Random(o.seed);
  const kc: k8s.KubeConfig = kubeConfig(o.targets.kubeconfig);
  const namespace = await createNamespace("chaos", kc);
  // Leader election runs in this namespace: the replicas (the deploy/ ServiceAccount) hand ZooKeeper sessions over here.
  const logDir = mkdtempSync(join(tmpdir(), `kubelock-${namespace}-`));
  const t = o.targets;
  const upstreams: Upstreams = {
    apiserver: apiServerOf(t.kubeconfig), redis: o.backends.includes("redis") ? t.redisUrl : undefined,
    etcd: o.backends.includes("etcd") ? t.etcdEndpoint?.split(",") : undefined, zookeeper: o.backends.includes("zookeeper") ? t.zookeeperConnect?.split(",") : undefined,
    postgresql: o.backends.includes("postgresql") ? t.postgresqlUrl : undefined,
  };
  const sentinel = o.backends.includes("redis-sentinel") ? t.redisSentinel : undefined;
  const kinds = o.kinds.filter((k) => (k !== "half-open-holder" || o.cliHolders > 0) && (k !== "wipe-redis" || !!upstreams.redis) && (k !== "failover-redis" || !!sentinel));
  log(`chaos: seed ${o.seed}, namespace ${namespace}, backends ${o.backends.join(", ")}, faults ${kinds.join(", ")}; logs in ${logDir}`);

  const locks = o.backends.flatMap((backend) => [
    { name: `${backend}-mutex`, backend, maxHolders: 1 },
    { name: `${backend}-sem`, backend, maxHolders: 2 },
  ]);
  const registers = new Map(locks.map((l) => [l.name, new FencedRegister(l.name, l.maxHolders)]));
  const fleetOptions = {
    namespace, logDir, leaseName: namespace, maxStarts: 500, log,
    leaderElection: { lease: `${LEADER_LEASE_MS}ms`, renewDeadline: "4s", retryPeriod: "1s" },
  };
  const clusters: Cluster[] = [];
  // Each cluster's replicas authenticate as its deploy/ ServiceAccount (test/env/operator-identity.ts), never as its admin.
  const specs = [{ name: "c1", kubeconfig: t.kubeconfig, operatorKubeconfig: t.operatorKubeconfig, replicas: 2, shared: o.backends }];
  if (t.secondKubeconfig && t.secondOperatorKubeconfig) {
    const shared = o.backends.filter((b) => SHARED_BACKENDS.includes(b));
    specs.push({ name: "c2", kubeconfig: t.secondKubeconfig, operatorKubeconfig: t.secondOperatorKubeconfig, replicas: 2, shared });
  }
  for (const spec of specs) {
    const ckc = spec.name === "c1" ? kc : kubeConfig(spec.kubeconfig);
    if (spec.name !== "c1") await ckc.makeApiClient(k8s.CoreV1Api).createNamespace({ body: { metadata: { name: namespace } } });
    const api = new Api(namespace, ckc);
    const clusterLocks = locks.filter((l) => spec.shared.includes(l.backend));
    for (const l of clusterLocks) {
      await retry(`create lock ${l.name} in ${spec.name}`, () => api.createLock(l.name, { backend: l.backend, maxHolders: l.maxHolders, leaseDurationSeconds: leaseOf(l.backend, o.leaseSeconds) }).catch((err) => {
        if ((err as { code?: number }).code !== 409) throw err; // created by an attempt whose answer was lost
      }), now() + 60_000);
    }
    const clusterUpstreams = { ...upstreams, apiserver: apiServerOf(spec.kubeconfig) };
    const fleet = new OperatorFleet({
      ...fleetOptions, name: spec.name, kubeconfig: spec.operatorKubeconfig, kc: ckc, upstreams: clusterUpstreams, replicas: spec.replicas,
      clusterName: `chaos-${spec.name}`, config: (addresses, clusterName) => operatorConfig(addresses, clusterName, spec.shared, namespace, o.leaseSeconds, sentinel?.sentinels),
    });
    registerCleanup(() => fleet.stop());
    clusters.push({ name: spec.name, kubeconfig: spec.kubeconfig, kc: ckc, api, history: new ClaimLog(namespace, ckc), fleet, locks: clusterLocks });
  }
  const [main] = clusters;

  const lastGrant = new Map<string, number>();
  const granted = new Set<string>();
  for (const c of clusters) {
    await c.history.start();
    c.history.on((e) => {
      if (e.phase === "Granted" && e.fencingToken && e.type !== "DELETED" && !granted.has(e.name)) {
        granted.add(e.name);
        lastGrant.set(e.lock, e.t);
      }
    });
  }

  const truthBackends = new Map<string, HolderReader>();
  const leases = new KubernetesLeaseBackend({ name: "kubernetes", kubeConfig: kc });
  truthBackends.set("kubernetes", { holders: (key) => leases.namedHolders(key), close: () => leases.close() });
  for (const b of backendSettings({ ...upstreams }, o.backends, namespace, o.leaseSeconds, sentinel?.sentinels)) {
    truthBackends.set(b.name, await createBackend({ name: b.name, type: b.type, settings: b.settings, kubeConfig: kc, clusterName: "truth" }));
  }
  const truth = new TruthPoller({ clusters: clusters.map((c) => ({ name: c.name, api: c.api })), namespace, locks, backends: truthBackends, intervalMs: 500, t0 });
  registerCleanup(() => truth.stop());
  const counters = new Counters(locks, namespace, upstreams.redis, namespace);
  registerCleanup(() => counters.close());

  const servers = (["redis", "zookeeper", "etcd", "postgresql"] as const).filter((s) => o.backends.includes(s));
  const records: ClaimRecord[] = [];
  const cliRecords: CliRecord[] = [];
  const accepted = () => [...registers.values()].reduce((n, r) => n + r.sections.length, 0);
  let stopping = false;
  let deadline = t0 + o.seconds * 1000 + 4 * o.recoveryTimeoutMs + o.quiescenceMs;
  const sectionServer = new SectionServer(registers, random, [300, 1500]);
  const cliLock = locks.find((l) => l.backend === "kubernetes" && l.maxHolders === 1)?.name;
  const cliContext = {
    api: main.api, kubeconfig: t.kubeconfig, apiServer: upstreams.apiserver, namespace, logDir, server: sectionServer, leaseSeconds: o.leaseSeconds,
    records: cliRecords, stopping: () => stopping, deadline: () => deadline, report: log,
  };
  const cliHolders = cliLock ? Array.from({ length: o.cliHolders }, (_, i) => new CliHolder(`cli-w${i}`, cliLock, cliContext)) : [];
  const nemesis = new Nemesis({
    control: t.control, fleets: clusters.map((c) => c.fleet), holders: cliHolders.length ? { all: cliHolders, server: sectionServer } : undefined, counters,
    sentinel: sentinel && { setup: sentinel, failures: o.masterFailures ?? ["crash", "hang"] },
    random, servers, kinds, lockLeaseMs: o.leaseSeconds * 1000, leaderLeaseMs: LEADER_LEASE_MS,
    restartable: servers.filter((s) => s !== "redis" || t.redisPersistent),
    clusters: Object.fromEntries(servers.filter((s) => t.clusters[s]).map((s) => [s, t.clusters[s]])),
    aloneFirst: o.aloneFirst, pairUp: o.pairUp ?? false, mixChance: o.mixChance, mixedAtLeast: o.mixedAtLeast, maxMix: o.maxMix, gapMs: o.gapMs, recoveryTimeoutMs: o.recoveryTimeoutMs,
    lastGrant: (lock) => lastGrant.get(lock), locks: locks.map((l) => l.name),
    done: () => accepted() >= o.grants || now() - t0 >= o.seconds * 1000, log,
  });
  registerCleanup(() => nemesis.healAll());

  const leftovers: Violation[] = [];
  let workersDone: Promise<unknown> = Promise.resolve();
  try {
    await sectionServer.start();
    await Promise.all(clusters.map((c) => c.fleet.start()));
    truth.start();
    log(`chaos: ${clusters.map((c) => `${c.name}: ${c.fleet.replicas.length} operator replicas`).join(", ")} up; starting ${locks.length} locks' workers and ${cliHolders.length} kubelock run holders`);
    const workers = clusters.flatMap((c) => {
      const ctx = {
        api: c.api, log: c.history, registers, records, random, holdMs: o.holdMs, longHolds: o.longHolds, maxCycles: 100_000,
        stopping: () => stopping, deadline: () => deadline, report: log,
      };
      const count = (maxHolders: number) => (c !== main ? o.secondClusterWorkers : maxHolders === 1 ? o.workers.mutex : o.workers.semaphore);
      const prefix = c === main ? "" : `${c.name}-`;
      return c.locks.flatMap((l) => Array.from({ length: count(l.maxHolders) }, (_, i) => new Worker(`${prefix}${l.name}-w${i}`, l.name, ctx)));
    });
    workersDone = Promise.all([...workers.map((w) => w.run()), ...cliHolders.map((h) => h.run())]);
    // While the nemesis runs (it may take longer than planned on a slow machine), waiting claims may wait on.
    const progress = setInterval(() => {
      deadline = Math.max(deadline, now() + 2 * o.recoveryTimeoutMs);
      log(`chaos: ${accepted()} grants, ${records.length} claims, ${cliRecords.length} kubelock runs, ${nemesis.faults.length} faults`);
    }, 10_000);
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
    for (const c of clusters) leftovers.push(...(await awaitReleased(c.api, c.locks.map((l) => l.name), deadline)));
  } finally {
    stopping = true;
    deadline = Math.min(deadline, now());
    await nemesis.healAll();
    for (const h of cliHolders) h.kill();
    log("chaos: stopping the workers, the truth poller and the operators");
    await workersDone;
    await sectionServer.stop();
    await truth.stop();
    await counters.close();
    await Promise.all(clusters.map((c) => c.fleet.stop()));
    log("chaos: operators stopped; closing the claim histories");
    for (const c of clusters) await c.history.stop();
  }
  log("chaos: judging the history");
  leftovers.push(...refusedRequests(clusters.map((c) => c.fleet), nemesis.faults));

  const histories: History[] = clusters.map((c) => ({ cluster: c.name, events: c.history.events }));
  const created = new Map<string, number>([...records, ...cliRecords].map((r) => [r.name, r.created]));
  // A claim whose hold a data loss took can only be shown Lost through the API server: while the API server is
  // away (an outage that begins before the loss's grace ran out), the loss's window lasts until it is back.
  const grace = o.leaseSeconds * 1000;
  const apiServerOutages = nemesis.faults.filter((f) => !f.skipped && f.kind === "restart-apiserver");
  const losses: DataLoss[] = nemesis.faults.filter((f) => !f.skipped && DATA_LOSS_KINDS.includes(f.kind)).map((f) => {
    const healed = f.healedAt ?? now();
    const outage = apiServerOutages.filter((a) => a.injectedAt <= healed + grace && (a.healedAt ?? now()) >= f.injectedAt);
    const to = Math.max(healed, ...outage.map((a) => a.healedAt ?? now()));
    const what = `${f.kind} at +${secs(f.injectedAt - t0)}${outage.length > 0 ? " with the API server away until " + `+${secs(to - t0)}` : ""}`;
    return { backend: "redis", from: f.injectedAt, to, what };
  });
  // While the first cluster's API server is away no claim of it can be shown Lost (see checker.ts).
  for (const a of apiServerOutages) {
    const healed = a.healedAt ?? now();
    // excuseDataLoss adds `grace` to every window's end: this one ends STATUS_FROZEN_GRACE_MS after the API server is back.
    losses.push({ from: a.injectedAt, to: healed - grace + STATUS_FROZEN_GRACE_MS, statusOf: clusters[0].name,
      what: `restart-apiserver at +${secs(a.injectedAt - t0)}: no status could be written until +${secs(healed - t0)}` });
  }
  const { violations, excused } = excuseDataLoss([
    ...check({ locks, registers, histories, records, created, observed: truth.violations, recoveries: nemesis.recoveries, t0 }),
    ...leftovers,
  ], losses, new Map(locks.map((l) => [l.name, l.backend])), grace);
  // Which faults were under way (from injection to a lease and a leader lease after healing) when each violation happened.
  const after = o.leaseSeconds * 1000 + LEADER_LEASE_MS;
  for (const v of [...violations, ...excused]) {
    if (v.at === undefined) continue;
    const under = nemesis.faults.filter((f) => !f.skipped && f.injectedAt <= v.at! && v.at! <= (f.healedAt ?? Infinity) + after);
    v.during = under.map((f) => `${f.kind}(${f.target})`).join(" + ") || "no fault";
  }
  const count = <T>(items: T[], key: (item: T) => string) => items.reduce<Record<string, number>>((acc, item) => ((acc[key(item)] = (acc[key(item)] ?? 0) + 1), acc), {});
  const injected = nemesis.faults.filter((f) => !f.skipped);
  const longest = nemesis.recoveries.reduce<Recovery | undefined>((best, r) => (!best || r.longest > best.longest ? r : best), undefined);
  const episodes = new Map<number, number>();
  for (const f of injected) episodes.set(f.episode, (episodes.get(f.episode) ?? 0) + 1);
  const rejections = [...registers.values()].flatMap((r) => r.rejections);
  const report: ChaosReport = {
    seed: o.seed, namespace, durationMs: now() - t0, clusters: clusters.length, grants: accepted(),
    grantsByLock: Object.fromEntries([...registers].map(([name, r]) => [name, r.sections.length])),
    claims: records.length, outcomes: count(records, (r) => r.outcome ?? "unfinished"), cliRuns: count(cliRecords, (r) => `exit ${r.exitCode ?? "-"}`),
    cliFailures: cliRecords.filter((r) => r.exitCode !== 0).slice(0, 4).map((r) => `${r.name} exit ${r.exitCode ?? "-"}: ${(r.stderr ?? "").trim().replace(/\n/g, " | ")}`),
    faults: count(injected, (f) => f.kind), faultTargets: count(injected, (f) => `${f.kind}(${coarse(f.target)})`),
    skippedFaults: nemesis.faults.filter((f) => f.skipped), episodes: episodes.size, mixedEpisodes: [...episodes.values()].filter((n) => n > 1).length,
    longestRecovery: longest && { ms: longest.longest, episode: longest.episode, faults: longest.faults },
    recoveries: nemesis.recoveries,
    timeline: nemesis.faults.map((f) => `episode ${f.episode}: ${f.kind}(${f.target}) ${f.skipped ? `skipped: ${f.skipped}` : `injected +${secs(f.injectedAt - t0)}, healed ${f.healedAt === undefined ? "never" : `+${secs(f.healedAt - t0)}`}`}`),
    rejections,
    rejectionStories: rejections.map((x) => rejectionStory(x, clusters, cliRecords, t0)),
    operatorStarts: clusters.reduce((n, c) => n + c.fleet.starts, 0), historyResets: clusters.reduce((n, c) => n + c.history.resets, 0),
    truthRounds: truth.rounds, truthIncomplete: truth.incomplete, violations, excused, logDir, t0,
  };
  if (violations.length === 0 && rejections.length === 0) rmSync(logDir, { recursive: true, force: true });
  return report;
}

/** A fenced-off stale holder's story: when the register refused it, its claim's phases, its `kubelock run`'s stderr. */
function rejectionStory(x: Rejection, clusters: { name: string; history: ClaimLog }[], cli: CliRecord[], t0: number): string[] {
  const phases = clusters.flatMap((c) => {
    const seen = c.history.events.filter((e) => e.name === x.claim && e.type !== "reset");
    const changes = seen.filter((e, i) => i === 0 || e.type === "DELETED" || e.phase !== seen[i - 1].phase || e.deleting !== seen[i - 1].deleting);
    return changes.map((e) => `${c.name} +${secs(e.t - t0)} ${e.type} ${e.phase ?? "-"}${e.fencingToken ? ` token ${e.fencingToken}` : ""}${e.reason ? ` ${e.reason}` : ""}${e.deleting ? " (deleting)" : ""}`);
  });
  const run = cli.find((r) => r.name === x.claim);
  return [
    `refused at +${secs(x.at - t0)}${x.sentAt === undefined ? "" : ` (sent +${secs(x.sentAt - t0)})`}, ${x.highestClaim} entered at +${secs(x.highestAt - t0)}; its claim: ${phases.join("; ") || "no event seen"}`,
    ...(run ? [`kubelock run (started +${secs(run.created - t0)}, exit ${run.exitCode ?? "-"}): ${(run.stderr ?? "").trim().replace(/\n/g, " | ") || "no stderr"}`] : []),
  ];
}

/** After quiescence every claim must be gone and no lock may show a holder. */
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
function refusedRequests(fleets: OperatorFleet[], faults: Fault[]): Violation[] {
  const restarts = faults.filter((f) => f.kind === "restart-apiserver" && !f.skipped);
  const duringRestart = (at: number) => restarts.some((f) => at >= f.injectedAt && at <= (f.healedAt ?? Infinity) + RESTART_REFUSALS_MS);
  const refused = fleets.flatMap((fleet) => fleet.all.flatMap((r) => r.refused.filter((x) => !duringRestart(x.at)).map((x) => `${fleet.name}/operator-${r.index}: ${x.line}`)));
  if (refused.length === 0) return [];
  return [{ kind: "api-refused", class: "liveness", summary: `the API server refused operator replicas ${refused.length} request(s)`, evidence: refused.slice(0, 5) }];
}

export function formatReport(r: ChaosReport): string {
  const kv = (o: Record<string, number>) => Object.entries(o).sort().map(([k, v]) => `${k} ${v}`).join(", ") || "none";
  const lines = [
    `chaos report (seed ${r.seed}, namespace ${r.namespace}, ${secs(r.durationMs)}, ${r.clusters} cluster${r.clusters > 1 ? "s sharing the backends" : ""})`,
    `  grants (accepted critical sections): ${r.grants}  [${kv(r.grantsByLock)}]`,
    `  claims: ${r.claims}  [${kv(r.outcomes)}]; kubelock run: ${Object.values(r.cliRuns).reduce((a, b) => a + b, 0)}  [${kv(r.cliRuns)}]`,
    ...r.cliFailures.map((f) => `    ${f}`),
    `  faults injected: ${Object.values(r.faults).reduce((a, b) => a + b, 0)} in ${r.episodes} episodes (${r.mixedEpisodes} mixed)  [${kv(r.faults)}]`,
    `  fault targets: ${kv(r.faultTargets)}`,
    ...(r.skippedFaults.length ? [`  faults skipped: ${r.skippedFaults.map((f) => `${f.kind}: ${f.skipped}`).join("; ")}`] : []),
    `  longest recovery (fault healed → next grant on every lock): ${r.longestRecovery ? `${Number.isFinite(r.longestRecovery.ms) ? secs(r.longestRecovery.ms) : "never"} after episode ${r.longestRecovery.episode} (${r.longestRecovery.faults})` : "-"}`,
    `  stale holders fenced off by a mutex register: ${r.rejections.length}`,
    ...r.rejections.slice(0, 5).flatMap((x, i) => [
      `    ${x.claim} (worker ${x.worker}) token ${x.token} rejected: ${x.highestClaim} had entered with ${x.highest}`,
      ...r.rejectionStories[i].map((line) => `      ${line}`),
    ]),
    `  operator replicas started: ${r.operatorStarts}; claim watch restarted from a list ${r.historyResets} times`,
    `  truth rounds (claims vs backend servers): ${r.truthRounds} (${r.truthIncomplete} with a read that failed)`,
    `  excused by data loss: ${r.excused.length}${r.excused.length ? ` [${kv(r.excused.reduce<Record<string, number>>((a, v) => ((a[v.kind] = (a[v.kind] ?? 0) + 1), a), {}))}]` : ""}`,
    ...r.excused.slice(0, 5).map((v) => `    ${v.kind}${v.lock ? ` [${v.lock}]` : ""}: ${v.summary}`),
    `  violations: ${r.violations.length} (safety ${r.violations.filter((v) => v.class !== "liveness").length}, liveness ${r.violations.filter((v) => v.class === "liveness").length})`,
  ];
  for (const v of r.violations) {
    lines.push(`  VIOLATION (${v.class ?? "safety"}) ${v.kind}${v.lock ? ` [${v.lock}]` : ""}${v.at === undefined ? "" : ` at +${secs(v.at - r.t0)} during ${v.during}`}: ${v.summary}`);
    for (const e of v.evidence) lines.push(`      ${e}`);
  }
  if (r.violations.length > 0 || r.rejections.length > 0) lines.push("  fault timeline:", ...r.timeline.map((t) => `    ${t}`), `  operator logs: ${r.logDir}`);
  return lines.join("\n");
}
