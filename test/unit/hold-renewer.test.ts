/** The hold renewer's schedule, on a fake clock with a scripted backend (no server: pure scheduling logic). */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Hold, LockBackend } from "../../src/backends/backend";
import { HoldRenewer, retryCapMs, validityMarginMs, type TrackedHold } from "../../src/controllers/hold-renewer";
import { FakeClock } from "../../src/runtime/clock";

const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A backend whose renew answers from `answer` and records when it was called. */
function scriptedBackend(clock: FakeClock, answer: () => "renew" | "gone" | Error) {
  const calls: number[] = [];
  const backend = {
    name: "scripted",
    renew: async (key: string, holderId: string): Promise<Hold | undefined> => {
      calls.push(clock.now());
      const a = answer();
      if (a instanceof Error) throw a;
      if (a === "gone") return undefined;
      const t = new Date(clock.now()).toISOString();
      return { key, holderId, claim: "c", holderIdentity: "c", cluster: "", fencingToken: "1", acquireTime: t, renewTime: t } as Hold;
    },
  } as unknown as LockBackend;
  return { backend, calls };
}

const hold = (backend: LockBackend, leaseSeconds = 3): TrackedHold => ({ lockKey: "ns/lock", backend, backendKey: "ns/key", holderId: "uid-1", leaseSeconds });

async function advance(clock: FakeClock, ms: number): Promise<void> {
  for (let t = 0; t < ms; t += 100) {
    clock.advance(100);
    await flush();
  }
}

test("renews every third of the lease from the last renewal, and stops when untracked", async () => {
  const clock = new FakeClock(1_000_000);
  const { backend, calls } = scriptedBackend(clock, () => "renew");
  const queued: string[] = [];
  const renewer = new HoldRenewer({ clock, enqueueLock: (k) => queued.push(k) });
  renewer.track(hold(backend), clock.now());
  await advance(clock, 3500);
  assert.deepEqual(calls.map((t) => t - 1_000_000), [1000, 2000, 3000]);
  renewer.untrack("uid-1");
  await advance(clock, 3000);
  assert.equal(calls.length, 3, "no renewal after untrack");
  assert.deepEqual(queued, [], "nothing to reconcile while renewals succeed");
});

test("a hold found gone is untracked and its lock queued; a failure retries soon and queues the lock", async () => {
  const clock = new FakeClock(0);
  let answer: "renew" | "gone" | Error = new Error("backend down");
  const { backend, calls } = scriptedBackend(clock, () => answer);
  const queued: string[] = [];
  const renewer = new HoldRenewer({ clock, enqueueLock: (k) => queued.push(k), random: () => 0.99 });
  renewer.track(hold(backend), 0);
  await advance(clock, 1000);
  assert.equal(calls.length, 1);
  assert.deepEqual(queued, ["ns/lock"], "a failed renewal queues the lock (its conditions say why)");
  await advance(clock, 300);
  assert.equal(calls.length, 2, "retried within 250 ms");
  answer = "gone";
  await advance(clock, 300);
  assert.equal(calls.length, 2, "the second retry waits twice as long");
  await advance(clock, 300);
  assert.deepEqual(renewer.tracked(), [], "a hold found gone is no longer renewed");
  assert.equal(queued.length, 3);
  const before = calls.length;
  await advance(clock, 3000);
  assert.equal(calls.length, before);
});

test("tracking a hold again replaces its schedule (one renewal, from the newest confirmation)", async () => {
  const clock = new FakeClock(0);
  const { backend, calls } = scriptedBackend(clock, () => "renew");
  const renewer = new HoldRenewer({ clock, enqueueLock: () => undefined });
  renewer.track(hold(backend), 0);
  clock.advance(500);
  renewer.track(hold(backend), 500); // renewed by the reconciler at 500: next due at 1500, not 1000
  renewer.track(hold(backend)); // seen again without a confirmation (a cache event): the schedule stays
  await advance(clock, 1200);
  assert.deepEqual(calls, [1500]);
  renewer.stopAll();
});

test("validity: last confirmed renewal START + lease − margin; the lock is queued at the deadline while renewals fail", async () => {
  const clock = new FakeClock(0);
  let answer: "renew" | Error = "renew";
  const { backend } = scriptedBackend(clock, () => answer);
  const queued: number[] = [];
  const renewer = new HoldRenewer({ clock, enqueueLock: () => queued.push(clock.now()), random: () => 0.5 });
  renewer.track(hold(backend, 3), 0);
  assert.equal(renewer.validUntil("uid-1"), 3000 - validityMarginMs(3));
  await advance(clock, 1000); // renewal started at 1000 succeeds
  assert.equal(renewer.validUntil("uid-1"), 4000 - 1000);
  answer = new Error("partitioned");
  queued.length = 0;
  await advance(clock, 4000);
  assert.equal(renewer.validUntil("uid-1"), 3000, "failed renewals never move the deadline");
  assert.ok(queued.includes(3001), `queued at the deadline: ${queued.join(",")}`);
});

