/**
 * The lock backend conformance suite: what every backend (kubernetes, etcd, redis, zookeeper) must do,
 * as the contract in src/backends/backend.ts says it. Each backend's `<backend>.test.ts` runs it
 * unchanged:
 *
 *   runBackendConformance("redis", () => makeRedisBackend(), { supportsExpiry: true, minLeaseSeconds: 1 });
 *
 * `makeBackend` must return a new, independent instance each time (a second instance stands for a second
 * operator, or the same operator after a restart). Every case uses keys of its own, so cases never see
 * each other's holds; backends are closed when the suite ends.
 */
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { after, describe, test } from "node:test";
import { BackendUnavailableError, handOff, queueState, type AcquireRequest, type Hold, type LockBackend } from "../../src/backends/backend";
import { eventually } from "../support/env";

export interface ConformanceOptions {
  /** Holds expire when not renewed within their lease duration (default true). */
  supportsExpiry?: boolean;
  /** The shortest lease the backend honours, in seconds (default 1): expiry cases use it. */
  minLeaseSeconds?: number;
  /** Takes the backend's server away (with startServer: the unavailability case runs). */
  stopServer?: () => Promise<void>;
  /** Brings the server back after stopServer. */
  startServer?: () => Promise<void>;
  /**
   * A fresh backend key `<namespace>/<key>` for a case (`hint` names the case). Default: a random
   * namespace-like prefix and a random key. Backends whose namespaces must exist (kubernetes) create
   * the namespace here.
   */
  newKey?: (hint: string) => Promise<string>;
}

const TOKEN = /^(0|[1-9][0-9]*)$/;
const LONG_LEASE = 60;

function random(bytes = 4): string {
  return randomBytes(bytes).toString("hex");
}

async function defaultKey(hint: string): Promise<string> {
  return `conformance-${random()}/${hint}-${random()}`;
}

/** A request from contender `who` (claim `claim-<who>`, pod `pod-<who>`), with a unique holderId. */
function contender(key: string, who: string, overrides: Partial<AcquireRequest> = {}): AcquireRequest {
  return {
    key,
    holderId: randomUUID(),
    claim: `claim-${who}`,
    holderIdentity: `pod-${who}`,
    cluster: "test-cluster",
    maxHolders: 1,
    leaseDurationSeconds: LONG_LEASE,
    ...overrides,
  };
}

/**
 * An acquire request for the backend-specific tests (cluster "east", a 30 s lease, a fresh holderId):
 * contender `who` is claim `claim-<who>` of pod `pod-<who>`.
 */
export function holdRequest(key: string, who: string, overrides: Partial<AcquireRequest> = {}): AcquireRequest {
  return { key, holderId: randomUUID(), claim: `claim-${who}`, holderIdentity: `pod-${who}`, cluster: "east", maxHolders: 1, leaseDurationSeconds: 30, ...overrides };
}

function big(token: string): bigint {
  assert.match(token, TOKEN, `fencing token "${token}" is not a non-negative decimal integer`);
  return BigInt(token);
}

function assertIncreasing(earlier: string, later: string, what: string): void {
  assert.ok(big(later) > big(earlier), `${what}: token ${later} is not greater than ${earlier}`);
}

