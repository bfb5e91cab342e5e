/**
 * The examples/ YAML sets, applied with the real kubectl to the real API server with the operator
 * running. There is no kubelet or scheduler here: where an example needs one, the test plays it
 * (runs the init container's `kubelock wait` as a local process with the pod's downward-API
 * environment, and marks the pod Succeeded when its work is done).
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { cliCommand } from "../support/cli-entry";
import { eventually, kubectl, run, testEnv } from "../support/env";
import { ClaimHistory, useOperatorNamespace } from "../support/operator";

const repoRoot = resolve(__dirname, "..", "..");
const example = (name: string) => join(repoRoot, "examples", name);

const env = useOperatorNamespace("examples");

async function apply(file: string): Promise<void> {
  const result = await kubectl(["apply", "-n", env.namespace, "-f", file]);
  assert.equal(result.code, 0, result.stderr);
}

const pods = async (selector: string) => (await env.api.core.listNamespacedPod({ namespace: env.namespace, labelSelector: selector })).items;

async function markSucceeded(name: string): Promise<void> {
  await env.api.core.patchNamespacedPodStatus({ name, namespace: env.namespace, body: { status: { phase: "Succeeded" } } },
    k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch));
}

test("(a) a Job of 5 pods whose init containers wait on db-migration take turns", async (t) => {
  const history = new ClaimHistory(env.namespace);
  await history.start();
  await apply(example("job-db-migration.yaml"));
  const jobPods = await eventually("5 job pods", async () => {
    const found = await pods("job-name=migrate");
    return found.length === 5 ? found : undefined;
  }, 60_000);
  // Play the kubelet: run every pod's init container at once, as a kubelet would.
  const tokenDir = mkdtempSync(join(tmpdir(), "kubelock-tokens-"));
  t.after(() => rmSync(tokenDir, { recursive: true, force: true }));
  const waits = jobPods.map((pod) => {
    const podEnv = { ...process.env, KUBECONFIG: testEnv.kubeconfig, POD_NAME: pod.metadata!.name!, POD_NAMESPACE: env.namespace, POD_UID: pod.metadata!.uid! };
    const tokenFile = join(tokenDir, pod.metadata!.uid!);
    return { pod: pod.metadata!.name!, tokenFile, result: run(process.execPath, [...cliCommand().args, "wait", "--lock", "db-migration", "--timeout", "2m", "--token-file", tokenFile], undefined, podEnv) };
  });
  // Each granted pod "runs its migration" and succeeds, which releases the lock to the next.
  const finished = new Set<string>();
  while (finished.size < 5) {
    const granted = (await env.api.listClaims()).filter((c) => c.status?.phase === "Granted" && !finished.has(c.metadata.name));
    assert.ok(granted.length <= 1, "never two migrations at once");
    for (const claim of granted) {
      const wait = waits.find((w) => w.pod === claim.metadata.name)!;
      const result = await wait.result;
      assert.equal(result.code, 0, result.stderr);
      assert.equal(readFileSync(wait.tokenFile, "utf8").trim(), claim.status?.fencingToken);
      await markSucceeded(claim.metadata.name);
      finished.add(claim.metadata.name);
    }
    if (granted.length === 0) await new Promise((r) => setTimeout(r, 100));
  }
  const replay = history.replay(new Set(waits.map((w) => w.pod)));
  history.stop();
  assert.equal(replay.grants.length, 5);
  assert.equal(replay.maxGranted, 1);
});

test("(c) flash sale: 200 per-item locks created, claimed and deleted at a high rate", async () => {
  const items = Array.from({ length: 200 }, (_, i) => `item-${10_000 + i}`);
  const started = Date.now();
  const forEachLimit = async (work: (item: string) => Promise<unknown>) => {
    let next = 0;
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < items.length) await work(items[next++]);
    }));
  };
  await forEachLimit(async (item) => {
    await env.api.createLock(item);
    await env.api.createClaim(`${item}-order`, { lockName: item });
  });
  await forEachLimit((item) => env.api.waitForPhase(`${item}-order`, "Granted", 120_000));
  await forEachLimit((item) => env.api.deleteClaim(`${item}-order`));
  await forEachLimit((item) => env.api.deleteLock(item));
  // Claims carry no finalizer and go at once; a lock goes once its finalizer released every hold on its key, the
  // holds of its claims deleted just before it included.
  const left = (objects: { metadata: { name: string } }[]) => objects.filter((o) => o.metadata.name.startsWith("item-")).length;
  await eventually("every lock and claim gone", async () => (left(await env.api.listClaims()) + left(await env.api.listLocks()) === 0 ? true : undefined), 120_000);
  const leases = (await env.api.kc.makeApiClient(k8s.CoordinationV1Api).listNamespacedLease({ namespace: env.namespace })).items;
  assert.equal(leases.filter((l) => l.metadata?.name?.startsWith("kubelock-item-") && l.spec?.holderIdentity).length, 0, "no hold left behind");
  console.log(`flash sale: 200 locks created, granted, released and deleted in ${((Date.now() - started) / 1000).toFixed(1)}s`);
  const oneItem = await kubectl(["apply", "--dry-run=server", "-n", env.namespace, "-f", example("flash-sale.yaml")]);
  assert.equal(oneItem.code, 0, oneItem.stderr);
});

test("(d) a semaphore of 3: six annotated pods, three hold at once", async () => {
  await apply(example("semaphore-warehouse.yaml"));
  const loaders = await eventually("6 loader pods", async () => {
    const found = await pods("app=loader");
    return found.length === 6 ? found : undefined;
  }, 60_000);
  await eventually("3 granted, 3 waiting", async () => {
    const claims = (await env.api.listClaims()).filter((c) => c.spec.lockName === "warehouse-load");
    const granted = claims.filter((c) => c.status?.phase === "Granted").length;
    const waiting = claims.filter((c) => c.status?.phase === "Pending").length;
    return granted === 3 && waiting === 3 ? true : undefined;
  });
  await env.api.waitForLock("warehouse-load", "3 holders, 3 waiting", (l) => l.status?.holders?.length === 3 && l.status?.waiting === 3);
  // Scaling down deletes pods; their claims go with them and the waiters move up.
  const scaled = await kubectl(["scale", "-n", env.namespace, "deployment/loader", "--replicas=0"]);
  assert.equal(scaled.code, 0, scaled.stderr);
  await eventually("claims collected with their pods", async () =>
    (await env.api.listClaims()).some((c) => c.spec.lockName === "warehouse-load") ? undefined : true, 90_000);
  assert.equal(loaders.length, 6);
});

test("(e) a scheduling-gated pod is ungated only when it holds the lock", async () => {
  await apply(example("scheduling-gate.yaml"));
  const gates = async (name: string) => (await env.api.core.readNamespacedPod({ name, namespace: env.namespace })).spec?.schedulingGates ?? [];
  await env.api.waitForPhase("trainer-1", "Granted");
  await eventually("trainer-1 ungated", async () => ((await gates("trainer-1")).length === 0 ? true : undefined));
  await env.api.waitForPhase("trainer-2", "Pending");
  assert.deepEqual((await gates("trainer-2")).map((g) => g.name), ["kubelock.io/lock"], "trainer-2 stays gated while it waits");
  await env.api.core.deleteNamespacedPod({ name: "trainer-1", namespace: env.namespace, gracePeriodSeconds: 0 });
  await env.api.waitForPhase("trainer-2", "Granted", 60_000);
  await eventually("trainer-2 ungated", async () => ((await gates("trainer-2")).length === 0 ? true : undefined));
});
