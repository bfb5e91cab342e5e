/** The backends' watch fan-out: plain listeners see every change; waiters are woken at their turn, one read per change. */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { QueueState } from "../../src/backends/backend";
import { FanOut, orderOf } from "../../src/backends/kit/fan-out";

const info = (holderId: string) => ({ holderId, claim: holderId, holderIdentity: holderId, cluster: "" });
const hold = (holderId: string) => ({ ...info(holderId), fencingToken: "1", acquireTime: "", renewTime: "" });
const state = (holders: string[], waiting: string[]): QueueState => ({ holders: holders.map(hold), waiting: waiting.map(info) });

/** A queue read the test answers by hand: `reads` counts them, `answer` resolves the oldest. */
function manualQueue() {
  const pending: ((s: QueueState | Error) => void)[] = [];
  let reads = 0;
  const read = (key: string) => {
    assert.equal(key, "ns/lock");
    reads++;
    return new Promise<QueueState>((resolve, reject) => pending.push((s) => (s instanceof Error ? reject(s) : resolve(s))));
  };
  const answer = async (s: QueueState | Error) => {
    await until(() => pending.length > 0);
    pending.shift()!(s);
    await new Promise((resolve) => setImmediate(resolve));
  };
  return { read, answer, reads: () => reads, pending: () => pending.length };
}

async function until(ok: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !ok(); i++) await new Promise((resolve) => setImmediate(resolve));
  assert.ok(ok(), "condition not reached");
}

function setUp() {
  const queue = manualQueue();
  const fan = new FanOut<void>(() => undefined, undefined, async (key) => orderOf(await queue.read(key)));
  const calls: Record<string, number> = { plain: 0, w1: 0, w2: 0, w3: 0 };
  fan.add("chan", () => calls.plain++);
  for (const id of ["w1", "w2", "w3"]) fan.add("chan", () => calls[id]++, { key: "ns/lock", holderId: id, maxHolders: 2 });
  return { fan, queue, calls };
}

test("a change calls plain listeners at once and, after one queue read, only the waiters whose turn it is", async () => {
  const { fan, queue, calls } = setUp();
  fan.notify("chan");
  assert.deepEqual(calls, { plain: 1, w1: 0, w2: 0, w3: 0 });
  await queue.answer(state(["h"], ["w1", "w2", "w3"])); // one slot of two free: w1 only
  assert.deepEqual(calls, { plain: 1, w1: 1, w2: 0, w3: 0 });
  assert.equal(queue.reads(), 1, "one read for three waiters");
  fan.notify("chan");
  await queue.answer(state([], ["w2", "w3"])); // both slots free
  assert.deepEqual(calls, { plain: 2, w1: 1, w2: 1, w3: 1 });
});

test("changes during a read cost one more read, not one each", async () => {
  const { fan, queue, calls } = setUp();
  fan.notify("chan");
  fan.notify("chan");
  fan.notify("chan");
  assert.equal(calls.plain, 3);
  await queue.answer(state(["a", "b"], ["w1", "w2", "w3"])); // nobody's turn
  await queue.answer(state(["a"], ["w1", "w2", "w3"]));
  assert.equal(queue.reads(), 2);
  assert.equal(queue.pending(), 0);
  assert.deepEqual(calls, { plain: 3, w1: 1, w2: 0, w3: 0 });
});

test("a failed read wakes every waiter (a spurious wake-up, never a missed one)", async () => {
  const { fan, queue, calls } = setUp();
  fan.notify("chan");
  await queue.answer(new Error("unreachable"));
  assert.deepEqual(calls, { plain: 1, w1: 1, w2: 1, w3: 1 });
});

test("without a queue read every waiter is called at every change; a removed waiter is not", () => {
  const fan = new FanOut<void>(() => undefined);
  let [a, b] = [0, 0];
  fan.add("chan", () => a++, { key: "ns/lock", holderId: "a", maxHolders: 1 });
  const stopB = fan.add("chan", () => b++, { key: "ns/lock", holderId: "b", maxHolders: 1 });
  fan.notify("chan");
  stopB();
  fan.notify("chan");
  assert.deepEqual([a, b], [2, 1]);
});

test("a change that names whose turn it is wakes those waiters without a read", () => {
  const { fan, queue, calls } = setUp();
  fan.notify("chan", ["w2"]);
  fan.notify("chan", []);
  assert.deepEqual(calls, { plain: 2, w1: 0, w2: 1, w3: 0 });
  assert.equal(queue.reads(), 0);
});

test("a waiter the read shows holding already (its entry became the hold) is woken too", async () => {
  const { fan, queue, calls } = setUp();
  fan.notify("chan");
  await queue.answer(state(["other", "w1"], ["w2", "w3"]));
  assert.deepEqual(calls, { plain: 1, w1: 1, w2: 0, w3: 0 });
});

test("an order the backend read itself decides the turns without a read; none (a failed listing) wakes every waiter", () => {
  const { fan, queue, calls } = setUp();
  fan.notifyInOrder("chan", ["other", "w2", "w1", "w3"]);
  assert.deepEqual(calls, { plain: 1, w1: 0, w2: 1, w3: 0 });
  fan.notifyInOrder("chan", undefined);
  assert.deepEqual(calls, { plain: 2, w1: 1, w2: 2, w3: 1 });
  fan.notifyInOrder("elsewhere", ["w1"]);
  assert.deepEqual(calls, { plain: 2, w1: 1, w2: 2, w3: 1 });
  assert.equal(queue.reads(), 0);
});

test("wake calls that holder's waiters alone: no plain listener, no read", () => {
  const { fan, queue, calls } = setUp();
  fan.wake("chan", "w3");
  fan.wake("chan", "nobody");
  assert.deepEqual(calls, { plain: 0, w1: 0, w2: 0, w3: 1 });
  assert.equal(queue.reads(), 0);
});
