/**
 * How the lock's fencing mark is kept depends on where the backend's tokens come from (LockBackend.fencingRecord):
 * - "counter" (Redis, PostgreSQL): the mark is reserved ahead, written before the first claim that shows a token
 *   above it; a restarted operator's first grant lifts the counter past it, so a token shown while the status
 *   lagged is never handed out again, even by a backend that lost its counter;
 * - "api-store" (Kubernetes Leases): the mark guards nothing, so a grant waits for no lock status write;
 * - "revision" (etcd, ZooKeeper): the exact mark before every claim that shows a higher token
 *   (test/unit/lock-status-writes.test.ts).
 * Within POSITION_REFRESH_MS of the lock's last status write, holders and counts wait for the next one.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { CLAIM_PLURAL, LOCK_PLURAL, POSITION_REFRESH_MS } from "../../src/api/types";
import { handoffWorld, type World } from "../support/reconciler-world";

const lockWrites = (world: World) => world.statusWrites.filter((w) => w === `${LOCK_PLURAL}/item`).length;
const token = (world: World, claim: string) => BigInt(world.server.claims.get(claim)?.status?.fencingToken ?? "-1");

test("counter backend: the mark is reserved ahead before the first grant shows a token, then handoffs write only the claim", async () => {
  const world = await handoffWorld("counter");
  const lock = world.server.locks.get("item")!;
  assert.equal(lock.status?.reservedFencingToken, String(token(world, "first") + 1000n), "reserved 1000 ahead");
  assert.ok(world.statusWrites.indexOf(`${LOCK_PLURAL}/item`) < world.statusWrites.indexOf(`${CLAIM_PLURAL}/first`), world.statusWrites.join(", "));

  const before = lockWrites(world);
  world.deleteClaim("first");
  const result = await world.reconcile("item");
  assert.equal(world.server.claims.get("second")?.status?.phase, "Granted");
  assert.ok(token(world, "second") > token(world, "first"));
  assert.equal(lockWrites(world), before, "a token inside the reserve needs no lock status write before the claim's");
  assert.ok(result?.requeueAfterMs !== undefined && result.requeueAfterMs <= POSITION_REFRESH_MS - 100, `looks again when it may write: ${JSON.stringify(result)}`);

  world.clock.advance(POSITION_REFRESH_MS);
  await world.reconcile("item");
  const shown = world.server.locks.get("item")!.status!;
  assert.equal(lockWrites(world), before + 1);
  assert.deepEqual(shown.holders?.map((h) => h.claim), ["second"]);
  assert.equal(shown.highestFencingToken, String(token(world, "second")));
  assert.equal(shown.leaseTransitions, 2, "the grant of the put-off pass is counted");
  assert.equal(shown.reservedFencingToken, lock.status?.reservedFencingToken, "the reserve still covers it");
});

test("counter backend that lost its counter: the running operator's floor is what it handed out, though the status lags", async () => {
  const world = await handoffWorld("counter");
  world.deleteClaim("first");
  await world.reconcile("item");
  const shown = token(world, "second");
  assert.ok(BigInt(world.server.locks.get("item")!.status!.highestFencingToken!) < shown, "the lock's status has not caught up");

  world.memory.token = 0; // Redis restarted empty, its clock behind
  world.claim("third", "item");
  world.deleteClaim("second");
  world.clock.advance(100);
  await world.reconcile("item");
  assert.equal(world.server.claims.get("third")?.status?.phase, "Granted");
  assert.ok(token(world, "third") > shown, `token ${token(world, "third")} after ${shown}`);
});

test("counter backend that lost its counter: a restarted operator's first grant goes past the reserve", async () => {
  const world = await handoffWorld("counter");
  const reserved = BigInt(world.server.locks.get("item")!.status!.reservedFencingToken!);
  world.deleteClaim("first");
  await world.reconcile("item"); // second granted; the status still shows first's token
  const shown = token(world, "second");
  world.deleteClaim("second"); // its token is in no object now, only inside the reserve

  world.memory.token = 0;
  world.restartOperator();
  world.claim("third", "item");
  world.clock.advance(100);
  await world.reconcile("item");
  const third = token(world, "third");
  assert.equal(world.server.claims.get("third")?.status?.phase, "Granted");
  assert.ok(third > reserved && third > shown, `token ${third}: above the reserve ${reserved} and the last shown ${shown}`);
  const lock = world.server.locks.get("item")!;
  assert.equal(lock.status?.reservedFencingToken, String(third + 1000n));
  assert.ok(world.statusWrites.lastIndexOf(`${LOCK_PLURAL}/item`) < world.statusWrites.lastIndexOf(`${CLAIM_PLURAL}/third`), "the new reserve came first");
});

test("API-store backend: a handoff writes the claim at once and the lock's status once the window ends", async () => {
  const world = await handoffWorld("api-store");
  const before = lockWrites(world);
  assert.equal(world.server.locks.get("item")?.status?.reservedFencingToken, undefined);
  world.deleteClaim("first");
  await world.reconcile("item");
  assert.equal(world.server.claims.get("second")?.status?.phase, "Granted");
  assert.equal(lockWrites(world), before);

  world.clock.advance(POSITION_REFRESH_MS);
  await world.reconcile("item");
  assert.equal(lockWrites(world), before + 1);
  assert.equal(world.server.locks.get("item")?.status?.highestFencingToken, String(token(world, "second")));
});

test("a condition change is written at once, within the window (the lock becomes free)", async () => {
  const world = await handoffWorld("api-store");
  world.deleteClaim("first");
  await world.reconcile("item");
  const before = lockWrites(world);
  world.clock.advance(100);
  world.deleteClaim("second");
  await world.reconcile("item");
  assert.equal(lockWrites(world), before + 1);
  const status = world.server.locks.get("item")!.status!;
  assert.equal(status.conditions?.find((c) => c.type === "Available")?.status, "True");
  assert.equal(status.holderCount, 0);
  assert.equal(status.leaseTransitions, 2);
});
