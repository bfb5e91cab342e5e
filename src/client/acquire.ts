/**
 * `acquireLock`: a lock for application code. Creates a LockClaim (heartbeat mode by default), waits for
 * the grant as `kubelock wait` does, confirms it with a first renewal as `kubelock run` does, and returns
 * the fencing token with an AbortSignal that fires when the grant is over.
 */
import type * as k8s from "@kubernetes/client-node";
import type { LockClaim } from "../api/types";
import {
  CLI_REQUEST_TIMEOUT_MS, CliError, Exit, annotateRelease, clusterOf, createOrAdoptClaim, deleteClaim, patchClaim,
  uniqueClaimName, type Cluster,
} from "../cli/common";
import { renewIntervalMs } from "../cli/hold-deadline";
import { waitForGrant } from "../cli/wait";
import { LockError, toLockError } from "./errors";
import { keepGrant, type GrantKeeper } from "./keep";

/** The heartbeat lease of a claim unless told: as `kubelock run`'s. */
export const DEFAULT_LEASE_SECONDS = 15;

export interface AcquireOptions {
  /** The DistributedLock to acquire. */
  lockName: string;
  /** The lock's namespace. Default: the kubeconfig's current context's namespace, then "default". */
  namespace?: string;
  /**
   * The LockClaim's name. Default: LOCK-client-RANDOM, a fresh claim for each acquisition. An existing claim
   * of this name for the same lock is adopted (and then annotated, not deleted, by `release()`).
   */
  claimName?: string;
  /**
   * Heartbeat mode's lease in whole seconds (default 15): the claim is renewed in the background every third
   * of it, and if this process dies or is cut off, the operator ends the grant one lease after the last
   * renewal. The holder's own deadline (`Lock.signal`) comes before that.
   */
  leaseDurationSeconds?: number;
  /**
   * `false`: a claim without heartbeat. The grant then lasts until `release()` or the claim's deletion, even
   * if this process dies; only the watch of the claim can tell `Lock.signal` of a loss. Default `true`.
   */
  heartbeat?: boolean;
  /** Queue priority: higher goes first, FIFO within a priority. Default 0. */
  priority?: number;
  /**
   * Give up waiting after this many milliseconds (LockError `Timeout`; the claim is deleted). Default: wait
   * until granted or `signal` aborts. `0` means `wait: false`.
   */
  timeoutMs?: number;
  /**
   * `false`: try once, like `flock -n`. If the operator queues the claim instead of granting it at once, the
   * claim is deleted and acquireLock rejects with LockError `Busy`; `timeoutMs` then bounds the wait for the
   * operator's answer (default 30 s). Default `true`.
   */
  wait?: boolean;
  /**
   * Aborting it stops the wait: the claim is deleted and acquireLock rejects with the signal's reason.
   * It has no effect once acquireLock has resolved (use `Lock.release()`).
   */
  signal?: AbortSignal;
  /** Labels for the claim (`app.kubernetes.io/managed-by: kubelock` is always set). */
  labels?: Record<string, string>;
  /** Progress while waiting ("waiting for lock L: position 2"). */
  onProgress?: (message: string) => void;
  /** Trouble while holding that has not ended the grant (yet): a failed renewal, a watch that could not go on. */
  onTrouble?: (message: string) => void;
  /** Each API request gives up after this long (default 15 s; while held, at most a third of the lease). */
  requestTimeoutMs?: number;
}

/** A granted lock. */
export interface Lock {
  readonly namespace: string;
  readonly lockName: string;
  readonly claimName: string;
  /**
   * The grant's fencing token: a non-negative integer as a decimal string, strictly increasing per lock
   * (compare with `BigInt`). Pass it with every write to what the lock guards, and have that refuse tokens
   * older than the newest it has seen.
   */
  readonly fencingToken: string;
  /**
   * Aborts when the grant is over: the claim left Granted (Lost, Expired, Released) or was deleted, or, in
   * heartbeat mode, no renewal was confirmed for the lease minus a margin (the holder's own deadline,
   * counted on this process's monotonic clock, so it holds when the API server cannot be reached); or
   * `release()` was called. Its `reason` is a LockError with code `Lost` or `Released`.
   */
  readonly signal: AbortSignal;
  /**
   * Ends the grant: stops the renewals and the watch, aborts `signal` (unless it already has) and deletes
   * the claim (the operator then releases the backend hold); an adopted claim is annotated
   * `kubelock.io/release` instead. Call it after a loss too: it removes the claim. Safe to call again.
   */
  release(): Promise<void>;
}

const ignore = () => undefined;

function checkOptions(options: AcquireOptions): void {
  if (!options || typeof options.lockName !== "string" || options.lockName === "") throw new TypeError("acquireLock: lockName is required");
  const lease = options.leaseDurationSeconds;
  if (lease !== undefined && (!Number.isSafeInteger(lease) || lease < 1)) {
    throw new TypeError(`acquireLock: leaseDurationSeconds must be a whole number of seconds, at least 1, not ${lease}`);
  }
  const timeout = options.timeoutMs;
  if (timeout !== undefined && !(Number.isFinite(timeout) && timeout >= 0)) throw new TypeError(`acquireLock: timeoutMs must be 0 or more, not ${timeout}`);
  if (options.priority !== undefined && !Number.isSafeInteger(options.priority)) throw new TypeError(`acquireLock: priority must be an integer, not ${options.priority}`);
}

