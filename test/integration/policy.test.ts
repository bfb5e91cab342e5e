/**
 * deploy/policy/ on the API server, shown with server-side dry-runs made with the tokens of the ServiceAccounts the
 * policies are about (`kubectl --dry-run=server`; the operator's pod and status patches through the API with
 * `dryRun=All`, as the operator sends them, since kubectl would first read the object, which the operator may not):
 *
 * - operator-guard.yaml (part of deploy/): the operator's ServiceAccount, whose ClusterRole may patch every pod
 *   and write every Lease, may change a pod only by removing the kubelock.io/lock scheduling gate and write only
 *   Leases labelled app.kubernetes.io/managed-by=kubelock besides its leader Lease; the real operator, run with
 *   that token while the policy is in force, grants a lock on the kubernetes backend and ungates pods with no
 *   request refused.
 * - claimer-guard.yaml (optional): two ServiceAccounts of one namespace, both bound to kubelock-claimer; each may
 *   change or delete only the claims it created, the operator still writes them, and a namespace label caps
 *   priorities. Applied as shipped, its bindings narrowed to the test's namespace so that the claims of test
 *   files running at the same time are left alone.
 *
 * A refusal counts only when it names the policy and says why: a request refused for any other reason (RBAC, an
 * invalid object) fails the test, and the requests refused are shown to be allowed by RBAC or to pass where the
 * policy does not apply.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { parseAllDocuments } from "yaml";
import { CLAIM_PLURAL, GROUP, LOCK_ANNOTATION, PRIORITY_ANNOTATION, SCHEDULING_GATE, VERSION } from "../../src/api/types";
import { apiErrorMessage } from "../../src/kube/client";
import { tokenKubeconfig } from "../env/operator-identity";
import { createNamespace, eventually, kubeConfig, kubectl, testEnv, type CommandResult } from "../support/env";
import { Api, refusals, startOperator, type OperatorProcess } from "../support/operator";
import { tempDir } from "../support/temp";

// Kubernetes objects as parsed JSON.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type K8sObject = Record<string, any>;

const repoRoot = resolve(__dirname, "..", "..");
const OPERATOR_GUARD_FILE = join(repoRoot, "deploy", "policy", "operator-guard.yaml");
const CLAIMER_GUARD_FILE = join(repoRoot, "deploy", "policy", "claimer-guard.yaml");
const OPERATOR_GUARD = "kubelock-operator-guard";
const CLAIMER_GUARD = "kubelock-claimer-guard";
const OPERATOR_USER = "system:serviceaccount:kubelock-system:kubelock-operator";
const CREATED_BY = "kubelock.io/created-by";
const MANAGED_BY = "app.kubernetes.io/managed-by";
const OTHER_GATE = "example.com/quota";

let namespace: string;
let operator: OperatorProcess | undefined;
const cleanups: Array<() => Promise<unknown>> = [];

/** kubectl as the cluster's admin, `body` (an object) on stdin. */
const asAdmin = (args: string[], body?: K8sObject) => kubectl(args, { input: body && JSON.stringify(body) });
/** kubectl with `kubeconfig` (a ServiceAccount's token), `body` on stdin. */
const asUser = (kubeconfig: string, args: string[], body?: K8sObject) => kubectl(args, { kubeconfig, input: body && JSON.stringify(body) });
/** kubectl as the operator: deploy/'s ServiceAccount, the identity every test's operator runs with. */
const asOperator = (args: string[], body?: K8sObject) => asUser(testEnv.operatorKubeconfig, args, body);

function passed(r: CommandResult, what: string): void {
  assert.equal(r.code, 0, `${what}: refused (exit ${r.code}): ${r.stderr}`);
}

/** `r` failed because `policy` denied it, with a message matching `message`. */
function refused(r: CommandResult, policy: string, message: RegExp, what: string): void {
  assert.notEqual(r.code, 0, `${what}: passed, but ${policy} should refuse it`);
  assert.ok(r.stderr.includes(`ValidatingAdmissionPolicy '${policy}' with binding '${policy}' denied request: `),
    `${what}: not refused by ${policy}: ${r.stderr}`);
  assert.match(r.stderr, message, `${what}: ${r.stderr}`);
}

