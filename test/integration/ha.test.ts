/**
 * High availability: operator replicas with --leader-elect on one namespace. Only the leader
 * reconciles; kill -9 of the leader during contention hands over within the lease duration (plus
 * polling) and no grant is lost or doubled; SIGTERM hands over at once; bad settings stop start-up.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { cliCommand } from "../support/cli-entry";
import { createNamespace, eventually, kubeConfig, run, testEnv } from "../support/env";
import { Api, ClaimHistory, findLog as find, identityOf, leadingAt, logLines, startOperator, type OperatorProcess } from "../support/operator";

const LEASE_MS = 4_000;
const RETRY_MS = 500;
/** client-go's acquire jitter: a follower polls every retry period × (1 .. 2.2). */
const MAX_POLL_MS = RETRY_MS * 2.2;
const LEASE_NAME = "kubelock-ha";

let namespace: string;
let api: Api;
let history: ClaimHistory;
const operators: OperatorProcess[] = [];

async function replica(): Promise<OperatorProcess> {
  const op = await startOperator({
    namespace,
    extraArgs: [
      "--leader-elect", "--leader-elect-namespace", namespace, "--leader-elect-id", LEASE_NAME,
      "--leader-elect-lease-duration", "4s", "--leader-elect-renew-deadline", "3s", "--leader-elect-retry-period", "500ms",
    ],
  });
  operators.push(op);
  return op;
}

async function scrape(op: OperatorProcess, metric: string): Promise<string | undefined> {
  const address = find(op, "serving metrics")?.address as string;
  const body = await (await fetch(`http://${address}/metrics`)).text();
  return body.split("\n").find((l) => l.startsWith(`${metric} `))?.split(" ")[1];
}

before(async () => {
  namespace = await createNamespace("ha");
  api = new Api(namespace);
  history = new ClaimHistory(namespace);
  await history.start();
});

after(async () => {
  history?.stop();
  await Promise.all(operators.map((op) => op.stop()));
});

const claims = ["c0", "c1", "c2", "c3", "c4", "c5"];
let first: OperatorProcess;
let second: OperatorProcess;
let third: OperatorProcess;

test("with two replicas only the leader reconciles; the follower keeps its caches warm", async () => {
  first = await replica();
  await eventually("the first replica leads", () => leadingAt(first));
  second = await replica();
  await eventually("the follower sees the leader", () => find(second, "new leader observed"));
  assert.equal(find(second, "new leader observed")!.leader, identityOf(first));

  await api.createLock("db", { maxHolders: 1 });
  for (const name of claims) await api.createClaim(name, { lockName: "db" });
  await api.waitForPhase("c0", "Granted");
  for (const name of claims.slice(1)) await api.waitForPhase(name, "Pending");

  assert.ok(find(first, "starting workers"), "the leader runs the workers");
  assert.ok(find(second, "caches synced"), "the follower synced its caches");
  assert.equal(find(second, "starting workers"), undefined, "the follower runs no workers");
  assert.equal(find(second, "reconciled"), undefined);
  const lease = await kubeConfig().makeApiClient(k8s.CoordinationV1Api).readNamespacedLease({ name: LEASE_NAME, namespace });
  assert.equal(lease.spec?.holderIdentity, identityOf(first));
  assert.equal(await scrape(first, "kubelock_leader"), "1");
  assert.equal(await scrape(second, "kubelock_leader"), "0");
});

test("kill -9 of the leader during contention: the follower leads within the lease duration and no grant is lost or doubled", async () => {
  const c0 = await api.getClaim("c0");
  const killedAt = Date.now();
  await first.kill();
  const led = await eventually("the follower leads", () => leadingAt(second), 20_000);
  const failoverMs = led - killedAt;
  console.log(`failover after kill -9: ${failoverMs} ms (lease 4s, retry 0.5s)`);
  // The follower counts the lease from when it last saw the record change, which is after the leader's
  // last renewal (up to one retry period plus a request before the kill) and up to one jittered poll
  // after it, and notices expiry on a poll: from lease - (retry + request) to lease + two polls.
  assert.ok(failoverMs >= LEASE_MS - RETRY_MS - 1_000, `not before the lease could expire (${failoverMs} ms)`);
  assert.ok(failoverMs <= LEASE_MS + 2 * MAX_POLL_MS + 1_000, `failover took ${failoverMs} ms`);

  // The hold survived the failover: same token, and the queue is served in order.
  for (const name of claims) {
    const granted = await api.waitForPhase(name, "Granted");
    if (name === "c0") assert.equal(granted.status?.fencingToken, c0?.status?.fencingToken, "c0 kept its hold across the failover");
    await api.deleteClaim(name);
  }
  await eventually("every claim is gone", async () => ((await api.listClaims()).length === 0 ? true : undefined));
  const replay = history.replay(new Set(claims));
  assert.equal(replay.maxGranted, 1, "never two holders of a mutex");
  assert.deepEqual(replay.grants.map((g) => g.name), claims, "each claim granted once, in queue order");
  const tokens = replay.grants.map((g) => BigInt(g.token));
  assert.deepEqual([...tokens].sort((a, b) => (a < b ? -1 : 1)), tokens, "fencing tokens strictly increase");
  assert.equal(new Set(tokens).size, tokens.length);
});

