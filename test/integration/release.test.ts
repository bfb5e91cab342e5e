/** Every way a grant ends releases the lock, and the next claim is granted. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { CLAIM_PLURAL, GROUP, RELEASE_ANNOTATION, VERSION } from "../../src/api/types";
import { eventually } from "../support/env";
import { useOperatorNamespace } from "../support/operator";

const env = useOperatorNamespace("release");

const granted = (name: string) => env.api.waitForPhase(name, "Granted");

function condition(claim: { status?: { conditions?: { type: string; reason: string; message: string }[] } }) {
  return claim.status?.conditions?.find((c) => c.type === "Granted");
}

async function pod(name: string): Promise<void> {
  await env.api.core.createNamespacedPod({
    namespace: env.namespace,
    body: { metadata: { name }, spec: { containers: [{ name: "main", image: "busybox" }] } },
  });
}

async function setPodPhase(name: string, phase: "Succeeded" | "Failed"): Promise<void> {
  await env.api.core.patchNamespacedPodStatus(
    { name, namespace: env.namespace, body: { status: { phase } } },
    k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
  );
}

/** A lock held by `holder` (created by `grant`) with `next` waiting; `end` must release it. */
async function releasesAndHandsOver(lock: string, grant: () => Promise<void>, end: () => Promise<void>, expect: { phase: string; reason: string }) {
  await env.api.createLock(lock);
  await grant();
  await granted(`${lock}-holder`);
  await env.api.createClaim(`${lock}-next`, { lockName: lock });
  await env.api.waitForPhase(`${lock}-next`, "Pending");
  await end();
  const next = await granted(`${lock}-next`);
  const holder = await env.api.getClaim(`${lock}-holder`);
  if (holder) {
    assert.equal(holder.status?.phase, expect.phase);
    assert.equal(condition(holder)?.reason, expect.reason);
    assert.ok(holder.status?.releaseTime, "releaseTime is set");
    assert.ok(BigInt(next.status!.fencingToken!) > BigInt(holder.status!.fencingToken!), "the next grant has a larger token");
  }
  await env.api.waitForLock(lock, `held by ${lock}-next`, (l) => JSON.stringify(l.status?.holders?.map((h) => h.claim)) === JSON.stringify([`${lock}-next`]));
}

