/**
 * Hostile input against the real API server and the real operator: a barrage of malformed objects,
 * each rejected at admission with the offending field named, or answered by the operator with a clear
 * condition or Warning event, while the operator keeps serving every other lock (a lock granted before
 * the barrage keeps its grant; a new lock and claim are granted within seconds after it).
 *
 * crds.test.ts already covers the basic schema cases (maxHolders 0/1001/"three"/1.5, negative lease
 * durations, waitTimeoutSeconds 0, priority "high", lockName/podName/key patterns, key ".hidden", the
 * length limits 254/201, lockName and podName changes); these are new ones.
 *
 * Tests named [BUG X] fail against the current product on purpose; the lead has the description.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { API_VERSION, CLAIM_PLURAL, GROUP, LOCK_ANNOTATION, LOCK_PLURAL, PRIORITY_ANNOTATION, VERSION, type LockClaim } from "../../src/api/types";
import { createNamespace, eventually, kubectl, type CommandResult } from "../support/env";
import { Api, startOperator, useOperatorNamespace } from "../support/operator";

const env = useOperatorNamespace("hostile");

type Kind = "DistributedLock" | "LockClaim";
const plural = (kind: Kind) => (kind === "DistributedLock" ? LOCK_PLURAL : CLAIM_PLURAL);
const lock = (name: string, spec: unknown) => ({ apiVersion: API_VERSION, kind: "DistributedLock" as const, metadata: { name }, spec });
const claim = (name: string, spec: unknown) => ({ apiVersion: API_VERSION, kind: "LockClaim" as const, metadata: { name }, spec });

/** POSTs the object as JSON, exactly as given (strict field validation); the API server's message, or undefined if it was created. */
async function submit(body: { kind: Kind; metadata: { name: string } }): Promise<{ code: number; message: string } | undefined> {
  try {
    await env.api.custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: env.namespace, plural: plural(body.kind), body, fieldValidation: "Strict" });
    return undefined;
  } catch (err) {
    if (!(err instanceof k8s.ApiException)) throw err;
    const text = typeof err.body === "string" ? err.body : JSON.stringify(err.body);
    let message = text;
    try {
      message = (JSON.parse(text) as { message?: string }).message ?? text;
    } catch {
      // not JSON: keep the text
    }
    return { code: err.code, message };
  }
}

function mergePatch(resource: string, body: unknown): Promise<CommandResult> {
  return kubectl(["patch", resource, "-n", env.namespace, "--type", "merge", "-p", JSON.stringify(body)]);
}

const grantedCondition = (c: LockClaim | undefined) => c?.status?.conditions?.find((x) => x.type === "Granted");

async function warningEvent(object: string, reason: string): Promise<k8s.CoreV1Event> {
  return eventually(`${reason} event on ${object}`, async () => {
    const events = await env.api.core.listNamespacedEvent({ namespace: env.namespace, fieldSelector: `involvedObject.name=${object}` });
    return events.items.find((e) => e.reason === reason && e.type === "Warning");
  });
}

async function annotatedPod(name: string, annotations: Record<string, string>): Promise<k8s.V1Pod> {
  return env.api.core.createNamespacedPod({
    namespace: env.namespace,
    body: { metadata: { name, annotations }, spec: { containers: [{ name: "main", image: "busybox" }] } },
  });
}

const big = (n: number, c = "a") => c.repeat(n);
/** Cyrillic 'а' (U+0430) in place of Latin 'a'. */
const lookalike = "migr\u0430tions";

interface AdmissionCase {
  name: string;
  body: ReturnType<typeof lock> | ReturnType<typeof claim>;
  /** The field path the API server's message must name. */
  field: string;
  message?: RegExp;
}

