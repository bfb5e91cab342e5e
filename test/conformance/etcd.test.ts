/**
 * The etcd backend against the test environment's own etcd (not the API server's): the shared conformance
 * suite, then what is particular to etcd (settings, session leases, key layout, tokens as revisions).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { Etcd3, Range } from "etcd3";
import * as k8s from "@kubernetes/client-node";
import { BackendConfigError, BackendUnavailableError, type LockBackend } from "../../src/backends/backend";
import { EtcdBackend, type EtcdBackendOptions } from "../../src/backends/etcd/backend";
import { createBackend } from "../../src/backends/registry";
import { TlsEtcd, type ClientTlsFiles } from "../env/etcd-tls";
import { eventually, testEnv, controlService } from "../support/env";
import { tempDir } from "../support/temp";
import { holdRequest, runBackendConformance } from "./backend-conformance";

const backends: EtcdBackend[] = [];
function backend(options: Partial<EtcdBackendOptions> = {}): EtcdBackend {
  const b = new EtcdBackend({ name: "etcd", endpoints: [testEnv.etcdEndpoint], ...options });
  backends.push(b);
  return b;
}
const raw = new Etcd3({ hosts: testEnv.etcdEndpoint });
after(async () => {
  await Promise.all(backends.map((b) => b.close()));
  raw.close();
});

const control = (action: "stop" | "start") => controlService("etcd", action);

/** A backend that has answered once: the first call connects, which on a loaded machine can take a while. */
async function connectedBackend(): Promise<EtcdBackend> {
  // 50 contenders at once on a machine that also runs the API server: more time than the 2 s default.
  const b = backend({ requestTimeoutMs: 8000 });
  await eventually("etcd to answer", () => b.holders("warm-up/key").then(() => true));
  return b;
}

runBackendConformance("etcd", connectedBackend, {
  supportsExpiry: true,
  minLeaseSeconds: 1,
  stopServer: () => control("stop"),
  startServer: () => control("start"),
});

// The same suite against an etcd reached over TLS with a client certificate and with authentication enabled, as a
// user whose role has readwrite on the backend's prefix only; built from settings as an operator builds it.
const TLS_PREFIX = "/kubelock-tls";
const secureBackends: LockBackend[] = [];
after(() => Promise.allSettled(secureBackends.map((backend) => backend.close())));
/** A TLS etcd of this file's own, started at first use and destroyed after the file's tests. */
function ownTlsEtcd(options: { jwt?: boolean } = {}): () => Promise<TlsEtcd> {
  let started: Promise<TlsEtcd> | undefined;
  after(async () => (await started?.catch(() => undefined))?.destroy());
  return () => (started ??= TlsEtcd.start(options));
}
const secureEtcd = ownTlsEtcd();
// The same server with JWT tokens (which etcd refuses as old after any change of its users or roles), for that case.
const jwtEtcd = ownTlsEtcd({ jwt: true });
// One whose trusted client CA is replaced, for the client certificate rotation.
const rotatingEtcd = ownTlsEtcd();

/** A user `name` whose role `name` may read and write `prefix` (and nothing else), its password in a file. */
async function limitedUser(name: string, prefix: string, password = `pw-${randomBytes(8).toString("hex")}`, etcd = secureEtcd()): Promise<{ username: string; passwordFile: string }> {
  await (await etcd).addUser(name, password, prefix);
  const passwordFile = join(tempDir("kubelock-etcd-auth-"), "password");
  writeFileSync(passwordFile, `${password}\n`);
  return { username: name, passwordFile };
}

let kubelockUser: Promise<{ username: string; passwordFile: string }> | undefined;
/** Settings for the TLS + auth etcd, as the user with readwrite on TLS_PREFIX/. */
async function secureSettings(overrides: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  const etcd = await secureEtcd();
  kubelockUser ??= limitedUser("kubelock", `${TLS_PREFIX}/`);
  return { endpoints: [etcd.endpoint], prefix: TLS_PREFIX, tls: etcd.clientTls, ...(await kubelockUser), requestTimeoutMs: 8000, ...overrides };
}
async function secureBackend(overrides: Record<string, unknown> = {}): Promise<LockBackend> {
  const b = await createBackend({ name: "etcd-tls", type: "etcd", kubeConfig: new k8s.KubeConfig(), settings: await secureSettings(overrides) });
  secureBackends.push(b);
  return b;
}
runBackendConformance("etcd (TLS with a client certificate, authentication, a user limited to the prefix)", async () => {
  const b = await createBackend({ name: "etcd-tls", type: "etcd", kubeConfig: new k8s.KubeConfig(), settings: await secureSettings() });
  await eventually("the TLS etcd to answer", () => b.holders("warm-up/key").then(() => true));
  return b;
}, {
  supportsExpiry: true,
  minLeaseSeconds: 1,
  stopServer: async () => (await secureEtcd()).stop(),
  startServer: async () => (await secureEtcd()).start(),
});

