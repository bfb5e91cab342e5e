/**
 * The Helm chart (charts/kubelock) with a real helm (hack/tools/helm.sh builds it once from its Go module):
 * `helm lint`; `helm template` renders what `kubectl kustomize deploy/` does, object for object (Helm's own
 * labels aside); its crds/ are crds/'s files; `helm install`, `upgrade` and `uninstall` on the test API
 * server, in namespaces of their own (deploy.test.ts applies deploy/ into kubelock-system); and the
 * namespaced mode over two namespaces, whose Roles let the operator act in the watched namespaces and nowhere
 * else: an operator running with the installed ServiceAccount's token grants claims in both without a refused
 * request and leaves a third namespace's claim untouched, while that token cannot list claims cluster-wide.
 */
import assert from "node:assert/strict";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { parse, parseAllDocuments } from "yaml";
import { CLAIM_PLURAL, GROUP, LOCK_PLURAL, VERSION } from "../../src/api/types";
import { tokenKubeconfig } from "../env/operator-identity";
import { createNamespace, eventually, kubeConfig, kubectl, testEnv } from "../support/env";
import { chartDir, helmRunner, type Helm } from "../support/helm";
import { Api, findLog, refusals, startOperator, type OperatorProcess } from "../support/operator";
import { tempDir } from "../support/temp";

const repoRoot = resolve(__dirname, "..", "..");
const chartMeta = parse(readFileSync(join(chartDir, "Chart.yaml"), "utf8")) as { name: string; version: string; appVersion: string };

// Kubernetes objects as parsed YAML.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type K8sObject = Record<string, any>;

let runner: Helm;
let operator: OperatorProcess | undefined;

before(async () => {
  runner = await helmRunner();
});

after(async () => {
  await operator?.stop();
});

const helm = (args: string[]) => runner.run(args);
const mustHelm = (args: string[]) => runner.must(args);

/** The objects of a YAML stream (empty documents left out). */
function objectsOf(stream: string): K8sObject[] {
  return parseAllDocuments(stream).map((d) => d.toJS() as K8sObject | null).filter((o): o is K8sObject => o !== null);
}

/** `helm template` as release `release` in `namespace`, CRDs included, with more helm flags (--set ...). */
async function template(release: string, namespace: string, flags: string[] = []): Promise<K8sObject[]> {
  return objectsOf(await mustHelm(["template", release, chartDir, "--namespace", namespace, "--include-crds", ...flags]));
}

async function kustomizeDeploy(): Promise<K8sObject[]> {
  const r = await kubectl(["kustomize", join(repoRoot, "deploy")]);
  assert.equal(r.code, 0, r.stderr);
  return objectsOf(r.stdout);
}

const keyOf = (o: K8sObject) => `${o.kind}/${o.metadata?.namespace ?? ""}/${o.metadata?.name}`;

/**
 * An object with what Helm adds taken out: its standard labels (with the values this chart gives them) on
 * the object, the Deployment's selector and pod template and the Service's selector, and the pod template's
 * config checksum.
 */
function withoutHelmAdditions(object: K8sObject, release: string): K8sObject {
  const o = structuredClone(object);
  const helmLabels: Record<string, string> = {
    "helm.sh/chart": `${chartMeta.name}-${chartMeta.version}`,
    "app.kubernetes.io/instance": release,
    "app.kubernetes.io/version": chartMeta.appVersion,
    "app.kubernetes.io/managed-by": "Helm",
  };
  const strip = (holder: K8sObject | undefined, field: string) => {
    const labels = holder?.[field] as Record<string, string> | undefined;
    if (!labels) return;
    for (const [key, value] of Object.entries(helmLabels)) if (labels[key] === value) delete labels[key];
    if (Object.keys(labels).length === 0) delete holder![field];
  };
  strip(o.metadata, "labels");
  if (o.kind === "Deployment") {
    strip(o.spec?.selector, "matchLabels");
    strip(o.spec?.template?.metadata, "labels");
    const annotations = o.spec?.template?.metadata?.annotations as Record<string, string> | undefined;
    if (annotations && /^[0-9a-f]{64}$/.test(annotations["checksum/config"] ?? "")) delete annotations["checksum/config"];
    if (annotations && Object.keys(annotations).length === 0) delete o.spec.template.metadata.annotations;
  }
  if (o.kind === "Service") strip(o.spec, "selector");
  return withParsedFiles(o);
}

