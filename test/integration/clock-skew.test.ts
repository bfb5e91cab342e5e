/**
 * No expiry decision compares two machines' clocks. An operator runs under faketime with its wall clock
 * two minutes ahead, then two minutes behind (far more than any lease here), while this test process, on
 * the true clock, plays the other parties:
 * - another holder of the same Kubernetes Lease / etcd backend key (a backend instance of its own, as a
 *   second operator would be): while either side renews, the other never takes the slot; once one side
 *   stops (abandons, or is killed), the other takes it after the lease, not before and not minutes later;
 * - a heartbeat holder (`kubelock renew`): renewed claims stay Granted, an abandoned one expires a lease
 *   after its last heartbeat.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import type { AcquireRequest, LockBackend } from "../../src/backends/backend";
import { EtcdBackend } from "../../src/backends/etcd/backend";
import { KubernetesLeaseBackend } from "../../src/backends/kubernetes/backend";
import { skewedClock } from "../env/faketime";
import { startCli, type CliProcess } from "../support/cli";
import { createNamespace, eventually, kubeConfig, testEnv } from "../support/env";
import { Api, ClaimHistory, startOperator, type OperatorProcess } from "../support/operator";

const SKEW_S = 120;
const LEASE_S = 6;
const LEASE_MS = LEASE_S * 1000;
/** How long each side renews while the other must not take over: two leases. */
const PROTECTED_MS = 2 * LEASE_MS;
/** Leeway for a loaded machine on top of a lease before "it never expired" (the skew is far larger). */
const SLACK_MS = 10_000;
const BACKENDS = ["kubernetes", "etcd"] as const;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const started: { stop(): Promise<void> }[] = [];
const clis: CliProcess[] = [];

after(async () => {
  for (const cli of clis) cli.child.kill("SIGTERM");
  await Promise.all(started.map((s) => s.stop()));
});

/** The other party: a backend instance of this process (true clock) sharing the operator's backend. */
function otherParty(type: (typeof BACKENDS)[number]): LockBackend {
  const backend = type === "kubernetes"
    ? new KubernetesLeaseBackend({ name: type, kubeConfig: kubeConfig() })
    : new EtcdBackend({ name: type, endpoints: [testEnv.etcdEndpoint] });
  started.push({ stop: () => backend.close() });
  return backend;
}

const request = (key: string): AcquireRequest => ({
  key, holderId: randomUUID(), claim: "other-party", holderIdentity: "other-party", cluster: "other", maxHolders: 1, leaseDurationSeconds: LEASE_S,
});

