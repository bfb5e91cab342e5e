import { test } from "node:test";
import assert from "node:assert/strict";
import { FakeClock } from "../../src/runtime/clock";
import { ExponentialRateLimiter, WorkQueue, runWorkers } from "../../src/runtime/workqueue";

/** Lets every pending promise continuation run (no timers involved). */
const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Whether `p` has settled after letting continuations run. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(() => (done = true), () => (done = true));
  await flush();
  return done;
}

test("duplicate adds collapse and keys come out in FIFO order", async () => {
  const q = new WorkQueue({ clock: new FakeClock() });
  q.add("a");
  q.add("b");
  q.add("a");
  q.add("c");
  q.add("b");
  assert.equal(q.len(), 3);
  assert.deepEqual([await q.get(), await q.get(), await q.get()], ["a", "b", "c"]);
  assert.equal(q.len(), 0);
});

test("low-priority keys wait behind every normal key; a normal add promotes a waiting low key", async () => {
  const q = new WorkQueue({ clock: new FakeClock() });
  q.add("l1", "low");
  q.add("l2", "low");
  q.add("l3", "low");
  q.add("n1");
  q.add("l2"); // promoted: to the back of the normal lane
  q.add("n1", "low"); // already queued normally: stays normal
  assert.equal(q.len(), 4);
  assert.deepEqual([await q.get(), await q.get()], ["n1", "l2"]);
  q.add("n2"); // arrives while low keys wait: still goes first
  assert.deepEqual([await q.get(), await q.get(), await q.get()], ["n2", "l1", "l3"]);
  assert.equal(q.len(), 0);
});

test("promotions out of a long low lane keep both lanes in order; a key promoted, run and added low again goes last", async () => {
  // The operator's start-up queues every lock low; renewals then promote them one by one (100,000 at scale).
  const q = new WorkQueue({ clock: new FakeClock() });
  const keys = Array.from({ length: 5000 }, (_, i) => `k${i}`);
  for (const key of keys) q.add(key, "low");
  const promoted = keys.filter((_, i) => i % 3 === 0).reverse();
  for (const key of promoted) q.add(key);
  assert.equal(q.len(), keys.length);
  const first = await q.get();
  assert.equal(first, promoted[0]);
  q.done(first!);
  q.add(first!, "low"); // queued again, low: behind every low key still waiting
  const order: string[] = [first!];
  while (q.len() > 0) {
    const key = (await q.get())!;
    order.push(key);
    q.done(key);
  }
  const lowLeft = keys.filter((_, i) => i % 3 !== 0);
  assert.deepEqual(order, [...promoted, ...lowLeft, first], "normal lane in promotion order, then the low lane in its order");
});

test("a key dirty while processing keeps the highest priority asked for when it is queued again", async () => {
  const q = new WorkQueue({ clock: new FakeClock() });
  q.add("a");
  assert.equal(await q.get(), "a");
  q.add("a", "low"); // dirty, low
  q.add("b", "low");
  q.add("c");
  q.done("a"); // back in the low lane, behind b
  assert.deepEqual([await q.get(), await q.get()], ["c", "b"]);
  q.add("b"); // processing: dirty, normal
  q.add("b", "low"); // does not demote it
  q.done("b");
  assert.deepEqual([await q.get(), await q.get()], ["b", "a"]);
  q.done("a");
  q.done("b");
  q.done("c");
  assert.equal(q.len(), 0);
});

test("a blocked get receives the next added key", async () => {
  const q = new WorkQueue({ clock: new FakeClock() });
  const first = q.get();
  const second = q.get();
  assert.equal(await settled(first), false);
  q.add("x");
  q.add("y");
  assert.equal(await first, "x", "getters are served in the order they called");
  assert.equal(await second, "y");
});

test("a key re-added while processing is not handed out again until done, then runs once more", async () => {
  const q = new WorkQueue({ clock: new FakeClock() });
  q.add("a");
  assert.equal(await q.get(), "a");
  q.add("a");
  q.add("a");
  assert.equal(q.len(), 0, "a processing key is not queued");
  const next = q.get();
  assert.equal(await settled(next), false, "no second worker gets a processing key");
  q.done("a");
  assert.equal(await next, "a", "the dirty key is queued again on done");
  q.done("a");
  assert.equal(q.len(), 0, "the two re-adds collapsed into one extra run");
  assert.equal(await settled(q.get()), false);
});

test("done of a key that was not re-added does not queue it", async () => {
  const q = new WorkQueue({ clock: new FakeClock() });
  q.add("a");
  await q.get();
  q.done("a");
  q.done("a"); // a stray second done is harmless
  assert.equal(q.len(), 0);
});