test("past its deadline a hold is not renewed again: a backend answering late does not revive it", async () => {
  const clock = new FakeClock(0);
  let answer: "renew" | Error = new Error("unreachable");
  const { backend, calls } = scriptedBackend(clock, () => answer);
  const queued: number[] = [];
  const renewer = new HoldRenewer({ clock, enqueueLock: () => queued.push(clock.now()), random: () => 0.5 });
  renewer.track(hold(backend, 3), 0);
  await advance(clock, 3000); // every renewal fails; the deadline (2000) passes
  answer = "renew"; // the backend answers again
  const tried = calls.length;
  await advance(clock, 5000);
  assert.equal(calls.length, tried, `no renewal after the deadline: ${calls.join(",")}`);
  assert.ok(calls.every((t) => t < 2000), `every renewal started before the deadline: ${calls.join(",")}`);
  assert.equal(renewer.validUntil("uid-1"), 2000, "the deadline stays passed until the reconcile ends the claim");
  assert.deepEqual(renewer.tracked(), ["uid-1"]);
  assert.ok(queued.some((t) => t >= 2000), "its lock was queued");
});

test("on a backend that expires holds itself, renewals go on past the deadline and a late success restores validity", async () => {
  const clock = new FakeClock(0);
  let answer: "renew" | Error = new Error("unreachable");
  const { backend, calls } = scriptedBackend(clock, () => answer);
  const serverExpiry = { ...backend, expiresOnServer: true } as LockBackend;
  const queued: number[] = [];
  const renewer = new HoldRenewer({ clock, enqueueLock: () => queued.push(clock.now()), random: () => 0.5 });
  renewer.track(hold(serverExpiry, 3), 0);
  await advance(clock, 3000); // every renewal fails; the deadline (2000) passes and the lock is queued
  assert.ok(queued.some((t) => t >= 2000), "its lock was queued at the deadline");
  answer = "renew"; // the server still has the hold: it never expired there
  await advance(clock, 1000);
  assert.ok(calls.some((t) => t > 2000), `renewed after the deadline: ${calls.join(",")}`);
  assert.ok(renewer.validUntil("uid-1")! > clock.now(), "valid again: the success proves the hold never lapsed");
});

test("never confirmed here (a restart): no validity until the first renewal succeeds, which comes within the spread", async () => {
  const clock = new FakeClock(0);
  const { backend, calls } = scriptedBackend(clock, () => "renew");
  const renewer = new HoldRenewer({ clock, enqueueLock: () => undefined });
  renewer.track(hold(backend, 30), undefined, 2000);
  assert.equal(renewer.validUntil("uid-1"), undefined);
  await advance(clock, 2000);
  assert.deepEqual(calls, [2000]);
  assert.equal(renewer.validUntil("uid-1"), 2000 + 30_000 - 3000);
});

test("retries back off exponentially with jitter, bounded by a sixth of the lease (at most 5 s)", async () => {
  const clock = new FakeClock(0);
  const { backend, calls } = scriptedBackend(clock, () => new Error("down"));
  const renewer = new HoldRenewer({ clock, enqueueLock: () => undefined, random: () => 0.99 });
  renewer.track(hold(backend, 60), 0);
  await advance(clock, 80_000);
  const gaps = calls.slice(1).map((t, i) => t - calls[i]);
  assert.ok(gaps.length >= 8, `kept trying: ${gaps.length}`);
  for (let i = 1; i < 4; i++) assert.ok(gaps[i] >= gaps[i - 1] * 1.5, `grows: ${gaps.join(",")}`);
  assert.ok(gaps.every((g) => g <= retryCapMs(60) + 100), `bounded: ${gaps.join(",")}`);
  assert.ok(gaps.at(-1)! >= retryCapMs(60) * 0.9, `reaches the cap: ${gaps.join(",")}`);
});

test("onLapsed: called with `unconfirmed` at the validity deadline and with `gone` when a renewal finds no hold", async () => {
  const clock = new FakeClock(0);
  let answer: "renew" | "gone" | Error = new Error("backend down");
  const { backend } = scriptedBackend(clock, () => answer);
  const lapsed: string[] = [];
  const renewer = new HoldRenewer({ clock, enqueueLock: () => undefined, onLapsed: (h, why) => lapsed.push(`${h.holderId}:${why}`), random: () => 0.5 });
  renewer.track(hold(backend), 0);
  assert.equal(validityMarginMs(3), 1000);
  await advance(clock, 1900);
  assert.deepEqual(lapsed, [], "not before the deadline (lease 3 s − margin 1 s)");
  await advance(clock, 200);
  assert.deepEqual(lapsed, ["uid-1:unconfirmed"]);

  answer = "gone";
  renewer.track({ ...hold(backend), holderId: "uid-2" }, clock.now());
  await advance(clock, 1100);
  assert.deepEqual(lapsed, ["uid-1:unconfirmed", "uid-2:gone"]);
  assert.ok(!renewer.tracked().includes("uid-2"));
});

test("firstAttempts: resolves once holds tracked without a confirmation have had their first renewal, failed or not", async () => {
  const clock = new FakeClock(0);
  const { backend, calls } = scriptedBackend(clock, () => new Error("backend down"));
  const renewer = new HoldRenewer({ clock, enqueueLock: () => undefined });
  renewer.track(hold(backend), 0); // confirmed by the caller: nothing to wait for
  renewer.track({ ...hold(backend), holderId: "uid-2" }, undefined, 500);
  let done = false;
  void renewer.firstAttempts().then(() => (done = true));
  await advance(clock, 400);
  assert.equal(done, false, "the first renewal is still to come");
  await advance(clock, 200);
  assert.equal(calls.length, 1);
  assert.equal(done, true, "a failed first renewal counts as attempted");
  await renewer.firstAttempts(); // nothing pending now
  renewer.stopAll();
});
