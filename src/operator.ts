/**
 * The operator: informers for locks, claims and pods feed two work queues of keys (locks, pods);
 * workers run the reconcilers once the caches have synced. Everything stops on `stop()`.
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
import { EventRecorder } from "./kube/events";
import { apiErrorMessage, KubeClient } from "./kube/client";
import type { Logger } from "./log";
import { realClock, type Clock } from "./runtime/clock";
import { Informer, type ListResult } from "./runtime/informer";
import { runWorkers, WorkQueue } from "./runtime/workqueue";

export interface OperatorOptions {
  kubeConfig: k8s.KubeConfig;
  config: OperatorConfig;
  log: Logger;
  /** Concurrent lock reconciles (different locks). Default 4. */
  lockWorkers?: number;
  /** Watch only this namespace (default: all namespaces). */
  namespace?: string;
  /** Full resync period of the caches, ms. Default 10 minutes. */
  resyncMs?: number;
  clock?: Clock;
}

export interface RunningOperator {
  /** Resolves once every cache has synced and the workers run. */
  ready: Promise<void>;
  stop(): Promise<void>;
}

const lockKeyOfClaim = (claim: LockClaim) => `${claim.metadata.namespace}/${claim.spec.lockName}`;

export async function startOperator(options: OperatorOptions): Promise<RunningOperator> {
  const { kubeConfig, config, log } = options;
  const clock = options.clock ?? realClock;
  const backends = await BackendRegistry.fromConfig(
    config.backends.map((b) => ({ name: b.name, type: b.type, settings: b.settings })),
    { kubeConfig, clusterName: config.clusterName },
  );
  const client = new KubeClient(kubeConfig);
  const caches = makeCaches(kubeConfig, client, log, options.resyncMs ?? 600_000, options.namespace);
  const lockQueue = new WorkQueue<string>({ clock });
  const podQueue = new WorkQueue<string>({ clock });

  const ctx: OperatorContext = {
    caches, client, backends, clock,
    events: new EventRecorder(kubeConfig, "kubelock", log),
    defaultBackend: config.defaultBackend,
    clusterName: config.clusterName,
    log,
    enqueueLock: (key) => lockQueue.add(key),
  };
  const locks = new LockReconciler(ctx);
  const pods = new PodReconciler(ctx);

  caches.locks.on(({ obj }) => lockQueue.add(`${obj.metadata.namespace}/${obj.metadata.name}`));
  caches.claims.on(({ obj }) => {
    lockQueue.add(lockKeyOfClaim(obj));
    if (obj.spec.podName) podQueue.add(`${obj.metadata.namespace}/${obj.spec.podName}`);
  });
  caches.pods.on(({ obj }) => {
    const key = `${obj.metadata?.namespace}/${obj.metadata?.name}`;
    for (const claim of caches.claims.byIndex(ClaimIndex.byPod, key)) lockQueue.add(lockKeyOfClaim(claim));
    if (obj.metadata?.annotations?.[LOCK_ANNOTATION]) podQueue.add(key);
  });

  const informers = [caches.locks, caches.claims, caches.pods];
  for (const informer of informers) informer.start();
  const onError = (kind: string) => (key: string, err: unknown) =>
    log.error("reconcile failed; retrying with backoff", { kind, key, error: apiErrorMessage(err) });

  const timed = <R>(kind: string, reconcile: (key: string) => Promise<R>) => async (key: string): Promise<R> => {
    const start = clock.now();
    const result = await reconcile(key);
    log.debug("reconciled", { kind, key, ms: clock.now() - start, result });
    return result;
  };
  let workers: Promise<unknown> = Promise.resolve();
  const ready = Promise.all(informers.map((i) => i.waitForSync())).then(() => {
    log.info("caches synced; starting workers", { locks: caches.locks.list().length, claims: caches.claims.list().length });
    workers = Promise.all([
      runWorkers(lockQueue, options.lockWorkers ?? 4, timed("DistributedLock", (key) => locks.reconcile(key)), onError("DistributedLock")),
      runWorkers(podQueue, 2, (key) => pods.reconcile(key), onError("Pod")),
    ]);
  });
  ready.catch(() => undefined);

  return {
    ready,
    async stop() {
      for (const informer of informers) informer.stop();
      lockQueue.shutDown();
      podQueue.shutDown();
      await workers;
      locks.stopAll();
      await backends.closeAll();
    },
  };
}

function makeCaches(kc: k8s.KubeConfig, client: KubeClient, log: Logger, resyncMs: number, namespace?: string): Caches {
  const scope = namespace ? `/namespaces/${namespace}` : "";
  const custom = (plural: string) => () =>
    (namespace
      ? client.custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural })
      : client.custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural })) as Promise<ListResult<never>>;
  const locks = new Informer<DistributedLock>({
    kc, path: `/apis/${GROUP}/${VERSION}${scope}/${LOCK_PLURAL}`, list: custom(LOCK_PLURAL), resyncMs, logger: log, name: "distributedlocks",
  });
  const claims = new Informer<LockClaim>({
    kc, path: `/apis/${GROUP}/${VERSION}${scope}/${CLAIM_PLURAL}`, list: custom(CLAIM_PLURAL), resyncMs, logger: log, name: "lockclaims",
  });
  claims.addIndex(ClaimIndex.byLock, (c) => [lockKeyOfClaim(c)]);
  claims.addIndex(ClaimIndex.byPod, (c) => (c.spec.podName ? [`${c.metadata.namespace}/${c.spec.podName}`] : []));
  claims.addIndex(ClaimIndex.byUid, (c) => (c.metadata.uid ? [c.metadata.uid] : []));
  const pods = new Informer<k8s.V1Pod>({
    kc, path: `/api/v1${scope}/pods`, resyncMs, logger: log, name: "pods",
    // The typed client returns Dates where watch events carry strings: keep the cache plain JSON.
    list: async () => JSON.parse(JSON.stringify(await (namespace ? client.core.listNamespacedPod({ namespace }) : client.core.listPodForAllNamespaces()))),
  });
  return { locks, claims, pods };
}