/** Polls `request` until `policy` refuses it (a binding takes a moment to be in force); fails with the last answer. */
async function untilRefused(what: string, policy: string, request: () => Promise<CommandResult>): Promise<void> {
  await eventually(`${policy} refusing ${what}`, async () => {
    const r = await request();
    if (r.code !== 0 && r.stderr.includes(`ValidatingAdmissionPolicy '${policy}'`)) return true;
    throw new Error(`exit ${r.code}: ${r.stderr.trim() || "passed"}`);
  }, 30_000);
}

/** A kubeconfig with nothing but a token of `serviceAccount` in `ns`. */
async function serviceAccountKubeconfig(ns: string, serviceAccount: string): Promise<string> {
  const token = await kubectl(["create", "token", serviceAccount, "-n", ns, "--duration=1h"]);
  passed(token, `kubectl create token ${serviceAccount}`);
  const file = join(tempDir("kubelock-policy-sa-"), "kubeconfig");
  writeFileSync(file, tokenKubeconfig(testEnv.kubeconfig, serviceAccount, token.stdout.trim()));
  return file;
}

function lease(name: string, ns: string, labels?: Record<string, string>): K8sObject {
  return { apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name, namespace: ns, labels }, spec: { holderIdentity: "policy-test" } };
}

function pod(name: string, ns: string, options: { gates?: string[]; image?: string; labels?: Record<string, string> } = {}): K8sObject {
  return {
    apiVersion: "v1", kind: "Pod",
    metadata: { name, namespace: ns, labels: options.labels },
    spec: {
      containers: [{ name: "main", image: options.image ?? "busybox" }],
      schedulingGates: (options.gates ?? []).map((gate) => ({ name: gate })),
    },
  };
}

async function createAsAdmin(body: K8sObject): Promise<K8sObject> {
  const r = await asAdmin(["create", "-o", "json", "-f", "-"], body);
  passed(r, `creating ${body.kind} ${body.metadata.namespace}/${body.metadata.name}`);
  return JSON.parse(r.stdout) as K8sObject;
}

/** The JSON patch the operator removes a gate with (KubeClient.removeSchedulingGate): guarded by the pod's UID and the gate's index. */
function gateRemoval(p: K8sObject, gate: string): object[] {
  const index = (p.spec.schedulingGates as Array<{ name: string }>).findIndex((g) => g.name === gate);
  assert.ok(index >= 0, `pod ${p.metadata.name} has no gate ${gate}`);
  return [
    { op: "test", path: "/metadata/uid", value: p.metadata.uid },
    { op: "test", path: `/spec/schedulingGates/${index}/name`, value: gate },
    { op: "remove", path: `/spec/schedulingGates/${index}` },
  ];
}

/** An API call's outcome as a CommandResult: code 0, or the HTTP status with the Status message in stderr. */
async function apiCall(call: () => Promise<unknown>): Promise<CommandResult> {
  try {
    return { code: 0, stdout: JSON.stringify(await call()), stderr: "" };
  } catch (err) {
    if (err instanceof k8s.ApiException) return { code: err.code, stdout: "", stderr: apiErrorMessage(err) };
    throw err;
  }
}

const jsonPatch = k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.JsonPatch);
const mergePatch = k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch);

/**
 * A server-side dry-run of a JSON patch of pod `p`, sent as the operator sends its patches: through the API, as
 * `who`. (`kubectl patch` reads the object first, which the operator, allowed to list but not get pods, may not.)
 */
function patchPod(who: "operator" | "admin", p: K8sObject, ops: object[]): Promise<CommandResult> {
  const core = kubeConfig(who === "operator" ? testEnv.operatorKubeconfig : testEnv.kubeconfig).makeApiClient(k8s.CoreV1Api);
  return apiCall(() => core.patchNamespacedPod({ name: p.metadata.name, namespace: p.metadata.namespace, body: ops, dryRun: "All" }, jsonPatch));
}

before(async () => {
  namespace = await createNamespace("policy");
  passed(await asAdmin(["apply", "--server-side", "--force-conflicts", "-f", OPERATOR_GUARD_FILE]), "applying operator-guard.yaml");
  // In force once the operator may not create a Lease without kubelock's label.
  await untilRefused("an unlabelled Lease", OPERATOR_GUARD, () => asOperator(["create", "--dry-run=server", "-f", "-"], lease("probe", namespace)));
});

after(async () => {
  await operator?.stop();
  for (const cleanup of cleanups) await cleanup();
});

