/**
 * An in-memory lock backend for tests of interleavings: one `FakeServer` (the shared truth, as a Redis or
 * an etcd would be) and a `FakeBackend` client per operator instance, honouring the contract of
 * src/backends/backend.ts (test/conformance/fake.test.ts runs the shared suite against it).
 *
 * Scriptable: `server.down` makes every call fail with BackendUnavailableError; `server.inject(op, fault)`
 * queues a one-shot fault for the next call of `op`:
 * - "unavailable": the call fails before reaching the server (nothing changed);
 * - "cut-short":   the server does the work, then the answer is lost (the call fails: a client cannot tell
 *                  this from "unavailable", which is the point);
 * - "lose-events": the change happens but watchers are not told (a dropped watch event).
 * Time is the server's `clock` (injectable), expiry is judged on it at every call.
 */
import { BackendUnavailableError, type AcquireRequest, type Hold, type HolderInfo, type LockBackend } from "../../src/backends/backend";
import { FanOut } from "../../src/backends/kit/fan-out";
import { splitLockKey } from "../../src/backends/kit/lock-key";

export type FakeOperation = "tryAcquire" | "renew" | "release" | "holders" | "waiting";
export type FakeFault = "unavailable" | "cut-short" | "lose-events";

interface Stored extends Hold {
  expiresAt: number;
}

interface Waiter extends HolderInfo {
  expiresAt: number;
}

interface Lock {
  /** The last token handed out. */
  counter: bigint;
  holds: Map<string, Stored>;
  /** The queue, in the order waiters joined (a Map keeps insertion order). */
  queue: Map<string, Waiter>;
}

export class FakeServer {
  down = false;
  private readonly locks = new Map<string, Lock>();
  private readonly faults = new Map<FakeOperation, FakeFault[]>();
  private readonly subscribers = new Set<(key: string) => void>();
  private expiryTimer?: NodeJS.Timeout;
  /** Calls served, by operation (faults included). */
  readonly calls = new Map<FakeOperation, number>();

  constructor(readonly clock: () => number = Date.now) {}

  /** The next call of `op` meets `fault` (queued, one per call). */
  inject(op: FakeOperation, fault: FakeFault): void {
    this.faults.set(op, [...(this.faults.get(op) ?? []), fault]);
  }

  client(name = "fake"): FakeBackend {
    return new FakeBackend(name, this);
  }

  /** Runs `op` as the server would, with its scripted fault; `change` says whether watchers hear of it. */
  serve<T>(backend: string, op: FakeOperation, key: string, work: (lock: Lock, now: number) => { result: T; changed: boolean }): T {
    this.calls.set(op, (this.calls.get(op) ?? 0) + 1);
    const fault = this.faults.get(op)?.shift();
    if (this.down || fault === "unavailable") throw new BackendUnavailableError(backend, this.down ? "server down" : "scripted: unavailable");
    splitLockKey(key);
    const lock = this.locks.get(key) ?? { counter: 0n, holds: new Map(), queue: new Map() };
    this.locks.set(key, lock);
    const now = this.clock();
    const expired = this.purge(lock, now);
    const { result, changed } = work(lock, now);
    if ((changed || expired) && fault !== "lose-events") this.publish(key);
    this.armExpiry();
    if (fault === "cut-short") throw new BackendUnavailableError(backend, "scripted: answer lost");
    return result;
  }

  subscribe(listener: (key: string) => void): () => void {
    this.subscribers.add(listener);
    return () => this.subscribers.delete(listener);
  }

  stop(): void {
    clearTimeout(this.expiryTimer);
  }

  private purge(lock: Lock, now: number): boolean {
    let gone = false;
    for (const [id, hold] of lock.holds) if (hold.expiresAt <= now) gone = lock.holds.delete(id) || gone;
    for (const [id, waiter] of lock.queue) if (waiter.expiresAt <= now) lock.queue.delete(id);
    return gone;
  }

  private publish(key: string): void {
    for (const listener of [...this.subscribers]) listener(key);
  }

