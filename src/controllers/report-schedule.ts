/** How long after its slot a report may still be written. */
const LATE_MS = 1000;

/**
 * Spreads the lock status writes that only record renewals (`status.holders[].renewTime`, see STATUS_REPORT_MS)
 * to at most `perSecond` across every lock, in the order they fall due, like a rate limiter's reservations.
 * Without it, n held locks would cost n ÷ 300 writes a second for ever: 333 at 100,000 locks, more than an API
 * server takes besides its other work, so reports would crowd out grants. With it, the reports of many locks
 * come less often than every STATUS_REPORT_MS, and never take more than `perSecond` of the API server's writes.
 *
 * Contract: `wait(lock, now)` reserves the lock's next free slot the first time it is asked (slots are
 * 1000 / perSecond ms apart) and answers 0 once that slot has come (the report may be written: the reservation is
 * used up), else the ms until it. A slot is good for LATE_MS after it: a lock asking later (its reconcile waited in
 * a busy queue) gets a new slot, so reports owed during a backlog never come all at once when it clears (at most
 * the slots of LATE_MS + 1 s in any second). `forget(lock)` drops an unused reservation (nothing to report any more).
 */
export class ReportSchedule {
  private nextFree = -Infinity;
  private readonly slots = new Map<string, number>();

  constructor(private readonly perSecond: number) {
    if (!(perSecond > 0)) throw new Error(`reports per second must be above 0, got ${perSecond}`);
  }

  wait(lockKey: string, nowMs: number): number {
    let slot = this.slots.get(lockKey);
    if (slot === undefined) {
      slot = Math.max(nowMs, this.nextFree);
      this.nextFree = slot + 1000 / this.perSecond;
      this.slots.set(lockKey, slot);
    }
    if (slot > nowMs) return slot - nowMs;
    this.slots.delete(lockKey);
    if (nowMs - slot <= LATE_MS) return 0;
    return this.wait(lockKey, nowMs); // missed: a new slot, after those already given
  }

  forget(lockKey: string): void {
    this.slots.delete(lockKey);
  }

  /** Locks holding a reservation (for tests and metrics). */
  get reserved(): number {
    return this.slots.size;
  }
}