test("operator-guard: removing the kubelock.io/lock gate passes; any other change to a pod is refused", async () => {
  const gated = await createAsAdmin(pod("gated", namespace, { gates: [OTHER_GATE, SCHEDULING_GATE] }));
  const onlyOurs = await createAsAdmin(pod("only-ours", namespace, { gates: [SCHEDULING_GATE] }));

  passed(await patchPod("operator", gated, gateRemoval(gated, SCHEDULING_GATE)), "removing the kubelock.io/lock gate (another gate kept)");
  passed(await patchPod("operator", onlyOurs, gateRemoval(onlyOurs, SCHEDULING_GATE)), "removing the kubelock.io/lock gate, the only one");

  const onlyTheGate = /kubelock's operator may change a pod only by removing its kubelock\.io\/lock scheduling gate, nothing else: refused UPDATE of pod /;
  const removal = gateRemoval(gated, SCHEDULING_GATE);
  const changes: Array<[string, object[]]> = [
    ["removing another gate", gateRemoval(gated, OTHER_GATE)],
    ["removing both gates", [{ op: "replace", path: "/spec/schedulingGates", value: [] }]],
    ["the gate removed and the image changed", [...removal, { op: "replace", path: "/spec/containers/0/image", value: "evil:latest" }]],
    ["the gate removed and a label added", [...removal, { op: "add", path: "/metadata/labels", value: { role: "admin" } }]],
    ["the gate removed and an annotation added", [...removal, { op: "add", path: "/metadata/annotations", value: { note: "x" } }]],
    ["the gate removed and an owner added (the garbage collector would delete the pod)", [...removal,
      { op: "add", path: "/metadata/ownerReferences", value: [{ apiVersion: "v1", kind: "ConfigMap", name: "gone", uid: "6f0c1ad4-0000-4000-8000-000000000000" }] }]],
    ["the gate removed and a finalizer added", [...removal, { op: "add", path: "/metadata/finalizers", value: ["example.com/block"] }]],
    ["the gate removed and a toleration added", [...removal, { op: "add", path: "/spec/tolerations/-", value: { operator: "Exists" } }]],
  ];
  await Promise.all(changes.map(async ([what, ops]) => {
    refused(await patchPod("operator", gated, ops), OPERATOR_GUARD, onlyTheGate, what);
    // Valid requests, refused for the operator alone: the cluster's admin may make them.
    passed(await patchPod("admin", gated, ops), `${what}, as the admin`);
  }));
  const unchanged = JSON.parse((await asAdmin(["get", "pod", "gated", "-n", namespace, "-o", "json"])).stdout) as K8sObject;
  assert.deepEqual(unchanged.spec.schedulingGates, [{ name: OTHER_GATE }, { name: SCHEDULING_GATE }], "dry-runs changed the pod");
});

test("operator-guard: the operator cannot change the image of a kube-system pod, or of one like it elsewhere", async () => {
  const canPatch = await kubectl(["auth", "can-i", "patch", "pods", "-n", "kube-system", "--as", OPERATOR_USER]);
  assert.equal(canPatch.stdout.trim(), "yes", "the ClusterRole lets the operator patch kube-system's pods: the policy is what refuses");

  const lookalike = await createAsAdmin(pod("kube-apiserver-node-1", namespace, {
    image: "registry.k8s.io/kube-apiserver:v1.37.2", labels: { component: "kube-apiserver", tier: "control-plane" },
  }));
  const systemName = `kube-proxy-policy-${randomBytes(3).toString("hex")}`;
  cleanups.push(() => asAdmin(["delete", "pod", systemName, "-n", "kube-system", "--ignore-not-found", "--grace-period=0", "--force", "--wait=false"]));
  const system = await createAsAdmin(pod(systemName, "kube-system", { image: "registry.k8s.io/kube-proxy:v1.37.2", labels: { "k8s-app": "kube-proxy" } }));

  for (const target of [lookalike, system]) {
    const swap = [{ op: "replace", path: "/spec/containers/0/image", value: "registry.example.com/backdoor:1" }];
    const where = `${target.metadata.namespace}/${target.metadata.name}`;
    refused(await patchPod("operator", target, swap), OPERATOR_GUARD,
      new RegExp(`may change a pod only by removing its kubelock\\.io/lock scheduling gate, nothing else: refused UPDATE of pod ${where}`), `image of ${where}`);
    passed(await patchPod("admin", target, swap), `image of ${where}, as the admin`);
  }
});

