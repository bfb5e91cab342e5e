/** Every way a grant ends releases the lock, and the next claim is granted. */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { CLAIM_PLURAL, GROUP, RELEASE_ANNOTATION, VERSION } from "../../src/api/types";
import { createNamespace, eventually } from "../support/env";
import { Api, startOperator, type OperatorProcess } from "../support/operator";

let namespace: string;
let api: Api;
let operator: OperatorProcess;

before(async () => {
  namespace = await createNamespace("release");
  api = new Api(namespace);
  operator = await startOperator({ namespace });
});

after(async () => {
  await operator?.stop();
});

const granted = (name: string) => api.waitForPhase(name, "Granted");

function condition(claim: { status?: { conditions?: { type: string; reason: string; message: string }[] } }) {
  return claim.status?.conditions?.find((c) => c.type === "Granted");
}

async function pod(name: string): Promise<void> {
  await api.core.createNamespacedPod({
    namespace,
    body: { metadata: { name }, spec: { containers: [{ name: "main", image: "busybox" }] } },
  });
}

async function setPodPhase(name: string, phase: "Succeeded" | "Failed"): Promise<void> {
  await api.core.patchNamespacedPodStatus(
    { name, namespace, body: { status: { phase } } },
    k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
  );
}

/** A lock held by `holder` (created by `grant`) with `next` waiting; `end` must release it. */
async function releasesAndHandsOver(lock: string, grant: () => Promise<void>, end: () => Promise<void>, expect: { phase: string; reason: string }) {
  await api.createLock(lock);
  await grant();
  await granted(`${lock}-holder`);
  await api.createClaim(`${lock}-next`, { lockName: lock });
  await api.waitForPhase(`${lock}-next`, "Pending");
  await end();
  const next = await granted(`${lock}-next`);
  const holder = await api.getClaim(`${lock}-holder`);
  if (holder) {
    assert.equal(holder.status?.phase, expect.phase);
    assert.equal(condition(holder)?.reason, expect.reason);
    assert.ok(holder.status?.releaseTime, "releaseTime is set");
    assert.ok(BigInt(next.status!.fencingToken!) > BigInt(holder.status!.fencingToken!), "the next grant has a larger token");
  }
  const status = (await api.getLock(lock)).status;
  assert.deepEqual(status?.holders?.map((h) => h.claim), [`${lock}-next`]);
}

describe("release triggers", () => {
  test("claim deleted: the finalizer releases first, then the claim goes", async () => {
    await releasesAndHandsOver("deleted", () => api.createClaim("deleted-holder", { lockName: "deleted" }).then(() => undefined),
      async () => {
        await api.deleteClaim("deleted-holder");
        await eventually("claim gone", async () => ((await api.getClaim("deleted-holder")) ? undefined : true));
      }, { phase: "", reason: "" });
  });

  test("kubelock release annotation: phase Released", async () => {
    await releasesAndHandsOver("annotated", () => api.createClaim("annotated-holder", { lockName: "annotated" }).then(() => undefined),
      () => api.custom.patchNamespacedCustomObject(
        { group: GROUP, version: VERSION, namespace, plural: CLAIM_PLURAL, name: "annotated-holder", body: { metadata: { annotations: { [RELEASE_ANNOTATION]: "true" } } } },
        k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
      ).then(() => undefined),
      { phase: "Released", reason: "Released" });
  });

  for (const phase of ["Succeeded", "Failed"] as const) {
    test(`pod ${phase}: HolderTerminated`, async () => {
      const lock = `pod-${phase.toLowerCase()}`;
      await releasesAndHandsOver(lock, async () => {
        await pod(`${lock}-pod`);
        await api.createClaim(`${lock}-holder`, { lockName: lock, podName: `${lock}-pod` });
      }, () => setPodPhase(`${lock}-pod`, phase), { phase: "Released", reason: "HolderTerminated" });
      const holder = await api.getClaim(`${lock}-holder`);
      assert.equal(holder?.status?.holderIdentity, `${lock}-pod`, "the holder identity is the pod");
    });
  }

  test("pod deleted: HolderTerminated", async () => {
    await releasesAndHandsOver("podgone", async () => {
      await pod("podgone-pod");
      await api.createClaim("podgone-holder", { lockName: "podgone", podName: "podgone-pod" });
    }, () => api.core.deleteNamespacedPod({ name: "podgone-pod", namespace, gracePeriodSeconds: 0 }).then(() => undefined),
    { phase: "Released", reason: "HolderTerminated" });
  });

  test("heartbeat lease expires when renewTime stops moving; renewing keeps it", async () => {
    await api.createLock("heartbeat");
    await api.createClaim("heartbeat-holder", { lockName: "heartbeat", leaseDurationSeconds: 2 });
    await granted("heartbeat-holder");
    await api.createClaim("heartbeat-next", { lockName: "heartbeat" });
    // Renew for a while: the grant outlives its 2 s lease as long as renewTime moves.
    const until = Date.now() + 3500;
    while (Date.now() < until) {
      await api.custom.patchNamespacedCustomObject(
        { group: GROUP, version: VERSION, namespace, plural: CLAIM_PLURAL, name: "heartbeat-holder", body: { spec: { renewTime: new Date().toISOString() } } },
        k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
      );
      assert.equal((await api.getClaim("heartbeat-holder"))?.status?.phase, "Granted");
      await new Promise((r) => setTimeout(r, 500)); // the holder's heartbeat period
    }
    const expired = await api.waitForPhase("heartbeat-holder", "Expired", 10_000);
    assert.equal(condition(expired)?.reason, "LeaseExpired");
    await granted("heartbeat-next");
  });

  test("waitTimeoutSeconds: a waiting claim gives up with WaitTimeout", async () => {
    await api.createLock("impatient");
    await api.createClaim("impatient-holder", { lockName: "impatient" });
    await granted("impatient-holder");
    await api.createClaim("impatient-waiter", { lockName: "impatient", waitTimeoutSeconds: 2 });
    const expired = await api.waitForPhase("impatient-waiter", "Expired", 10_000);
    assert.equal(condition(expired)?.reason, "WaitTimeout");
    await api.createClaim("impatient-later", { lockName: "impatient" });
    await api.deleteClaim("impatient-holder");
    await granted("impatient-later");
    assert.equal((await api.getClaim("impatient-waiter"))?.status?.phase, "Expired", "an expired claim is never granted");
  });

  test("lock deleted: every hold is released in the backend before the lock goes", async () => {
    await api.createLock("doomed", { maxHolders: 2 });
    await api.createClaim("doomed-a", { lockName: "doomed" });
    await api.createClaim("doomed-b", { lockName: "doomed" });
    await api.createClaim("doomed-c", { lockName: "doomed" });
    await granted("doomed-a");
    await granted("doomed-b");
    const coordination = api.kc.makeApiClient(k8s.CoordinationV1Api);
    const heldLeases = async () => (await coordination.listNamespacedLease({ namespace })).items
      .filter((l) => l.metadata?.name?.startsWith("kubelock-doomed-") && l.spec?.holderIdentity);
    assert.equal((await heldLeases()).length, 2);
    await api.deleteLock("doomed");
    for (const name of ["doomed-a", "doomed-b", "doomed-c"]) {
      const claim = await api.waitForPhase(name, "Released");
      assert.equal(condition(claim)?.reason, "LockNotFound");
    }
    await eventually("lock gone", async () => (await api.getLock("doomed").then(() => false, () => true)) || undefined);
    assert.equal((await heldLeases()).length, 0, "no backend hold is left");
  });
});
