/**
 * The operator: informers for locks, claims and pods feed two work queues of keys (locks, pods);
 * workers run the reconcilers once the caches have synced and this replica leads.
 *
 * High availability (`leaderElection` set): every replica starts its informers and keeps its caches
 * warm, but only the holder of the leader Lease runs the reconcile workers, so only it writes. A new
 * leader starts its workers at once (its caches are already synced) and queues every lock and pod.
 * When leadership is lost (no renewal within the renew deadline), the operator shuts its queues down,
 * waits for in-flight reconciles at most `leaseDuration - renewDeadline` (the time before another
 * replica may lead), closes its HTTP servers and resolves `lost`. Its informers and hold renewals go
 * on until `stop()`: the CLI starts a fresh instance as a clean follower and stops this one only once
 * the fresh one has synced its caches. (controller-runtime exits instead; a process restarted while
 * the API server is away could not learn which holds to renew, and they would lapse.)
 *
 * `stop()` (SIGTERM) is graceful: stop taking work, finish in-flight reconciles, release the leader
 * Lease (a follower takes over on its next poll), stop informers and servers, close backend
 * connections. Backend holds are never released on shutdown: they belong to the pods, and the next
 * leader re-attaches to them.
 */
import * as k8s from "@kubernetes/client-node";
import {
  CLAIM_PLURAL, GROUP, LOCK_ANNOTATION, LOCK_PLURAL, VERSION, type DistributedLock, type LockClaim,
} from "./api/types";
import { BackendRegistry } from "./backends/registry";
import type { OperatorConfig } from "./config";
import { ClaimIndex, type Caches, type OperatorContext } from "./controllers/context";
import { LockReconciler } from "./controllers/lock-reconciler";
import { PodReconciler } from "./controllers/pod-reconciler";
import { healthHandler, Readiness, serveHttp, text, type HttpServer } from "./health";
import { EventRecorder } from "./kube/events";
import { apiErrorMessage, KubeClient, requestTimeout } from "./kube/client";
import { defaultClusterName } from "./kube/cluster-identity";
import type { Logger } from "./log";
import { OperatorMetrics } from "./metrics";
import { realClock, sleep, type Clock } from "./runtime/clock";
import { MultiNamespaceCache, type Cache } from "./runtime/cache";
import { Informer, type KubeObject, type ListResult } from "./runtime/informer";
import { podForCache } from "./runtime/pods";
import { JITTER_FACTOR, KubeLeaseStore, LEADER_ELECTION_DEFAULTS, LeaderElector, type LeaseRef } from "./runtime/leaderelection";
import { runWorkers, WorkQueue } from "./runtime/workqueue";

export interface LeaderElectionOptions {
  /** The Lease replicas compete for (default name "kubelock-operator" in the operator's namespace). */
  lease: LeaseRef;
  /** This replica's unique identity (pod name or hostname, plus a random suffix). */
  identity: string;
  /** Defaults 15000 / 10000 / 2000 ms, as in controller-runtime. */
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
}

/** Where an HTTP server listens; undefined disables it. Port 0 picks a free port (logged). */
export interface BindAddress {
  host?: string;
  port: number;
}

export interface OperatorOptions {
  kubeConfig: k8s.KubeConfig;
  config: OperatorConfig;
  log: Logger;
  /** Concurrent lock reconciles (different locks; mostly waiting on the API server and backends). Default 16. */
  lockWorkers?: number;
  /**
   * Watch only these namespaces (default, or empty: all). Several get informers of their own each, listing and
   * watching that namespace alone: the operator needs no cluster-scope permission on locks, claims or pods.
   */
  namespaces?: readonly string[];
  /**
   * The operator's own namespace (the CLI: POD_NAMESPACE, else kubelock-system), where a leader keeps what the
   * next leader takes over (the ZooKeeper session Secret). Default kubelock-system.
   */
  ownNamespace?: string;
  /** Full resync period of the caches, ms. Default 10 minutes. */
  resyncMs?: number;
  clock?: Clock;
  /** Run the workers only while holding the leader Lease. Default: no election, always run them. */
  leaderElection?: LeaderElectionOptions;
  /** Prometheus `/metrics`. Default: disabled (the CLI's default is :8080). */
  metricsAddress?: BindAddress;
  /** Label holders/waiting gauges per lock. Default false (totals). */
  metricsPerLock?: boolean;
  /** `/healthz` and `/readyz`. Default: disabled (the CLI's default is :8081). */
  healthAddress?: BindAddress;
}

