/**
 * Two clusters (two independent API servers) whose operators share one Redis: together they hold at
 * most `maxHolders`, and each cluster's lock status shows the other's holders with their cluster.
 * This is examples/cronjob-once-across-clusters.yaml's setting.
 */
import assert from "node:assert/strict";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { randomBytes } from "node:crypto";
import * as k8s from "@kubernetes/client-node";
import { eventually, kubeConfig, kubectl, testEnv } from "../support/env";
import { Api, startOperator, type OperatorProcess } from "../support/operator";

const repoRoot = resolve(__dirname, "..", "..");
const namespace = `shared-${randomBytes(3).toString("hex")}`;
const config = (cluster: string) => `defaultBackend: kubernetes
clusterName: ${cluster}
backends:
  - name: shared-redis
    type: redis
    redis: { url: "${testEnv.redisUrl}", keyPrefix: multicluster }
`;

const clusters: { name: string; kubeconfig: string; api: Api; operator?: OperatorProcess }[] = [];

before(async () => {
  // Each cluster's operator runs as that cluster's deploy/ ServiceAccount.
  for (const [name, kubeconfig, operatorKubeconfig] of [
    ["east", testEnv.kubeconfig, testEnv.operatorKubeconfig],
    ["west", testEnv.secondKubeconfig, testEnv.secondOperatorKubeconfig],
  ]) {
    const kc = kubeConfig(kubeconfig);
    await kc.makeApiClient(k8s.CoreV1Api).createNamespace({ body: { metadata: { name: namespace } } });
    const api = new Api(namespace, kc);
    const operator = await startOperator({ namespace, kubeconfig: operatorKubeconfig, config: config(name) });
    clusters.push({ name, kubeconfig, api, operator });
  }
});

after(async () => {
  for (const c of clusters) await c.operator?.stop();
});

const [east, west] = [() => clusters[0], () => clusters[1]];

test("the once-only CronJob example applies in both clusters", async () => {
  for (const c of clusters) {
    const result = await kubectl(["apply", "-n", namespace, "-f", join(repoRoot, "examples/cronjob-once-across-clusters.yaml")], { kubeconfig: c.kubeconfig });
    assert.equal(result.code, 0, result.stderr);
  }
  await east().api.createClaim("east-run", { lockName: "nightly-report" });
  await west().api.createClaim("west-run", { lockName: "nightly-report" });
  const winner = await eventually("one cluster granted", async () => {
    const phases = await Promise.all(clusters.map(async (c) => (await c.api.getClaim(`${c.name}-run`))?.status?.phase));
    return phases.includes("Granted") ? phases : undefined;
  });
  assert.equal(winner.filter((p) => p === "Granted").length, 1, `exactly one cluster runs the report: ${winner}`);
  const [holder, other] = winner[0] === "Granted" ? [east(), west()] : [west(), east()];
  const remote = await eventually("the other cluster sees the remote holder", async () => {
    const holders = (await other.api.getLock("nightly-report")).status?.holders ?? [];
    return holders.length === 1 ? holders[0] : undefined;
  });
  assert.equal(remote.cluster, holder.name);
  assert.equal(remote.claim, `${holder.name}-run`);
  const local = await holder.api.waitForLock("nightly-report", "shows its own holder", (l) => (l.status?.holders ?? []).length === 1);
  assert.equal(local.status!.holders![0].cluster, undefined, "a cluster's own holders carry no cluster field");
  await holder.api.deleteClaim(`${holder.name}-run`);
  await other.api.waitForPhase(`${other.name}-run`, "Granted");
});

test("a semaphore of 2 shared by two clusters holds at most 2 across both", async () => {
  for (const c of clusters) await c.api.createLock("shared-sem", { backend: "shared-redis", maxHolders: 2 });
  for (let i = 0; i < 3; i++) {
    await east().api.createClaim(`east-${i}`, { lockName: "shared-sem" });
    await west().api.createClaim(`west-${i}`, { lockName: "shared-sem" });
  }
  const granted = async () => {
    const all = await Promise.all(clusters.map((c) => c.api.listClaims()));
    return all.flat().filter((c) => c.spec.lockName === "shared-sem" && c.status?.phase === "Granted");
  };
  // Claims this test already deleted are releasing (status first, then the backend): only claims
  // nobody has released yet count, and those really hold while both lists are read.
  const deleted = new Set<string>();
  while (deleted.size < 6) {
    const now = (await granted()).filter((c) => !deleted.has(c.metadata.name));
    assert.ok(now.length <= 2, `at most 2 holders across both clusters, saw ${now.map((c) => c.metadata.name)}`);
    for (const claim of now) {
      deleted.add(claim.metadata.name);
      const owner = claim.metadata.name.startsWith("east") ? east() : west();
      await owner.api.deleteClaim(claim.metadata.name);
    }
    if (now.length === 0) await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(deleted.size, 6, "every claim in both clusters was granted in turn");
});
