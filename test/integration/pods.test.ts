/**
 * Pods ask by annotation: the operator creates their claims, owned by them, collected with them, and
 * lifts the scheduling gate of the pod its claim was granted to (no kubelet here: only spec.schedulingGates is seen).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { CLAIM_PLURAL, GROUP, LOCK_ANNOTATION, PRIORITY_ANNOTATION, SCHEDULING_GATE, VERSION } from "../../src/api/types";
import { claimPodUid } from "../../src/grant/claim-facts";
import { createNamespace, eventually } from "../support/env";
import { Api, startOperator, useOperatorNamespace, type OperatorProcess } from "../support/operator";

const env = useOperatorNamespace("pods");

async function annotatedPod(name: string, lock: string, options: { priority?: string; gated?: boolean; api?: Api } = {}): Promise<string> {
  const { priority, gated = false, api = env.api } = options;
  const annotations: Record<string, string> = { [LOCK_ANNOTATION]: lock };
  if (priority !== undefined) annotations[PRIORITY_ANNOTATION] = priority;
  const pod = await api.core.createNamespacedPod({
    namespace: api.namespace,
    body: {
      metadata: { name, annotations },
      spec: { containers: [{ name: "main", image: "busybox" }], schedulingGates: gated ? [{ name: SCHEDULING_GATE }] : undefined },
    },
  });
  return pod.metadata!.uid!;
}

function patchClaim(api: Api, name: string, body: object, strategy: k8s.PatchStrategy): Promise<unknown> {
  return api.custom.patchNamespacedCustomObject({ group: GROUP, version: VERSION, plural: CLAIM_PLURAL, namespace: api.namespace, name, body },
    k8s.setHeaderOptions("Content-Type", strategy));
}

/** The pod's scheduling gate names, or undefined when no pod has that name. */
async function gatesOf(api: Api, name: string): Promise<{ uid: string; gates: string[] } | undefined> {
  try {
    const pod = await api.core.readNamespacedPod({ name, namespace: api.namespace });
    return { uid: pod.metadata!.uid!, gates: (pod.spec?.schedulingGates ?? []).map((g) => g.name) };
  } catch (err) {
    if (err instanceof k8s.ApiException && err.code === 404) return undefined;
    throw err;
  }
}

test("pod created → claim owned by it → granted → pod deleted → claim collected → next granted", async () => {
  await env.api.createLock("migration");
  const firstUid = await annotatedPod("migrate-1", "migration");
  const claim = await env.api.waitForPhase("migrate-1", "Granted");
  assert.equal(claim.spec.podName, "migrate-1");
  assert.equal(claim.spec.lockName, "migration");
  assert.deepEqual(claim.metadata.ownerReferences?.map((o) => [o.kind, o.name, o.uid]), [["Pod", "migrate-1", firstUid]]);
  assert.equal(claim.status?.holderIdentity, "migrate-1");

  await annotatedPod("migrate-2", "migration", { priority: "5" });
  const waiting = await env.api.waitForPhase("migrate-2", "Pending");
  assert.equal(waiting.spec.priority, 5, "priority comes from the annotation");
  assert.equal(waiting.status?.position, 1);

  await env.api.core.deleteNamespacedPod({ name: "migrate-1", namespace: env.namespace, gracePeriodSeconds: 0 });
  await eventually("claim migrate-1 garbage-collected", async () => ((await env.api.getClaim("migrate-1")) ? undefined : true), 60_000);
  await env.api.waitForPhase("migrate-2", "Granted");
});

test("a pod whose priority annotation is not a number gets a Warning event and no claim", async () => {
  await env.api.createLock("strict");
  await annotatedPod("bad-priority", "strict", { priority: "high" });
  const event = await eventually("InvalidPriority event", async () => {
    const events = await env.api.core.listNamespacedEvent({ namespace: env.namespace, fieldSelector: "involvedObject.name=bad-priority" });
    return events.items.find((e) => e.reason === "InvalidPriority");
  });
  assert.match(event.message ?? "", /kubelock.io\/priority="high" is not an integer/);
  assert.equal(await env.api.getClaim("bad-priority"), undefined);
});

