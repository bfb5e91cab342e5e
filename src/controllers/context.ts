/** What every reconciler shares: caches, the API client, backends, the clock and where to log. */
import type * as k8s from "@kubernetes/client-node";
import type { DistributedLock, LockClaim } from "../api/types";
import type { BackendRegistry } from "../backends/registry";
import type { EventRecorder } from "../kube/events";
import type { KubeClient } from "../kube/client";
import type { Logger } from "../log";
import type { LockMetrics } from "../metrics";
import type { Clock } from "../runtime/clock";
import type { Cache } from "../runtime/cache";

/** Claim cache indexes. */
export const ClaimIndex = Object.freeze({
  /** `namespace/lockName` */
  byLock: "lock",
  /** `namespace/podName` */
  byPod: "pod",
  /** metadata.uid */
  byUid: "uid",
});

/** The operator's caches: of every namespace, of one, or of several merged (the same to the reconcilers). */
export interface Caches {
  locks: Cache<DistributedLock>;
  claims: Cache<LockClaim>;
  pods: Cache<k8s.V1Pod>;
}

export interface OperatorContext {
  caches: Caches;
  client: KubeClient;
  events: EventRecorder;
  backends: BackendRegistry;
  /** The config's `defaultBackend`. */
  defaultBackend: string;
  /** The config's `clusterName`: marks this cluster's holds in a shared backend. */
  clusterName: string;
  clock: Clock;
  log: Logger;
  /**
   * Whether this operator provably leads now (leader election); absent when it runs alone. Checked
   * before every write and backend change.
   */
  leadsNow?: () => boolean;
  /** Queue a lock (`namespace/name`) for reconciliation. */
  enqueueLock(key: string): void;
  /** Grant, release and lock-state metrics (optional: absent in tests that need none). */
  metrics?: LockMetrics;
}
