/**
 * The Redis backend against a TLS-only redis-server that requires client certificates (test/env/redis-setups.ts),
 * every credential read from a file as from a mounted Secret: the conformance suite as a user holding only the
 * minimal ACL (src/backends/redis/acl.ts), with the outage case; what TLS refuses; a password rotated in its
 * file, picked up without a restart and without losing a hold, neither password ever shown; and a client
 * certificate rotated to one from a new CA, which the server (one of its own) comes to trust alone.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { copyFileSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import Redis from "ioredis";
import { BackendUnavailableError, type LockBackend } from "../../src/backends/backend";
import { redisPlugin } from "../../src/backends/redis";
import { minimalAcl } from "../../src/backends/redis/acl";
import type { RedisBackend } from "../../src/backends/redis/backend";
import { TlsRedis } from "../env/redis-setups";
import { eventually, kubeConfig } from "../support/env";
import { tempDir } from "../support/temp";
import { holdRequest, runBackendConformance } from "./backend-conformance";

const random = () => randomBytes(4).toString("hex");

let started: Promise<TlsRedis> | undefined;
/** The server, started on first use. */
function tlsServer(): Promise<TlsRedis> {
  started ??= TlsRedis.create().then(async (server) => {
    await server.start();
    return server;
  });
  return started;
}

const opened: LockBackend[] = [];
after(async () => {
  await Promise.allSettled(opened.map((b) => b.close()));
  if (started) await (await started).destroy();
});

/** A backend on the TLS server: the CA and the client certificate from files, then `settings`. */
async function backend(settings: Record<string, unknown>): Promise<RedisBackend> {
  const { certs } = await tlsServer();
  const tls = { caFile: certs.caCert, certFile: certs.adminCert, keyFile: certs.adminKey };
  const b = (await redisPlugin.factory({ name: "redis-tls", kubeConfig: kubeConfig(), clusterName: "", settings: { tls, ...settings } })) as RedisBackend;
  opened.push(b);
  return b;
}

/** Runs `commands` as the server's default user (no password; the client certificate is what lets it in). */
async function asAdmin(...commands: (string | number)[][]): Promise<unknown[]> {
  const server = await tlsServer();
  const admin = new Redis({ host: "127.0.0.1", port: server.port, tls: server.clientTls(), maxRetriesPerRequest: 1 });
  admin.on("error", () => undefined);
  try {
    const replies: unknown[] = [];
    for (const [command, ...args] of commands) replies.push(await admin.call(String(command), ...args));
    return replies;
  } finally {
    admin.disconnect();
  }
}

/** A user with only the minimal ACL for `prefix`, its password in a file: `url` is rediss://USER@127.0.0.1:PORT. */
async function limitedUser(prefix: string, password = random() + random()): Promise<{ name: string; url: string; passwordFile: string; create: () => Promise<void> }> {
  const server = await tlsServer();
  const name = `kubelock-${prefix}`;
  const passwordFile = join(tempDir("kubelock-redis-tls-user-"), "password");
  writeFileSync(passwordFile, `${password}\n`);
  const create = async () => void (await asAdmin(["ACL", "SETUSER", name, "reset", "on", `>${password}`, ...minimalAcl(prefix)]));
  await create();
  return { name, url: `rediss://${name}@127.0.0.1:${server.port}`, passwordFile, create };
}

/** A watch on `key` reports a hold taken and released beside the one there (the subscriber is connected). */
async function watchReports(b: LockBackend, key: string): Promise<void> {
  let calls = 0;
  const stop = b.watch(key, () => calls++);
  try {
    await eventually("the watch to report changes", async () => {
      const before = calls;
      const probe = holdRequest(key, "probe", { maxHolders: 2 });
      await b.tryAcquire(probe);
      await b.release(key, probe.holderId);
      return eventually("a call", () => (calls > before ? true : undefined), 1000);
    }, 20_000);
  } finally {
    stop();
  }
}

