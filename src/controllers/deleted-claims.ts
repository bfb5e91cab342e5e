/**
 * Claims this process saw deleted, by UID: the evidence that lets a hold whose claim is gone be released
 * without a live read from the API server. A UID is never reused, so a watch's DELETE event for it proves
 * the claim will not come back. Each entry also says whether the claim had ended in a way whose hold must
 * lapse (Lost, LeaseExpired) rather than go at once, and which lock it named: claims carry no finalizer, so a
 * claim deleted just before its lock is no longer in the cache when the lock's deletion is reconciled, and the
 * lock asks here for the holds it must release (`forLock`). Entries are dropped once used, or after `ttlMs`
 * (a claim that held nothing leaves one that nobody asks for).
 */
export interface DeletedClaim {
  /** Its hold, if one is left, must lapse (lock-delay) instead of being released at once. */
  lapses: boolean;
  /** The DistributedLock it named (`namespace/name`). */
  lockKey: string;
}

export class DeletedClaims {
  /** In the order noted (oldest first), for the pruning in `note`. */
  private readonly entries = new Map<string, DeletedClaim & { at: number }>();
  /** UIDs by lock key: a lock's deletion finds its claims without a scan of every entry. */
  private readonly byLock = new Map<string, Set<string>>();

  constructor(private readonly ttlMs = 10 * 60_000) {}

  note(uid: string, claim: DeletedClaim, now: number): void {
    this.forget(uid); // re-inserted last, so the map stays in age order for the pruning below
    this.entries.set(uid, { ...claim, at: now });
    this.byLock.set(claim.lockKey, (this.byLock.get(claim.lockKey) ?? new Set()).add(uid));
    for (const [id, entry] of this.entries) {
      if (now - entry.at < this.ttlMs) break;
      this.forget(id);
    }
  }

  get(uid: string): DeletedClaim | undefined {
    return this.entries.get(uid);
  }

  forget(uid: string): void {
    const entry = this.entries.get(uid);
    if (!entry) return;
    this.entries.delete(uid);
    const uids = this.byLock.get(entry.lockKey);
    uids?.delete(uid);
    if (uids?.size === 0) this.byLock.delete(entry.lockKey);
  }

  /** The UIDs of the deleted claims that named `lockKey`. */
  forLock(lockKey: string): string[] {
    return [...(this.byLock.get(lockKey) ?? [])];
  }
}
