/**
 * The Helm chart on a real node. deploy/'s operator (cluster-wide, in kubelock-system) is scaled to zero for
 * this file, so that only the release grants; then the chart is installed in namespaced mode into a namespace of
 * its own, watching one namespace, with the image built from the Dockerfile: its two replicas become Ready
 * through their probes (`helm install --wait`), it grants a claim, `helm upgrade` rolls both pods without losing
 * the hold (same fencing token, still Granted) and grants again, the operator is never refused by the API server,
 * and `helm uninstall` removes it. deploy/'s operator is scaled back afterwards.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createNamespace, eventually, kubectl } from "../support/env";
import { chartDir, helmRunner, type Helm } from "../support/helm";
import { Api } from "../support/operator";
import { core, deployOperator, ok, operatorNamespace, projectImage } from "./support";

const release = "node-helm";
const selector = `app.kubernetes.io/instance=${release}`;
let helm: Helm;
let releaseNamespace: string | undefined;

const scaleDeployOperator = (replicas: number) =>
  ok(kubectl(["scale", "-n", operatorNamespace, "deployment/kubelock-operator", `--replicas=${replicas}`]));

/** The pods of a selector in a namespace, once the list has none being deleted and `ready` of them Ready. */
async function readyPods(namespace: string, labelSelector: string, ready: number): Promise<string[]> {
  return eventually(`${ready} Ready pods (${labelSelector})`, async () => {
    const pods = (await core().listNamespacedPod({ namespace, labelSelector })).items;
    if (pods.some((p) => p.metadata?.deletionTimestamp)) return undefined;
    const names = pods.filter((p) => p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True")).map((p) => p.metadata!.name!);
    return names.length === ready && pods.length === ready ? names : undefined;
  }, 300_000);
}

/** `step`, or its failure with what the release's pods say (their description and logs). */
async function diagnosed<T>(namespace: string, step: Promise<T>): Promise<T> {
  try {
    return await step;
  } catch (err) {
    const describe = await kubectl(["describe", "pods", "-n", namespace, "-l", selector]);
    const logs = await kubectl(["logs", "-n", namespace, "-l", selector, "--tail=40", "--prefix", "--all-containers"]);
    throw new Error(`${(err as Error).message}\n--- pods:\n${describe.stdout.slice(-6000)}\n--- logs:\n${logs.stdout.slice(-6000)}${logs.stderr}`);
  }
}

before(async () => {
  helm = await helmRunner();
  await deployOperator(); // deploy/ as the other files of this tier have it, then out of the way
  await scaleDeployOperator(0);
  await readyPods(operatorNamespace, "app.kubernetes.io/name=kubelock,app.kubernetes.io/component=operator", 0);
});

after(async () => {
  if (releaseNamespace) await helm.run(["uninstall", release, "--namespace", releaseNamespace, "--wait"]);
  await scaleDeployOperator(2);
  await ok(kubectl(["rollout", "status", "-n", operatorNamespace, "deployment/kubelock-operator", "--timeout=300s"]));
});

test("helm install (namespaced), upgrade and uninstall on a real node: Ready pods that grant, a hold kept across the upgrade", async () => {
  releaseNamespace = await createNamespace("helm-node");
  const watched = await createNamespace("helm-node-app");
  const image = projectImage();
  const at = image.lastIndexOf(":");
  const values = [
    "--set", `image.repository=${image.slice(0, at)}`, "--set", `image.tag=${image.slice(at + 1)}`,
    "--set", "namespaced.enabled=true", "--set-json", `namespaced.namespaces=${JSON.stringify([watched])}`,
  ];
  await diagnosed(releaseNamespace, helm.must(["install", release, chartDir, "--namespace", releaseNamespace, ...values, "--wait", "--timeout", "300s"]));
  const first = await readyPods(releaseNamespace, selector, 2);

  const api = new Api(watched);
  await api.createLock("db", { maxHolders: 1 });
  await api.createClaim("before-upgrade", { lockName: "db" });
  const granted = await api.waitForPhase("before-upgrade", "Granted", 120_000);

  // A changed pod template rolls both replicas, one at a time, leader election handing the work over.
  await diagnosed(releaseNamespace, helm.must(["upgrade", release, chartDir, "--namespace", releaseNamespace, "--reuse-values", "--set", "podAnnotations.rolled=yes", "--wait", "--timeout", "300s"]));
  const second = await readyPods(releaseNamespace, selector, 2);
  assert.deepEqual(second.filter((name) => first.includes(name)), [], "helm upgrade did not replace the pods");
  await api.createLock("cache", { maxHolders: 1 });
  await api.createClaim("after-upgrade", { lockName: "cache" });
  await api.waitForPhase("after-upgrade", "Granted", 120_000);
  const kept = await api.getClaim("before-upgrade");
  assert.equal(kept?.status?.phase, "Granted", "the hold did not survive the upgrade");
  assert.equal(kept?.status?.fencingToken, granted.status?.fencingToken);

  const logs = await ok(kubectl(["logs", "-n", releaseNamespace, "-l", selector, "--tail=-1", "--prefix"]));
  const refused = logs.split("\n").filter((line) => /forbidden|\b403\b/i.test(line));
  assert.deepEqual(refused, [], "the release's operator was refused by the API server");

  await helm.must(["uninstall", release, "--namespace", releaseNamespace, "--wait"]);
  await readyPods(releaseNamespace, selector, 0);
  assert.equal((await helm.must(["list", "--namespace", releaseNamespace, "-q"])).trim(), "");
  releaseNamespace = undefined;
});
