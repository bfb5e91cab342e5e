/**
 * The operator as installed keeps its holds. Run with a token of the deploy/ ServiceAccount (startOperator's
 * default), on every backend a claim stays Granted with the same fencing token for three lease durations and
 * across an operator restart, while a rival claim waits; the API server refuses the operator no request.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createNamespace, testEnv } from "../support/env";
import { Api, ClaimHistory, refusals, startOperator, type OperatorProcess } from "../support/operator";
import { tempDir } from "../support/temp";

/** Short, so three of them pass quickly and a renewal the API server refuses shows within seconds. */
const LEASE_SECONDS = 3;
/** Longer than an operator restart takes, even on a loaded machine. */
const RESTART_LEASE_SECONDS = 30;
const BACKENDS = ["kubernetes", "redis", "etcd", "zookeeper"] as const;
/** The configured backend of `type` for locks of `lease` seconds. */
const backendName = (type: (typeof BACKENDS)[number], lease: number) => (type === "zookeeper" ? `zookeeper-${lease}s` : type);

let namespace: string;
let api: Api;
let history: ClaimHistory;
let operator: OperatorProcess | undefined;
let config: string;

before(async () => {
  namespace = await createNamespace("rbac-holds");
  api = new Api(namespace);
  history = new ClaimHistory(namespace);
  await history.start();
  // ZooKeeper holds live exactly as long as the session (a lock's lease must be the session timeout): one
  // backend per lease, each with a session file that lets the restarted operator resume its session.
  const sessions = tempDir("kubelock-zk-");
  config = [
    "backends:",
    `  - {name: redis, type: redis, redis: {url: "${testEnv.redisUrl}"}}`,
    `  - {name: etcd, type: etcd, etcd: {endpoints: ["${testEnv.etcdEndpoint}"]}}`,
    ...[LEASE_SECONDS, RESTART_LEASE_SECONDS].flatMap((lease) => [
      `  - name: ${backendName("zookeeper", lease)}`,
      "    type: zookeeper",
      `    zookeeper: {connect: "${testEnv.zookeeperConnect}", sessionTimeoutMs: ${lease * 1000}, sessionFile: ${join(sessions, `${lease}s.json`)}}`,
    ]),
    "",
  ].join("\n");
});

after(async () => {
  history?.stop();
  await operator?.stop();
});

interface HeldClaim { holder: string; rival: string; token: string }

/** One lock per backend, named `<prefix>-<backend>`: its holder granted, a rival waiting behind it. */
async function holdOnEveryBackend(prefix: string, leaseDurationSeconds: number): Promise<HeldClaim[]> {
  return Promise.all(BACKENDS.map(async (backend) => {
    const lock = `${prefix}-${backend}`;
    await api.createLock(lock, { backend: backendName(backend, leaseDurationSeconds), leaseDurationSeconds });
    await api.createClaim(`${lock}-holder`, { lockName: lock });
    const granted = await api.waitForPhase(`${lock}-holder`, "Granted");
    await api.createClaim(`${lock}-rival`, { lockName: lock });
    await api.waitForPhase(`${lock}-rival`, "Pending");
    return { holder: `${lock}-holder`, rival: `${lock}-rival`, token: granted.status!.fencingToken! };
  }));
}

/**
 * Watches `held` for `ms`: every holder shows Granted with its token and every rival Pending at every
 * look. The claim history (every change the API server delivered) is checked at the end, so a change
 * between two looks does not pass unseen.
 */
async function keptFor(held: HeldClaim[], ms: number): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    for (const { holder, rival, token } of held) {
      const [h, r] = await Promise.all([api.getClaim(holder), api.getClaim(rival)]);
      assert.ok(h?.status?.phase === "Granted" && h.status.fencingToken === token,
        `${holder} lost its hold (token ${token}): ${JSON.stringify(h?.status)}\noperator output:\n${operator?.output().slice(-3000)}`);
      assert.equal(r?.status?.phase, "Pending", `${rival} should still wait: ${JSON.stringify(r?.status)}`);
    }
    if (Date.now() >= until) break;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  for (const { holder, token } of held) {
    const seen = history.events.filter((e) => e.name === holder);
    const since = seen.findIndex((e) => e.phase === "Granted");
    const changes = seen.slice(since).filter((e) => e.deleted || e.phase !== "Granted" || e.fencingToken !== token);
    assert.deepEqual(changes, [], `${holder} left Granted (token ${token}) at some point`);
  }
}

test("on every backend, holds outlive three leases and an operator restart, and no request is refused", async () => {
  operator = await startOperator({ namespace, config, logLevel: "debug" });
  const beforeRestart = await holdOnEveryBackend("long", RESTART_LEASE_SECONDS);
  const renewed = await holdOnEveryBackend("short", LEASE_SECONDS);
  await keptFor([...beforeRestart, ...renewed], 3 * LEASE_SECONDS * 1000);
  // Releasing hands each short lock to its rival.
  for (const { holder } of renewed) await api.deleteClaim(holder);
  for (const { rival } of renewed) await api.waitForPhase(rival, "Granted");

  const firstRun = operator.output();
  await operator.stop(); // SIGTERM: holds stay in the backends, for the next run to re-attach
  operator = await startOperator({ namespace, config, logLevel: "debug" });
  const afterRestart = await holdOnEveryBackend("after", LEASE_SECONDS);
  await keptFor([...beforeRestart, ...afterRestart], 3 * LEASE_SECONDS * 1000);

  const secondRun = operator.output();
  await operator.stop();
  operator = undefined;
  // Debug logging shows every failed request, renewals' included.
  assert.deepEqual(refusals(firstRun + secondRun), []);
});
