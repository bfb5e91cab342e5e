/**
 * The kubernetes (Lease) backend against a real API server: the shared conformance suite, then what is
 * particular to Leases (object names, labels, MicroTime fields, timeouts) and the backend registry.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";
import { after, describe, test } from "node:test";
import { BackendConfigError, BackendUnavailableError, type LockBackend } from "../../src/backends/backend";
import {
  CLAIM_ANNOTATION,
  CLUSTER_ANNOTATION,
  FENCING_COUNTER_ANNOTATION,
  FENCING_TOKEN_ANNOTATION,
  HOLDER_IDENTITY_ANNOTATION,
  KEY_LABEL,
  KubernetesLeaseBackend,
  MANAGED_BY_LABEL,
} from "../../src/backends/kubernetes/backend";
import { BackendRegistry, backendTypes, createBackend } from "../../src/backends/registry";
import { createNamespace, eventually, kubeConfig, kubeConfigFor, kubectl } from "../support/env";
import { TcpProxy } from "../support/tcp-proxy";
import { holdRequest, runBackendConformance } from "./backend-conformance";

const backends: KubernetesLeaseBackend[] = [];
function backend(options: Partial<ConstructorParameters<typeof KubernetesLeaseBackend>[0]> = {}): KubernetesLeaseBackend {
  const b = new KubernetesLeaseBackend({ name: "kubernetes", kubeConfig: kubeConfig(), requestTimeoutMs: 10_000, ...options });
  backends.push(b);
  return b;
}
after(() => Promise.all(backends.map((b) => b.close())));

let namespace: Promise<string> | undefined;
/** One namespace for the whole file, created on first use. */
function testNamespace(): Promise<string> {
  namespace ??= createNamespace("conformance");
  return namespace;
}


let proxy: Promise<TcpProxy> | undefined;
function apiProxy(): Promise<TcpProxy> {
  proxy ??= (async () => {
    const server = new URL(kubeConfig().getCurrentCluster()!.server);
    const p = new TcpProxy(server.hostname, Number(server.port || 443));
    await p.start();
    return p;
  })();
  return proxy;
}
after(async () => (await proxy)?.stop());

runBackendConformance("kubernetes", async () => backend({ kubeConfig: kubeConfigFor(`https://${(await apiProxy()).address}`), requestTimeoutMs: 15_000 }), {
  supportsExpiry: true,
  minLeaseSeconds: 1,
  newKey: async (hint) => `${await testNamespace()}/lock-${hint}-${randomBytes(3).toString("hex")}`,
  stopServer: async () => (await apiProxy()).stop(),
  startServer: async () => (await apiProxy()).start(),
});

const request = holdRequest;

/** A Lease as the API server stores it (kubectl's JSON, not client-node's deserialization). */
interface LeaseJson {
  metadata: { name: string; resourceVersion: string; labels: Record<string, string>; annotations?: Record<string, string> };
  spec: { holderIdentity?: string; leaseDurationSeconds?: number; acquireTime?: string; renewTime?: string };
}

async function getLeaseJson(ns: string, name: string): Promise<LeaseJson> {
  const result = await kubectl(["get", "lease", "-n", ns, name, "-o", "json"]);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout);
}

/** A loopback server that is gone (connections refused) or that accepts and never answers. */
async function loopbackServer(answer: "refuse" | "hang"): Promise<{ url: string; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  const close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  if (answer === "refuse") await close();
  return { url: `https://127.0.0.1:${port}`, close };
}

