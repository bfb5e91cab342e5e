/**
 * The operator passes every backend a lock key `<namespace>/<key>`: the lock's namespace, then its
 * `spec.key` (which may itself hold slashes). A backend keeps the two apart in its own naming, so one
 * namespace can never name another namespace's locks.
 */
export interface LockKey {
  namespace: string;
  /** Everything after the first slash. */
  key: string;
}

/** Splits at the first slash; throws when either side is empty. */
export function splitLockKey(key: string): LockKey {
  const slash = key.indexOf("/");
  if (slash <= 0 || slash === key.length - 1) throw new Error(`invalid lock key "${key}": expected <namespace>/<key>`);
  return { namespace: key.slice(0, slash), key: key.slice(slash + 1) };
}
