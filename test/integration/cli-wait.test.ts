/**
 * `kubelock wait`, `release`, `renew` and `status`, each run as a real process (as in an init
 * container: downward-API environment, a pod made through the API) against the real operator.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { parseAllDocuments } from "yaml";
import { createNamespace, eventually, kubeConfig, kubectl } from "../support/env";
import { kubelock, show, startCli } from "../support/cli";
import { Api, startOperator, type OperatorProcess } from "../support/operator";
import { tempDir } from "../support/temp";

const repoRoot = resolve(__dirname, "..", "..");

let namespace: string;
let api: Api;
let operator: OperatorProcess;

before(async () => {
  namespace = await createNamespace("cli-wait");
  api = new Api(namespace);
  operator = await startOperator({ namespace });
});

after(async () => {
  await operator?.stop();
});

async function createPod(name: string): Promise<string> {
  const pod = await api.core.createNamespacedPod({ namespace, body: { metadata: { name }, spec: { containers: [{ name: "main", image: "busybox" }] } } });
  return pod.metadata!.uid!;
}


describe("kubelock wait", () => {
  test("as an init container: queues behind a holder, prints its position, is granted, writes the token", async () => {
    await api.createLock("mutex");
    await api.createClaim("holder", { lockName: "mutex" });
    await api.waitForPhase("holder", "Granted");
    await api.createClaim("ahead", { lockName: "mutex" });
    await api.waitForClaim("ahead", "at position 1", (c) => c.status?.position === 1);
    const uid = await createPod("app-1");
    const tokenFile = join(tempDir("kubelock-token-"), "shared", "lock", "token");

    const wait = startCli(["wait", "--lock", "mutex", "--token-file", tokenFile], { POD_NAME: "app-1", POD_NAMESPACE: namespace, POD_UID: uid });
    await eventually("position 2 printed", () => (wait.stdout().includes("waiting for lock mutex: position 2") ? true : undefined));

    const claim = await api.getClaim("app-1");
    assert.equal(claim?.spec.lockName, "mutex");
    assert.equal(claim?.spec.podName, "app-1", "the claim names its pod");
    assert.deepEqual(claim?.metadata.ownerReferences?.map((o) => [o.apiVersion, o.kind, o.name, o.uid]), [["v1", "Pod", "app-1", uid]],
      "owned by the pod, so it is garbage-collected with it");

    await api.deleteClaim("ahead");
    await eventually("position 1 printed", () => (wait.stdout().includes("waiting for lock mutex: position 1") ? true : undefined));
    await api.deleteClaim("holder");

    const result = await wait.exited;
    assert.equal(result.code, 0, show(result));
    const granted = await api.getClaim("app-1");
    assert.equal(granted?.status?.phase, "Granted");
    const token = granted!.status!.fencingToken!;
    assert.match(token, /^\d+$/);
    assert.equal(readFileSync(tokenFile, "utf8"), token, "the token file holds the claim's fencing token");
    const lines = result.stdout.trim().split("\n");
    assert.equal(lines.at(-1), `granted lock mutex with fencing token ${token}`);
    assert.ok(lines.indexOf("waiting for lock mutex: position 2") < lines.indexOf("waiting for lock mutex: position 1"), result.stdout);
  });

  test("adopts an existing claim of the same lock; refuses one for another lock", async () => {
    await api.createLock("adoptable");
    await api.createClaim("premade", { lockName: "adoptable" });
    const adopted = await kubelock(["wait", "--lock", "adoptable", "--claim", "premade", "-n", namespace]);
    assert.equal(adopted.code, 0, show(adopted));
    assert.match(adopted.stdout, /adopted existing claim premade/);
    assert.match(adopted.stdout, /granted lock adoptable with fencing token \d+/);

    const refused = await kubelock(["wait", "--lock", "mutex", "--claim", "premade", "-n", namespace]);
    assert.equal(refused.code, 1, show(refused));
    assert.match(refused.stderr, /claim premade already exists in namespace .* for lock adoptable, not mutex/);
  });

  test("times out with exit 3, saying where it stood, and deletes the pod-less claim it created", async () => {
    await api.createLock("busy");
    await api.createClaim("busy-holder", { lockName: "busy" });
    await api.waitForPhase("busy-holder", "Granted");
    const result = await kubelock(["wait", "--lock", "busy", "--claim", "late", "--timeout", "5s", "-n", namespace]);
    assert.equal(result.code, 3, show(result));
    assert.match(result.stderr, /timed out after 5s waiting for lock busy at position 1/);
    await eventually("claim late deleted", async () => ((await api.getClaim("late")) ? undefined : true));
  });

  test("a missing lock is exit 5", async () => {
    const result = await kubelock(["wait", "--lock", "nope", "--claim", "lonely", "-n", namespace]);
    assert.equal(result.code, 5, show(result));
    assert.match(result.stderr, new RegExp(`lock nope not found in namespace ${namespace}`));
  });

  test("a LockNotFound older than the lock is not believed: the wait goes on (exit 3 at its timeout, not 5)", async () => {
    await api.createClaim("before-its-lock", { lockName: "arrives-later" });
    await api.waitForClaim("before-its-lock", "told its lock is missing", (c) => c.status?.conditions?.some((x) => x.reason === "LockNotFound") === true);
    // With the operator stopped, the claim keeps saying LockNotFound after the lock exists.
    await operator.stop();
    try {
      await api.createLock("arrives-later");
      const result = await kubelock(["wait", "--lock", "arrives-later", "--claim", "before-its-lock", "--timeout", "3s", "-n", namespace]);
      assert.equal(result.code, 3, show(result));
    } finally {
      operator = await startOperator({ namespace });
    }
    await api.waitForPhase("before-its-lock", "Granted");
  });

  test("usage errors are exit 2: no --lock, no claim name outside a pod, a bad duration", async () => {
    const noLock = await kubelock(["wait", "-n", namespace]);
    assert.equal(noLock.code, 2, show(noLock));
    assert.match(noLock.stderr, /--lock is required/);
    const noName = await kubelock(["wait", "--lock", "mutex", "-n", namespace]);
    assert.equal(noName.code, 2, show(noName));
    assert.match(noName.stderr, /--claim NAME is required when POD_NAME is not set/);
    const badDuration = await kubelock(["wait", "--lock", "mutex", "--claim", "x", "--timeout", "30"]);
    assert.equal(badDuration.code, 2, show(badDuration));
    assert.match(badDuration.stderr, /--timeout "30" has no unit: use a number with a unit, like 30s, 5m, 1h or 1h30m/);
  });

  test("a ServiceAccount without RBAC gets exit 6 and the fix", async () => {
    await api.core.createNamespacedServiceAccount({ namespace, body: { metadata: { name: "nobody" } } });
    const request = await api.core.createNamespacedServiceAccountToken({ name: "nobody", namespace, body: { spec: { audiences: [] } } });
    const admin = kubeConfig();
    const cluster = admin.getCurrentCluster()!;
    const restricted = new k8s.KubeConfig();
    restricted.loadFromOptions({
      clusters: [cluster],
      users: [{ name: "nobody", token: request.status!.token }],
      contexts: [{ name: "nobody", cluster: cluster.name, user: "nobody", namespace }],
      currentContext: "nobody",
    });
    const file = join(tempDir("kubelock-kubeconfig-"), "config");
    writeFileSync(file, restricted.exportConfig());
    const result = await kubelock(["wait", "--kubeconfig", file, "--lock", "mutex", "--claim", "denied"]);
    assert.equal(result.code, 6, show(result));
    assert.match(result.stderr, new RegExp(`permission denied: create lockclaims in ${namespace} — bind the kubelock-claimer ClusterRole to this ServiceAccount`),
      "the namespace comes from the kubeconfig context");

    // Bound to deploy/'s kubelock-claimer role (and nothing else), the same ServiceAccount gets its grant.
    const claimerRole = parseAllDocuments(readFileSync(join(repoRoot, "deploy/rbac.yaml"), "utf8"))
      .map((d) => d.toJSON()).find((o) => o.kind === "ClusterRole" && o.metadata.name === "kubelock-claimer");
    const applied = await kubectl(["apply", "--server-side", "--force-conflicts", "-f", "-"], { input: JSON.stringify(claimerRole) });
    assert.equal(applied.code, 0, applied.stderr);
    const bound = await kubectl(["create", "rolebinding", "nobody-claimer", "-n", namespace, "--clusterrole=kubelock-claimer", `--serviceaccount=${namespace}:nobody`]);
    assert.equal(bound.code, 0, bound.stderr);
    await api.createLock("claimer-lock");
    const tokenFile = join(tempDir("kubelock-token-"), "token");
    const granted = await eventually("the RoleBinding to take effect", async () => {
      const attempt = await kubelock(["wait", "--kubeconfig", file, "--lock", "claimer-lock", "--claim", "allowed", "--timeout", "30s", "--token-file", tokenFile]);
      return attempt.code === 6 ? undefined : attempt;
    });
    assert.equal(granted.code, 0, show(granted));
    assert.equal(readFileSync(tokenFile, "utf8").trim(), (await api.getClaim("allowed"))?.status?.fencingToken);
  });
});

describe("asking again under the same claim name after a release", () => {
  test("kubelock wait and run replace an ended claim kubelock made; one made otherwise is left, with exit 4", async () => {
    await api.createLock("reask");
    const first = await kubelock(["wait", "--lock", "reask", "--claim", "reuse", "-n", namespace]);
    assert.equal(first.code, 0, show(first));
    const ended = await api.getClaim("reuse");
    assert.equal(ended?.metadata.labels?.["app.kubernetes.io/managed-by"], "kubelock");
    const released = await kubelock(["release", "--claim", "reuse", "-n", namespace]);
    assert.equal(released.code, 0, show(released));
    assert.equal((await api.getClaim("reuse"))?.status?.phase, "Released");

    const again = await kubelock(["wait", "--lock", "reask", "--claim", "reuse", "-n", namespace]);
    assert.equal(again.code, 0, show(again));
    assert.match(again.stdout, /^claim reuse had ended \(phase Released\); asking again with a new claim of that name$/m);
    assert.doesNotMatch(again.stdout, /adopted existing claim/);
    const renewed = await api.getClaim("reuse");
    assert.notEqual(renewed?.metadata.uid, ended?.metadata.uid, "a new claim, not the ended one");
    assert.equal(renewed?.status?.phase, "Granted");
    assert.ok(BigInt(renewed!.status!.fencingToken!) > BigInt(ended!.status!.fencingToken!), "a new grant, with a greater token");
    assert.match(again.stdout, new RegExp(`granted lock reask with fencing token ${renewed!.status!.fencingToken}$`, "m"));

    // kubelock run the same way: the ended claim is replaced, the command runs, the new claim is deleted at the end.
    assert.equal((await kubelock(["release", "--claim", "reuse", "-n", namespace])).code, 0);
    const run = await kubelock(["run", "--lock", "reask", "--claim", "reuse", "-n", namespace, "--", "sh", "-c", "echo ran with $KUBELOCK_FENCING_TOKEN"]);
    assert.equal(run.code, 0, show(run));
    assert.match(run.stderr, /claim reuse had ended \(phase Released\); asking again with a new claim of that name/);
    assert.match(run.stdout, /^ran with \d+$/m);
    assert.equal(await api.getClaim("reuse"), undefined, "the claim run made is deleted at the end");

    // Made with kubectl (no managed-by label): someone's record, left in place; the wait says how to ask again.
    await api.createClaim("manual", { lockName: "reask" });
    await api.waitForPhase("manual", "Granted");
    assert.equal((await kubelock(["release", "--claim", "manual", "-n", namespace])).code, 0);
    const record = await api.getClaim("manual");
    const refused = await kubelock(["wait", "--lock", "reask", "--claim", "manual", "-n", namespace]);
    assert.equal(refused.code, 4, show(refused));
    assert.match(refused.stderr, /claim manual ended with phase Released.*; delete it to ask for lock reask again/);
    assert.equal((await api.getClaim("manual"))?.metadata.uid, record?.metadata.uid, "left in place");
  });
});

describe("kubelock release", () => {
  test("annotates the claim, waits for Released, and the next claim is granted", async () => {
    await api.createLock("handover");
    await api.createClaim("first", { lockName: "handover" });
    await api.waitForPhase("first", "Granted");
    await api.createClaim("second", { lockName: "handover" });
    await api.waitForPhase("second", "Pending");

    // Claim and namespace from the downward API, as in the pod's main container.
    const result = await kubelock(["release"], { POD_NAME: "first", POD_NAMESPACE: namespace });
    assert.equal(result.code, 0, show(result));
    assert.match(result.stdout, /released lock handover \(claim first\)/);
    const first = await api.getClaim("first");
    assert.equal(first?.status?.phase, "Released", "Released by the time the command returns");
    assert.equal(first?.metadata.annotations?.["kubelock.io/release"], "true");
    await api.waitForPhase("second", "Granted");
  });

  test("a missing claim is exit 5", async () => {
    const result = await kubelock(["release", "--claim", "ghost", "-n", namespace]);
    assert.equal(result.code, 5, show(result));
    assert.match(result.stderr, new RegExp(`claim ghost not found in namespace ${namespace}`));
  });
});

describe("kubelock renew", () => {
  test("moves spec.renewTime to now as a MicroTime, once or --every", async () => {
    await api.createLock("beat");
    await api.createClaim("beating", { lockName: "beat", leaseDurationSeconds: 30 });
    await api.waitForPhase("beating", "Granted");
    const before = Date.now();
    const once = await kubelock(["renew", "--claim", "beating", "-n", namespace]);
    assert.equal(once.code, 0, show(once));
    const renewTime = (await api.getClaim("beating"))!.spec.renewTime!;
    assert.match(renewTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, "RFC 3339 with microseconds");
    assert.ok(Date.parse(renewTime) >= before - 1000 && Date.parse(renewTime) <= Date.now() + 1000, renewTime);

    const every = startCli(["renew", "--claim", "beating", "--every", "200ms", "-n", namespace]);
    const seen = new Set<string>();
    await eventually("three renewals", async () => {
      seen.add((await api.getClaim("beating"))!.spec.renewTime!);
      return seen.size >= 4 ? true : undefined;
    });
    every.child.kill("SIGTERM");
    const result = await every.exited;
    assert.equal(result.code, 0, show(result));
    assert.equal((await api.getClaim("beating"))?.status?.phase, "Granted");

    const missing = await kubelock(["renew", "--claim", "ghost", "-n", namespace]);
    assert.equal(missing.code, 5, show(missing));
  });
});

describe("kubelock status", () => {
  test("shows the lock, its holder and its queue in grant order", async () => {
    await api.createLock("shown", { maxHolders: 1 });
    await api.createClaim("s-holder", { lockName: "shown" });
    const holder = await api.waitForPhase("s-holder", "Granted");
    await api.createClaim("s-low", { lockName: "shown" });
    await api.createClaim("s-high", { lockName: "shown", priority: 5 });
    await api.waitForClaim("s-high", "first in the queue", (c) => c.status?.position === 1);
    await api.waitForClaim("s-low", "second in the queue", (c) => c.status?.position === 2);
    await eventually("lock status shows the holder", async () => ((await api.getLock("shown")).status?.holders?.length === 1 ? true : undefined));

    const result = await kubelock(["status", "shown", "-n", namespace]);
    assert.equal(result.code, 0, show(result));
    const out = result.stdout;
    assert.match(out, /^Lock: +shown$/m);
    assert.match(out, /^Max holders: +1$/m);
    assert.match(out, /^Ready: +True +BackendReady/m);
    assert.match(out, /^Available: +False +AllSlotsHeld/m);
    assert.match(out, /^Holders \(1 of 1\):$/m);
    assert.match(out, /^ +CLAIM +HOLDER +CLUSTER +TOKEN +SINCE$/m);
    assert.match(out, new RegExp(`^ +s-holder +s-holder +- +${holder.status!.fencingToken} +\\d+s$`, "m"));
    assert.match(out, /^Waiting \(2\):$/m);
    const high = out.search(/^ +1 +s-high +s-high +5 +\d+s$/m);
    const low = out.search(/^ +2 +s-low +s-low +0 +\d+s$/m);
    assert.ok(high > 0 && low > high, out);

    const missing = await kubelock(["status", "absent", "-n", namespace]);
    assert.equal(missing.code, 5, show(missing));
    assert.match(missing.stderr, new RegExp(`lock absent not found in namespace ${namespace}`));
  });
});