// The whole suite over TLS as the minimal ACL user. The server keeps no data across the outage case's restart,
// users included: the user is created again when it is back.
const conformancePrefix = `tls-${random()}`;
let conformanceUser: ReturnType<typeof limitedUser> | undefined;
const user = () => (conformanceUser ??= limitedUser(conformancePrefix));
runBackendConformance("redis over TLS with client certificates (minimal ACL user)", async () => {
  const { url, passwordFile } = await user();
  return backend({ url, passwordFile, keyPrefix: conformancePrefix });
}, {
  supportsExpiry: true,
  minLeaseSeconds: 1,
  stopServer: async () => (await tlsServer()).stop(),
  startServer: async () => {
    await (await tlsServer()).start();
    await (await user()).create();
  },
});

describe("redis over TLS", () => {
  test("a url with rediss:// alone trusts only the system's CAs: the harness's server certificate is refused", async () => {
    const server = await tlsServer();
    const b = (await redisPlugin.factory({ name: "redis-tls", kubeConfig: kubeConfig(), clusterName: "", settings: { url: server.url, connectTimeoutMs: 1000 } })) as RedisBackend;
    opened.push(b);
    const refused = await eventually("a refusal naming the certificate", () => b.holders("ns/x").then(
      () => assert.fail("holders() succeeded against an untrusted server certificate"),
      (err: Error) => (err instanceof BackendUnavailableError && /certificate/i.test(err.message) ? err : undefined),
    ), 10_000);
    assert.ok(refused instanceof BackendUnavailableError);
  });

  test("without a client certificate the server refuses the connection: BackendUnavailableError", async () => {
    const server = await tlsServer();
    const b = (await redisPlugin.factory({ name: "redis-tls", kubeConfig: kubeConfig(), clusterName: "",
      settings: { url: server.url, tls: { caFile: server.certs.caCert }, connectTimeoutMs: 1000 } })) as RedisBackend;
    opened.push(b);
    await assert.rejects(b.tryAcquire(holdRequest(`ns-${random()}/no-cert`, "a")), BackendUnavailableError);
  });

  test("a password rotated in its file is picked up without a restart; the hold survives; no password shows anywhere", async (t) => {
    const server = await tlsServer();
    const prefix = `rotate-${random()}`;
    const [oldPassword, newPassword] = [`OLD-kubelock-pw-${random()}${random()}`, `NEW-kubelock-pw-${random()}${random()}`];
    const { name, url, passwordFile } = await limitedUser(prefix, oldPassword);
    // Whatever the client library or the backend prints meanwhile is kept, to be searched for the passwords.
    const printed: string[] = [];
    const methods = ["log", "info", "warn", "error", "debug"] as const;
    const originals = methods.map((m) => console[m]);
    for (const m of methods) console[m] = (...args: unknown[]) => void printed.push(args.map(String).join(" "));
    const errors: Error[] = [];
    /** The call's result in `{ value }`, or undefined when the backend is unavailable (the error kept). */
    const attempt = async <T>(call: () => Promise<T>): Promise<{ value: T } | undefined> => {
      try {
        return { value: await call() };
      } catch (err) {
        errors.push(err as Error);
        if (err instanceof BackendUnavailableError) return undefined;
        throw err;
      }
    };
    try {
      const b = await backend({ url, passwordFile, keyPrefix: prefix, connectTimeoutMs: 1000 });
      const key = `ns-${random()}/rotate`;
      const hold = await b.tryAcquire(holdRequest(key, "a"));
      assert.ok(hold);
      // The Secret is rotated: the server takes only the new password, and the connections drop (a server
      // restart, a network blip) before the kubelet has updated the mounted file: the old password is refused.
      await asAdmin(["ACL", "SETUSER", name, "resetpass", `>${newPassword}`], ["CLIENT", "KILL", "USER", name]);
      await eventually("the old password to be refused", async () => {
        await attempt(() => b.holders(key));
        return errors.some((e) => /WRONGPASS/.test(e.message)) ? true : undefined;
      }, 15_000);
      // The file is replaced as the kubelet does it (a rename): the backend reads it again at the next refusal.
      writeFileSync(`${passwordFile}.new`, `${newPassword}\n`);
      renameSync(`${passwordFile}.new`, passwordFile);
      const since = Date.now();
      const renewed = await eventually("a renewal with the new password", () => attempt(() => b.renew(key, hold.holderId, 30)), 30_000);
      t.diagnostic(`the rotated password was in use ${Date.now() - since} ms after the file changed`);
      assert.ok(renewed.value, "the hold was lost across the rotation");
      assert.equal(renewed.value.fencingToken, hold.fencingToken, "the renewed hold has another token");
      assert.deepEqual((await b.holders(key)).map((h) => h.holderId), [hold.holderId]);
      assert.ok(await b.tryAcquire(holdRequest(`ns-${random()}/after-rotation`, "b")), "no new grant with the new password");
      // The subscription reconnected with the new password too.
      await watchReports(b, key);
      const aclLog = JSON.stringify(await asAdmin(["ACL", "LOG"]));
      assert.match(aclLog, new RegExp(name), "the server's ACL LOG did not record the refused password");
      const haystack = [...errors.map((e) => `${e.message}\n${e.stack}\n${String(e.cause)}\n${(e.cause as Error | undefined)?.stack}`), ...printed, aclLog, server.logs()].join("\n");
      for (const password of [oldPassword, newPassword]) assert.ok(!haystack.includes(password), "a password appears in an error, a log line or the ACL LOG");
    } finally {
      methods.forEach((m, i) => (console[m] = originals[i]));
    }
  });

  test("a client certificate from a new CA, which the server comes to trust alone, is picked up without a restart; the hold keeps its token", async (t) => {
    // A server of its own: the shared one keeps trusting the first CA for the other cases.
    const server = await TlsRedis.create();
    t.after(() => server.destroy());
    await server.start();
    const dir = tempDir("kubelock-redis-client-tls-");
    const mounted = { caFile: join(dir, "ca.crt"), certFile: join(dir, "tls.crt"), keyFile: join(dir, "tls.key") };
    /** Replaces the mounted files as the kubelet does (each a rename): the server's CA, and `client`'s certificate and key. */
    const mount = (client: { certFile: string; keyFile: string }) => {
      for (const [from, to] of [[server.certs.caCert, mounted.caFile], [client.certFile, mounted.certFile], [client.keyFile, mounted.keyFile]]) {
        copyFileSync(from, `${to}.new`);
        renameSync(`${to}.new`, to);
      }
    };
    const original = { certFile: server.certs.adminCert, keyFile: server.certs.adminKey };
    mount(original);
    const prefix = `cert-${random()}`;
    const b = (await redisPlugin.factory({ name: "redis-tls", kubeConfig: kubeConfig(), clusterName: "",
      settings: { url: server.url, tls: mounted, keyPrefix: prefix, connectTimeoutMs: 1000 } })) as RedisBackend;
    opened.push(b);
    const key = `ns-${random()}/cert-rotation`;
    const hold = await b.tryAcquire(holdRequest(key, "a"));
    assert.ok(hold);
    // The server first: it trusts the new CA alone and its connections drop; the backend's certificate is refused.
    const fresh = await server.newClientCertificate();
    await server.trustOnly(fresh);
    const old = new Redis({ host: "127.0.0.1", port: server.port, tls: { ca: readFileSync(server.certs.caCert), cert: readFileSync(original.certFile), key: readFileSync(original.keyFile) },
      maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true });
    old.on("error", () => undefined);
    try {
      await assert.rejects(old.connect().then(() => old.ping()), "the old certificate is still accepted");
    } finally {
      old.disconnect();
    }
    await eventually("the backend refused with the old certificate", () => b.holders(key).then(() => undefined, (err: Error) => {
      if (err instanceof BackendUnavailableError) return true;
      throw err;
    }), 15_000);
    // Then the Secret: the next failed connection makes the backend read the files again, and it reconnects with them.
    mount(fresh);
    const since = Date.now();
    const renewed = await eventually("a renewal with the new certificate", () => b.renew(key, hold.holderId, 30).catch((err: Error) => {
      if (err instanceof BackendUnavailableError) return undefined;
      throw err;
    }), 30_000);
    t.diagnostic(`the new certificate was in use ${Date.now() - since} ms after the files changed`);
    assert.ok(renewed, "the hold was lost across the rotation");
    assert.equal(renewed.fencingToken, hold.fencingToken, "the renewed hold has another token");
    assert.equal((await b.renew(key, hold.holderId, 30))?.fencingToken, hold.fencingToken);
    assert.ok(await b.tryAcquire(holdRequest(`ns-${random()}/after-cert-rotation`, "b")), "no new grant with the new certificate");
    // The subscriber reconnected with the new certificate too.
    await watchReports(b, key);
  });
});