export interface RunningOperator {
  /** Resolves once every cache has synced (the workers run once this replica also leads). */
  ready: Promise<void>;
  /**
   * Resolves if leadership is lost, once the queues are shut down, in-flight reconciles finished (or
   * the bound passed) and the HTTP servers closed. Never resolves without leader election. Holds are
   * still renewed until `stop()`: the caller starts a successor and stops this one once it has synced.
   */
  lost: Promise<void>;
  metrics: OperatorMetrics;
  /** The name marking this cluster's holds: the config's, or derived from the cluster (see defaultClusterName). */
  clusterName: string;
  /** The leader election identity (with leader election). */
  identity?: string;
  /** Graceful stop: finish in-flight reconciles, release the leader Lease, close everything. */
  stop(): Promise<void>;
}

/** How long `stop()` waits for backend connections to close. */
const BACKEND_CLOSE_MS = 5_000;

const lockKeyOfClaim = (claim: LockClaim) => `${claim.metadata.namespace}/${claim.spec.lockName}`;

export async function startOperator(options: OperatorOptions): Promise<RunningOperator> {
  const { kubeConfig, config, log } = options;
  const clock = options.clock ?? realClock;
  const metrics = new OperatorMetrics({ perLock: options.metricsPerLock });
  const client = new KubeClient(kubeConfig);
  const clusterName = config.clusterName || await defaultClusterName(client);
  if (!config.clusterName) log.info("clusterName not configured: named after the kube-system namespace's UID", { clusterName });
  const le = options.leaderElection;
  const handover = le && {
    namespace: options.ownNamespace ?? "kubelock-system",
    election: `${le.lease.namespace}.${le.lease.name}`,
    failoverMs: (le.leaseDurationMs ?? LEADER_ELECTION_DEFAULTS.leaseDurationMs) + (le.retryPeriodMs ?? LEADER_ELECTION_DEFAULTS.retryPeriodMs) * (1 + JITTER_FACTOR),
    log,
  };
  const configured = await BackendRegistry.fromConfig(
    config.backends.map((b) => ({ name: b.name, type: b.type, settings: b.settings })),
    { kubeConfig, clusterName, handover, log, builtinSettings: config.kubernetes },
  );
  const backends = new BackendRegistry(configured.all().map((b) => metrics.instrument(b)));
  const caches = makeCaches(kubeConfig, client, log, options.resyncMs ?? 600_000, options.namespaces ?? []);
  const informers = [caches.locks, caches.claims, caches.pods];
  const informerNames = ["distributedlocks", "lockclaims", "pods"];
  const servers: HttpServer[] = [];
  let renewalsPending = true; // see `ready` below
  const closeServers = () => Promise.all(servers.splice(0).map((s) => s.close()));
  try {
    if (options.metricsAddress) {
      servers.push(await serveHttp(options.metricsAddress, async (req, res) => {
        if (req.url !== "/metrics" && !req.url?.startsWith("/metrics?")) return text(res, 404, "not found: try /metrics");
        const { contentType, body } = await metrics.scrape();
        text(res, 200, body, contentType);
      }));
      log.info("serving metrics", { address: servers[servers.length - 1].address, path: "/metrics" });
    }
    if (options.healthAddress) {
      const readiness = new Readiness({
        startupPending: () => [
          ...informerNames.filter((_, i) => !informers[i].hasSynced()).map((name) => `cache ${name} sync`),
          ...(renewalsPending ? ["first renewal of the holds found"] : []),
        ],
      });
      servers.push(await serveHttp(options.healthAddress, healthHandler(readiness)));
      log.info("serving health probes", { address: servers[servers.length - 1].address, paths: ["/healthz", "/readyz"] });
    }
  } catch (err) {
    await closeServers();
    await backends.closeAll();
    throw err;
  }

  const lockQueue = new WorkQueue<string>({ clock });
  const podQueue = new WorkQueue<string>({ clock });
  metrics.watchQueue("locks", () => lockQueue.len());
  metrics.watchQueue("pods", () => podQueue.len());
  const ctx: OperatorContext = {
    caches, client, backends, clock, metrics,
    events: new EventRecorder(kubeConfig, "kubelock", log),
    defaultBackend: config.defaultBackend,
    clusterName,
    log,
    enqueueLock: (key) => lockQueue.add(key),
  };
  const locks = new LockReconciler(ctx);
  const pods = new PodReconciler(ctx);

  // What the initial lists bring is queued with low priority (as what a new leader finds, below), so
  // renewals and new changes never wait behind a start-up backlog of every lock.
  let listed = false;
  const addLock = (key: string) => lockQueue.add(key, listed ? "normal" : "low");
  caches.locks.on(({ obj }) => {
    const key = `${obj.metadata.namespace}/${obj.metadata.name}`;
    addLock(key);
    for (const claim of caches.claims.byIndex(ClaimIndex.byLock, key)) locks.followClaim(claim); // a claim seen before its lock
  });
  caches.claims.on(({ type, obj }) => {
    locks.followClaim(obj, type === "delete"); // every replica renews Granted claims' holds
    addLock(lockKeyOfClaim(obj));
    if (obj.spec.podName) podQueue.add(`${obj.metadata.namespace}/${obj.spec.podName}`);
  });
  caches.pods.on(({ obj }) => {
    const key = `${obj.metadata?.namespace}/${obj.metadata?.name}`;
    for (const claim of caches.claims.byIndex(ClaimIndex.byPod, key)) addLock(lockKeyOfClaim(claim));
    if (obj.metadata?.annotations?.[LOCK_ANNOTATION]) podQueue.add(key);
  });

  for (const informer of informers) informer.start();
  const onError = (kind: string) => (key: string, err: unknown) => {
    metrics.reconcileErrors.inc({ kind });
    log.error("reconcile failed; retrying with backoff", { kind, key, error: apiErrorMessage(err) });
  };
  const timed = <R>(kind: string, reconcile: (key: string) => Promise<R>) => async (key: string): Promise<R> => {
    const start = clock.now();
    const end = metrics.reconcileDuration.startTimer({ kind });
    try {
      const result = await reconcile(key);
      log.debug("reconciled", { kind, key, ms: clock.now() - start, result });
      return result;
    } finally {
      end();
    }
  };

  let stopping = false;
  let workers: Promise<unknown> | undefined;
  /** Runs the controllers (once): only the leader, or every replica without leader election. */
  const startWorkers = () => {
    if (workers || stopping) return;
    log.info("starting workers", { locks: caches.locks.list().length, claims: caches.claims.list().length });
    metrics.leader.set(1);
    // Queue everything: a new leader takes over whatever the last one left.
    for (const lock of caches.locks.list()) lockQueue.add(`${lock.metadata.namespace}/${lock.metadata.name}`, "low");
    for (const claim of caches.claims.list()) lockQueue.add(lockKeyOfClaim(claim), "low");
    workers = Promise.all([
      runWorkers(lockQueue, options.lockWorkers ?? 16, timed("DistributedLock", (key) => locks.reconcile(key)), onError("DistributedLock")),
      runWorkers(podQueue, 2, timed("Pod", (key) => pods.reconcile(key)), onError("Pod")),
    ]);
  };
  const stopWorkers = async (boundMs?: number) => {
    lockQueue.shutDown();
    podQueue.shutDown();
    const drained = workers ?? Promise.resolve();
    if (boundMs === undefined) await drained;
    else await Promise.race([drained, sleep(clock, boundMs)]);
  };

  // Ready once the caches synced and the holds found have had a first renewal here: a replica that might be the
  // only one left (the leader dies next) then knows how long each hold is valid, and shows it Lost in time.
  const ready = Promise.all(informers.map((i) => i.waitForSync())).then(async () => {
    listed = true;
    const started = clock.now();
    await locks.firstRenewals();
    renewalsPending = false;
    log.info("caches synced", {
      locks: caches.locks.list().length, claims: caches.claims.list().length, leaderElection: !!options.leaderElection,
      firstRenewalsMs: clock.now() - started,
    });
  });
  ready.catch(() => undefined);

  let elector: LeaderElector | undefined;
  /** A new leader first takes over what backends hand from leader to leader (a ZooKeeper session), then reconciles. */
  const takeOverBackends = () => Promise.all(configured.all().map(async (backend) => {
    try {
      await backend.lead?.(() => elector?.leadsNow() ?? false);
    } catch (err) {
      log.error("could not take over the last leader's backend state; its holds there may become Lost", { backend: backend.name, error: apiErrorMessage(err) });
    }
  }));
  let onLost = () => {};
  const lost = new Promise<void>((resolve) => (onLost = resolve));
  if (le) {
    const margin = (le.leaseDurationMs ?? LEADER_ELECTION_DEFAULTS.leaseDurationMs) - (le.renewDeadlineMs ?? LEADER_ELECTION_DEFAULTS.renewDeadlineMs);
    elector = new LeaderElector({
      ...le,
      clock,
      log,
      // A request may take half the renew deadline: a leader gets a second try before it must step down.
      store: new KubeLeaseStore(kubeConfig, (le.renewDeadlineMs ?? LEADER_ELECTION_DEFAULTS.renewDeadlineMs) / 2),
      callbacks: {
        onStartedLeading: (signal) => void ready.then(async () => {
          if (signal.aborted) return;
          await takeOverBackends();
          if (!signal.aborted) startWorkers();
        }, () => undefined),
        onStoppedLeading: (reason) => {
          metrics.leader.set(0);
          if (reason !== "lost") return;
          for (const backend of configured.all()) backend.stepDown?.();
          log.error("leader election lost; stopping the controllers", { drainMs: margin });
          void stopWorkers(margin).then(closeServers).then(onLost);
        },
      },
    });
    const leader = elector;
    ctx.leadsNow = () => leader.leadsNow();
    void elector.run();
  } else {
    void ready.then(startWorkers, () => undefined); // rejects only when stopped before the caches synced
  }

  return {
    ready,
    lost,
    metrics,
    clusterName,
    identity: le?.identity,
    async stop() {
      stopping = true;
      await stopWorkers();
      await elector?.release();
      metrics.leader.set(0);
      for (const informer of informers) informer.stop();
      locks.stopAll();
      await closeServers();
      // A backend that cannot close (say, an unreachable server) must not hold the process forever.
      const closed = backends.closeAll().then(() => true, (err) => {
        log.error("closing backends failed", { error: apiErrorMessage(err) });
        return true;
      });
      const waited = new AbortController();
      const inTime = await Promise.race([closed, sleep(clock, BACKEND_CLOSE_MS, waited.signal).then(() => false)]);
      waited.abort();
      if (!inTime) log.error("backend connections did not close in time; leaving them to the process exit", { waitedMs: BACKEND_CLOSE_MS });
    },
  };
}

