/**
 * The kubelock.io/lock scheduling gate on the real node: pods that ask for a lock by annotation stay
 * Pending (SchedulingGated) while it is held elsewhere; once granted, the operator lifts the gate and
 * the real scheduler places them, one holder at a time.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type * as k8s from "@kubernetes/client-node";
import { createNamespace, eventually, kubectl } from "../support/env";
import { Api } from "../support/operator";
import { assertOperatorNeverForbidden, core, deployOperator, ok } from "./support";

let namespace: string;
let api: Api;

before(async () => {
  await deployOperator();
  namespace = await createNamespace("gate");
  api = new Api(namespace);
});

const gatedPod = (name: string) => `apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  annotations: { kubelock.io/lock: gpu-slot }
spec:
  schedulingGates: [{ name: kubelock.io/lock }]
  restartPolicy: Never
  containers:
    - { name: train, image: busybox:1.36, command: [sh, -c, 'echo training; sleep 2'] }
`;

const pod = (name: string) => core().readNamespacedPod({ name, namespace });
const scheduled = (p: k8s.V1Pod) => p.status?.conditions?.find((c) => c.type === "PodScheduled");

function assertGated(p: k8s.V1Pod): void {
  assert.equal(p.status?.phase, "Pending");
  assert.equal(p.spec?.nodeName, undefined, `${p.metadata?.name} was placed while gated`);
  assert.deepEqual(p.spec?.schedulingGates?.map((g) => g.name), ["kubelock.io/lock"]);
  assert.equal(scheduled(p)?.reason, "SchedulingGated");
}

after(() => assertOperatorNeverForbidden());

test("gated pods stay SchedulingGated until granted, then the scheduler places them one holder at a time", async () => {
  await api.createLock("gpu-slot", { maxHolders: 1 });
  await api.createClaim("blocker", { lockName: "gpu-slot" });
  await api.waitForPhase("blocker", "Granted", 60_000);
  for (const name of ["trainer-1", "trainer-2"]) await ok(kubectl(["apply", "-n", namespace, "-f", "-"], { input: gatedPod(name) }));

  // The operator has seen both pods (their claims wait behind the blocker); neither is placed.
  const claimOf = async (podName: string) => (await api.listClaims()).find((c) => c.spec.podName === podName);
  for (const name of ["trainer-1", "trainer-2"]) {
    await eventually(`${name}'s claim Pending`, async () => ((await claimOf(name))?.status?.phase === "Pending" ? true : undefined), 60_000);
    assertGated(await pod(name));
  }

  await api.deleteClaim("blocker");
  const first = await eventually("one trainer granted and scheduled", async () => {
    for (const name of ["trainer-1", "trainer-2"]) {
      const p = await pod(name);
      if (scheduled(p)?.status === "True") return p;
    }
    return undefined;
  }, 60_000);
  const firstName = first.metadata!.name!;
  const secondName = firstName === "trainer-1" ? "trainer-2" : "trainer-1";
  assert.equal(first.spec?.nodeName, process.env.KUBELOCK_TEST_NODE);
  assert.equal((await claimOf(firstName))?.status?.phase, "Granted");
  assertGated(await pod(secondName)); // the first holds: the second is still gated

  // The first pod ends, its claim is released, and the second is granted, ungated and placed.
  const done = async (name: string) => eventually(`${name} Succeeded`, async () => {
    const p = await pod(name);
    return p.status?.phase === "Succeeded" ? p : undefined;
  }, 120_000);
  const firstDone = await done(firstName);
  const secondDone = await done(secondName);
  const finished = Date.parse(String(firstDone.status!.containerStatuses![0].state!.terminated!.finishedAt));
  const started = Date.parse(String(secondDone.status!.containerStatuses![0].state!.terminated!.startedAt));
  assert.ok(started >= finished, `${secondName} started at ${started}, before ${firstName} finished at ${finished}`);
  assert.equal(secondDone.spec?.nodeName, process.env.KUBELOCK_TEST_NODE);
  assert.equal((await claimOf(secondName))?.status?.phase, "Released");
});
