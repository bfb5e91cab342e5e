/**
 * A replica that does not lead still shows a claim Lost when it can no longer vouch for the claim's hold.
 *
 * Every replica renews the holds of Granted claims (HoldRenewer), so a follower often knows first: when the
 * leader has just died, no leader may be elected before a short lease runs out, and the claim would show
 * Granted while the backend grants its slot elsewhere. So, when a follower's renewal finds the hold gone, or
 * the validity it confirmed itself passes without a new confirmation, it writes the claim Lost. The write:
 * - grants nothing and is terminal (the leader then lets the hold lapse, with the lock-delay, as for any Lost);
 * - is conditional on the claim's resourceVersion as this replica saw it Granted, so it never overwrites an
 *   ending the leader wrote meanwhile (a conflict ends the attempt; the cache shows what happened);
 * - may end a hold another replica still renews (this one was cut off from the backend): that costs the
 *   holder its grant, never safety, as when the leader itself is cut off.
 * A failed write is retried with backoff while the claim still shows Granted here.
 */
import { CLAIM_PLURAL, ClaimReason, type LockClaim } from "../api/types";
import { apiErrorMessage, statusCode } from "../kube/client";
import { endedStatus } from "./claim-status";
import { ClaimIndex, type OperatorContext } from "./context";
import type { TrackedHold } from "./hold-renewer";

const RETRY_BASE_MS = 250;
const RETRY_CAP_MS = 1000; // a Lost that waits on the API server must land soon after it answers again

const WHY = {
  gone: "the backend no longer has its hold",
  unconfirmed: "no renewal of its backend hold was confirmed within the lease",
} as const;

export function showLostAsFollower(ctx: OperatorContext, hold: TrackedHold, why: keyof typeof WHY, attempt = 0): void {
  const claim = ctx.caches.claims.byIndex(ClaimIndex.byUid, hold.holderId)[0] as LockClaim | undefined;
  // A claim being deleted is no longer Granted to anyone (its holder was told); its hold went with the release.
  if (!claim || claim.status?.phase !== "Granted" || claim.metadata.deletionTimestamp) return;
  const message = `${WHY[why]} (seen by a replica that does not lead); stop work guarded by this claim's fencing token and create a new claim`;
  const status = endedStatus(claim, "Lost", ClaimReason.Lost, message, new Date(ctx.clock.now()).toISOString());
  ctx.client.patchStatus(CLAIM_PLURAL, claim.metadata, claim.status, status).then((written) => {
    ctx.caches.claims.observe(written as LockClaim);
    ctx.metrics?.claimLost();
    ctx.events.record(claim, "Warning", ClaimReason.Lost, message);
    ctx.log.info("showed a claim Lost whose hold this replica could not vouch for", { claim: `${claim.metadata.namespace}/${claim.metadata.name}`, why });
  }, (err: unknown) => {
    if (statusCode(err) === 404 || statusCode(err) === 409) return; // gone, or changed by another writer: the cache shows it
    ctx.log.debug("could not show a claim Lost; retrying", { claim: claim.metadata.name, error: apiErrorMessage(err) });
    const delay = Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** attempt);
    ctx.clock.setTimeout(() => showLostAsFollower(ctx, hold, why, attempt + 1), delay);
  });
}
