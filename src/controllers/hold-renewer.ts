/**
 * Renews this operator's backend holds on their own schedule, apart from the lock queue (as client-go's
 * leader election renews apart from the work it guards). A renewal is one backend call: it never waits
 * behind API writes or a backlog of locks, so holds survive a slow API server, and an operator holding
 * thousands of locks does no reconcile and no API write while nothing changes.
 *
 * Contract:
 * - `track` (re)schedules a hold's renewal a third of its lease after its last renewal; `untrack` stops it.
 * - A renewal that finds the hold gone stops tracking it and queues its lock: the reconciler then shows the
 *   claim Lost. A renewal that fails is retried after RETRY_MS and queues the lock as well, so its
 *   conditions say why (BackendUnavailable); a failure `isPause` accepts (this operator does not provably
 *   lead right now) is retried after PAUSE_RETRY_MS without queueing anything.
 * - Renewing is idempotent per holder and owner-checked by every backend, so a renewal racing a release or
 *   the reconciler's own renewal is harmless.
 */
import type { Hold, LockBackend } from "../backends/backend";
import type { Clock, TimerHandle } from "../runtime/clock";

/** How soon a failed renewal is tried again, ms (well inside the shortest lease, 1 s). */
const RETRY_MS = 250;
/** How soon a renewal skipped for want of leadership is tried again, ms. */
const PAUSE_RETRY_MS = 1000;

export interface TrackedHold {
  /** The DistributedLock (`namespace/name`) to queue when the hold is gone or cannot be renewed. */
  lockKey: string;
  /** The backend as the reconciler uses it (failures as BackendUnavailableError, leadership checked). */
  backend: LockBackend;
  backendKey: string;
  holderId: string;
  leaseSeconds: number;
  /** RFC 3339: the hold's last acquire or renewal. */
  renewTime: string;
}

interface Scheduled {
  hold: TrackedHold;
  timer: TimerHandle;
}

export class HoldRenewer {
  private readonly scheduled = new Map<string, Scheduled>();

  constructor(private readonly o: {
    clock: Clock;
    enqueueLock: (key: string) => void;
    onError?: (hold: TrackedHold, err: unknown) => void;
    isPause?: (err: unknown) => boolean;
  }) {}

  /** Renews `hold` a third of its lease after `hold.renewTime` (at once if that has passed), and so on. */
  track(hold: TrackedHold): void {
    const dueIn = Date.parse(hold.renewTime) + (hold.leaseSeconds * 1000) / 3 - this.o.clock.now();
    this.schedule(hold, Number.isFinite(dueIn) ? dueIn : 0);
  }

  untrack(holderId: string): void {
    const current = this.scheduled.get(holderId);
    if (!current) return;
    this.o.clock.clearTimeout(current.timer);
    this.scheduled.delete(holderId);
  }

  /** Holder ids being renewed. */
  tracked(): string[] {
    return [...this.scheduled.keys()];
  }

  stopAll(): void {
    for (const id of [...this.scheduled.keys()]) this.untrack(id);
  }

  private schedule(hold: TrackedHold, ms: number): void {
    this.untrack(hold.holderId);
    const entry: Scheduled = { hold, timer: this.o.clock.setTimeout(() => void this.renew(entry), Math.max(0, ms)) };
    this.scheduled.set(hold.holderId, entry);
  }

  private async renew(entry: Scheduled): Promise<void> {
    const { hold } = entry;
    let renewed: Hold | undefined;
    try {
      renewed = await hold.backend.renew(hold.backendKey, hold.holderId, hold.leaseSeconds);
    } catch (err) {
      if (this.scheduled.get(hold.holderId) !== entry) return;
      if (this.o.isPause?.(err)) return this.schedule(hold, PAUSE_RETRY_MS);
      this.o.onError?.(hold, err);
      this.schedule(hold, RETRY_MS);
      this.o.enqueueLock(hold.lockKey);
      return;
    }
    if (this.scheduled.get(hold.holderId) !== entry) return; // untracked or re-tracked meanwhile
    if (!renewed) {
      this.scheduled.delete(hold.holderId);
      this.o.enqueueLock(hold.lockKey);
      return;
    }
    this.track({ ...hold, renewTime: renewed.renewTime });
  }
}
