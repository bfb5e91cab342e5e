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
 * chaos run's truth poller does: the claim, the Leases, the claim again. The control plane is this test's own:
 * restarting the shared one would disturb tests running beside it.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { KubernetesLeaseBackend } from "../../src/backends/kubernetes";
import { controlPlaneBinaries, startControlPlane, type ControlPlane } from "../env/controlplane";
import { installCrds } from "../env/environment";
import { writeOperatorKubeconfig } from "../env/operator-identity";
import { createNamespace, eventually, kubeConfig } from "../support/env";
import { Api, startOperator, type OperatorProcess } from "../support/operator";

const LEASE_SECONDS = 2;

let plane: ControlPlane;
let dir: string;
let api: Api;
let namespace: string;
let operator: OperatorProcess | undefined;
let reader: KubernetesLeaseBackend;

before(async () => {
  const binDir = await controlPlaneBinaries();
  plane = await startControlPlane(binDir, { name: "restarted", controllerManager: false });
  dir = mkdtempSync(join(tmpdir(), "kubelock-restart-"));
  await installCrds(join(binDir, "kubectl"), plane.kubeconfig);
  const operatorKubeconfig = join(dir, "operator.kubeconfig");
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
    await plane.restartApiServer(2 * LEASE_SECONDS * 1000);
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