/** The test kubeconfig, pointed at another server. */
describe("kubernetes backend: Leases", () => {
  test("a key keeps nothing once released, so there is no forget; the key used again gets larger tokens", async () => {
    const ns = await createNamespace("forget");
    const key = `${ns}/lock-forget`;
    const b = backend();
    assert.equal((b as LockBackend).forget, undefined);
    const req = request(key, "a");
    const hold = await b.tryAcquire(req);
    assert.ok(hold);
    assert.equal(await b.release(key, req.holderId), true);
    const left = await kubectl(["get", "lease", "-n", ns, "-o", "name"]);
    assert.equal(left.code, 0, left.stderr);
    assert.equal(left.stdout.trim(), "", "a Lease is left in the namespace");
    const again = await backend().tryAcquire(request(key, "b"));
    assert.ok(again && BigInt(again.fencingToken) > BigInt(hold.fencingToken), `token ${again?.fencingToken}`);
  });

  test("a hand-off is one conditional update of the slot Lease: the same object, a new holder and token", async () => {
    const ns = await createNamespace("handoff");
    const key = `${ns}/lock-handoff`;
    const b = backend();
    const first = request(key, "a");
    const hold = await b.tryAcquire(first);
    assert.ok(hold);
    const uidOf = async () => {
      const got = await kubectl(["get", "lease", "-n", ns, "-o", "jsonpath={.items[*].metadata.uid}"]);
      assert.equal(got.code, 0, got.stderr);
      return got.stdout.trim();
    };
    const before = await uidOf();
    const next = request(key, "b");
    const { released, hold: passed } = await b.handOff(first.holderId, next);
    assert.equal(released, true);
    assert.ok(passed && BigInt(passed.fencingToken) > BigInt(hold.fencingToken), `token ${passed?.fencingToken} after ${hold.fencingToken}`);
    assert.equal(await uidOf(), before, "the Lease was deleted and created again, not updated");
    assert.deepEqual((await backend().holders(key)).map((h) => h.claim), ["claim-b"]);
  });

  test("a hold is a Lease named after the key, with labels, annotations and MicroTime fields", async () => {
    const ns = await testNamespace();
    const key = `${ns}/lock-shape-${randomBytes(3).toString("hex")}`;
    const name = key.split("/")[1];
    const req = request(key, "a");
    const hold = await backend().tryAcquire(req);
    assert.ok(hold);

    const slot = await getLeaseJson(ns, `kubelock-${name}-0`);
    assert.equal(slot.spec.holderIdentity, req.holderId);
    assert.equal(slot.spec.leaseDurationSeconds, 30);
    assert.match(slot.spec.renewTime ?? "", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    assert.match(slot.spec.acquireTime ?? "", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    assert.equal(slot.metadata.labels[MANAGED_BY_LABEL], "kubelock");
    assert.equal(slot.metadata.labels[KEY_LABEL], name);
    assert.equal(slot.metadata.annotations?.[CLAIM_ANNOTATION], "claim-a");
    assert.equal(slot.metadata.annotations?.[HOLDER_IDENTITY_ANNOTATION], "pod-a");
    assert.equal(slot.metadata.annotations?.[CLUSTER_ANNOTATION], "east");
    assert.equal(hold.renewTime, slot.spec.renewTime);

    // The token is the resourceVersion the acquisition wrote; the first renewal stamps it into the annotation.
    assert.equal(slot.metadata.annotations?.[FENCING_TOKEN_ANNOTATION], undefined);
    assert.equal(slot.metadata.resourceVersion, hold.fencingToken);
    const renewed = await backend().renew(key, req.holderId, 30);
    assert.equal(renewed?.fencingToken, hold.fencingToken);
    const stamped = await getLeaseJson(ns, `kubelock-${name}-0`);
    assert.equal(stamped.metadata.annotations?.[FENCING_TOKEN_ANNOTATION], hold.fencingToken);
    assert.notEqual(stamped.metadata.resourceVersion, hold.fencingToken);

    // kubectl lists the key's Leases with the label selector: the slot is all there is (no counter).
    const listed = await kubectl(["get", "lease", "-n", ns, "-l", `${KEY_LABEL}=${name}`, "-o", "name"]);
    assert.deepEqual(listed.stdout.trim().split("\n"), [`lease.coordination.k8s.io/kubelock-${name}-0`]);

    // Released slots are deleted; the next grant's token is a later revision.
    assert.equal(await backend().release(key, req.holderId), true);
    const gone = await kubectl(["get", "lease", "-n", ns, `kubelock-${name}-0`]);
    assert.notEqual(gone.code, 0);
    const next = await backend().tryAcquire(request(key, "b"));
    assert.ok(next && BigInt(next.fencingToken) > BigInt(hold.fencingToken));
  });

  test("after an upgrade, a grant is refused while the revision is not above the key's old counter Lease", async () => {
    // A namespace of its own: the backend's first read there lists the counter, as after a real upgrade (in a
    // namespace it already watches, the counter made just now could reach its cache after the acquire).
    const ns = await createNamespace("upgrade");
    const name = `lock-upgrade-${randomBytes(3).toString("hex")}`;
    const key = `${ns}/${name}`;
    const counter = (value: string) => ({
      apiVersion: "coordination.k8s.io/v1", kind: "Lease",
      metadata: {
        name: `kubelock-${name}-fencing`, namespace: ns,
        labels: { [MANAGED_BY_LABEL]: "kubelock", [KEY_LABEL]: name, "kubelock.io/role": "fencing-counter" },
        annotations: { [FENCING_COUNTER_ANNOTATION]: value },
      },
      spec: {},
    });
    const apply = async (value: string) => {
      const result = await kubectl(["apply", "-f", "-"], { input: JSON.stringify(counter(value)) });
      assert.equal(result.code, 0, result.stderr);
    };
    await apply("99999999999999");
    const b = backend();
    await assert.rejects(b.tryAcquire(request(key, "a")), (err: Error) => {
      assert.ok(err instanceof BackendUnavailableError, String(err));
      assert.match(err.message, /not above the fencing counter left by an earlier kubelock version/);
      return true;
    });
    assert.notEqual((await kubectl(["get", "lease", "-n", ns, `kubelock-${name}-0`])).code, 0, "the refused grant left its slot");
    await apply("1");
    const a = request(key, "a");
    const hold = await eventually("a grant above the old counter", () => b.tryAcquire(a), 10_000);
    assert.ok(BigInt(hold.fencingToken) > 1n);
    // Its release leaves the key nothing, the counter included: every later token is above this one.
    assert.equal(await b.release(key, a.holderId), true);
    const left = await kubectl(["get", "lease", "-n", ns, "-l", `${KEY_LABEL}=${name}`, "-o", "name"]);
    assert.equal(left.stdout.trim(), "", "the key's Leases are not all gone");
  });

  test("a key too long for an object name is hashed into names and labels", async () => {
    const ns = await testNamespace();
    const key = `${ns}/lock-${"long-".repeat(60)}${randomBytes(3).toString("hex")}`;
    const hold = await backend().tryAcquire(request(key, "a"));
    assert.ok(hold);
    const listed = await kubectl(["get", "lease", "-n", ns, "-o", "json"]);
    const items = (JSON.parse(listed.stdout).items as LeaseJson[]).filter((l) => l.metadata.annotations?.["kubelock.io/key"] === key);
    assert.equal(items.length, 1);
    for (const lease of items) {
      assert.ok(lease.metadata.name.length <= 253);
      assert.match(lease.metadata.labels[KEY_LABEL], /^[0-9a-f]{20}$/);
    }
  });

  test("namespaces are trust boundaries: the same key in two namespaces is two locks", async () => {
    const other = await createNamespace("conformance");
    const name = `lock-ns-${randomBytes(3).toString("hex")}`;
    const b = backend();
    assert.ok(await b.tryAcquire(request(`${await testNamespace()}/${name}`, "a")));
    assert.ok(await b.tryAcquire(request(`${other}/${name}`, "b")));
  });

  test("a key without a namespace is rejected", async () => {
    await assert.rejects(backend().tryAcquire(request("no-namespace", "a")), /expected <namespace>\/<key>/);
  });

  test("a refused connection gives BackendUnavailableError", async () => {
    const server = await loopbackServer("refuse");
    const b = backend({ kubeConfig: kubeConfigFor(server.url), requestTimeoutMs: 2_000 });
    await assert.rejects(b.tryAcquire(request("default/x", "a")), BackendUnavailableError);
    await assert.rejects(b.holders("default/x"), BackendUnavailableError);
  });

  test("a server that does not answer gives BackendUnavailableError after the request timeout", async () => {
    const server = await loopbackServer("hang");
    try {
      const b = backend({ kubeConfig: kubeConfigFor(server.url), requestTimeoutMs: 500 });
      const started = Date.now();
      await assert.rejects(b.renew("default/x", "h", 10), (err: Error) => {
        assert.ok(err instanceof BackendUnavailableError, String(err));
        assert.match(err.message, /no answer within 500ms/);
        return true;
      });
      assert.ok(Date.now() - started < 5_000, `took ${Date.now() - started}ms`);
    } finally {
      await server.close();
    }
  });

  test("watch fires when a hold expires, though nothing writes", async () => {
    const ns = await testNamespace();
    const key = `${ns}/lock-watch-expiry-${randomBytes(3).toString("hex")}`;
    const b = backend();
    const hold = await b.tryAcquire(request(key, "a", { leaseDurationSeconds: 2 }));
    assert.ok(hold);
    const expiresAt = Date.parse(hold.renewTime) + 2000;
    const calls: number[] = [];
    const stop = b.watch(key, () => calls.push(Date.now()));
    try {
      await eventually("a call after the hold expired", () => (calls.some((t) => t >= expiresAt) ? true : undefined), 10_000);
    } finally {
      stop();
    }
  });

  test("watches of several keys in a namespace share a connection and stay separate", async () => {
    const ns = await testNamespace();
    const suffix = randomBytes(3).toString("hex");
    const [k1, k2] = [`${ns}/lock-w1-${suffix}`, `${ns}/lock-w2-${suffix}`];
    const b = backend();
    const r1 = request(k1, "a");
    const r2 = request(k2, "b");
    assert.ok(await b.tryAcquire(r1));
    assert.ok(await b.tryAcquire(r2));
    const calls = { k1: 0, k2: 0 };
    const stop1 = b.watch(k1, () => calls.k1++);
    const stop2 = b.watch(k2, () => calls.k2++);
    try {
      await eventually("both watches to connect", () => (calls.k1 > 0 && calls.k2 > 0 ? true : undefined), 10_000);
      stop1();
      const seen = { ...calls };
      assert.equal(await b.release(k2, r2.holderId), true);
      await eventually("k2's watch to report the release", () => (calls.k2 > seen.k2 ? true : undefined), 10_000);
      assert.equal(calls.k1, seen.k1, "a stopped watch was called");
      assert.equal(await b.release(k1, r1.holderId), true);
      const again = calls.k2;
      await eventually("a change on k2 after k1's release", async () => {
        const probe = request(k2, "probe");
        await b.tryAcquire(probe);
        await b.release(k2, probe.holderId);
        return calls.k2 > again ? true : undefined;
      }, 10_000);
      assert.equal(calls.k1, seen.k1, "a stopped watch was called");
    } finally {
      stop1();
      stop2();
    }
  });

  test("expiry follows the injected clock", async () => {
    const ns = await testNamespace();
    const key = `${ns}/lock-clock-${randomBytes(3).toString("hex")}`;
    let now = Date.now();
    const b = backend({ clock: () => now });
    const a = request(key, "a", { leaseDurationSeconds: 30 });
    assert.ok(await b.tryAcquire(a));
    assert.equal(await b.tryAcquire(request(key, "b")), undefined);
    now += 31_000;
    assert.deepEqual(await b.holders(key), []);
    const taken = await b.tryAcquire(request(key, "b"));
    assert.ok(taken);
    assert.equal(await b.release(key, a.holderId), false);
  });
});

describe("backend registry", () => {
  test("kubernetes is a registered type", () => {
    assert.ok(backendTypes().includes("kubernetes"));
  });

  test("createBackend builds a kubernetes backend and rejects bad types and settings", async () => {
    const b = await createBackend({ name: "leases", type: "kubernetes", kubeConfig: kubeConfig(), settings: { requestTimeoutMs: 3000 } });
    assert.equal(b.name, "leases");
    await b.close();
    await assert.rejects(createBackend({ name: "x", type: "memcached", kubeConfig: kubeConfig() }), (err: Error) => {
      assert.ok(err instanceof BackendConfigError);
      assert.match(err.message, /unknown type "memcached"/);
      return true;
    });
    await assert.rejects(
      createBackend({ name: "x", type: "kubernetes", kubeConfig: kubeConfig(), settings: { bogus: 1 } }),
      (err: Error) => err instanceof BackendConfigError && /bogus/.test(err.message),
    );
  });

  test("BackendRegistry holds configured backends by name and adds the built-in kubernetes one", async () => {
    const registry = await BackendRegistry.fromConfig([{ name: "leases", type: "kubernetes" }], { kubeConfig: kubeConfig(), clusterName: "east" });
    try {
      assert.deepEqual(registry.names(), ["kubernetes", "leases"]);
      assert.equal(registry.get("leases").name, "leases");
      assert.throws(() => registry.get("redis"), (err: Error) => {
        assert.ok(err instanceof BackendConfigError);
        assert.equal(err.message, 'unknown backend "redis"; configured: kubernetes, leases');
        return true;
      });
      const ns = await testNamespace();
      assert.ok(await registry.get("kubernetes").tryAcquire(request(`${ns}/lock-registry-${randomBytes(3).toString("hex")}`, "a")));
    } finally {
      await registry.closeAll();
    }
    await assert.rejects(
      BackendRegistry.fromConfig([{ name: "a", type: "kubernetes" }, { name: "a", type: "kubernetes" }], { kubeConfig: kubeConfig() }),
      /configured twice/,
    );
  });
});
