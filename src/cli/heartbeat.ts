/**
 * The heartbeat of `kubelock run`: moves the claim's spec.renewTime forward, one request at a time, a
 * third of the lease after the start of the last confirmed renewal (sooner after a failure), and
 * reports each renewal the API server confirmed with the monotonic time (performance.now()) at which
 * its request started: the holder's deadline is counted from there (see hold-deadline.ts).
 */
import { performance } from "node:perf_hooks";
import type { LockClaim } from "../api/types";
import { CliError, Exit, describeError, grantedCondition, renewClaim, sleep, type Cluster } from "./common";
import { renewIntervalMs, retryIntervalMs } from "./hold-deadline";

export interface HeartbeatEvents {
  /** The API server wrote the renewal while the claim was Granted; the request started at `startedAt`. */
  confirmed(startedAt: number): void;
  /** The claim is no longer Granted, or was deleted: renewing cannot help, and the heartbeat stops. */
  ended(why: string): void;
  /** A renewal failed for a reason that may pass (unreachable, timed out, refused); the next one follows. */
  failed(message: string): void;
}

export interface Heartbeat {
  stop(): void;
}

/** Starts renewing at once. Each request gives up after `cluster.requestTimeoutMs`. */
export function startHeartbeat(cluster: Cluster, claimName: string, leaseMs: number, events: HeartbeatEvents): Heartbeat {
  const stopper = new AbortController();
  const loop = async () => {
    while (!stopper.signal.aborted) {
      const startedAt = performance.now();
      let confirmed = false;
      try {
        const claim = await renewClaim(cluster, claimName);
        if (stopper.signal.aborted) return;
        const ended = grantEnded(claim, claimName);
        if (ended) return events.ended(ended);
        confirmed = true;
        events.confirmed(startedAt);
      } catch (err) {
        if (stopper.signal.aborted) return;
        if (err instanceof CliError && err.code === Exit.NotFound) return events.ended(`claim ${claimName} was deleted`);
        events.failed(err instanceof CliError ? err.message : describeError(err));
      }
      const next = startedAt + (confirmed ? renewIntervalMs(leaseMs) : retryIntervalMs(leaseMs));
      await sleep(Math.max(0, next - performance.now()), stopper.signal);
    }
  };
  void loop();
  return { stop: () => stopper.abort() };
}

/**
 * Why `claim` (undefined: deleted) no longer grants the lock, or undefined while it does. A claim being deleted
 * grants nothing from the moment its deletion is asked: the operator releases its hold without writing its phase.
 */
export function grantEnded(claim: LockClaim | undefined, claimName: string): string | undefined {
  if (!claim) return `claim ${claimName} was deleted`;
  if (claim.metadata.deletionTimestamp) return `claim ${claimName} is being deleted`;
  return claim.status?.phase === "Granted" ? undefined : describePhase(claim);
}

/** "claim NAME is now PHASE (Reason: message)". */
export function describePhase(claim: LockClaim): string {
  const condition = grantedCondition(claim);
  const phase = claim.status?.phase ?? "without a phase";
  return `claim ${claim.metadata.name} is now ${phase}${condition ? ` (${condition.reason}: ${condition.message})` : ""}`;
}