const admissionCases: AdmissionCase[] = [
  // wrong types
  { name: "maxHolders as a string NaN", body: lock("l", { maxHolders: "NaN" }), field: "spec.maxHolders", message: /must be of type integer/ },
  { name: "maxHolders as a string Infinity", body: lock("l", { maxHolders: "Infinity" }), field: "spec.maxHolders", message: /must be of type integer/ },
  { name: "maxHolders as an array", body: lock("l", { maxHolders: [1] }), field: "spec.maxHolders", message: /must be of type integer/ },
  { name: "maxHolders as an object", body: lock("l", { maxHolders: {} }), field: "spec.maxHolders" },
  { name: "leaseDurationSeconds as a duration string", body: lock("l", { leaseDurationSeconds: "30s" }), field: "spec.leaseDurationSeconds", message: /must be of type integer/ },
  { name: "key as an object", body: lock("l", { key: { a: 1 } }), field: "spec.key" },
  { name: "key as a number", body: lock("l", { key: 5 }), field: "spec.key", message: /must be of type string/ },
  { name: "key as an array", body: lock("l", { key: ["a", "b"] }), field: "spec.key", message: /must be of type string/ },
  { name: "backend as an array", body: lock("l", { backend: ["redis"] }), field: "spec.backend", message: /must be of type string/ },
  { name: "spec as an array", body: lock("l", [1]), field: "spec", message: /must be of type object/ },
  { name: "spec as a string", body: lock("l", "redis"), field: "spec", message: /must be of type object/ },
  { name: "lockName as an object", body: claim("c", { lockName: { name: "l" } }), field: "spec.lockName" },
  { name: "podName as a number", body: claim("c", { lockName: "l", podName: 7 }), field: "spec.podName", message: /must be of type string/ },
  { name: "waitTimeoutSeconds as a duration string", body: claim("c", { lockName: "l", waitTimeoutSeconds: "5m" }), field: "spec.waitTimeoutSeconds", message: /must be of type integer/ },
  { name: "renewTime as a number", body: claim("c", { lockName: "l", renewTime: 12345 }), field: "spec.renewTime" },
  // numbers out of range
  { name: "maxHolders -1", body: lock("l", { maxHolders: -1 }), field: "spec.maxHolders", message: /greater than or equal to 1/ },
  { name: "maxHolders 2^31", body: lock("l", { maxHolders: 2 ** 31 }), field: "spec.maxHolders", message: /int32|less than or equal to 1000/ },
  { name: "maxHolders 1e100", body: lock("l", { maxHolders: 1e100 }), field: "spec.maxHolders" },
  { name: "leaseDurationSeconds 0 on a lock", body: lock("l", { leaseDurationSeconds: 0 }), field: "spec.leaseDurationSeconds", message: /greater than or equal to 1/ },
  { name: "leaseDurationSeconds 2^31 on a lock", body: lock("l", { leaseDurationSeconds: 2 ** 31 }), field: "spec.leaseDurationSeconds", message: /int32/ },
  { name: "leaseDurationSeconds 0 on a claim", body: claim("c", { lockName: "l", leaseDurationSeconds: 0 }), field: "spec.leaseDurationSeconds", message: /greater than or equal to 1/ },
  { name: "priority 2^31", body: claim("c", { lockName: "l", priority: 2 ** 31 }), field: "spec.priority", message: /int32/ },
  { name: "priority -2^31-1", body: claim("c", { lockName: "l", priority: -(2 ** 31) - 1 }), field: "spec.priority", message: /int32/ },
  { name: "priority 1e100", body: claim("c", { lockName: "l", priority: 1e100 }), field: "spec.priority" },
  { name: "priority 0.5", body: claim("c", { lockName: "l", priority: 0.5 }), field: "spec.priority", message: /must be of type integer/ },
  { name: "waitTimeoutSeconds -1", body: claim("c", { lockName: "l", waitTimeoutSeconds: -1 }), field: "spec.waitTimeoutSeconds", message: /greater than or equal to 1/ },
  // keys that try to escape their namespace
  { name: "key ../other-ns/key", body: lock("l", { key: "../other-ns/key" }), field: "spec.key", message: /should match/ },
  { name: "key a/b", body: lock("l", { key: "a/b" }), field: "spec.key", message: /should match/ },
  { name: "key %2F (URL-encoded slash)", body: lock("l", { key: "a%2Fb" }), field: "spec.key", message: /should match/ },
  { name: "key ..", body: lock("l", { key: ".." }), field: "spec.key", message: /should match/ },
  { name: "key with a Cyrillic lookalike letter", body: lock("l", { key: lookalike }), field: "spec.key", message: /should match/ },
  { name: "key {hash-tag} (Redis slot escape)", body: lock("l", { key: "{other-ns/key}" }), field: "spec.key", message: /should match/ },
  { name: "key 10,000 characters", body: lock("l", { key: big(10_000, "k") }), field: "spec.key", message: /Too long|may not be (more|longer) than 200/ },
  { name: "backend ../redis", body: lock("l", { backend: "../redis" }), field: "spec.backend", message: /should match/ },
  { name: "backend with a Cyrillic lookalike letter", body: lock("l", { backend: "r\u0435dis" }), field: "spec.backend", message: /should match/ },
  { name: "backend 64 characters", body: lock("l", { backend: big(64, "b") }), field: "spec.backend", message: /Too long|may not be (more|longer) than 63/ },
  // names that reach across namespaces, and huge strings
  { name: "lockName other-ns/lock", body: claim("c", { lockName: "other-ns/lock" }), field: "spec.lockName", message: /should match/ },
  { name: "lockName ../other-ns/lock", body: claim("c", { lockName: "../other-ns/lock" }), field: "spec.lockName", message: /should match/ },
  { name: "lockName with a Cyrillic lookalike letter", body: claim("c", { lockName: lookalike }), field: "spec.lockName", message: /should match/ },
  { name: "lockName empty", body: claim("c", { lockName: "" }), field: "spec.lockName" },
  { name: "lockName 300 characters", body: claim("c", { lockName: big(300, "l") }), field: "spec.lockName", message: /Too long|may not be (more|longer) than 253/ },
  { name: "podName other-ns/pod (a pod in another namespace)", body: claim("c", { lockName: "l", podName: "other-ns/pod" }), field: "spec.podName", message: /should match/ },
  { name: "podName ../pod", body: claim("c", { lockName: "l", podName: "../pod" }), field: "spec.podName", message: /should match/ },
  { name: "podName of 1 MB", body: claim("c", { lockName: "l", podName: big(1 << 20, "p") }), field: "spec.podName", message: /Too long|may not be (more|longer) than 253/ },
  { name: "lock name of 1 MB", body: lock(big(1 << 20, "n"), {}), field: "metadata.name" },
  { name: "lock name with a slash", body: lock("other-ns/lock", {}), field: "metadata.name" },
];

