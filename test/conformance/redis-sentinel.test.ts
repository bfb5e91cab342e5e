/**
 * The Redis backend through Redis Sentinel (one master, one replica, three sentinels on loopback;
 * test/env/redis-setups.ts): the conformance suite; `waitReplicas` (WAIT before a grant), what it guarantees and
 * what it costs; and a failover under load: calls succeed again on the new master within a bound, and with the
 * fencing floor the operator passes (the lock's `status.highestFencingToken`) tokens never repeat or go back,
 * while the holds and counter increments the old master took last may be lost (asynchronous replication), as the
 * safety model (docs/design.md) says.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, describe, test } from "node:test";
import Redis from "ioredis";
import { BackendUnavailableError, type AcquireRequest, type LockBackend } from "../../src/backends/backend";
import { redisPlugin } from "../../src/backends/redis";
import type { RedisBackend } from "../../src/backends/redis/backend";
import { SENTINEL_MASTER, SentinelRedis } from "../env/redis-setups";
import { eventually, kubeConfig } from "../support/env";
import { holdRequest, runBackendConformance } from "./backend-conformance";

const random = () => randomBytes(4).toString("hex");

let started: Promise<SentinelRedis> | undefined;
const sentinel = () => (started ??= SentinelRedis.create());

const opened: LockBackend[] = [];
const raws: Redis[] = [];
after(async () => {
  await Promise.allSettled(opened.map((b) => b.close()));
  for (const r of raws) r.disconnect();
  if (started) await (await started).destroy();
});

/** A backend through the sentinels (the url's host is not used; the sentinels name the master). */
async function backend(settings: Record<string, unknown> = {}): Promise<RedisBackend> {
  const { sentinels } = await sentinel();
  const b = (await redisPlugin.factory({ name: "redis-sentinel", kubeConfig: kubeConfig(), clusterName: "",
    settings: { url: `redis://${SENTINEL_MASTER}`, sentinels, sentinelName: SENTINEL_MASTER, ...settings } })) as RedisBackend;
  opened.push(b);
  return b;
}

/** A plain connection to one server (not through the sentinels). */
function raw(port: number): Redis {
  const r = new Redis({ host: "127.0.0.1", port, maxRetriesPerRequest: 1 });
  r.on("error", () => undefined);
  raws.push(r);
  return r;
}

/** The ports of the server the sentinels name master, and of the other one. */
async function roles(): Promise<{ master: number; replica: number }> {
  const setup = await sentinel();
  const master = await setup.masterPort();
  return { master, replica: setup.servers.map((s) => s.port).find((p) => p !== master)! };
}

runBackendConformance("redis through Sentinel", () => backend(), { supportsExpiry: true, minLeaseSeconds: 1 });

