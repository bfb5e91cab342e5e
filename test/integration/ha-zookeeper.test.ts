/**
 * ZooKeeper holds across leader changes: operator replicas with --leader-elect on a ZooKeeper backend. A
 * hold is an ephemeral node of the leader's session; the leader hands that session over through a Secret and
 * the next leader resumes it, so a Granted claim keeps its hold and token when the leader is killed (kill -9)
 * and through a rolling replacement of every replica, well past the session timeout (without the handover,
 * the crashed leader's session expires and its claims become Lost). A lock whose lease differs from the
 * session timeout is refused with a message that says what to change.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { createNamespace, eventually, kubeConfig, testEnv } from "../support/env";
import { Api, ClaimHistory, findLog, identityOf, leadingAt, startOperator, type OperatorProcess } from "../support/operator";

/** Longer than a failover (leader lease 4 s + polling), as the handover requires. */
const SESSION_MS = 12_000;
/** Where deploy/ lets the operator keep the session (the test's operators run as deploy/'s ServiceAccount). */
const SECRET = { namespace: "kubelock-system", name: "kubelock-zookeeper-sessions" };
const LEASE_NAME = "kubelock-ha-zk";

let namespace: string;
let api: Api;
let history: ClaimHistory;
const operators: OperatorProcess[] = [];

const config = () => [
  "backends:",
  `  - {name: zk, type: zookeeper, zookeeper: {connect: "${testEnv.zookeeperConnect}", rootPath: /kubelock-ha-${randomBytes(3).toString("hex")}, `
    + `sessionTimeoutMs: ${SESSION_MS}}}`,
  "",
].join("\n");
let operatorConfig: string;

async function replica(): Promise<OperatorProcess> {
  const op = await startOperator({
    namespace,
    config: operatorConfig,
    extraArgs: [
      "--leader-elect", "--leader-elect-namespace", namespace, "--leader-elect-id", LEASE_NAME,
      "--leader-elect-lease-duration", "4s", "--leader-elect-renew-deadline", "3s", "--leader-elect-retry-period", "500ms",
    ],
  });
  operators.push(op);
  return op;
}

/** Starts a replica and waits until it follows `leader`. */
async function follower(leader: OperatorProcess): Promise<OperatorProcess> {
  const op = await replica();
  await eventually("the new replica follows the leader", () => (findLog(op, "new leader observed")?.leader === identityOf(leader) ? true : undefined));
  return op;
}

/** The session handed over in the Secret (id and password; key: election and backend), read as the test's admin. */
async function handedOver(): Promise<{ id: string; password: string } | undefined> {
  const secret = await kubeConfig().makeApiClient(k8s.CoreV1Api).readNamespacedSecret(SECRET).catch(() => undefined);
  const raw = secret?.data?.[`${namespace}.${LEASE_NAME}.zk`];
  return raw ? JSON.parse(Buffer.from(raw, "base64").toString("utf8")) : undefined;
}

/**
 * Waits until the session timeout has passed since `since` (a session no replica resumed would be gone by
 * then, its holds with it), then checks from the watch history that `claim` never left Granted nor changed
 * token, and that it is Granted now.
 */
async function keptThrough(claim: string, token: string, since: number): Promise<void> {
  await eventually("a session timeout after the change", () => (Date.now() > since + SESSION_MS + 3_000 ? true : undefined), SESSION_MS + 10_000);
  await api.waitForClaim(claim, `still Granted with token ${token}`, (c) => c.status?.phase === "Granted" && c.status.fencingToken === token, 5_000);
  const seen = history.events.filter((e) => e.name === claim && !e.deleted);
  const granted = seen.findIndex((e) => e.phase === "Granted");
  assert.ok(granted >= 0, `${claim} was never seen Granted`);
  assert.deepEqual(seen.slice(granted).filter((e) => e.phase !== "Granted" || e.fencingToken !== token), [], `${claim} left Granted or changed token`);
}

before(async () => {
  namespace = await createNamespace("ha-zk");
  api = new Api(namespace);
  history = new ClaimHistory(namespace);
  await history.start();
  operatorConfig = config();
});

after(async () => {
  history?.stop();
  await Promise.all(operators.map((op) => op.stop()));
});

let first: OperatorProcess;
let second: OperatorProcess;

