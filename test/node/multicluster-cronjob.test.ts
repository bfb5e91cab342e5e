/**
 * Example (b), examples/cronjob-once-across-clusters.yaml, on two clusters with a real node each: both
 * run deploy/ (only the image substituted) with the operator config the example's comment gives
 * (clusterName east or west, the shared Redis as that cluster's pods reach it), and the example as
 * written in a namespace of the same name in both. One run of the CronJob is started in each cluster,
 * at once, or the second once the first one's report ran (the clusters' start skew); what the workloads
 * did (pod logs, exit codes, Job conditions) shows that the report ran once, in one cluster, with the
 * token its claim carried, and that the other cluster's run gave up (exit 3) without running it.
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
/** The Job each test makes from the CronJob in each cluster, as the CronJob makes one on schedule. */
const jobName = "nightly-report-manual";

interface Cluster {
  name: "east" | "west";
  kubeconfig: string;
  /** The shared Redis as this cluster's pods reach it. */
  redisUrl: string;
  /** This cluster's own node. */
  node: string;
}

const clusters: Cluster[] = [];
const histories: ClaimHistory[] = [];

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

before(async () => {
  clusters.push(
    { name: "east", kubeconfig: testEnv.kubeconfig, redisUrl: required("KUBELOCK_TEST_NODE_REDIS_URL"), node: required("KUBELOCK_TEST_NODE") },
    { name: "west", kubeconfig: testEnv.secondKubeconfig, redisUrl: required("KUBELOCK_TEST_NODE_REDIS_URL_2"), node: required("KUBELOCK_TEST_NODE_2") },
  );
  await Promise.all(clusters.map((c) => deployOperator({ kubeconfig: c.kubeconfig, config: operatorConfig(c) })));
});
after(() => histories.forEach((h) => h.stop()));
after(async () => {
  for (const c of clusters) await assertOperatorNeverForbidden(c.kubeconfig);
});

/** The example applied in a fresh namespace of the same name in both clusters, and each cluster's claim history there. */
interface Setting {
  namespace: string;
  history: Map<Cluster, ClaimHistory>;
}

async function applyExample(): Promise<Setting> {
  const setting: Setting = { namespace: `report-${randomBytes(3).toString("hex")}`, history: new Map() };
  for (const c of clusters) {
    await inCluster(c, ["create", "namespace", setting.namespace]);
    await inCluster(c, ["apply", "-n", setting.namespace, "-f", "-"], exampleManifest(example));
    await inCluster(c, ["wait", "-n", setting.namespace, "--for=condition=Ready", "distributedlock/nightly-report", "--timeout=60s"]);
    const history = new ClaimHistory(setting.namespace, kubeConfig(c.kubeconfig));
    histories.push(history);
    await history.start();
    setting.history.set(c, history);
  }
  return setting;
}

/** Starts one run of the CronJob in `cluster`. */
const startRun = (cluster: Cluster, setting: Setting) =>
  inCluster(cluster, ["create", "job", "-n", setting.namespace, "--from=cronjob/nightly-report", jobName]);

/** What one cluster's run of the CronJob did, as its Job, pod and container report it. */
interface Outcome {
  cluster: Cluster;
  job: k8s.V1Job;
  pods: k8s.V1Pod[];
  exitCode?: number;
  logs: string;
}

const condition = (job: k8s.V1Job, type: string) => job.status?.conditions?.find((c) => c.type === type && c.status === "True");

async function outcome(cluster: Cluster, setting: Setting): Promise<Outcome> {
  const get = async <T>(args: string[]) => JSON.parse(await inCluster(cluster, ["get", "-n", setting.namespace, ...args, "-o", "json"])) as T;
  const job = await get<k8s.V1Job>([`job/${jobName}`]);
  const pods = (await get<k8s.V1PodList>(["pods", "-l", `job-name=${jobName}`])).items;
  const exitCode = pods[0]?.status?.containerStatuses?.find((s) => s.name === "report")?.state?.terminated?.exitCode;
  const logs = pods[0] ? await inCluster(cluster, ["logs", "-n", setting.namespace, pods[0].metadata!.name!, "-c", "report"]).catch(() => "") : "";
  return { cluster, job, pods, exitCode, logs };
}

const reportToken = (logs: string) => /^report run with token (\d+)$/m.exec(logs)?.[1];

/** The first report: the run (among `runs`' clusters) that logged it, its token, and the lock's holds in Redis just after. */
interface Report {
  run: Outcome;
  token: string;
  /** The example lock's holds in the shared Redis: one JSON per hold, naming its cluster. */
  holds: Record<string, string>[];
}

