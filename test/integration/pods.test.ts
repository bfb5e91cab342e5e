/** Pods ask by annotation: the operator creates their claims, owned by them, collected with them. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { LOCK_ANNOTATION, PRIORITY_ANNOTATION } from "../../src/api/types";
import { eventually } from "../support/env";
import { useOperatorNamespace } from "../support/operator";

const env = useOperatorNamespace("pods");

async function annotatedPod(name: string, lock: string, priority?: string): Promise<string> {
  const annotations: Record<string, string> = { [LOCK_ANNOTATION]: lock };
  if (priority !== undefined) annotations[PRIORITY_ANNOTATION] = priority;
  const pod = await env.api.core.createNamespacedPod({
    namespace: env.namespace,
    body: { metadata: { name, annotations }, spec: { containers: [{ name: "main", image: "busybox" }] } },
  });
  return pod.metadata!.uid!;
}

test("pod created → claim owned by it → granted → pod deleted → claim collected → next granted", async () => {
  await env.api.createLock("migration");
  const firstUid = await annotatedPod("migrate-1", "migration");
  const claim = await env.api.waitForPhase("migrate-1", "Granted");
  assert.equal(claim.spec.podName, "migrate-1");
  assert.equal(claim.spec.lockName, "migration");
  assert.deepEqual(claim.metadata.ownerReferences?.map((o) => [o.kind, o.name, o.uid]), [["Pod", "migrate-1", firstUid]]);
  assert.equal(claim.status?.holderIdentity, "migrate-1");

  await annotatedPod("migrate-2", "migration", "5");
  const waiting = await env.api.waitForPhase("migrate-2", "Pending");
  assert.equal(waiting.spec.priority, 5, "priority comes from the annotation");
  assert.equal(waiting.status?.position, 1);

  await env.api.core.deleteNamespacedPod({ name: "migrate-1", namespace: env.namespace, gracePeriodSeconds: 0 });
  await eventually("claim migrate-1 garbage-collected", async () => ((await env.api.getClaim("migrate-1")) ? undefined : true), 60_000);
  await env.api.waitForPhase("migrate-2", "Granted");
});

test("a pod whose priority annotation is not a number gets a Warning event and no claim", async () => {
  await env.api.createLock("strict");
  await annotatedPod("bad-priority", "strict", "high");
  const event = await eventually("InvalidPriority event", async () => {
    const events = await env.api.core.listNamespacedEvent({ namespace: env.namespace, fieldSelector: "involvedObject.name=bad-priority" });
    return events.items.find((e) => e.reason === "InvalidPriority");
  });
  assert.match(event.message ?? "", /kubelock.io\/priority="high" is not an integer/);
  assert.equal(await env.api.getClaim("bad-priority"), undefined);
});
