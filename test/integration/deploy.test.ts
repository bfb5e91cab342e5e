/**
 * deploy/ on the real API server: `kubectl apply -k deploy/` succeeds, and the operator runs with
 * exactly the deploy ServiceAccount's permissions (its token, not admin) through the core flow. (Every
 * test runs the operator so; rbac.test.ts shows holds kept with it on every backend.)
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { tokenKubeconfig } from "../env/operator-identity";
import { createNamespace, kubectl, testEnv } from "../support/env";
import { Api, startOperator, type OperatorProcess } from "../support/operator";
import { tempDir } from "../support/temp";

const repoRoot = resolve(__dirname, "..", "..");
let operator: OperatorProcess | undefined;

/** A kubeconfig that authenticates with a token (TokenRequest) of `serviceAccount` in `namespace`, nothing else. */
async function serviceAccountKubeconfig(namespace: string, serviceAccount: string): Promise<string> {
  const token = await kubectl(["create", "token", serviceAccount, "-n", namespace, "--duration=1h"]);
  assert.equal(token.code, 0, token.stderr);
  const file = join(tempDir("kubelock-sa-"), "kubeconfig");
  writeFileSync(file, tokenKubeconfig(testEnv.kubeconfig, serviceAccount, token.stdout.trim()));
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

test("the ZooKeeper session handover Secret: the operator may read and patch it, and no other Secret", async () => {
  const canI = async (verb: string, resource: string) => (await kubectl(["auth", "can-i", verb, resource, "-n", "kubelock-system",
    "--as", "system:serviceaccount:kubelock-system:kubelock-operator"])).stdout.trim();
  assert.equal(await canI("get", "secret/kubelock-zookeeper-sessions"), "yes");
  assert.equal(await canI("patch", "secret/kubelock-zookeeper-sessions"), "yes");
  assert.equal(await canI("get", "secret/some-other-secret"), "no");
  assert.equal(await canI("list", "secrets"), "no");
  const reader = await kubectl(["auth", "can-i", "get", "secret/kubelock-zookeeper-sessions", "-n", "kubelock-system", "--as", "system:serviceaccount:kubelock-system:default"]);
  assert.equal(reader.stdout.trim(), "no", "another ServiceAccount of the namespace can read the session");
});

test("the operator ClusterRole has no wildcards", async () => {
  const role = JSON.parse((await kubectl(["get", "clusterrole/kubelock-operator", "-o", "json"])).stdout);
  for (const rule of role.rules) {
    for (const field of ["apiGroups", "resources", "verbs"]) assert.ok(!rule[field].includes("*"), `${field} has a wildcard`);
  }
});

test("the operator runs the core flow as the deploy ServiceAccount, and not without its binding", async () => {
  // startOperator's default identity (every test's): the shipped ServiceAccount, not admin.
  const whoami = await kubectl(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"], { kubeconfig: testEnv.operatorKubeconfig });
  assert.equal(whoami.code, 0, whoami.stderr);
  assert.equal(whoami.stdout, "system:serviceaccount:kubelock-system:kubelock-operator");

  const namespace = await createNamespace("rbac");
  const api = new Api(namespace);
  operator = await startOperator({ namespace });
  await api.createLock("guarded");
  await api.createClaim("first", { lockName: "guarded" });
  await api.createClaim("second", { lockName: "guarded" });
  await api.waitForPhase("first", "Granted");
  await api.waitForPhase("second", "Pending");
  await api.deleteClaim("first");
  await api.waitForPhase("second", "Granted");
  await operator.stop();
  operator = undefined;

  // A ServiceAccount without the binding cannot even start (its first refused request may be the cluster
  // identity read or a list). Its own account, not the shipped binding removed: other tests' operators use that.
  const created = await kubectl(["create", "serviceaccount", "unbound", "-n", namespace]);
  assert.equal(created.code, 0, created.stderr);
  const unbound = await serviceAccountKubeconfig(namespace, "unbound");
  const denied = await startOperator({ namespace, kubeconfig: unbound, syncTimeoutMs: 20_000 }).then(
    (op) => op.stop().then(() => "started"),
    (err: Error) => err.message,
  );
  assert.match(denied, new RegExp(`HTTP 403: .*system:serviceaccount:${namespace}:unbound.*cannot (list|get) resource`));
});