test("kill -9 of the leader: the next leader resumes its ZooKeeper session, and the hold keeps its token past the session timeout", async () => {
  first = await replica();
  await eventually("the first replica leads", () => leadingAt(first));
  second = await follower(first);

  await api.createLock("db", { backend: "zk", leaseDurationSeconds: SESSION_MS / 1000 });
  await api.createClaim("c0", { lockName: "db" });
  await api.createClaim("c1", { lockName: "db" });
  const c0 = await api.waitForPhase("c0", "Granted");
  await api.waitForPhase("c1", "Pending");
  const session = await eventually("the leader handed its session over", handedOver);

  const killedAt = Date.now();
  await first.kill();
  await eventually("the follower leads", () => leadingAt(second), 20_000);
  await eventually("the new leader resumed the session", () => findLog(second, "zookeeper session handed over for the next leader"));
  assert.equal((await handedOver())?.id, session.id, "the new leader resumed the old session instead of starting its own");
  await keptThrough("c0", c0.status!.fencingToken!, killedAt);
  assert.equal((await api.getClaim("c1"))?.status?.phase, "Pending", "the waiter was not granted while c0 holds");

  // The new leader serves the lock: the next grant gets a larger token.
  await api.deleteClaim("c0");
  const c1 = await api.waitForPhase("c1", "Granted");
  assert.ok(BigInt(c1.status!.fencingToken!) > BigInt(c0.status!.fencingToken!));
  assert.equal(history.replay(new Set(["c0", "c1"])).maxGranted, 1);
  for (const op of [first, second]) assert.doesNotMatch(op.output(), new RegExp(session.password, "i"), "an operator logged the session password");
});

test("rolling replacement of every replica (SIGTERM, one at a time): the hold keeps its token throughout", async () => {
  const c1 = await api.waitForPhase("c1", "Granted");
  const token = c1.status!.fencingToken!;
  await api.createClaim("c2", { lockName: "db" });
  await api.waitForPhase("c2", "Pending");

  const third = await follower(second);
  const startedAt = Date.now();
  await second.stop();
  await eventually("the third replica leads", () => leadingAt(third), 10_000);
  const fourth = await follower(third);
  await third.stop();
  await eventually("the fourth replica leads", () => leadingAt(fourth), 10_000);
  await keptThrough("c1", token, startedAt);
  assert.equal((await api.getClaim("c2"))?.status?.phase, "Pending");

  await api.deleteClaim("c1");
  const c2 = await api.waitForPhase("c2", "Granted");
  assert.ok(BigInt(c2.status!.fencingToken!) > BigInt(token));
  assert.equal(history.replay().maxGranted, 1, "never two holders of the mutex");
  for (const op of operators) assert.doesNotMatch(op.output(), /HTTP 403/, "deploy/'s ServiceAccount was refused a request");
});

test("a lock whose lease differs from the session timeout is refused with a message that says what to change", async () => {
  await api.createLock("long", { backend: "zk", leaseDurationSeconds: 60 });
  await api.createClaim("l0", { lockName: "long" });
  const lock = await api.waitForLock("long", "Ready=False", (l) => l.status?.conditions?.some((c) => c.type === "Ready" && c.status === "False") === true);
  const ready = lock.status!.conditions!.find((c) => c.type === "Ready")!;
  assert.equal(ready.reason, "LeaseUnsupported");
  assert.match(ready.message, new RegExp(`cannot honour leaseDurationSeconds 60: set the lock's leaseDurationSeconds to ${SESSION_MS / 1000}, or use a zookeeper backend with sessionTimeoutMs 60000`));
  const claim = await api.waitForClaim("l0", "told why", (c) => c.status?.conditions?.some((x) => x.reason === "InvalidSpec") === true);
  assert.equal(claim.status?.phase, "Pending");
});

test("a session timeout not longer than a leader failover is refused at start-up, naming the minimum", async () => {
  // Leader lease 10 s, retry period 1 s: a failover may take 10 + 2.2 × 1 = 12.2 s, more than a 4 s session.
  await assert.rejects(
    startOperator({
      namespace,
      config: config().replace(`sessionTimeoutMs: ${SESSION_MS}`, "sessionTimeoutMs: 4000"),
      extraArgs: [
        "--leader-elect", "--leader-elect-namespace", namespace, "--leader-elect-id", `${LEASE_NAME}-short`,
        "--leader-elect-lease-duration", "10s", "--leader-elect-renew-deadline", "8s", "--leader-elect-retry-period", "1s",
      ],
    }),
    (err: Error) => {
      assert.match(err.message, /operator exited/);
      assert.match(err.message, /zookeeper\.sessionTimeoutMs 4000 is not longer than a leader failover \(12200 ms/);
      assert.match(err.message, /set sessionTimeoutMs to at least 13000/);
      return true;
    },
  );
});