  /** A timer at the earliest expiry tells watchers of it (an expiry writes nothing else). */
  private armExpiry(): void {
    clearTimeout(this.expiryTimer);
    const next = Math.min(...[...this.locks.values()].flatMap((l) => [...l.holds.values()].map((h) => h.expiresAt)));
    if (!Number.isFinite(next)) return;
    this.expiryTimer = setTimeout(() => {
      const now = this.clock();
      for (const [key, lock] of this.locks) if (this.purge(lock, now)) this.publish(key);
      this.armExpiry();
    }, Math.max(0, next - this.clock()) + 1).unref();
  }
}

export class FakeBackend implements LockBackend {
  readonly expiresOnServer = true;
  private closed = false;
  private readonly watches = new FanOut<void>(() => undefined);
  private readonly unsubscribe: () => void;

  constructor(readonly name: string, private readonly server: FakeServer) {
    this.unsubscribe = server.subscribe((key) => this.watches.notify(key));
  }

  async tryAcquire(req: AcquireRequest): Promise<Hold | undefined> {
    return this.call("tryAcquire", req.key, (lock, now) => {
      const mine = lock.holds.get(req.holderId);
      if (mine) return { result: toHold(mine), changed: false };
      const info: HolderInfo = { holderId: req.holderId, claim: req.claim, holderIdentity: req.holderIdentity, cluster: req.cluster };
      const place = [...lock.queue.keys()].indexOf(req.holderId);
      if (lock.holds.size + (place < 0 ? lock.queue.size : place) >= req.maxHolders) {
        if (req.wait) lock.queue.set(req.holderId, { ...info, expiresAt: now + req.leaseDurationSeconds * 1000 });
        return { result: undefined, changed: false };
      }
      lock.queue.delete(req.holderId);
      const floor = req.fencingFloor === undefined ? 0n : BigInt(req.fencingFloor);
      lock.counter = (lock.counter > floor ? lock.counter : floor) + 1n;
      const at = new Date(now).toISOString();
      const hold: Stored = { ...info, fencingToken: lock.counter.toString(), acquireTime: at, renewTime: at, expiresAt: now + req.leaseDurationSeconds * 1000 };
      lock.holds.set(req.holderId, hold);
      return { result: toHold(hold), changed: true };
    });
  }

  async renew(key: string, holderId: string, leaseDurationSeconds: number): Promise<Hold | undefined> {
    return this.call("renew", key, (lock, now) => {
      const hold = lock.holds.get(holderId);
      if (!hold) return { result: undefined, changed: false };
      Object.assign(hold, { renewTime: new Date(now).toISOString(), expiresAt: now + leaseDurationSeconds * 1000 });
      return { result: toHold(hold), changed: false };
    });
  }

  async release(key: string, holderId: string): Promise<boolean> {
    return this.call("release", key, (lock) => {
      lock.queue.delete(holderId);
      const removed = lock.holds.delete(holderId);
      return { result: removed, changed: removed };
    });
  }

  async holders(key: string): Promise<Hold[]> {
    return this.call("holders", key, (lock) => ({
      result: [...lock.holds.values()].sort((a, b) => (BigInt(a.fencingToken) < BigInt(b.fencingToken) ? -1 : 1)).map(toHold),
      changed: false,
    }));
  }

  async waiting(key: string): Promise<HolderInfo[]> {
    return this.call("waiting", key, (lock) => ({
      result: [...lock.queue.values()].map(({ expiresAt: _expiresAt, ...info }) => info),
      changed: false,
    }));
  }

  watch(key: string, onChange: () => void): () => void {
    if (this.closed) return () => undefined;
    return this.watches.add(key, onChange);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watches.clear();
    this.unsubscribe();
  }

  private async call<T>(op: FakeOperation, key: string, work: (lock: Lock, now: number) => { result: T; changed: boolean }): Promise<T> {
    if (this.closed) throw new BackendUnavailableError(this.name, "backend closed");
    await Promise.resolve(); // answers come asynchronously, as over a connection
    return this.server.serve(this.name, op, key, work);
  }
}

function toHold({ expiresAt: _expiresAt, ...hold }: Stored): Hold {
  return { ...hold };
}
