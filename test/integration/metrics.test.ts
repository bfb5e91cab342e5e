/**
 * /metrics after a known workload, and the health probes: /healthz always 200, /readyz 503 until the caches have
 * synced and 200 once they have, also while a configured backend does not answer (that shows in its locks' Ready
 * condition and the metrics).
 */
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { after, test } from "node:test";
import { kubeconfigFile } from "../support/cli";
import { createNamespace, eventually, kubeConfig, kubeConfigFor, testEnv } from "../support/env";
import { Api, startOperator, type OperatorProcess } from "../support/operator";
import { TcpProxy } from "../support/tcp-proxy";

const operators: OperatorProcess[] = [];
after(async () => {
  await Promise.all(operators.map((op) => op.stop()));
});

/** The address an operator logged for a server ("serving metrics" / "serving health probes"). */
function address(op: OperatorProcess, msg: string): string {
  const line = op.output().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)).find((l) => l.msg === msg);
  assert.ok(line, `operator logged "${msg}"`);
  return line.address as string;
}

const get = async (url: string) => {
  const res = await fetch(url);
  return { status: res.status, body: await res.text() };
};

/** Prometheus text → the value of the series `name` whose labels include `labels` (summed over the rest). */
function value(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  let total: number | undefined;
  for (const line of text.split("\n")) {
    const match = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const has = Object.entries(labels).every(([k, v]) => (match[2] ?? "").split(",").includes(`${k}="${v}"`));
    if (has) total = (total ?? 0) + Number(match[3]);
  }
  return total;
}

/** A port nothing listens on (bound, then closed). */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

test("after N grants every kubelock_ series is there with matching values; /readyz is 200 once synced", async () => {
  const namespace = await createNamespace("metrics");
  const api = new Api(namespace);
  const op = await startOperator({ namespace });
  operators.push(op);
  const metricsUrl = `http://${address(op, "serving metrics")}/metrics`;
  const health = `http://${address(op, "serving health probes")}`;
  assert.deepEqual(await get(`${health}/healthz`), { status: 200, body: "ok\n" });
  await eventually("/readyz 200", async () => ((await get(`${health}/readyz`)).status === 200 ? true : undefined));

  const N = 5;
  const names = Array.from({ length: N }, (_, i) => `m${i}`);
  await api.createLock("batch", { maxHolders: 1 });
  for (const name of names) await api.createClaim(name, { lockName: "batch" });
  await api.waitForPhase("m0", "Granted");
  await eventually("gauges show 1 holder and N-1 waiting", async () => {
    const text = await (await fetch(metricsUrl)).text();
    return value(text, "kubelock_holders") === 1 && value(text, "kubelock_waiting") === N - 1 ? true : undefined;
  });
  for (const name of names) {
    await api.waitForPhase(name, "Granted");
    await api.deleteClaim(name);
  }
  await eventually("every claim is gone", async () => ((await api.listClaims()).length === 0 ? true : undefined));
  const text = await eventually("the last release is counted", async () => {
    const body = (await get(metricsUrl)).body;
    return value(body, "kubelock_releases_total") === N && value(body, "kubelock_holders") === 0 ? body : undefined;
  });

  const k8s = { backend: "kubernetes" };
  assert.equal(value(text, "kubelock_grants_total", { ...k8s, reason: "Granted" }), N);
  assert.equal(value(text, "kubelock_releases_total", { ...k8s, reason: "Released" }), N);
  assert.equal(value(text, "kubelock_grant_wait_seconds_count", k8s), N);
  const waited = value(text, "kubelock_grant_wait_seconds_sum", k8s)!;
  assert.ok(waited > 0 && waited < 300, `grant waits sum to ${waited}s`);
  assert.equal(value(text, "kubelock_handoff_seconds_count", k8s), N - 1, "every grant after the first followed a release");
  const handoff = value(text, "kubelock_handoff_seconds_sum", k8s)!;
  assert.ok(handoff >= 0 && handoff < (N - 1) * 5, `handoffs sum to ${handoff}s`);
  assert.equal(value(text, "kubelock_waiting"), 0);
  // A release followed by a grant in one pass is one handOff call (the Lease backend's one update for both).
  const calls = (operation: string) => value(text, "kubelock_backend_operation_seconds_count", { ...k8s, operation }) ?? 0;
  assert.ok(calls("handOff") >= 1, "a hand-off is timed as one");
  assert.ok(calls("tryAcquire") + calls("handOff") >= N, `grants: ${calls("tryAcquire")} tryAcquire, ${calls("handOff")} handOff`);
  assert.ok(calls("release") + calls("handOff") >= N, `releases: ${calls("release")} release, ${calls("handOff")} handOff`);
  assert.ok(value(text, "kubelock_reconcile_duration_seconds_count", { kind: "DistributedLock" })! >= N);
  assert.equal(value(text, "kubelock_reconcile_errors_total"), undefined, "no reconcile failed");
  assert.equal(value(text, "kubelock_backend_errors_total"), undefined, "no backend call failed");
  assert.equal(value(text, "kubelock_workqueue_depth", { queue: "locks" }), 0);
  assert.equal(value(text, "kubelock_leader"), 1, "without --leader-elect the replica runs the controllers");
  assert.match(text, /^kubelock_build_info\{version="\d+\.\d+\.\d+[^"]*",node_version="v\d+[^"]*"\} 1$/m);
  assert.match(text, /^kubelock_process_cpu_user_seconds_total /m, "process metrics are prefixed too");
  assert.ok(text.split("\n").filter((l) => l && !l.startsWith("#")).every((l) => l.startsWith("kubelock_")), "every name is prefixed kubelock_");
  assert.doesNotMatch(text, /claim=|m0/, "never a per-claim label");
});