function granted(hold: Hold | undefined, what: string): Hold {
  assert.ok(hold, `${what}: expected a hold, got undefined`);
  return hold;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function runBackendConformance(
  name: string,
  makeBackend: () => Promise<LockBackend>,
  options: ConformanceOptions = {},
): void {
  const supportsExpiry = options.supportsExpiry ?? true;
  const minLease = Math.max(1, options.minLeaseSeconds ?? 1);
  const newKey = options.newKey ?? defaultKey;
  const noExpiry = supportsExpiry ? false : `${name} holds do not expire by lease`;
  const opened: LockBackend[] = [];

  /** A new backend instance, closed when the suite ends. */
  async function open(): Promise<LockBackend> {
    const backend = await makeBackend();
    opened.push(backend);
    return backend;
  }

  async function closeAll(): Promise<void> {
    await Promise.allSettled(opened.splice(0).map((b) => b.close()));
  }

  describe(`${name} backend conformance`, { timeout: 180_000 }, () => {
    after(closeAll);

    test("mutex: exactly one of 50 concurrent contenders gets the hold", async () => {
      const backends = [await open(), await open()];
      const key = await newKey("mutex");
      const requests = Array.from({ length: 50 }, (_, i) => contender(key, `c${i}`));
      const results = await Promise.all(requests.map((r, i) => backends[i % backends.length].tryAcquire(r)));
      const winners = results.filter((h): h is Hold => h !== undefined);
      assert.equal(winners.length, 1, `${winners.length} contenders got the mutex`);
      const winner = winners[0];
      assert.ok(requests.some((r) => r.holderId === winner.holderId));
      for (const backend of backends) {
        const holders = await backend.holders(key);
        assert.deepEqual(holders.map((h) => h.holderId), [winner.holderId]);
      }
      // The losers still lose on a second try, from any instance.
      const losers = requests.filter((r) => r.holderId !== winner.holderId).slice(0, 10);
      const again = await Promise.all(losers.map((r, i) => backends[i % backends.length].tryAcquire(r)));
      assert.deepEqual(again.filter(Boolean), [], "a loser got the mutex while it was held");
    });

    test("mutex: exactly one of 50 concurrent contenders takes over an expired hold", { skip: noExpiry }, async () => {
      const backends = [await open(), await open()];
      const key = await newKey("takeover");
      const old = granted(await backends[0].tryAcquire(contender(key, "old", { leaseDurationSeconds: minLease })), "old holder");
      // Both instances must see it gone: a backend may judge expiry from when it first saw a hold (etcd does), and
      // a contender on an instance that still sees it live loses, while its entry may stand ahead of the others.
      await eventually(
        "the old hold to expire, as both instances see it",
        async () => ((await Promise.all(backends.map((b) => b.holders(key)))).every((h) => h.length === 0) ? true : undefined),
        2 * minLease * 1000 + 20_000,
      );
      const requests = Array.from({ length: 50 }, (_, i) => contender(key, `c${i}`));
      const results = await Promise.all(requests.map((r, i) => backends[i % backends.length].tryAcquire(r)));
      const winners = results.filter((h): h is Hold => h !== undefined);
      assert.equal(winners.length, 1, `${winners.length} contenders took over the expired mutex`);
      assertIncreasing(old.fencingToken, winners[0].fencingToken, "takeover");
      assert.deepEqual((await backends[1].holders(key)).map((h) => h.holderId), [winners[0].holderId]);
    });

    test("semaphore: exactly 3 of 20 concurrent contenders get a slot", async () => {
      const backends = [await open(), await open()];
      const key = await newKey("semaphore");
      const requests = Array.from({ length: 20 }, (_, i) => contender(key, `c${i}`, { maxHolders: 3 }));
      const results = await Promise.all(requests.map((r, i) => backends[i % backends.length].tryAcquire(r)));
      const winners = results.filter((h): h is Hold => h !== undefined);
      assert.equal(winners.length, 3, `${winners.length} contenders got one of 3 slots`);
      assert.equal(new Set(winners.map((h) => h.holderId)).size, 3, "a holder got two slots");
      assert.equal(new Set(winners.map((h) => big(h.fencingToken))).size, 3, "two holds share a fencing token");
      const holders = await backends[0].holders(key);
      assert.deepEqual(
        holders.map((h) => h.holderId).sort(),
        winners.map((h) => h.holderId).sort(),
      );
      const late = await backends[1].tryAcquire(contender(key, "late", { maxHolders: 3 }));
      assert.equal(late, undefined, "a fourth holder got a slot of 3");
    });

    test("re-attach: the same holder acquiring again gets the same hold and token", async () => {
      const backend = await open();
      const key = await newKey("reattach");
      const a = contender(key, "a", { maxHolders: 2 });
      const first = granted(await backend.tryAcquire(a), "first acquire");
      const second = granted(await backend.tryAcquire(a), "second acquire");
      assert.equal(second.fencingToken, first.fencingToken);
      assert.equal(second.holderId, a.holderId);
      assert.equal(second.acquireTime, first.acquireTime);
      // An operator restarted within the lease re-attaches too.
      const restarted = await open();
      const third = granted(await restarted.tryAcquire(a), "acquire after restart");
      assert.equal(third.fencingToken, first.fencingToken);
      // Re-attaching took no second slot: one more holder fits, then the lock is full.
      granted(await backend.tryAcquire(contender(key, "b", { maxHolders: 2 })), "second holder");
      assert.equal(await backend.tryAcquire(contender(key, "c", { maxHolders: 2 })), undefined, "a third holder got one of 2 slots");
      assert.equal((await backend.holders(key)).filter((h) => h.holderId === a.holderId).length, 1);
    });

    test("release is owner-checked: another holder cannot release a hold", async () => {
      const backend = await open();
      const key = await newKey("not-owner");
      const a = contender(key, "a");
      granted(await backend.tryAcquire(a), "a");
      assert.equal(await backend.release(key, randomUUID()), false, "releasing as a stranger removed something");
      assert.deepEqual((await backend.holders(key)).map((h) => h.holderId), [a.holderId]);
    });

    test("a late release by an expired holder does not free the new holder's slot", { skip: noExpiry }, async () => {
      const backend = await open();
      const key = await newKey("mistaken-release");
      const a = contender(key, "a", { leaseDurationSeconds: minLease });
      const b = contender(key, "b", { leaseDurationSeconds: LONG_LEASE });
      const holdA = granted(await backend.tryAcquire(a), "a");
      // A stops renewing (a paused holder); B takes the slot once A's lease has run out.
      const holdB = await eventually("b to take the expired slot", () => backend.tryAcquire(b), minLease * 1000 + 20_000);
      assertIncreasing(holdA.fencingToken, holdB.fencingToken, "takeover");
      // A wakes up and releases what it believes it holds: the naive lock's mistaken release.
      assert.equal(await backend.release(key, a.holderId), false, "the expired holder's release removed something");
      assert.equal(await backend.renew(key, a.holderId, LONG_LEASE), undefined, "the expired holder could renew");
      assert.deepEqual((await backend.holders(key)).map((h) => h.holderId), [b.holderId], "b lost its hold");
      assert.equal(await backend.tryAcquire(contender(key, "c")), undefined, "the slot was free again after a's release");
      granted(await backend.renew(key, b.holderId, LONG_LEASE), "b renews");
    });

    test("renew keeps a hold past its original lease", async () => {
      const backend = await open();
      const key = await newKey("renew");
      // A lease of at least 2 s, renewed every sixth of it: a busy machine's delays stay well inside it.
      const lease = Math.max(minLease, 2);
      const a = contender(key, "a", { leaseDurationSeconds: lease });
      const hold = granted(await backend.tryAcquire(a), "a");
      const until = Date.now() + lease * 2500;
      let last = hold;
      while (Date.now() < until) {
        await sleep((lease * 1000) / 6);
        last = granted(await backend.renew(key, a.holderId, lease), "renew");
        assert.equal(last.fencingToken, hold.fencingToken, "renew changed the fencing token");
        assert.equal(await backend.tryAcquire(contender(key, "b")), undefined, "another holder got the lock while it was renewed");
      }
      assert.ok(Date.parse(last.renewTime) >= Date.parse(hold.renewTime), "renewTime did not move forward");
      assert.deepEqual((await backend.holders(key)).map((h) => h.holderId), [a.holderId]);
    });

    test("expiry frees a slot", { skip: noExpiry }, async () => {
      const backend = await open();
      const key = await newKey("expiry");
      const a = contender(key, "a", { leaseDurationSeconds: minLease });
      const holdA = granted(await backend.tryAcquire(a), "a");
      assert.equal(await backend.tryAcquire(contender(key, "early")), undefined, "the lock was free right after it was taken");
      await eventually(
        "the expired hold to leave holders()",
        async () => ((await backend.holders(key)).length === 0 ? true : undefined),
        minLease * 1000 + 20_000,
      );
      const holdB = granted(await backend.tryAcquire(contender(key, "b")), "b after expiry");
      assertIncreasing(holdA.fencingToken, holdB.fencingToken, "after expiry");
    });

    test("fencing tokens strictly increase across grants and backend restarts", async () => {
      let backend = await open();
      const key = await newKey("fencing");
      let previous: string | undefined;
      for (let i = 0; i < 20; i++) {
        const request = contender(key, `c${i}`);
        const hold = granted(await backend.tryAcquire(request), `grant ${i}`);
        if (previous !== undefined) assertIncreasing(previous, hold.fencingToken, `grant ${i}`);
        else big(hold.fencingToken);
        previous = hold.fencingToken;
        assert.equal(await backend.release(key, request.holderId), true, `release ${i}`);
      }
      // A new instance (an operator restart) continues above every token issued so far.
      await backend.close();
      backend = await open();
      const request = contender(key, "after-restart");
      const hold = granted(await backend.tryAcquire(request), "grant after restart");
      assertIncreasing(previous!, hold.fencingToken, "after restart");
      // A semaphore's concurrent holders each get a token above the last grant's too.
      const sem = await Promise.all([0, 1, 2].map((i) => backend.tryAcquire(contender(key, `s${i}`, { maxHolders: 4 }))));
      for (const h of sem) assertIncreasing(hold.fencingToken, granted(h, "semaphore grant").fencingToken, "semaphore grant");
    });

    test("holders() lists every current hold with its HolderInfo, ordered by token", async () => {
      const backend = await open();
      const key = await newKey("holders");
      assert.deepEqual(await backend.holders(key), [], "holders of an unused key");
      const a = contender(key, "a", { maxHolders: 3, cluster: "east" });
      const b = contender(key, "b", { maxHolders: 3, cluster: "" });
      const before = Date.now();
      const holdA = granted(await backend.tryAcquire(a), "a");
      const holdB = granted(await backend.tryAcquire(b), "b");
      const holders = await (await open()).holders(key);
      assert.equal(holders.length, 2);
      assertIncreasing(holders[0].fencingToken, holders[1].fencingToken, "holders() order");
      const byId = new Map(holders.map((h) => [h.holderId, h]));
      for (const [request, hold] of [[a, holdA], [b, holdB]] as const) {
        const listed = byId.get(request.holderId);
        assert.ok(listed, `holder ${request.claim} is missing`);
        assert.deepEqual(
          { holderId: listed.holderId, claim: listed.claim, holderIdentity: listed.holderIdentity, cluster: listed.cluster, fencingToken: listed.fencingToken },
          { holderId: request.holderId, claim: request.claim, holderIdentity: request.holderIdentity, cluster: request.cluster, fencingToken: hold.fencingToken },
        );
        for (const time of [listed.acquireTime, listed.renewTime]) {
          const ms = Date.parse(time);
          assert.ok(!Number.isNaN(ms), `"${time}" is not an RFC 3339 time`);
          assert.ok(Math.abs(ms - before) < 5 * 60_000, `${time} is far from now`);
        }
      }
      assert.equal(await backend.release(key, a.holderId), true);
      assert.deepEqual((await backend.holders(key)).map((h) => h.holderId), [b.holderId]);
    });

    test("release frees the slot for the next contender", async () => {
      const backend = await open();
      const key = await newKey("release");
      const a = contender(key, "a");
      const b = contender(key, "b");
      const holdA = granted(await backend.tryAcquire(a), "a");
      assert.equal(await backend.tryAcquire(b), undefined, "b got a held mutex");
      assert.equal(await backend.release(key, a.holderId), true, "a's release");
      assert.equal(await backend.release(key, a.holderId), false, "a's second release");
      assert.equal(await backend.renew(key, a.holderId, LONG_LEASE), undefined, "a renewed a released hold");
      const holdB = granted(await backend.tryAcquire(b), "b after a's release");
      assertIncreasing(holdA.fencingToken, holdB.fencingToken, "after release");
      assert.deepEqual((await backend.holders(key)).map((h) => h.holderId), [b.holderId]);
    });

    test("hand-off: a hold passes to the next waiter as release then tryAcquire would, owner-checked and in queue order", async () => {
      const [east, west] = [await open(), await open()];
      const key = await newKey("handoff");
      const a = contender(key, "a");
      const [w1, w2] = ["w1", "w2"].map((who) => contender(key, who, { wait: true }));
      const holdA = granted(await east.tryAcquire(a), "a");
      assert.equal(await east.tryAcquire(w1), undefined, "w1 got a held mutex");
      assert.equal(await west.tryAcquire(w2), undefined, "w2 got a held mutex");

      // Not a holder: nothing is released, and w1 gets nothing while a holds.
      assert.deepEqual(await handOff(east, "nobody", w1), { released: false, hold: undefined });
      // Out of turn: a's hold goes, but w2 may not pass w1, who is served next.
      const skipped = await handOff(east, a.holderId, w2);
      assert.equal(skipped.released, true, "a's hold was released");
      assert.equal(skipped.hold, undefined, "w2 passed w1");
      const hold1 = granted(await east.tryAcquire(w1), "w1, first in the queue");
      assertIncreasing(holdA.fencingToken, hold1.fencingToken, "w1 after a");

      // In turn: w1's slot passes straight to w2, with a larger token, and nothing of w1 is left.
      const passed = await handOff(east, w1.holderId, w2);
      assert.equal(passed.released, true, "w1's hold was released");
      const hold2 = granted(passed.hold, "w2 by hand-off");
      assertIncreasing(hold1.fencingToken, hold2.fencingToken, "w2 after w1");
      assert.deepEqual((await west.holders(key)).map((h) => [h.holderId, h.claim]), [[w2.holderId, "claim-w2"]]);
      assert.deepEqual(await west.waiting(key), []);
      assert.equal(await east.renew(key, w1.holderId, LONG_LEASE), undefined, "w1 renewed a hold it handed off");
      assert.equal(await east.release(key, w1.holderId), false, "w1's release after the hand-off");
      granted(await west.renew(key, w2.holderId, LONG_LEASE), "w2 renews the hold it was handed");
      assert.ok(await west.release(key, w2.holderId));
      assert.deepEqual(await east.holders(key), []);
    });

    test("renew and release of a hold that never existed", async () => {
      const backend = await open();
      const key = await newKey("missing");
      assert.equal(await backend.renew(key, randomUUID(), LONG_LEASE), undefined);
      assert.equal(await backend.release(key, randomUUID()), false);
    });

    test("keys are independent, including keys that extend one another", async () => {
      const backend = await open();
      const base = await newKey("independent");
      const keys = [base, `${base}-1`, `${base}-0`, `${base}-fencing`, `${base}.1`, `${base}-${"x".repeat(300)}`, `${base}/Odd Key_Ü`];
      const holds = new Map<string, AcquireRequest>();
      for (const key of keys) {
        const request = contender(key, "a");
        granted(await backend.tryAcquire(request), `acquire ${key.slice(0, 80)}`);
        holds.set(key, request);
      }
      for (const key of keys) {
        assert.deepEqual((await backend.holders(key)).map((h) => h.holderId), [holds.get(key)!.holderId], `holders of ${key.slice(0, 80)}`);
        assert.equal(await backend.tryAcquire(contender(key, "b")), undefined, `${key.slice(0, 80)} was free`);
      }
      for (const key of keys) assert.equal(await backend.release(key, holds.get(key)!.holderId), true, `release ${key.slice(0, 80)}`);
    });

    test("watch reports a released hold", async () => {
      const backend = await open();
      const key = await newKey("watch");
      const a = contender(key, "a", { maxHolders: 2 });
      granted(await backend.tryAcquire(a), "a");
      let calls = 0;
      const stop = backend.watch(key, () => calls++);
      try {
        // Wait until the watch is live: change the holds until a change is reported.
        await eventually("the watch to report changes", async () => {
          const seen = calls;
          const probe = contender(key, "probe", { maxHolders: 2 });
          await backend.tryAcquire(probe);
          await backend.release(key, probe.holderId);
          for (let i = 0; i < 20 && calls === seen; i++) await sleep(50);
          return calls > seen ? true : undefined;
        }, 30_000);
        const seen = calls;
        assert.equal(await backend.release(key, a.holderId), true);
        await eventually("the watch to report the release", () => (calls > seen ? true : undefined), 10_000);
      } finally {
        stop();
      }
    });

    const outage = options.stopServer && options.startServer
      ? false
      : `no stopServer/startServer given for ${name}`;
    test("queue: waiters are served in the order they joined, across instances; a newcomer does not jump ahead", async () => {
      const [east, west] = [await open(), await open()];
      const key = await newKey("fifo");
      const holder = contender(key, "holder");
      const first = granted(await east.tryAcquire(holder), "holder");
      const waiters = ["w1", "w2", "w3", "w4"].map((who) => contender(key, who, { wait: true }));
      const via = (i: number) => (i % 2 === 0 ? west : east); // alternate "clusters"
      for (const [i, w] of waiters.entries()) assert.equal(await via(i).tryAcquire(w), undefined, `${w.claim} got a held mutex`);
      const order = async () => (await east.waiting(key)).map((w) => w.holderId);
      assert.deepEqual(await order(), waiters.map((w) => w.holderId), "the queue is not in joining order");
      assert.deepEqual((await west.waiting(key))[1].claim, "claim-w2", "an instance sees another instance's waiters");
      const newcomer = contender(key, "newcomer");
      assert.equal(await west.tryAcquire(newcomer), undefined, "a newcomer jumped the queue");
      assert.ok(await east.release(key, holder.holderId));
      let previous = first.fencingToken;
      for (const [i, w] of waiters.entries()) {
        // Everyone behind the head asks first, then the head: only the head is served.
        for (const [j, later] of waiters.entries()) {
          if (j > i) assert.equal(await via(j).tryAcquire(later), undefined, `${later.claim} was served before ${w.claim}`);
        }
        assert.equal(await west.tryAcquire(newcomer), undefined, "a newcomer jumped the queue");
        const hold = granted(await via(i).tryAcquire(w), w.claim);
        assertIncreasing(previous, hold.fencingToken, `${w.claim} after the previous holder`);
        previous = hold.fencingToken;
        assert.deepEqual((await east.holders(key)).map((h) => h.holderId), [w.holderId]);
        assert.deepEqual(await order(), waiters.slice(i + 1).map((x) => x.holderId));
        assert.ok(await via(i).release(key, w.holderId), `${w.claim}'s release`);
      }
      granted(await west.tryAcquire(newcomer), "the newcomer, once the queue is empty");
      assert.deepEqual(await order(), [], "the newcomer left a queue entry behind");
    });

    test("queue: a waiter's watch wakes it when its turn comes, each waiter in queue order", async () => {
      const [east, west] = [await open(), await open()];
      const key = await newKey("waiter-watch");
      const req = (who: string, wait = false) => contender(key, who, { maxHolders: 2, wait });
      const [first, second] = [req("first"), req("second")];
      granted(await east.tryAcquire(first), "first");
      const waiters = [req("w1", true), req("w2", true)];
      const woken = [0, 0];
      let changes = 0;
      const stops = [
        west.watch(key, () => changes++),
        ...waiters.map((w, i) => west.watch(key, () => woken[i]++, { holderId: w.holderId, maxHolders: 2 })),
      ];
      try {
        // Live once a change in the free slot is reported; then the semaphore fills and both wait.
        await eventually("the watch to report changes", async () => {
          const seen = changes;
          const probe = req("probe");
          granted(await east.tryAcquire(probe), "probe");
          await east.release(key, probe.holderId);
          for (let i = 0; i < 20 && changes === seen; i++) await sleep(50);
          return changes > seen ? true : undefined;
        }, 30_000);
        granted(await east.tryAcquire(second), "second");
        for (const w of waiters) assert.equal(await west.tryAcquire(w), undefined, `${w.claim} got a full semaphore`);
        const before = woken[0];
        assert.ok(await east.release(key, first.holderId));
        await eventually("w1 to be woken by the release of the slot it is next for", () => (woken[0] > before ? true : undefined), 10_000);
        granted(await west.tryAcquire(waiters[0]), "w1 when woken");
        const w2Calls = woken[1];
        assert.ok(await east.release(key, second.holderId));
        await eventually("w2 to be woken by the next release", () => (woken[1] > w2Calls ? true : undefined), 10_000);
        granted(await west.tryAcquire(waiters[1]), "w2 when woken");
      } finally {
        for (const stop of stops) stop();
      }
    });

    test("queue: semaphore slots fill in queue order; queueState() agrees with holders() and waiting()", async () => {
      const [east, west] = [await open(), await open()];
      const key = await newKey("semaphore-queue");
      const req = (who: string) => contender(key, who, { maxHolders: 3, wait: true });
      const holders = ["a", "b", "c"].map(req);
      for (const h of holders) granted(await east.tryAcquire(h), h.claim);
      const waiters = ["w1", "w2", "w3", "w4"].map(req);
      for (const [i, w] of waiters.entries()) assert.equal(await (i % 2 ? east : west).tryAcquire(w), undefined, `${w.claim} got a full semaphore`);
      await east.release(key, holders[0].holderId);
      await east.release(key, holders[1].holderId);
      // Two slots free: the first two waiters are served, whichever asks first; the third and fourth are not.
      assert.equal(await west.tryAcquire(waiters[2]), undefined, "w3 took a slot that w1 and w2 are next for");
      assert.equal(await east.tryAcquire(waiters[3]), undefined, "w4 took a slot that w1 and w2 are next for");
      granted(await east.tryAcquire(waiters[1]), "w2");
      granted(await west.tryAcquire(waiters[0]), "w1");
      assert.deepEqual((await west.holders(key)).map((h) => h.holderId).sort(), [holders[2], waiters[0], waiters[1]].map((h) => h.holderId).sort());
      assert.deepEqual((await east.waiting(key)).map((w) => w.holderId), [waiters[2].holderId, waiters[3].holderId]);
      // One read of both says the same as the two reads.
      const both = await queueState(east, key);
      assert.deepEqual(both.holders.map((h) => h.holderId), (await east.holders(key)).map((h) => h.holderId));
      assert.deepEqual(both.waiting, await east.waiting(key));
      await west.release(key, waiters[0].holderId);
      granted(await west.tryAcquire(waiters[2]), "w3");
      assert.equal(await east.tryAcquire(waiters[3]), undefined, "w4 got a slot of a full semaphore");
    });

    test("queue: a crashed instance's waiter expires and the next waiter is served", async () => {
      const [east, crashing, west] = [await open(), await open(), await open()];
      const key = await newKey("crashed-waiter");
      const holder = contender(key, "holder");
      granted(await east.tryAcquire(holder), "holder");
      const lost = contender(key, "lost", { wait: true, leaseDurationSeconds: minLease });
      const next = contender(key, "next", { wait: true });
      assert.equal(await crashing.tryAcquire(lost), undefined);
      assert.equal(await west.tryAcquire(next), undefined);
      await crashing.close(); // as a crash: nothing is released or withdrawn
      await east.release(key, holder.holderId);
      const hold = await eventually("the waiter behind the crashed one to be served", () => west.tryAcquire(next), minLease * 1000 + 20_000);
      assert.equal(hold.holderId, next.holderId);
      assert.deepEqual(await west.waiting(key), [], "the crashed instance's entry is still queued");
    });

    test("queue: a read never shows a waiter holding while an expired hold before it is still there", { skip: noExpiry }, async () => {
      const [east, west] = [await open(), await open()];
      const key = await newKey("expired-ahead");
      const first = contender(key, "first", { leaseDurationSeconds: minLease });
      granted(await east.tryAcquire(first), "first");
      const waiter = contender(key, "waiter", { wait: true, leaseDurationSeconds: 60 });
      assert.equal(await west.tryAcquire(waiter), undefined, "the waiter got a held lock");
      await eventually("the first hold to expire in the waiter's instance", async () =>
        ((await west.holders(key)).some((h) => h.holderId === first.holderId) ? undefined : true), minLease * 1000 + 20_000);
      // Until an acquire lets the expired hold go, its owner (restarted, seeing it afresh) may still re-attach it.
      assert.ok(!(await west.holders(key)).some((h) => h.holderId === waiter.holderId), "a read promoted the waiter over a hold still there");
      const reattached = await (await open()).tryAcquire(first);
      const served = await west.tryAcquire(waiter);
      assert.ok(!(reattached && served), "the restarted first holder re-attached and the waiter was served: two holders of a mutex");
      assert.ok((await west.holders(key)).length <= 1);
    });

    test("queue: a waiter that keeps asking keeps its place over several leases", { skip: noExpiry }, async () => {
      const [east, west] = [await open(), await open()];
      const key = await newKey("waiter-refresh");
      const holder = contender(key, "holder");
      granted(await east.tryAcquire(holder), "holder");
      // A lease of at least 2 s, asked again every sixth of it: a busy machine's delays stay well inside it.
      const lease = Math.max(minLease, 2);
      const patient = contender(key, "patient", { wait: true, leaseDurationSeconds: lease });
      const later = contender(key, "later", { wait: true });
      assert.equal(await west.tryAcquire(patient), undefined);
      assert.equal(await east.tryAcquire(later), undefined);
      // As an operator does (it asks every third of the lease), for three leases.
      const until = Date.now() + 3 * lease * 1000;
      while (Date.now() < until) {
        await sleep((lease * 1000) / 6);
        assert.equal(await west.tryAcquire(patient), undefined);
        assert.equal(await east.tryAcquire(later), undefined);
      }
      assert.deepEqual((await east.waiting(key)).map((w) => w.holderId), [patient.holderId, later.holderId], "the patient waiter lost its place");
      await east.release(key, holder.holderId);
      assert.equal(await east.tryAcquire(later), undefined, "the later waiter was served first");
      granted(await west.tryAcquire(patient), "the patient waiter");
    });

    test("queue: nothing is left behind after a withdrawal, a release or a waiter's expiry", async () => {
      const backend = await open();
      const key = await newKey("no-leftovers");
      const holder = contender(key, "holder");
      granted(await backend.tryAcquire(holder), "holder");
      const withdrawn = contender(key, "withdrawn", { wait: true });
      assert.equal(await backend.tryAcquire(withdrawn), undefined);
      assert.equal(await backend.release(key, withdrawn.holderId), false, "withdrawing a waiter reported a released hold");
      assert.deepEqual(await backend.waiting(key), []);
      const served = contender(key, "served", { wait: true });
      assert.equal(await backend.tryAcquire(served), undefined);
      await backend.release(key, holder.holderId);
      granted(await backend.tryAcquire(served), "served");
      assert.ok(await backend.release(key, served.holderId));
      assert.deepEqual([await backend.holders(key), await backend.waiting(key)], [[], []]);
      if (!supportsExpiry) return;
      const blocker = contender(key, "blocker");
      granted(await backend.tryAcquire(blocker), "blocker");
      const timedOut = contender(key, "timed-out", { wait: true, leaseDurationSeconds: minLease });
      assert.equal(await backend.tryAcquire(timedOut), undefined);
      await eventually("the unrefreshed waiter to expire", async () => ((await backend.waiting(key)).length === 0 ? true : undefined), minLease * 1000 + 20_000);
    });

    test("forget: a deleted lock's key state goes only when nothing holds or waits; later tokens are still larger", async (t) => {
      const [backend, other] = [await open(), await open()];
      if (!backend.forget) return t.skip(`${name} keeps no per-key state besides holds and entries (no forget)`);
      const key = await newKey("forget");
      assert.equal(await backend.forget(key), false, "forget of a key never used removed something");
      const first = contender(key, "first");
      const earliest = granted(await backend.tryAcquire(first), "first");
      assert.equal(await backend.release(key, first.holderId), true);
      // A hold (another instance's: another operator, maybe of another cluster) keeps the state, and keeps working.
      const holder = contender(key, "holder");
      const hold = granted(await other.tryAcquire(holder), "holder");
      assert.equal(await backend.forget(key), false, "forget removed the state of a held key");
      const renewed = granted(await other.renew(key, holder.holderId, LONG_LEASE), "renew after a refused forget");
      assert.equal(renewed.fencingToken, hold.fencingToken);
      // So does a queue entry alone.
      const waiter = contender(key, "waiter", { wait: true });
      assert.equal(await other.tryAcquire(waiter), undefined);
      assert.equal(await other.release(key, holder.holderId), true);
      assert.equal(await backend.forget(key), false, "forget removed the state of a key with a waiter");
      // Still queued, or holding already where the first waiter in a free slot holds (ZooKeeper's ranking).
      const { holders, waiting } = await queueState(backend, key);
      assert.deepEqual([...holders, ...waiting].map((w) => w.holderId), [waiter.holderId], "the waiter's entry went");
      const served = granted(await other.tryAcquire(waiter), "the waiter after a refused forget");
      const tokens = [earliest, hold, served].map((h) => h.fencingToken);
      for (let i = 1; i < tokens.length; i++) assertIncreasing(tokens[i - 1], tokens[i], `grant ${i}`);
      assert.equal(await other.release(key, waiter.holderId), true);
      assert.equal(await backend.forget(key), true, "forget of a key nothing holds or waits on");
      assert.deepEqual([await backend.holders(key), await backend.waiting(key)], [[], []]);
      // The key used again (a lock of the same name): tokens go on above every earlier one, with no fencingFloor.
      const again = contender(key, "again");
      assertIncreasing(served.fencingToken, granted(await other.tryAcquire(again), "after forget").fencingToken, "after forget");
      assert.equal(await other.release(key, again.holderId), true);
    });

    test("an unreachable server gives BackendUnavailableError, and the backend recovers", { skip: outage, timeout: 120_000 }, async () => {
      const backend = await open();
      const key = await newKey("outage");
      granted(await backend.tryAcquire(contender(key, "before")), "before the outage");
      const watched = await newKey("outage-watch");
      let calls = 0;
      const stop = backend.watch(watched, () => calls++);
      await options.stopServer!();
      try {
        const started = Date.now();
        await assert.rejects(backend.tryAcquire(contender(key, "during")), BackendUnavailableError);
        await assert.rejects(backend.holders(key), BackendUnavailableError);
        assert.ok(Date.now() - started < 60_000, "the backend took over a minute to report the outage");
      } finally {
        await options.startServer!();
      }
      try {
        const after = await newKey("outage-after");
        await eventually("the backend to work again", () => backend.tryAcquire(contender(after, "after")), 60_000);
        // A watch started before the outage reports changes again.
        await eventually("the watch to report changes after the outage", async () => {
          const seen = calls;
          const probe = contender(watched, "probe");
          await backend.tryAcquire(probe);
          await backend.release(watched, probe.holderId);
          for (let i = 0; i < 20 && calls === seen; i++) await sleep(50);
          return calls > seen ? true : undefined;
        }, 60_000);
      } finally {
        stop();
      }
    });
  });
}
