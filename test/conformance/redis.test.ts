/**
 * The Redis backend against the real redis-server the test environment started: the shared conformance
 * suite (with the outage case, through the environment's control endpoint), then what is particular to
 * Redis (settings, key layout, the persistent fencing counter, secrets in messages).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import Redis from "ioredis";
import { BackendConfigError, BackendUnavailableError, type LockBackend } from "../../src/backends/backend";
import { redisPlugin } from "../../src/backends/redis";
import { minimalAcl } from "../../src/backends/redis/acl";
import type { RedisBackend } from "../../src/backends/redis/backend";
import { backendTypes, createBackend } from "../../src/backends/registry";
import { eventually, kubeConfig, testEnv, controlService } from "../support/env";
import { holdRequest, runBackendConformance } from "./backend-conformance";
import { tempDir } from "../support/temp";

const control = (action: "stop" | "start") => controlService("redis", action);

const opened: LockBackend[] = [];
async function backend(settings: Record<string, unknown> = {}): Promise<RedisBackend> {
  const b = (await redisPlugin.factory({ name: "redis", kubeConfig: kubeConfig(), clusterName: "", settings: { url: testEnv.redisUrl, ...settings } })) as RedisBackend;
  opened.push(b);
  return b;
}
after(() => Promise.allSettled(opened.map((b) => b.close())));

runBackendConformance("redis", () => backend(), {
  supportsExpiry: true,
  minLeaseSeconds: 1,
  stopServer: () => control("stop"),
  startServer: () => control("start"),
});

// The same suite as a user holding only the minimal ACL of src/backends/redis/acl.ts (its keys, channels and commands).
const aclPrefix = `acl-${randomBytes(3).toString("hex")}`;
let aclUser: Promise<{ url: string; passwordFile: string }> | undefined;
function limitedUser(): Promise<{ url: string; passwordFile: string }> {
  aclUser ??= (async () => {
    const [name, password] = [`kubelock-${aclPrefix}`, randomBytes(12).toString("hex")];
    const admin = new Redis(testEnv.redisUrl);
    try {
      await admin.call("ACL", "SETUSER", name, "on", `>${password}`, ...minimalAcl(aclPrefix));
    } finally {
      admin.disconnect();
    }
    const passwordFile = join(tempDir("kubelock-redis-acl-"), "password");
    writeFileSync(passwordFile, password);
    const url = new URL(testEnv.redisUrl);
    url.username = name;
    return { url: url.toString(), passwordFile };
  })();
  return aclUser;
}
runBackendConformance("redis (ACL user with the minimal rules)", async () => backend({ ...(await limitedUser()), keyPrefix: aclPrefix }), {
  supportsExpiry: true,
  minLeaseSeconds: 1,
});

test("the minimal ACL is what the backend needs: a user without ZADD cannot queue, and says so", async () => {
  const admin = new Redis(testEnv.redisUrl);
  const [name, password, prefix] = [`kubelock-nozadd-${random()}`, random(), `nozadd-${random()}`];
  try {
    await admin.call("ACL", "SETUSER", name, "on", `>${password}`, ...minimalAcl(prefix).filter((r) => r !== "+zadd"));
  } finally {
    admin.disconnect();
  }
  const url = new URL(testEnv.redisUrl);
  [url.username, url.password] = [name, password];
  const limited = await backend({ url: url.toString(), keyPrefix: prefix });
  await assert.rejects(limited.tryAcquire(holdRequest(`ns-${random()}/k`, "a")),
    (err: Error) => err instanceof BackendUnavailableError && /minimal ACL/.test(err.message) && !err.message.includes(password));
});

const request = holdRequest;

const random = () => randomBytes(4).toString("hex");

describe("redis backend", () => {
  const raw = new Redis(testEnv.redisUrl, { lazyConnect: true });
  after(() => raw.quit().catch(() => raw.disconnect()));
  const dir = mkdtempSync(join(tmpdir(), "kubelock-redis-test-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const secret = `s3cret-${random()}`;
  const passwordFile = join(dir, "password");
  writeFileSync(passwordFile, `${secret}\n`);

  test("redis is a registered type", () => {
    assert.ok(backendTypes().includes("redis"));
  });

  const bad: [string, Record<string, unknown>, RegExp][] = [
    ["no url", {}, /redis\.url is required/],
    ["not a URL", { url: "nonsense" }, /is not a URL/],
    ["another scheme", { url: "http://127.0.0.1:6379" }, /must start with redis:\/\/ or rediss:\/\//],
    ["a path that is no database", { url: "redis://127.0.0.1:6379/x" }, /database number/],
    ["a keyPrefix with braces", { url: "redis://h:1", keyPrefix: "a{b}" }, /keyPrefix must be/],
    ["an empty keyPrefix", { url: "redis://h:1", keyPrefix: "" }, /keyPrefix must be/],
    ["commandTimeoutMs 0", { url: "redis://h:1", commandTimeoutMs: 0 }, /commandTimeoutMs must be a positive integer/],
    ["connectTimeoutMs as a string", { url: "redis://h:1", connectTimeoutMs: "2s" }, /connectTimeoutMs must be a positive integer/],
    ["a missing passwordFile", { url: "redis://h:1", passwordFile: "/nonexistent/password" }, /passwordFile: cannot read \/nonexistent\/password: ENOENT/],
    ["tls with redis://", { url: "redis://h:1", tls: { insecureSkipVerify: true } }, /tls needs a rediss:\/\/ url/],
    ["a missing tls.caFile", { url: "rediss://h:1", tls: { caFile: "/nonexistent/ca.crt" } }, /tls\.caFile: cannot read/],
    ["certFile without keyFile", { url: "rediss://h:1", tls: { certFile: passwordFile } }, /certFile and redis\.tls\.keyFile go together/],
    ["an unknown tls setting", { url: "rediss://h:1", tls: { verify: false } }, /unknown setting redis\.tls\.verify/],
    ["sentinels without sentinelName", { url: "redis://h:1", sentinels: [{ host: "s", port: 26379 }] }, /sentinelName .* is required/],
    ["a sentinel without a port", { url: "redis://h:1", sentinels: [{ host: "s" }], sentinelName: "m" }, /sentinels must be a non-empty list/],
    ["sentinelName alone", { url: "redis://h:1", sentinelName: "m" }, /sentinelName needs redis\.sentinels/],
    ["cluster as a string", { url: "redis://h:1", cluster: "yes" }, /cluster must be true or false/],
    ["cluster and sentinels", { url: "redis://h:1", cluster: true, sentinels: [{ host: "s", port: 1 }], sentinelName: "m" }, /exclude each other/],
    ["waitReplicas without replicas", { url: "redis://h:1", waitReplicas: { timeoutMs: 100 } }, /waitReplicas\.replicas must be an integer >= 1/],
    ["waitReplicas as a number", { url: "redis://h:1", waitReplicas: 1 }, /waitReplicas must be a mapping/],
    ["a WAIT as long as a command", { url: "redis://h:1", waitReplicas: { replicas: 1, timeoutMs: 2000 } }, /waitReplicas\.timeoutMs must be below redis\.commandTimeoutMs/],
    ["waitReplicas with cluster", { url: "redis://h:1", cluster: true, waitReplicas: { replicas: 1, timeoutMs: 100 } }, /waitReplicas is not supported with redis\.cluster/],
    ["an unknown waitReplicas setting", { url: "redis://h:1", waitReplicas: { replicas: 1, timeoutMs: 100, min: 1 } }, /unknown setting redis\.waitReplicas\.min/],
    ["an unknown setting", { url: "redis://h:1", keyprefix: "x" }, /unknown setting redis\.keyprefix/],
  ];
  for (const [what, settings, message] of bad) {
    test(`settings: ${what} is a BackendConfigError`, async () => {
      await assert.rejects(createBackend({ name: "r", type: "redis", kubeConfig: kubeConfig(), settings }), (err: Error) => {
        assert.ok(err instanceof BackendConfigError, String(err));
        assert.match(err.message, message);
        assert.match(err.message, /^backend "r": /);
        return true;
      });
    });
  }

  test("settings: every mistake is one line, and a URL's password is masked", async () => {
    await assert.rejects(
      createBackend({ name: "r", type: "redis", kubeConfig: kubeConfig(), settings: { url: "ftp://u:hunter2@h", commandTimeoutMs: -1 } }),
      (err: Error) => {
        assert.equal(err.message.split("\n").length, 2, err.message);
        assert.doesNotMatch(err.message, /hunter2/);
        assert.match(err.message, /ftp:\/\/u:\*\*\*@h/);
        return true;
      },
    );
  });

  test("keys carry the prefix and the namespace: a hold on ns-a/x is invisible to ns-b/x", async () => {
    const b = await backend();
    const [a, other, name] = [`ns-a-${random()}`, `ns-b-${random()}`, `x-${random()}`];
    const holdA = await b.tryAcquire(request(`${a}/${name}`, "a"));
    assert.ok(holdA);
    assert.deepEqual(await b.holders(`${other}/${name}`), []);
    assert.ok(await b.tryAcquire(request(`${other}/${name}`, "b")), "ns-b/x was taken by ns-a/x's hold");
    assert.equal(await raw.zcard(`kubelock:{${a}/${name}}:holds`), 1);
    assert.equal(await raw.get(`kubelock:{${a}/${name}}:fencing`), holdA.fencingToken);
    const info = JSON.parse((await raw.hget(`kubelock:{${a}/${name}}:info`, holdA.holderId))!);
    assert.equal(info.claim, "claim-a");
    // Both keys of a hold expire with it; the counter has no TTL.
    assert.ok((await raw.pttl(`kubelock:{${a}/${name}}:holds`)) > 25_000);
    assert.equal(await raw.pttl(`kubelock:{${a}/${name}}:fencing`), -1);
  });

  test("the fencing counter survives the lock's other keys expiring", async () => {
    const prefix = `t${random()}`;
    const b = await backend({ keyPrefix: prefix });
    const key = `ns-${random()}/counter`;
    const first = await b.tryAcquire(request(key, "a", { leaseDurationSeconds: 1 }));
    assert.ok(first);
    // Nobody runs a script: Redis itself drops the idle lock's keys.
    await eventually("the lock's keys to expire", async () => ((await raw.exists(`${prefix}:{${key}}:holds`, `${prefix}:{${key}}:info`)) === 0 ? true : undefined), 10_000);
    assert.equal(await raw.get(`${prefix}:{${key}}:fencing`), first.fencingToken);
    const second = await b.tryAcquire(request(key, "b"));
    assert.ok(second);
    assert.ok(BigInt(second.fencingToken) > BigInt(first.fencingToken));
  });

  test("forget deletes every key of the lock, counter included, unless the counter is ahead of the server's clock", async () => {
    const prefix = `t${random()}`;
    const b = await backend({ keyPrefix: prefix });
    const key = `ns-${random()}/forget`;
    const waiter = request(key, "w", { wait: true });
    const holder = request(key, "a");
    assert.ok(await b.tryAcquire(holder));
    assert.equal(await b.tryAcquire(waiter), undefined);
    assert.ok((await raw.keys(`${prefix}:*`)).length >= 5, "holds, info, queue, queue-expiry and the counter");
    await b.release(key, waiter.holderId);
    await b.release(key, holder.holderId);
    assert.equal(await b.forget(key), true);
    assert.deepEqual(await raw.keys(`${prefix}:*`), []);
    // A counter a caller's floor raised above the server's clock in microseconds stays: a new one would start lower.
    const floored = request(key, "b", { fencingFloor: "9000000000000000" });
    assert.equal((await b.tryAcquire(floored))?.fencingToken, "9000000000000001");
    await b.release(key, floored.holderId);
    assert.equal(await b.forget(key), false);
    assert.deepEqual(await raw.keys(`${prefix}:*`), [`${prefix}:{${key}}:fencing`]);
  });

  test("watch reports a hold that vanished by key expiry, with no script run by anyone", async () => {
    const [holder, watcher] = [await backend(), await backend()];
    const key = `ns-${random()}/watch-expiry`;
    const hold = await holder.tryAcquire(request(key, "a", { leaseDurationSeconds: 1 }));
    assert.ok(hold);
    const expiresAt = Date.parse(hold.renewTime) + 1000;
    const calls: number[] = [];
    const stop = watcher.watch(key, () => calls.push(Date.now()));
    try {
      await eventually("a call after the hold expired", () => (calls.some((t) => t >= expiresAt) ? true : undefined), 10_000);
    } finally {
      stop();
    }
  });

  test("a re-attach extends the hold: the caller counts its validity from the call", async () => {
    const b = await backend();
    const key = `ns-${random()}/reattach-extends`;
    const a = request(key, "a", { leaseDurationSeconds: 30 });
    assert.ok(await b.tryAcquire(a));
    const holds = `kubelock:{${key}}:holds`;
    await raw.zadd(holds, "XX", Number((await raw.time())[0]) * 1000 + 5000, a.holderId); // as if granted 25 s ago
    const again = await b.tryAcquire(a);
    const [seconds] = await raw.time();
    const expiry = Number(await raw.zscore(holds, a.holderId));
    assert.ok(expiry >= Number(seconds) * 1000 + 29_000, `the re-attached hold expires ${expiry - Number(seconds) * 1000} ms from now`);
    assert.equal(again?.holderId, a.holderId);
  });

  test("a release hands the slot to the queue's head: its process takes the hold from the event, asking Redis nothing", async () => {
    const [holder, waiterSide] = [await backend(), await backend()];
    const key = `ns-${random()}/handed`;
    const first = request(key, "first");
    assert.ok(await holder.tryAcquire(first));
    const next = request(key, "next", { wait: true });
    const queuedAt = Date.now();
    assert.equal(await waiterSide.tryAcquire(next), undefined);
    let woken = false;
    const stop = waiterSide.watch(key, () => (woken = true), { holderId: next.holderId, maxHolders: 1 });
    try {
      assert.ok(await holder.release(key, first.holderId));
      await eventually("the waiter's watch to wake it", async () => (woken ? true : undefined), 10_000);
      // Handed over in the release: it holds already, with the next token, before its process asks.
      const [held] = await holder.holders(key);
      assert.equal(held?.holderId, next.holderId);
      const { client } = waiterSide as unknown as { client: Record<string, (...args: unknown[]) => Promise<unknown>> };
      const acquire = client.kubelockAcquire;
      let asked = 0;
      client.kubelockAcquire = (...args) => (asked++, acquire.apply(client, args));
      const hold = await waiterSide.tryAcquire(next);
      client.kubelockAcquire = acquire;
      assert.equal(asked, 0, "the waiter asked Redis for a hold the event carried");
      assert.equal(hold?.fencingToken, held.fencingToken);
      assert.ok(hold?.confirmedAt !== undefined && hold.confirmedAt >= queuedAt && hold.confirmedAt <= Date.now(),
        `confirmed from when the queueing request was sent (${queuedAt}), got ${hold?.confirmedAt}`);
      assert.ok(await waiterSide.release(key, next.holderId));
      assert.deepEqual(await holder.holders(key), []);
    } finally {
      stop();
    }
  });

  test("a connection ioredis ended for good is opened again: calls and the watch work afterwards", async () => {
    const b = await backend();
    const key = `ns-${random()}/reopen`;
    let calls = 0;
    const stop = b.watch(key, () => calls++);
    try {
      // As a Sentinel failover that interrupts a reconnect leaves them: both connections ended, no reconnect planned.
      const { client, subscriber } = b as unknown as { client: Redis; subscriber: Redis };
      client.disconnect();
      subscriber.disconnect();
      const hold = await eventually("an acquire on the reopened connection", () => b.tryAcquire(request(key, "a")).catch(() => undefined), 10_000);
      const seen = calls;
      await eventually("the watch, subscribed again, to report a release", async () => {
        const probe = request(key, "probe", { maxHolders: 2 });
        await b.tryAcquire(probe);
        await b.release(key, probe.holderId);
        return calls > seen ? true : undefined;
      }, 10_000);
      assert.ok(await b.release(key, hold.holderId));
      assert.deepEqual([client.status, subscriber.status], ["ready", "ready"]);
    } finally {
      stop();
    }
  });

  test("the passwordFile's content never appears in error messages", async () => {
    const url = new URL(testEnv.redisUrl);
    // A user that does not exist: the server refuses the password (WRONGPASS).
    const b = await backend({ url: `redis://nobody@${url.host}`, passwordFile, connectTimeoutMs: 1000 });
    const refused = await b.holders("ns/x").then(() => assert.fail("holders() with a wrong password succeeded"), (err: Error) => err);
    assert.ok(refused instanceof BackendUnavailableError, String(refused));
    assert.match(refused.message, /WRONGPASS|no connection/);
    // Nobody listening.
    const gone = await backend({ url: "redis://127.0.0.1:1", passwordFile, connectTimeoutMs: 500 });
    const unreachable = await gone.tryAcquire(request("ns/x", "a")).then(() => assert.fail("acquire on a closed port succeeded"), (err: Error) => err);
    assert.ok(unreachable instanceof BackendUnavailableError, String(unreachable));
    // A config mistake next to the password.
    const invalid = await createBackend({ name: "r", type: "redis", kubeConfig: kubeConfig(), settings: { url: "redis://h:1", passwordFile, commandTimeoutMs: 0 } }).then(
      () => assert.fail("bad settings were accepted"),
      (err: Error) => err,
    );
    for (const err of [refused, unreachable, invalid]) {
      assert.doesNotMatch(`${err.message} ${err.stack} ${String(err.cause)}`, new RegExp(secret));
    }
  });

  test("acquire + release latency", async (t) => {
    const b = await backend();
    const key = `ns-${random()}/latency`;
    const samples: number[] = [];
    for (let i = 0; i < 200; i++) {
      const r = request(key, `c${i}`);
      const started = process.hrtime.bigint();
      assert.ok(await b.tryAcquire(r));
      assert.equal(await b.release(key, r.holderId), true);
      samples.push(Number(process.hrtime.bigint() - started) / 1e6);
    }
    samples.sort((x, y) => x - y);
    t.diagnostic(`acquire+release over 200 rounds: p50 ${samples[100].toFixed(2)} ms, p99 ${samples[198].toFixed(2)} ms`);
  });
});

