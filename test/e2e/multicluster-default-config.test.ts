/**
 * Two clusters sharing one backend, both with the shipped default config (no clusterName): each names its
 * holds after its own kube-system namespace's UID, so neither takes the other's holds for its own or releases
 * them as orphans. Both claims never show Granted at once, for several leases, and each cluster's lock status
 * shows the other's holder under the other's derived name.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { eventually, kubeConfig, testEnv } from "../support/env";
import { Api, startOperator, type OperatorProcess } from "../support/operator";

const namespace = `default-${randomBytes(3).toString("hex")}`;
const LEASE_SECONDS = 2;
const config = () => `backends:
  - {name: shared, type: redis, redis: {url: "${testEnv.redisUrl}", keyPrefix: ${namespace}}}
`;

const clusters: { api: Api; uid: string; operator?: OperatorProcess }[] = [];

before(async () => {
  // Each cluster's operator runs as that cluster's deploy/ ServiceAccount.
  for (const [kubeconfig, operatorKubeconfig] of [
    [testEnv.kubeconfig, testEnv.operatorKubeconfig],
    [testEnv.secondKubeconfig, testEnv.secondOperatorKubeconfig],
  ]) {
    const core = kubeConfig(kubeconfig).makeApiClient(k8s.CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: namespace } } });
    const uid = (await core.readNamespace({ name: "kube-system" })).metadata!.uid!;
    const operator = await startOperator({ namespace, kubeconfig: operatorKubeconfig, config: config() });
    clusters.push({ api: new Api(namespace, kubeConfig(kubeconfig)), uid, operator });
  }
});

after(async () => {
  for (const c of clusters) await c.operator?.stop();
});

test("default config on both clusters: one holder across both, for several leases, and no cross-release", async () => {
  assert.notEqual(clusters[0].uid, clusters[1].uid);
  for (const c of clusters) {
    await c.api.createLock("once", { backend: "shared", leaseDurationSeconds: LEASE_SECONDS });
    await c.api.createClaim("run", { lockName: "once" });
  }
  const phases = () => Promise.all(clusters.map(async (c) => (await c.api.getClaim("run"))?.status?.phase));
  await eventually("one cluster granted", async () => ((await phases()).includes("Granted") ? true : undefined));
  const first = (await phases()).indexOf("Granted");
  const token = (await clusters[first].api.getClaim("run"))?.status?.fencingToken;
  const start = Date.now();
  let checks = 0;
  while (Date.now() - start < 4 * LEASE_SECONDS * 1000) {
    const now = await phases();
    assert.ok(now.filter((p) => p === "Granted").length <= 1, `never both Granted: ${now}`);
    checks++;
  }
  assert.ok(checks > 10, `checked ${checks} times`);
  assert.deepEqual(await phases(), first === 0 ? ["Granted", "Pending"] : ["Pending", "Granted"], "the first holder kept its grant");
  const [holder, other] = first === 0 ? clusters : [clusters[1], clusters[0]];
  assert.equal((await holder.api.getClaim("run"))?.status?.fencingToken, token, "with the same token");
  const shown = await other.api.waitForLock("once", "shows the other cluster's holder", (l) => l.status?.holders?.length === 1);
  assert.equal(shown.status!.holders![0].cluster, `cluster-${holder.uid}`);
  await holder.api.deleteClaim("run");
  await other.api.waitForPhase("run", "Granted");
});