async function firstReport(setting: Setting, runs: Cluster[]): Promise<Report> {
  const run = await eventually("a report run", async () => {
    for (const c of runs) {
      const o = await outcome(c, setting);
      if (reportToken(o.logs)) return o;
    }
    return undefined;
  }, 180_000, 1000);
  const redis = new Redis(required("KUBELOCK_TEST_REDIS_URL"), { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    // The info hash also describes queued claims (the other cluster's, waiting): the holds are the members of the holds set.
    const base = `kubelock:{${setting.namespace}/nightly-report}`;
    const ids = await redis.zrange(`${base}:holds`, 0, -1);
    const info = ids.length > 0 ? await redis.hmget(`${base}:info`, ...ids) : [];
    return { run, token: reportToken(run.logs)!, holds: info.map((h) => JSON.parse(h ?? "{}") as Record<string, string>) };
  } finally {
    redis.disconnect();
  }
}

/**
 * Waits until both clusters' runs finished, then checks from what they did that the report ran once, as
 * `report` saw it: that run exited 0 on its cluster's node and its Job completed; the other run's pod
 * exited 3 after its 5s wait without the report, and its Job failed with no retry; the winner's claim was
 * granted once, with the report's token, and was the one hold in Redis, marked with its cluster; the
 * other cluster's claim waited and was never granted.
 */
async function assertRanOnce(setting: Setting, report: Report): Promise<void> {
  const done = await Promise.all(clusters.map((c) => eventually(`${c.name}'s Job finished`, async () => {
    const o = await outcome(c, setting);
    return (condition(o.job, "Complete") || condition(o.job, "Failed")) && o.exitCode !== undefined ? o : undefined;
  }, 180_000, 1000)));
  const ran = done.filter((o) => reportToken(o.logs));
  assert.equal(ran.length, 1, `the report ran in ${ran.map((o) => o.cluster.name).join(" and ") || "no cluster"}:\n${done.map((o) => `${o.cluster.name}:\n${o.logs}`).join("\n")}`);
  const [winner, loser] = ran[0] === done[0] ? done : [done[1], done[0]];
  assert.equal(winner.cluster, report.run.cluster);

  for (const o of done) {
    assert.equal(o.pods.length, 1, `${o.cluster.name}: one pod, no retry`);
    assert.equal(o.pods[0].spec?.nodeName, o.cluster.node, `${o.cluster.name}'s run ran on its own node`);
  }
  assert.equal(winner.exitCode, 0, winner.logs);
  assert.ok(condition(winner.job, "Complete"), `${winner.cluster.name}'s Job completed: ${JSON.stringify(winner.job.status)}`);
  assert.equal(loser.exitCode, 3, loser.logs);
  assert.match(loser.logs, /timed out after 5s waiting for lock nightly-report/);
  assert.ok(condition(loser.job, "Failed"), `${loser.cluster.name}'s Job failed without a retry: ${JSON.stringify(loser.job.status)}`);
  assert.deepEqual(report.holds.map((h) => [h.cluster, h.fencingToken]), [[winner.cluster.name, report.token]],
    "after the report, the one hold in Redis was the winner's");

  // The claims as each cluster's API server recorded them.
  const { grants } = setting.history.get(winner.cluster)!.replay();
  assert.deepEqual(grants.map((g) => g.token), [report.token], `${winner.cluster.name}'s grants: ${JSON.stringify(grants)}`);
  assert.match(grants[0].name, /^nightly-report-run-/);
  assert.equal(report.holds[0].claim, grants[0].name, "the hold in Redis is that claim's");
  const other = setting.history.get(loser.cluster)!;
  assert.ok(other.events.some((e) => e.name.startsWith("nightly-report-run-") && e.phase === "Pending"), `${loser.cluster.name}'s run claimed the lock`);
  assert.deepEqual(other.replay().grants, [], `${loser.cluster.name}'s claim was never granted`);
}

test("(b) one run started in each cluster at once: the report runs in exactly one, the other gives up", async () => {
  const setting = await applyExample();
  await Promise.all(clusters.map((c) => startRun(c, setting)));
  await assertRanOnce(setting, await firstReport(setting, clusters));
});

test("(b) the other cluster's run starting once the report ran (start skew): it finds the lock held and gives up", async () => {
  const setting = await applyExample();
  const [first, second] = clusters;
  await startRun(first, setting);
  const report = await firstReport(setting, [first]);
  await startRun(second, setting);
  await assertRanOnce(setting, report);
});
