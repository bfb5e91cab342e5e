/** The status a claim should show in each situation; pure builders used by the reconcilers. */
import { setCondition } from "../api/conditions";
import { ClaimReason, ConditionType, type ClaimPhase, type LockClaim, type LockClaimStatus } from "../api/types";
import type { Hold } from "../backends/backend";

function base(claim: LockClaim): LockClaimStatus {
  return { ...claim.status, observedGeneration: claim.metadata.generation };
}

function withGranted(status: LockClaimStatus, granted: boolean, reason: ClaimReason, message: string, claim: LockClaim, now: string): LockClaimStatus {
  const conditions = setCondition(status.conditions, {
    type: ConditionType.Granted,
    status: granted ? "True" : "False",
    reason,
    message,
    observedGeneration: claim.metadata.generation,
  }, now);
  return { ...status, conditions };
}

export function grantedStatus(claim: LockClaim, hold: Hold, lockName: string, now: string): LockClaimStatus {
  const { position: _position, releaseTime: _releaseTime, ...rest } = base(claim);
  const status: LockClaimStatus = {
    ...rest,
    phase: "Granted",
    fencingToken: hold.fencingToken,
    holderIdentity: hold.holderIdentity,
    acquireTime: hold.acquireTime,
  };
  return withGranted(status, true, ClaimReason.Granted,
    `holds lock ${lockName} with fencing token ${hold.fencingToken}; delete the claim or run \`kubelock release\` when done`, claim, now);
}

/**
 * Waiting at `position`. The message depends on nothing but the position, so a waiting claim is rewritten
 * only when its own place changes (not whenever the holders or the queue's length do): the lock's status
 * shows those.
 */
export function waitingStatus(claim: LockClaim, position: number, lockName: string, now: string): LockClaimStatus {
  return withGranted({ ...base(claim), phase: "Pending", position }, false, ClaimReason.Waiting,
    `position ${position} in the queue for lock ${lockName}; the claim is granted when a slot frees (see the lock's status for its holders)`, claim, now);
}

/** Pending with a reason that is not the queue (lock missing, backend down, pod missing). */
export function blockedStatus(claim: LockClaim, reason: ClaimReason, message: string, now: string): LockClaimStatus {
  const { position: _position, ...rest } = base(claim);
  const phase: ClaimPhase = claim.status?.phase === "Granted" ? "Granted" : "Pending";
  return withGranted({ ...rest, phase }, phase === "Granted", reason, message, claim, now);
}

export function endedStatus(claim: LockClaim, phase: ClaimPhase, reason: ClaimReason, message: string, now: string): LockClaimStatus {
  const { position: _position, ...rest } = base(claim);
  return withGranted({ ...rest, phase, releaseTime: rest.releaseTime ?? now }, false, reason, message, claim, now);
}