test("SIGTERM of the leader releases the Lease: a follower leads in under 2 s", async () => {
  third = await replica();
  await eventually("the new follower sees the leader", () => (find(third, "new leader observed")?.leader === identityOf(second) ? true : undefined));
  await api.createClaim("t0", { lockName: "db" });
  await api.createClaim("t1", { lockName: "db" });
  await api.waitForPhase("t0", "Granted");
  await api.waitForPhase("t1", "Pending");

  const terminatedAt = Date.now();
  await second.stop();
  const led = await eventually("the third replica leads", () => leadingAt(third), 10_000);
  const handoverMs = led - terminatedAt;
  console.log(`handover after SIGTERM: ${handoverMs} ms`);
  assert.ok(handoverMs < 2_000, `handover took ${handoverMs} ms`);
  assert.ok(find(second, "released the leader lease"), "the old leader released the Lease");
  assert.ok(find(second, "stopped"), "and stopped cleanly");

  // The old leader left the pods' holds alone: t0 keeps its token, and the new leader serves the queue.
  const t0 = await api.waitForPhase("t0", "Granted");
  await api.deleteClaim("t0");
  const t1 = await api.waitForPhase("t1", "Granted");
  assert.ok(BigInt(t1.status!.fencingToken!) > BigInt(t0.status!.fencingToken!));
  const replay = history.replay(new Set(["t0", "t1"]));
  assert.deepEqual(replay.grants.map((g) => g.name), ["t0", "t1"]);
});

test("a leader paused past its renew deadline finds out when it resumes, stops its workers and restarts in-process as a follower", async () => {
  const fourth = await replica();
  const leader = third;
  await eventually("the new follower sees the leader", () => (find(fourth, "new leader observed")?.leader === identityOf(leader) ? true : undefined));
  const pid = find(leader, "operator started")!.pid as number;
  process.kill(pid, "SIGSTOP"); // a long GC pause, a frozen VM: no renewals, no exit
  try {
    await eventually("the follower leads", () => leadingAt(fourth), 20_000);
  } finally {
    process.kill(pid, "SIGCONT");
  }
  await eventually("the old leader restarts as a follower", () => find(leader, "operator restarted"), 15_000);
  assert.ok(find(leader, "could not renew the leader lease within the renew deadline; stopping leading"), leader.output().slice(-2000));
  assert.ok(find(leader, "leader election lost; stopping the controllers"));
  const restarted = find(leader, "operator restarted")!.identity as string;
  assert.notEqual(restarted, identityOf(leader), "the follower instance campaigns under an identity of its own");
  await eventually("the follower instance has synced and the old one stopped", () => find(leader, "the old instance stopped"));
  assert.equal(logLines(leader).filter((l) => l.msg === "caches synced").length, 2, "it stopped once the new instance had synced");
  await eventually("the restarted instance follows the new leader", () => (logLines(leader).some((l) => l.msg === "new leader observed" && l.identity === restarted && l.leader === identityOf(fourth)) ? true : undefined));
  process.kill(pid, 0); // still running
  const starts = logLines(leader).filter((l) => l.msg === "acquired the leader lease; leading");
  assert.equal(starts.length, 1, "the restarted instance does not lead while the new leader renews");

  // The new leader serves the lock.
  await api.createClaim("p0", { lockName: "db" });
  await api.waitForPhase("t1", "Granted");
  await api.deleteClaim("t1");
  await api.waitForPhase("p0", "Granted");
  assert.equal(history.replay().maxGranted, 1);
});

test("invalid leader election settings stop start-up with a clear message and exit code 2", async () => {
  const result = await run(process.execPath, [
    ...cliCommand().args, "operator", "--kubeconfig", testEnv.operatorKubeconfig, "--leader-elect",
    "--leader-elect-lease-duration", "4s", "--leader-elect-renew-deadline", "5s", "--leader-elect-retry-period", "500ms",
  ]);
  assert.equal(result.code, 2, result.stderr);
  assert.match(result.stderr, /lease duration \(4000ms\) must be greater than renew deadline \(5000ms\)/);
  assert.equal(result.stderr.trim().split("\n").length, 2, `one line per mistake:\n${result.stderr}`);
});
