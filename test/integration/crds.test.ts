/**
 * The CRDs in crds/ against a real kube-apiserver: schema validation and CEL rules reject malformed
 * objects with the offending field named, defaults are applied, and kubectl shows the documented
 * printer columns, category and field documentation. No operator runs here; status is written
 * through the status subresource by the tests themselves.
 */
import { test, describe, before } from "node:test";
import assert from "node:assert/strict";
import { stringify } from "yaml";
import { kubectl, createNamespace, eventually, type CommandResult } from "../support/env";

const API_VERSION = "kubelock.io/v1alpha1";

type Manifest = { apiVersion: string; kind: "DistributedLock" | "LockClaim"; metadata: { name: string }; spec?: unknown; status?: unknown };

function lock(name: string, spec?: Record<string, unknown>): Manifest {
  return { apiVersion: API_VERSION, kind: "DistributedLock", metadata: { name }, ...(spec === undefined ? {} : { spec }) };
}

function claim(name: string, spec?: Record<string, unknown>): Manifest {
  return { apiVersion: API_VERSION, kind: "LockClaim", metadata: { name }, ...(spec === undefined ? {} : { spec }) };
}

function resourceOf(m: Manifest): string {
  return m.kind === "DistributedLock" ? "distributedlock" : "lockclaim";
}

