/** Leader election logic, on a FakeClock and an in-memory lease store: no API server. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { FakeClock } from "../../src/runtime/clock";
import {
  LeaderElectionConfigError, LeaderElector, LeaseConflictError,
  type LeaseRecord, type LeaseRef, type LeaseStore, type StoppedReason,
} from "../../src/runtime/leaderelection";

const LEASE: LeaseRef = { namespace: "kubelock-system", name: "kubelock-operator" };
const TIMING = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 };

const flush = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
};

/** Moves the clock forward timer by timer, letting promise continuations run after each. */
async function advance(clock: FakeClock, ms: number): Promise<void> {
  const target = clock.now() + ms;
  await flush();
  for (let next = clock.nextTimerAt(); next !== undefined && next <= target; next = clock.nextTimerAt()) {
    clock.set(next);
    await flush();
  }
  clock.set(target);
  await flush();
}

/** One Lease in memory, with resourceVersion checks like the API server's. */
class MemoryLeaseStore {
  record?: LeaseRecord;
  writes: LeaseRecord[] = [];
  private version = 0;

  /** A candidate's view of the store; `broken()` true makes its requests fail, "hang" makes them never answer. */
  view(broken: () => boolean | "hang" = () => false): LeaseStore {
    const call = async <T>(fn: () => T): Promise<T> => {
      const state = broken();
      if (state === "hang") return new Promise<T>(() => undefined);
      if (state) throw new Error("connection refused");
      return fn();
    };
    return {
      get: (_ref: LeaseRef) => call(() => (this.record ? { ...this.record } : undefined)),
      create: (_ref: LeaseRef, record: LeaseRecord) => call(() => {
        if (this.record) throw new LeaseConflictError("exists");
        return this.write(record);
      }),
      update: (_ref: LeaseRef, record: LeaseRecord) => call(() => {
        if (this.record?.resourceVersion !== record.resourceVersion) throw new LeaseConflictError("stale resourceVersion");
        return this.write(record);
      }),
    };
  }

  private write(record: LeaseRecord): LeaseRecord {
    this.record = { ...record, resourceVersion: String(++this.version) };
    this.writes.push(this.record);
    return { ...this.record };
  }
}

interface Candidate {
  elector: LeaderElector;
  events: string[];
  startedAt?: number;
  stoppedAt?: number;
  stopped?: StoppedReason;
  signal?: AbortSignal;
}

function candidate(identity: string, clock: FakeClock, store: LeaseStore, timing: Partial<typeof TIMING> = TIMING): Candidate {
  const c: Candidate = { events: [] } as unknown as Candidate;
  c.elector = new LeaderElector({
    lease: LEASE, identity, clock, store, ...timing, random: () => 0.5,
    callbacks: {
      onStartedLeading: (signal) => {
        c.startedAt = clock.now();
        c.signal = signal;
        c.events.push("started");
      },
      onStoppedLeading: (reason) => {
        c.stoppedAt = clock.now();
        c.stopped = reason;
        c.events.push(`stopped:${reason}`);
      },
      onNewLeader: (id) => c.events.push(`leader:${id}`),
    },
  });
  return c;
}

test("invalid settings: one error lists every broken invariant", () => {
  const store = new MemoryLeaseStore().view();
  const callbacks = { onStartedLeading() {}, onStoppedLeading() {} };
  assert.throws(
    () => new LeaderElector({ lease: LEASE, identity: "", store, callbacks, leaseDurationMs: 5_000, renewDeadlineMs: 5_000, retryPeriodMs: 4_500 }),
    (err: unknown) => {
      assert.ok(err instanceof LeaderElectionConfigError);
      assert.equal(err.problems.length, 3, err.message);
      assert.match(err.message, /lease duration \(5000ms\) must be greater than renew deadline \(5000ms\)/);
      assert.match(err.message, /renew deadline \(5000ms\) must be greater than retry period × 1.2 \(5400ms\)/);
      assert.match(err.message, /identity must not be empty/);
      return true;
    },
  );
  assert.throws(() => new LeaderElector({ lease: LEASE, identity: "a", store, callbacks, retryPeriodMs: 0 }), /retry period must be greater than zero/);
  assert.doesNotThrow(() => new LeaderElector({ lease: LEASE, identity: "a", store, callbacks }), "the defaults (15s/10s/2s) are valid");
});

test("a lone candidate creates the Lease and leads at once", async () => {
  const clock = new FakeClock(1_000_000);
  const store = new MemoryLeaseStore();
  const a = candidate("a", clock, store.view());
  void a.elector.run();
  await advance(clock, 0);
  assert.deepEqual(a.events, ["leader:a", "started"]);
  assert.equal(a.startedAt, 1_000_000);
  assert.equal(store.record?.holderIdentity, "a");
  assert.equal(store.record?.leaseDurationSeconds, 15);
  assert.equal(store.record?.leaseTransitions, 0);
  assert.ok(a.elector.isLeader());
});

test("the leader renews every retry period, keeping acquireTime; a follower never takes over meanwhile", async () => {
  const clock = new FakeClock(1_000_000);
  const store = new MemoryLeaseStore();
  const a = candidate("a", clock, store.view());
  const b = candidate("b", clock, store.view());
  void a.elector.run();
  await advance(clock, 0);
  void b.elector.run();
  await advance(clock, 120_000);
  assert.equal(b.startedAt, undefined, "b never led");
  assert.deepEqual(b.events, ["leader:a"]);
  assert.equal(store.record?.holderIdentity, "a");
  assert.equal(store.record?.acquireTimeMs, 1_000_000);
  assert.equal(store.record?.renewTimeMs, 1_000_000 + 120_000, "renewed every 2 s");
  assert.equal(store.writes.length, 61);
});

