/**
 * A deleted lock: the lock reconciler has its backend forget the key's state (LockBackend.forget) after the
 * holds are released and before the lock's finalizer goes; a forget that fails never keeps the lock.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { RELEASE_FINALIZER, type DistributedLock } from "../../src/api/types";
import type { LockBackend } from "../../src/backends/backend";
import { BackendRegistry } from "../../src/backends/registry";
import type { OperatorContext } from "../../src/controllers/context";
import { LockReconciler } from "../../src/controllers/lock-reconciler";
import { createLogger } from "../../src/log";
import { FakeClock } from "../../src/runtime/clock";

/** Reconciles deleted lock ns/item once on a backend whose forget is `forget`; the calls, in order. */
async function deleteLock(forget: (key: string) => Promise<boolean>): Promise<string[]> {
  const calls: string[] = [];
  const lock: DistributedLock = {
    apiVersion: "kubelock.io/v1alpha1", kind: "DistributedLock",
    metadata: { name: "item", namespace: "ns", uid: "u", deletionTimestamp: new Date(0).toISOString(), finalizers: [RELEASE_FINALIZER] },
    spec: { backend: "stub" },
  } as DistributedLock;
  const backend = {
    name: "stub",
    forget: async (key: string) => {
      calls.push(`forget ${key}`);
      return forget(key);
    },
    queueState: async () => ({ holders: [], waiting: [] }),
    watch: () => () => undefined,
    close: async () => undefined,
  } as unknown as LockBackend;
  const backends = new BackendRegistry();
  backends.add(backend);
  const ctx = {
    caches: {
      locks: { get: () => lock, observe: () => undefined },
      claims: { byIndex: () => [], get: () => undefined, observe: () => undefined },
    },
    client: {
      setFinalizers: async (_plural: string, meta: { name?: string }, finalizers: string[]) => void calls.push(`finalizers of ${meta.name}: [${finalizers.join(",")}]`),
    },
    backends,
    defaultBackend: "stub",
    clusterName: "",
    clock: new FakeClock(1_000_000),
    log: createLogger("debug", {}, (line) => {
      const { level, msg } = JSON.parse(line) as { level: string; msg: string };
      if (/backend state/.test(msg)) calls.push(`${level}: ${msg}`);
      return true;
    }),
    enqueueLock: () => undefined,
  } as unknown as OperatorContext;
  await new LockReconciler(ctx).reconcile("ns/item");
  return calls;
}

const FINALIZER_GONE = "finalizers of item: []";

test("a deleted lock's key is forgotten in its backend, then its finalizer goes", async () => {
  assert.deepEqual(await deleteLock(async () => true), ["forget ns/item", "debug: removed the deleted lock's backend state", FINALIZER_GONE]);
});

test("a forget that fails or removes nothing does not keep the deleted lock", async () => {
  assert.deepEqual(await deleteLock(async () => false),
    ["forget ns/item", "debug: kept the deleted lock's backend state (in use, or none)", FINALIZER_GONE]);
  assert.deepEqual(await deleteLock(async () => Promise.reject(new Error("server refused"))),
    ["forget ns/item", "info: could not remove the deleted lock's backend state; it stays", FINALIZER_GONE]);
});
