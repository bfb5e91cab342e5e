/**
 * Renews this operator's backend holds on their own schedule, apart from the lock queue (as client-go's
 * leader election renews apart from the work it guards), and knows how long each hold is certainly valid.
 * A renewal is one backend call: it never waits behind API writes or a backlog of locks.
 *
 * Contract:
 * - `track` (re)schedules a hold's renewal a third of its lease after its last confirmation; `untrack` stops it.
 * - A confirmation is a successful acquire or renewal; it counts from when that call STARTED, on this process's
 *   clock, never from a timestamp another machine wrote. `validUntil` = last confirmation + lease − margin
 *   (`validityMarginMs`): until then the backend cannot have let the hold go, whatever happens meanwhile. A hold
 *   tracked without a confirmation here (after a restart) has no validity until its first renewal succeeds.
 * - Once the validity deadline has passed, a hold on a backend whose expiry others judge from what they observed
 *   (Leases, etcd) is not renewed again (a success then could revive a slot another operator already judged
 *   free); it stays tracked with its passed deadline until the reconcile ends its claim. On a backend that expires
 *   holds on its own clock (`expiresOnServer`), renewals go on: one that succeeds proves the hold never lapsed,
 *   so a replica slowed past the deadline (a long pause, a starved process) does not give up a hold it still has.
 * - A renewal that finds the hold gone stops tracking it and queues its lock (the claim becomes Lost). A renewal
 *   that fails is retried with jittered exponential backoff (bounded well inside the lease) and queues the lock, so
 *   its conditions say why; when the validity deadline passes without a confirmation, the lock is queued again at
 *   that moment, so the claim is shown Lost then, backend reachable or not. Both also call `onLapsed`: a replica
 *   that does not lead (its queue is idle) shows the claim Lost itself, since the leader may be the one that died.
 * - `firstAttempts()` resolves once every hold tracked so far without a confirmation has had its first renewal
 *   finish, so that a starting replica reports ready only when it knows the validity of the holds it keeps.
 * - Renewing is idempotent per holder and owner-checked by every backend (it never recreates a released hold), so
 *   a renewal racing a release, another replica's renewal or the reconciler's own is harmless. That is why every
 *   replica renews, leader or not: a standby keeps the holds alive through a leader's crash, however short the
 *   locks' leases are next to the leader election's failover time.
 */
import type { Hold, LockBackend } from "../backends/backend";
import type { Clock, TimerHandle } from "../runtime/clock";

/** First retry of a failed renewal, ms; doubled per failure up to `retryCapMs`. */
const RETRY_BASE_MS = 250;

/**
 * What is taken off a lease for clock drift, scheduling delays and the status write that shows the claim Lost:
 * 10 %, at least 1 s, at most a third of the lease.
 */
export function validityMarginMs(leaseSeconds: number): number {
  const leaseMs = leaseSeconds * 1000;
  return Math.min(Math.max(1000, leaseMs / 10), leaseMs / 3);
}

/** The longest pause between renewal retries: a sixth of the lease, at most 5 s, so several fit before the deadline. */
export function retryCapMs(leaseSeconds: number): number {
  return Math.max(RETRY_BASE_MS, Math.min(5000, (leaseSeconds * 1000) / 6));
}

export interface TrackedHold {
  /** The DistributedLock (`namespace/name`) to queue when the hold is gone or cannot be renewed. */
  lockKey: string;
  /** The backend as the reconciler uses it (failures as BackendUnavailableError). */
  backend: LockBackend;
  backendKey: string;
  holderId: string;
  leaseSeconds: number;
}

interface Entry {
  hold: TrackedHold;
  /** This process's clock when the last confirming call started; undefined: none here yet. */
  confirmedAt?: number;
  failures: number;
  /** Resolves when the first renewal of a hold tracked without a confirmation has finished (see firstAttempts). */
  firstAttempt?: { done: Promise<void>; resolve: () => void };
  timer?: TimerHandle;
  deadline?: TimerHandle;
}

