/**
 * Example (b), examples/cronjob-once-across-clusters.yaml, on two clusters with a real node each: both
 * run deploy/ (only the image substituted) with the operator config the example's comment gives
 * (clusterName east or west, the shared Redis as that cluster's pods reach it), and the example as
 * written in a namespace of the same name. One run of the CronJob is started in each cluster at once;
 * what the workloads did (pod logs, exit codes, Job conditions) shows that the report ran once, in one
 * cluster, with the token its claim carried, and that the other cluster's run gave up (exit 3) without it.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import type * as k8s from "@kubernetes/client-node";
import Redis from "ioredis";
import { eventually, kubeConfig, kubectl, testEnv } from "../support/env";
import { ClaimHistory } from "../support/operator";
import { assertOperatorNeverForbidden, deployOperator, exampleManifest, ok, required } from "./support";

const example = "cronjob-once-across-clusters.yaml";
const namespace = `report-${randomBytes(3).toString("hex")}`;

interface Cluster {
  name: "east" | "west";
  kubeconfig: string;
  /** The shared Redis as this cluster's pods reach it. */
  redisUrl: string;
  /** This cluster's own node. */
  node: string;
  history?: ClaimHistory;
}

const clusters: Cluster[] = [];

/**
 * The operator config that the example's comment gives for cluster east, for `cluster`: its clusterName,
 * and the Redis URL its pods reach instead of the comment's placeholder.
 */
function operatorConfig(cluster: Cluster): string {
  const text = readFileSync(join(resolve(__dirname, "..", ".."), "examples", example), "utf8").split("\n");
  const from = text.findIndex((line) => line.startsWith("# Operator config in cluster east"));
  assert.ok(from >= 0, `${example} gives the operator config in its comment`);
  const lines = text.slice(from + 1);
  const config = lines.slice(0, lines.findIndex((line) => !line.startsWith("#   "))).map((line) => line.slice(4)).join("\n");
  assert.match(config, /clusterName: east\n/);
  assert.match(config, /"redis:\/\/redis\.shared:6379"/);
  return `${config.replace("clusterName: east", `clusterName: ${cluster.name}`).replace("redis://redis.shared:6379", cluster.redisUrl)}\n`;
}

const inCluster = (cluster: Cluster, args: string[], input?: string) => ok(kubectl(args, { kubeconfig: cluster.kubeconfig, input }));
const getJson = async <T>(cluster: Cluster, args: string[]): Promise<T> => JSON.parse(await inCluster(cluster, ["get", "-n", namespace, ...args, "-o", "json"])) as T;

before(async () => {
  clusters.push(
    { name: "east", kubeconfig: testEnv.kubeconfig, redisUrl: required("KUBELOCK_TEST_NODE_REDIS_URL"), node: required("KUBELOCK_TEST_NODE") },
    { name: "west", kubeconfig: testEnv.secondKubeconfig, redisUrl: required("KUBELOCK_TEST_NODE_REDIS_URL_2"), node: required("KUBELOCK_TEST_NODE_2") },
  );
  await Promise.all(clusters.map((c) => deployOperator({ kubeconfig: c.kubeconfig, config: operatorConfig(c) })));
  for (const c of clusters) {
    await inCluster(c, ["create", "namespace", namespace]);
    await inCluster(c, ["apply", "-n", namespace, "-f", "-"], exampleManifest(example));
    await inCluster(c, ["wait", "-n", namespace, "--for=condition=Ready", "distributedlock/nightly-report", "--timeout=60s"]);
    c.history = new ClaimHistory(namespace, kubeConfig(c.kubeconfig));
    await c.history.start();
  }
});
after(() => clusters.forEach((c) => c.history?.stop()));
after(async () => {
  for (const c of clusters) await assertOperatorNeverForbidden(c.kubeconfig);
});

/** What one cluster's run of the CronJob did, as its Job, pod and container report it. */
interface Outcome {
  cluster: Cluster;
  job: k8s.V1Job;
  pods: k8s.V1Pod[];
  exitCode?: number;
  logs: string;
}

const condition = (job: k8s.V1Job, type: string) => job.status?.conditions?.find((c) => c.type === type && c.status === "True");

