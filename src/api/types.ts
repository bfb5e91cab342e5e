/**
 * The kubelock API: group `kubelock.io`, version `v1alpha1`, kinds `DistributedLock` and `LockClaim`.
 * These types mirror `crds/` exactly; the CRD schemas are the validation, these are the shapes.
 */

export const GROUP = "kubelock.io";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;
export const LOCK_PLURAL = "distributedlocks";
export const CLAIM_PLURAL = "lockclaims";

/**
 * Finalizer on locks: their claims' holds and the key's backend state are released before the lock goes.
 * Claims carry none (a claim's deletion is seen by watch, and its UID is evidence enough to release its hold);
 * the operator still removes it from claims that an earlier version gave one.
 */
export const RELEASE_FINALIZER = "kubelock.io/release";
/** Pod annotation naming the DistributedLock the pod asks for. */
export const LOCK_ANNOTATION = "kubelock.io/lock";
/** Pod annotation giving the claim's priority (an integer; default 0). */
export const PRIORITY_ANNOTATION = "kubelock.io/priority";
/** Claim annotation set by `kubelock release`: the holder is done; the grant ends (phase Released). */
export const RELEASE_ANNOTATION = "kubelock.io/release";
/**
 * Claim annotation the operator writes with the UID of the claim's pod when it first sees both, for
 * claims without an ownerReference to their pod: a new pod reusing the name is not the holder.
 */
export const POD_UID_ANNOTATION = "kubelock.io/pod-uid";
/** Pod scheduling gate removed once the pod's claim is granted. */
export const SCHEDULING_GATE = "kubelock.io/lock";

