/**
 * kill -9 of the operator while claims are held and waiting loses no grant and doubles none; claims and their lock
 * deleted while it is down leave no backend hold behind.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { createNamespace, eventually } from "../support/env";
import { Api, ClaimHistory, startOperator, type OperatorProcess } from "../support/operator";

let namespace: string;
let api: Api;
let operator: OperatorProcess | undefined;
let history: ClaimHistory;

before(async () => {
  namespace = await createNamespace("restart");
  api = new Api(namespace);
  history = new ClaimHistory(namespace);
  await history.start();
});

after(async () => {
  history?.stop();
  await operator?.stop();
});

test("restart after SIGKILL keeps holds and tokens, then serves the queue", async () => {
  operator = await startOperator({ namespace });
  await api.createLock("shared", { maxHolders: 2 });
  const names = ["r0", "r1", "r2", "r3", "r4", "r5"];
  for (const name of names) await api.createClaim(name, { lockName: "shared" });
  const before = await Promise.all(["r0", "r1"].map((n) => api.waitForPhase(n, "Granted")));
  for (const n of ["r2", "r3", "r4", "r5"]) await api.waitForPhase(n, "Pending");

  await operator.kill();
  // While it is down: one holder finishes (its claim goes at once; the restarted operator finds the hold without a
  // claim, reads that the claim is gone, and releases it), one more claim arrives.
  await api.deleteClaim("r0");
  await api.createClaim("r6", { lockName: "shared" });

  operator = await startOperator({ namespace });
  const r1 = await api.waitForPhase("r1", "Granted");
  assert.equal(r1.status?.fencingToken, before[1].status?.fencingToken, "the surviving hold kept its token: re-attached, not re-acquired");
  await api.waitForPhase("r2", "Granted");
  // The lock's status may be a pass behind the claims' (its waiting count): wait for it.
  await eventually("lock status shows r1 and r2 holding, 4 waiting", async () => {
    const status = (await api.getLock("shared")).status;
    return JSON.stringify(status?.holders?.map((h) => h.claim).sort()) === '["r1","r2"]' && status?.waiting === 4 ? true : undefined;
  });

  // Drain the rest: every claim is granted in turn, never more than two at once.
  for (const name of ["r1", "r2", "r3", "r4", "r5"]) {
    await api.waitForPhase(name, "Granted");
    await api.deleteClaim(name);
  }
  await api.waitForPhase("r6", "Granted");
  // The history is a watch: it may hear of the last grant a moment after the read above saw it.
  const replay = await eventually("the claim history to have seen r6 granted", async () => {
    const seen = history.replay(new Set([...names, "r6"]));
    return seen.grants.some((g) => g.name === "r6") ? seen : undefined;
  });
  assert.ok(replay.maxGranted <= 2, `at most 2 holders at any observed instant, saw ${replay.maxGranted}`);
  // Grants in one reconcile are written concurrently, so order them by token (acquire order).
  const byToken = [...replay.grants].sort((a, b) => (BigInt(a.token) < BigInt(b.token) ? -1 : 1)).map((g) => g.name);
  assert.deepEqual(byToken.slice(2), ["r2", "r3", "r4", "r5", "r6"], "the queue kept its order across the restart");
  assert.equal(replay.grants.length, 7, "each claim granted once, none twice");
  const tokens = replay.grants.map((g) => BigInt(g.token));
  assert.equal(new Set(tokens).size, tokens.length, "no fencing token was issued twice");
});

test("claims and their lock deleted while the operator is down: the next one releases every hold before the lock goes", async () => {
  operator ??= await startOperator({ namespace });
  await api.createLock("item", { maxHolders: 2 });
  for (const name of ["item-a", "item-b", "item-c"]) await api.createClaim(name, { lockName: "item" });
  await api.waitForPhase("item-a", "Granted");
  await api.waitForPhase("item-b", "Granted");
  await api.waitForPhase("item-c", "Pending");
  const coordination = api.kc.makeApiClient(k8s.CoordinationV1Api);
  const leases = async () => (await coordination.listNamespacedLease({ namespace })).items
    .filter((l) => l.metadata?.name?.startsWith("kubelock-item-") && l.spec?.holderIdentity).map((l) => l.metadata!.name!);
  assert.equal((await leases()).length, 2, "two slots held");

  await operator.kill();
  // Claims carry no finalizer: they go at once, and the lock waits for its own. The next operator finds the lock
  // being deleted and none of its claims: only the listed holds, and live reads showing their claims gone, tell it.
  for (const name of ["item-a", "item-b", "item-c"]) await api.deleteClaim(name);
  await api.deleteLock("item");
  operator = await startOperator({ namespace });
  await eventually("lock gone", async () => (await api.getLock("item").then(() => false, () => true)) || undefined, 30_000);
  assert.deepEqual(await leases(), [], "a hold was left behind");
});
