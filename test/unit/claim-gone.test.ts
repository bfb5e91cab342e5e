/**
 * Claims carry no finalizer, so the lock reconciler must release every hold whose claim or lock is gone by itself,
 * on evidence, and leave none behind (over an in-memory backend and fake caches, one pass at a time):
 * - a claim deleted while its acquire was in flight: the status write finds no claim (404), and the fresh hold goes
 *   in that same pass;
 * - a lock deleted right after its claims: the holds of the claims seen deleted (already out of the cache) go before
 *   the lock's finalizer, and so do listed holds whose claim a live read shows gone; a live claim of another lock on
 *   the same key, and another cluster's hold, stay;
 * - a lock found gone when its status is written: the holds taken in that pass go;
 * - claims get no finalizer; one that an earlier version gave the finalizer loses it once its hold went.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { CLAIM_PLURAL, LOCK_PLURAL, RELEASE_FINALIZER, type LockClaim } from "../../src/api/types";
import { NS, World } from "../support/reconciler-world";

test("a claim deleted while its acquire is in flight: its status write finds it gone, and the hold goes in that pass", async () => {
  const world = new World();
  world.lock("item");
  world.claim("order", "item");
  world.memory.beforeAcquire = () => world.deleteClaim("order");
  await world.reconcile("item");
  assert.deepEqual(world.holders(), [], "the hold of a claim that is gone stayed");
  assert.deepEqual(world.finalizerWrites, [], "no finalizer is put on a claim");
});

test("a lock deleted right after its claims: the holds of claims seen deleted and of claims a live read finds gone go first", async () => {
  const world = new World();
  world.lock("item", { deletionTimestamp: new Date(0).toISOString() });
  world.lock("other"); // shares the backend key
  world.claim("other-order", "other");
  world.memory.hold("uid-seen", "seen"); // its claim's deletion was seen, not yet reconciled
  world.memory.hold("uid-unseen", "unseen"); // deleted while no replica watched
  world.memory.hold("uid-other-order", "other-order"); // another lock's live claim on the same key
  world.memory.hold("uid-foreign", "foreign", "elsewhere"); // another cluster's
  world.claim("seen", "item");
  world.deleteClaim("seen");
  await world.reconcile("item");
  assert.deepEqual(world.holders(), ["uid-foreign", "uid-other-order"]);
  assert.deepEqual(world.liveReads, ["unseen"], "a claim seen deleted needs no live read");
  assert.deepEqual(world.finalizerWrites, [`${LOCK_PLURAL}/item: []`]);
});

test("a lock found gone when its status is written: the holds taken in that pass go", async () => {
  const world = new World();
  world.lock("item");
  world.claim("order", "item");
  world.server.locks.delete("item"); // its finalizer removed by other hands; the cache has not heard yet
  await world.reconcile("item");
  assert.deepEqual(world.holders(), []);
  assert.equal(world.server.claims.get("order")?.status, undefined, "a claim was shown a grant on a lock that is gone");
});

test("claims get no finalizer; one an earlier version gave it loses it once its hold went", async () => {
  const world = new World();
  world.lock("item");
  world.claim("new", "item");
  await world.reconcile("item");
  assert.equal(world.server.claims.get("new")?.status?.phase, "Granted");
  assert.deepEqual(world.finalizerWrites, []);

  world.claim("old", "item", { metadata: { name: "old", namespace: NS, uid: "uid-old", resourceVersion: "900", finalizers: [RELEASE_FINALIZER], deletionTimestamp: new Date(0).toISOString() } } as Partial<LockClaim>);
  world.memory.hold("uid-old", "old");
  await world.reconcile("item");
  assert.deepEqual(world.holders(), ["uid-new"]);
  assert.deepEqual(world.finalizerWrites, [`${CLAIM_PLURAL}/old: []`]);
});