test("the gate is lifted only from the pod the granted claim records: a pod recreated under its name stays gated", async () => {
  const namespace = await createNamespace("pods-uid");
  const api = new Api(namespace);
  let operator: OperatorProcess | undefined = await startOperator({ namespace });
  const KEEP = "test.kubelock.io/keep";
  try {
    await api.createLock("db");
    const firstUid = await annotatedPod("worker", "db", { gated: true, api });
    const held = await api.waitForPhase("worker", "Granted");
    assert.equal(claimPodUid(held), firstUid);
    await eventually("the first pod ungated", async () => ((await gatesOf(api, "worker"))?.gates.length === 0 ? true : undefined));

    // While the operator is down, the pod is replaced by another of the same name; the claim of the
    // first still shows Granted. A finalizer of the test's keeps that claim until the test lets it go.
    await operator.stop();
    operator = undefined;
    await patchClaim(api, "worker", { metadata: { finalizers: [KEEP] } }, k8s.PatchStrategy.MergePatch);
    await api.core.deleteNamespacedPod({ name: "worker", namespace, gracePeriodSeconds: 0 });
    await eventually("the first pod gone", async () => ((await gatesOf(api, "worker")) ? undefined : true));
    const secondUid = await annotatedPod("worker", "db", { gated: true, api });
    const stale = (await api.getClaim("worker"))!;
    assert.equal(stale.status?.phase, "Granted", "the first pod's claim still holds");
    assert.equal(claimPodUid(stale), firstUid);

    operator = await startOperator({ namespace });
    // The operator ends the first pod's claim (its pod is gone): either it shows the grant over, or, when the
    // garbage collector deleted the claim first (a claim being deleted keeps its last status), the lock no longer
    // lists its hold. The newcomer never inherited the grant.
    await eventually("the first pod's claim ended", async () => {
      const c = await api.getClaim("worker");
      if (!c || c.metadata.uid !== held.metadata.uid) return undefined;
      if (c.status?.phase !== "Granted") return true;
      const holders = (await api.getLock("db")).status?.holders ?? [];
      return c.metadata.deletionTimestamp && !holders.some((h) => h.fencingToken === held.status!.fencingToken) ? true : undefined;
    });
    assert.deepEqual(await gatesOf(api, "worker"), { uid: secondUid, gates: [SCHEDULING_GATE] }, "the recreated pod is still gated");

    // Once the old claim is gone, the new pod gets a claim of its own, and only then its gate is lifted.
    // (The garbage collector deletes the claim of a deleted owner; deleted here too, in case it has not yet.)
    await api.deleteClaim("worker").catch((err) => assert.equal((err as { code?: number }).code, 404));
    await eventually("the test's finalizer removed", async () => {
      const old = await api.getClaim("worker");
      if (!old || old.metadata.uid !== held.metadata.uid || !old.metadata.finalizers?.includes(KEEP)) return true;
      const finalizers = old.metadata.finalizers.filter((f) => f !== KEEP);
      await patchClaim(api, "worker", { metadata: { resourceVersion: old.metadata.resourceVersion, finalizers } }, k8s.PatchStrategy.MergePatch);
      return true;
    });
    const own = await api.waitForClaim("worker", "of the second pod granted", (c) => claimPodUid(c) === secondUid && c.status?.phase === "Granted", 60_000);
    assert.ok(BigInt(own.status!.fencingToken!) > BigInt(held.status!.fencingToken!), "a new grant, with a greater token");
    await eventually("the second pod ungated", async () => ((await gatesOf(api, "worker"))?.gates.length === 0 ? true : undefined));
  } finally {
    await operator?.stop();
  }
});
