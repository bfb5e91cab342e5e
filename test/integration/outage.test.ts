/**
 * A holder cut off from the backend stops being Granted before the backend can grant its slot elsewhere.
 *
 * The operator reaches Redis through a loopback relay. The relay then stops relaying while every connection
 * stays open (a partition: nothing fails fast), longer than the lease. Meanwhile a contender of "another
 * cluster" asks Redis directly for the same key every 50 ms. The claim must show Lost (validity deadline = last
 * renewal start + lease − margin, on the operator's own clock) before the contender gets the slot; the times
 * compared are both taken in this process, the Lost one when the watch delivered it (later than the write), so
 * the check is conservative. Once the partition heals, nothing is granted with a smaller token, and the next
 * claim of this cluster gets the slot only after the backend let the old hold go.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { RedisBackend } from "../../src/backends/redis/backend";
import { createNamespace, eventually, testEnv } from "../support/env";
import { Api, ClaimHistory, startOperator, type OperatorProcess } from "../support/operator";
import { TcpProxy } from "../support/tcp-proxy";

const LEASE_SECONDS = 3;

let namespace: string;
let api: Api;
let history: ClaimHistory;
let operator: OperatorProcess | undefined;
let proxy: TcpProxy;
let contender: RedisBackend;

before(async () => {
  namespace = await createNamespace("outage");
  api = new Api(namespace);
  history = new ClaimHistory(namespace);
  await history.start();
  const upstream = new URL(testEnv.redisUrl);
  proxy = new TcpProxy(upstream.hostname, Number(upstream.port));
  await proxy.start();
  contender = new RedisBackend("other-cluster", { url: testEnv.redisUrl, keyPrefix: namespace, commandTimeoutMs: 1000, connectTimeoutMs: 1000, cluster: false });
  operator = await startOperator({
    namespace,
    config: `defaultBackend: kubernetes\nbackends:\n  - {name: redis, type: redis, redis: {url: "redis://${proxy.address}", keyPrefix: ${namespace}, commandTimeoutMs: 500}}\n`,
  });
});

after(async () => {
  history?.stop();
  await operator?.stop();
  proxy?.heal();
  await proxy?.stop();
  await contender?.close();
});

test("partitioned from its backend, a holder shows Lost before anyone else can be granted the slot", async () => {
  await api.createLock("guarded", { backend: "redis", leaseDurationSeconds: LEASE_SECONDS });
  await api.createClaim("first", { lockName: "guarded" });
  const first = await api.waitForPhase("first", "Granted");
  await api.createClaim("second", { lockName: "guarded" });
  await api.waitForPhase("second", "Pending");

  const key = `${namespace}/guarded`;
  const request = { key, maxHolders: 1, leaseDurationSeconds: 30, holderId: "contender", claim: "contender", holderIdentity: "contender", cluster: "other" };
  proxy.partition();
  const partitionedAt = Date.now();
  const taken = await eventually("the contender takes the slot once Redis expired the hold", async () => {
    const hold = await contender.tryAcquire(request);
    return hold ? { at: Date.now(), token: hold.fencingToken } : undefined;
  }, 20_000, 50);
  const lostSeen = history.events.find((e) => e.name === "first" && e.phase === "Lost");
  assert.ok(lostSeen, `first must show Lost while partitioned: ${history.events.map((e) => `${e.name}:${e.phase}`).join(" ")}`);
  assert.ok(lostSeen.at < taken.at, `Lost shown ${lostSeen.at - partitionedAt} ms into the partition, the slot taken at ${taken.at - partitionedAt} ms`);
  assert.ok(lostSeen.at - partitionedAt <= LEASE_SECONDS * 1000 + 1000, "Lost by the validity deadline, not much later");
  const lost = await api.getClaim("first");
  assert.equal(lost?.status?.conditions?.find((c) => c.type === "Granted")?.reason, "Lost");

  // While the other cluster holds, this cluster grants nothing; after it lets go, the next grant's token is larger.
  proxy.heal();
  await api.waitForClaim("second", "Pending behind the other cluster's holder", (c) => c.status?.phase === "Pending");
  await api.waitForLock("guarded", "shows the other cluster's holder", (l) => l.status?.holders?.some((h) => h.cluster === "other") ?? false);
  assert.ok(await contender.release(key, "contender"));
  const second = await api.waitForPhase("second", "Granted");
  assert.ok(BigInt(second.status!.fencingToken!) > BigInt(taken.token), "the next grant's token is larger than every earlier one");
  assert.ok(BigInt(taken.token) > BigInt(first.status!.fencingToken!));
  assert.equal(history.replay(new Set(["first", "second"])).maxGranted, 1);
});

/**
 * A heartbeat claim on `lock` expires while `next` waits; with `deleteExpired`, the expired claim is deleted at once
 * (its holder may still be at work until its lease ends). Either way `next` is granted only a full lease later.
 */
async function lockDelay(lock: string, deleteExpired: boolean): Promise<void> {
  const [beat, next] = [`${lock}-beat`, `${lock}-next`];
  await api.createLock(lock, { backend: "redis", leaseDurationSeconds: LEASE_SECONDS });
  await api.createClaim(beat, { lockName: lock, leaseDurationSeconds: 1 });
  await api.createClaim(next, { lockName: lock }); // behind beat: created after it (and named after it)
  const expired = await eventually(`${beat} Expired in the history`, async () => history.events.find((e) => e.name === beat && e.phase === "Expired"), 20_000);
  if (deleteExpired) await api.deleteClaim(beat);
  const granted = await api.waitForPhase(next, "Granted", 20_000);
  const expiredAt = expired.at;
  const grantedAt = history.events.find((e) => e.name === next && e.phase === "Granted")!.at;
  // Both times are watch deliveries of writes by the same operator, so their difference is the operator's delay.
  assert.ok(grantedAt - expiredAt >= LEASE_SECONDS * 1000 - 300, `granted ${grantedAt - expiredAt} ms after the heartbeat expired`);
  assert.ok(BigInt(granted.status!.fencingToken!) > 0n);
  assert.equal(history.replay(new Set([beat, next])).maxGranted, 1);
}

test("lock-delay: a hold whose heartbeat expired is left to lapse a full lease before the slot is granted again", () => lockDelay("delayed", false));

test("lock-delay outlives the claim: an Expired claim deleted at once still leaves its hold to lapse a full lease", () => lockDelay("delayed-deleted", true));