test("a dead leader's Lease is taken over after the lease duration, measured on the follower's clock", async () => {
  const clock = new FakeClock(1_000_000);
  const store = new MemoryLeaseStore();
  // The holder wrote its record with a renewTime far in the future (a skewed clock): that must not matter.
  await store.view().create(LEASE, { holderIdentity: "dead", leaseDurationSeconds: 15, renewTimeMs: 9e12, acquireTimeMs: 9e12, leaseTransitions: 4 });
  const b = candidate("b", clock, store.view());
  void b.elector.run();
  await advance(clock, 14_999);
  assert.equal(b.startedAt, undefined);
  await advance(clock, 10_000);
  assert.ok(b.startedAt !== undefined, "b leads");
  // Polls every 2 s × (1 + 0.5 × 1.2) = 3.2 s: the first poll after 15 s is at 16 s.
  assert.equal(b.startedAt - 1_000_000, 16_000);
  assert.equal(store.record?.holderIdentity, "b");
  assert.equal(store.record?.leaseTransitions, 5, "a takeover counts a transition");
  assert.deepEqual(b.events, ["leader:dead", "leader:b", "started"]);
});

test("a leader that cannot renew stops leading within the renew deadline, before a follower takes over", async () => {
  const clock = new FakeClock(1_000_000);
  const store = new MemoryLeaseStore();
  let partitioned = false;
  const a = candidate("a", clock, store.view(() => partitioned));
  const b = candidate("b", clock, store.view());
  void a.elector.run();
  await advance(clock, 0);
  void b.elector.run();
  await advance(clock, 10_000);
  partitioned = true;
  const lastRenew = store.record!.renewTimeMs!;
  await advance(clock, 30_000);
  assert.equal(a.stopped, "lost");
  assert.ok(a.signal?.aborted, "the leading signal aborted");
  assert.ok(a.stoppedAt! - lastRenew <= TIMING.renewDeadlineMs, `stopped ${a.stoppedAt! - lastRenew}ms after the last renewal`);
  assert.ok(b.startedAt! - lastRenew >= TIMING.leaseDurationMs, `b took over ${b.startedAt! - lastRenew}ms after the last renewal`);
  assert.ok(a.stoppedAt! < b.startedAt!, "never two leaders");
  assert.equal(a.elector.isLeader(), false);
  assert.equal(store.record?.holderIdentity, "b");
});

test("a renewal that hangs does not keep the leader leading past the renew deadline", async () => {
  const clock = new FakeClock(0);
  const store = new MemoryLeaseStore();
  let hang = false;
  const a = candidate("a", clock, store.view(() => (hang ? "hang" : false)));
  void a.elector.run();
  await advance(clock, 4_000);
  const lastRenew = store.record!.renewTimeMs!;
  hang = true;
  await advance(clock, 20_000);
  assert.equal(a.stopped, "lost");
  assert.equal(a.stoppedAt! - lastRenew, TIMING.renewDeadlineMs);
});

test("a conflicting write loses the round: two candidates starting together, exactly one leads", async () => {
  const clock = new FakeClock(0);
  const store = new MemoryLeaseStore();
  const a = candidate("a", clock, store.view());
  const b = candidate("b", clock, store.view());
  void a.elector.run();
  void b.elector.run();
  await advance(clock, 60_000);
  const leaders = [a, b].filter((c) => c.elector.isLeader());
  assert.equal(leaders.length, 1);
  assert.equal(store.record?.holderIdentity, leaders[0].elector.identity);
  assert.ok([a, b].every((c) => c.elector.leader() === leaders[0].elector.identity));
});

test("release() clears the holder so a follower takes over on its next poll", async () => {
  const clock = new FakeClock(0);
  const store = new MemoryLeaseStore();
  const a = candidate("a", clock, store.view());
  const b = candidate("b", clock, store.view());
  void a.elector.run();
  await advance(clock, 0);
  void b.elector.run();
  await advance(clock, 5_000);
  const releasing = a.elector.release();
  await advance(clock, 0);
  await releasing;
  assert.equal(a.stopped, "released");
  assert.equal(store.record?.holderIdentity, "");
  assert.equal(store.record?.leaseDurationSeconds, 1);
  const releasedAt = clock.now();
  await advance(clock, 4_000);
  assert.ok(b.startedAt !== undefined && b.startedAt - releasedAt <= 2_000 * 2.2, `b led ${b.startedAt! - releasedAt}ms after the release`);
  assert.equal(store.record?.holderIdentity, "b");
});

test("release() by a follower stops campaigning and writes nothing", async () => {
  const clock = new FakeClock(0);
  const store = new MemoryLeaseStore();
  const a = candidate("a", clock, store.view());
  const b = candidate("b", clock, store.view());
  void a.elector.run();
  await advance(clock, 0);
  const run = b.elector.run();
  await advance(clock, 3_000);
  const writes = store.writes.length;
  const releasing = b.elector.release();
  await advance(clock, 0);
  await releasing;
  await run;
  assert.equal(b.stopped, undefined, "a follower never calls onStoppedLeading");
  assert.equal(store.writes.length, writes);
  assert.equal(store.record?.holderIdentity, "a");
});