let steadyToken: string | undefined;

describe("hostile input", () => {
  before(async () => {
    // A lock granted before the barrage: it must keep its grant throughout.
    await env.api.createLock("steady");
    await env.api.createClaim("steady-holder", { lockName: "steady" });
    steadyToken = (await env.api.waitForPhase("steady-holder", "Granted")).status?.fencingToken;
    assert.ok(steadyToken);
  });

  describe("the API server rejects malformed objects and names the field", () => {
    for (const c of admissionCases) {
      test(c.name, async () => {
        const r = await submit(c.body);
        assert.ok(r, `accepted: ${JSON.stringify(c.body).slice(0, 300)}`);
        assert.ok([400, 422].includes(r.code), `HTTP ${r.code}: ${r.message.slice(0, 500)}`);
        assert.ok(r.message.includes(c.field), `the message does not name ${c.field}: ${r.message.slice(0, 500)}`);
        if (c.message) assert.match(r.message, c.message);
      });
    }
  });

  describe("immutable fields stay as they were", () => {
    before(async () => {
      await env.api.createLock("imm-keyed", { key: "k1", backend: "redis" });
      await env.api.createLock("imm-plain");
      await env.api.createClaim("imm-claim", { lockName: "steady" });
    });

    const patches: { name: string; resource: string; body: unknown; field: string; message: RegExp }[] = [
      { name: "changing a lock's key", resource: "distributedlock/imm-keyed", body: { spec: { key: "k2" } }, field: "spec.key", message: /key is immutable/ },
      { name: "removing a lock's key", resource: "distributedlock/imm-keyed", body: { spec: { key: null } }, field: "spec.key", message: /key is immutable/ },
      { name: "setting a key on a lock that had none", resource: "distributedlock/imm-plain", body: { spec: { key: "other" } }, field: "spec.key", message: /key is immutable/ },
      { name: "changing a lock's backend", resource: "distributedlock/imm-keyed", body: { spec: { backend: "etcd" } }, field: "spec.backend", message: /backend is immutable/ },
      { name: "removing a lock's backend", resource: "distributedlock/imm-keyed", body: { spec: { backend: null } }, field: "spec.backend", message: /backend is immutable/ },
      { name: "setting a backend on a lock that had none", resource: "distributedlock/imm-plain", body: { spec: { backend: "redis" } }, field: "spec.backend", message: /backend is immutable/ },
      { name: "removing a claim's lockName", resource: "lockclaim/imm-claim", body: { spec: { lockName: null } }, field: "spec.lockName", message: /Required value/ },
    ];
    for (const p of patches) {
      test(p.name, async () => {
        const r = await mergePatch(p.resource, p.body);
        assert.notEqual(r.code, 0, `accepted: ${r.stdout}`);
        assert.ok(r.stderr.includes(p.field), `the message does not name ${p.field}: ${r.stderr}`);
        assert.match(r.stderr, p.message);
      });
    }

    test("the objects are unchanged", async () => {
      assert.deepEqual((await env.api.getLock("imm-keyed")).spec, { key: "k1", backend: "redis", maxHolders: 1, leaseDurationSeconds: 30 });
      assert.deepEqual((await env.api.getLock("imm-plain")).spec, { maxHolders: 1, leaseDurationSeconds: 30 });
      assert.equal((await env.api.getClaim("imm-claim"))?.spec.lockName, "steady");
    });
  });

  describe("the operator answers bad input with a condition or a Warning event", () => {
    /** An InvalidLockClaim event says why in one sentence: no HTTP dump of the refusal (code, raw Status body, headers). */
    const assertOneSentence = (message: string | undefined) => {
      const text = message ?? "";
      for (const dump of ["HTTP-Code", "Body:", "Headers", '{"kind"', "Unknown API Status Code"]) assert.ok(!text.includes(dump), `the event holds "${dump}": ${text}`);
      assert.doesNotMatch(text, /\n/, `more than one line: ${text}`);
      assert.match(text, /^cannot create LockClaim for lock ".*": the API server refused it: .*spec\.\w+.*\.$/, text);
    };

    test("a pod asking for a lock name that is no object name gets InvalidLockClaim naming spec.lockName, and no claim", async () => {
      for (const [pod, lockName] of [["bad-lock-1", "Bad_Lock"], ["bad-lock-2", "../other-ns/lock"], ["bad-lock-3", big(300, "l")]] as const) {
        await annotatedPod(pod, { [LOCK_ANNOTATION]: lockName });
        const event = await warningEvent(pod, "InvalidLockClaim");
        assert.match(event.message ?? "", /spec\.lockName/, event.message);
        assert.ok((event.message ?? "").length < 4_000, `the event echoes the whole value: ${event.message?.length} characters`);
        assertOneSentence(event.message);
        assert.equal(await env.api.getClaim(pod), undefined);
      }
    });

    test("a pod whose priority is 1e100 gets InvalidPriority, and no claim", async () => {
      await annotatedPod("prio-huge", { [LOCK_ANNOTATION]: "steady", [PRIORITY_ANNOTATION]: "1e100" });
      const event = await warningEvent("prio-huge", "InvalidPriority");
      assert.match(event.message ?? "", /kubelock\.io\/priority="1e100" is not an integer/);
      assert.equal(await env.api.getClaim("prio-huge"), undefined);
    });

    test("a pod whose priority overflows int32 gets InvalidLockClaim naming spec.priority, and no claim", async () => {
      await annotatedPod("prio-int32", { [LOCK_ANNOTATION]: "steady", [PRIORITY_ANNOTATION]: String(2 ** 31) });
      const event = await warningEvent("prio-int32", "InvalidLockClaim");
      assert.match(event.message ?? "", /spec\.priority/);
      assertOneSentence(event.message);
      assert.equal(await env.api.getClaim("prio-int32"), undefined);
    });

    test("a pod whose claim name is taken by another pod's claim gets ClaimNameTaken; the claim stays the other pod's", async () => {
      await env.api.createLock("taken-lock");
      await env.api.createClaim("squatted", { lockName: "taken-lock", podName: "someone-else" });
      await annotatedPod("squatted", { [LOCK_ANNOTATION]: "taken-lock" });
      const event = await warningEvent("squatted", "ClaimNameTaken");
      assert.match(event.message ?? "", /LockClaim squatted exists but is not this pod's/);
      const squatted = await env.api.waitForClaim("squatted", "InvalidSpec (its pod is missing)", (c) => grantedCondition(c)?.reason === "InvalidSpec");
      assert.equal(squatted.spec.podName, "someone-else");
      assert.notEqual(squatted.status?.phase, "Granted");
      assert.deepEqual(squatted.metadata.ownerReferences ?? [], [], "the pod must not have adopted another pod's claim");
    });

    test("claims and a lock on an unknown backend can still be deleted (finalizers do not get stuck)", async () => {
      await env.api.createLock("lost-backend", { backend: "consul" });
      await env.api.createClaim("lost-1", { lockName: "lost-backend" });
      await env.api.waitForClaim("lost-1", "BackendUnavailable", (c) => grantedCondition(c)?.reason === "BackendUnavailable");
      const lockNow = await env.api.getLock("lost-backend");
      assert.equal(lockNow.status?.conditions?.find((c) => c.type === "Ready")?.reason, "UnknownBackend");
      await env.api.deleteClaim("lost-1");
      await eventually("claim lost-1 gone", async () => ((await env.api.getClaim("lost-1")) ? undefined : true));
      await env.api.deleteLock("lost-backend");
      await eventually("lock lost-backend gone", async () => {
        try {
          await env.api.getLock("lost-backend");
          return undefined;
        } catch (err) {
          if (err instanceof k8s.ApiException && err.code === 404) return true;
          throw err;
        }
      });
    });

    test("the longest valid names and keys and the int32 extremes are served", async () => {
      const longName = big(253, "x");
      await env.api.createLock(longName, { key: big(200, "k"), maxHolders: 1000 });
      await env.api.createClaim(big(253, "c"), { lockName: longName, priority: 2 ** 31 - 1, waitTimeoutSeconds: 2 ** 31 - 1 });
      await env.api.createClaim("lowest", { lockName: longName, priority: -(2 ** 31) });
      await env.api.waitForPhase(big(253, "c"), "Granted");
      await env.api.waitForPhase("lowest", "Granted");
      const l = await eventually("the long lock lists both holders", async () => {
        const got = await env.api.getLock(longName);
        return got.status?.holders?.length === 2 ? got : undefined;
      });
      assert.equal(l.status?.conditions?.find((c) => c.type === "Ready")?.status, "True");
    });
  });

  test("after the barrage the operator serves every lock: the old grant stands and a new claim is granted within seconds", async () => {
    const steady = await env.api.getClaim("steady-holder");
    assert.equal(steady?.status?.phase, "Granted");
    assert.equal(steady?.status?.fencingToken, steadyToken);
    await env.api.createLock("after-barrage");
    await env.api.createClaim("after-barrage-1", { lockName: "after-barrage" });
    await env.api.waitForPhase("after-barrage-1", "Granted", 10_000);
    assert.doesNotMatch(env.operator.output(), /unhandled|uncaught|TypeError|RangeError/i);
  });
});

describe("[BUG I] a long but valid leaseDurationSeconds does not spin the operator", () => {
  // leaseDurationSeconds has no maximum in the CRD. 10,000,000 s (~116 days) makes the lock
  // reconciler's requeue (lease/3, in ms) and the kubernetes backend's expiry timer (lease, in ms)
  // exceed setTimeout's 2^31-1 ms: Node fires such timers after 1 ms (TimeoutOverflowWarning), so
  // the lock is reconciled, and the backend listed, in a hot loop for as long as it is held.
  let namespace: string;
  let operator: Awaited<ReturnType<typeof startOperator>>;
  let api: Api;

  before(async () => {
    namespace = await createNamespace("longlease");
    api = new Api(namespace);
    operator = await startOperator({ namespace });
  });
  after(async () => {
    await operator?.stop();
  });

  async function lockReconciles(): Promise<number> {
    const address = /"msg":"serving metrics"[^\n]*"address":"([^"]+)"/.exec(operator.output())?.[1];
    assert.ok(address, "the operator logs its metrics address");
    const text = await (await fetch(`http://${address}/metrics`)).text();
    const m = /^kubelock_reconcile_duration_seconds_count\{kind="DistributedLock"\} (\d+)/m.exec(text);
    return Number(m?.[1] ?? 0);
  }

  test("[BUG I] a held lock with leaseDurationSeconds 10,000,000 is reconciled only when something happens", async () => {
    await api.createLock("long-lease", { leaseDurationSeconds: 10_000_000 });
    await api.createClaim("long-holder", { lockName: "long-lease" });
    await api.waitForPhase("long-holder", "Granted");
    // A window measured by a condition: a claim that times out after 2 s on another, held lock.
    await api.createLock("gate");
    await api.createClaim("gate-holder", { lockName: "gate" });
    await api.waitForPhase("gate-holder", "Granted");
    const before = await lockReconciles();
    await api.createClaim("gate-waiter", { lockName: "gate", waitTimeoutSeconds: 2 });
    await api.waitForClaim("gate-waiter", "WaitTimeout", (c) => grantedCondition(c)?.reason === "WaitTimeout");
    const during = (await lockReconciles()) - before;
    const overflow = /TimeoutOverflowWarning[^\n]*/.exec(operator.output())?.[0];
    assert.ok(!overflow && during < 40, `${during} lock reconciles in about 2 s (a handful expected); ${overflow ?? "no timer overflow"}`);
  });
});