test("several workers never process the same key concurrently, and re-adds during processing run again", async () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ clock });
  const inFlight = new Set<string>();
  const runs = new Map<string, number>();
  let maxParallel = 0;
  const violations: string[] = [];
  const keys = ["a", "b", "c", "d"];
  let seed = 7;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  let budget = 60; // number of extra adds issued from inside reconciles

  const workers = runWorkers(
    q,
    4,
    async (key) => {
      if (inFlight.has(key)) violations.push(key);
      inFlight.add(key);
      maxParallel = Math.max(maxParallel, inFlight.size);
      runs.set(key, (runs.get(key) ?? 0) + 1);
      // Re-add our own key and others while in flight.
      for (let i = 0; i < 2 && budget > 0; i++, budget--) q.add(keys[rand(keys.length)]);
      for (let i = rand(3); i >= 0; i--) await flush();
      inFlight.delete(key);
    },
    (key, err) => assert.fail(`unexpected error for ${key}: ${String(err)}`),
  );
  for (const k of keys) q.add(k);
  for (let i = 0; i < 500 && (budget > 0 || q.len() > 0 || inFlight.size > 0); i++) await flush();
  q.shutDown();
  await workers;

  assert.deepEqual(violations, [], "a key was processed by two workers at once");
  assert.ok(maxParallel > 1, `workers ran in parallel (max ${maxParallel})`);
  const total = [...runs.values()].reduce((a, b) => a + b, 0);
  assert.ok(total > keys.length, `keys re-added while in flight ran again (${total} runs)`);
  assert.equal(budget, 0);
});

test("a key re-added by its own reconcile runs exactly once more, after the first run finished", async () => {
  const q = new WorkQueue({ clock: new FakeClock() });
  const log: string[] = [];
  let first = true;
  const workers = runWorkers(q, 3, async (key) => {
    log.push(`start ${key}`);
    if (first) {
      first = false;
      q.add(key);
      q.add(key);
      await flush();
      await flush();
    }
    log.push(`end ${key}`);
  }, () => assert.fail("no errors expected"));
  q.add("k");
  for (let i = 0; i < 10; i++) await flush();
  q.shutDown();
  await workers;
  assert.deepEqual(log, ["start k", "end k", "start k", "end k"]);
});

test("addAfter adds the key when the delay passes on the clock", async () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ clock });
  q.addAfter("a", 100);
  assert.equal(q.len(), 0);
  clock.advance(99);
  assert.equal(q.len(), 0);
  clock.advance(1);
  assert.equal(q.len(), 1);
  assert.equal(await q.get(), "a");
  q.addAfter("now", 0);
  assert.equal(q.len(), 1, "a zero delay adds at once");
});

test("several delayed adds of one key keep the earliest and add it once", async () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ clock });
  q.addAfter("a", 100);
  q.addAfter("a", 50);
  q.addAfter("a", 80);
  assert.equal(clock.pending(), 1, "one timer per key");
  clock.advance(50);
  assert.equal(q.len(), 1);
  assert.equal(await q.get(), "a");
  q.done("a");
  clock.advance(1000);
  assert.equal(q.len(), 0, "the later deadlines did not add it again");
});

test("a delayed add of a queued key collapses with it", () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ clock });
  q.add("a");
  q.addAfter("a", 10);
  clock.advance(10);
  assert.equal(q.len(), 1);
});

test("addRateLimited backs off 5, 10, 20, 40 ms per key; forget resets; other keys are independent", async () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ clock });
  const delays: number[] = [];
  for (let i = 0; i < 4; i++) {
    const before = clock.now();
    q.addRateLimited("a");
    const due = clock.nextTimerAt();
    assert.ok(due !== undefined);
    delays.push(due - before);
    clock.advance(due - before - 1);
    assert.equal(q.len(), 0, "not added before its backoff");
    clock.advance(1);
    assert.equal(q.len(), 1);
    assert.equal(await q.get(), "a");
    q.done("a");
  }
  assert.deepEqual(delays, [5, 10, 20, 40]);
  assert.equal(q.numRequeues("a"), 4);
  assert.equal(q.numRequeues("b"), 0);

  q.addRateLimited("b");
  assert.equal(clock.nextTimerAt(), clock.now() + 5, "a different key starts at the base delay");
  clock.advance(5);

  q.forget("a");
  assert.equal(q.numRequeues("a"), 0);
  q.addRateLimited("a");
  assert.equal(clock.nextTimerAt(), clock.now() + 5, "forget resets the backoff");
});

test("the exponential rate limiter caps at the maximum (default 60 s)", () => {
  const limited = new ExponentialRateLimiter<string>({ baseDelayMs: 5, maxDelayMs: 30 });
  assert.deepEqual([1, 2, 3, 4, 5].map(() => limited.when("k")), [5, 10, 20, 30, 30]);
  const dflt = new ExponentialRateLimiter<string>();
  let last = 0;
  for (let i = 0; i < 2000; i++) last = dflt.when("k");
  assert.equal(last, 60_000);
  assert.equal(dflt.numRequeues("k"), 2000);
  assert.throws(() => new ExponentialRateLimiter({ baseDelayMs: 10, maxDelayMs: 5 }));
});

