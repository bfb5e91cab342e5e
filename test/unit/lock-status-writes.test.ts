/**
 * The lock's status is written once per change that matters, with its waiting count alone coalesced: claims
 * arriving or leaving the queue change it, but within POSITION_REFRESH_MS of the last write it waits for the next
 * one (the pass asks to look again when it may be written). A holder or fencing change is written at once.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { CLAIM_PLURAL, LOCK_PLURAL, POSITION_REFRESH_MS } from "../../src/api/types";
import { World } from "../support/reconciler-world";

const lockWrites = (world: World) => world.statusWrites.filter((w) => w === `${LOCK_PLURAL}/item`).length;

test("a waiting count that changes within the refresh window is written once, when the window ends", async () => {
  const world = new World();
  world.lock("item");
  world.claim("first", "item");
  await world.reconcile("item");
  assert.equal(world.server.locks.get("item")?.status?.holders?.[0]?.claim, "first");
  assert.equal(lockWrites(world), 1);

  world.clock.advance(100);
  world.claim("second", "item");
  const second = await world.reconcile("item");
  world.clock.advance(100);
  world.claim("third", "item");
  const third = await world.reconcile("item");
  assert.equal(lockWrites(world), 1, "a waiting count alone was written within the window");
  assert.ok(second && second.requeueAfterMs !== undefined && second.requeueAfterMs <= POSITION_REFRESH_MS - 100, `asked to look again in ${JSON.stringify(second)}`);
  assert.ok(third && third.requeueAfterMs !== undefined && third.requeueAfterMs <= POSITION_REFRESH_MS - 200, `asked to look again in ${JSON.stringify(third)}`);

  world.clock.advance(POSITION_REFRESH_MS);
  await world.reconcile("item");
  assert.equal(lockWrites(world), 2);
  assert.equal(world.server.locks.get("item")?.status?.waiting, 2);
});

test("a new holder is written at once, within the window, before its claim shows Granted", async () => {
  const world = new World();
  world.lock("item");
  world.claim("first", "item");
  await world.reconcile("item");
  world.claim("second", "item");
  world.clock.advance(100);
  await world.reconcile("item");
  const before = lockWrites(world);

  world.clock.advance(100);
  world.deleteClaim("first");
  await world.reconcile("item");
  const lock = world.server.locks.get("item")!;
  assert.equal(lockWrites(world), before + 1, "the new holder waited for the window");
  assert.deepEqual(lock.status?.holders?.map((h) => h.claim), ["second"]);
  const lockAt = world.statusWrites.lastIndexOf(`${LOCK_PLURAL}/item`);
  const claimAt = world.statusWrites.lastIndexOf(`${CLAIM_PLURAL}/second`);
  assert.ok(lockAt >= 0 && claimAt > lockAt, `the lock's status (its high-water mark) came after the claim's Granted: ${world.statusWrites.join(", ")}`);
  assert.equal(world.server.claims.get("second")?.status?.phase, "Granted");
  assert.equal(lock.status?.highestFencingToken, world.server.claims.get("second")?.status?.fencingToken);
});
