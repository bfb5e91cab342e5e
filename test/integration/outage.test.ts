/**
 * A backend outage longer than the lease: the operator is cut off from Redis (a proxy in front of the real
 * server stops) while a claim holds, Redis expires the hold, and when Redis is reachable again the claim
 * must show Lost before the next claim is granted, with a larger fencing token.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import Redis from "ioredis";
import { createNamespace, eventually, testEnv } from "../support/env";
import { Api, ClaimHistory, startOperator, type OperatorProcess } from "../support/operator";
import { TcpProxy } from "../support/tcp-proxy";

let namespace: string;
let api: Api;
let history: ClaimHistory;
let operator: OperatorProcess | undefined;
let proxy: TcpProxy;
let redis: Redis;

before(async () => {
  namespace = await createNamespace("outage");
  api = new Api(namespace);
  history = new ClaimHistory(namespace);
  await history.start();
  const upstream = new URL(testEnv.redisUrl);
  proxy = new TcpProxy(upstream.hostname, Number(upstream.port));
  await proxy.start();
  redis = new Redis(testEnv.redisUrl);
  operator = await startOperator({
    namespace,
    config: `defaultBackend: kubernetes\nbackends:\n  - {name: redis, type: redis, redis: {url: "redis://${proxy.address}", keyPrefix: ${namespace}, commandTimeoutMs: 500}}\n`,
  });
});

after(async () => {
  history?.stop();
  await operator?.stop();
  await proxy?.stop();
  redis?.disconnect();
});

test("a hold that expired during a backend outage shows Lost before anything else is granted", async () => {
  await api.createLock("guarded", { backend: "redis", leaseDurationSeconds: 2 });
  await api.createClaim("first", { lockName: "guarded" });
  const first = await api.waitForPhase("first", "Granted");
  await api.createClaim("second", { lockName: "guarded" });
  await api.waitForPhase("second", "Pending");

  await proxy.stop(); // the operator loses Redis; Redis itself keeps running and expires the hold
  const holds = `${namespace}:{${namespace}/guarded}:holds`;
  await eventually("the hold expired in Redis", async () => ((await redis.exists(holds)) === 0 ? true : undefined), 15_000);
  const unavailable = await api.waitForClaim("first", "BackendUnavailable while cut off", (c) =>
    c.status?.conditions?.some((x) => x.type === "Granted" && x.reason === "BackendUnavailable") ?? false);
  assert.equal(unavailable.status?.phase, "Granted", "while the backend cannot answer, nothing is decided about the hold");
  await proxy.start();

  const lost = await api.waitForPhase("first", "Lost");
  assert.equal(lost.status?.conditions?.find((c) => c.type === "Granted")?.reason, "Lost");
  const second = await api.waitForPhase("second", "Granted");
  assert.ok(BigInt(second.status!.fencingToken!) > BigInt(first.status!.fencingToken!), "the next grant's token is larger");
  const events = history.events.filter((e) => e.name === "first" || e.name === "second");
  const lostAt = events.findIndex((e) => e.name === "first" && e.phase === "Lost");
  const grantedAt = events.findIndex((e) => e.name === "second" && e.phase === "Granted");
  assert.ok(lostAt >= 0 && lostAt < grantedAt, `Lost is shown before the next grant: ${events.map((e) => `${e.name}:${e.phase}`).join(" ")}`);
});