test("operator-guard: Leases without kubelock's label, and any in kube-system, are refused; kubelock's own and the leader Lease pass", async () => {
  const onlyOwn = /kubelock's operator may write only Leases labelled app\.kubernetes\.io\/managed-by=kubelock \(before and after the write\) and its leader Lease kubelock-system\/kubelock-operator: refused /;
  const systemNamespaces = /kubelock's operator writes no Leases in kube-system, kube-node-lease or kube-public: refused /;
  const labels = { [MANAGED_BY]: "kubelock", "kubelock.io/key": "policy" };

  // A real kube-system Lease: the API server's identity Lease.
  const identity = await asAdmin(["get", "leases", "-n", "kube-system", "-l", "apiserver.kubernetes.io/identity=kube-apiserver", "-o", "name"]);
  passed(identity, "listing kube-system's Leases");
  const apiserverLease = identity.stdout.trim().split("\n")[0];
  assert.match(apiserverLease, /^lease\.coordination\.k8s\.io\/apiserver-/, "the API server keeps an identity Lease in kube-system");
  refused(await asOperator(["patch", apiserverLease, "-n", "kube-system", "--type=merge", "--dry-run=server", "-p", '{"spec":{"holderIdentity":"kubelock"}}']),
    OPERATOR_GUARD, systemNamespaces, "renewing kube-system's API server identity Lease");
  refused(await asOperator(["delete", apiserverLease, "-n", "kube-system", "--dry-run=server"]), OPERATOR_GUARD, systemNamespaces, "deleting it");
  // Label or not: no lock Leases in the control plane's namespaces.
  for (const ns of ["kube-system", "kube-node-lease"]) {
    refused(await asOperator(["create", "--dry-run=server", "-f", "-"], lease("kubelock-x-fencing", ns, labels)), OPERATOR_GUARD, systemNamespaces,
      `creating a kubelock-labelled Lease in ${ns}`);
  }

  // Elsewhere: the label decides, before and after the write.
  refused(await asOperator(["create", "--dry-run=server", "-f", "-"], lease("unlabelled", namespace)), OPERATOR_GUARD, onlyOwn, "creating an unlabelled Lease");
  refused(await asOperator(["create", "--dry-run=server", "-f", "-"], lease("wrong", namespace, { [MANAGED_BY]: "someone-else" })),
    OPERATOR_GUARD, onlyOwn, "creating a Lease managed by someone else");
  await createAsAdmin(lease("foreign", namespace, { app: "other" }));
  refused(await asOperator(["patch", "lease", "foreign", "-n", namespace, "--type=merge", "--dry-run=server", "-p", JSON.stringify({ metadata: { labels } })]),
    OPERATOR_GUARD, onlyOwn, "taking over a foreign Lease by labelling it");
  refused(await asOperator(["patch", "lease", "foreign", "-n", namespace, "--type=merge", "--dry-run=server", "-p", '{"spec":{"holderIdentity":"kubelock"}}']),
    OPERATOR_GUARD, onlyOwn, "renewing a foreign Lease");
  refused(await asOperator(["delete", "lease", "foreign", "-n", namespace, "--dry-run=server"]), OPERATOR_GUARD, onlyOwn, "deleting a foreign Lease");

  passed(await asOperator(["create", "--dry-run=server", "-f", "-"], lease("kubelock-policy-0", namespace, labels)), "creating a kubelock-labelled Lease");
  await createAsAdmin(lease("kubelock-policy-fencing", namespace, labels));
  passed(await asOperator(["patch", "lease", "kubelock-policy-fencing", "-n", namespace, "--type=merge", "--dry-run=server",
    "-p", '{"metadata":{"annotations":{"kubelock.io/fencing-counter":"7"}}}']), "updating a kubelock-labelled Lease");
  passed(await asOperator(["replace", "--dry-run=server", "-f", "-"], lease("kubelock-policy-fencing", namespace, labels)), "replacing it");
  refused(await asOperator(["patch", "lease", "kubelock-policy-fencing", "-n", namespace, "--type=merge", "--dry-run=server",
    "-p", JSON.stringify({ metadata: { labels: { [MANAGED_BY]: null } } })]), OPERATOR_GUARD, onlyOwn, "removing kubelock's label");
  passed(await asOperator(["delete", "lease", "kubelock-policy-fencing", "-n", namespace, "--dry-run=server"]), "deleting a kubelock-labelled Lease");

  // The leader Lease passes by its name and namespace, even without the label (the operator writes it with the
  // label; others' operators may hold it right now: dry-runs only).
  const leader = lease("kubelock-operator", "kubelock-system");
  const created = await asOperator(["create", "--dry-run=server", "-f", "-"], leader);
  if (created.code !== 0) {
    assert.match(created.stderr, /AlreadyExists|already exists/, `creating the leader Lease: ${created.stderr}`);
    passed(await asOperator(["replace", "--dry-run=server", "-f", "-"], leader), "updating the leader Lease (replaced without its label)");
  }
  refused(await asOperator(["create", "--dry-run=server", "-f", "-"], lease("kubelock-operator", namespace)), OPERATOR_GUARD, onlyOwn,
    "an unlabelled Lease named like the leader Lease in another namespace");
});

