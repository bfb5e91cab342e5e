/**
 * examples/ applied as written on the real node (each in a fresh namespace, only the kubelock image
 * replaced by the built one): what their workloads do, as the kubelet ran them (their logs, their
 * containers' start and finish times), shows the mutual exclusion. (b) needs two clusters sharing a
 * Redis: multicluster-cronjob.test.ts runs it.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import type * as k8s from "@kubernetes/client-node";
import { createNamespace, eventually, kubectl } from "../support/env";
import { Api } from "../support/operator";
import { assertOperatorNeverForbidden, core, deployOperator, exampleManifest, ok } from "./support";

/** Applies examples/`file` in a fresh namespace with only `image: kubelock:0.1.0` replaced; returns the namespace. */
async function applyExample(file: string): Promise<{ namespace: string; api: Api }> {
  await deployOperator();
  const namespace = await createNamespace("example");
  await ok(kubectl(["apply", "-n", namespace, "-f", "-"], { input: exampleManifest(file) }));
  return { namespace, api: new Api(namespace) };
}

const podsOf = async (namespace: string, selector: string) =>
  (await core().listNamespacedPod({ namespace, labelSelector: selector })).items;

/** A container's run as the kubelet reports it: [startedAt, finishedAt] (finished: undefined while running). */
function runOf(pod: k8s.V1Pod, container: string): { start: number; end?: number } | undefined {
  const state = pod.status?.containerStatuses?.find((c) => c.name === container)?.state;
  if (state?.running) return { start: Date.parse(String(state.running.startedAt)) };
  if (state?.terminated) return { start: Date.parse(String(state.terminated.startedAt)), end: Date.parse(String(state.terminated.finishedAt)) };
  return undefined;
}

after(() => assertOperatorNeverForbidden());

test("(a) job-db-migration: the 5 pods migrate one at a time, each with its own larger token", async () => {
  const { namespace, api } = await applyExample("job-db-migration.yaml");
  await ok(kubectl(["wait", "-n", namespace, "--for=condition=Complete", "job/migrate", "--timeout=300s"]));
  const pods = await podsOf(namespace, "job-name=migrate");
  assert.equal(pods.length, 5);
  const runs = await Promise.all(pods.map(async (pod) => {
    const name = pod.metadata!.name!;
    const logs = await ok(kubectl(["logs", "-n", namespace, name, "-c", "migrate"]));
    const token = Number(/migrating with fencing token (\d+)/.exec(logs)?.[1]);
    assert.ok(token > 0, `${name} logged no token: ${logs}`);
    const claim = await api.waitForPhase(name, "Released", 60_000);
    assert.equal(claim.status?.fencingToken, String(token));
    return { name, token, ...runOf(pod, "migrate")! };
  }));
  runs.sort((x, y) => x.start - y.start);
  for (let i = 1; i < runs.length; i++) {
    const [prev, next] = [runs[i - 1], runs[i]];
    assert.ok(next.start >= prev.end!, `${next.name} started before ${prev.name} finished`);
    assert.ok(next.token > prev.token, `${next.name} ran with token ${next.token} after ${prev.token}`);
  }
});

test("(c) flash-sale: the item's claim holds with no pod, then claim and lock go", async () => {
  const { api } = await applyExample("flash-sale.yaml");
  await api.waitForPhase("item-10042-order-7781", "Granted", 60_000);
  await api.deleteClaim("item-10042-order-7781");
  await api.deleteLock("item-10042");
  await eventually("the claim gone", async () => ((await api.getClaim("item-10042-order-7781")) ? undefined : true), 60_000);
});

test("(d) semaphore-warehouse: 3 loaders run, 3 wait gated; a loader gone lets the next one in", async () => {
  const { namespace, api } = await applyExample("semaphore-warehouse.yaml");
  const running = async () => (await podsOf(namespace, "app=loader")).filter((p) => runOf(p, "load") && !runOf(p, "load")!.end);
  const three = await eventually("3 loaders running, 3 gated", async () => {
    const pods = await podsOf(namespace, "app=loader");
    const gated = pods.filter((p) => p.spec?.schedulingGates?.length);
    const up = await running();
    assert.ok(up.length <= 3, `${up.length} loaders ran at once`);
    return pods.length === 6 && gated.length === 3 && up.length === 3 ? up : undefined;
  }, 120_000);
  // One loader leaves: its claim goes with it, a waiting one is granted and runs (its replacement waits).
  await core().deleteNamespacedPod({ name: three[0].metadata!.name!, namespace, gracePeriodSeconds: 0 });
  await eventually("another loader running", async () => {
    const up = await running();
    assert.ok(up.length <= 3, `${up.length} loaders ran at once`);
    return up.length === 3 && !up.some((p) => p.metadata!.name === three[0].metadata!.name) &&
      up.filter((p) => three.some((t) => t.metadata!.name === p.metadata!.name)).length === 2 ? true : undefined;
  }, 120_000);
  const lock = await api.waitForLock("warehouse-load", "3 holders, 3 waiting", (l) => l.status?.holders?.length === 3 && l.status?.waiting === 3, 60_000);
  assert.equal(lock.status?.holders?.length, 3);
});

test("(e) scheduling-gate: trainer-2 is placed only once trainer-1 is gone", async () => {
  const { namespace, api } = await applyExample("scheduling-gate.yaml");
  const pod = (name: string) => core().readNamespacedPod({ name, namespace });
  const [first, second] = await eventually("one trainer running", async () => {
    const [one, two] = [await pod("trainer-1"), await pod("trainer-2")];
    if (runOf(one, "train") && !two.spec?.nodeName) return [one, two];
    if (runOf(two, "train") && !one.spec?.nodeName) return [two, one];
    return undefined;
  }, 120_000);
  const [firstName, secondName] = [first.metadata!.name!, second.metadata!.name!];
  await api.waitForPhase(secondName, "Pending", 30_000);
  assert.equal((await pod(secondName)).spec?.nodeName, undefined, `${secondName} placed while ${firstName} holds`);
  assert.match(await ok(kubectl(["logs", "-n", namespace, firstName])), /training/);

  await core().deleteNamespacedPod({ name: firstName, namespace, gracePeriodSeconds: 0 });
  await eventually(`${firstName} gone`, async () => (await core().listNamespacedPod({ namespace })).items.some((p) => p.metadata?.name === firstName) ? undefined : true, 60_000);
  const placed = await eventually(`${secondName} running`, async () => {
    const p = await pod(secondName);
    return runOf(p, "train") ? p : undefined;
  }, 120_000);
  assert.equal(placed.spec?.nodeName, process.env.KUBELOCK_TEST_NODE);
  assert.equal((await api.getClaim(secondName))?.status?.phase, "Granted");
});
