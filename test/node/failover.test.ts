/**
 * Failover on the real node: the leading operator pod is deleted while a Job's pods take turns; another
 * replica (the standby or the Deployment's replacement) leads within the documented bound and the grants
 * go on, one holder at a time; a `kubectl rollout restart` replaces both replicas while claims are held on
 * the kubernetes and Redis backends, and every Granted claim stays Granted with its token throughout.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createNamespace, eventually, kubectl } from "../support/env";
import { Api, ClaimHistory } from "../support/operator";
import {
  assertOperatorNeverForbidden, claimerServiceAccount, core, criticalSections, deployOperator, leaders, lockedJob, ok, operatorNamespace,
  operatorPods, sharedLogDir, theLeader,
} from "./support";

let namespace: string;
let api: Api;
const shared = sharedLogDir();

/** The operator's config with a Redis backend (the environment's server, as pods reach it). */
const redisConfig = () => `defaultBackend: kubernetes
clusterName: ""
backends:
  - { name: redis, type: redis, redis: { url: "${process.env.KUBELOCK_TEST_NODE_REDIS_URL}" } }
`;

before(async () => {
  // deploy/'s ConfigMap given a Redis backend, as a user would edit it; the replicas restart to read it.
  await deployOperator({ config: redisConfig() });
  namespace = await createNamespace("failover");
  api = new Api(namespace);
  await claimerServiceAccount(namespace, "migrator");
});
after(() => assertOperatorNeverForbidden());
after(() => rmSync(shared, { recursive: true, force: true }));

// --leader-elect-lease-duration (15s) and --leader-elect-retry-period (2s) as deploy/ runs the operator,
// plus room for a loaded machine.
const takeoverBoundMs = 15_000 + 2_000 + 8_000;

test("the leader pod deleted mid-Job: the other replica leads within the lease bound, grants go on one at a time", async () => {
  await api.createLock("work", { maxHolders: 1 });
  await ok(kubectl(["apply", "-n", namespace, "-f", "-"], { input: lockedJob({ name: "work", lock: "work", pods: 6, sharedDir: shared, seconds: 3 }) }));
  await eventually("a first critical section", () => (existsSync(join(shared, "log")) ? true : undefined), 180_000);

  const leader = await theLeader();
  const [other] = (await operatorPods()).map((p) => p.metadata!.name!).filter((name) => name !== leader);
  assert.ok(other, "a second replica runs");
  const deleted = Date.now();
  await core().deleteNamespacedPod({ name: leader, namespace: operatorNamespace });
  // The standby, or the Deployment's replacement for the deleted pod: whichever asks first after the old leader
  // let the Lease go (it does on SIGTERM) leads; never the deleted one, and never two.
  const next = await eventually("another replica leading", async () => {
    const found = await leaders();
    return found.length === 1 && found[0] !== leader ? found[0] : undefined;
  }, takeoverBoundMs);
  console.log(`failover: ${next === other ? "the standby" : "the replacement"} ${next} led ${((Date.now() - deleted) / 1000).toFixed(1)}s after ${leader} was deleted`);

  await ok(kubectl(["wait", "-n", namespace, "--for=condition=Complete", "job/work", "--timeout=300s"]));
  const sections = criticalSections(readFileSync(join(shared, "log"), "utf8"), 1);
  assert.equal(sections.length, 6);
  await ok(kubectl(["rollout", "status", "-n", operatorNamespace, "deployment/kubelock-operator", "--timeout=180s"]));
});

test("rollout restart replaces both replicas while claims are held: every Granted claim stays Granted with its token", async () => {
  const history = new ClaimHistory(namespace);
  await history.start();
  // On the kubernetes backend (Leases) and on Redis, reached from the pods.
  const backends: Record<string, string | undefined> = { orders: undefined, payments: undefined, "redis-orders": "redis", "redis-payments": "redis" };
  const held = Object.keys(backends);
  const tokens = new Map<string, string>();
  for (const name of held) {
    await api.createLock(name, { maxHolders: 1, ...(backends[name] && { backend: backends[name] }) });
    await api.createClaim(`${name}-holder`, { lockName: name });
    tokens.set(name, (await api.waitForPhase(`${name}-holder`, "Granted", 60_000)).status!.fencingToken!);
  }
  const before = new Set((await operatorPods()).map((p) => p.metadata!.name!));
  await ok(kubectl(["rollout", "restart", "-n", operatorNamespace, "deployment/kubelock-operator"]));
  await ok(kubectl(["rollout", "status", "-n", operatorNamespace, "deployment/kubelock-operator", "--timeout=300s"]));
  const leader = await theLeader();
  assert.ok(!before.has(leader), "a replica of the new rollout leads");

  // The new leader works: a new claim is granted, while the held ones keep their holds.
  await api.createLock("after-restart", { maxHolders: 1 });
  await api.createClaim("after-restart-holder", { lockName: "after-restart" });
  await api.waitForPhase("after-restart-holder", "Granted", 60_000);
  history.stop();
  for (const name of held) {
    const seen = history.events.filter((e) => e.name === `${name}-holder`);
    const left = seen.find((e) => e.fencingToken && (e.phase !== "Granted" || e.fencingToken !== tokens.get(name) || e.deleted));
    assert.equal(left, undefined, `${name}-holder left Granted with token ${tokens.get(name)}: ${JSON.stringify(left)}`);
    const claim = await api.getClaim(`${name}-holder`);
    assert.equal(claim?.status?.phase, "Granted");
    assert.equal(claim?.status?.fencingToken, tokens.get(name));
  }
});
