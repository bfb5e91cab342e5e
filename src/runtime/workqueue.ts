/**
 * A de-duplicating, delaying, rate-limited work queue with client-go's semantics
 * (k8s.io/client-go/util/workqueue), plus `runWorkers`, the controller-runtime worker loop.
 *
 * Contract (same as client-go):
 * - A key is handed to at most one worker at a time: between `get()` returning it and `done(key)`,
 *   the key is "processing".
 * - `add` of a key already waiting in the queue is a no-op (duplicates collapse), and keys come out
 *   in FIFO order of their first pending `add`.
 * - `add` of a key that is processing marks it dirty: it is not handed out again until `done(key)`,
 *   which then puts it at the back of the queue. However many times it was added meanwhile, it
 *   runs once more.
 * - `addAfter(key, ms)` adds the key once `ms` has passed on the queue's clock; several pending
 *   delayed adds of one key keep the earliest deadline.
 * - `addRateLimited(key)` = `addAfter(key, rateLimiter.when(key))`: per-key exponential backoff,
 *   reset with `forget(key)` after a success.
 *
 * Priority (as controller-runtime's priority queue, which gives the initial list low priority): `add(key,
 * "low")` queues the key behind every normally added key. A normal `add` of a key waiting in the low lane
 * moves it to the back of the normal lane; a low add of a key that is queued normally changes nothing.
 * The operator queues everything it finds at start-up (or on becoming leader) low, so renewals and changes
 * that happen meanwhile are not stuck behind a backlog of thousands of locks.
 *
 * Deliberate difference from client-go: after `shutDown()`, `get()` resolves `undefined` at once even
 * if keys are still queued (client-go keeps handing out queued keys until empty). An operator shuts its
 * queues down when it stops or loses leadership; it must then stop reconciling promptly, and whoever
 * runs next lists everything anyway. Keys already processing finish normally (`shutDownWithDrain`
 * waits for them). Adds after shutdown are ignored.
 */
import { Clock, TimerHandle, realClock } from "./clock";

/** Decides how long a key waits before it is retried (client-go's `RateLimiter`). */
export interface RateLimiter<K> {
  /** The delay for this retry of `key`; counts the retry. */
  when(key: K): number;
  /** Stops tracking `key` (its next `when` starts from the base delay again). */
  forget(key: K): void;
  /** How many times `when` was called for `key` since it was last forgotten. */
  numRequeues(key: K): number;
}

export interface ExponentialBackoffOptions {
  /** Delay of the first retry, in ms. Default 5. */
  baseDelayMs?: number;
  /** Upper bound of the delay, in ms. Default 60 000. */
  maxDelayMs?: number;
}

/**
 * client-go's `ItemExponentialFailureRateLimiter`: the n-th retry of a key (n from 0) waits
 * `min(base * 2^n, max)` — 5, 10, 20, 40 ms ... up to 60 s with the defaults. Deterministic, no jitter.
 */
export class ExponentialRateLimiter<K> implements RateLimiter<K> {
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  private readonly failures = new Map<K, number>();

  constructor(options: ExponentialBackoffOptions = {}) {
    this.baseDelayMs = options.baseDelayMs ?? 5;
    this.maxDelayMs = options.maxDelayMs ?? 60_000;
    if (!(this.baseDelayMs >= 0) || !(this.maxDelayMs >= this.baseDelayMs)) {
      throw new Error(`invalid backoff: baseDelayMs=${this.baseDelayMs} maxDelayMs=${this.maxDelayMs}`);
    }
  }

  when(key: K): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    // 2^n overflows to Infinity for large n; min() keeps it at the cap.
    return Math.min(this.baseDelayMs * 2 ** n, this.maxDelayMs);
  }

  forget(key: K): void {
    this.failures.delete(key);
  }

  numRequeues(key: K): number {
    return this.failures.get(key) ?? 0;
  }
}

export interface WorkQueueOptions<K> {
  /** Clock for delayed adds. Default: the real clock. */
  clock?: Clock;
  /** Rate limiter for `addRateLimited`. Default: `new ExponentialRateLimiter(backoff)`. */
  rateLimiter?: RateLimiter<K>;
  /** Backoff of the default rate limiter (ignored when `rateLimiter` is given). */
  backoff?: ExponentialBackoffOptions;
}

interface Delayed {
  readyAt: number;
  timer: TimerHandle;
}