test("operator-guard: the operator, run with the policy in force, grants a lock on Leases and ungates pods without a request refused", async () => {
  const ns = await createNamespace("policy-operator");
  const api = new Api(ns);
  // Its leader Lease in the test's namespace (kubelock-system's is other tests' to contend for): written as a kubelock Lease.
  operator = await startOperator({
    namespace: ns,
    extraArgs: ["--leader-elect", "--leader-elect-namespace", ns, "--leader-elect-lease-duration", "4s",
      "--leader-elect-renew-deadline", "3s", "--leader-elect-retry-period", "500ms"],
  });
  await api.createLock("guarded");
  const gatedPod = (name: string) =>
    api.core.createNamespacedPod({
      namespace: ns,
      body: { metadata: { name, annotations: { [LOCK_ANNOTATION]: "guarded" } }, spec: { containers: [{ name: "main", image: "busybox" }], schedulingGates: [{ name: SCHEDULING_GATE }] } },
    });
  const gates = async (name: string) => (await api.core.readNamespacedPod({ name, namespace: ns })).spec?.schedulingGates?.map((g) => g.name) ?? [];

  await gatedPod("first");
  await api.waitForPhase("first", "Granted");
  await eventually("pod first ungated", async () => ((await gates("first")).length === 0 ? true : undefined));
  await gatedPod("second");
  await api.waitForPhase("second", "Pending");
  assert.deepEqual(await gates("second"), [SCHEDULING_GATE]);

  // The first pod done: its grant released (its slot Lease deleted), the second granted and ungated.
  await api.core.deleteNamespacedPod({ name: "first", namespace: ns, gracePeriodSeconds: 0 });
  await api.deleteClaim("first").catch((err) => assert.equal((err as { code?: number }).code, 404)); // or collected already
  await api.waitForPhase("second", "Granted");
  await eventually("pod second ungated", async () => ((await gates("second")).length === 0 ? true : undefined));

  const leases = JSON.parse((await asAdmin(["get", "leases", "-n", ns, "-o", "json"])).stdout) as { items: K8sObject[] };
  const names = leases.items.map((l) => l.metadata.name as string).sort();
  assert.ok(names.includes("kubelock-operator"), `the leader Lease: ${names.join(", ")}`);
  assert.ok(names.some((name) => name.startsWith("kubelock-guarded-")), `the lock's Leases: ${names.join(", ")}`);
  for (const l of leases.items) assert.equal(l.metadata.labels?.[MANAGED_BY], "kubelock", `Lease ${l.metadata.name} is not kubelock's`);

  // Still in force at the end.
  const second = JSON.parse((await asAdmin(["get", "pod", "second", "-n", ns, "-o", "json"])).stdout) as K8sObject;
  refused(await patchPod("operator", second, [{ op: "replace", path: "/spec/containers/0/image", value: "evil:latest" }]), OPERATOR_GUARD,
    /may change a pod only by removing/, "the image of an ungated pod");

  // The lock deleted: its holds go, and with them every Lease of its key (the Lease backend keeps no counter).
  await api.deleteLock("guarded");
  await eventually("lock guarded gone", () => api.getLock("guarded").then(() => undefined, (err: { code?: number }) => {
    if (err.code === 404) return true;
    throw err;
  }));
  const left = JSON.parse((await asAdmin(["get", "leases", "-n", ns, "-o", "json"])).stdout) as { items: K8sObject[] };
  assert.deepEqual(left.items.map((l) => l.metadata.name as string).sort(), ["kubelock-operator"]);
  for (const l of left.items) assert.equal(l.metadata.labels?.[MANAGED_BY], "kubelock", `Lease ${l.metadata.name} is not kubelock's`);
  const output = operator.output();
  await operator.stop(); // fails on any request the API server refused (403)
  operator = undefined;
  assert.doesNotMatch(output, /denied request|ValidatingAdmissionPolicy/, "the operator's log tells of a request the policy refused");
  assert.match(output, /acquired the leader lease; leading/);
});