export class HoldRenewer {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly o: {
    clock: Clock;
    enqueueLock: (key: string) => void;
    /** The hold is gone (`gone`) or its validity passed without a confirmation (`unconfirmed`). */
    onLapsed?: (hold: TrackedHold, why: "gone" | "unconfirmed") => void;
    onError?: (hold: TrackedHold, err: unknown) => void;
    /** Jitter source in [0, 1) (tests pass a fixed one). */
    random?: () => number;
  }) {}

  /**
   * Keeps `hold` renewed. `confirmedAt`: when a call that confirmed it started (an acquire or renewal by the
   * caller). Without one, an untracked hold is renewed within `firstRenewalMs` (default: at once) and has no
   * validity until then; an already tracked hold keeps its schedule.
   */
  track(hold: TrackedHold, confirmedAt?: number, firstRenewalMs = 0): void {
    const entry = this.entries.get(hold.holderId);
    if (entry && confirmedAt === undefined) {
      entry.hold = hold;
      return;
    }
    const next: Entry = { hold, confirmedAt: Math.max(confirmedAt ?? -Infinity, entry?.confirmedAt ?? -Infinity), failures: 0 };
    if (!Number.isFinite(next.confirmedAt)) {
      next.confirmedAt = undefined;
      let resolve = () => {};
      next.firstAttempt = { done: new Promise<void>((r) => (resolve = r)), resolve };
    }
    entry?.firstAttempt?.resolve();
    this.replace(next);
    const now = this.o.clock.now();
    this.schedule(next, next.confirmedAt === undefined ? firstRenewalMs : next.confirmedAt + (hold.leaseSeconds * 1000) / 3 - now);
    this.armDeadline(next);
  }

  untrack(holderId: string): void {
    const entry = this.entries.get(holderId);
    if (!entry) return;
    this.clearTimers(entry);
    entry.firstAttempt?.resolve();
    this.entries.delete(holderId);
  }

  /** Resolves once every hold tracked now without a confirmation has had its first renewal finish (or was untracked). */
  async firstAttempts(): Promise<void> {
    await Promise.all([...this.entries.values()].map((e) => e.firstAttempt?.done));
  }

  /** Until when (this process's clock, ms) the hold is certainly held; undefined when not tracked or never confirmed here. */
  validUntil(holderId: string): number | undefined {
    const entry = this.entries.get(holderId);
    if (entry?.confirmedAt === undefined) return undefined;
    return entry.confirmedAt + entry.hold.leaseSeconds * 1000 - validityMarginMs(entry.hold.leaseSeconds);
  }

  /** Holder ids being renewed. */
  tracked(): string[] {
    return [...this.entries.keys()];
  }

  stopAll(): void {
    for (const id of [...this.entries.keys()]) this.untrack(id);
  }

  private replace(entry: Entry): void {
    const current = this.entries.get(entry.hold.holderId);
    if (current) this.clearTimers(current);
    this.entries.set(entry.hold.holderId, entry);
  }

  private clearTimers(entry: Entry): void {
    if (entry.timer !== undefined) this.o.clock.clearTimeout(entry.timer);
    if (entry.deadline !== undefined) this.o.clock.clearTimeout(entry.deadline);
    entry.timer = entry.deadline = undefined;
  }

  private schedule(entry: Entry, ms: number): void {
    if (entry.timer !== undefined) this.o.clock.clearTimeout(entry.timer);
    entry.timer = this.o.clock.setTimeout(() => void this.renew(entry), Math.max(0, ms));
  }

  /** At the validity deadline, unless a confirmation moved it, the lock is queued: the claim must show Lost now. */
  private armDeadline(entry: Entry): void {
    if (entry.deadline !== undefined) this.o.clock.clearTimeout(entry.deadline);
    const until = this.validUntil(entry.hold.holderId);
    if (until === undefined) return;
    entry.deadline = this.o.clock.setTimeout(() => {
      entry.deadline = undefined;
      if (this.entries.get(entry.hold.holderId) !== entry) return;
      this.o.enqueueLock(entry.hold.lockKey);
      this.o.onLapsed?.(entry.hold, "unconfirmed");
    }, until - this.o.clock.now() + 1);
  }

  private async renew(entry: Entry): Promise<void> {
    const { hold } = entry;
    entry.timer = undefined;
    const startedAt = this.o.clock.now();
    if (startedAt >= (this.validUntil(hold.holderId) ?? Infinity) && !hold.backend.expiresOnServer) {
      // Lapsed: its holder was told to stop by now. A late success must not revive it, so it is not
      // renewed again; the lock's reconcile shows the claim Lost and lets the hold go (lock-delay).
      this.o.enqueueLock(hold.lockKey);
      return;
    }
    let renewed: Hold | undefined;
    try {
      renewed = await hold.backend.renew(hold.backendKey, hold.holderId, hold.leaseSeconds);
    } catch (err) {
      entry.firstAttempt?.resolve();
      if (this.entries.get(hold.holderId) !== entry) return;
      this.o.onError?.(hold, err);
      entry.failures++;
      this.schedule(entry, this.backoffMs(entry));
      this.o.enqueueLock(hold.lockKey);
      return;
    }
    entry.firstAttempt?.resolve();
    if (this.entries.get(hold.holderId) !== entry) return; // untracked or re-tracked meanwhile
    if (!renewed) {
      this.untrack(hold.holderId);
      this.o.enqueueLock(hold.lockKey);
      this.o.onLapsed?.(hold, "gone");
      return;
    }
    this.track(hold, startedAt);
  }

  /** Exponential from RETRY_BASE_MS, capped by `retryCapMs`, with jitter in [½, 1] of it so replicas spread. */
  private backoffMs(entry: Entry): number {
    const ceiling = Math.min(retryCapMs(entry.hold.leaseSeconds), RETRY_BASE_MS * 2 ** Math.min(entry.failures - 1, 16));
    return ceiling * (0.5 + 0.5 * (this.o.random ?? Math.random)());
  }
}