describe("redis through Sentinel", () => {
  test("waitReplicas: a grant is on the replica when it returns; WAIT's cost per acquire", async (t) => {
    const { master, replica } = await roles();
    const prefix = `wait-${random()}`;
    const [plain, waiting] = [await backend({ keyPrefix: prefix }), await backend({ keyPrefix: prefix, waitReplicas: { replicas: 1, timeoutMs: 1000 } })];
    const onReplica = raw(replica);
    const key = `ns-${random()}/wait`;
    const holdsKey = `${prefix}:{${key}}:holds`;
    const rounds = 150;
    const times = { plain: [] as number[], waiting: [] as number[] };
    for (let i = 0; i < rounds; i++) {
      // Alternating which goes first, so neither always meets a warmer connection.
      for (const which of i % 2 ? (["plain", "waiting"] as const) : (["waiting", "plain"] as const)) {
        const b = which === "plain" ? plain : waiting;
        const request = holdRequest(key, `${which}-${i}`);
        const begun = process.hrtime.bigint();
        const hold = await b.tryAcquire(request);
        times[which].push(Number(process.hrtime.bigint() - begun) / 1e6);
        assert.ok(hold, `${which} acquire ${i}`);
        if (which === "waiting") assert.notEqual(await onReplica.zscore(holdsKey, request.holderId), null, `grant ${i} was not on the replica when it returned`);
        assert.equal(await b.release(key, request.holderId), true);
      }
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    t.diagnostic(`acquire through Sentinel, ${rounds} each, interleaved: without WAIT mean ${mean(times.plain).toFixed(3)} ms (median ${median(times.plain).toFixed(3)}), `
      + `with waitReplicas {replicas: 1} mean ${mean(times.waiting).toFixed(3)} ms (median ${median(times.waiting).toFixed(3)}): `
      + `ratio ${(mean(times.waiting) / mean(times.plain)).toFixed(2)} (means), ${(median(times.waiting) / median(times.plain)).toFixed(2)} (medians)`);

    // More replicas than there are: the grant fails, and so does its retry (a re-attach waits again); the hold
    // stays on the master, for the retry or until its lease runs out.
    const tooMany = await backend({ keyPrefix: prefix, waitReplicas: { replicas: 2, timeoutMs: 200 } });
    const request = holdRequest(`ns-${random()}/too-many`, "a");
    for (let i = 0; i < 2; i++) {
      await assert.rejects(tooMany.tryAcquire(request), (err: Error) => err instanceof BackendUnavailableError && /reached 1 of 2 replicas within 200ms/.test(err.message));
    }
    assert.notEqual(await raw(master).zscore(`${prefix}:{${request.key}}:holds`, request.holderId), null);
  });

  test("a failover under load: calls work again on the new master within a bound; with the fencing floor tokens never repeat", { timeout: 120_000 }, async (t) => {
    const setup = await sentinel();
    const before = await roles();
    const prefix = `failover-${random()}`;
    const settings = { keyPrefix: prefix, commandTimeoutMs: 1000, connectTimeoutMs: 1000 };
    const operators = [await backend(settings), await backend(settings)];
    const survivorKey = `ns-${random()}/survivor`;
    const survivorRequest = holdRequest(survivorKey, "survivor", { leaseDurationSeconds: 60 });
    const survivor = await operators[0].tryAcquire(survivorRequest);
    assert.ok(survivor);

    // Four workers, each on a key of its own, take and give back a mutex as fast as the backend answers. Two
    // pass the highest token they saw as the fencing floor, as the operator passes the lock's high-water mark;
    // two pass none, to show what the backend alone does to tokens.
    interface Worker { key: string; floored: boolean; mark: bigint; grants: { at: number; token: bigint }[]; unavailable: number; repeats: number }
    const workers: Worker[] = [true, true, false, false].map((floored, i) => ({ key: `ns-${random()}/worker-${i}`, floored, mark: 0n, grants: [], unavailable: 0, repeats: 0 }));
    const failures: string[] = [];
    let running = true;
    const loops = workers.map(async (w, i) => {
      const b = operators[i % 2];
      while (running) {
        const request: AcquireRequest = holdRequest(w.key, `w${i}`, { leaseDurationSeconds: 5, fencingFloor: w.floored && w.mark > 0n ? String(w.mark) : undefined });
        try {
          const hold = await b.tryAcquire(request);
          if (!hold) continue; // a grant lost in the failover still holds the key until it expires
          const token = BigInt(hold.fencingToken);
          if (token <= w.mark) {
            if (w.floored) failures.push(`${w.key}: token ${token} after ${w.mark} with the floor`);
            w.repeats++;
          }
          if (token > w.mark) w.mark = token;
          w.grants.push({ at: Date.now(), token });
          await b.release(w.key, request.holderId);
        } catch (err) {
          if (err instanceof BackendUnavailableError) w.unavailable++;
          else failures.push(`${w.key}: ${(err as Error).stack}`);
          // Next try once the failed call is over: no sleep, but no busy loop while calls fail at once either.
          await new Promise((resolve) => setImmediate(resolve));
        }
      }
    });
    try {
      await eventually("grants under load before the failover", () => (workers.every((w) => w.grants.length >= 20) ? true : undefined), 30_000);
      const sentinelClient = raw(setup.sentinels[0].port);
      const failoverAt = Date.now();
      assert.equal(await sentinelClient.call("SENTINEL", "FAILOVER", SENTINEL_MASTER), "OK");
      await eventually("the sentinels to name the replica master", async () => ((await setup.masterPort()) === before.replica ? true : undefined), 30_000);
      const switched = Date.now() - failoverAt;
      // Each operator's calls land on the new master again: a grant it made is there.
      const onNewMaster = raw(before.replica);
      const recovered = await Promise.all(operators.map((b, i) => eventually(`operator ${i + 1} to grant on the new master`, async () => {
        const request = holdRequest(`ns-${random()}/probe`, `probe-${i}`);
        const hold = await b.tryAcquire(request).catch(() => undefined);
        if (!hold) return undefined;
        return (await onNewMaster.zscore(`${prefix}:{${request.key}}:holds`, request.holderId)) === null ? undefined : Date.now() - failoverAt;
      }, 30_000)));
      // Sentinel turns the old master into a replica of the new one (a few seconds later); then every worker
      // still gets grants.
      const oldMaster = raw(before.master);
      await eventually("the old master to become a replica", async () => (/role:slave/.test(await oldMaster.info("replication")) ? true : undefined), 30_000);
      const demotedAt = Date.now();
      await eventually("grants after the old master's demotion", () => (workers.every((w) => w.grants.filter((g) => g.at > demotedAt).length >= 5) ? true : undefined), 30_000);
      t.diagnostic(`failover: the sentinels named the new master after ${switched} ms; operators granted on it after ${recovered.join(" and ")} ms; `
        + `the old master was a replica after ${demotedAt - failoverAt} ms`);
    } finally {
      running = false;
      await Promise.all(loops);
    }
    for (const w of workers) {
      t.diagnostic(`${w.key} (${w.floored ? "with" : "without"} the fencing floor): ${w.grants.length} grants, ${w.unavailable} calls BackendUnavailable, `
        + `${w.repeats} tokens at or below one handed out before`);
    }
    assert.deepEqual(failures, [], "a call failed otherwise than BackendUnavailable, or a floored token repeated");
    for (const w of workers.filter((x) => x.floored)) {
      for (let i = 1; i < w.grants.length; i++) assert.ok(w.grants[i].token > w.grants[i - 1].token, `${w.key}: token ${w.grants[i].token} after ${w.grants[i - 1].token}`);
    }
    // The hold taken before the failover: kept with its token if the replica had it, else gone (its claim
    // would show Lost at its next renewal); never another token.
    const renewed = await operators[1].renew(survivorKey, survivorRequest.holderId, 60);
    if (renewed) assert.equal(renewed.fencingToken, survivor.fencingToken);
    t.diagnostic(`the hold taken before the failover was ${renewed ? "kept, same token" : "lost"}`);
  });
});
