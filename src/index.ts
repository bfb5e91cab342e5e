/** The `kubelock` package: the client library, and the API's types for those who read locks and claims themselves. */
export * from "./client";
export {
  API_VERSION, CLAIM_PLURAL, GROUP, LOCK_PLURAL, VERSION,
  type ClaimPhase, type Condition, type DistributedLock, type DistributedLockSpec, type DistributedLockStatus,
  type LockClaim, type LockClaimSpec, type LockClaimStatus, type LockHolder,
} from "./api/types";