describe("etcd backend with TLS and authentication", () => {
  const random = () => randomBytes(4).toString("hex");

  test("a user without rights on the prefix, or with a wrong password, gets a clear refusal that never shows the password", async () => {
    const secret = `distinct-S3CRET-${random()}`;
    const outsider = await limitedUser(`outsider-${random()}`, "/elsewhere/", secret);
    const denied = await secureBackend({ ...outsider, requestTimeoutMs: 3000 });
    const key = `${ns()}/denied`;
    const refusal = (pattern: RegExp) => (err: Error) => {
      assert.ok(err instanceof BackendUnavailableError, String(err));
      assert.match(err.message, pattern);
      for (const text of [err.message, String(err.stack), String((err.cause as Error | undefined)?.message)]) assert.ok(!text.includes(secret), `the password shows: ${text}`);
      return true;
    };
    const mayNot = new RegExp(`etcd user "${outsider.username}" may not read and write ${TLS_PREFIX}/: grant its role readwrite on the key prefix ${TLS_PREFIX}/`);
    await assert.rejects(denied.tryAcquire(request(key, "a")), refusal(mayNot));
    await assert.rejects(denied.holders(key), refusal(mayNot));
    // The same user with its role granted the prefix works: the refusal was about the grant.
    const admin = (await secureEtcd()).admin();
    try {
      await admin.role(outsider.username).grant({ permission: "Readwrite", range: Range.prefix(`${TLS_PREFIX}/`) });
    } finally {
      admin.close();
    }
    assert.ok(await eventually("the granted user to acquire", () => denied.tryAcquire(request(key, "a"))));
    // A wrong password: refused, without the password tried.
    writeFileSync(outsider.passwordFile, `wrong-${secret}\n`);
    const wrong = await secureBackend({ ...outsider, requestTimeoutMs: 3000 });
    await assert.rejects(wrong.holders(key), refusal(new RegExp(`etcd user "${outsider.username}" was refused: wrong password in etcd.passwordFile`)));
  });

  test("a client without a client certificate is refused", async () => {
    const b = await secureBackend({ tls: { caFile: (await secureEtcd()).clientTls.caFile }, requestTimeoutMs: 1500 });
    await assert.rejects(b.holders(`${ns()}/no-cert`), BackendUnavailableError);
  });

  test("with JWT tokens, a change of etcd's users or roles does not break a running backend (its tokens are refused as old)", async () => {
    const etcd = await jwtEtcd();
    const b = await secureBackend({ endpoints: [etcd.endpoint], tls: etcd.clientTls, ...(await limitedUser("kubelock", `${TLS_PREFIX}/`, undefined, jwtEtcd())) });
    const req = request(`${ns()}/auth-change`, "a");
    const hold = await b.tryAcquire(req);
    assert.ok(hold);
    /** Changes the holds of `key` until its watch reports a change. */
    const reports = (key: string, calls: () => number) => eventually(`a watch call for ${key}`, async () => {
      const seen = calls();
      const probe = request(key, "probe", { maxHolders: 2 });
      await b.tryAcquire(probe);
      await b.release(key, probe.holderId);
      return eventually("a call", () => (calls() > seen ? true : undefined), 1000).catch(() => undefined);
    }, 20_000);
    const short = request(`${ns()}/keepalive`, "k", { leaseDurationSeconds: 3 });
    assert.ok(await b.tryAcquire(short));
    const admin = etcd.admin();
    const [before, later] = [`${ns()}/watched-before`, `${ns()}/watched-later`];
    let [beforeCalls, laterCalls] = [0, 0];
    const stops = [b.watch(before, () => beforeCalls++)];
    try {
      const lease = (await admin.get(`${TLS_PREFIX}/${short.key}/holders/${short.holderId}`).exec()).kvs[0].lease;
      await reports(before, () => beforeCalls); // the watch stream is open, with the token of that time
      await limitedUser(`bystander-${random()}`, "/bystander/", undefined, jwtEtcd()); // the auth store's revision moves on
      // The session lease's keepalives go on with no other call made: 1.5 s after the change its TTL still shows
      // 2 s or more, which a lease without keepalives since the change could not (3 s - 1.5 s, rounded down: 1).
      const changed = Date.now();
      await eventually("a keepalive after the change", async () => {
        const asked = Date.now();
        const { TTL } = await admin.leaseClient.leaseTimeToLive({ ID: lease });
        return asked - changed > 1500 && Number(TTL) >= 2 ? true : undefined;
      }, 10_000, 100);
      assert.equal((await b.renew(req.key, req.holderId, 30))?.fencingToken, hold.fencingToken);
      stops.push(b.watch(later, () => laterCalls++)); // a new watch on the stream opened before the change
      await reports(later, () => laterCalls);
      await reports(before, () => beforeCalls);
    } finally {
      for (const stop of stops) stop();
      admin.close();
    }
  });

  test("a rotated client certificate is picked up without a restart; the hold and its fencing token are kept", async () => {
    const etcd = await rotatingEtcd();
    const dir = tempDir("kubelock-etcd-client-tls-");
    const mounted: ClientTlsFiles = { caFile: join(dir, "ca.crt"), certFile: join(dir, "tls.crt"), keyFile: join(dir, "tls.key") };
    const mount = (files: ClientTlsFiles) => (["caFile", "certFile", "keyFile"] as const).forEach((part) => copyFileSync(files[part], mounted[part]));
    const original = etcd.clientTls;
    mount(original);
    const b = await secureBackend({ endpoints: [etcd.endpoint], tls: mounted, ...(await limitedUser("kubelock", `${TLS_PREFIX}/`, undefined, rotatingEtcd())) });
    const req = request(`${ns()}/cert-rotation`, "a", { leaseDurationSeconds: 30 });
    const hold = await b.tryAcquire(req);
    assert.ok(hold);
    const admin = () => etcd.admin();
    const holdKey = async () => {
      const client = admin();
      try {
        return (await client.get(`${TLS_PREFIX}/${req.key}/holders/${req.holderId}`).exec()).kvs[0];
      } finally {
        client.close();
      }
    };
    const leaseBefore = (await holdKey()).lease;
    // The Secret first: a certificate from a CA the server does not trust yet replaces the mounted one; the
    // backend goes on over its connection.
    const fresh = await etcd.newClientCertificate();
    mount(fresh);
    assert.equal((await b.renew(req.key, req.holderId, 30))?.fencingToken, hold.fencingToken);
    // Then the server: it accepts certificates of the new CA only, so the old certificate is refused.
    await etcd.trustOnly(fresh);
    const old = new Etcd3(etcd.clientOptions({ username: "root", password: etcd.rootPassword }, original));
    try {
      await assert.rejects(old.maintenance.status(), "the old certificate is still accepted");
    } finally {
      old.close();
    }
    // The next renew fails on the old certificate, which makes the backend read the files again: it goes on with
    // the new certificate, and the hold with its token, moved onto a session lease of the new client.
    const renewed = await b.renew(req.key, req.holderId, 30);
    assert.equal(renewed?.fencingToken, hold.fencingToken, "the hold was not kept");
    const kv = await holdKey();
    assert.equal(kv.create_revision, hold.fencingToken);
    assert.notEqual(kv.lease, leaseBefore, "the renew did not go through a new client");
    assert.equal((await b.renew(req.key, req.holderId, 30))?.fencingToken, hold.fencingToken);
    assert.ok(await b.tryAcquire(request(`${ns()}/after-cert-rotation`, "b")));
  });

  test("a rotated password is picked up without a restart, and holds are kept", async () => {
    const user = await limitedUser(`rotating-${random()}`, `${TLS_PREFIX}/`);
    const b = await secureBackend(user);
    const req = request(`${ns()}/rotation`, "a", { leaseDurationSeconds: 30 });
    const hold = await b.tryAcquire(req);
    assert.ok(hold);
    const changePassword = async (password: string) => {
      const admin = (await secureEtcd()).admin();
      try {
        await admin.user(user.username).setPassword(password);
      } finally {
        admin.close();
      }
    };
    // The Secret first, then etcd (the order to rotate in): no call fails.
    const second = `second-S3CRET-${random()}`;
    writeFileSync(user.passwordFile, `${second}\n`);
    assert.equal((await b.renew(req.key, req.holderId, 30))?.fencingToken, hold.fencingToken);
    await changePassword(second); // etcd drops the user's tokens
    assert.equal((await b.renew(req.key, req.holderId, 30))?.fencingToken, hold.fencingToken);
    assert.ok(await b.tryAcquire(request(`${ns()}/after-rotation`, "b")));
    // etcd first: calls are refused (saying so, without either password) until the file has the new password.
    const third = `third-S3CRET-${random()}`;
    await changePassword(third);
    await assert.rejects(b.renew(req.key, req.holderId, 30), (err: Error) =>
      err instanceof BackendUnavailableError && /was refused: wrong password/.test(err.message) && !err.message.includes(second) && !err.message.includes(third));
    writeFileSync(user.passwordFile, third);
    const renewed = await eventually("renew with the new password", () => b.renew(req.key, req.holderId, 30), 10_000);
    assert.equal(renewed.fencingToken, hold.fencingToken, "the hold was not kept");
  });
});

