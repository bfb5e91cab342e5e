/**
 * Time, injectable. Everything in the controller runtime that waits (work-queue delays, informer
 * backoff and resync) asks a `Clock` instead of calling the global timers, so unit tests can drive
 * time with `FakeClock` and never sleep.
 */

/** An opaque timer handle: only ever passed back to the `clearTimeout` of the clock that made it. */
export type TimerHandle = unknown;

export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  /** Runs `fn` once, `ms` milliseconds from now (negative or zero: as soon as possible). */
  setTimeout(fn: () => void, ms: number): TimerHandle;
  /** Cancels a timer from this clock's `setTimeout`. Unknown or already fired handles are ignored. */
  clearTimeout(handle: TimerHandle): void;
}

/**
 * A delay Node's timers accept: 0 .. 2^31-1 ms. Node fires a longer timer after 1 ms instead, so a
 * far deadline (a lease of months) would spin; capped, it only wakes early once in 24.8 days.
 */
export function timerDelay(ms: number): number {
  return Math.min(Math.max(0, ms), 2 ** 31 - 1);
}

/** The wall clock and Node's timers. */
export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, timerDelay(ms)),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/**
 * Resolves after `ms` on `clock`, or early when `signal` aborts (it never rejects: callers check the
 * signal or their own stopped flag afterwards).
 */
export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const onAbort = (): void => {
      clock.clearTimeout(handle);
      resolve();
    };
    const handle = clock.setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

interface FakeTimer {
  id: number;
  due: number;
  fn: () => void;
}

/**
 * A manual clock for tests. Time moves only in `advance`/`set`, which fire every timer that falls due,
 * in due-time order (ties in creation order), with `now()` equal to the timer's due time while it
 * runs. Timers created by a callback during `advance` fire in the same call if they fall due within
 * the window. Callbacks run synchronously; a test that needs promise continuations to run between
 * timers awaits them itself (e.g. `await new Promise(setImmediate)`).
 */
export class FakeClock implements Clock {
  private current: number;
  private nextId = 1;
  private timers: FakeTimer[] = [];

  constructor(startMs = 0) {
    this.current = startMs;
  }

  now(): number {
    return this.current;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const timer: FakeTimer = { id: this.nextId++, due: this.current + Math.max(0, ms), fn };
    this.timers.push(timer);
    return timer.id;
  }

  clearTimeout(handle: TimerHandle): void {
    this.timers = this.timers.filter((t) => t.id !== handle);
  }

  /** Moves time forward by `ms`, firing due timers in order. Returns how many fired. */
  advance(ms: number): number {
    if (ms < 0) throw new Error(`FakeClock.advance: negative duration ${ms}`);
    return this.set(this.current + ms);
  }

  /** Moves time forward to `target` (never backwards), firing due timers in order. Returns how many fired. */
  set(target: number): number {
    if (target < this.current) throw new Error(`FakeClock.set: ${target} is before now (${this.current})`);
    let fired = 0;
    for (;;) {
      const next = this.nextDue();
      if (!next || next.due > target) break;
      this.timers = this.timers.filter((t) => t !== next);
      this.current = next.due;
      fired++;
      next.fn();
    }
    this.current = target;
    return fired;
  }

  /** Number of timers not yet fired or cleared. */
  pending(): number {
    return this.timers.length;
  }

  /** Due time of the earliest pending timer, or undefined when none is pending. */
  nextTimerAt(): number | undefined {
    return this.nextDue()?.due;
  }

  private nextDue(): FakeTimer | undefined {
    let best: FakeTimer | undefined;
    for (const t of this.timers) {
      if (!best || t.due < best.due || (t.due === best.due && t.id < best.id)) best = t;
    }
    return best;
  }
}
