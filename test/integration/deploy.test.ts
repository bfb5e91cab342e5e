/**
 * deploy/ on the real API server: `kubectl apply -k deploy/` succeeds, and the operator runs with
 * exactly the deploy ServiceAccount's permissions (its token, not admin) through the core flow.
 */
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { createNamespace, kubeConfig, kubectl } from "../support/env";
import { Api, startOperator, type OperatorProcess } from "../support/operator";

const repoRoot = resolve(__dirname, "..", "..");
let operator: OperatorProcess | undefined;

/** A kubeconfig that authenticates with a ServiceAccount's token (TokenRequest), nothing else. */
export async function serviceAccountKubeconfig(namespace: string, serviceAccount: string): Promise<string> {
  const token = await kubectl(["create", "token", serviceAccount, "-n", namespace, "--duration=1h"]);
  assert.equal(token.code, 0, token.stderr);
  const cluster = kubeConfig().getCurrentCluster()!;
  const file = join(mkdtempSync(join(tmpdir(), "kubelock-sa-")), "kubeconfig");
  writeFileSync(file, `apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: { server: "${cluster.server}", certificate-authority: "${cluster.caFile}" }
users:
- name: ${serviceAccount}
  user: { token: "${token.stdout.trim()}" }
contexts:
- name: sa
  context: { cluster: test, user: ${serviceAccount}, namespace: ${namespace} }
current-context: sa
`);
  return file;
}

before(async () => {
  const applied = await kubectl(["apply", "--server-side", "--force-conflicts", "-k", join(repoRoot, "deploy")]);
  assert.equal(applied.code, 0, applied.stderr);
});

after(async () => {
  await operator?.stop();
});

test("kubectl apply -k deploy/ creates every object", async () => {
  const objects = await kubectl(["get", "-n", "kubelock-system", "deployment/kubelock-operator", "serviceaccount/kubelock-operator",
    "configmap/kubelock-config", "service/kubelock-metrics", "-o", "name"]);
  assert.equal(objects.code, 0, objects.stderr);
  assert.equal(objects.stdout.trim().split("\n").length, 4);
  const roles = await kubectl(["get", "clusterrole/kubelock-operator", "clusterrole/kubelock-claimer", "clusterrolebinding/kubelock-operator", "-o", "name"]);
  assert.equal(roles.code, 0, roles.stderr);
  const deployment = JSON.parse((await kubectl(["get", "-n", "kubelock-system", "deployment/kubelock-operator", "-o", "json"])).stdout);
  const container = deployment.spec.template.spec.containers[0];
  assert.equal(deployment.spec.replicas, 2);
  assert.ok(container.args.includes("--leader-elect"));
  assert.equal(container.securityContext.readOnlyRootFilesystem, true);
  assert.deepEqual(container.securityContext.capabilities.drop, ["ALL"]);
  assert.equal(deployment.spec.template.spec.securityContext.runAsNonRoot, true);
});

test("the operator ClusterRole has no wildcards", async () => {
  const role = JSON.parse((await kubectl(["get", "clusterrole/kubelock-operator", "-o", "json"])).stdout);
  for (const rule of role.rules) {
    for (const field of ["apiGroups", "resources", "verbs"]) assert.ok(!rule[field].includes("*"), `${field} has a wildcard`);
  }
});

test("the operator runs the core flow as the deploy ServiceAccount, and not without its binding", async () => {
  const namespace = await createNamespace("rbac");
  const api = new Api(namespace);
  const asOperator = await serviceAccountKubeconfig("kubelock-system", "kubelock-operator");
  operator = await startOperator({ namespace, kubeconfig: asOperator });
  await api.createLock("guarded");
  await api.createClaim("first", { lockName: "guarded" });
  await api.createClaim("second", { lockName: "guarded" });
  await api.waitForPhase("first", "Granted");
  await api.waitForPhase("second", "Pending");
  await api.deleteClaim("first");
  await api.waitForPhase("second", "Granted");
  await operator.stop();
  operator = undefined;

  // Without the binding, the same ServiceAccount cannot even list locks: start-up says so.
  const removed = await kubectl(["delete", "clusterrolebinding/kubelock-operator"]);
  assert.equal(removed.code, 0, removed.stderr);
  try {
    const denied = await startOperator({ namespace, kubeconfig: asOperator, syncTimeoutMs: 20_000 }).then(
      (op) => op.stop().then(() => "started"),
      (err: Error) => err.message,
    );
    assert.match(denied, /forbidden/i);
    assert.match(denied, /HTTP 403: .*system:serviceaccount:kubelock-system:kubelock-operator.*cannot (list|get) resource/);
  } finally {
    await kubectl(["apply", "--server-side", "--force-conflicts", "-k", join(repoRoot, "deploy")]);
  }
});
