/**
 * A release hands its slot to the queue's head (Redis: scripts.ts, promote). Two parts take such a hold up:
 * - HandedHolds, in the Redis backend: the release's event names the hold, and the waiter's next tryAcquire takes
 *   it without asking Redis, confirmed from when the request that queued it was sent, and only while half a lease
 *   has not passed since (after that it asks);
 * - the lock reconciler: a hold found for a claim not yet Granted, which this process never took, is a grant once a
 *   renewal confirms it (counted, its token checked against the lock's fencing mark), as one it acquired would be.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { POSITION_REFRESH_MS } from "../../src/api/types";
import { HandedHolds } from "../../src/backends/redis/handed-holds";
import { handoffWorld, type World } from "../support/reconciler-world";

const hold = (holderId: string) => JSON.stringify({ holderId, claim: "c", holderIdentity: "c", cluster: "", fencingToken: "7", acquireTime: "1", renewTime: "1" });

test("a handed hold is taken once, confirmed from when its queueing request was sent, within half a lease", () => {
  let now = 1000;
  const handed = new HandedHolds(() => now);
  handed.queuedBy("a", "ch", 900, 10_000);
  handed.handed("ch", hold("a"));
  now = 5899; // 4999 ms after the request: under half the lease
  assert.deepEqual(handed.take("a", "ch"), { json: hold("a"), confirmedAt: 900 });
  assert.equal(handed.take("a", "ch"), undefined, "taken twice");

  handed.queuedBy("b", "ch", now, 10_000);
  handed.handed("ch", hold("b"));
  now += 5000;
  assert.equal(handed.take("b", "ch"), undefined, "half a lease after the request the hold is not taken unasked");
});

test("only holders queued here, on that lock, keep a handed hold; an event before the queueing reply is kept", () => {
  const handed = new HandedHolds(() => 0);
  handed.handed("ch", "{not a hold"); // a line this version does not know: ignored, nothing thrown
  handed.handed("ch", hold("elsewhere")); // another process's waiter
  handed.queuedBy("elsewhere", "ch", 0, 10_000);
  assert.equal(handed.take("elsewhere", "ch"), undefined);

  handed.queuedBy("a", "other-lock", 0, 10_000);
  handed.handed("ch", hold("a"));
  assert.equal(handed.take("a", "ch"), undefined, "a hold on another lock's channel");

  handed.queuedBy("b", "ch", -50, 10_000);
  handed.handed("ch", hold("b"));
  handed.queuedBy("b", "ch", -80, 10_000); // the reply of an earlier request, delivered after the event
  assert.deepEqual(handed.take("b", "ch"), { json: hold("b"), confirmedAt: -50 });

  handed.queuedBy("c", "ch", 0, 10_000);
  handed.handed("ch", hold("c"));
  handed.forget("c"); // a release, or Redis answered with the hold
  assert.equal(handed.take("c", "ch"), undefined);
});

test("records older than their lease are swept as the map grows", () => {
  let now = 0;
  const handed = new HandedHolds(() => now);
  for (let i = 0; i < 1023; i++) handed.queuedBy(`old-${i}`, "ch", now, 1000);
  now = 2000;
  handed.queuedBy("new", "ch", now, 1000); // the 1024th: sweeps
  handed.handed("ch", hold("old-1"));
  handed.handed("ch", hold("new"));
  assert.equal(handed.take("old-1", "ch"), undefined, "a record older than its lease survived the sweep");
  assert.ok(handed.take("new", "ch"));
});

/**
 * A lock `item` with `first` granted and `second` waiting; then `first` is deleted and the backend, as a release
 * that hands over does (with its token counter set back to `token`, if given), holds for `second`; one pass.
 */
async function handedOver(record: "counter" | "revision", token?: number): Promise<World> {
  const world = await handoffWorld(record);
  assert.notEqual(world.server.claims.get("second")?.status?.phase, "Granted");
  world.memory.holds.delete("uid-first");
  if (token !== undefined) world.memory.token = token;
  world.memory.hold("uid-second", "second");
  world.deleteClaim("first");
  await world.reconcile("item");
  return world;
}

test("a hold handed to a waiting claim is a grant once renewed: counted, fenced, shown", async () => {
  const world = await handedOver("counter");
  const second = world.server.claims.get("second")?.status;
  assert.equal(second?.phase, "Granted");
  assert.equal(second?.fencingToken, String(world.memory.token));
  world.clock.advance(POSITION_REFRESH_MS); // the lock's counts are written at most once per POSITION_REFRESH_MS
  await world.reconcile("item");
  const lock = world.server.locks.get("item")!.status;
  assert.equal(lock?.leaseTransitions, 2, "the first grant and the handed one: the handed one was not counted");
  assert.deepEqual(lock?.holders?.map((h) => h.claim), ["second"]);
});

test("a handed hold whose token is not above the lock's mark is given back, and nothing is granted", async () => {
  const world = await handedOver("revision", 0); // the backend lost its data
  assert.notEqual(world.server.claims.get("second")?.status?.phase, "Granted");
  assert.deepEqual(world.holders(), [], "the hold with a repeated token was kept");
  assert.match(JSON.stringify(world.server.locks.get("item")!.status), /lost data/);
});
