/**
 * A follower shows a claim Lost when it can no longer vouch for its hold, without waiting for a leader.
 *
 * Two replicas with --leader-elect and a leader lease (20 s) far longer than the lock's lease (3 s); each reaches
 * Redis through a loopback relay of its own. The leader is killed and, at once, the follower's relay stops
 * relaying (connections stay open). Nobody can lead again for up to 20 s, the follower cannot renew, and a
 * contender of "another cluster" asks Redis for the key every 50 ms. The claim must show Lost before the
 * contender gets the slot (both times taken in this process, Lost when the watch delivered it), while no
 * replica leads: the follower wrote it. A starting replica reports ready only after the first renewal of the
 * holds it found, and says how long that took.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { RedisBackend } from "../../src/backends/redis/backend";
import { createNamespace, eventually, testEnv } from "../support/env";
import { Api, ClaimHistory, findLog, startOperator, type OperatorProcess } from "../support/operator";
import { TcpProxy } from "../support/tcp-proxy";

const LEASE_SECONDS = 3;
let namespace: string;
let api: Api;
let history: ClaimHistory;
let contender: RedisBackend;
const replicas: { op: OperatorProcess; relay: TcpProxy }[] = [];

const leads = (op: OperatorProcess) => op.output().includes("acquired the leader lease; leading");

async function replica(): Promise<{ op: OperatorProcess; relay: TcpProxy }> {
  const upstream = new URL(testEnv.redisUrl);
  const relay = new TcpProxy(upstream.hostname, Number(upstream.port));
  await relay.start();
  const op = await startOperator({
    namespace,
    config: `defaultBackend: kubernetes\nbackends:\n  - {name: redis, type: redis, redis: {url: "redis://${relay.address}", keyPrefix: ${namespace}, commandTimeoutMs: 500}}\n`,
    extraArgs: [
      "--leader-elect", "--leader-elect-namespace", namespace, "--leader-elect-id", "follower-lost",
      "--leader-elect-lease-duration", "20s", "--leader-elect-renew-deadline", "15s", "--leader-elect-retry-period", "1s",
    ],
  });
  replicas.push({ op, relay });
  return { op, relay };
}

before(async () => {
  namespace = await createNamespace("follower-lost");
  api = new Api(namespace);
  history = new ClaimHistory(namespace);
  await history.start();
  contender = new RedisBackend("other-cluster", { url: testEnv.redisUrl, keyPrefix: namespace, commandTimeoutMs: 1000, connectTimeoutMs: 1000, cluster: false });
  await replica();
  await eventually("a leader", () => (replicas.some((r) => leads(r.op)) ? true : undefined), 30_000);
});

after(async () => {
  history?.stop();
  for (const { op, relay } of replicas) {
    await op.stop().catch(() => undefined);
    relay.heal();
    await relay.stop();
  }
  await contender?.close();
});

test("a starting replica is ready only after a first renewal of the holds it found", async () => {
  await api.createLock("guarded", { backend: "redis", leaseDurationSeconds: LEASE_SECONDS });
  await api.createClaim("holder", { lockName: "guarded" });
  await api.waitForPhase("holder", "Granted");
  const { op } = await replica();
  const synced = findLog(op, "caches synced");
  assert.equal(typeof synced?.firstRenewalsMs, "number", `the ready line says how long the first renewals took: ${JSON.stringify(synced)}`);
  assert.ok(!leads(op), "the new replica follows");
});

test("leader killed and follower cut off from the backend: the follower shows the claim Lost before the slot can go elsewhere", async () => {
  const leader = replicas.find((r) => leads(r.op))!;
  const follower = replicas.find((r) => r !== leader)!;
  const granted = (await api.getClaim("holder"))!;
  assert.equal(granted.status?.phase, "Granted");

  await leader.op.kill();
  follower.relay.partition();
  const cutAt = Date.now();
  const request = { key: `${namespace}/guarded`, maxHolders: 1, leaseDurationSeconds: 30, holderId: "contender", claim: "contender", holderIdentity: "contender", cluster: "other" };
  const taken = await eventually("the contender takes the slot once Redis expired the hold", async () => {
    const hold = await contender.tryAcquire(request);
    return hold ? { at: Date.now(), token: hold.fencingToken } : undefined;
  }, 20_000, 50);

  const lostSeen = history.events.find((e) => e.name === "holder" && e.phase === "Lost");
  assert.ok(lostSeen, `the holder must show Lost with no leader: ${history.events.map((e) => `${e.name}:${e.phase}`).join(" ")}`);
  assert.ok(lostSeen.at < taken.at, `Lost seen ${lostSeen.at - cutAt} ms after the cut, the slot taken at ${taken.at - cutAt} ms`);
  assert.ok(!leads(follower.op), "nobody led meanwhile: the follower wrote it");
  const lost = await api.getClaim("holder");
  assert.match(lost?.status?.conditions?.find((c) => c.type === "Granted")?.message ?? "", /replica that does not lead/);
  assert.ok(BigInt(taken.token) > BigInt(granted.status!.fencingToken!));
  assert.ok(await contender.release(request.key, "contender"));
  follower.relay.heal();
});
