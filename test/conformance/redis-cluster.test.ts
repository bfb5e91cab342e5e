/**
 * The Redis backend against a Redis Cluster of three masters on loopback (test/env/redis-setups.ts), configured
 * as a user would (`cluster: true`, one master's url as the seed) and connecting as a user holding only the
 * minimal ACL for Cluster (src/backends/redis/acl.ts): the conformance suite; every key the backend writes lies
 * in its lock's hash slot, and locks on different masters work side by side; and moving a lock's slot to
 * another master while holds, waiters and grants go on loses nothing.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import Redis from "ioredis";
import { BackendUnavailableError, type AcquireRequest, type Hold, type LockBackend } from "../../src/backends/backend";
import { minimalAcl } from "../../src/backends/redis/acl";
import { createBackend } from "../../src/backends/registry";
import { ClusterRedis } from "../env/redis-setups";
import { eventually } from "../support/env";
import { tempDir } from "../support/temp";
import { holdRequest, runBackendConformance } from "./backend-conformance";

const random = () => randomBytes(4).toString("hex");

/**
 * The backend's key prefix, and its users (created on every master: Redis keeps ACL users per node): one with the
 * minimal ACL for Cluster, one with all of it but `+asking`.
 */
const prefix = `cluster-${random()}`;
interface User { name: string; password: string; passwordFile: string; rules: string[] }
const newUser = (name: string, rules: string[]): User => ({ name, password: random() + random(), passwordFile: join(tempDir("kubelock-redis-cluster-user-"), "password"), rules });
const minimal = newUser(`kubelock-${prefix}`, minimalAcl(prefix, { cluster: true }));
const withoutAsking = newUser(`kubelock-${prefix}-no-asking`, minimal.rules.filter((r) => r !== "+asking"));

let started: Promise<ClusterRedis> | undefined;
/** The cluster with the backend's users, started on first use. */
function cluster(): Promise<ClusterRedis> {
  started ??= ClusterRedis.create().then(async (setup) => {
    for (const u of [minimal, withoutAsking]) writeFileSync(u.passwordFile, `${u.password}\n`);
    await createUsers(setup);
    return setup;
  });
  return started;
}

async function createUsers(setup: ClusterRedis): Promise<void> {
  for (const port of setup.ports) {
    for (const u of [minimal, withoutAsking]) await admin(port).call("ACL", "SETUSER", u.name, "on", `>${u.password}`, ...u.rules);
  }
}

const admins = new Map<number, Redis>();
/** A plain connection to one master as its default user (not a cluster client: no redirections followed). */
function admin(port: number): Redis {
  let r = admins.get(port);
  if (!r) {
    r = new Redis({ host: "127.0.0.1", port, maxRetriesPerRequest: 1 });
    r.on("error", () => undefined);
    admins.set(port, r);
  }
  return r;
}

const opened: LockBackend[] = [];
after(async () => {
  await Promise.allSettled(opened.map((b) => b.close()));
  for (const r of admins.values()) r.disconnect();
  if (started) await (await started).destroy();
});

/** A backend on the cluster as `user`, built from its settings as the operator builds a configured one. */
async function backend(user = minimal): Promise<LockBackend> {
  const url = new URL((await cluster()).url);
  url.username = user.name;
  const b = await createBackend({ name: "redis-cluster", type: "redis", kubeConfig: new k8s.KubeConfig(),
    settings: { url: url.toString(), passwordFile: user.passwordFile, cluster: true, keyPrefix: prefix } });
  opened.push(b);
  return b;
}

// The outage case stops every master, and starts them again empty: the users are created again.
runBackendConformance("redis cluster (minimal ACL user)", () => backend(), {
  supportsExpiry: true,
  minLeaseSeconds: 1,
  stopServer: async () => (await cluster()).stop(),
  startServer: async () => {
    const setup = await cluster();
    await setup.start();
    await createUsers(setup);
  },
});

/** The hash slot of `key` as the cluster computes it. */
async function slotOf(key: string): Promise<number> {
  return Number(await admin((await cluster()).ports[0]).call("CLUSTER", "KEYSLOT", key));
}