function describeResult(r: CommandResult): string {
  return `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}

/** `kubectl create -f -` with the manifests as a YAML stream on stdin. */
function create(ns: string, ...manifests: Manifest[]): Promise<CommandResult> {
  return kubectl(["create", "-n", ns, "-f", "-"], { input: manifests.map((m) => stringify(m)).join("---\n") });
}

async function mustCreate(ns: string, ...manifests: Manifest[]): Promise<void> {
  const r = await create(ns, ...manifests);
  assert.equal(r.code, 0, `creating ${manifests.map((m) => `${m.kind}/${m.metadata.name}`).join(", ")}: ${describeResult(r)}`);
}

/** A JSON merge patch of an object or of its status subresource. */
function patch(ns: string, resource: string, body: unknown, subresource?: "status"): Promise<CommandResult> {
  const args = ["patch", resource, "-n", ns, "--type", "merge", "-p", JSON.stringify(body)];
  if (subresource) args.push("--subresource", subresource);
  return kubectl(args);
}

async function mustPatch(ns: string, resource: string, body: unknown, subresource?: "status"): Promise<void> {
  const r = await patch(ns, resource, body, subresource);
  assert.equal(r.code, 0, `patching ${resource}${subresource ? "/" + subresource : ""}: ${describeResult(r)}`);
}

async function getJson<T = Record<string, unknown>>(ns: string, resource: string): Promise<T> {
  const r = await kubectl(["get", resource, "-n", ns, "-o", "json"]);
  assert.equal(r.code, 0, `getting ${resource}: ${describeResult(r)}`);
  return JSON.parse(r.stdout) as T;
}

before(async () => {
  // The harness installs crds/ before the tests run; wait until both kinds are served.
  await eventually(
    "the kubelock CRDs to be served",
    async () => {
      const r = await kubectl(["get", "dlock,lclaim", "--all-namespaces"]);
      if (r.code !== 0) throw new Error(r.stderr.trim());
      return true;
    },
    60_000,
  );
});

interface RejectCase {
  name: string;
  /** Objects created (successfully) before the offending request. */
  setup?: Manifest[];
  /** The offending request: create this object ... */
  create?: Manifest;
  /** ... or merge-patch an object (or its status) created in setup. */
  patch?: { resource: string; body: unknown; subresource?: "status" };
  /** The field path the API server's message must name. */
  field: string;
  /** More text the message must contain, when the wording matters. */
  message?: string | RegExp;
}

const base = { lock: lock("migrations"), claim: claim("job-1", { lockName: "migrations", podName: "pod-a" }) };

const rejectCases: RejectCase[] = [
  { name: "LockClaim without spec", create: claim("c"), field: "spec", message: "Required value" },
  { name: "LockClaim without lockName", create: claim("c", { podName: "pod-a" }), field: "spec.lockName", message: "Required value" },
  { name: "maxHolders 0", create: lock("l", { maxHolders: 0 }), field: "spec.maxHolders", message: "greater than or equal to 1" },
  { name: "maxHolders over 1000", create: lock("l", { maxHolders: 1001 }), field: "spec.maxHolders", message: "less than or equal to 1000" },
  { name: "maxHolders of the wrong type", create: lock("l", { maxHolders: "three" }), field: "spec.maxHolders", message: "must be of type integer" },
  { name: "maxHolders not a whole number", create: lock("l", { maxHolders: 1.5 }), field: "spec.maxHolders", message: "must be of type integer" },
  { name: "misspelt field (strict field validation)", create: lock("l", { maxHolder: 2 }), field: "spec.maxHolder", message: "unknown field" },
  {
    name: "negative leaseDurationSeconds on a lock",
    create: lock("l", { leaseDurationSeconds: -5 }),
    field: "spec.leaseDurationSeconds",
    message: "greater than or equal to 1",
  },
  {
    name: "negative leaseDurationSeconds on a claim",
    create: claim("c", { lockName: "migrations", leaseDurationSeconds: -1 }),
    field: "spec.leaseDurationSeconds",
    message: "greater than or equal to 1",
  },
  {
    name: "waitTimeoutSeconds 0",
    create: claim("c", { lockName: "migrations", waitTimeoutSeconds: 0 }),
    field: "spec.waitTimeoutSeconds",
    message: "greater than or equal to 1",
  },
  {
    name: "priority as a string",
    create: claim("c", { lockName: "migrations", priority: "high" }),
    field: "spec.priority",
    message: "must be of type integer",
  },
  { name: "lockName with uppercase and underscore", create: claim("c", { lockName: "My_Lock" }), field: "spec.lockName", message: "should match" },
  { name: "lockName too long", create: claim("c", { lockName: "a".repeat(254) }), field: "spec.lockName", message: /Too long|may not be (more|longer) than 253/ },
  { name: "invalid podName", create: claim("c", { lockName: "migrations", podName: "Pod_1" }), field: "spec.podName", message: "should match" },
  { name: "invalid key", create: lock("l", { key: "Bad Key!" }), field: "spec.key", message: "should match" },
  { name: "key starting with a dot", create: lock("l", { key: ".hidden" }), field: "spec.key", message: "should match" },
  { name: "key too long", create: lock("l", { key: "k".repeat(201) }), field: "spec.key", message: /Too long|may not be (more|longer) than 200/ },
  { name: "backend that is not a DNS label", create: lock("l", { backend: "redis.main" }), field: "spec.backend", message: "should match" },
  {
    name: "renewTime that is not a date",
    create: claim("c", { lockName: "migrations", renewTime: "yesterday" }),
    field: "spec.renewTime",
    message: "date-time",
  },
  {
    name: "changing lockName after creation",
    setup: [base.claim],
    patch: { resource: "lockclaim/job-1", body: { spec: { lockName: "other-lock" } } },
    field: "spec.lockName",
    message: "lockName is immutable",
  },
  {
    name: "changing podName after creation",
    setup: [base.claim],
    patch: { resource: "lockclaim/job-1", body: { spec: { podName: "pod-b" } } },
    field: "spec.podName",
    message: "podName is immutable once set",
  },
  {
    name: "removing podName after creation",
    setup: [base.claim],
    patch: { resource: "lockclaim/job-1", body: { spec: { podName: null } } },
    field: "spec.podName",
    message: "podName is immutable once set",
  },
  {
    name: "changing a lock's key after creation",
    setup: [base.lock],
    patch: { resource: "distributedlock/migrations", body: { spec: { key: "elsewhere" } } },
    field: "spec.key",
    message: "key is immutable",
  },
  {
    name: "changing a lock's backend after creation",
    setup: [base.lock],
    patch: { resource: "distributedlock/migrations", body: { spec: { backend: "redis" } } },
    field: "spec.backend",
    message: "backend is immutable",
  },
  {
    name: "unknown claim phase",
    setup: [base.claim],
    patch: { resource: "lockclaim/job-1", body: { status: { phase: "Bogus" } }, subresource: "status" },
    field: "status.phase",
    message: "Unsupported value",
  },
  {
    name: "negative fencing token on a claim",
    setup: [base.claim],
    patch: { resource: "lockclaim/job-1", body: { status: { fencingToken: "-1" } }, subresource: "status" },
    field: "status.fencingToken",
    message: "should match",
  },
  {
    name: "non-numeric fencing token on a lock holder",
    setup: [base.lock],
    patch: {
      resource: "distributedlock/migrations",
      body: { status: { holders: [{ claim: "job-1", holderIdentity: "pod-a", fencingToken: "abc" }] } },
      subresource: "status",
    },
    field: "status.holders[0].fencingToken",
    message: "should match",
  },
  {
    name: "lock condition without a reason",
    setup: [base.lock],
    patch: {
      resource: "distributedlock/migrations",
      body: { status: { conditions: [{ type: "Ready", status: "True", message: "", lastTransitionTime: "2025-01-02T15:04:05Z" }] } },
      subresource: "status",
    },
    field: "status.conditions[0].reason",
    message: "Required value",
  },
  {
    name: "negative waiting count",
    setup: [base.lock],
    patch: { resource: "distributedlock/migrations", body: { status: { waiting: -1 } }, subresource: "status" },
    field: "status.waiting",
    message: "greater than or equal to 0",
  },
];

describe("the API server rejects malformed objects and names the field", () => {
  for (const c of rejectCases) {
    test(c.name, async () => {
      const ns = await createNamespace("crd");
      if (c.setup) await mustCreate(ns, ...c.setup);

      let r: CommandResult;
      if (c.create) {
        r = await create(ns, c.create);
      } else if (c.patch) {
        r = await patch(ns, c.patch.resource, c.patch.body, c.patch.subresource);
      } else {
        throw new Error(`case ${c.name} has neither create nor patch`);
      }

      assert.notEqual(r.code, 0, `expected a rejection: ${describeResult(r)}`);
      assert.ok(r.stderr.includes(c.field), `expected the message to name ${c.field}: ${describeResult(r)}`);
      if (typeof c.message === "string") assert.ok(r.stderr.includes(c.message), `expected "${c.message}" in the message: ${describeResult(r)}`);
      else if (c.message) assert.match(r.stderr, c.message, describeResult(r));

      if (c.create) {
        // A rejected create leaves nothing behind.
        const got = await kubectl(["get", `${resourceOf(c.create)}/${c.create.metadata.name}`, "-n", ns]);
        assert.notEqual(got.code, 0, `the rejected object exists: ${describeResult(got)}`);
        assert.match(got.stderr, /NotFound|not found/);
      }
    });
  }
});

describe("valid objects", () => {
  test("get the documented defaults", async () => {
    const ns = await createNamespace("crd");
    await mustCreate(
      ns,
      lock("no-spec"),
      lock("backend-only", { backend: "redis" }),
      lock("explicit", { backend: "etcd", key: "db.migrations", maxHolders: 3, leaseDurationSeconds: 10 }),
      claim("plain", { lockName: "no-spec" }),
      claim("heartbeat", {
        lockName: "db.migrations",
        podName: "worker-0",
        priority: -5,
        leaseDurationSeconds: 15,
        renewTime: "2025-01-02T15:04:05.123456Z",
        waitTimeoutSeconds: 600,
      }),
    );

    assert.deepEqual((await getJson(ns, "distributedlock/no-spec")).spec, { maxHolders: 1, leaseDurationSeconds: 30 });
    assert.deepEqual((await getJson(ns, "distributedlock/backend-only")).spec, { backend: "redis", maxHolders: 1, leaseDurationSeconds: 30 });
    assert.deepEqual((await getJson(ns, "distributedlock/explicit")).spec, {
      backend: "etcd",
      key: "db.migrations",
      maxHolders: 3,
      leaseDurationSeconds: 10,
    });
    assert.deepEqual((await getJson(ns, "lockclaim/plain")).spec, { lockName: "no-spec", priority: 0 });
    assert.deepEqual((await getJson(ns, "lockclaim/heartbeat")).spec, {
      lockName: "db.migrations",
      podName: "worker-0",
      priority: -5,
      leaseDurationSeconds: 15,
      renewTime: "2025-01-02T15:04:05.123456Z",
      waitTimeoutSeconds: 600,
    });
  });

  test("accept the updates the rules allow", async () => {
    const ns = await createNamespace("crd");
    await mustCreate(ns, lock("sem", { maxHolders: 2 }), claim("c", { lockName: "sem" }));

    // podName may be set once on a claim that had none; lockName may be re-applied unchanged.
    await mustPatch(ns, "lockclaim/c", { spec: { podName: "pod-a", lockName: "sem", priority: 7 } });
    // Heartbeats move renewTime forward.
    await mustPatch(ns, "lockclaim/c", { spec: { renewTime: "2025-01-02T15:04:06.000001Z" } });
    // A semaphore may be resized.
    await mustPatch(ns, "distributedlock/sem", { spec: { maxHolders: 5 } });

    assert.deepEqual((await getJson(ns, "lockclaim/c")).spec, {
      lockName: "sem",
      podName: "pod-a",
      priority: 7,
      renewTime: "2025-01-02T15:04:06.000001Z",
    });
    assert.equal((await getJson<{ spec: { maxHolders: number } }>(ns, "distributedlock/sem")).spec.maxHolders, 5);
  });
});

/**
 * Splits kubectl's table output into tables: header cells and rows of cells, each cell cut at its header's
 * column (kubectl aligns them), so an empty cell reads as "".
 */
function tables(output: string): { header: string[]; rows: string[][] }[] {
  const result: { header: string[]; rows: string[][] }[] = [];
  let starts: number[] = [];
  for (const line of output.split("\n")) {
    if (!line.trim()) continue;
    if (line.startsWith("NAME")) {
      const header = [...line.matchAll(/\S+/g)];
      starts = header.map((m) => m.index);
      result.push({ header: header.map((m) => m[0]), rows: [] });
    } else if (result.length) {
      result[result.length - 1].rows.push(starts.map((start, i) => line.slice(start, starts[i + 1]).trim()));
    }
  }
  return result;
}

function column(table: { header: string[]; rows: string[][] }, row: string[], name: string): string {
  const i = table.header.indexOf(name);
  assert.ok(i >= 0, `no ${name} column in ${table.header.join(" ")}`);
  return row[i];
}

describe("kubectl", () => {
  test("shows the documented printer columns", async () => {
    const ns = await createNamespace("crd");
    await mustCreate(ns, lock("warehouse", { backend: "redis", maxHolders: 3 }), claim("loader-1", { lockName: "warehouse", podName: "loader-1" }));
    const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    // No operator runs here: write the status it would write, so that every cell has a value.
    await mustPatch(
      ns,
      "distributedlock/warehouse",
      {
        status: {
          holders: [
            { claim: "loader-1", holderIdentity: "loader-1", fencingToken: "41", acquireTime: now, renewTime: now },
            { claim: "loader-9", holderIdentity: "loader-9", cluster: "west", fencingToken: "42", acquireTime: now, renewTime: now },
          ],
          holderNames: "loader-1,loader-9",
          holderCount: 2,
          waiting: 4,
          leaseTransitions: 2,
          observedGeneration: 1,
          conditions: [
            { type: "Ready", status: "True", reason: "BackendReady", message: "backend redis is reachable", lastTransitionTime: now, observedGeneration: 1 },
            { type: "Available", status: "True", reason: "SlotFree", message: "1 of 3 slots free", lastTransitionTime: now },
          ],
        },
      },
      "status",
    );
    await mustPatch(
      ns,
      "lockclaim/loader-1",
      {
        status: {
          phase: "Granted",
          position: 1,
          fencingToken: "41",
          holderIdentity: "loader-1",
          acquireTime: now,
          observedGeneration: 1,
          conditions: [{ type: "Granted", status: "True", reason: "Granted", message: "holds warehouse", lastTransitionTime: now }],
        },
      },
      "status",
    );

    const r = await kubectl(["get", "dlock,lclaim", "-n", ns]);
    assert.equal(r.code, 0, describeResult(r));
    const [locks, claims] = tables(r.stdout);
    assert.ok(locks && claims, `expected two tables: ${r.stdout}`);
    assert.deepEqual(locks.header, ["NAME", "BACKEND", "MAX", "HOLDERS", "WAITING", "READY", "AGE"]);
    assert.deepEqual(claims.header, ["NAME", "LOCK", "PHASE", "POSITION", "TOKEN", "ENDED", "AGE"]);

    assert.equal(locks.rows.length, 1, r.stdout);
    const l = locks.rows[0];
    assert.equal(column(locks, l, "NAME"), "distributedlock.kubelock.io/warehouse");
    assert.equal(column(locks, l, "BACKEND"), "redis");
    assert.equal(column(locks, l, "MAX"), "3");
    // A semaphore's holders as a count (a printer column cannot count a list: the operator writes holderCount).
    assert.equal(column(locks, l, "HOLDERS"), "2");
    assert.equal(column(locks, l, "WAITING"), "4");
    assert.equal(column(locks, l, "READY"), "True");
    // -o wide adds every holder's identity, from status.holderNames (the API server prints only the first value
    // of a [*] path, so a column on status.holders[*] would show loader-1 alone).
    const wide = await kubectl(["get", "dlock", "-n", ns, "-o", "wide"]);
    const [wideLocks] = tables(wide.stdout);
    assert.deepEqual(wideLocks.header, ["NAME", "BACKEND", "MAX", "HOLDERS", "WAITING", "READY", "AGE", "HELD-BY"]);
    assert.equal(column(wideLocks, wideLocks.rows[0], "HELD-BY"), "loader-1,loader-9", wide.stdout);

    assert.equal(claims.rows.length, 1, r.stdout);
    const c = claims.rows[0];
    assert.equal(column(claims, c, "NAME"), "lockclaim.kubelock.io/loader-1");
    assert.equal(column(claims, c, "LOCK"), "warehouse");
    assert.equal(column(claims, c, "PHASE"), "Granted");
    assert.equal(column(claims, c, "POSITION"), "1");
    assert.equal(column(claims, c, "TOKEN"), "41");
    assert.equal(column(claims, c, "ENDED"), "", "a holder has not ended");
  });

  test("a claim whose grant ended does not look like a holder: phase first, when it ended, the holder in -o wide", async () => {
    const ns = await createNamespace("crd");
    await mustCreate(ns, lock("mutex"), claim("app-1", { lockName: "mutex", podName: "app-1" }), claim("app-2", { lockName: "mutex", podName: "app-2" }));
    const now = new Date().toISOString();
    // As the operator writes them: app-1 held token 7 and was released; app-2 holds token 8.
    await mustPatch(ns, "lockclaim/app-1", {
      status: {
        phase: "Released", fencingToken: "7", holderIdentity: "app-1", acquireTime: now, releaseTime: now,
        conditions: [{ type: "Granted", status: "False", reason: "Released", message: "released", lastTransitionTime: now }],
      },
    }, "status");
    await mustPatch(ns, "lockclaim/app-2", {
      status: {
        phase: "Granted", fencingToken: "8", holderIdentity: "app-2", acquireTime: now,
        conditions: [{ type: "Granted", status: "True", reason: "Granted", message: "holds mutex", lastTransitionTime: now }],
      },
    }, "status");

    const r = await kubectl(["get", "lclaim", "-n", ns]);
    assert.equal(r.code, 0, describeResult(r));
    const [claims] = tables(r.stdout);
    assert.deepEqual(claims.header, ["NAME", "LOCK", "PHASE", "POSITION", "TOKEN", "ENDED", "AGE"]);
    const row = (name: string) => claims.rows.find((cells) => cells[0] === name) ?? assert.fail(`no row ${name} in\n${r.stdout}`);
    assert.equal(column(claims, row("app-1"), "PHASE"), "Released");
    assert.match(column(claims, row("app-1"), "ENDED"), /^\d+s$/, "an ended claim says how long ago it ended");
    assert.equal(column(claims, row("app-1"), "TOKEN"), "7");
    assert.equal(column(claims, row("app-2"), "PHASE"), "Granted");
    assert.equal(column(claims, row("app-2"), "ENDED"), "");
    assert.equal(column(claims, row("app-2"), "TOKEN"), "8");

    const wide = await kubectl(["get", "lclaim", "-n", ns, "-o", "wide"]);
    assert.equal(wide.code, 0, describeResult(wide));
    const [all] = tables(wide.stdout);
    assert.deepEqual(all.header, ["NAME", "LOCK", "PHASE", "POSITION", "TOKEN", "ENDED", "AGE", "HOLDER", "REASON"]);
    const wideRow = (name: string) => all.rows.find((cells) => cells[0] === name)!;
    assert.deepEqual([column(all, wideRow("app-1"), "HOLDER"), column(all, wideRow("app-1"), "REASON")], ["app-1", "Released"]);
    assert.deepEqual([column(all, wideRow("app-2"), "HOLDER"), column(all, wideRow("app-2"), "REASON")], ["app-2", "Granted"]);
  });

  test("lists both kinds under the kubelock category and by short name", async () => {
    const ns = await createNamespace("crd");
    await mustCreate(ns, lock("l1"), claim("c1", { lockName: "l1" }));

    const r = await kubectl(["get", "kubelock", "-n", ns, "-o", "name"]);
    assert.equal(r.code, 0, describeResult(r));
    assert.deepEqual(r.stdout.trim().split("\n").sort(), ["distributedlock.kubelock.io/l1", "lockclaim.kubelock.io/c1"]);

    for (const [name, expected] of [
      ["dlock", "distributedlock.kubelock.io/l1"],
      ["lclaim", "lockclaim.kubelock.io/c1"],
      ["distributedlocks.kubelock.io", "distributedlock.kubelock.io/l1"],
      ["lockclaims", "lockclaim.kubelock.io/c1"],
    ]) {
      const byName = await kubectl(["get", name, "-n", ns, "-o", "name"]);
      assert.equal(byName.code, 0, describeResult(byName));
      assert.equal(byName.stdout.trim(), expected);
    }
  });

  test("explain documents the fields and their defaults", async () => {
    const cases: [string, RegExp][] = [
      ["distributedlock.spec.maxHolders", /Default:\s+1\b/],
      ["distributedlock.spec.leaseDurationSeconds", /Default:\s+30\b/],
      ["distributedlock.spec.key", /<prefix>\/<namespace>\/<key>/],
      ["lockclaim.spec.priority", /Default:\s+0\b/],
      ["lockclaim.spec.lockName", /immutable/],
      ["lockclaim.status.phase", /Rejected/],
    ];
    for (const [field, expected] of cases) {
      // The API server publishes a new CRD's OpenAPI a moment after it is established.
      const out = await eventually(`kubectl explain ${field}`, async () => {
        const r = await kubectl(["explain", field]);
        if (r.code !== 0) throw new Error(r.stderr.trim());
        return r.stdout;
      });
      assert.match(out, expected, `kubectl explain ${field}:\n${out}`);
    }
  });
});
