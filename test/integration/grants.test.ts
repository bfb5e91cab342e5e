/** Grants on the real API server: exclusion, semaphores, queue order, positions, kubectl wait. */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createNamespace, eventually, kubectl } from "../support/env";
import { Api, ClaimHistory, startOperator, type OperatorProcess } from "../support/operator";

let namespace: string;
let api: Api;
let operator: OperatorProcess;
let history: ClaimHistory;

before(async () => {
  namespace = await createNamespace("grants");
  api = new Api(namespace);
  history = new ClaimHistory(namespace);
  await history.start();
  operator = await startOperator({ namespace });
});

after(async () => {
  history?.stop();
  await operator?.stop();
});

/** Deletes granted claims one by one until every claim of `names` has held the lock and gone. */
async function drain(names: string[], maxHolders: number): Promise<void> {
  const remaining = new Set(names);
  while (remaining.size > 0) {
    const claims = (await api.listClaims()).filter((c) => remaining.has(c.metadata.name));
    const granted = claims.filter((c) => c.status?.phase === "Granted");
    assert.ok(granted.length <= maxHolders, `${granted.length} claims granted at once, max ${maxHolders}`);
    if (granted.length === 0) {
      await new Promise((r) => setTimeout(r, 50)); // poll interval while the operator grants the next
      continue;
    }
    for (const claim of granted) {
      await api.deleteClaim(claim.metadata.name);
      remaining.delete(claim.metadata.name);
    }
  }
}

async function checkExclusion(lock: string, maxHolders: number, contenders: number) {
  await api.createLock(lock, { maxHolders });
  const names = Array.from({ length: contenders }, (_, i) => `${lock}-c${String(i).padStart(2, "0")}`);
  await Promise.all(names.map((name) => api.createClaim(name, { lockName: lock })));
  await api.waitForClaim(names[0], "granted or waiting", (c) => c.status?.phase !== undefined);
  await drain(names, maxHolders);

  const replay = history.replay(new Set(names));
  const missing = names.filter((n) => !replay.grants.some((g) => g.name === n));
  assert.deepEqual(missing, [], "every contender was granted");
  assert.equal(replay.grants.length, contenders, "every contender was granted exactly once");
  assert.ok(replay.maxGranted <= maxHolders, `history shows ${replay.maxGranted} holders at once, max ${maxHolders}`);
  assert.equal(replay.maxGranted, maxHolders, "the semaphore was used to its limit");
  const tokens = replay.grants.map((g) => BigInt(g.token));
  assert.equal(new Set(tokens).size, contenders, "fencing tokens are unique");
  if (maxHolders === 1) {
    // A mutex grants one at a time, so grant order is token order.
    for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i] > tokens[i - 1], `fencing tokens increase in grant order: ${tokens.join(",")}`);
  }
  // The lock's status is written after its claims' in each reconcile: wait for the last one.
  let seen: number | undefined;
  await eventually(`leaseTransitions ${contenders}`, async () => {
    seen = (await api.getLock(lock)).status?.leaseTransitions;
    return seen === contenders ? true : undefined;
  }).catch((err: Error) => assert.fail(`${err.message}; the lock shows ${seen}`));
}

describe("mutual exclusion", () => {
  test("a mutex grants 24 contenders one at a time", () => checkExclusion("mutex", 1, 24));
  test("a semaphore of 3 grants 24 contenders at most 3 at a time", () => checkExclusion("sem", 3, 24));
});

describe("queue order", () => {
  test("FIFO within a priority, higher priority first, positions while waiting", async () => {
    await api.createLock("order");
    await api.createClaim("order-holder", { lockName: "order" });
    await api.waitForPhase("order-holder", "Granted");
    // Created one per second (creationTimestamp has whole seconds) in reverse name order, so
    // only creation time can explain a FIFO result.
    const fifo = ["order-z", "order-y", "order-x"];
    for (const name of fifo) {
      const second = Math.floor(Date.now() / 1000);
      await api.createClaim(name, { lockName: "order" });
      while (Math.floor(Date.now() / 1000) === second) await new Promise((r) => setTimeout(r, 20));
    }
    await api.createClaim("order-urgent", { lockName: "order", priority: 10 });
    const expected = ["order-urgent", ...fifo];
    for (const [i, name] of expected.entries()) {
      await api.waitForClaim(name, `position ${i + 1}`, (c) => c.status?.phase === "Pending" && c.status.position === i + 1);
    }
    await api.waitForLock("order", "4 waiting behind order-holder", (l) =>
      l.status?.waiting === 4 && JSON.stringify(l.status?.holders?.map((h) => h.holderIdentity)) === '["order-holder"]');

    let current = "order-holder";
    for (const name of expected) {
      await api.deleteClaim(current);
      const granted = await api.waitForPhase(name, "Granted");
      assert.equal(granted.status?.holderIdentity, name);
      current = name;
    }
  });
});

describe("kubectl wait", () => {
  test("returns for a granted claim and times out for a waiting one", async () => {
    await api.createLock("waitable");
    await api.createClaim("first", { lockName: "waitable" });
    await api.createClaim("second", { lockName: "waitable" });
    const granted = await kubectl(["wait", "-n", namespace, "--for=condition=Granted", "lockclaim/first", "--timeout=30s"]);
    assert.equal(granted.code, 0, granted.stderr);
    assert.match(granted.stdout, /condition met/);
    const waiting = await kubectl(["wait", "-n", namespace, "--for=condition=Granted", "lockclaim/second", "--timeout=2s"]);
    assert.notEqual(waiting.code, 0);
    assert.match(waiting.stderr, /timed out/);
    const second = await api.getClaim("second");
    assert.equal(second?.status?.phase, "Pending");
    assert.equal(second?.status?.position, 1);
  });
});

test("a semaphore's lock status counts its holders (kubectl get dlock shows the count)", async () => {
  await api.createLock("counted", { maxHolders: 3 });
  for (const name of ["counted-a", "counted-b", "counted-c", "counted-d"]) await api.createClaim(name, { lockName: "counted" });
  const full = await api.waitForLock("counted", "three holders counted and the fourth claim waiting", (l) =>
    l.status?.holderCount === 3 && l.status.waiting === 1);
  assert.equal(full.status?.holders?.length, 3);
  // Every holder by name too, for -o wide: kubectl shows them all.
  assert.equal(full.status?.holderNames, full.status!.holders!.map((h) => h.holderIdentity).join(","));
  // Nothing changes while three hold and one waits: kubectl's wide output (its last column, HELD-BY) names all three.
  const wide = await kubectl(["get", "dlock", "counted", "-n", namespace, "-o", "wide", "--no-headers"]);
  assert.equal(wide.stdout.trim().split(/\s+/).at(-1), full.status?.holderNames, wide.stdout);
  assert.equal(full.status?.holderNames?.split(",").filter((n) => /^counted-[a-d]$/.test(n)).length, 3, full.status?.holderNames);
  const holder = full.status!.holders![0].claim;
  await api.deleteClaim(holder);
  const next = await api.waitForLock("counted", "the count follows a release and the next grant", (l) =>
    l.status?.holderCount === 3 && !l.status.holders?.some((h) => h.claim === holder) && l.status.waiting === 0);
  assert.equal(next.status?.holderNames, next.status!.holders!.map((h) => h.holderIdentity).join(","));
  for (const name of ["counted-a", "counted-b", "counted-c", "counted-d"].filter((n) => n !== holder)) await api.deleteClaim(name);
  const empty = await api.waitForLock("counted", "no holders counted once every claim is gone", (l) => l.status?.holderCount === 0);
  assert.equal(empty.status?.holderNames, "");
});