describe("release triggers", () => {
  test("claim deleted: it goes at once (no finalizer), and its hold is released on the watch's word", async () => {
    await releasesAndHandsOver("deleted", () => env.api.createClaim("deleted-holder", { lockName: "deleted" }).then(() => undefined),
      async () => {
        await env.api.deleteClaim("deleted-holder");
        await eventually("claim gone", async () => ((await env.api.getClaim("deleted-holder")) ? undefined : true));
      }, { phase: "", reason: "" });
  });

  test("kubelock release annotation: phase Released", async () => {
    await releasesAndHandsOver("annotated", () => env.api.createClaim("annotated-holder", { lockName: "annotated" }).then(() => undefined),
      () => env.api.custom.patchNamespacedCustomObject(
        { group: GROUP, version: VERSION, namespace: env.namespace, plural: CLAIM_PLURAL, name: "annotated-holder", body: { metadata: { annotations: { [RELEASE_ANNOTATION]: "true" } } } },
        k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
      ).then(() => undefined),
      { phase: "Released", reason: "Released" });
  });

  for (const phase of ["Succeeded", "Failed"] as const) {
    test(`pod ${phase}: HolderTerminated`, async () => {
      const lock = `pod-${phase.toLowerCase()}`;
      await releasesAndHandsOver(lock, async () => {
        await pod(`${lock}-pod`);
        await env.api.createClaim(`${lock}-holder`, { lockName: lock, podName: `${lock}-pod` });
      }, () => setPodPhase(`${lock}-pod`, phase), { phase: "Released", reason: "HolderTerminated" });
      const holder = await env.api.getClaim(`${lock}-holder`);
      assert.equal(holder?.status?.holderIdentity, `${lock}-pod`, "the holder identity is the pod");
    });
  }

  test("pod deleted: HolderTerminated", async () => {
    await releasesAndHandsOver("podgone", async () => {
      await pod("podgone-pod");
      await env.api.createClaim("podgone-holder", { lockName: "podgone", podName: "podgone-pod" });
    }, () => env.api.core.deleteNamespacedPod({ name: "podgone-pod", namespace: env.namespace, gracePeriodSeconds: 0 }).then(() => undefined),
    { phase: "Released", reason: "HolderTerminated" });
  });

  test("heartbeat lease expires when renewTime stops moving; renewing keeps it", async () => {
    // The expired hold lapses one lock lease after its claim expired (lock-delay) before the next claim is granted:
    // a 5 s lease keeps that well inside the wait for the grant (the default 30 s lease left it milliseconds).
    await env.api.createLock("heartbeat", { leaseDurationSeconds: 5 });
    await env.api.createClaim("heartbeat-holder", { lockName: "heartbeat", leaseDurationSeconds: 2 });
    await granted("heartbeat-holder");
    await env.api.createClaim("heartbeat-next", { lockName: "heartbeat" });
    // Renew for a while: the grant outlives its 2 s lease as long as renewTime moves.
    const until = Date.now() + 3500;
    while (Date.now() < until) {
      await env.api.custom.patchNamespacedCustomObject(
        { group: GROUP, version: VERSION, namespace: env.namespace, plural: CLAIM_PLURAL, name: "heartbeat-holder", body: { spec: { renewTime: new Date().toISOString() } } },
        k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
      );
      assert.equal((await env.api.getClaim("heartbeat-holder"))?.status?.phase, "Granted");
      await new Promise((r) => setTimeout(r, 500)); // the holder's heartbeat period
    }
    const expired = await env.api.waitForPhase("heartbeat-holder", "Expired", 10_000);
    assert.equal(condition(expired)?.reason, "LeaseExpired");
    await granted("heartbeat-next");
  });

  test("waitTimeoutSeconds: a waiting claim gives up with WaitTimeout", async () => {
    await env.api.createLock("impatient");
    await env.api.createClaim("impatient-holder", { lockName: "impatient" });
    await granted("impatient-holder");
    await env.api.createClaim("impatient-waiter", { lockName: "impatient", waitTimeoutSeconds: 2 });
    const expired = await env.api.waitForPhase("impatient-waiter", "Expired", 10_000);
    assert.equal(condition(expired)?.reason, "WaitTimeout");
    await env.api.createClaim("impatient-later", { lockName: "impatient" });
    await env.api.deleteClaim("impatient-holder");
    await granted("impatient-later");
    assert.equal((await env.api.getClaim("impatient-waiter"))?.status?.phase, "Expired", "an expired claim is never granted");
  });

  test("lock deleted: every hold is released in the backend before the lock goes", async () => {
    await env.api.createLock("doomed", { maxHolders: 2 });
    await env.api.createClaim("doomed-a", { lockName: "doomed" });
    await env.api.createClaim("doomed-b", { lockName: "doomed" });
    await env.api.createClaim("doomed-c", { lockName: "doomed" });
    await granted("doomed-a");
    await granted("doomed-b");
    const coordination = env.api.kc.makeApiClient(k8s.CoordinationV1Api);
    const heldLeases = async () => (await coordination.listNamespacedLease({ namespace: env.namespace })).items
      .filter((l) => l.metadata?.name?.startsWith("kubelock-doomed-") && l.spec?.holderIdentity);
    assert.equal((await heldLeases()).length, 2);
    await env.api.deleteLock("doomed");
    for (const name of ["doomed-a", "doomed-b", "doomed-c"]) {
      const claim = await env.api.waitForPhase(name, "Released");
      assert.equal(condition(claim)?.reason, "LockNotFound");
    }
    await eventually("lock gone", async () => (await env.api.getLock("doomed").then(() => false, () => true)) || undefined);
    assert.equal((await heldLeases()).length, 0, "no backend hold is left");
  });
});