/**
 * Acquires `options.lockName`: creates a LockClaim, waits until the operator grants it (following it with
 * a watch), and in heartbeat mode confirms the grant with a first renewal before resolving. Rejects with
 * a LockError (or the reason of an aborted `options.signal`); a claim it created is deleted then.
 */
export async function acquireLock(kubeConfig: k8s.KubeConfig, options: AcquireOptions): Promise<Lock> {
  checkOptions(options);
  const { lockName, signal } = options;
  signal?.throwIfAborted();
  const cluster = clusterOf(kubeConfig, options.namespace, options.requestTimeoutMs ?? CLI_REQUEST_TIMEOUT_MS);
  const claimName = options.claimName ?? uniqueClaimName(lockName, "client");
  const leaseDurationSeconds = options.heartbeat === false ? undefined : options.leaseDurationSeconds ?? DEFAULT_LEASE_SECONDS;
  const fail = (err: unknown): never => {
    throw signal?.aborted && err === signal.reason ? err : toLockError(err);
  };

  const { claim, created } = await createOrAdoptClaim(cluster, {
    name: claimName, lockName, priority: options.priority, leaseDurationSeconds, labels: options.labels,
  }).catch(fail);
  const endClaim = async (): Promise<void> => {
    if (created) await deleteClaim(cluster, claimName);
    else await annotateRelease(cluster, claimName).catch((err) => (err instanceof CliError && err.code === Exit.NotFound ? undefined : Promise.reject(err)));
  };
  let granted: LockClaim;
  try {
    // A renewTime left from earlier would count against the lease from the moment of the grant.
    if (!created && claim.spec.renewTime && claim.status?.phase !== "Granted") await patchClaim(cluster, claimName, { spec: { renewTime: null } });
    granted = await waitForGrant({
      cluster, claimName, lockName, timeoutMs: options.timeoutMs, once: options.wait === false, signal, out: options.onProgress ?? ignore,
    });
  } catch (err) {
    if (created) await deleteClaim(cluster, claimName).catch(ignore);
    return fail(err);
  }
  const fencingToken = granted.status?.fencingToken;
  if (!fencingToken) {
    await endClaim().catch(ignore);
    throw new LockError("Unexpected", `claim ${claimName} is Granted but shows no fencing token`);
  }

  const leaseMs = granted.spec.leaseDurationSeconds ? granted.spec.leaseDurationSeconds * 1000 : undefined;
  // From here on a request that outlasts a renewal interval is useless: renewals decide the deadline.
  const holding: Cluster = leaseMs ? { ...cluster, requestTimeoutMs: Math.min(cluster.requestTimeoutMs, renewIntervalMs(leaseMs)) } : cluster;
  const grant = new AbortController();
  const keeper = keepGrant({
    cluster: holding, claimName, leaseMs,
    lost: (why) => grant.abort(new LockError("Lost", `lost lock ${lockName}: ${why}`)),
    trouble: options.onTrouble ?? ignore,
  });
  const ready = await firstOf(keeper, grant.signal, signal);
  if (ready !== "confirmed") {
    keeper.stop();
    await endClaim().catch(ignore);
    throw ready === "lost" ? grant.signal.reason : signal!.reason;
  }

  let releasing: Promise<void> | undefined;
  const release = (): Promise<void> => {
    releasing ??= (async () => {
      keeper.stop();
      if (!grant.signal.aborted) grant.abort(new LockError("Released", `released lock ${lockName}`));
      try {
        await endClaim();
      } catch (err) {
        releasing = undefined; // a later call tries again
        throw toLockError(err);
      }
    })();
    return releasing;
  };
  return { namespace: cluster.namespace, lockName, claimName, fencingToken, signal: grant.signal, release };
}

/** Whichever comes first: the keeper's first confirmed renewal, the grant's loss, the caller's abort. */
function firstOf(keeper: GrantKeeper, lost: AbortSignal, caller?: AbortSignal): Promise<"confirmed" | "lost" | "aborted"> {
  return new Promise((resolve) => {
    const done = (outcome: "confirmed" | "lost" | "aborted") => {
      lost.removeEventListener("abort", onLost);
      caller?.removeEventListener("abort", onAbort);
      resolve(outcome);
    };
    const onLost = () => done("lost");
    const onAbort = () => done("aborted");
    if (lost.aborted) return done("lost");
    if (caller?.aborted) return done("aborted");
    lost.addEventListener("abort", onLost, { once: true });
    caller?.addEventListener("abort", onAbort, { once: true });
    void keeper.confirmed.then(() => done("confirmed"));
  });
}