async function outcome(cluster: Cluster, jobName: string): Promise<Outcome> {
  const job = await getJson<k8s.V1Job>(cluster, [`job/${jobName}`]);
  const pods = (await getJson<k8s.V1PodList>(cluster, ["pods", "-l", `job-name=${jobName}`])).items;
  const exitCode = pods[0]?.status?.containerStatuses?.find((s) => s.name === "report")?.state?.terminated?.exitCode;
  const logs = pods[0] ? await inCluster(cluster, ["logs", "-n", namespace, pods[0].metadata!.name!, "-c", "report"]).catch(() => "") : "";
  return { cluster, job, pods, exitCode, logs };
}

const reportToken = (logs: string) => /^report run with token (\d+)$/m.exec(logs)?.[1];

test("(b) one run of the CronJob in each cluster at once: the report runs in exactly one, the other gives up", async () => {
  const jobName = `nightly-report-${randomBytes(2).toString("hex")}`;
  await Promise.all(clusters.map((c) => inCluster(c, ["create", "job", "-n", namespace, "--from=cronjob/nightly-report", jobName])));

  // The winner's report ran; it now keeps the lock for --hold-at-least. Its hold in Redis names its cluster.
  const first = await eventually("a report run in one cluster", async () => {
    for (const c of clusters) {
      const o = await outcome(c, jobName);
      if (reportToken(o.logs)) return o;
    }
    return undefined;
  }, 180_000, 1000);
  const token = reportToken(first.logs)!;
  const redis = new Redis(required("KUBELOCK_TEST_REDIS_URL"), { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    const holds = Object.values(await redis.hgetall(`kubelock:{${namespace}/nightly-report}:info`)).map((h) => JSON.parse(h) as Record<string, string>);
    assert.deepEqual(holds.map((h) => [h.cluster, h.fencingToken]), [[first.cluster.name, token]], "the one hold in Redis is the winner's");
    assert.match(holds[0].claim, /^nightly-report-run-/);
  } finally {
    redis.disconnect();
  }

  const done = await Promise.all(clusters.map((c) => eventually(`${c.name}'s Job finished`, async () => {
    const o = await outcome(c, jobName);
    return (condition(o.job, "Complete") || condition(o.job, "Failed")) && o.exitCode !== undefined ? o : undefined;
  }, 180_000, 1000)));
  const ran = done.filter((o) => reportToken(o.logs));
  assert.equal(ran.length, 1, `the report ran in ${ran.map((o) => o.cluster.name).join(" and ") || "no cluster"}:\n${done.map((o) => `${o.cluster.name}:\n${o.logs}`).join("\n")}`);
  const [winner, loser] = ran[0] === done[0] ? done : [done[1], done[0]];
  assert.equal(winner.cluster, first.cluster);

  for (const o of done) {
    assert.equal(o.pods.length, 1, `${o.cluster.name}: one pod, no retry`);
    assert.equal(o.pods[0].spec?.nodeName, o.cluster.node, `${o.cluster.name}'s run ran on its own node`);
  }
  assert.equal(winner.exitCode, 0, winner.logs);
  assert.ok(condition(winner.job, "Complete"), `${winner.cluster.name}'s Job completed: ${JSON.stringify(winner.job.status)}`);
  assert.equal(loser.exitCode, 3, loser.logs);
  assert.match(loser.logs, /timed out after 5s waiting for lock nightly-report/);
  assert.ok(condition(loser.job, "Failed"), `${loser.cluster.name}'s Job failed without a retry: ${JSON.stringify(loser.job.status)}`);

  // The claims as each cluster's API server recorded them: the winner's granted once, with the token the
  // report printed; the loser's never granted.
  const hold = winner.cluster.history!.replay();
  assert.deepEqual(hold.grants.map((g) => g.token), [token], `${winner.cluster.name}'s grants: ${JSON.stringify(hold.grants)}`);
  assert.match(hold.grants[0].name, /^nightly-report-run-/);
  const other = loser.cluster.history!;
  assert.ok(other.events.some((e) => e.name.startsWith("nightly-report-run-") && e.phase === "Pending"), `${loser.cluster.name}'s run claimed the lock`);
  assert.deepEqual(other.replay().grants, [], `${loser.cluster.name}'s claim was never granted`);
});
