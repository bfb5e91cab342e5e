import { test } from "node:test";
import assert from "node:assert/strict";
import { FakeClock, realClock, sleep } from "../../src/runtime/clock";

test("FakeClock fires due timers in due-time order, ties in creation order, with now() at the due time", () => {
  const clock = new FakeClock(1000);
  const fired: Array<[string, number]> = [];
  clock.setTimeout(() => fired.push(["c", clock.now()]), 30);
  clock.setTimeout(() => fired.push(["a", clock.now()]), 10);
  clock.setTimeout(() => fired.push(["b1", clock.now()]), 20);
  clock.setTimeout(() => fired.push(["b2", clock.now()]), 20);
  clock.setTimeout(() => fired.push(["late", clock.now()]), 31);

  assert.equal(clock.advance(9), 0);
  assert.deepEqual(fired, []);
  assert.equal(clock.advance(21), 4);
  assert.deepEqual(fired, [["a", 1010], ["b1", 1020], ["b2", 1020], ["c", 1030]]);
  assert.equal(clock.now(), 1030);
  assert.equal(clock.pending(), 1);
  assert.equal(clock.nextTimerAt(), 1031);
});

test("FakeClock fires timers scheduled by callbacks within the same advance, and not beyond it", () => {
  const clock = new FakeClock();
  const fired: number[] = [];
  clock.setTimeout(() => {
    fired.push(clock.now());
    clock.setTimeout(() => fired.push(clock.now()), 5); // due at 15: inside the window
    clock.setTimeout(() => fired.push(clock.now()), 50); // due at 60: outside
  }, 10);
  clock.advance(20);
  assert.deepEqual(fired, [10, 15]);
  assert.equal(clock.now(), 20);
  clock.advance(40);
  assert.deepEqual(fired, [10, 15, 60]);
});

test("FakeClock clearTimeout cancels only that timer; bad input is rejected", () => {
  const clock = new FakeClock();
  const fired: string[] = [];
  const a = clock.setTimeout(() => fired.push("a"), 10);
  clock.setTimeout(() => fired.push("b"), 10);
  clock.clearTimeout(a);
  clock.clearTimeout("not a handle");
  clock.advance(10);
  assert.deepEqual(fired, ["b"]);
  assert.throws(() => clock.advance(-1));
  assert.throws(() => clock.set(5));
});

test("sleep resolves after the delay on the given clock, or early on abort", async () => {
  const clock = new FakeClock();
  let done = false;
  const p = sleep(clock, 100).then(() => (done = true));
  clock.advance(99);
  await new Promise(setImmediate);
  assert.equal(done, false);
  clock.advance(1);
  await p;
  assert.equal(done, true);

  const ac = new AbortController();
  const q = sleep(clock, 1_000_000, ac.signal);
  ac.abort();
  await q;
  assert.equal(clock.pending(), 0, "the aborted sleep cleared its timer");
});

test("realClock timers run and can be cleared", async () => {
  const start = realClock.now();
  assert.ok(Math.abs(start - Date.now()) < 1000);
  let cleared = false;
  const h = realClock.setTimeout(() => (cleared = true), 0);
  realClock.clearTimeout(h);
  await new Promise<void>((resolve) => realClock.setTimeout(resolve, 0));
  assert.equal(cleared, false);
});
