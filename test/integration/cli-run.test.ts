/**
 * `kubelock run --lock L -- CMD`, as a real process against the real operator: holds the lock while
 * the command runs, heartbeats, stops the command when the grant is lost, releases when it ends.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { CLAIM_PLURAL, GROUP, RELEASE_ANNOTATION, VERSION, type LockClaim } from "../../src/api/types";
import { createNamespace, eventually } from "../support/env";
import { commandPid, endedWithin, grantedRunClaim, running, show, startCli } from "../support/cli";
import { Api, startOperator, type OperatorProcess } from "../support/operator";


let namespace: string;
let api: Api;
let operator: OperatorProcess;

before(async () => {
  namespace = await createNamespace("cli-run");
  api = new Api(namespace);
  operator = await startOperator({ namespace });
});

after(async () => {
  await operator?.stop();
});

const claimsOf = async (lock: string): Promise<LockClaim[]> => (await api.listClaims()).filter((c) => c.spec.lockName === lock);

test("run returns the command's exit code, gives it the token, and releases the lock", async () => {
  await api.createLock("job");
  const run = startCli(["run", "--lock", "job", "-n", namespace, "--", "sh", "-c", "echo token=$KUBELOCK_FENCING_TOKEN lock=$KUBELOCK_LOCK; exit 7"]);
  const result = await run.exited;
  assert.equal(result.code, 7, show(result));
  assert.match(result.stdout, /^token=\d+ lock=job$/m, "the command sees the fencing token");
  assert.match(result.stderr, /granted lock job with fencing token \d+/);

  await eventually("the run's claim is gone", async () => ((await claimsOf("job")).length === 0 ? true : undefined));
  await api.createClaim("job-next", { lockName: "job" });
  const next = await api.waitForPhase("job-next", "Granted");
  const token = /token=(\d+)/.exec(result.stdout)![1];
  assert.ok(BigInt(next.status!.fencingToken!) > BigInt(token), "the next holder's token is larger");
});

test("a lost grant stops the command: exit 4, and the command is gone", async () => {
  await api.createLock("lose");
  const run = startCli(["run", "--lock", "lose", "--grace-period", "5s", "-n", namespace, "--", "sleep", "600"]);
  const claim = await grantedRunClaim(api, "lose");
  const pid = await commandPid(run);
  assert.ok(running(pid), "sleep runs while the lock is held");
  assert.equal(claim.spec.leaseDurationSeconds, 15, "heartbeat mode, default lease 15s");

  await api.custom.patchNamespacedCustomObject(
    { group: GROUP, version: VERSION, namespace, plural: CLAIM_PLURAL, name: claim.metadata.name, body: { metadata: { annotations: { [RELEASE_ANNOTATION]: "true" } } } },
    k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
  );
  const result = await run.exited;
  assert.equal(result.code, 4, show(result));
  assert.match(result.stderr, /lost lock lose: claim lose-run-\w+ is now Released \(Released: released by its holder/);
  assert.equal(running(pid), false, "the sleep child was stopped");
});

test("waits behind a holder, keeps the grant past its lease by renewing, forwards SIGTERM and releases", async () => {
  await api.createLock("beat");
  await api.createClaim("beat-holder", { lockName: "beat" });
  await api.waitForPhase("beat-holder", "Granted");
  const run = startCli(["run", "--lock", "beat", "--lease-duration", "2s", "-n", namespace, "--", "sleep", "600"]);
  await eventually("queue position printed", () => (run.stderr().includes("waiting for lock beat: position 1") ? true : undefined));

  await api.deleteClaim("beat-holder");
  const claim = await grantedRunClaim(api, "beat");
  assert.equal(claim.spec.leaseDurationSeconds, 2);
  const pid = await commandPid(run);
  // Outlive the 2 s lease twice over: only renewals keep the grant.
  const renewed = await api.waitForClaim(claim.metadata.name, "granted for over 4s with renewals", (c) =>
    c.status?.phase === "Granted" && Date.now() - Date.parse(c.status.acquireTime!) > 4000
      && Date.parse(c.spec.renewTime ?? "0") > Date.parse(c.status.acquireTime!) + 1000, 20_000);
  assert.equal(renewed.status?.fencingToken, claim.status?.fencingToken, "still the same grant");

  run.child.kill("SIGTERM");
  const result = await run.exited;
  assert.equal(result.code, 128 + 15, show(result));
  assert.match(result.stderr, /sleep was killed by SIGTERM/);
  assert.equal(running(pid), false);
  await eventually("the run's claim is gone", async () => ((await claimsOf("beat")).length === 0 ? true : undefined));
});

test("a wait timeout is exit 3 and deletes the claim; a missing command is 127 and releases", async () => {
  await api.createLock("held");
  await api.createClaim("held-holder", { lockName: "held" });
  await api.waitForPhase("held-holder", "Granted");
  const timedOut = await startCli(["run", "--lock", "held", "--timeout", "5s", "-n", namespace, "--", "true"]).exited;
  assert.equal(timedOut.code, 3, show(timedOut));
  assert.match(timedOut.stderr, /timed out after 5s waiting for lock held at position 1/);
  await eventually("only the holder's claim is left", async () => ((await claimsOf("held")).length === 1 ? true : undefined));

  await api.createLock("free");
  const missing = await startCli(["run", "--lock", "free", "-n", namespace, "--", "no-such-command-kubelock"]).exited;
  assert.equal(missing.code, 127, show(missing));
  await eventually("the run's claim is gone", async () => ((await claimsOf("free")).length === 0 ? true : undefined));

  const usage = await startCli(["run", "--lock", "free", "-n", namespace]).exited;
  assert.equal(usage.code, 2, show(usage));
});

test("--hold-at-least keeps the lock, renewed, until that long after the grant, though the command ended at once", async () => {
  await api.createLock("linger");
  const run = startCli(["run", "--lock", "linger", "--lease-duration", "2s", "--hold-at-least", "5s", "-n", namespace, "--", "true"]);
  const claim = await grantedRunClaim(api, "linger");
  await eventually("run holds on after true exited", () => (/true exited; holding lock linger [\d.]+s longer/.test(run.stderr()) ? true : undefined));
  await api.createClaim("linger-next", { lockName: "linger" });

  const result = await endedWithin(run, 30_000);
  assert.equal(result.code, 0, show(result));
  assert.doesNotMatch(result.stderr, /lost lock/);
  const next = await api.waitForPhase("linger-next", "Granted");
  // Held on the backend for the 5s, 2.5 leases of 2s: only renewals kept it.
  const held = Date.parse(next.status!.acquireTime!) - Date.parse(claim.status!.acquireTime!);
  assert.ok(held >= 5000, `the next holder was granted ${held}ms after the run's grant`);
  assert.ok(BigInt(next.status!.fencingToken!) > BigInt(claim.status!.fencingToken!));
});

test("--hold-at-least: SIGTERM during the wait releases at once, a lost grant ends it; both exit with the command's code", async () => {
  await api.createLock("linger-signal");
  const signalled = startCli(["run", "--lock", "linger-signal", "--hold-at-least", "10m", "-n", namespace, "--", "true"]);
  await eventually("holding on", () => (signalled.stderr().includes("holding lock linger-signal") ? true : undefined));
  signalled.child.kill("SIGTERM");
  const interrupted = await endedWithin(signalled, 15_000);
  assert.equal(interrupted.code, 0, show(interrupted));
  assert.match(interrupted.stderr, /interrupted by SIGTERM; releasing lock linger-signal now/);
  await eventually("the run's claim is gone", async () => ((await claimsOf("linger-signal")).length === 0 ? true : undefined));

  await api.createLock("linger-lost");
  const lost = startCli(["run", "--lock", "linger-lost", "--hold-at-least", "10m", "-n", namespace, "--", "sh", "-c", "exit 5"]);
  const claim = await grantedRunClaim(api, "linger-lost");
  await eventually("holding on", () => (lost.stderr().includes("holding lock linger-lost") ? true : undefined));
  await api.deleteClaim(claim.metadata.name);
  const ended = await endedWithin(lost, 15_000);
  assert.equal(ended.code, 5, show(ended));
  assert.match(ended.stderr, /lost lock linger-lost after sh exited: claim linger-lost-run-\w+ (was deleted|is being deleted|is now)/);
});