test("a configured backend that does not answer leaves /readyz 200 (this replica can do its job) and shows in its lock's Ready condition and metrics; --metrics-per-lock labels gauges", async () => {
  const namespace = await createNamespace("readyz");
  const api = new Api(namespace);
  const port = await deadPort();
  const op = await startOperator({
    namespace,
    extraArgs: ["--metrics-per-lock"],
    config: `backends:\n  - name: cache\n    type: redis\n    redis: { url: "redis://127.0.0.1:${port}", connectTimeoutMs: 300, commandTimeoutMs: 300 }\n`,
  });
  operators.push(op);
  const health = `http://${address(op, "serving health probes")}`;
  const metricsUrl = `http://${address(op, "serving metrics")}/metrics`;
  assert.equal((await get(`${health}/healthz`)).status, 200);
  // startOperator returned once the caches synced: ready, though the backend has never answered.
  const readyz = await get(`${health}/readyz`);
  assert.equal(readyz.status, 200, readyz.body);

  // Locks on the working backend are still served, and counted per lock; the broken one is an error.
  await api.createLock("fine", {});
  await api.createLock("broken", { backend: "cache" });
  await api.createClaim("w0", { lockName: "fine" });
  await api.waitForPhase("w0", "Granted");
  await api.waitForLock("broken", "Ready=False naming the unreachable backend", (l) =>
    l.status?.conditions?.some((c) => c.type === "Ready" && c.status === "False" && /cache/.test(c.message)) ?? false);
  const text = await eventually("per-lock gauges and backend errors", async () => {
    const body = (await get(metricsUrl)).body;
    return value(body, "kubelock_holders", { namespace, lock: "fine" }) === 1 && value(body, "kubelock_backend_errors_total", { backend: "cache" }) ? body : undefined;
  });
  assert.ok(value(text, "kubelock_reconcile_errors_total", { kind: "DistributedLock" })! >= 1);
  assert.equal(value(text, "kubelock_holders", { namespace, lock: "broken" }), undefined, "no state for a lock that never reconciled");
});

test("/readyz is 503, naming what start-up waits for, while the caches cannot sync; 200 once they have", async () => {
  const namespace = await createNamespace("readyz-sync");
  // The operator reaches the API server through a proxy that relays nothing yet: its lists get no answer, so its
  // caches cannot sync, however long this test takes to look.
  const server = new URL(kubeConfig().getCurrentCluster()!.server);
  const proxy = new TcpProxy(server.hostname, Number(server.port || 443));
  await proxy.start();
  proxy.partition();
  try {
    const op = await startOperator({
      namespace, until: "serving health probes", config: "clusterName: readyz-sync\n", // a clusterName: no kube-system read at start
      kubeconfig: kubeconfigFile(kubeConfigFor(`https://${proxy.address}`, testEnv.operatorKubeconfig)),
    });
    operators.push(op);
    const health = `http://${address(op, "serving health probes")}`;
    assert.equal((await get(`${health}/healthz`)).status, 200, "alive all along");
    const unready = await get(`${health}/readyz`);
    assert.equal(unready.status, 503, unready.body);
    assert.deepEqual(unready.body.trim().split("\n"), [
      "cache distributedlocks sync: not done yet", "cache lockclaims sync: not done yet", "cache pods sync: not done yet",
      "first renewal of the holds found: not done yet",
    ]);
    assert.doesNotMatch(op.output(), /caches synced/);

    proxy.heal();
    await eventually("/readyz 200 once the caches synced", async () => ((await get(`${health}/readyz`)).status === 200 ? true : undefined), 60_000);
    assert.match(op.output(), /caches synced/);
  } finally {
    proxy.heal();
    await proxy.stop();
  }
});
