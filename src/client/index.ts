/**
 * The kubelock client library: distributed locks for application code, held through LockClaims.
 *
 *   const lock = await acquireLock(kc, { namespace: "shop", lockName: "item-42" });
 *   try { await store.write(item, { token: lock.fencingToken, signal: lock.signal }); }
 *   finally { await lock.release(); }
 *
 * or `usingLock(kc, options, async (signal, token) => ...)`.
 */
export { acquireLock, DEFAULT_LEASE_SECONDS, type AcquireOptions, type Lock } from "./acquire";
export { LockError, type LockErrorCode } from "./errors";
export { usingLock, type LockRoutine } from "./using";