export class WorkQueue<K = string> {
  private readonly clock: Clock;
  private readonly rateLimiter: RateLimiter<K>;
  /** Keys waiting to be handed out, FIFO. Invariant: every key here is also in `dirty`. */
  private queue = new Lane<K>();
  /** The low lane: handed out only when `queue` is empty. Invariant: every key here is in `dirty` and `low`. */
  private lowQueue = new Lane<K>();
  /** Keys whose pending run was asked for only with low priority (queued in `lowQueue`, or dirty while processing). */
  private readonly low = new Set<K>();
  /** Keys that need processing (queued, or re-added while processing). */
  private readonly dirty = new Set<K>();
  /** Keys handed out by `get()` and not yet `done()`. */
  private readonly processing = new Set<K>();
  /** Pending `addAfter`s, one per key (the earliest). */
  private readonly delayed = new Map<K, Delayed>();
  /** Blocked `get()` calls, FIFO. */
  private getters: Array<(key: K | undefined) => void> = [];
  private shuttingDown = false;
  private drainWaiters: Array<() => void> = [];

  constructor(options: WorkQueueOptions<K> = {}) {
    this.clock = options.clock ?? realClock;
    this.rateLimiter = options.rateLimiter ?? new ExponentialRateLimiter<K>(options.backoff);
  }

  /**
   * Queues `key` unless it is already queued; if it is processing, it runs again after `done`. A "low"
   * key waits behind every normal one (see Priority above).
   */
  add(key: K, priority: "normal" | "low" = "normal"): void {
    if (this.shuttingDown) return;
    if (this.dirty.has(key)) {
      if (priority === "low" || !this.low.delete(key) || this.processing.has(key)) return;
      this.lowQueue.delete(key); // promoted: to the back of the normal lane
      this.queue.push(key);
      this.dispatch();
      return;
    }
    this.dirty.add(key);
    if (priority === "low") this.low.add(key);
    if (this.processing.has(key)) return;
    (priority === "low" ? this.lowQueue : this.queue).push(key);
    this.dispatch();
  }

  /**
   * Adds `key` after `ms` milliseconds (at once when `ms <= 0`). If the key already has a pending
   * delayed add, the earlier of the two deadlines wins.
   */
  addAfter(key: K, ms: number): void {
    if (this.shuttingDown) return;
    if (!(ms > 0)) {
      this.add(key);
      return;
    }
    const readyAt = this.clock.now() + ms;
    const existing = this.delayed.get(key);
    if (existing) {
      if (existing.readyAt <= readyAt) return;
      this.clock.clearTimeout(existing.timer);
    }
    const timer = this.clock.setTimeout(() => {
      // Only the timer still registered for the key may fire it (a replaced one was cleared, but be safe).
      if (this.delayed.get(key)?.timer !== timer) return;
      this.delayed.delete(key);
      this.add(key);
    }, ms);
    this.delayed.set(key, { readyAt, timer });
  }

  /** Adds `key` after the rate limiter's delay for it (exponential per-key backoff by default). */
  addRateLimited(key: K): void {
    if (this.shuttingDown) return;
    this.addAfter(key, this.rateLimiter.when(key));
  }

  /** Resets the key's backoff. Call after a successful reconcile. Does not cancel a pending delayed add. */
  forget(key: K): void {
    this.rateLimiter.forget(key);
  }

  /** How many rate-limited requeues `key` had since it was last forgotten. */
  numRequeues(key: K): number {
    return this.rateLimiter.numRequeues(key);
  }

  /**
   * Waits for the next key and marks it processing; the caller must call `done(key)` when finished.
   * Resolves `undefined` once the queue is shut down (including getters already waiting).
   */
  get(): Promise<K | undefined> {
    if (this.shuttingDown) return Promise.resolve(undefined);
    const key = this.take();
    if (key !== undefined) return Promise.resolve(key.value);
    return new Promise((resolve) => this.getters.push(resolve));
  }

  /** Ends processing of `key`. If it was added meanwhile, it goes to the back of the queue. */
  done(key: K): void {
    if (!this.processing.delete(key)) return;
    if (this.shuttingDown) {
      this.dirty.delete(key);
      if (this.processing.size === 0) this.notifyDrained();
      return;
    }
    if (this.dirty.has(key)) {
      (this.low.has(key) ? this.lowQueue : this.queue).push(key);
      this.dispatch();
    }
  }

  /** Number of keys waiting to be handed out, both lanes (not counting processing or delayed keys). */
  len(): number {
    return this.queue.size + this.lowQueue.size;
  }

  /** Whether `shutDown` was called. */
  isShuttingDown(): boolean {
    return this.shuttingDown;
  }

  /**
   * Stops the queue: waiting and future `get()`s resolve `undefined`, queued keys and pending delayed
   * adds are dropped, later adds are ignored. Keys already processing may still call `done`.
   */
  shutDown(): void {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    for (const d of this.delayed.values()) this.clock.clearTimeout(d.timer);
    this.delayed.clear();
    for (const key of [...this.queue.keys(), ...this.lowQueue.keys()]) this.dirty.delete(key);
    this.queue = new Lane<K>();
    this.lowQueue = new Lane<K>();
    this.low.clear();
    const getters = this.getters;
    this.getters = [];
    for (const resolve of getters) resolve(undefined);
    if (this.processing.size === 0) this.notifyDrained();
  }

