/**
 * The in-memory fake backend (test/support/fake-backend.ts) passes the suite every backend passes, so
 * tests of interleavings can trust it; then the faults it scripts, and two interleavings of the hold
 * renewer met through it: a release racing a renewal, and an acquire whose answer was lost.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, test } from "node:test";
import { BackendUnavailableError } from "../../src/backends/backend";
import { HoldRenewer } from "../../src/controllers/hold-renewer";
import { FakeClock } from "../../src/runtime/clock";
import { FakeServer } from "../support/fake-backend";
import { holdRequest, runBackendConformance } from "./backend-conformance";

const server = new FakeServer();
after(() => server.stop());

runBackendConformance("fake", async () => server.client(), {
  supportsExpiry: true,
  minLeaseSeconds: 1,
  stopServer: async () => void (server.down = true),
  startServer: async () => void (server.down = false),
});

const key = () => `fake-${randomUUID().slice(0, 8)}/lock`;

test("fake: an acquire cut short took the slot; the same holder re-attaches with the same token", async () => {
  const backend = server.client();
  const k = key();
  const request = holdRequest(k, "a");
  server.inject("tryAcquire", "cut-short");
  await assert.rejects(backend.tryAcquire(request), BackendUnavailableError);
  const [hold] = await backend.holders(k);
  assert.equal(hold?.holderId, request.holderId, "the server granted it although the answer was lost");
  assert.equal((await backend.tryAcquire(request))?.fencingToken, hold.fencingToken);
  assert.equal(await backend.tryAcquire(holdRequest(k, "b")), undefined, "the slot is taken");
  await backend.close();
});

test("fake: a lost watch event leaves the watcher unaware; the next change is heard", async () => {
  const backend = server.client();
  const k = key();
  let heard = 0;
  const stop = backend.watch(k, () => heard++);
  server.inject("tryAcquire", "lose-events");
  const first = holdRequest(k, "a", { maxHolders: 2 });
  await backend.tryAcquire(first);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(heard, 0);
  await backend.release(k, first.holderId);
  assert.equal(heard, 1);
  stop();
  await backend.close();
});

/** A fake server on a fake clock with one 3 s hold taken by `request` on key `k`. */
async function heldOnFakeClock() {
  const clock = new FakeClock(1_000_000);
  const shared = new FakeServer(() => clock.now());
  const backend = shared.client();
  const k = key();
  const request = holdRequest(k, "a", { leaseDurationSeconds: 3 });
  await backend.tryAcquire(request);
  return { clock, shared, backend, k, request };
}

test("hold renewer: a release racing a renewal stops the renewals and queues the lock; nothing is recreated", async () => {
  const { clock, shared, backend, k, request } = await heldOnFakeClock();
  const queued: string[] = [];
  const renewer = new HoldRenewer({ clock, enqueueLock: (lock) => queued.push(lock) });
  renewer.track({ lockKey: "ns/lock", backend, backendKey: k, holderId: request.holderId, leaseSeconds: 3 }, clock.now());
  await shared.client("other").release(k, request.holderId); // another replica released it
  clock.advance(1000); // the renewal is due (a third of the lease)
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(renewer.tracked(), [], "no longer renewed");
  assert.deepEqual(queued, ["ns/lock"]);
  assert.deepEqual(await backend.holders(k), [], "the renewal recreated nothing");
  assert.equal(shared.calls.get("renew"), 1);
  renewer.stopAll();
  shared.stop();
});

test("hold renewer: renewals whose answers are lost keep the hold on the server, yet its validity passes", async () => {
  const { clock, shared, backend, k, request } = await heldOnFakeClock();
  const renewer = new HoldRenewer({ clock, enqueueLock: () => undefined, random: () => 0 });
  renewer.track({ lockKey: "ns/lock", backend, backendKey: k, holderId: request.holderId, leaseSeconds: 3 }, clock.now());
  const validUntil = renewer.validUntil(request.holderId)!;
  for (let i = 0; i < 10; i++) shared.inject("renew", "cut-short");
  for (let t = 0; t < 2500; t += 100) {
    clock.advance(100);
    for (let j = 0; j < 3; j++) await new Promise((resolve) => setImmediate(resolve));
  }
  assert.ok((shared.calls.get("renew") ?? 0) >= 2, "renewals were attempted");
  assert.equal(renewer.validUntil(request.holderId), validUntil, "a renewal whose answer was lost confirms nothing");
  assert.ok(clock.now() >= validUntil, "the validity deadline passed");
  assert.equal((await backend.holders(k)).length, 1, "while the server still holds it: the claim must show Lost by the deadline");
  renewer.stopAll();
  shared.stop();
});
