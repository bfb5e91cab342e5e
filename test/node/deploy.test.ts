/**
 * deploy/ on a real node: `kubectl apply -k` (only the image substituted) runs two operator replicas
 * from the image built with the project's Dockerfile, with their probes, leader election, metrics
 * Service, JSON logs and restricted security context all exercised by a real kubelet.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createNamespace, eventually, kubectl } from "../support/env";
import { Api } from "../support/operator";
import { assertOperatorNeverForbidden, core, deployOperator, gauge, httpGetInNode, ok, operatorNamespace, operatorPods, theLeader } from "./support";

before(() => deployOperator());

after(() => assertOperatorNeverForbidden());

test("deploy/: 2 replicas Running and Ready through their probes, exactly one leader holding the Lease", async () => {
  const pods = await eventually("2 Ready operator pods", async () => {
    const found = await operatorPods();
    const ready = found.filter((p) => p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"));
    return ready.length === 2 ? ready : undefined;
  }, 120_000);
  for (const pod of pods) {
    const container = pod.spec!.containers[0];
    assert.equal(container.readinessProbe?.httpGet?.path, "/readyz");
    assert.equal(container.livenessProbe?.httpGet?.path, "/healthz");
    assert.equal(pod.status!.containerStatuses![0].ready, true);
    assert.equal(pod.status!.containerStatuses![0].restartCount, 0, `${pod.metadata!.name} restarted`);
  }
  const leader = await theLeader();
  const lease = await ok(kubectl(["get", "lease", "-n", operatorNamespace, "kubelock-operator", "-o", "jsonpath={.spec.holderIdentity}"]));
  assert.ok(lease.startsWith(`${leader}_`), `the Lease is held by ${lease}, the leading pod is ${leader}`);
});

test("deploy/: /metrics is served through the kubelock-metrics Service", async () => {
  const service = await core().readNamespacedService({ name: "kubelock-metrics", namespace: operatorNamespace });
  const metrics = await eventually("metrics through the Service", async () => {
    const text = await httpGetInNode(`http://${service.spec!.clusterIP}:8080/metrics`);
    return gauge(text, "kubelock_leader") !== undefined ? text : undefined;
  }, 60_000);
  assert.match(metrics, /^kubelock_build_info\{.*\} 1$/m);
});

test("deploy/: the operator's logs are JSON lines", async () => {
  for (const pod of await operatorPods()) {
    const logs = await ok(kubectl(["logs", "-n", operatorNamespace, pod.metadata!.name!]));
    const lines = logs.trim().split("\n");
    assert.ok(lines.length > 0 && lines[0] !== "", `${pod.metadata!.name} logged nothing`);
    for (const line of lines) {
      const entry = JSON.parse(line) as { ts?: string; level?: string; msg?: string };
      assert.ok(entry.ts && entry.level && entry.msg, `not a log entry: ${line}`);
    }
  }
});

test("deploy/: the container runs as 65532 with a read-only root filesystem and a writable /tmp", async () => {
  const [pod] = await operatorPods();
  const exec = (script: string) => kubectl(["exec", "-n", operatorNamespace, pod.metadata!.name!, "--", "sh", "-c", script]);
  assert.equal((await ok(exec("id -u; id -g"))).trim(), "65532\n65532");
  const write = await exec("touch /app/probe");
  assert.notEqual(write.code, 0, "the root filesystem accepted a write");
  assert.match(write.stderr, /Read-only file system/);
  await ok(exec("touch /tmp/probe && rm /tmp/probe"));
});

test("deploy/: the operator in the cluster grants a claim (in-cluster config, its ServiceAccount)", async () => {
  const namespace = await createNamespace("deploy");
  const api = new Api(namespace);
  await api.createLock("db", { maxHolders: 1 });
  await api.createClaim("first", { lockName: "db" });
  const claim = await api.waitForPhase("first", "Granted", 60_000);
  assert.ok(Number(claim.status?.fencingToken) > 0);
});
