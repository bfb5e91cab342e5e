/**
 * Fencing tokens never repeat or go backwards for a lock, even when the backend loses what it knew: the
 * operator keeps a high-water mark in the lock's status (`highestFencingToken`) and never hands out a token at
 * or below it. A backend that keeps a counter raises it to the mark (Redis restarted empty), and there the mark is
 * reserved ahead (`reservedFencingToken`) so that most grants need no lock status write; a backend whose token
 * is its server's revision (etcd, the Kubernetes Leases' resourceVersions) needs no per-key state, and below the
 * mark (its store restored from a backup) nothing is granted and the lock says why.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import Redis from "ioredis";
import { GROUP, LOCK_PLURAL, VERSION } from "../../src/api/types";
import { eventually, kubeConfig, testEnv } from "../support/env";
import { useOperatorNamespace } from "../support/operator";

const ns = useOperatorNamespace("fencing", {
  config: `defaultBackend: kubernetes
backends:
  - {name: redis, type: redis, redis: {url: "${testEnv.redisUrl}", keyPrefix: fencing-test}}
  - {name: etcd, type: etcd, etcd: {endpoints: ["${testEnv.etcdEndpoint}"], prefix: /fencing-test}}
`,
});
let redis: Redis;

before(() => {
  redis = new Redis(testEnv.redisUrl);
});
after(() => redis?.disconnect());

/**
 * Grants `claim` on `lock`, then deletes it and waits until the lock records its token as the high-water mark with
 * no holder left (the mark is written before the claim shows Granted; the release comes later).
 */
async function grantAndRelease(lock: string, claim: string): Promise<bigint> {
  await ns.api.createClaim(claim, { lockName: lock });
  const token = (await ns.api.waitForPhase(claim, "Granted")).status!.fencingToken!;
  await ns.api.deleteClaim(claim);
  await eventually(`claim ${claim} gone`, async () => ((await ns.api.getClaim(claim)) ? undefined : true));
  const recorded = await ns.api.waitForLock(lock, `records token ${token}, no holder`, (l) => l.status?.highestFencingToken === token && !l.status.holders?.length);
  assert.equal(recorded.status?.highestFencingToken, token);
  return BigInt(token);
}

test("Redis restarted empty: the next grant's token is still above every earlier one", async () => {
  await ns.api.createLock("flushed", { backend: "redis" });
  const before = await grantAndRelease("flushed", "a");
  const keys = await redis.keys(`fencing-test:{${ns.namespace}/flushed}:*`);
  assert.ok(keys.some((k) => k.endsWith(":fencing")), `the counter exists: ${keys.join(", ")}`);
  await redis.del(...keys); // what a restart without persistence, or a failover to a lagging replica, leaves
  await ns.api.createClaim("b", { lockName: "flushed" });
  const after = BigInt((await ns.api.waitForPhase("b", "Granted")).status!.fencingToken!);
  assert.ok(after > before, `token ${after} after the data loss, ${before} before`);
});

test("Redis counter behind a token shown only inside the reserve: a restarted operator still goes past it", async () => {
  await ns.api.createLock("reserve", { backend: "redis" });
  await ns.api.createClaim("g", { lockName: "reserve" });
  const first = BigInt((await ns.api.waitForPhase("g", "Granted")).status!.fencingToken!);
  const reserved = BigInt((await ns.api.getLock("reserve"))!.status!.reservedFencingToken!);
  assert.equal(reserved, first + 1000n, "the mark is recorded 1000 ahead before the first claim shows a token");
  const [counter] = await redis.keys(`fencing-test:{${ns.namespace}/reserve}:fencing`);
  assert.ok(counter, "the counter exists");

  // A handoff inside the reserve: h's token is recorded by no lock status write before h shows it.
  await ns.api.createClaim("h", { lockName: "reserve" });
  await ns.api.waitForPhase("h", "Pending");
  await redis.set(counter, (first + 500n).toString());
  await ns.api.deleteClaim("g");
  const shown = BigInt((await ns.api.waitForPhase("h", "Granted")).status!.fencingToken!);
  assert.equal(shown, first + 501n);
  await ns.operator.kill();
  const lagging = (await ns.api.getLock("reserve"))!;
  if (lagging.status?.highestFencingToken !== first.toString()) {
    // The put-off status write beat the kill: put the status back as a kill before it would have left it.
    await patchLockStatus("reserve", { highestFencingToken: first.toString() });
  }
  // h's token is now in no object; then the backend loses its counter (a replica that missed the writes).
  await ns.api.deleteClaim("h");
  await redis.set(counter, "1");
  await ns.startAgain();

  await ns.api.createClaim("i", { lockName: "reserve" });
  const after = BigInt((await ns.api.waitForPhase("i", "Granted")).status!.fencingToken!);
  assert.ok(after > reserved && after > shown, `token ${after} after the restart: above ${shown} shown and the reserve ${reserved}`);
});

test("Kubernetes backend: deleting every Lease of a lock cannot make tokens repeat (tokens are revisions)", async () => {
  await ns.api.createLock("recount", {});
  const before = await grantAndRelease("recount", "c");
  const leases = kubeConfig().makeApiClient(k8s.CoordinationV1Api);
  const all = await leases.listNamespacedLease({ namespace: ns.namespace });
  assert.ok(!all.items.some((l) => l.metadata?.name?.endsWith("-fencing")), `no counter Lease: ${all.items.map((l) => l.metadata?.name).join(", ")}`);
  for (const l of all.items.filter((x) => x.metadata?.name?.includes("recount"))) {
    await leases.deleteNamespacedLease({ name: l.metadata!.name!, namespace: ns.namespace });
  }
  await ns.api.createClaim("d", { lockName: "recount" });
  const after = BigInt((await ns.api.waitForPhase("d", "Granted")).status!.fencingToken!);
  assert.ok(after > before, `token ${after} after the counter was deleted, ${before} before`);
});

test("etcd tokens are revisions: below the high-water mark nothing is granted, and the lock says why", async () => {
  await ns.api.createLock("revision", { backend: "etcd" });
  const first = await grantAndRelease("revision", "e");
  // As if etcd had lost its data: the mark is far above any revision it will issue soon.
  const mark = (first + 1_000_000_000n).toString();
  await patchLockStatus("revision", { highestFencingToken: mark });
  await ns.api.createClaim("f", { lockName: "revision" });
  const lock = await ns.api.waitForLock("revision", "Ready=False FencingTokenRegressed",
    (l) => l.status?.conditions?.some((c) => c.type === "Ready" && c.reason === "FencingTokenRegressed") ?? false);
  assert.match(lock.status!.conditions!.find((c) => c.type === "Ready")!.message, new RegExp(`not above the highest this lock handed out \\(${mark}\\)`));
  // The lock's status is written before its claims'; the claim's first status follows.
  const f = await ns.api.waitForClaim("f", "has a phase", (c) => c.status?.phase !== undefined);
  assert.equal(f.status?.phase, "Pending", "never Granted with a token at or below the mark");
  assert.equal(lock.status?.highestFencingToken, mark, "the mark never goes down");
});

/** A merge patch of the lock's status, as another writer (or a restore) would leave it. */
async function patchLockStatus(name: string, status: Record<string, unknown>): Promise<void> {
  await kubeConfig().makeApiClient(k8s.CustomObjectsApi).patchNamespacedCustomObjectStatus(
    { group: GROUP, version: VERSION, plural: LOCK_PLURAL, namespace: ns.namespace, name, body: { status } },
    k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
  );
}
