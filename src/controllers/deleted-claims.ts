/**
 * Claims this process saw deleted, by UID: the evidence that lets a hold whose claim is gone be released
 * without a live read from the API server. A UID is never reused, so a watch's DELETE event for it proves
 * the claim will not come back. Each entry also says whether the claim had ended in a way whose hold must
 * lapse (Lost, LeaseExpired) rather than go at once. Entries are dropped once used, or after `ttlMs`
 * (a claim that held nothing leaves one that nobody asks for).
 */
export interface DeletedClaim {
  /** Its hold, if one is left, must lapse (lock-delay) instead of being released at once. */
  lapses: boolean;
  /** The DistributedLock it named (`namespace/name`). */
  lockKey: string;
}

export class DeletedClaims {
  private readonly entries = new Map<string, DeletedClaim & { at: number }>();

  constructor(private readonly ttlMs = 10 * 60_000) {}

  note(uid: string, claim: DeletedClaim, now: number): void {
    this.entries.delete(uid); // re-inserted last, so the map stays in age order for the pruning below
    this.entries.set(uid, { ...claim, at: now });
    for (const [id, entry] of this.entries) {
      if (now - entry.at < this.ttlMs) break;
      this.entries.delete(id);
    }
  }

  get(uid: string): DeletedClaim | undefined {
    return this.entries.get(uid);
  }

  forget(uid: string): void {
    this.entries.delete(uid);
  }

  /** The UIDs of the deleted claims that named `lockKey`. */
  forLock(lockKey: string): string[] {
    return [...this.entries].filter(([, entry]) => entry.lockKey === lockKey).map(([uid]) => uid);
  }
}