/**
 * The caches of locks, claims and pods: of every namespace (`namespaces` empty), of one, or of several, each
 * namespace with informers of its own merged behind one cache per resource.
 */
function makeCaches(kc: k8s.KubeConfig, client: KubeClient, log: Logger, resyncMs: number, namespaces: readonly string[]): Caches {
  /** `make(namespace, name)` builds the informer of one namespace (undefined: all) named `name` in log lines. */
  const perNamespace = <T extends KubeObject>(resource: string, make: (namespace: string | undefined, name: string) => Informer<T>): Cache<T> =>
    namespaces.length <= 1
      ? make(namespaces[0], resource)
      : new MultiNamespaceCache(new Map(namespaces.map((namespace) => [namespace, make(namespace, `${resource} in ${namespace}`)])));
  const scope = (namespace?: string) => (namespace ? `/namespaces/${namespace}` : "");
  // Lists come in pages (the informer's pageSize); the caches keep no managedFields or last-applied annotation.
  const custom = <T extends KubeObject>(plural: string) => (namespace: string | undefined, name: string) => new Informer<T>({
    kc, path: `/apis/${GROUP}/${VERSION}${scope(namespace)}/${plural}`, resyncMs, logger: log, name,
    list: (page) => (namespace
      ? client.custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural, limit: page?.limit, _continue: page?.continue }, requestTimeout())
      : client.custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural, limit: page?.limit, _continue: page?.continue }, requestTimeout())) as Promise<ListResult<T>>,
  });
  const locks = perNamespace("distributedlocks", custom<DistributedLock>(LOCK_PLURAL));
  const claims = perNamespace("lockclaims", custom<LockClaim>(CLAIM_PLURAL));
  claims.addIndex(ClaimIndex.byLock, (c) => [lockKeyOfClaim(c)]);
  claims.addIndex(ClaimIndex.byPod, (c) => (c.spec.podName ? [`${c.metadata.namespace}/${c.spec.podName}`] : []));
  claims.addIndex(ClaimIndex.byUid, (c) => (c.metadata.uid ? [c.metadata.uid] : []));
  // Every pod in scope is cached (a claim may name any pod), but only the few fields the controllers read (podForCache).
  const pods = perNamespace("pods", (namespace, name) => new Informer<k8s.V1Pod>({
    kc, path: `/api/v1${scope(namespace)}/pods`, resyncMs, logger: log, name, transform: podForCache,
    // The typed client returns Dates where watch events carry strings: keep the cache plain JSON.
    list: async (page) => {
      const paging = { limit: page?.limit, _continue: page?.continue };
      const list = await (namespace
        ? client.core.listNamespacedPod({ namespace, ...paging }, requestTimeout())
        : client.core.listPodForAllNamespaces(paging, requestTimeout()));
      // The typed list metadata names the API's `continue` `_continue`.
      return { items: JSON.parse(JSON.stringify(list.items)), metadata: { resourceVersion: list.metadata?.resourceVersion, continue: list.metadata?._continue } };
    },
  }));
  return { locks, claims, pods };
}