/** Every key under the backend's prefix, by the port of the master that has it (SCAN on each). */
async function keysByMaster(): Promise<Map<number, string[]>> {
  const setup = await cluster();
  const found = new Map<number, string[]>();
  for (const port of setup.ports) {
    const keys: string[] = [];
    let cursor = "0";
    do {
      const [next, batch] = await admin(port).scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
      keys.push(...batch);
      cursor = next;
    } while (cursor !== "0");
    found.set(port, keys);
  }
  return found;
}

/** The master that has each key of lock `key` (a lock's keys carry `{key}`), and the key names. */
async function whereIs(key: string): Promise<{ port: number; keys: string[] }[]> {
  const found = await keysByMaster();
  return [...found].map(([port, keys]) => ({ port, keys: keys.filter((k) => k.includes(`{${key}}`)).sort() })).filter((e) => e.keys.length > 0);
}

/** A lock key `ns-.../<hint>-N` whose slot passes `wanted` (the cluster hashes `{key}`, the backend's hash tag). */
async function keyWhere(hint: string, wanted: (slot: number) => boolean | Promise<boolean>): Promise<{ key: string; slot: number }> {
  const r = admin((await cluster()).ports[0]);
  const namespace = `ns-${random()}`;
  for (let batch = 0; ; batch++) {
    const keys = Array.from({ length: 4096 }, (_, i) => `${namespace}/${hint}-${batch * 4096 + i}`);
    const slots = ((await r.pipeline(keys.map((k) => ["cluster", "keyslot", `{${k}}`])).exec()) ?? []).map(([err, slot]) => {
      if (err) throw err;
      return Number(slot);
    });
    for (const [i, slot] of slots.entries()) if (await wanted(slot)) return { key: keys[i], slot };
  }
}

