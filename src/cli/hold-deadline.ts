/**
 * The holder's own deadline in heartbeat mode (`kubelock run`): how long a command may keep running
 * after the start of the last renewal the API server confirmed, whether or not the API server can be
 * reached any more.
 *
 * The operator ends a heartbeat grant one lease after the last renewTime it saw, and that renewal was
 * written after its request started here: so `confirmedStart + lease` on this process's monotonic clock
 * (performance.now()) is never later than the operator's end of the grant, up to the two clocks'
 * difference in rate, which the margin absorbs.
 *
 *   margin = 10% of the lease, at least 1s, at most a quarter of the lease (1s leases stay usable)
 *   stopAt = confirmedStart + lease - margin       SIGTERM to the command's process group
 *   killBy = confirmedStart + lease - margin / 2   SIGKILL at the latest, whatever --grace-period says
 *
 * Pure functions of numbers: the callers own the clock and the timers.
 */

export function driftMarginMs(leaseMs: number): number {
  return Math.min(leaseMs / 4, Math.max(1000, leaseMs / 10));
}

export interface HoldDeadline {
  /** Monotonic time (ms) at which the command must be told to stop. */
  stopAt: number;
  /** Monotonic time (ms) by which every process of the command must have been killed. */
  killBy: number;
}

/** The deadline that a renewal confirmed by the API server, whose request started at `confirmedStart`, grants. */
export function holdDeadline(confirmedStart: number, leaseMs: number): HoldDeadline {
  const margin = driftMarginMs(leaseMs);
  return { stopAt: confirmedStart + leaseMs - margin, killBy: confirmedStart + leaseMs - margin / 2 };
}

/** When to send SIGKILL after a SIGTERM sent at `now`: after the grace period, but never after `killBy`. */
export function killAt(now: number, graceMs: number, killBy: number): number {
  return Math.min(now + graceMs, killBy);
}

/** How often to renew: a third of the lease, so two renewals in a row may fail before `stopAt`. */
export function renewIntervalMs(leaseMs: number): number {
  return Math.max(100, Math.floor(leaseMs / 3));
}

/** After a failed renewal, try again sooner (at most every second), so one lost request costs little. */
export function retryIntervalMs(leaseMs: number): number {
  return Math.min(1000, renewIntervalMs(leaseMs));
}