test("shutDown releases waiting getters, drops queued keys and delayed timers, and ignores later adds", async () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ clock });
  const g1 = q.get();
  const g2 = q.get();
  q.addAfter("later", 100);
  q.addRateLimited("backoff");
  assert.equal(clock.pending(), 2);
  q.shutDown();
  assert.equal(await g1, undefined);
  assert.equal(await g2, undefined);
  assert.equal(clock.pending(), 0, "delayed timers dropped");
  q.add("x");
  q.addAfter("y", 1);
  assert.equal(q.len(), 0);
  assert.equal(clock.pending(), 0);
  assert.equal(await q.get(), undefined);
  assert.equal(q.isShuttingDown(), true);
});

test("after shutDown, get resolves undefined even with keys queued (documented difference from client-go)", async () => {
  const q = new WorkQueue({ clock: new FakeClock() });
  q.add("a");
  q.add("b");
  q.shutDown();
  assert.equal(q.len(), 0);
  assert.equal(await q.get(), undefined);
});

test("shutDownWithDrain waits for processing keys to be done", async () => {
  const q = new WorkQueue({ clock: new FakeClock() });
  q.add("a");
  q.add("b");
  await q.get();
  await q.get();
  const drained = q.shutDownWithDrain();
  q.done("a");
  assert.equal(await settled(drained), false, "b is still processing");
  q.add("a"); // ignored: the queue is shutting down
  q.done("b");
  assert.equal(await settled(drained), true);
  assert.equal(q.len(), 0);
  assert.equal(await q.shutDownWithDrain().then(() => "again"), "again", "draining an idle queue resolves at once");
});

test("runWorkers retries a failing key with backoff, reports errors, and forgets the key after success", async () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ clock });
  const attempts: number[] = [];
  const errors: Array<[string, string]> = [];
  let requeuesSeen = -1;
  const workers = runWorkers(
    q,
    2,
    async (key) => {
      attempts.push(clock.now());
      if (attempts.length <= 3) throw new Error(`boom ${attempts.length}`);
      requeuesSeen = q.numRequeues(key);
    },
    (key, err) => errors.push([key, (err as Error).message]),
  );
  q.add("k");
  await flush();
  assert.deepEqual(attempts, [0]);
  assert.deepEqual(errors, [["k", "boom 1"]]);

  clock.advance(4);
  await flush();
  assert.equal(attempts.length, 1, "not retried before 5 ms");
  clock.advance(1);
  await flush();
  clock.advance(10);
  await flush();
  clock.advance(20);
  await flush();
  assert.deepEqual(attempts, [0, 5, 15, 35], "retried after 5, 10, 20 ms");
  assert.deepEqual(errors.map((e) => e[1]), ["boom 1", "boom 2", "boom 3"]);
  assert.equal(requeuesSeen, 3, "the successful attempt saw three requeues");
  assert.equal(q.numRequeues("k"), 0, "success forgets the backoff");
  assert.equal(clock.pending(), 0, "nothing requeued after success");

  q.shutDown();
  await workers;
});

test("runWorkers requeues after requeueAfterMs, without backoff", async () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ clock });
  const runs: number[] = [];
  const workers = runWorkers(q, 1, async () => {
    runs.push(clock.now());
    return runs.length < 3 ? { requeueAfterMs: 1000 } : undefined;
  }, () => assert.fail("no errors expected"));
  q.add("k");
  await flush();
  clock.advance(999);
  await flush();
  assert.deepEqual(runs, [0]);
  clock.advance(1);
  await flush();
  clock.advance(1000);
  await flush();
  clock.advance(5000);
  await flush();
  assert.deepEqual(runs, [0, 1000, 2000]);
  assert.equal(q.numRequeues("k"), 0);
  q.shutDown();
  await workers;
});

test("runWorkers requeue: true uses the rate limiter", async () => {
  const clock = new FakeClock();
  const q = new WorkQueue({ clock });
  const runs: number[] = [];
  const workers = runWorkers(q, 1, async () => {
    runs.push(clock.now());
    return runs.length < 2 ? { requeue: true } : {};
  }, () => {});
  q.add("k");
  await flush();
  assert.equal(clock.nextTimerAt(), 5);
  clock.advance(5);
  await flush();
  assert.deepEqual(runs, [0, 5]);
  q.shutDown();
  await workers;
});

test("runWorkers resolves only after shutdown and once in-flight reconciles finish; a throwing onError is contained", async () => {
  const q = new WorkQueue({ clock: new FakeClock() });
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let calls = 0;
  const workers = runWorkers(q, 2, async (key) => {
    calls++;
    if (key === "slow") await gate;
    if (key === "bad") throw new Error("bad");
  }, () => {
    throw new Error("onError itself fails");
  });
  q.add("bad");
  q.add("slow");
  await flush();
  assert.equal(await settled(workers), false, "workers keep running until shutdown");
  q.shutDown();
  assert.equal(await settled(workers), false, "a reconcile is still in flight");
  release();
  assert.equal(await settled(workers), true);
  assert.equal(calls, 2);
  await assert.rejects(runWorkers(q, 0, async () => {}, () => {}));
});