const request = holdRequest;

const ns = () => `etcd-${randomBytes(4).toString("hex")}`;

async function leaseIds(): Promise<Set<string>> {
  return new Set((await raw.leaseClient.leaseLeases()).leases.map((l) => l.ID));
}

describe("etcd backend", () => {
  test("the queue marks holds on this instance's own session lease (ownSession), whatever cluster name they carry", async () => {
    const key = `ns/own-session-${Date.now()}`;
    const owner = backend();
    const a = request(key, "a", { cluster: "an-earlier-name" });
    assert.ok(await owner.tryAcquire(a));
    assert.deepEqual((await owner.queueState!(key)).holders.map((h) => [h.holderId, h.ownSession]), [[a.holderId, true]]);
    const other = backend();
    assert.deepEqual((await other.queueState!(key)).holders.map((h) => [h.holderId, h.ownSession]), [[a.holderId, undefined]], "not on the other instance's leases");
  });

  test("settings are validated, one line per mistake, and never show the password", async () => {
    const dir = mkdtempSync(join(tmpdir(), "etcd-settings-"));
    const passwordFile = join(dir, "password");
    writeFileSync(passwordFile, "s3cret-value\n");
    const build = (settings: Record<string, unknown>) => createBackend({ name: "locks", type: "etcd", kubeConfig: new k8s.KubeConfig(), settings });
    const problems = async (settings: Record<string, unknown>): Promise<string[]> => {
      try {
        await (await build(settings)).close();
      } catch (err) {
        assert.ok(err instanceof BackendConfigError, String(err));
        assert.doesNotMatch(err.message, /s3cret/);
        return err.message.split("\n");
      }
      return [];
    };
    assert.deepEqual(await problems({}), ['backend "locks": etcd.endpoints is required: a non-empty list of http:// or https:// URLs']);
    assert.deepEqual(await problems({ endpoints: ["etcd:2379"], requestTimeoutMs: 0, dialTimeoutMs: "2s", bogus: 1 }), [
      'backend "locks": unknown setting etcd.bogus',
      'backend "locks": etcd.endpoints: "etcd:2379" is not an http:// or https:// URL',
      'backend "locks": etcd.dialTimeoutMs must be a positive integer (milliseconds)',
      'backend "locks": etcd.requestTimeoutMs must be a positive integer (milliseconds)',
    ]);
    const lines = await problems({
      endpoints: ["http://a:2379", "https://user:pw@b:2379"], prefix: "", username: "root",
      tls: { caFile: join(dir, "missing.pem"), certFile: passwordFile, extra: true },
    });
    assert.deepEqual(lines, [
      'backend "locks": etcd.endpoints: URLs must not carry credentials; use etcd.username and etcd.passwordFile',
      'backend "locks": etcd.prefix must be a non-empty key prefix without spaces, such as /kubelock',
      'backend "locks": etcd.passwordFile is required with etcd.username',
      'backend "locks": unknown setting etcd.tls.extra',
      'backend "locks": etcd.tls.certFile and etcd.tls.keyFile go together',
      `backend "locks": etcd.tls.caFile: cannot read ${join(dir, "missing.pem")}: ENOENT`,
      'backend "locks": etcd.tls needs https:// endpoints',
    ]);
    assert.deepEqual(await problems({ endpoints: ["http://a:2379", "https://b:2379"], passwordFile }), [
      'backend "locks": etcd.endpoints mix http:// and https://; use one scheme',
      'backend "locks": etcd.username must be a non-empty string (it goes with etcd.passwordFile)',
    ]);
    // A valid block builds a working backend.
    const b = await build({ endpoints: [testEnv.etcdEndpoint], prefix: "/kubelock-settings", requestTimeoutMs: 3000 });
    try {
      assert.equal(b.name, "locks");
      assert.ok(await b.tryAcquire(request(`${ns()}/lock`, "a")));
    } finally {
      await b.close();
    }
  });

  test("one session lease per lease duration, shared by every hold; no lease per acquire", async () => {
    const b = backend();
    const namespace = ns();
    const before = await leaseIds();
    const holds = [];
    for (let i = 0; i < 20; i++) holds.push(await b.tryAcquire(request(`${namespace}/lock-${i}`, `c${i}`, { leaseDurationSeconds: 30 })));
    assert.equal(holds.filter(Boolean).length, 20);
    const added = [...(await leaseIds())].filter((id) => !before.has(id));
    assert.equal(added.length, 1, `20 acquires granted ${added.length} leases`);
    const { kvs } = await raw.getAll().prefix(`/kubelock/${namespace}/`).exec();
    assert.equal(kvs.length, 20);
    assert.deepEqual([...new Set(kvs.map((kv) => kv.lease))], added);
    const ttl = await raw.leaseClient.leaseTimeToLive({ ID: added[0] });
    assert.equal(ttl.grantedTTL, "30");
    // Another duration gets its own session lease; the same duration reuses the first.
    await b.tryAcquire(request(`${namespace}/other`, "x", { leaseDurationSeconds: 45 }));
    await b.tryAcquire(request(`${namespace}/again`, "y", { leaseDurationSeconds: 30 }));
    assert.equal([...(await leaseIds())].filter((id) => !before.has(id)).length, 2);
  });

  test("close does not revoke: holds survive a restart, and expire when nobody re-attaches", async () => {
    const namespace = ns();
    const first = backend();
    const kept = request(`${namespace}/kept`, "a", { leaseDurationSeconds: 30 });
    const dropped = request(`${namespace}/dropped`, "b", { leaseDurationSeconds: 2 });
    const hold = await first.tryAcquire(kept);
    assert.ok(hold);
    assert.ok(await first.tryAcquire(dropped));
    const firstLease = (await raw.get(`/kubelock/${namespace}/kept/holders/${kept.holderId}`).exec()).kvs[0].lease;
    await first.close();

    const second = backend();
    const again = await second.tryAcquire(kept);
    assert.equal(again?.fencingToken, hold.fencingToken);
    const kv = (await raw.get(`/kubelock/${namespace}/kept/holders/${kept.holderId}`).exec()).kvs[0];
    assert.notEqual(kv.lease, firstLease, "the re-attached hold stayed on the closed instance's lease");
    assert.equal(kv.create_revision, hold.fencingToken);
    // Nobody re-attached the 2 s hold: etcd deletes it with the closed instance's lease.
    await eventually("the unclaimed hold to be deleted", async () =>
      (await raw.getAll().prefix(`/kubelock/${namespace}/dropped/`).count()) === 0 ? true : undefined, 15_000);
    assert.ok(await second.renew(kept.key, kept.holderId, 30));
  });

  test("keys live under <prefix>/<namespace>/<key>/holders/<holderId>; namespaces and keys are isolated", async () => {
    const b = backend({ prefix: "/custom/" });
    const [one, two] = [ns(), ns()];
    const a = request(`${one}/lock`, "a");
    const other = request(`${two}/lock`, "b");
    const nested = request(`${one}/lock/holders/x`, "c");
    assert.ok(await b.tryAcquire(a));
    assert.ok(await b.tryAcquire(other), "the same key in another namespace is another lock");
    assert.ok(await b.tryAcquire(nested), "a key that looks like another key's holders path is another lock");
    assert.deepEqual((await b.holders(a.key)).map((h) => h.holderId), [a.holderId]);
    assert.deepEqual((await b.holders(nested.key)).map((h) => h.holderId), [nested.holderId]);
    const keys = (await raw.getAll().prefix(`/custom/${one}/`).keys()).sort();
    assert.deepEqual(keys, [`/custom/${one}/lock%2Fholders%2Fx/holders/${nested.holderId}`, `/custom/${one}/lock/holders/${a.holderId}`].sort());
    const value = JSON.parse((await raw.get(`/custom/${one}/lock/holders/${a.holderId}`).string())!);
    assert.equal(value.holderId, a.holderId);
    assert.equal(value.claim, "claim-a");
    assert.equal(value.holderIdentity, "pod-a");
    assert.equal(value.cluster, "east");
    assert.equal(value.leaseDurationSeconds, 30);
    await assert.rejects(b.tryAcquire(request("no-namespace", "d")), /expected <namespace>\/<key>/);
  });

  test("fencing tokens are the holder keys' create revisions", async () => {
    const b = backend();
    const key = `${ns()}/tokens`;
    let previous = 0n;
    for (let i = 0; i < 3; i++) {
      const req = request(key, `t${i}`, { maxHolders: 3 });
      const hold = await b.tryAcquire(req);
      assert.ok(hold);
      const kv = (await raw.get(`/kubelock/${key}/holders/${req.holderId}`).exec()).kvs[0];
      assert.equal(hold.fencingToken, kv.create_revision);
      assert.ok(BigInt(hold.fencingToken) > previous);
      previous = BigInt(hold.fencingToken);
      assert.equal((await b.renew(key, req.holderId, 30))?.fencingToken, kv.create_revision, "renew kept the token");
    }
  });

  test("a revoked session lease: its holds are gone, and the next acquire grants a new one", async () => {
    const b = backend();
    const req = request(`${ns()}/lost`, "a", { leaseDurationSeconds: 30 });
    assert.ok(await b.tryAcquire(req));
    const path = `/kubelock/${req.key}/holders/${req.holderId}`;
    const lease = (await raw.get(path).exec()).kvs[0].lease;
    await raw.leaseClient.leaseRevoke({ ID: lease }); // the session lease is gone, and its keys with it
    assert.equal(await b.renew(req.key, req.holderId, 30), undefined);
    // The next acquire notices, grants a new session lease and works.
    const again = request(req.key, "b", { leaseDurationSeconds: 30 });
    assert.ok(await b.tryAcquire(again));
    const kv = (await raw.get(`/kubelock/${req.key}/holders/${again.holderId}`).exec()).kvs[0];
    assert.notEqual(kv.lease, lease);
  });

  test("a session lease lost in an outage is granted anew when etcd returns", { timeout: 120_000 }, async () => {
    const b = backend();
    const old = request(`${ns()}/outage`, "a", { leaseDurationSeconds: 1 });
    assert.ok(await b.tryAcquire(old));
    const oldLease = (await raw.get(`/kubelock/${old.key}/holders/${old.holderId}`).exec()).kvs[0].lease;
    await control("stop");
    try {
      // etcd3 gives a lease up after 2 TTLs without a keepalive: an inherent wait, not a condition to poll.
      await new Promise((resolve) => setTimeout(resolve, 2500));
    } finally {
      await control("start");
    }
    const next = request(`${ns()}/after-outage`, "b", { leaseDurationSeconds: 1 });
    assert.ok(await eventually("an acquire after the outage", () => b.tryAcquire(next), 60_000));
    const kv = (await raw.get(`/kubelock/${next.key}/holders/${next.holderId}`).exec()).kvs[0];
    assert.notEqual(kv.lease, oldLease, "the lost session lease was used again");
    assert.equal(await b.renew(old.key, old.holderId, 1), undefined, "a hold older than its lease survived the outage");
    await eventually("the lost lease's keys to be deleted", async () =>
      (await raw.getAll().prefix(`/kubelock/${old.key}/`).count()) === 0 ? true : undefined, 15_000);
  });
});
