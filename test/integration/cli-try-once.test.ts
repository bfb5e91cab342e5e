/**
 * Try-once, like `flock -n`: `kubelock wait` and `kubelock run` with `--no-wait` (or `--timeout 0s`) take a
 * free lock, and on a held one delete the claim they made and exit 7, as real processes against the operator.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { createNamespace, eventually } from "../support/env";
import { kubelock, show } from "../support/cli";
import { Api, useOperatorNamespace } from "../support/operator";
import { tempDir } from "../support/temp";

const ctx = useOperatorNamespace("cli-try-once");

/** A lock held by a claim the test made, so that any other claim queues. */
async function heldLock(name: string): Promise<void> {
  await ctx.api.createLock(name);
  await ctx.api.createClaim(`${name}-holder`, { lockName: name });
  await ctx.api.waitForPhase(`${name}-holder`, "Granted");
}

/** Waits until the claims of `lock` are exactly `names` (a deleted claim goes once the operator let go of it). */
const claimsLeft = (lock: string, names: string[]) => eventually(`claims of ${lock}: ${names.join(", ")}`, async () => {
  const left = (await ctx.api.listClaims()).filter((c) => c.spec.lockName === lock).map((c) => c.metadata.name).sort();
  return JSON.stringify(left) === JSON.stringify([...names].sort()) ? true : undefined;
});

test("wait --no-wait: a free lock is granted", async () => {
  await ctx.api.createLock("free");
  const r = await kubelock(["wait", "--lock", "free", "--claim", "mine", "--no-wait", "-n", ctx.namespace]);
  assert.equal(r.code, 0, show(r));
  assert.match(r.stdout, /granted lock free with fencing token \d+/);
  assert.equal((await ctx.api.getClaim("mine"))?.status?.phase, "Granted");
});

for (const flags of [["--no-wait"], ["--timeout", "0s"]]) {
  test(`wait ${flags.join(" ")}: a held lock exits 7 at once and deletes the claim it made`, async () => {
    const lock = `held-wait-${flags.length}`;
    await heldLock(lock);
    const r = await kubelock(["wait", "--lock", lock, "--claim", "try", ...flags, "-n", ctx.namespace]);
    assert.equal(r.code, 7, show(r));
    assert.match(r.stderr, new RegExp(`kubelock wait: lock ${lock} is not free: the operator queued claim try at position 1 instead of granting it at once \\(try-once\\) \\(claim try, created by this command, was deleted\\)`));
    assert.doesNotMatch(r.stderr, /is the kubelock operator running/);
    await claimsLeft(lock, [`${lock}-holder`]);
  });
}

test("wait --no-wait in a pod: the pod's claim it made is deleted too", async () => {
  await heldLock("held-pod");
  const pod = await ctx.api.core.createNamespacedPod({ namespace: ctx.namespace, body: { metadata: { name: "app-1" }, spec: { containers: [{ name: "main", image: "busybox" }] } } });
  const r = await kubelock(["wait", "--lock", "held-pod", "--no-wait"], { POD_NAME: "app-1", POD_NAMESPACE: ctx.namespace, POD_UID: pod.metadata!.uid! });
  assert.equal(r.code, 7, show(r));
  await claimsLeft("held-pod", ["held-pod-holder"]);
});

test("wait --no-wait: an adopted claim is left in place", async () => {
  await heldLock("held-adopted");
  await ctx.api.createClaim("premade", { lockName: "held-adopted" });
  await ctx.api.waitForClaim("premade", "queued", (c) => c.status?.position === 1);
  const r = await kubelock(["wait", "--lock", "held-adopted", "--claim", "premade", "--no-wait", "-n", ctx.namespace]);
  assert.equal(r.code, 7, show(r));
  await claimsLeft("held-adopted", ["held-adopted-holder", "premade"]);
  assert.equal((await ctx.api.getClaim("premade"))?.metadata.deletionTimestamp, undefined, "not being deleted");
});

test("run --no-wait: a held lock exits 7 without running the command; a free one runs it", async () => {
  await heldLock("held-run");
  const marker = join(tempDir("kubelock-try-once-"), "ran");
  for (const flags of [["--no-wait"], ["--timeout", "0s"]]) {
    const r = await kubelock(["run", "--lock", "held-run", ...flags, "-n", ctx.namespace, "--", "touch", marker]);
    assert.equal(r.code, 7, show(r));
    assert.match(r.stderr, /kubelock run: lock held-run is not free: the operator queued claim held-run-run-[0-9a-f]{8} at position 1/);
    assert.equal(existsSync(marker), false, "the command did not run");
    await claimsLeft("held-run", ["held-run-holder"]);
  }
  await ctx.api.deleteClaim("held-run-holder");
  const r = await kubelock(["run", "--lock", "held-run", "--no-wait", "-n", ctx.namespace, "--", "sh", "-c", `touch ${marker}; exit 3`]);
  assert.equal(r.code, 3, show(r));
  assert.ok(existsSync(marker), "the command ran");
});

test("wait --no-wait without an operator: times out (exit 3) after --timeout, naming the operator", async () => {
  const namespace = await createNamespace("cli-try-once-none");
  await new Api(namespace).createLock("unserved");
  const r = await kubelock(["wait", "--lock", "unserved", "--claim", "c", "--no-wait", "--timeout", "1s", "-n", namespace]);
  assert.equal(r.code, 3, show(r));
  assert.match(r.stderr, /timed out after 1s waiting for the operator to grant or queue claim c \(try-once\); is the kubelock operator running\?/);
});

test("help documents --no-wait and exit code 7", async () => {
  for (const command of ["wait", "run"]) {
    const r = await kubelock([command, "--help"]);
    assert.equal(r.code, 0, show(r));
    assert.match(r.stdout, /--no-wait +try once, like flock -n/);
    assert.match(r.stdout, /^ {2}7 {2}not granted at once \(--no-wait or --timeout 0s\)/m);
  }
});
