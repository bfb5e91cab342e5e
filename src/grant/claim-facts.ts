/**
 * What the grant decision needs to know about one claim, worked out from the claim, its pod and the
 * time: whether it must end now (and why), whether it is blocked, and when it next needs a look.
 */
import { ClaimReason, ConditionType, POD_UID_ANNOTATION, RELEASE_ANNOTATION, type LockClaim } from "../api/types";
import { endsByLapse, isTerminal, type ClaimFacts } from "./decide";

/** The claim's pod as the cache sees it; `undefined` when the claim names no pod. */
export type PodState = { exists: false } | { exists: true; phase?: string; uid?: string };

/**
 * The UID of the pod a claim belongs to, when known: an ownerReference to its `podName` (as `kubelock
 * wait` and the pod annotation write), else the operator's `kubelock.io/pod-uid` annotation. A new pod
 * that reuses the name is not its holder.
 */
export function claimPodUid(claim: LockClaim): string | undefined {
  return claim.metadata.ownerReferences?.find((o) => o.kind === "Pod" && o.name === claim.spec.podName)?.uid
    ?? claim.metadata.annotations?.[POD_UID_ANNOTATION];
}

export interface ClaimAssessment extends ClaimFacts {
  /** Why the claim cannot be queued (missing pod); shown in its condition. */
  blockedMessage?: string;
  /** When a deadline (heartbeat, wait timeout) falls, ms since the epoch. */
  deadline?: number;
}

const ms = (time: string | undefined): number | undefined => (time ? Date.parse(time) : undefined);

/**
 * `heartbeatSeenAt`: in heartbeat mode, when this process first saw the claim's current heartbeat (its
 * spec.renewTime and status.acquireTime as they are now), on its own clock; undefined means now. The
 * holder's renewTime is never compared with the local clock: it was written on another machine, whose clock
 * may be minutes off. A heartbeat first seen after a restart or failover starts the clock afresh (late,
 * never early). `waitingSeenAt`: when this process first saw the claim waiting; waitTimeoutSeconds counts from
 * it, not from creationTimestamp (the API server's clock), for the same reason.
 */
export function assessClaim(claim: LockClaim, pod: PodState | undefined, now: number, heartbeatSeenAt = now, waitingSeenAt = now): ClaimAssessment {
  const createdAt = ms(claim.metadata.creationTimestamp) ?? now;
  const facts: ClaimAssessment = {
    id: claim.metadata.uid ?? claim.metadata.name,
    name: claim.metadata.name,
    priority: claim.spec.priority ?? 0,
    createdAt,
    phase: claim.status?.phase,
  };
  if (isTerminal(facts.phase)) {
    // Ended for good: only whether a hold it may still have lapses (Lost, LeaseExpired) or goes at once.
    const reason = claim.status?.conditions?.find((c) => c.type === ConditionType.Granted)?.reason;
    facts.lapses = facts.phase === "Lost" || endsByLapse(reason);
    return facts;
  }
  const granted = facts.phase === "Granted";
  const podName = claim.spec.podName;

  if (claim.metadata.deletionTimestamp) {
    facts.end = { reason: ClaimReason.Released, message: "the claim was deleted" };
  } else if (claim.metadata.annotations?.[RELEASE_ANNOTATION]) {
    facts.end = { reason: ClaimReason.Released, message: "released by its holder (kubelock release)" };
  } else if (podName && pod?.exists && claimPodUid(claim) && pod.uid !== claimPodUid(claim)) {
    // Another pod took the name: the claim's own pod is gone, and the newcomer cannot inherit the grant.
    facts.end = { reason: ClaimReason.HolderTerminated, message: `pod ${podName} was replaced by another pod of the same name (uid ${pod.uid}); this claim belonged to uid ${claimPodUid(claim)}` };
  } else if (podName && pod && !pod.exists) {
    if (granted) facts.end = { reason: ClaimReason.HolderTerminated, message: `pod ${podName} was deleted` };
    else {
      facts.blocked = true;
      facts.blockedMessage = `pod ${podName} not found in this namespace; the claim joins the queue once the pod exists (or drop spec.podName)`;
    }
  } else if (podName && pod?.exists && (pod.phase === "Succeeded" || pod.phase === "Failed")) {
    facts.end = { reason: ClaimReason.HolderTerminated, message: `pod ${podName} ended (phase ${pod.phase})` };
  }
  if (facts.end) return facts;

  if (granted && claim.spec.leaseDurationSeconds) {
    // The grant itself (a new acquireTime) counts as a heartbeat, so a renewTime from before it does not expire it.
    const deadline = heartbeatSeenAt + claim.spec.leaseDurationSeconds * 1000;
    if (now >= deadline) {
      facts.end = {
        reason: ClaimReason.LeaseExpired,
        message: `spec.renewTime was not moved forward within ${claim.spec.leaseDurationSeconds}s (heartbeat mode); the grant expired`,
      };
    } else facts.deadline = deadline;
  } else if (!granted && claim.spec.waitTimeoutSeconds) {
    const deadline = waitingSeenAt + claim.spec.waitTimeoutSeconds * 1000;
    if (now >= deadline) {
      facts.end = { reason: ClaimReason.WaitTimeout, message: `not granted within waitTimeoutSeconds (${claim.spec.waitTimeoutSeconds}s); create a new claim to wait again` };
    } else facts.deadline = deadline;
  }
  return facts;
}