  /** `shutDown()`, then resolves once every processing key has been `done`. */
  shutDownWithDrain(): Promise<void> {
    this.shutDown();
    if (this.processing.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** Pops the front key into processing; the wrapper tells "no key" apart from a falsy key. */
  private take(): { value: K } | undefined {
    const lane = this.queue.size > 0 ? this.queue : this.lowQueue;
    if (lane.size === 0) return undefined;
    const key = lane.shift() as K;
    this.dirty.delete(key);
    this.low.delete(key);
    this.processing.add(key);
    return { value: key };
  }

  /** Hands queued keys to blocked getters, oldest getter first. */
  private dispatch(): void {
    while (this.getters.length > 0 && this.len() > 0) {
      const resolve = this.getters.shift() as (key: K | undefined) => void;
      resolve((this.take() as { value: K }).value);
    }
  }

  private notifyDrained(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const resolve of waiters) resolve();
  }
}

/** What a reconcile may ask for on success (controller-runtime's `Result`). */
export interface ReconcileResult {
  /** Process the key again after this many ms (with `forget`: no backoff). */
  requeueAfterMs?: number;
  /** Process the key again after its rate-limited backoff (ignored when `requeueAfterMs` is set). */
  requeue?: boolean;
}

export type Reconcile<K> = (key: K) => Promise<ReconcileResult | void>;

/**
 * Runs `n` workers over `queue`, each looping: `get` → `reconcile(key)` →
 * - on success: `forget(key)`; then `addAfter(key, requeueAfterMs)` if asked, else
 *   `addRateLimited(key)` if `requeue` was asked;
 * - on a throw/rejection: `addRateLimited(key)` and `onError(key, err)` (an `onError` that throws is ignored);
 * - always: `done(key)`.
 * The same key is never reconciled by two workers at once (the queue guarantees it). Resolves once the
 * queue is shut down and every worker has finished its current reconcile; it never rejects.
 */
export async function runWorkers<K>(
  queue: WorkQueue<K>,
  n: number,
  reconcile: Reconcile<K>,
  onError: (key: K, err: unknown) => void,
): Promise<void> {
  if (!Number.isInteger(n) || n < 1) throw new Error(`runWorkers: worker count must be a positive integer, got ${n}`);
  const worker = async (): Promise<void> => {
    for (;;) {
      const key = await queue.get();
      if (key === undefined) return;
      try {
        const result = await reconcile(key);
        queue.forget(key);
        if (result && result.requeueAfterMs !== undefined) queue.addAfter(key, result.requeueAfterMs);
        else if (result && result.requeue) queue.addRateLimited(key);
      } catch (err) {
        queue.addRateLimited(key);
        try {
          onError(key, err);
        } catch {
          // The error handler is for logging and metrics; it must not kill the worker.
        }
      } finally {
        queue.done(key);
      }
    }
  };
  await Promise.all(Array.from({ length: n }, worker));
}

/**
 * A FIFO of distinct keys in which push, shift and delete take constant time (amortized): a deleted key's slot
 * stays in the array, marked stale by its sequence number, and is skipped when it reaches the front. A queue of
 * 100,000 keys must not cost 100,000 steps to promote one of them.
 */
class Lane<K> {
  private slots: { key: K; seq: number }[] = [];
  private head = 0;
  private nextSeq = 0;
  /** The live keys, each with the sequence number of its slot. */
  private readonly live = new Map<K, number>();

  get size(): number {
    return this.live.size;
  }

  keys(): IterableIterator<K> {
    return this.live.keys();
  }

  /** Appends `key`; callers push only keys not in the lane. */
  push(key: K): void {
    const seq = this.nextSeq++;
    this.live.set(key, seq);
    this.slots.push({ key, seq });
  }

  delete(key: K): boolean {
    return this.live.delete(key);
  }

  shift(): K | undefined {
    while (this.head < this.slots.length) {
      const { key, seq } = this.slots[this.head++];
      if (this.live.get(key) !== seq) continue; // deleted, or pushed again later
      this.live.delete(key);
      this.compact();
      return key;
    }
    this.slots = [];
    this.head = 0;
    return undefined;
  }

  /** Drops the slots before the front once they are most of the array. */
  private compact(): void {
    if (this.head < 1024 || this.head * 2 < this.slots.length) return;
    this.slots = this.slots.slice(this.head);
    this.head = 0;
  }
}
