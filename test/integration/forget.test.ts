/**
 * Per-item locks leave nothing behind: once a deleted lock's holds are released, the operator has its backend
 * remove the key's state (LockBackend.forget: Redis's keys; the Kubernetes backend keeps nothing per key once its
 * holds are released, its tokens being the API server's resourceVersions, so it needs no forget). A lock
 * created again with the same name starts with no status, so no high-water mark: its tokens are still above
 * the old lock's because the backend alone keeps them increasing.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import Redis from "ioredis";
import { KEY_LABEL } from "../../src/backends/kubernetes/backend";
import { eventually, kubeConfig, testEnv } from "../support/env";
import { useOperatorNamespace } from "../support/operator";

const PREFIX = "forget-test";
const ns = useOperatorNamespace("forget", {
  config: `defaultBackend: kubernetes
backends:
  - {name: redis, type: redis, redis: {url: "${testEnv.redisUrl}", keyPrefix: ${PREFIX}}}
`,
});
let redis: Redis;

before(() => {
  redis = new Redis(testEnv.redisUrl);
});
after(() => redis?.disconnect());

/** Claim `claim` on `lock` until Granted; its token. */
async function grantedToken(lock: string, claim: string): Promise<bigint> {
  await ns.api.createClaim(claim, { lockName: lock });
  return BigInt((await ns.api.waitForPhase(claim, "Granted")).status!.fencingToken!);
}

/** Deletes the claim, then the lock, and waits until the lock is gone (its finalizer let go). */
async function deleteBoth(lock: string, claim: string): Promise<void> {
  await ns.api.deleteClaim(claim);
  await ns.api.deleteLock(lock);
  await eventually(`lock ${lock} gone`, () => ns.api.getLock(lock).then(() => undefined, (err: { code?: number }) => {
    if (err.code === 404) return true;
    throw err;
  }));
}

async function leaseNames(selector?: string): Promise<string[]> {
  const leases = kubeConfig().makeApiClient(k8s.CoordinationV1Api);
  const list = await leases.listNamespacedLease({ namespace: ns.namespace, labelSelector: selector });
  return list.items.map((l) => l.metadata!.name!).sort();
}

/** What each backend keeps for a lock: its objects' or keys' names. */
const stateOf = {
  kubernetes: (lock: string) => leaseNames(`${KEY_LABEL}=${lock}`),
  redis: (lock: string) => redis.keys(`${PREFIX}:{${ns.namespace}/${lock}}:*`),
};

for (const backend of ["kubernetes", "redis"] as const) {
  test(`${backend}: a deleted lock leaves no per-key state; the same lock again gets larger tokens`, async () => {
    const lock = `item-${backend}`;
    await ns.api.createLock(lock, { backend });
    const before = await grantedToken(lock, "first");
    assert.notDeepEqual(await stateOf[backend](lock), [], `the ${backend} backend keeps state for ${lock} while it exists`);
    await deleteBoth(lock, "first");
    assert.deepEqual(await stateOf[backend](lock), [], `the ${backend} backend's state for ${lock} is gone`);
    if (backend === "kubernetes") assert.deepEqual(await leaseNames(), [], "a Lease is left in the namespace");

    await ns.api.createLock(lock, { backend });
    const after = await grantedToken(lock, "second");
    assert.ok(after > before, `token ${after} after the lock was deleted and created again, ${before} before`);
    await deleteBoth(lock, "second");
  });
}
