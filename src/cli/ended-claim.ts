/**
 * Asking again under the same claim name: `kubelock wait --claim NAME` and `kubelock run --claim NAME` after
 * that claim was released (or expired, was lost or rejected). A claim that has ended is never granted again,
 * so a holder that asks again under its name gets a new claim: the ended one is deleted and created anew,
 * provided kubelock made it (label app.kubernetes.io/managed-by=kubelock: these commands, the client library,
 * or the operator for an annotated pod). An ended claim made otherwise (kubectl apply) is someone's record and
 * is adopted as before: the wait then says it ended, and that deleting it asks again.
 */
import { CLAIM_PLURAL, GROUP, TERMINAL_PHASES, VERSION, type ClaimPhase, type LockClaim } from "../api/types";
import { untilClaim } from "./claim-watch";
import { CliError, Exit, apiError, createOrAdoptClaim, httpStatus, timeoutOf, type ClaimRequest, type Cluster } from "./common";

/** How long a deleted ended claim may take to go (only one an earlier version gave a finalizer takes any). */
const GONE_WITHIN_MS = 30_000;
/** Creates tried at most: another holder may take the name between the delete and the create (then it is adopted). */
const ATTEMPTS = 3;

/** Whether `claim` has ended and kubelock made it, so that asking again under its name replaces it. */
export function replaceable(claim: LockClaim): boolean {
  const phase = claim.status?.phase;
  return phase !== undefined && TERMINAL_PHASES.includes(phase) && claim.metadata.labels?.["app.kubernetes.io/managed-by"] === "kubelock";
}

/**
 * createOrAdoptClaim, except that an existing claim that is `replaceable` (and names the same lock and pod) is
 * deleted, that very object only (preconditions on its UID and resourceVersion), and the claim created anew.
 * `replaced` is the phase the old claim had ended with.
 */
export async function createOrReplaceEnded(cluster: Cluster, request: ClaimRequest): Promise<{ claim: LockClaim; created: boolean; replaced?: ClaimPhase }> {
  let replaced: ClaimPhase | undefined;
  for (let attempt = 1; ; attempt++) {
    const result = await createOrAdoptClaim(cluster, request);
    if (result.created || !replaceable(result.claim) || attempt === ATTEMPTS) return { ...result, replaced: result.created ? replaced : undefined };
    await deleteEnded(cluster, result.claim);
    replaced = result.claim.status!.phase;
  }
}

/** Deletes the ended claim as read and waits until it is gone; a claim changed or deleted meanwhile is left to the next attempt. */
async function deleteEnded(cluster: Cluster, claim: LockClaim): Promise<void> {
  const { custom, namespace } = cluster;
  const { name, uid, resourceVersion } = claim.metadata;
  try {
    await custom.deleteNamespacedCustomObject(
      { group: GROUP, version: VERSION, namespace, plural: CLAIM_PLURAL, name: name!, body: { preconditions: { uid, resourceVersion } } },
      timeoutOf(cluster),
    );
  } catch (err) {
    const status = httpStatus(err);
    if (status === 404 || status === 409) return;
    throw apiError(err, "delete", CLAIM_PLURAL, namespace);
  }
  const gone = await untilClaim(cluster, name!, (c) => (!c || c.metadata.uid !== uid ? true : undefined), GONE_WITHIN_MS);
  if ("timedOut" in gone) {
    throw new CliError(`claim ${name} had ended (phase ${claim.status?.phase}) and was deleted to ask again, but it is still there after ${GONE_WITHIN_MS / 1000}s (a finalizer the kubelock operator removes: is it running?)`, Exit.Timeout);
  }
}