describe("redis cluster", () => {
  test("every key the backend writes lies in its lock's hash slot; locks on different masters both work", async () => {
    const setup = await cluster();
    const b = await backend();
    const first = await keyWhere("first", async (slot) => (await setup.owner(slot)) === setup.ports[0]);
    const second = await keyWhere("second", async (slot) => (await setup.owner(slot)) === setup.ports[1]);
    for (const { key, slot } of [first, second]) {
      const holder = await b.tryAcquire(holdRequest(key, "holder"));
      assert.ok(holder, `${key}: no grant`);
      const waiter = holdRequest(key, "waiter", { wait: true });
      assert.equal(await b.tryAcquire(waiter), undefined);
      // Holds, info, queue and counter, all on the master that serves the lock's slot.
      const owner = await setup.owner(slot);
      assert.deepEqual(await whereIs(key), [{ port: owner, keys: ["fencing", "holds", "info", "queue", "queue-expiry"].map((k) => `${prefix}:{${key}}:${k}`) }]);
      assert.equal(await b.release(key, holder.holderId), true);
      const next = await b.tryAcquire(waiter);
      assert.ok(next && BigInt(next.fencingToken) > BigInt(holder.fencingToken), `${key}: the waiter got no grant, or no greater token`);
      assert.deepEqual((await b.holders(key)).map((h) => h.holderId), [waiter.holderId]);
    }
    // Every key under the prefix, this test's and the conformance suite's: in the slot of its `{lock key}` tag,
    // on the master serving that slot.
    let checked = 0;
    const owners = new Map<number, number | undefined>();
    for (const [port, keys] of await keysByMaster()) {
      for (const k of keys) {
        const tag = /^[^{]*(\{[^}]+\}):(holds|info|queue|fencing)$/.exec(k);
        assert.ok(tag, `key ${k} is not one of a lock's keys`);
        const slot = await slotOf(k);
        assert.equal(slot, await slotOf(tag[1]), `${k} is not in its tag's slot`);
        if (!owners.has(slot)) owners.set(slot, await setup.owner(slot));
        assert.equal(owners.get(slot), port, `${k} is on a master that does not serve its slot`);
        checked++;
      }
    }
    assert.ok(checked >= 8, `only ${checked} keys found`);
  });

  test("moving a lock's slot to another master while holds, waiters and grants go on loses nothing", async (t) => {
    const setup = await cluster();
    const [east, west] = [await backend(), await backend()];
    // `held`: a mutex with a hold and two waiters behind it. `churned`: a mutex in the same slot that three workers
    // take, list, renew once and give back, over and over.
    const held = await keyWhere("held", () => true);
    const churned = await keyWhere("churned", (slot) => slot === held.slot);
    const from = await setup.owner(held.slot);
    const to = setup.ports.find((p) => p !== from)!;
    const holder = holdRequest(held.key, "holder", { leaseDurationSeconds: 60 });
    const hold = await east.tryAcquire(holder);
    assert.ok(hold);
    const waiters = ["first", "second"].map((who) => holdRequest(held.key, who, { wait: true, leaseDurationSeconds: 60 }));
    for (const w of waiters) assert.equal(await west.tryAcquire(w), undefined);

    const violations: string[] = [];
    /** Finished calls per worker (whatever their outcome), and calls refused as BackendUnavailable. */
    const finished: number[] = [];
    let unavailable = 0;
    /** `call` until it answers (a refusal is retried as the operator retries: the same request again). */
    const answer = async <T>(worker: number, call: () => Promise<T>): Promise<T> => {
      for (;;) {
        try {
          return await call();
        } catch (err) {
          if (!(err instanceof BackendUnavailableError)) throw err;
          unavailable++;
          await new Promise((resolve) => setImmediate(resolve));
        } finally {
          finished[worker]++;
        }
      }
    };
    let holding: string | undefined;
    const churnTokens: bigint[] = [];
    const rounds: ((worker: number) => Promise<void>)[] = [
      async (worker) => {
        const renewed = await answer(worker, () => east.renew(held.key, holder.holderId, 60));
        if (renewed?.fencingToken !== hold.fencingToken) violations.push(`the hold was renewed as ${JSON.stringify(renewed)}`);
      },
      ...waiters.map((w) => async (worker: number) => {
        const granted = await answer(worker, () => west.tryAcquire(w));
        if (granted) violations.push(`${w.claim} was granted while the hold is in force`);
      }),
      ...[east, west, east].map((b) => async (worker: number) => {
        const request: AcquireRequest = holdRequest(churned.key, `churn-${worker}`, { leaseDurationSeconds: 30 });
        const granted: Hold | undefined = await answer(worker, () => b.tryAcquire(request));
        if (!granted) return;
        if (holding) violations.push(`${request.holderId} was granted the mutex while ${holding} holds it`);
        holding = request.holderId;
        churnTokens.push(BigInt(granted.fencingToken));
        const holders = await answer(worker, () => b.holders(churned.key));
        if (holders.length !== 1 || holders[0].holderId !== request.holderId) violations.push(`${request.holderId} holds, the backend lists ${holders.map((h) => h.holderId)}`);
        const renewed = await answer(worker, () => b.renew(churned.key, request.holderId, 30));
        if (renewed?.fencingToken !== granted.fencingToken) violations.push(`${request.holderId} was renewed as ${JSON.stringify(renewed)}`);
        holding = undefined;
        await answer(worker, () => b.release(churned.key, request.holderId));
      }),
    ];
    let running = true;
    const loops = rounds.map(async (round, worker) => {
      finished[worker] = 0;
      while (running) await round(worker).catch((err: Error) => void violations.push(`worker ${worker}: ${err.stack}`));
    });
    /** Until every worker finished a call begun after now. */
    const callsGoOn = async (what: string) => {
      const seen = finished.map((n) => n + 1);
      await eventually(what, () => (finished.every((n, i) => n > seen[i]) ? true : undefined), 20_000);
    };
    let steps = 0;
    const begun = Date.now();
    try {
      // Three keys at a time: a lock's keys (four) are on both masters for a while.
      await setup.moveSlot(held.slot, to, async () => {
        steps++;
        await callsGoOn(`calls while the slot is half-moved (step ${steps})`);
      }, 3);
      await callsGoOn("calls after the move");
    } finally {
      running = false;
      await Promise.all(loops);
    }
    t.diagnostic(`slot ${held.slot} moved from ${from} to ${to} in ${Date.now() - begun} ms (${steps} steps); `
      + `${finished.reduce((a, b) => a + b, 0)} calls meanwhile, ${unavailable} refused as BackendUnavailable; ${churnTokens.length} grants of the churned mutex`);
    assert.deepEqual(violations, []);
    assert.equal(await setup.owner(held.slot), to, "the masters do not agree that the slot moved");
    for (const key of [held.key, churned.key]) assert.deepEqual((await whereIs(key)).map((e) => e.port), [to], `${key}: keys left behind`);

    // The hold, its token and the queue's order are intact; renew works; the next grant's token is greater.
    assert.deepEqual((await west.holders(held.key)).map((h) => [h.holderId, h.fencingToken]), [[holder.holderId, hold.fencingToken]]);
    assert.deepEqual((await east.waiting(held.key)).map((w) => w.holderId), waiters.map((w) => w.holderId));
    assert.equal((await east.renew(held.key, holder.holderId, 60))?.fencingToken, hold.fencingToken);
    assert.equal(await east.release(held.key, holder.holderId), true);
    assert.equal(await west.tryAcquire(waiters[1]), undefined, "the second waiter went ahead of the first");
    const next = await west.tryAcquire(waiters[0]);
    assert.ok(next && BigInt(next.fencingToken) > BigInt(hold.fencingToken), `the first waiter's grant ${JSON.stringify(next)} has no greater token`);
    for (let i = 1; i < churnTokens.length; i++) assert.ok(churnTokens[i] > churnTokens[i - 1], `churned mutex: token ${churnTokens[i]} after ${churnTokens[i - 1]}`);
    const last = await east.tryAcquire(holdRequest(churned.key, "after"));
    assert.ok(last && churnTokens.every((token) => BigInt(last.fencingToken) > token), `a grant after the move has token ${last?.fencingToken}, not above every earlier one`);
  });

  test("a master's script cache emptied while calls go on (as on a replica promoted by a failover) fails no call", async (t) => {
    const setup = await cluster();
    const b = await backend();
    const { key, slot } = await keyWhere("flushed", () => true);
    const owner = await setup.owner(slot);
    assert.ok(owner, `no master agreed on by all serves slot ${slot}`);
    const master = admin(owner);
    const failures: string[] = [];
    let [calls, flushes, running] = [0, 0, true];
    // Calls pipelined on one connection: ioredis sends EVALSHA once it has sent a script's EVAL there, and sends a
    // call answered NOSCRIPT once more; a flush between the two leaves the second answer NOSCRIPT as well.
    const workers = Array.from({ length: 16 }, async (_, worker) => {
      const request = holdRequest(key, `worker-${worker}`, { maxHolders: 16 });
      while (running) {
        try {
          if (!(await b.tryAcquire(request))) failures.push(`worker ${worker} was refused one of 16 slots`);
          await b.renew(key, request.holderId, 30);
          await b.release(key, request.holderId);
          calls += 3;
        } catch (err) {
          failures.push(`worker ${worker}: ${(err as Error).message}`);
        }
      }
    });
    try {
      // Flushes four at a time, so that one often falls between a resent EVAL and the EVALSHA behind it.
      while (flushes < 2000) {
        await Promise.all(Array.from({ length: 4 }, () => master.script("FLUSH")));
        flushes += 4;
      }
    } finally {
      running = false;
      await Promise.all(workers);
    }
    t.diagnostic(`${calls} calls during ${flushes} flushes`);
    assert.deepEqual(failures, []);
    assert.ok(calls > 0, "no call finished");
  });

  test("a user without +asking: a call redirected while its slot moves fails as BackendUnavailable, and works once the slot has moved", async () => {
    const setup = await cluster();
    const [full, limited] = [await backend(), await backend(withoutAsking)];
    const { key, slot } = await keyWhere("asking", () => true);
    const request = holdRequest(key, "holder");
    const hold = await full.tryAcquire(request);
    assert.ok(hold);
    const from = await setup.owner(slot);
    let during: unknown;
    await setup.moveSlot(slot, setup.ports.find((p) => p !== from)!, async () => {
      // Once the keys are on the new master, the old one answers ASK: the client sends ASKING, which Redis refuses.
      const [where] = await whereIs(key);
      if (during === undefined && where.port !== from) during = await limited.renew(key, request.holderId, 30).catch((err: Error) => err);
    });
    assert.ok(during instanceof BackendUnavailableError, `the renewal while the slot moved gave ${String(during)}`);
    assert.equal((await limited.renew(key, request.holderId, 30))?.fencingToken, hold.fencingToken);
  });
});
