/**
 * The client library (`import { acquireLock, usingLock } from "kubelock"`) against the real operator, and
 * the flash-sale example built on it: concurrent buyers never oversell, a lost grant aborts the holder's
 * signal (claim deleted, shown Lost, or no renewal confirmed by the holder's own deadline), the store
 * refuses a stale token, and the wait honours its timeout, try-once and AbortSignal.
 */
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { describe, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { acquireLock, LockError, usingLock } from "kubelock";
import { CLAIM_PLURAL, GROUP, VERSION } from "../../src/api/types";
import { FlashSale } from "../../examples/flash-sale/service";
import { InventoryStore, StaleTokenError } from "../../examples/flash-sale/store";
import { eventually, kubeConfig, kubeConfigFor } from "../support/env";
import { useOperatorNamespace } from "../support/operator";
import { TcpProxy } from "../support/tcp-proxy";

const ctx = useOperatorNamespace("client-lib");
const kc = kubeConfig();

/** The reason `signal` aborts with, or a failure after `ms`. */
function abortedWithin(signal: AbortSignal, ms: number): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the signal did not abort within ${ms}ms`)), ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve(signal.reason);
    }, { once: true });
  });
}

const claimsOf = async (lock: string) => (await ctx.api.listClaims()).filter((c) => c.spec.lockName === lock);

/** Waits until the claims of `lock` are exactly `names` (a deleted claim goes once the operator let go of it). */
const claimsLeft = (lock: string, names: string[]) => eventually(`claims of ${lock}: ${names.join(", ") || "none"}`, async () => {
  const left = (await claimsOf(lock)).map((c) => c.metadata.name).sort();
  return JSON.stringify(left) === JSON.stringify([...names].sort()) ? true : undefined;
});
const noClaimsLeft = (lock: string) => claimsLeft(lock, []);

describe("flash sale (examples/flash-sale)", () => {
  test("the race is real: buyers without the lock oversell", async () => {
    // The check of the next test could not fail if unlocked buyers did not collide: here they do.
    const store = new InventoryStore({ race: 3 });
    await Promise.all(Array.from({ length: 6 }, async (_, i) => {
      const { stock } = await store.read("race");
      if (stock > 0) await store.write("race", { stock: stock - 1, order: `race/${i}` }, "0");
    }));
    assert.ok(store.snapshot("race").orders.length > 3, `six unlocked buyers sold ${store.snapshot("race").orders.length} of 3`);
  });

  test("concurrent buyers never oversell, per item", async () => {
    const store = new InventoryStore({ "10042": 3, "10043": 2 });
    const sale = new FlashSale(kc, { namespace: ctx.namespace, store, waitMs: 120_000 });
    await sale.open(["10042", "10043"]);
    const buyers = [
      ...Array.from({ length: 6 }, (_, i) => ["10042", `ann-${i}`]),
      ...Array.from({ length: 4 }, (_, i) => ["10043", `bob-${i}`]),
    ];
    const results = await Promise.all(buyers.map(([item, buyer]) => sale.buy(item, buyer)));

    for (const [item, stock, buyersOfItem] of [["10042", 3, 6], ["10043", 2, 4]] as const) {
      const mine = results.filter((_, i) => buyers[i][0] === item);
      const sold = mine.filter((r) => r.outcome === "sold");
      assert.equal(sold.length, stock, `item ${item}: ${JSON.stringify(mine)}`);
      assert.equal(mine.filter((r) => r.outcome === "sold-out").length, buyersOfItem - stock);
      const record = store.snapshot(item);
      assert.equal(record.stock, 0, `item ${item} ends with no stock`);
      assert.equal(record.orders.length, stock, `one order per unit of item ${item}: ${record.orders.join(", ")}`);
      const tokens = record.tokens.map(BigInt);
      assert.ok(tokens.every((t, i) => i === 0 || t > tokens[i - 1]), `item ${item}: each sale under a newer grant: ${record.tokens.join(", ")}`);
    }
    assert.equal(store.rejected, 0, "no write was refused: every sale held its item's lock");
    // Each purchase deleted its claim.
    await noClaimsLeft(FlashSale.lockName("10042"));
    await noClaimsLeft(FlashSale.lockName("10043"));
    await sale.close(["10042", "10043"]);
  });

  test("the store refuses the token of a buyer whose lock was lost; the next buyer's sale stands", async () => {
    const store = new InventoryStore({ "20001": 5 });
    const sale = new FlashSale(kc, { namespace: ctx.namespace, store, waitMs: 60_000 });
    await sale.open(["20001"]);
    const lockName = FlashSale.lockName("20001");
    // A buyer takes the lock, reads the stock, then stalls (a long GC pause, say) while its claim is deleted.
    const stalled = await acquireLock(kc, { namespace: ctx.namespace, lockName });
    const seen = await store.read("20001");
    await ctx.api.deleteClaim(stalled.claimName);
    await abortedWithin(stalled.signal, 30_000);
    const next = await sale.buy("20001", "next");
    assert.equal(next.outcome, "sold");
    assert.ok(next.outcome === "sold" && BigInt(next.fencingToken) > BigInt(stalled.fencingToken), "the next grant carries a newer token");

    // The stalled buyer wakes up and writes what it computed, ignoring its signal: refused.
    await assert.rejects(store.write("20001", { stock: seen.stock - 1, order: "20001/stalled" }, stalled.fencingToken), StaleTokenError);
    assert.deepEqual(store.snapshot("20001"), { stock: 4, orders: ["20001/next"], tokens: [next.outcome === "sold" ? next.fencingToken : ""] });
    await stalled.release();
    await sale.close(["20001"]);
  });
});

describe("acquireLock", () => {
  test("returns the claim's fencing token; release() deletes the claim and aborts the signal", async () => {
    await ctx.api.createLock("basic");
    const lock = await acquireLock(kc, { namespace: ctx.namespace, lockName: "basic" });
    const claim = await ctx.api.getClaim(lock.claimName);
    assert.equal(claim?.status?.phase, "Granted");
    assert.equal(lock.fencingToken, claim?.status?.fencingToken);
    assert.equal(claim?.spec.leaseDurationSeconds, 15, "heartbeat mode by default");
    assert.match(lock.claimName, /^basic-client-[0-9a-f]{8}$/);
    assert.equal(lock.signal.aborted, false);
    await lock.release();
    assert.ok(lock.signal.aborted);
    assert.ok(lock.signal.reason instanceof LockError && lock.signal.reason.code === "Released", String(lock.signal.reason));
    await noClaimsLeft("basic");
    await lock.release(); // again: nothing to do
  });

  test("heartbeats keep the grant past its lease", async () => {
    await ctx.api.createLock("heartbeat");
    const lock = await acquireLock(kc, { namespace: ctx.namespace, lockName: "heartbeat", leaseDurationSeconds: 3 });
    const start = performance.now();
    const renewals = new Set<string>();
    const problems = new Set<string>();
    // Polls the claim until three leases have passed, noting each time the grant did not hold.
    await eventually("three leases held", async () => {
      const claim = await ctx.api.getClaim(lock.claimName);
      if (claim?.status?.phase !== "Granted") problems.add(`claim phase ${claim?.status?.phase}`);
      if (lock.signal.aborted) problems.add(`signal aborted: ${String(lock.signal.reason)}`);
      if (claim?.spec.renewTime) renewals.add(claim.spec.renewTime);
      return performance.now() - start > 9000 ? true : undefined;
    }, 30_000);
    assert.deepEqual([...problems], [], "granted all along");
    assert.ok(renewals.size >= 3, `renewTime moved forward (${renewals.size} values seen)`);
    await lock.release();
  });

  test("a deleted claim aborts the signal", async () => {
    await ctx.api.createLock("deleted");
    const lock = await acquireLock(kc, { namespace: ctx.namespace, lockName: "deleted" });
    await ctx.api.deleteClaim(lock.claimName);
    const reason = await abortedWithin(lock.signal, 30_000);
    assert.ok(reason instanceof LockError && reason.code === "Lost", String(reason));
    assert.match(reason.message, /^lost lock deleted: claim \S+ (was deleted|is being deleted)/);
    await lock.release();
  });

  test("a claim shown Lost aborts the signal", async () => {
    await ctx.api.createLock("shown-lost");
    const lock = await acquireLock(kc, { namespace: ctx.namespace, lockName: "shown-lost" });
    await ctx.api.custom.patchNamespacedCustomObjectStatus(
      { group: GROUP, version: VERSION, namespace: ctx.namespace, plural: CLAIM_PLURAL, name: lock.claimName, body: { status: { phase: "Lost" } } },
      k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
    );
    const reason = await abortedWithin(lock.signal, 30_000);
    assert.ok(reason instanceof LockError && reason.code === "Lost", String(reason));
    assert.match(reason.message, /is now Lost/);
    await lock.release();
  });

  test("cut off from the API server, the holder's own deadline aborts the signal before the operator ends the grant", async () => {
    await ctx.api.createLock("cut-off");
    const server = new URL(kc.getCurrentCluster()!.server);
    const proxy = new TcpProxy(server.hostname, Number(server.port || 443));
    await proxy.start();
    let claimName: string | undefined;
    try {
      const lock = await acquireLock(kubeConfigFor(`https://${proxy.address}`), { namespace: ctx.namespace, lockName: "cut-off", leaseDurationSeconds: 4 });
      claimName = lock.claimName;
      const cutAt = performance.now();
      proxy.blackhole();
      const reason = await abortedWithin(lock.signal, 10_000);
      const abortedAt = Date.now();
      const elapsed = performance.now() - cutAt;
      assert.ok(reason instanceof LockError && reason.code === "Lost", String(reason));
      assert.match(reason.message, /no renewal of claim \S+ was confirmed for 3s \(the lease minus a margin of 1s\)/);
      assert.ok(elapsed < 4000, `aborted ${Math.round(elapsed)}ms after the cut: within the 4s lease`);
      // The operator, which still reaches the API server, ends the grant only after the lease.
      const expired = await ctx.api.waitForPhase(claimName, "Expired");
      assert.ok(abortedAt <= Date.parse(expired.status!.releaseTime!), `aborted at ${new Date(abortedAt).toISOString()}, before the grant ended (${expired.status!.releaseTime})`);
    } finally {
      await proxy.stop();
      if (claimName) await ctx.api.deleteClaim(claimName);
    }
  });

  test("times out; the claim it made is deleted", async () => {
    await ctx.api.createLock("busy");
    const holder = await acquireLock(kc, { namespace: ctx.namespace, lockName: "busy" });
    const started = performance.now();
    await assert.rejects(acquireLock(kc, { namespace: ctx.namespace, lockName: "busy", timeoutMs: 1500 }),
      (err) => err instanceof LockError && err.code === "Timeout" && /timed out after 1\.5s waiting for lock busy/.test(err.message));
    assert.ok(performance.now() - started >= 1500);
    await claimsLeft("busy", [holder.claimName]);

    // Try-once: refused at once while held, with its claim deleted; granted when free.
    await assert.rejects(acquireLock(kc, { namespace: ctx.namespace, lockName: "busy", wait: false }),
      (err) => err instanceof LockError && err.code === "Busy" && /lock busy is not free/.test(err.message));
    await assert.rejects(acquireLock(kc, { namespace: ctx.namespace, lockName: "busy", timeoutMs: 0 }), (err) => err instanceof LockError && err.code === "Busy");
    await claimsLeft("busy", [holder.claimName]);
    await holder.release();
    await noClaimsLeft("busy");
    const free = await acquireLock(kc, { namespace: ctx.namespace, lockName: "busy", wait: false });
    assert.match(free.fencingToken, /^\d+$/);
    await free.release();
  });

  test("an aborted wait rejects with the signal's reason and deletes its claim", async () => {
    await ctx.api.createLock("abortable");
    const holder = await acquireLock(kc, { namespace: ctx.namespace, lockName: "abortable" });
    const controller = new AbortController();
    const progress: string[] = [];
    const waiting = acquireLock(kc, { namespace: ctx.namespace, lockName: "abortable", signal: controller.signal, onProgress: (m) => progress.push(m) });
    await eventually("queued", () => (progress.includes("waiting for lock abortable: position 1") ? true : undefined));
    const reason = new Error("the buyer left");
    controller.abort(reason);
    await assert.rejects(waiting, (err) => err === reason);
    await claimsLeft("abortable", [holder.claimName]);
    await holder.release();
  });

  test("a lock that does not exist is NotFound", async () => {
    await assert.rejects(acquireLock(kc, { namespace: ctx.namespace, lockName: "no-such-lock", timeoutMs: 30_000 }),
      (err) => err instanceof LockError && err.code === "NotFound");
    await noClaimsLeft("no-such-lock");
  });
});

describe("usingLock", () => {
  test("runs the routine under the lock, returns its result, releases even when it throws", async () => {
    await ctx.api.createLock("using");
    const result = await usingLock(kc, { namespace: ctx.namespace, lockName: "using" }, async (signal, token, lock) => {
      const claim = await ctx.api.getClaim(lock.claimName);
      assert.equal(claim?.status?.phase, "Granted");
      assert.equal(claim?.status?.fencingToken, token);
      assert.equal(signal.aborted, false);
      return `done with ${token}`;
    });
    assert.match(result, /^done with \d+$/);
    await noClaimsLeft("using");

    let inside: AbortSignal | undefined;
    await assert.rejects(usingLock(kc, { namespace: ctx.namespace, lockName: "using" }, async (signal) => {
      inside = signal;
      throw new Error("routine failed");
    }), /routine failed/);
    assert.ok(inside?.aborted, "released: the signal aborted");
    await noClaimsLeft("using");
  });
});