test("claimer-guard: a ServiceAccount changes or deletes only the claims it created; the operator still writes them; priority capped by namespace", async () => {
  const ns = await createNamespace("policy-claimers");
  for (const sa of ["alice", "bob"]) {
    passed(await asAdmin(["create", "serviceaccount", sa, "-n", ns]), `ServiceAccount ${sa}`);
    passed(await asAdmin(["create", "rolebinding", `${sa}-claimer`, "-n", ns, "--clusterrole=kubelock-claimer", `--serviceaccount=${ns}:${sa}`]), `${sa}'s RoleBinding`);
  }
  const [alice, bob] = await Promise.all([serviceAccountKubeconfig(ns, "alice"), serviceAccountKubeconfig(ns, "bob")]);
  const aliceUser = `system:serviceaccount:${ns}:alice`;
  const bobUser = `system:serviceaccount:${ns}:bob`;
  const claim = (name: string, spec: K8sObject = {}, annotations?: Record<string, string>): K8sObject =>
    ({ apiVersion: "kubelock.io/v1alpha1", kind: "LockClaim", metadata: { name, namespace: ns, annotations }, spec: { lockName: "shared", ...spec } });
  const patchClaim = (kubeconfig: string, name: string, body: K8sObject, extra: string[] = []) =>
    asUser(kubeconfig, ["patch", "lockclaim", name, "-n", ns, "--type=merge", "--dry-run=server", "-p", JSON.stringify(body), ...extra]);
  const deleteClaim = (kubeconfig: string, name: string) => asUser(kubeconfig, ["delete", "lockclaim", name, "-n", ns, "--dry-run=server"]);
  const renew = { spec: { renewTime: new Date().toISOString() } };
  const release = { metadata: { annotations: { "kubelock.io/release": "true" } } };

  // Without the policy (the trust model as shipped): any claimer of the namespace changes and deletes any claim of it.
  passed(await asUser(alice, ["create", "-f", "-"], claim("before-guard")), "alice creates a claim");
  passed(await patchClaim(bob, "before-guard", { spec: { priority: 100 } }), "without the policy, bob raises alice's claim's priority");
  passed(await patchClaim(bob, "before-guard", release), "without the policy, bob releases alice's claim");
  passed(await deleteClaim(bob, "before-guard"), "without the policy, bob deletes alice's claim");

  // claimer-guard.yaml as shipped, its bindings narrowed to this namespace.
  const docs = parseAllDocuments(readFileSync(CLAIMER_GUARD_FILE, "utf8")).map((d) => d.toJS() as K8sObject);
  assert.deepEqual(docs.map((d) => d.kind), ["MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]);
  for (const d of docs) {
    if (d.kind.endsWith("Binding")) d.spec.matchResources = { namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": ns } } };
  }
  const list = { apiVersion: "v1", kind: "List", items: docs };
  cleanups.push(() => asAdmin(["delete", "--ignore-not-found", "-f", "-"], list));
  passed(await asAdmin(["apply", "--server-side", "--force-conflicts", "-f", "-"], list), "applying claimer-guard.yaml");

  // The creator, recorded by the API server once the MutatingAdmissionPolicy is in force (a value sent is overwritten).
  await eventually("claims created get kubelock.io/created-by", async () => {
    const r = await asUser(alice, ["create", "--dry-run=server", "-o", "json", "-f", "-"], claim("probe", {}, { [CREATED_BY]: bobUser }));
    passed(r, "alice's dry-run create");
    const recorded = (JSON.parse(r.stdout) as K8sObject).metadata.annotations?.[CREATED_BY];
    if (recorded === aliceUser) return true;
    throw new Error(`annotation ${CREATED_BY}: ${recorded}`);
  }, 30_000);
  const created = await asUser(alice, ["create", "-o", "json", "-f", "-"], claim("alices", {}, { [CREATED_BY]: bobUser }));
  passed(created, "alice creates a claim");
  assert.equal((JSON.parse(created.stdout) as K8sObject).metadata.annotations[CREATED_BY], aliceUser, "the creator is forged");
  await untilRefused("bob changing alice's claim", CLAIMER_GUARD, () => patchClaim(bob, "alices", { spec: { priority: 100 } }));

  const onlyAlice = (verb: string) => new RegExp(`only ${aliceUser}, which created LockClaim ${ns}/alices, may ${verb} it \\(the operator aside\\); refused for ${bobUser}`);
  refused(await patchClaim(bob, "alices", { spec: { priority: 100 } }), CLAIMER_GUARD, onlyAlice("change"), "bob raising alice's priority");
  refused(await patchClaim(bob, "alices", release), CLAIMER_GUARD, onlyAlice("change"), "bob releasing alice's claim");
  refused(await patchClaim(bob, "alices", renew), CLAIMER_GUARD, onlyAlice("change"), "bob renewing alice's claim");
  refused(await deleteClaim(bob, "alices"), CLAIMER_GUARD, onlyAlice("delete"), "bob deleting alice's claim");
  refused(await patchClaim(bob, "alices", { metadata: { annotations: { [CREATED_BY]: bobUser } } }), CLAIMER_GUARD,
    /annotation kubelock\.io\/created-by of LockClaim .* cannot be changed or removed/, "bob taking alice's claim over");

  passed(await patchClaim(alice, "alices", renew), "alice renews her claim");
  passed(await patchClaim(alice, "alices", release), "alice releases her claim");
  passed(await patchClaim(alice, "alices", { spec: { priority: 3 } }), "alice sets her claim's priority");
  passed(await deleteClaim(alice, "alices"), "alice deletes her claim");
  for (const [what, annotation] of [["handing it to bob", bobUser], ["removing its creator", null]] as const) {
    refused(await patchClaim(alice, "alices", { metadata: { annotations: { [CREATED_BY]: annotation } } }), CLAIMER_GUARD,
      new RegExp(`annotation kubelock\\.io/created-by of LockClaim ${ns}/alices cannot be changed or removed \\(it is ${aliceUser}\\)`), `alice ${what}`);
  }
  // A claim from before the policy has no recorded creator: not guarded.
  assert.equal((await asAdmin(["get", "lockclaim", "before-guard", "-n", ns, "-o", "jsonpath={.metadata.annotations.kubelock\\.io/created-by}"])).stdout, "");
  passed(await patchClaim(bob, "before-guard", release), "bob releasing a claim made before the policy");

  // The operator writes what it writes on any claim: the pod-uid annotation, status, and the removal of the release
  // finalizer that earlier versions put on claims.
  passed(await asOperator(["patch", "lockclaim", "alices", "-n", ns, "--type=merge", "--dry-run=server", "-p",
    JSON.stringify({ metadata: { finalizers: ["kubelock.io/release"], annotations: { "kubelock.io/pod-uid": "0b7c6a5e-0000-4000-8000-000000000000" } } })]),
  "the operator's finalizer and annotation");
  const operatorCustom = kubeConfig(testEnv.operatorKubeconfig).makeApiClient(k8s.CustomObjectsApi);
  passed(await apiCall(() => operatorCustom.patchNamespacedCustomObjectStatus({
    group: GROUP, version: VERSION, plural: CLAIM_PLURAL, namespace: ns, name: "alices", body: { status: { phase: "Granted", fencingToken: "1" } }, dryRun: "All",
  }, mergePatch)), "the operator's status write");

  // Priority cap: label the namespace; creating or raising above it is refused (as Invalid: the operator reports a
  // pod's claim refused so as an event), a claim above it from before can still be renewed.
  passed(await asUser(alice, ["create", "-f", "-"], claim("high", { priority: 7 })), "alice creates a claim of priority 7");
  passed(await asAdmin(["label", "namespace", ns, "kubelock.io/max-priority=5"]), "labelling the namespace");
  const above = (priority: number, name: string) =>
    new RegExp(`spec\\.priority ${priority} of LockClaim ${ns}/${name} is above 5, the most namespace ${ns} allows \\(its label kubelock\\.io/max-priority\\)`);
  await untilRefused("priority 6", CLAIMER_GUARD, () => asUser(alice, ["create", "--dry-run=server", "-f", "-"], claim("six", { priority: 6 })));
  const six = await asUser(alice, ["create", "--dry-run=server", "-f", "-"], claim("six", { priority: 6 }));
  refused(six, CLAIMER_GUARD, above(6, "six"), "creating a claim of priority 6");
  assert.match(six.stderr, /is invalid/, "refused as Invalid (422), as the operator expects of a claim it cannot create");
  passed(await asUser(alice, ["create", "--dry-run=server", "-f", "-"], claim("five", { priority: 5 })), "creating a claim of priority 5");
  refused(await asUser(testEnv.operatorKubeconfig, ["create", "--dry-run=server", "-f", "-"], claim("pods-claim", { priority: 10, podName: "pod" })),
    CLAIMER_GUARD, above(10, "pods-claim"), "the operator creating a pod's claim of priority 10");
  refused(await patchClaim(alice, "alices", { spec: { priority: 9 } }), CLAIMER_GUARD, above(9, "alices"), "alice raising her claim to 9");
  passed(await patchClaim(alice, "high", renew), "renewing a claim of priority 7 made before the cap");
  passed(await patchClaim(alice, "high", { spec: { priority: 6 } }), "lowering it");

  // The operator on this namespace: it writes status on alice's claims (one above the cap) without
  // a refusal, and a pod asking above the cap gets a Warning event instead of a claim.
  const api = new Api(ns);
  await api.createLock("shared");
  operator = await startOperator({ namespace: ns });
  await api.waitForClaim("alices", "reconciled", (c) => c.status?.phase !== undefined);
  await api.waitForClaim("high", "reconciled", (c) => c.status?.phase !== undefined);
  const asked = Date.now();
  await api.core.createNamespacedPod({
    namespace: ns,
    body: { metadata: { name: "urgent", annotations: { [LOCK_ANNOTATION]: "shared", [PRIORITY_ANNOTATION]: "9" } }, spec: { containers: [{ name: "main", image: "busybox" }] } },
  });
  const event = await eventually("InvalidLockClaim event", async () => {
    const events = await api.core.listNamespacedEvent({ namespace: ns, fieldSelector: "involvedObject.name=urgent" });
    return events.items.find((e) => e.reason === "InvalidLockClaim");
  });
  assert.match(event.message ?? "", above(9, "urgent"));
  // One sentence naming the policy that refused, from the refusal's causes (not the HTTP response dump).
  assert.match(event.message ?? "", new RegExp(`^cannot create LockClaim for lock "shared": the API server refused it: ValidatingAdmissionPolicy '${CLAIMER_GUARD}' .*\\.$`));
  assert.equal(await api.getClaim("urgent"), undefined);
  // The operator logs the same line; an admission refusal is no sign of missing permissions, and the one asked for.
  const logged = operator.output().split("\n").filter((line) => line.includes('"reason":"InvalidLockClaim"'));
  assert.ok(logged.length > 0 && logged.every((line) => line.includes(`"pod":"${ns}/urgent"`)), `InvalidLockClaim log lines:\n${logged.join("\n")}`);
  const refusedLines = refusals(operator.output());
  assert.ok(refusedLines.every((line) => line.includes('"reason":"InvalidLockClaim"') && line.includes(`"pod":"${ns}/urgent"`)),
    `refusals other than the pod's claim:\n${refusedLines.join("\n")}`);
  operator.excuseRefusals(asked, Date.now());
  await operator.stop(); // fails on any other request the API server refused
  operator = undefined;

  passed(await asAdmin(["label", "--overwrite", "namespace", ns, "kubelock.io/max-priority=high"]), "a label that is no number");
  await untilRefused("a claim under a bad cap", CLAIMER_GUARD, () => asUser(alice, ["create", "--dry-run=server", "-f", "-"], claim("any")));
  refused(await asUser(alice, ["create", "--dry-run=server", "-f", "-"], claim("any")), CLAIMER_GUARD,
    new RegExp(`the label kubelock\\.io/max-priority of namespace ${ns} must be a non-negative integer, not "high"`), "a claim under a bad cap");
});
