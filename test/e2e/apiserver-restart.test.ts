/**
 * The built-in Lease backend across a restart of its API server, which is then the backend and the status
 * store at once: while it is down the operator can neither renew a hold nor show its claim Lost.
 * - The hold's validity passes during the outage: once the server answers, the claim shows Lost (a renewal that
 *   succeeds late must not revive it: its holder has stopped by its own deadline), and only then is the slot
 *   granted again, with a larger token.
 * - Time without sight of the API server does not count toward a Lease's expiry (runtime/observed.ts): a reader
 *   judges the unchanged Lease expired only a lease after it could read again.
 * - The claim never shows Granted while no Lease names its hold.
 * A reader of its own (a second KubernetesLeaseBackend, as another operator replica) polls throughout, as the
 * chaos run's truth poller does: the claim, the Leases, the claim again.
 *
 * With leader election and an etcd backend, an outage longer than the renew deadline costs the leader its
 * leader Lease, not its holds: it restarts in-process as a follower, and the old instance renews what it knows
 * (etcd is up) until the new one has synced; exiting instead would leave nobody who knows those holds while the
 * API server is away. The control plane is this test's own: restarting the shared one would disturb tests
 * running beside it.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { EtcdBackend } from "../../src/backends/etcd/backend";
import { KubernetesLeaseBackend } from "../../src/backends/kubernetes/backend";
import { controlPlaneBinaries, startControlPlane, type ControlPlane } from "../env/controlplane";
import { installCrds } from "../env/environment";
import { writeOperatorKubeconfig } from "../env/operator-identity";
import { createNamespace, eventually, kubeConfig, testEnv } from "../support/env";
import { Api, leadingAt, logLines, startOperator, type OperatorProcess } from "../support/operator";

const LEASE_SECONDS = 2;

let plane: ControlPlane;
let dir: string;
let api: Api;
let namespace: string;
let operator: OperatorProcess | undefined;
let reader: KubernetesLeaseBackend;
let operatorKubeconfig: string;
let elected: OperatorProcess | undefined;

before(async () => {
  const binDir = await controlPlaneBinaries();
  plane = await startControlPlane(binDir, { name: "restarted", controllerManager: false });
  dir = mkdtempSync(join(tmpdir(), "kubelock-restart-"));
  await installCrds(join(binDir, "kubectl"), plane.kubeconfig);
  operatorKubeconfig = join(dir, "operator.kubeconfig");
  await writeOperatorKubeconfig(join(binDir, "kubectl"), plane.kubeconfig, operatorKubeconfig);
  const admin = kubeConfig(plane.kubeconfig);
  namespace = await createNamespace("restart", admin);
  api = new Api(namespace, admin);
  // A new binding takes effect once the API server's authorizer has seen it: wait until the token may list.
  const asOperator = new Api(namespace, kubeConfig(operatorKubeconfig));
  await eventually("the operator's ServiceAccount may list claims", async () => ((await asOperator.listClaims()) ? true : undefined));
  operator = await startOperator({ namespace, kubeconfig: operatorKubeconfig });
  reader = new KubernetesLeaseBackend({ name: "reader", kubeConfig: admin, requestTimeoutMs: 1000 });
});

after(async () => {
  try {
    await reader?.close();
    await operator?.stop();
    await elected?.stop();
  } finally {
    await plane?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
});

test("after an API-server restart longer than the lease: Lost, never revived, and the slot kept a lease after the server answered", async () => {
  await api.createLock("guarded", { backend: "kubernetes", leaseDurationSeconds: LEASE_SECONDS });
  await api.createClaim("held", { lockName: "guarded" });
  const held = await api.waitForPhase("held", "Granted");
  await api.createClaim("next", { lockName: "guarded" });
  await api.waitForPhase("next", "Pending");

  const key = `${namespace}/guarded`;
  const uid = held.metadata.uid!;
  const granted = async () => {
    const claim = await api.getClaim("held");
    return claim?.status?.phase === "Granted" ? claim.status.fencingToken : undefined;
  };
  const found: string[] = [];
  let rounds = 0;
  let outageMs = 0;
  let answeredAt: number | undefined; // start of the first Lease read after the outage
  let judgedFreeAt: number | undefined; // first Lease read whose expiry judgement let the still-named hold go
  let done = false;
  const pause = () => new Promise((r) => setTimeout(r, 50));
  // Leases alone (servable before the claims' storage is after a restart): when the reader judges the hold expired.
  const leases = (async () => {
    let failedFrom: number | undefined;
    while (!done) {
      const startedAt = Date.now();
      try {
        const named = await reader.namedHolders(key);
        const judged = await reader.holders(key);
        if (failedFrom !== undefined) {
          outageMs = Math.max(outageMs, startedAt - failedFrom);
          answeredAt ??= startedAt;
        }
        failedFrom = undefined;
        if (answeredAt !== undefined && named.some((h) => h.holderId === uid) && !judged.some((h) => h.holderId === uid)) judgedFreeAt ??= startedAt;
      } catch {
        failedFrom ??= startedAt;
      }
      await pause();
    }
  })();
  // The claim around the Leases, as the chaos run's truth poller reads them.
  const claims = (async () => {
    while (!done) {
      try {
        const first = await granted();
        const named = await reader.namedHolders(key);
        const again = await granted();
        rounds++;
        if (first && first === again && !named.some((h) => h.holderId === uid)) {
          found.push(`held shown Granted (token ${first}) while the Leases named ${named.map((h) => h.claim).join(", ") || "nobody"}`);
        }
      } catch {
        // the server is away: nothing to judge this round
      }
      await pause();
    }
  })();

  let lostAt: number;
  try {
    // Stopped for longer than a lease: every renewal fails and the hold's validity passes while nothing can be written.
    const restartedFrom = Date.now();
    await plane.restartApiServer(2 * LEASE_SECONDS * 1000);
    // A restarted server refuses requests until its authorizer has synced RBAC: the operator retries those.
    const asOperator = new Api(namespace, kubeConfig(operatorKubeconfig));
    await eventually("the operator's ServiceAccount may list claims", async () => ((await asOperator.listClaims().catch(() => undefined)) ? true : undefined), 30_000);
    operator?.excuseRefusals(restartedFrom, Date.now());
    const lost = await api.waitForPhase("held", "Lost", 30_000);
    lostAt = Date.now();
    assert.equal(lost.status?.fencingToken, held.status?.fencingToken);
    const next = await api.waitForPhase("next", "Granted", 30_000);
    assert.ok(BigInt(next.status!.fencingToken!) > BigInt(held.status!.fencingToken!), "the next holder's token is larger");
  } finally {
    done = true;
    await Promise.all([leases, claims]);
  }
  assert.ok(outageMs > LEASE_SECONDS * 1000, `the API server was unreachable for ${outageMs} ms, longer than the lease`);
  assert.ok(rounds > 10, `${rounds} rounds read claim and backend`);
  assert.deepEqual(found, [], "a claim shown Granted while no Lease named it");
  // Time without sight of the API server does not count: a reader judges the unchanged Lease expired only a lease
  // after it could read again (on old code: at once, the Lease having been unchanged through the outage).
  assert.ok(answeredAt !== undefined);
  if (judgedFreeAt !== undefined) {
    assert.ok(judgedFreeAt - answeredAt >= LEASE_SECONDS * 1000, `judged expired ${judgedFreeAt - answeredAt} ms after the server answered`);
  }
  assert.ok(lostAt! > answeredAt, "Lost was written once the server answered");
});

test("a leader that loses its leader Lease in an outage restarts in-process as a follower; its etcd holds are renewed throughout", async () => {
  const admin = kubeConfig(plane.kubeconfig);
  const ns = await createNamespace("restart-le", admin);
  const api2 = new Api(ns, admin);
  const prefix = `/${ns}`;
  // After the first test's restart the server's authorizer may not have synced yet: wait until the token may read Leases.
  const leases = kubeConfig(operatorKubeconfig).makeApiClient(k8s.CoordinationV1Api);
  const mayReadLeases = () => eventually("the operator's ServiceAccount may read Leases", () => leases.listNamespacedLease({ namespace: ns }).then(() => true, () => undefined), 30_000);
  await mayReadLeases();
  elected = await startOperator({
    namespace: ns, kubeconfig: operatorKubeconfig,
    config: `backends:\n  - {name: etcd, type: etcd, etcd: {endpoints: ["${testEnv.etcdEndpoint}"], prefix: "${prefix}"}}\n`,
    extraArgs: ["--leader-elect", "--leader-elect-namespace", ns, "--leader-elect-lease-duration", "4s",
      "--leader-elect-renew-deadline", "3s", "--leader-elect-retry-period", "500ms"],
  });
  await eventually("the operator leads", () => leadingAt(elected!));
  // Half the 8 s outage below, so the hold lapses unless renewed throughout; twice the first test's lease, so
  // renewals a third of it apart keep a margin on a loaded machine (2 s lapsed there once at load average 34).
  await api2.createLock("kept", { backend: "etcd", leaseDurationSeconds: 2 * LEASE_SECONDS });
  await api2.createClaim("held", { lockName: "kept" });
  const held = await api2.waitForPhase("held", "Granted");
  await api2.createClaim("next", { lockName: "kept" });
  await api2.waitForPhase("next", "Pending");

  // etcd's view, read by a backend of its own (as another cluster's operator would judge the key).
  const etcd = new EtcdBackend({ name: "truth", endpoints: [testEnv.etcdEndpoint], prefix });
  const gaps: string[] = [];
  let reads = 0;
  let done = false;
  const polling = (async () => {
    while (!done) {
      const holds = await etcd.holders(`${ns}/kept`).catch(() => undefined);
      if (holds) {
        reads++;
        if (!holds.some((h) => h.holderId === held.metadata.uid)) gaps.push(`${new Date().toISOString()}: etcd held ${holds.map((h) => h.claim).join(", ") || "nothing"}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const messages = () => logLines(elected!).map((l) => l.msg);
  try {
    // Longer than the renew deadline (3 s) and the lock's lease (4 s).
    const restartedFrom = Date.now();
    await plane.restartApiServer(8_000);
    // A restarted server refuses requests until its authorizer has synced RBAC: the operator retries those.
    await mayReadLeases();
    for (const op of [elected, operator]) op?.excuseRefusals(restartedFrom, Date.now());
    await eventually("the old instance lost its leader Lease", () => messages().includes("leader election lost; stopping the controllers") || undefined, 30_000);
    await eventually("the follower instance leads", () => messages().filter((m) => m === "acquired the leader lease; leading").length >= 2 || undefined, 30_000);
  } finally {
    done = true;
    await polling;
    await etcd.close();
  }
  assert.ok(messages().includes("operator restarted"), "restarted in the same process");
  assert.ok(!messages().includes("stopped"), "the process never stopped");
  assert.ok(reads > 50, `${reads} reads of etcd`);
  assert.deepEqual(gaps, [], "the hold was missing from etcd");
  const after = await api2.waitForPhase("held", "Granted");
  assert.equal(after.status?.fencingToken, held.status?.fencingToken, "same grant, same token");
  await api2.deleteClaim("held");
  // Generous: make test runs this beside the chaos run, which loads both cores. A timeout says what the operator said.
  const next = await api2.waitForPhase("next", "Granted", 90_000).catch(async (err: Error) => {
    const lock = (await api2.getLock("kept")).status;
    const said = elected!.output().split("\n").filter((l) => /"level":"(warn|error)"|leader|restarted/.test(l)).slice(-15).join("\n");
    throw new Error(`${err.message}; lock status ${JSON.stringify(lock)}; operator's last warnings:\n${said}`);
  });
  assert.ok(BigInt(next.status!.fencingToken!) > BigInt(held.status!.fencingToken!));
});