export interface ObjectMeta {
  name: string;
  namespace: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  finalizers?: string[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: OwnerReference[];
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

/** metav1.Condition. */
export interface Condition {
  type: string;
  status: "True" | "False" | "Unknown";
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

export interface DistributedLockSpec {
  /** Backend name from the operator config. Default: the config's `defaultBackend`. */
  backend?: string;
  /** The lock's name in the backend. Default: `metadata.name`. Backend key: `<prefix>/<namespace>/<key>`. */
  key?: string;
  /** 1 is a mutex, N a counting semaphore. Default 1. */
  maxHolders?: number;
  /** How long a backend hold outlives the operator's last renewal. Default 30. */
  leaseDurationSeconds?: number;
}

export interface LockHolder {
  /** The LockClaim's name; for a holder granted by another cluster, that cluster's claim name. */
  claim: string;
  /** Pod name, or claim name when the claim names no pod. */
  holderIdentity: string;
  /** Set for holders granted by another cluster sharing the backend. */
  cluster?: string;
  /** A non-negative integer, as a string; strictly increasing per backend key. */
  fencingToken: string;
  acquireTime: string;
  /**
   * The hold's last renewal in the backend as recorded here. The operator renews every third of the
   * lease in the backend but records a renewal only once the recorded one is STATUS_REPORT_MS (5 min)
   * old, and then in its turn, at most STATUS_REPORTS_PER_SECOND across the operator, so held locks cost few status
   * writes while nothing changes. A holder listed here holds: the
   * operator removes it (and shows its claim Lost) as soon as a renewal finds the hold gone.
   */
  renewTime: string;
}

/** The longest a waiting claim's `status.position` lags behind a moving queue. */
export const POSITION_REFRESH_MS = 2000;

/**
 * How long a new claim that has to wait goes without a status: one granted within this time after the operator
 * first saw it goes straight to Granted, so a lock handed on quickly costs no Pending write per claim.
 */
export const FIRST_PLACE_DELAY_MS = 250;

/**
 * How often renewals alone are recorded in a lock's `status.holders[].renewTime` (as a Node's status
 * report frequency since Lease heartbeats): 5 minutes. Holds are renewed in the backend every third of
 * their lease regardless; the status is a report, written when something changes.
 */
export const STATUS_REPORT_MS = 5 * 60_000;

/**
 * At most this many of those reports a second, across every lock of the operator (ReportSchedule): with more than
 * STATUS_REPORTS_PER_SECOND × 300 held locks (6,000), each lock's renewals are recorded less often than every
 * STATUS_REPORT_MS, so that reports never take more than a small, fixed share of the API server's writes.
 */
export const STATUS_REPORTS_PER_SECOND = 20;

export interface DistributedLockStatus {
  holders?: LockHolder[];
  /**
   * Every holder's holderIdentity, comma-separated ("" when nobody holds), for `kubectl get dlock -o wide`: a
   * printer column's JSONPath shows only the first value of `holders[*]`.
   */
  holderNames?: string;
  /** The number of holders, for `kubectl get dlock` (printer columns cannot count). */
  holderCount?: number;
  /** Claims waiting; a change of it alone is written at most every POSITION_REFRESH_MS. */
  waiting?: number;
  leaseTransitions?: number;
  /**
   * The highest fencing token this cluster ever handed out on the lock (a decimal string): the high-water mark
   * below which no grant may go, kept in the API server so that a backend losing its data cannot make tokens
   * repeat or go backwards.
   */
  highestFencingToken?: string;
  /**
   * Counter backends only (Redis, PostgreSQL): the fencing mark recorded ahead of the tokens this cluster hands out on
   * the lock, so that it is written once per many grants. Every token handed out is at or below it until it is raised,
   * and it is raised before any claim shows a token above it; an operator's first grant on the lock after it starts
   * raises the backend's counter past it, so tokens never repeat even when the backend lost its data meanwhile.
   */
  reservedFencingToken?: string;
  observedGeneration?: number;
  conditions?: Condition[];
}

export interface DistributedLock {
  apiVersion: typeof API_VERSION;
  kind: "DistributedLock";
  metadata: ObjectMeta;
  spec: DistributedLockSpec;
  status?: DistributedLockStatus;
}

export interface LockClaimSpec {
  /** A DistributedLock in the same namespace. Required, immutable. */
  lockName: string;
  /** The requesting pod in the same namespace; the grant ends when it ends. */
  podName?: string;
  /** Higher goes first; FIFO by creation within a priority. Default 0. */
  priority?: number;
  /** Heartbeat mode: `renewTime` must move forward within this many seconds. */
  leaseDurationSeconds?: number;
  /** Written by the holder in heartbeat mode (MicroTime). */
  renewTime?: string;
  /** Stop waiting after this long. */
  waitTimeoutSeconds?: number;
}

export type ClaimPhase = "Pending" | "Granted" | "Released" | "Expired" | "Lost" | "Rejected";

/** Phases a claim never leaves. */
export const TERMINAL_PHASES: readonly ClaimPhase[] = Object.freeze(["Released", "Expired", "Lost", "Rejected"]);

export interface LockClaimStatus {
  phase?: ClaimPhase;
  /** While Pending: 1 is next. */
  /**
   * Place in the queue while Pending; 1 is next. A claim's first place is written once it has waited
   * FIRST_PLACE_DELAY_MS (a quarter of a second); changes of place are written at most every POSITION_REFRESH_MS (2 s) per lock, so a queue of k claims moving
   * fast costs k status writes per refresh rather than k per grant.
   */
  position?: number;
  fencingToken?: string;
  holderIdentity?: string;
  acquireTime?: string;
  releaseTime?: string;
  observedGeneration?: number;
  conditions?: Condition[];
}

export interface LockClaim {
  apiVersion: typeof API_VERSION;
  kind: "LockClaim";
  metadata: ObjectMeta;
  spec: LockClaimSpec;
  status?: LockClaimStatus;
}

/** Condition types. */
export const ConditionType = Object.freeze({
  /** On a lock: spec valid and backend reachable. */
  Ready: "Ready",
  /** On a lock: a slot is free. */
  Available: "Available",
  /** On a claim: the claim holds the lock. */
  Granted: "Granted",
});

/** Reasons on a claim's `Granted` condition, one CamelCase word each. */
export const ClaimReason = Object.freeze({
  Waiting: "Waiting",
  Granted: "Granted",
  Released: "Released",
  HolderTerminated: "HolderTerminated",
  LeaseExpired: "LeaseExpired",
  WaitTimeout: "WaitTimeout",
  LockNotFound: "LockNotFound",
  BackendUnavailable: "BackendUnavailable",
  Lost: "Lost",
  InvalidSpec: "InvalidSpec",
});
export type ClaimReason = (typeof ClaimReason)[keyof typeof ClaimReason];

/** Reasons on a lock's conditions. */
export const LockReason = Object.freeze({
  BackendReady: "BackendReady",
  BackendUnavailable: "BackendUnavailable",
  UnknownBackend: "UnknownBackend",
  /** The backend issued a fencing token at or below the lock's high-water mark: it lost data; nothing is granted. */
  FencingTokenRegressed: "FencingTokenRegressed",
  /** The backend cannot honour the lock's leaseDurationSeconds (the message says what to change). */
  LeaseUnsupported: "LeaseUnsupported",
  SlotFree: "SlotFree",
  AllSlotsHeld: "AllSlotsHeld",
});

export const LOCK_DEFAULTS = Object.freeze({ maxHolders: 1, leaseDurationSeconds: 30 });