/** A ConfigMap with its YAML files parsed (key order and comments do not count); any other object as it is. */
function withParsedFiles(object: K8sObject): K8sObject {
  if (object.kind !== "ConfigMap") return object;
  const o = structuredClone(object);
  for (const [key, value] of Object.entries(o.data ?? {})) if (/\.ya?ml$/.test(key)) o.data[key] = parse(value as string);
  return o;
}

/** Where two values differ, as `path: a != b` lines (empty when they are equal). */
function fieldDifferences(a: unknown, b: unknown, path: string): string[] {
  if (typeof a === "object" && a !== null && typeof b === "object" && b !== null && Array.isArray(a) === Array.isArray(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])];
    return keys.flatMap((k) => fieldDifferences((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${path}.${k}`));
  }
  return a === b ? [] : [`${path}: ${JSON.stringify(a)} != ${JSON.stringify(b)}`];
}

/** Every difference between the chart's objects and deploy/'s (by kind/namespace/name, then field by field). */
function differences(rendered: K8sObject[], release: string, deploy: K8sObject[]): string[] {
  const ours = new Map(rendered.map((o) => [keyOf(o), withoutHelmAdditions(o, release)]));
  const theirs = new Map(deploy.map((o) => [keyOf(o), withParsedFiles(o)]));
  assert.equal(ours.size, rendered.length, "the chart renders an object twice");
  const lines: string[] = [];
  for (const key of theirs.keys()) if (!ours.has(key)) lines.push(`${key}: only in deploy/`);
  for (const [key, object] of ours) {
    if (!theirs.has(key)) lines.push(`${key}: only in the chart`);
    else lines.push(...fieldDifferences(object, theirs.get(key), key));
  }
  return lines;
}

test("helm lint passes, with the default and the namespaced values", async () => {
  await mustHelm(["lint", "--strict", chartDir]);
  await mustHelm(["lint", "--strict", chartDir, "--set", "namespaced.enabled=true"]);
  await mustHelm(["lint", "--strict", chartDir, "--set", "namespaced.enabled=true", "--set-json", 'namespaced.namespaces=["shop","billing"]']);
  const bad = await helm(["lint", "--strict", chartDir, "--set", "replicas=two"]);
  assert.notEqual(bad.code, 0, "a replica count that is not a number passes lint");
});

test("charts/kubelock/crds/ holds crds/'s CRDs, byte for byte", () => {
  const kustomization = parse(readFileSync(join(repoRoot, "crds", "kustomization.yaml"), "utf8")) as { resources: string[] };
  assert.deepEqual(readdirSync(join(chartDir, "crds")).sort(), [...kustomization.resources].sort());
  for (const file of kustomization.resources) {
    assert.equal(readFileSync(join(chartDir, "crds", file), "utf8"), readFileSync(join(repoRoot, "crds", file), "utf8"),
      `charts/kubelock/crds/${file} differs from crds/${file}: copy it again`);
  }
});

test("helm template (release kubelock in kubelock-system) renders deploy/, object for object", async () => {
  const deploy = await kustomizeDeploy();
  assert.ok(deploy.length >= 13, `kubectl kustomize deploy/ gave ${deploy.length} objects`);
  // Default values: everything but the Namespace, which `helm install` does not take from a chart.
  const withoutNamespace = deploy.filter((o) => o.kind !== "Namespace");
  assert.equal(withoutNamespace.length, deploy.length - 1);
  assert.deepEqual(differences(await template("kubelock", "kubelock-system"), "kubelock", withoutNamespace), []);
  // namespace.create=true: the Namespace too (for `helm template | kubectl apply`).
  assert.deepEqual(differences(await template("kubelock", "kubelock-system", ["--set", "namespace.create=true"]), "kubelock", deploy), []);
  // The comparison sees a changed value.
  assert.deepEqual(differences(await template("kubelock", "kubelock-system", ["--set", "replicas=3"]), "kubelock", withoutNamespace),
    ["Deployment/kubelock-system/kubelock-operator.spec.replicas: 3 != 2"]);
});

test("helm template refuses settings the operator cannot run with", async () => {
  const twice = await helm(["template", "kubelock", chartDir, "--set", "namespaced.enabled=true", "--set-json", 'namespaced.namespaces=["a","b","a"]']);
  assert.notEqual(twice.code, 0);
  assert.match(twice.stderr, /at '\/namespaced\/namespaces': items at 0 and 2 are equal/);
  const unelected = await helm(["template", "kubelock", chartDir, "--set", "replicas=2", "--set", "leaderElection.enabled=false"]);
  assert.notEqual(unelected.code, 0);
  assert.match(unelected.stderr, /replicas > 1 needs leaderElection\.enabled/);
});

async function getJson(args: string[]): Promise<K8sObject> {
  const r = await kubectl(["get", ...args, "-o", "json"]);
  assert.equal(r.code, 0, `kubectl get ${args.join(" ")}: ${r.stderr}`);
  return JSON.parse(r.stdout) as K8sObject;
}

/** `kubectl auth can-i VERB RESOURCE` as the ServiceAccount: true for yes, false for no. */
async function canI(serviceAccount: string, verb: string, resource: string, scope: string[]): Promise<boolean> {
  const r = await kubectl(["auth", "can-i", verb, resource, ...scope, "--as", serviceAccount]);
  const answer = r.stdout.trim();
  assert.ok(answer === "yes" || answer === "no", `kubectl auth can-i ${verb} ${resource}: exit ${r.code} ${r.stdout} ${r.stderr}`);
  return answer === "yes";
}

/** Waits until none of the objects is left. */
async function waitGone(args: string[]): Promise<void> {
  await eventually(`${args.join(" ")} deleted`, async () => {
    const r = await kubectl(["get", ...args, "--ignore-not-found", "-o", "name"]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.trim() === "" ? true : undefined;
  }, 20_000);
}

test("helm install, upgrade and uninstall on the API server, in a namespace of their own", async () => {
  const namespace = await createNamespace("helm");
  // Object names derive from the release name: cluster-scoped ones never meet deploy/'s kubelock-operator.
  const release = `kubelock-${namespace.slice(-8)}`;
  const operatorName = `${release}-operator`;
  const serviceAccount = `system:serviceaccount:${namespace}:${operatorName}`;
  const deployBinding = await getJson(["clusterrolebinding/kubelock-operator"]);

  const installed = await mustHelm(["install", release, chartDir, "--namespace", namespace]);
  assert.match(installed, /STATUS: deployed/);
  const deployment = await getJson(["deployment", operatorName, "-n", namespace]);
  assert.equal(deployment.spec.replicas, 2);
  assert.equal(deployment.spec.template.spec.serviceAccountName, operatorName);
  assert.ok(deployment.spec.template.spec.containers[0].args.includes("--leader-elect"));
  assert.equal(deployment.spec.template.spec.volumes[0].configMap.name, `${release}-config`);
  const binding = await getJson([`clusterrolebinding/${operatorName}`]);
  assert.deepEqual(binding.subjects, [{ kind: "ServiceAccount", name: operatorName, namespace }]);
  assert.equal(binding.roleRef.name, operatorName);
  await getJson([`clusterrole/${release}-claimer`]);
  assert.equal(await canI(serviceAccount, "list", "lockclaims.kubelock.io", ["--all-namespaces"]), true);
  assert.equal(await canI(serviceAccount, "patch", "secret/kubelock-zookeeper-sessions", ["-n", namespace]), true);
  assert.equal(await canI(serviceAccount, "get", "secret/some-other-secret", ["-n", namespace]), false);
  // deploy/'s binding (the identity every other test's operator runs with) is not touched.
  assert.deepEqual((await getJson(["clusterrolebinding/kubelock-operator"])).subjects, deployBinding.subjects);

  const before = (await getJson(["deployment", operatorName, "-n", namespace])).spec.template.metadata.annotations["checksum/config"];
  await mustHelm(["upgrade", release, chartDir, "--namespace", namespace, "--reuse-values", "--set", "replicas=3", "--set", "config.clusterName=east"]);
  const upgraded = await getJson(["deployment", operatorName, "-n", namespace]);
  assert.equal(upgraded.spec.replicas, 3);
  assert.notEqual(upgraded.spec.template.metadata.annotations["checksum/config"], before, "a changed config does not roll the pods");
  const config = await getJson(["configmap", `${release}-config`, "-n", namespace]);
  assert.deepEqual(parse(config.data["config.yaml"]), { defaultBackend: "kubernetes", clusterName: "east", backends: [] });
  const status = JSON.parse(await mustHelm(["status", release, "--namespace", namespace, "-o", "json"])) as K8sObject;
  assert.equal(status.version, 2);
  assert.equal(status.info.status, "deployed");

  await mustHelm(["uninstall", release, "--namespace", namespace]);
  await waitGone(["deployment,serviceaccount,configmap,service,secret,role,rolebinding", "-n", namespace, "-l", `app.kubernetes.io/instance=${release}`]);
  await waitGone([`clusterrole/${operatorName}`, `clusterrole/${release}-claimer`, `clusterrolebinding/${operatorName}`]);
  assert.equal((await mustHelm(["list", "--namespace", namespace, "-q"])).trim(), "");
  // Helm never deletes the CRDs it installed from crds/: locks and claims survive an uninstall.
  await getJson(["crd/distributedlocks.kubelock.io", "crd/lockclaims.kubelock.io"]);
});

/** An API call's HTTP outcome: 200 when it succeeded, else the status code the API server answered with. */
async function statusOf(call: () => Promise<unknown>): Promise<number> {
  try {
    await call();
    return 200;
  } catch (err) {
    if (err instanceof k8s.ApiException) return err.code;
    throw err;
  }
}

test("namespaced mode over two namespaces: Roles in those only, and an operator with them grants there and nowhere else", async () => {
  const releaseNamespace = await createNamespace("helm-ns");
  const watched = [await createNamespace("helm-shop"), await createNamespace("helm-billing")];
  const other = await createNamespace("helm-other");
  const flags = ["--set", "namespaced.enabled=true", "--set-json", `namespaced.namespaces=${JSON.stringify(watched)}`];

  const rendered = await template("kubelock", releaseNamespace, flags);
  assert.deepEqual(rendered.filter((o) => o.kind.startsWith("Cluster")).map(keyOf), [], "namespaced mode renders cluster roles");
  const roles = rendered.filter((o) => o.kind === "Role").map(keyOf).sort();
  assert.deepEqual(roles, [
    `Role/${releaseNamespace}/kubelock-operator-leader-election`,
    `Role/${releaseNamespace}/kubelock-operator-zookeeper-sessions`,
    ...watched.flatMap((ns) => [`Role/${ns}/kubelock-claimer`, `Role/${ns}/kubelock-operator`]),
    `Role/kube-system/kubelock-operator-${releaseNamespace}-cluster-identity`,
  ].sort());
  // Each watched namespace's Role has the ClusterRole's rules on namespaced resources.
  const clusterRole = (await kustomizeDeploy()).find((o) => keyOf(o) === "ClusterRole//kubelock-operator")!;
  for (const ns of watched) {
    const role = rendered.find((o) => keyOf(o) === `Role/${ns}/kubelock-operator`)!;
    assert.deepEqual(role.rules, clusterRole.rules.filter((r: K8sObject) => !r.resources.includes("namespaces")));
  }
  const deployment = rendered.find((o) => o.kind === "Deployment")!;
  assert.ok(deployment.spec.template.spec.containers[0].args.includes(`--watch-namespace=${watched.join(",")}`));
  // With config.clusterName set, nothing is written into kube-system.
  const named = await template("kubelock", releaseNamespace, [...flags, "--set", "config.clusterName=east"]);
  assert.deepEqual(named.filter((o) => o.metadata.namespace === "kube-system").map(keyOf), []);

  await mustHelm(["install", "kubelock", chartDir, "--namespace", releaseNamespace, ...flags]);
  const serviceAccount = `system:serviceaccount:${releaseNamespace}:kubelock-operator`;
  const can = (verb: string, resource: string, ...scope: string[]) => canI(serviceAccount, verb, resource, scope);
  for (const [verb, resource, ...more] of [["list", "lockclaims.kubelock.io"], ["patch", "lockclaims.kubelock.io", "--subresource=status"],
    ["patch", "pods"], ["create", "events"], ["create", "leases.coordination.k8s.io"], ["delete", "leases.coordination.k8s.io"]]) {
    for (const ns of watched) assert.equal(await can(verb, resource, ...more, "-n", ns), true, `${verb} ${resource} ${more.join(" ")} in ${ns}`);
    assert.equal(await can(verb, resource, ...more, "-n", other), false, `${verb} ${resource} ${more.join(" ")} in another namespace`);
  }
  for (const resource of ["lockclaims.kubelock.io", "distributedlocks.kubelock.io", "pods"]) {
    assert.equal(await can("list", resource, "--all-namespaces"), false, `list ${resource} cluster-wide`);
    assert.equal(await can("watch", resource, "--all-namespaces"), false, `watch ${resource} cluster-wide`);
  }
  assert.equal(await can("create", "leases.coordination.k8s.io", "-n", releaseNamespace), true, "the leader Lease");
  assert.equal(await can("delete", "leases.coordination.k8s.io", "-n", releaseNamespace), false);
  assert.equal(await can("list", "pods", "-n", releaseNamespace), false);
  assert.equal(await can("get", "namespaces/kube-system", "-n", "kube-system"), true, "the cluster identity");
  assert.equal(await can("get", "namespaces/default", "-n", "default"), false);

  // A lock and a claim in every namespace, the third one's before the operator starts: it would be in the
  // first list of an operator that listed cluster-wide.
  const apis = new Map([...watched, other].map((ns) => [ns, new Api(ns)]));
  for (const [, api] of apis) {
    await api.createLock("guarded");
    await api.createClaim("first", { lockName: "guarded" });
  }
  const untouched = (await apis.get(other)!.getClaim("first"))!;

  // As that ServiceAccount (its token, nothing else): no cluster-wide list or watch of claims, and writes (server-side
  // dry-runs, as the operator sends them) pass in a watched namespace and are refused in the other.
  const token = await kubectl(["create", "token", "kubelock-operator", "-n", releaseNamespace, "--duration=1h"]);
  assert.equal(token.code, 0, token.stderr);
  const kubeconfig = join(tempDir("kubelock-helm-sa-"), "kubeconfig");
  writeFileSync(kubeconfig, tokenKubeconfig(testEnv.kubeconfig, "kubelock-operator", token.stdout.trim()));
  const custom = kubeConfig(kubeconfig).makeApiClient(k8s.CustomObjectsApi);
  for (const plural of [CLAIM_PLURAL, LOCK_PLURAL]) {
    assert.equal(await statusOf(() => custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural })), 403, `list ${plural} cluster-wide`);
    assert.equal(await statusOf(() => custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural, watch: true, timeoutSeconds: 1 })), 403,
      `watch ${plural} cluster-wide`);
  }
  const dryRunPatch = (namespace: string) => statusOf(() => custom.patchNamespacedCustomObject({
    group: GROUP, version: VERSION, namespace, plural: CLAIM_PLURAL, name: "first", dryRun: "All",
    body: { metadata: { annotations: { "example.com/probe": "dry-run" } } },
  }, k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch)));
  for (const ns of watched) assert.equal(await dryRunPatch(ns), 200, `a dry-run claim patch in ${ns}`);
  assert.equal(await dryRunPatch(other), 403, "a dry-run claim patch in the unwatched namespace");

  // The operator with that token, watching both namespaces, electing a leader in the release namespace:
  // startOperator's stop() fails on any request the API server refused.
  operator = await startOperator({ namespace: watched.join(","), kubeconfig, extraArgs: ["--leader-elect"], env: { POD_NAMESPACE: releaseNamespace } });
  assert.deepEqual(findLog(operator, "operator started")?.namespaces, watched);
  for (const ns of watched) await apis.get(ns)!.waitForPhase("first", "Granted");
  await getJson(["lease/kubelock-operator", "-n", releaseNamespace]);
  // An operator that saw the third namespace would have granted its claim (there since before the start) too:
  // it was never written to.
  const after = (await apis.get(other)!.getClaim("first"))!;
  assert.equal(after.status, undefined, "the unwatched namespace's claim got a status");
  assert.equal(after.metadata.resourceVersion, untouched.metadata.resourceVersion, "the unwatched namespace's claim was written");
  assert.equal((await apis.get(other)!.getLock("guarded")).status, undefined, "the unwatched namespace's lock got a status");
  assert.deepEqual(refusals(operator.output()), []);
  await operator.stop();
  operator = undefined;

  await mustHelm(["uninstall", "kubelock", "--namespace", releaseNamespace]);
  for (const ns of watched) await waitGone(["role,rolebinding", "-n", ns, "-l", "app.kubernetes.io/instance=kubelock"]);
  await waitGone([`role/kubelock-operator-${releaseNamespace}-cluster-identity`, `rolebinding/kubelock-operator-${releaseNamespace}-cluster-identity`, "-n", "kube-system"]);
  await waitGone(["deployment,serviceaccount,role,rolebinding", "-n", releaseNamespace, "-l", "app.kubernetes.io/instance=kubelock"]);
});
