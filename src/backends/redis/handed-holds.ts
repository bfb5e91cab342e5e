/**
 * Holds a release handed to this process's waiters (scripts.ts, promote), as the release's event announced them, so
 * that a waiter woken by the event takes its hold without asking Redis: a handoff then costs the release and the
 * event, not a further round trip.
 *
 * Validity. A handed hold expires when its queue entry would have: at least a lease after Redis ran the last request
 * that answered "queued" for it, since that request refreshed the entry. Such a request was sent at `queuedAt` (this
 * process's clock), before Redis ran it, so the hold is certainly live until queuedAt + lease (less the caller's
 * margin for clock rates): it is returned with `confirmedAt: queuedAt`, and only while less than half a lease has
 * passed since then (after that the caller asks Redis, which extends the hold as it re-attaches).
 */
interface Queued {
  channel: string;
  /** When the last request that left the holder queued was sent. */
  queuedAt: number;
  leaseMs: number;
  /** The hold's JSON, once an event said a release handed it over. */
  hold?: string;
}

export class HandedHolds {
  private readonly queued = new Map<string, Queued>();
  /** The size at which records older than their lease are swept (it doubles with what a sweep keeps). */
  private sweepAt = 1024;

  constructor(private readonly clock: () => number = Date.now) {}

  /** A request sent at `sentAt` left `holderId` queued on the lock whose events come on `channel`. */
  queuedBy(holderId: string, channel: string, sentAt: number, leaseMs: number): void {
    const known = this.queued.get(holderId);
    // An event may come before the reply of a request Redis ran before the release: the hold it named is kept.
    const hold = known?.channel === channel ? known.hold : undefined;
    this.queued.set(holderId, { channel, queuedAt: Math.max(sentAt, known?.queuedAt ?? -Infinity), leaseMs, hold });
    if (this.queued.size >= this.sweepAt) this.sweep();
  }

  /** An event on `channel` said a release handed this hold over: kept when its holder is queued here. */
  handed(channel: string, holdJson: string): void {
    let holderId: string;
    try {
      holderId = String((JSON.parse(holdJson) as { holderId?: unknown }).holderId);
    } catch {
      return; // not a hold (a line of some other version's event): the waiter asks Redis
    }
    const known = this.queued.get(holderId);
    if (known?.channel === channel) known.hold = holdJson;
  }

  /** The hold handed to `holderId` on `channel`, while certainly live: its JSON and when it was confirmed. Forgets it. */
  take(holderId: string, channel: string): { json: string; confirmedAt: number } | undefined {
    const known = this.queued.get(holderId);
    if (!known?.hold || known.channel !== channel) return undefined;
    this.queued.delete(holderId);
    if (this.clock() - known.queuedAt >= known.leaseMs / 2) return undefined;
    return { json: known.hold, confirmedAt: known.queuedAt };
  }

  /** `holderId` holds (Redis said so) or left the queue: nothing is kept for it. */
  forget(holderId: string): void {
    this.queued.delete(holderId);
  }

  /** Drops records older than their lease: their entries have expired unless refreshed by a request still under way. */
  private sweep(): void {
    const now = this.clock();
    for (const [holderId, { queuedAt, leaseMs }] of this.queued) if (now - queuedAt >= leaseMs) this.queued.delete(holderId);
    this.sweepAt = Math.max(1024, this.queued.size * 2);
  }
}

