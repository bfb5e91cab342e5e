/**
 * Leases shorter than a failover: a lock whose leaseDurationSeconds (3 s) is shorter than the operator's leader
 * failover (leader lease 4 s, plus polling and the first renewals) keeps its holds when the leader is killed,
 * because every replica renews the holds of Granted claims, the standby included. Per backend that keeps holds
 * by lease (kubernetes, redis, etcd): the holder stays Granted with its token, nothing is Lost, no waiter is
 * granted meanwhile, and the new leader serves the queue afterwards.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createNamespace, eventually, testEnv } from "../support/env";
import { Api, ClaimHistory, startOperator, type OperatorProcess } from "../support/operator";

const LOCK_LEASE_SECONDS = 3;
let namespace: string;
let api: Api;
let history: ClaimHistory;
const replicas: OperatorProcess[] = [];

const config = () => `defaultBackend: kubernetes
backends:
  - {name: redis, type: redis, redis: {url: "${testEnv.redisUrl}", keyPrefix: ${namespace}}}
  - {name: etcd, type: etcd, etcd: {endpoints: ["${testEnv.etcdEndpoint}"], prefix: /${namespace}}}
`;

const leads = (op: OperatorProcess) => op.output().includes("acquired the leader lease; leading");

async function replica(): Promise<OperatorProcess> {
  const op = await startOperator({
    namespace, config: config(),
    extraArgs: [
      "--leader-elect", "--leader-elect-namespace", namespace, "--leader-elect-id", "failover",
      "--leader-elect-lease-duration", "4s", "--leader-elect-renew-deadline", "3s", "--leader-elect-retry-period", "500ms",
    ],
  });
  replicas.push(op);
  return op;
}

before(async () => {
  namespace = await createNamespace("failover");
  api = new Api(namespace);
  history = new ClaimHistory(namespace);
  await history.start();
  await replica();
  await eventually("a leader", () => (replicas.some(leads) ? true : undefined));
  await replica();
});

after(async () => {
  history?.stop();
  await Promise.all(replicas.map((op) => op.stop()));
});

for (const backend of ["kubernetes", "redis", "etcd"]) {
  test(`${backend}: a leader crash keeps every hold of a ${LOCK_LEASE_SECONDS}s lease Granted with its token`, async () => {
    const lock = `short-${backend}`;
    const [holder, waiter] = [`${backend}-holder`, `${backend}-waiter`];
    await api.createLock(lock, { backend: backend === "kubernetes" ? undefined : backend, leaseDurationSeconds: LOCK_LEASE_SECONDS });
    await api.createClaim(holder, { lockName: lock });
    const granted = await api.waitForPhase(holder, "Granted");
    await api.createClaim(waiter, { lockName: lock });
    await api.waitForPhase(waiter, "Pending");

    const leader = replicas.find((op) => leads(op) && !op.output().includes("exiting"))!;
    const standby = replicas.find((op) => op !== leader && !leads(op))!;
    await leader.kill();
    replicas.splice(replicas.indexOf(leader), 1);
    await eventually("the standby leads", () => (leads(standby) ? true : undefined), 30_000);
    // Two more lock leases under the new leader: the hold must still be there, never renewed too late.
    const ledAt = Date.now();
    await eventually("two lock leases after the failover", () => (Date.now() - ledAt > 2 * LOCK_LEASE_SECONDS * 1000 ? true : undefined));
    const still = await api.getClaim(holder);
    assert.equal(still?.status?.phase, "Granted", `the holder kept its grant: ${JSON.stringify(still?.status?.conditions)}`);
    assert.equal(still?.status?.fencingToken, granted.status?.fencingToken);
    assert.equal((await api.getClaim(waiter))?.status?.phase, "Pending", "nobody else was granted meanwhile");
    assert.ok(!history.events.some((e) => e.name === holder && e.phase === "Lost"), "never shown Lost");

    await api.deleteClaim(holder);
    const next = await api.waitForPhase(waiter, "Granted");
    assert.ok(BigInt(next.status!.fencingToken!) > BigInt(granted.status!.fencingToken!));
    assert.equal(history.replay(new Set([holder, waiter])).maxGranted, 1);
    await replica(); // a standby again for the next backend
  });
}
