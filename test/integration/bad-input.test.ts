/** Bad input gets a clear condition and message, and never stops the operator. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { eventually, kubectl } from "../support/env";
import { useOperatorNamespace } from "../support/operator";

const env = useOperatorNamespace("bad");

const grantedCondition = (c: { status?: { conditions?: { type: string; reason: string; message: string }[] } }) =>
  c.status?.conditions?.find((x) => x.type === "Granted");

test("a claim naming a missing lock says LockNotFound, and is granted once the lock appears", async () => {
  await env.api.createClaim("early", { lockName: "later" });
  const claim = await env.api.waitForClaim("early", "LockNotFound", (c) => grantedCondition(c)?.reason === "LockNotFound");
  assert.equal(claim.status?.phase, "Pending");
  assert.match(grantedCondition(claim)!.message, /DistributedLock later not found/);
  await env.api.createLock("later");
  await env.api.waitForPhase("early", "Granted");
});

test("a claim naming a missing pod waits with a message, and joins the queue once the pod exists", async () => {
  await env.api.createLock("podlock");
  await env.api.createClaim("orphan", { lockName: "podlock", podName: "ghost" });
  const claim = await env.api.waitForClaim("orphan", "InvalidSpec", (c) => grantedCondition(c)?.reason === "InvalidSpec");
  assert.match(grantedCondition(claim)!.message, /pod ghost not found/);
  assert.equal(claim.status?.phase, "Pending");
  await env.api.core.createNamespacedPod({ namespace: env.namespace, body: { metadata: { name: "ghost" }, spec: { containers: [{ name: "c", image: "busybox" }] } } });
  await env.api.waitForPhase("orphan", "Granted");
});

test("an unknown backend name makes the lock Ready=False and grants nothing", async () => {
  await env.api.createLock("nowhere", { backend: "does-not-exist" });
  await env.api.createClaim("hopeful", { lockName: "nowhere" });
  const lock = await eventually("Ready=False", async () => {
    const l = await env.api.getLock("nowhere");
    return l.status?.conditions?.find((c) => c.type === "Ready" && c.status === "False") ? l : undefined;
  });
  const ready = lock.status!.conditions!.find((c) => c.type === "Ready")!;
  assert.equal(ready.reason, "UnknownBackend");
  assert.match(ready.message, /unknown backend "does-not-exist"; configured: kubernetes/);
  const claim = await env.api.waitForClaim("hopeful", "BackendUnavailable", (c) => grantedCondition(c)?.reason === "BackendUnavailable");
  assert.equal(claim.status?.phase, "Pending");

  // The operator is still at work: another lock is granted as usual.
  await env.api.createLock("fine");
  await env.api.createClaim("fine-claim", { lockName: "fine" });
  await env.api.waitForPhase("fine-claim", "Granted");
});

test("changing lockName after creation is rejected by the API server", async () => {
  await env.api.createLock("fixed");
  await env.api.createClaim("steady", { lockName: "fixed" });
  const result = await kubectl(["patch", "-n", env.namespace, "lockclaim/steady", "--type=merge", "-p", '{"spec":{"lockName":"other"}}']);
  assert.notEqual(result.code, 0);
  assert.match(result.stderr, /spec.lockName.*lockName is immutable/);
  assert.equal((await env.api.getClaim("steady"))?.spec.lockName, "fixed");
});