for (const skew of [`+${SKEW_S}s`, `-${SKEW_S}s`]) {
  describe(`an operator whose clock is ${skew} off`, () => {
    let namespace: string;
    let api: Api;
    let history: ClaimHistory;
    let operator: OperatorProcess;

    before(async () => {
      namespace = await createNamespace("skew");
      api = new Api(namespace);
      history = new ClaimHistory(namespace);
      await history.start();
      started.push({ stop: async () => history.stop() });
      operator = await startOperator({
        namespace,
        config: `backends:\n  - {name: etcd, type: etcd, etcd: {endpoints: ["${testEnv.etcdEndpoint}"]}}\n`,
        // Timers run on the monotonic clock: only the wall clock is off.
        env: skewedClock(skew),
      });
      started.push(operator);
    });

    /** Claim `name` is Granted now and was never seen in another phase since it was first Granted. */
    const stayedGranted = async (name: string) => {
      assert.equal((await api.getClaim(name))?.status?.phase, "Granted", `${name} is no longer Granted`);
      const seen = history.events.filter((e) => e.name === name);
      const from = seen.findIndex((e) => e.phase === "Granted");
      assert.ok(from >= 0, `${name} was never seen Granted`);
      assert.deepEqual(seen.slice(from).filter((e) => e.phase !== "Granted").map((e) => e.phase), [], `${name} left Granted`);
    };
    /** When this test first received claim `name` in `phase` from its watch (waits for the watch to deliver it). */
    const receivedAt = (name: string, phase: string) =>
      eventually(`the watch to deliver ${name} ${phase}`, () => history.events.find((e) => e.name === name && e.phase === phase)?.at, 10_000);

    test("the operator's clock is really off", async () => {
      const line = operator.output().split("\n").find((l) => l.startsWith("{"));
      const loggedAt = Date.parse((JSON.parse(line!) as { ts: string }).ts);
      assert.ok(Math.abs(loggedAt - Date.now() - Number.parseInt(skew, 10) * 1000) < 60_000, `operator log time ${new Date(loggedAt).toISOString()}`);
    });

    // Each case has locks and keys of its own: they run at once.
    describe("while it runs", { concurrency: true }, () => {
      for (const backend of BACKENDS) {
        test(`${backend}: while the other party renews, the operator never takes its slot; abandoned, it does after the lease`, async () => {
          const other = otherParty(backend);
          const key = `${namespace}/theirs-${backend}`;
          const theirs = request(key);
          assert.ok(await other.tryAcquire(theirs), "the other party got the free slot");
          await api.createLock(`theirs-${backend}`, { backend, leaseDurationSeconds: LEASE_S });
          await api.createClaim(`t-${backend}`, { lockName: `theirs-${backend}` });
          await api.waitForPhase(`t-${backend}`, "Pending");
          const until = Date.now() + PROTECTED_MS;
          let lastRenewal = 0;
          while (Date.now() < until) {
            lastRenewal = Date.now();
            assert.ok(await other.renew(key, theirs.holderId, LEASE_S), "the other party lost its hold while renewing it");
            await sleep(LEASE_MS / 4);
          }
          const meanwhile = [(await api.getClaim(`t-${backend}`))?.status?.phase, ...history.events.filter((e) => e.name === `t-${backend}`).map((e) => e.phase)];
          assert.ok(!meanwhile.includes("Granted"), "the operator took a slot the other party was renewing");
          // Abandoned (not released): the operator takes over after the lease, counted from the last renewal it saw.
          await api.waitForPhase(`t-${backend}`, "Granted", LEASE_MS + SLACK_MS);
          const after = (await receivedAt(`t-${backend}`, "Granted")) - lastRenewal;
          assert.ok(after >= LEASE_MS, `granted ${after}ms after the abandoned hold's last renewal started, before its lease ran out`);
        });

        test(`${backend}: while the operator renews, the other party never takes its slot`, async () => {
          const other = otherParty(backend);
          await api.createLock(`own-${backend}`, { backend, leaseDurationSeconds: LEASE_S });
          await api.createClaim(`o-${backend}`, { lockName: `own-${backend}` });
          await api.waitForPhase(`o-${backend}`, "Granted");
          const from = Date.now();
          while (Date.now() < from + PROTECTED_MS) {
            const taken = await other.tryAcquire(request(`${namespace}/own-${backend}`));
            assert.equal(taken, undefined, `the other party took a slot the operator was renewing, ${Date.now() - from}ms in`);
            await sleep(LEASE_MS / 8);
          }
          await stayedGranted(`o-${backend}`);
        });
      }

      test("heartbeat mode: a renewed claim stays Granted; an abandoned one expires a lease after its last heartbeat", async () => {
        // Each claim waits behind a blocker until its holder's first heartbeat is in, so a slow CLI start-up
        // cannot expire it: the grant then counts as its latest heartbeat.
        for (const name of ["renewed", "abandoned"]) {
          await api.createLock(`hb-${name}`);
          await api.createClaim(`blocker-${name}`, { lockName: `hb-${name}` });
          await api.waitForPhase(`blocker-${name}`, "Granted");
          await api.createClaim(name, { lockName: `hb-${name}`, leaseDurationSeconds: LEASE_S });
        }
        const flags = ["-n", namespace, "--kubeconfig", testEnv.kubeconfig];
        const renewer = startCli(["renew", "--claim", "renewed", "--every", "1s", ...flags]);
        clis.push(renewer);
        const once = await startCli(["renew", "--claim", "abandoned", ...flags]).exited;
        assert.equal(once.code, 0, once.stderr);
        await eventually("the renewer running", () => (renewer.stdout().includes("until stopped") ? true : undefined));
        const grantedAt = Date.now();
        await Promise.all(["renewed", "abandoned"].map((name) => api.deleteClaim(`blocker-${name}`)));
        await api.waitForPhase("renewed", "Granted");

        await api.waitForPhase("abandoned", "Expired", LEASE_MS + SLACK_MS);
        const expiredAfter = (await receivedAt("abandoned", "Expired")) - grantedAt;
        assert.ok(expiredAfter >= LEASE_MS, `expired ${expiredAfter}ms after its grant, before a lease had passed`);
        await eventually("the renewed claim to outlive two leases", () => (Date.now() > grantedAt + PROTECTED_MS ? true : undefined), PROTECTED_MS + SLACK_MS);
        await stayedGranted("renewed");
        renewer.child.kill("SIGTERM");
        assert.equal((await renewer.exited).code, 0, renewer.stderr());
      });

      test("waitTimeoutSeconds counts from when the operator saw the claim: not at once, not minutes late", async () => {
        await api.createLock("patience");
        await api.createClaim("holder", { lockName: "patience" });
        await api.waitForPhase("holder", "Granted");
        const createdAt = Date.now();
        await api.createClaim("patient", { lockName: "patience", waitTimeoutSeconds: LEASE_S });
        await api.waitForPhase("patient", "Pending");
        const expired = await api.waitForPhase("patient", "Expired", LEASE_MS + SLACK_MS);
        assert.equal(expired.status?.conditions?.find((c) => c.type === "Granted")?.reason, "WaitTimeout");
        const after = (await receivedAt("patient", "Expired")) - createdAt;
        assert.ok(after >= LEASE_MS, `timed out ${after}ms after it was created, before its ${LEASE_S}s`);
      });
    });

    test("killed, the operator's holds go to the other party after the lease, not minutes later", async () => {
      const others = BACKENDS.map((backend) => ({ backend, other: otherParty(backend), key: `${namespace}/own-${backend}` }));
      const killedAt = Date.now();
      await operator.kill();
      await Promise.all(others.map(({ backend, other, key }) => eventually(`the other party to take ${backend} slot`, async () => {
        const hold = await other.tryAcquire(request(key));
        if (!hold) return undefined;
        // The operator renewed a third of a lease before it was killed, at the most.
        assert.ok(Date.now() >= killedAt + (2 * LEASE_MS) / 3, `${backend}: taken over before the lease could run out`);
        return hold;
      }, LEASE_MS + SLACK_MS)));
    });
  });
}
