/**
 * The zookeeper backend against a real ZooKeeper: the shared conformance suite, then what is particular to
 * ZooKeeper. Holds live as long as the session, not a per-hold lease, so the suite's lease-expiry cases are
 * skipped (`supportsExpiry: false`) and expiry is tested here by ending the session.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import ZooKeeper from "zookeeper";
import { BackendConfigError, BackendUnavailableError } from "../../src/backends/backend";
import { createBackend } from "../../src/backends/registry";
import { ZooKeeperBackend, type ZooKeeperBackendOptions } from "../../src/backends/zookeeper/backend";
import type { SessionStore, ZooKeeperSession } from "../../src/backends/zookeeper/session";
import { requestsOf } from "../../src/backends/zookeeper/requests";
import { parseZooKeeperSettings } from "../../src/backends/zookeeper/settings";
import { createLogger } from "../../src/log";
import { eventually, kubeConfig, testEnv, controlService } from "../support/env";
import { TcpProxy } from "../support/tcp-proxy";
import { holdRequest, runBackendConformance } from "./backend-conformance";
import { tempDir } from "../support/temp";

const Z = ZooKeeper.constants;
const ROOT = `/kubelock-test-${randomBytes(3).toString("hex")}`;
const SESSION_MS = 4000;

const backends: ZooKeeperBackend[] = [];
function backend(options: Partial<ZooKeeperBackendOptions> = {}): ZooKeeperBackend {
  const b = new ZooKeeperBackend({ name: "zk", connect: testEnv.zookeeperConnect, rootPath: ROOT, sessionTimeoutMs: SESSION_MS, requestTimeoutMs: 3000, ...options });
  backends.push(b);
  return b;
}
after(() => Promise.all(backends.map((b) => b.close())));

const control = (action: "stop" | "start") => controlService("zookeeper", action);

runBackendConformance("zookeeper", async () => backend(), { supportsExpiry: false, stopServer: () => control("stop"), startServer: () => control("start") });

// The same suite with digest credentials from a file (every node then only changeable by that identity), built from
// settings as an operator builds it.
let digestFile: string | undefined;
runBackendConformance("zookeeper (digest credentials: nodes only the operator's identity may change)", async () => {
  if (!digestFile) {
    digestFile = join(tempDir("kubelock-zk-digest-"), "auth");
    writeFileSync(digestFile, `kubelock:${randomBytes(12).toString("hex")}\n`);
  }
  const settings = { connect: testEnv.zookeeperConnect, rootPath: `${ROOT}-digest`, authFile: digestFile, sessionTimeoutMs: SESSION_MS, requestTimeoutMs: 3000 };
  const b = await createBackend({ name: "zk-digest", type: "zookeeper", kubeConfig: kubeConfig(), settings });
  backends.push(b as ZooKeeperBackend);
  return b;
}, { supportsExpiry: false });


/** A plain client (optionally on an existing session) for looking at nodes behind the backend's back. */
async function rawClient(session?: { id: string; password: string }): Promise<ZooKeeper> {
  const zk = new ZooKeeper({ connect: testEnv.zookeeperConnect, timeout: SESSION_MS, debug_level: 0, ...(session ? { client_id: session.id, client_password: session.password } : {}) });
  const connected = new Promise((resolve) => zk.once("connect", resolve));
  zk.init({});
  await connected;
  return zk;
}
function zkCall<T>(invoke: (done: (rc: number, error: unknown, ...result: unknown[]) => void) => unknown): Promise<{ rc: number; result: T }> {
  return new Promise((resolve) => invoke((rc, _error, ...result) => resolve({ rc, result: result as T })));
}
interface Stat { czxid: number; ephemeralOwner: string }

const request = holdRequest;
function newKey(hint: string): { key: string; path: string } {
  const ns = `ns-${randomBytes(3).toString("hex")}`;
  const name = `${hint}-${randomBytes(3).toString("hex")}`;
  return { key: `${ns}/${name}`, path: `${ROOT}/${ns}/${name}` };
}

describe("zookeeper backend: nodes, tokens, watches, sessions", () => {
  test("a hold is an ephemeral sequential node named after its holderId, with its HolderInfo as data", async () => {
    const b = backend();
    const { key, path } = newKey("shape");
    const req = request(key, "a");
    const hold = await b.tryAcquire(req);
    assert.ok(hold);
    const zk = await rawClient();
    try {
      const { result: [children] } = await zkCall<[string[]]>((done) => zk.a_get_children(path, false, done));
      assert.equal(children.length, 1);
      assert.match(children[0], new RegExp(`^h-${req.holderId}-\\d{10}$`));
      const { result: [stat, data] } = await zkCall<[Stat, Buffer]>((done) => zk.a_get(`${path}/${children[0]}`, false, done));
      assert.equal(stat.ephemeralOwner, b.sessionId, "the node does not belong to the backend's session");
      assert.equal(String(stat.czxid), hold.fencingToken, "the fencing token is not the node's czxid");
      const info = JSON.parse(data.toString());
      assert.deepEqual(
        { holderId: info.holderId, claim: info.claim, holderIdentity: info.holderIdentity, cluster: info.cluster, maxHolders: info.maxHolders },
        { holderId: req.holderId, claim: "claim-a", holderIdentity: "pod-a", cluster: "east", maxHolders: 1 },
      );
    } finally {
      zk.close();
    }
  });

  test("tokens are czxids: they follow the server's transaction order across keys and grants", async () => {
    const b = backend();
    const tokens: bigint[] = [];
    for (let i = 0; i < 5; i++) {
      const req = request(newKey("czxid").key, `c${i}`);
      const hold = await b.tryAcquire(req);
      assert.ok(hold);
      tokens.push(BigInt(hold.fencingToken));
      assert.equal(await b.release(req.key, req.holderId), true);
    }
    for (let i = 1; i < tokens.length; i++) assert.ok(tokens[i] > tokens[i - 1], `${tokens[i]} after ${tokens[i - 1]}`);
  });

  test("a hold's token is its czxid whether or not other children joined between its create and its listing", async () => {
    // Four sessions enter one lock at once: a listing that saw another's child created after its own cannot take
    // the lock node's pzxid for its child's czxid, and must read it.
    const sessions = Array.from({ length: 4 }, () => backend());
    const { key, path } = newKey("pzxid");
    const zk = await rawClient();
    try {
      for (let round = 0; round < 5; round++) {
        const entries = sessions.flatMap((b, s) => Array.from({ length: 4 }, (_, i) => ({ b, req: request(key, `r${round}-${s}-${i}`, { maxHolders: 16 }) })));
        const holds = await Promise.all(entries.map(({ b, req }) => b.tryAcquire(req)));
        const { result: [children] } = await zkCall<[string[]]>((done) => zk.a_get_children(path, false, done));
        for (const [i, { req }] of entries.entries()) {
          const child = children.find((name) => name.startsWith(`h-${req.holderId}-`));
          assert.ok(holds[i] && child, `entry ${i} of round ${round} holds no child`);
          const { result: [stat] } = await zkCall<[Stat]>((done) => zk.a_get(`${path}/${child}`, false, done));
          assert.equal(holds[i]!.fencingToken, String(stat.czxid), `entry ${i} of round ${round}: the token is not its child's czxid`);
        }
        await Promise.all(entries.map(({ b, req }) => b.release(key, req.holderId)));
      }
    } finally {
      zk.close();
    }
  });

  test("a lock only this session changes: its listings prove each new child's czxid, and another session's changes spoil the proof", async () => {
    // A queue of five on a one-holder lock, served one by one: the holder leaves, the next one is granted, a new one
    // joins at the back. Every other round, a plain client adds and deletes a child of its own just before the new
    // one joins, so that listing cannot take the lock's pzxid for the new child's czxid and must read it.
    const b = backend();
    const { key, path } = newKey("ledger");
    const zk = await rawClient();
    const reads: string[] = [];
    const client = requestsOf((b as unknown as { client: ZooKeeper }).client) as unknown as Record<string, (...args: unknown[]) => unknown>;
    const read = client.a_get.bind(client);
    client.a_get = (node: unknown, ...rest: unknown[]) => (reads.push(String(node)), read(node, ...rest));
    let n = 0;
    const join = async () => {
      const req = request(key, `q${n++}`, { wait: true });
      await b.tryAcquire(req);
      return req;
    };
    try {
      const queue = [await join()];
      for (let i = 0; i < 4; i++) queue.push(await join());
      const readsBefore = reads.length;
      let foreign = 0;
      for (let round = 0; round < 12; round++) {
        const holder = queue.shift()!;
        const hold = await b.tryAcquire(holder);
        assert.ok(hold, `round ${round}: the head of the queue holds nothing`);
        const { result: [children] } = await zkCall<[string[]]>((done) => zk.a_get_children(path, false, done));
        const child = children.find((name) => name.startsWith(`h-${holder.holderId}-`));
        const { result: [stat] } = await zkCall<[Stat]>((done) => zk.a_get(`${path}/${child}`, false, done));
        assert.equal(hold.fencingToken, String(stat.czxid), `round ${round}: the token is not its child's czxid`);
        assert.equal(await b.release(key, holder.holderId), true);
        if (round % 2 === 1) {
          const { result: [made] } = await zkCall<[string]>((done) => zk.a_create(`${path}/other-`, "", Z.ZOO_EPHEMERAL_SEQUENTIAL, done));
          await zkCall((done) => zk.a_delete_(made, -1, done));
          foreign++;
        }
        queue.push(await join());
      }
      // One read per join after another session's change; none after a round only this session changed the lock.
      assert.deepEqual(reads.slice(readsBefore).length, foreign, `reads: ${reads.slice(readsBefore).join(", ")}`);
    } finally {
      zk.close();
    }
  });

  test("forget deletes the empty lock node at once; a node with a child stays (ZNOTEMPTY)", async () => {
    const b = backend();
    const { key, path } = newKey("forget");
    const req = request(key, "a");
    assert.ok(await b.tryAcquire(req));
    const zk = await rawClient();
    try {
      const exists = async () => (await zkCall((done) => zk.a_exists(path, false, done))).rc === Z.ZOK;
      assert.equal(await b.forget(key), false, "forget deleted a lock node with a hold");
      assert.equal(await exists(), true);
      assert.equal(await b.release(key, req.holderId), true);
      assert.equal(await b.forget(key), true);
      assert.equal(await exists(), false, "the lock node is still there");
    } finally {
      zk.close();
    }
  });

  test("a node whose create reply was lost is recognised by its holderId and re-attached", async () => {
    const b = backend();
    const { key, path } = newKey("lost-reply");
    const req = request(key, "a");
    assert.ok(await b.tryAcquire(request(`${key.split("/")[0]}/warm-up`, "w"))); // the namespace node exists
    // Stand-in for a create that reached the server while its reply was lost.
    const zk = await rawClient();
    try {
      await zkCall((done) => zk.a_create(path, "", Z.ZOO_CONTAINER, done));
      const data = JSON.stringify({ ...req, key: undefined, acquireTime: new Date().toISOString(), renewTime: new Date().toISOString() });
      const { rc, result: [created] } = await zkCall<[string]>((done) => zk.a_create(`${path}/h-${req.holderId}-`, data, Z.ZOO_EPHEMERAL_SEQUENTIAL, done));
      assert.equal(rc, 0);
      const { result: [stat] } = await zkCall<[Stat]>((done) => zk.a_exists(created, false, done));
      const hold = await b.tryAcquire(req);
      assert.ok(hold);
      assert.equal(hold.fencingToken, String(stat.czxid));
      const { result: [children] } = await zkCall<[string[]]>((done) => zk.a_get_children(path, false, done));
      assert.deepEqual(children, [created.slice(path.length + 1)], "a second node was created");
    } finally {
      zk.close();
    }
  });

  test("watch keeps one watch on the lock node; contenders and waiters register none", async () => {
    const b = backend();
    const { key, path } = newKey("herd");
    assert.ok(await b.holders(key)); // connected
    const registered: string[] = [];
    // The requests the backend sends on its client (see requests.ts), counted where it sends them.
    const client = requestsOf((b as unknown as { client: ZooKeeper }).client) as unknown as Record<string, (...args: unknown[]) => unknown>;
    for (const method of ["aw_get_children", "aw_exists", "aw_get"]) {
      const original = client[method].bind(client);
      client[method] = (watched: unknown, ...rest: unknown[]) => {
        registered.push(`${method} ${String(watched)}`);
        return original(watched, ...rest);
      };
    }
    let calls = 0;
    const stop = b.watch(key, () => calls++);
    try {
      await eventually("the exists watch on the missing lock node", () => (registered.length >= 2 ? true : undefined), 5000);
      assert.deepEqual(registered, [`aw_get_children ${path}`, `aw_exists ${path}`]);
      const first = request(key, "first");
      assert.ok(await b.tryAcquire(first));
      await eventually("a call for the first hold", () => (calls > 0 ? true : undefined), 5000);
      // Ten contenders that find the mutex taken: no watch each, just changes seen by the one watch.
      const contenders = Array.from({ length: 10 }, (_, i) => request(key, `c${i}`));
      for (const r of await Promise.all(contenders.map((r) => b.tryAcquire(r)))) assert.equal(r, undefined);
      const seen = calls;
      assert.ok(await b.release(key, first.holderId));
      await eventually("a call for the release", () => (calls > seen ? true : undefined), 5000);
      assert.ok(registered.every((r) => r.endsWith(` ${path}`)), `a watch outside the lock node: ${registered.join(", ")}`);
      assert.ok(registered.length <= 2 + 2 + 2 * 21, `${registered.length} registrations: one per event expected`);
    } finally {
      stop();
    }
  });

  test("a waiter whose only predecessor went holds without asking the server; its validity counts from the server's last answer", async () => {
    // A waiter that saw the one child ahead of its own deleted knows that nothing can rank before its child again:
    // its next tryAcquire needs no round trip. "Only one ahead" comes from its own listing (w) or from the lock's
    // children watch (w2, which entered third). The fault: its connection goes silent right after the event. The
    // hold must then say that the server last heard from its session before the silence (confirmedAt), so that no
    // caller counts a lease from a moment the server never heard of.
    const [zkHost, zkPort] = testEnv.zookeeperConnect.split(":");
    const proxy = new TcpProxy(zkHost, Number(zkPort));
    await proxy.start();
    const b = backend({ connect: proxy.address });
    const other = backend();
    const { key, path } = newKey("first");
    const a = request(key, "a");
    const [w, w2] = ["w", "w2"].map((who) => request(key, who, { wait: true }));
    const zk = await rawClient();
    const woken = (req: typeof w) => new Promise<() => void>((resolve) => {
      const stop = b.watch(key, () => resolve(stop), { holderId: req.holderId, maxHolders: 1 });
    });
    try {
      assert.ok(await other.tryAcquire(a));
      assert.equal(await b.tryAcquire(w), undefined, "w held while a did");
      assert.equal(await b.tryAcquire(w2), undefined, "w2 held while a did");
      const [wWoken, w2Woken] = [woken(w), woken(w2)];
      assert.equal(await other.release(key, a.holderId), true);
      (await wWoken)();
      const asked = Date.now();
      const holdW = await b.tryAcquire(w);
      assert.ok(holdW?.confirmedAt !== undefined && holdW.confirmedAt <= asked, "w, alone behind a, asked the server again once a went");
      assert.equal(await b.release(key, w.holderId), true);
      (await w2Woken)();
      proxy.partition();
      const silentSince = Date.now();
      const hold = await b.tryAcquire(w2);
      assert.ok(hold, "w2 did not hold once the only child ahead of it went");
      assert.ok(hold.confirmedAt !== undefined && hold.confirmedAt <= silentSince,
        `confirmedAt ${hold.confirmedAt} is not before the silence (${silentSince}): a lease would be counted from a moment the server never heard of`);
      const { result: [children] } = await zkCall<[string[]]>((done) => zk.a_get_children(path, false, done));
      const child = children.find((name) => name.startsWith(`h-${w2.holderId}-`));
      assert.deepEqual(children, [child], "w2's child is not the only one left");
      const { result: [stat] } = await zkCall<[Stat]>((done) => zk.a_get(`${path}/${child}`, false, done));
      assert.equal(hold.fencingToken, String(stat.czxid), "the token is not the child's czxid");
    } finally {
      proxy.heal();
      zk.close();
      await b.close();
      await proxy.stop();
    }
  });

  test("a partition past the session timeout: renew is unavailable, then reports the hold gone; the backend recovers", async () => {
    const [zkHost, zkPort] = testEnv.zookeeperConnect.split(":");
    const proxy = new TcpProxy(zkHost, Number(zkPort));
    await proxy.start();
    const sessionFile = join(tempDir("kubelock-zk-"), "session.json");
    const b = backend({ connect: proxy.address, sessionFile });
    const other = backend();
    const { key } = newKey("expiry");
    const a = request(key, "a");
    const holdA = await b.tryAcquire(a);
    assert.ok(holdA);
    const oldSession = b.sessionId;
    assert.equal(JSON.parse(readFileSync(sessionFile, "utf8")).id, oldSession);
    await proxy.stop();
    try {
      // Suspended: nothing is decided on a stale view.
      await assert.rejects(b.renew(key, a.holderId, 30), BackendUnavailableError);
      await assert.rejects(b.tryAcquire(request(key, "x")), BackendUnavailableError);
      // The server expires the session: its holds go, and another operator takes the lock.
      await eventually("the partitioned session's holds to go", async () => ((await other.holders(key)).length === 0 ? true : undefined), SESSION_MS * 4);
    } finally {
      await proxy.start();
    }
    const holdB = await other.tryAcquire(request(key, "b"));
    assert.ok(holdB);
    assert.ok(BigInt(holdB.fencingToken) > BigInt(holdA.fencingToken));
    await eventually("renew to report the hold gone", async () => ((await b.renew(key, a.holderId, 30).catch(() => "unavailable")) === undefined ? true : undefined), 20_000);
    assert.notEqual(b.sessionId, oldSession, "no new session after the expiry");
    assert.equal(await b.release(key, a.holderId), false, "the expired holder's release removed something");
    assert.equal(await b.tryAcquire(request(key, "c")), undefined, "the lock was free after the expired holder's release");
    assert.ok(await b.tryAcquire(request(newKey("after-expiry").key, "d")), "the backend did not recover");
    assert.equal(JSON.parse(readFileSync(sessionFile, "utf8")).id, b.sessionId, "sessionFile keeps the old session");
    await b.close();
    await proxy.stop();
  });

  test("sessionFile: a restarted backend resumes the session and keeps its holds past the session timeout", async () => {
    const sessionFile = join(tempDir("kubelock-zk-"), "session.json");
    const first = backend({ sessionFile });
    const { key } = newKey("resume");
    const a = request(key, "a");
    const hold = await first.tryAcquire(a);
    assert.ok(hold);
    const session = first.sessionId;
    await first.close(); // keeps the session: holds stay for a successor
    assert.deepEqual((await backend().holders(key)).map((h) => h.holderId), [a.holderId], "close() ended the session");
    const restarted = backend({ sessionFile });
    assert.ok(await restarted.holders(key));
    assert.equal(restarted.sessionId, session, "the session was not resumed");
    await new Promise((r) => setTimeout(r, SESSION_MS + 1500));
    const renewed = await restarted.renew(key, a.holderId, 30);
    assert.ok(renewed, "the hold expired although its session was resumed");
    assert.equal(renewed.fencingToken, hold.fencingToken);
  });

  test("without sessionFile, a closed backend's holds last until its session times out", async () => {
    const first = backend();
    const { key } = newKey("no-resume");
    const a = request(key, "a");
    const hold = await first.tryAcquire(a);
    assert.ok(hold);
    await first.close();
    const successor = backend();
    const again = await successor.tryAcquire(a);
    assert.equal(again?.fencingToken, hold.fencingToken, "the successor did not re-attach");
    await eventually("the old session's holds to go", async () => ((await successor.holders(key)).length === 0 ? true : undefined), SESSION_MS * 3);
    assert.equal(await successor.renew(key, a.holderId, 30), undefined);
  });

  test("a hold of another live session cannot be renewed from here: unavailable, not confirmed", async () => {
    const owner = backend();
    const { key } = newKey("foreign");
    const a = request(key, "a");
    const hold = await owner.tryAcquire(a);
    assert.ok(hold);
    const other = backend();
    assert.deepEqual((await other.holders(key)).map((h) => h.holderId), [a.holderId]);
    await assert.rejects(other.renew(key, a.holderId, 30), /belongs to another session/);
    assert.equal((await owner.renew(key, a.holderId, 30))?.fencingToken, hold.fencingToken, "the owning session renews");
  });

  test("the queue marks holds on this backend's own session (ownSession), whatever cluster name they carry", async () => {
    const owner = backend();
    const { key } = newKey("own-session");
    const a = request(key, "a");
    assert.ok(await owner.tryAcquire({ ...a, cluster: "an-earlier-name" }));
    assert.deepEqual((await owner.queueState!(key)).holders.map((h) => [h.holderId, h.ownSession]), [[a.holderId, true]]);
    const other = backend();
    assert.deepEqual((await other.queueState!(key)).holders.map((h) => [h.holderId, h.ownSession]), [[a.holderId, undefined]], "not on the other session");
  });

  test("a waiter's grant time: this process reports it at once, the hold's first renewal writes it for others", async () => {
    let t = Date.parse("2026-01-01T00:00:00Z");
    const owner = backend({ clock: () => t });
    const { key } = newKey("grant-time");
    const [a, b] = [request(key, "a"), { ...request(key, "b"), wait: true }];
    assert.ok(await owner.tryAcquire(a));
    assert.equal(await owner.tryAcquire(b), undefined, "b waits");
    const joined = new Date(t).toISOString();
    t += 60_000;
    assert.ok(await owner.release(key, a.holderId));
    const granted = await owner.tryAcquire(b);
    assert.equal(granted?.acquireTime, new Date(t).toISOString());
    const acquireTime = async (from: ZooKeeperBackend) => (await from.holders(key)).find((h) => h.holderId === b.holderId)?.acquireTime;
    assert.equal(await acquireTime(owner), granted.acquireTime, "this process reads the grant time it reported");
    const other = backend();
    assert.equal(await acquireTime(other), joined, "before the first renewal another session reads when the child joined the queue");
    t += 1000;
    assert.ok(await owner.renew(key, b.holderId, b.leaseDurationSeconds));
    assert.equal(await acquireTime(other), granted.acquireTime, "the renewal wrote the grant time");
  });

  test("no server: BackendUnavailableError within the request timeout", async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as { port: number }).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const b = backend({ connect: `127.0.0.1:${port}`, requestTimeoutMs: 500 });
    const started = Date.now();
    await assert.rejects(b.tryAcquire(request("ns/x", "a")), BackendUnavailableError);
    await assert.rejects(b.holders("ns/x"), BackendUnavailableError);
    assert.ok(Date.now() - started < 5000, `took ${Date.now() - started}ms`);
  });
});

describe("zookeeper settings", () => {
  test("valid settings, defaults, and the registry's lazy factory", async () => {
    assert.deepEqual(parseZooKeeperSettings("zk", { connect: "zk-0:2181,zk-1:2181" }), {
      name: "zk", connect: "zk-0:2181,zk-1:2181", sessionTimeoutMs: 30000, rootPath: "/kubelock", auth: undefined, authFile: undefined, sessionFile: undefined,
      sessionSecret: "kubelock-zookeeper-sessions", requestTimeoutMs: 10000,
    });
    const b = await createBackend({ name: "zk", type: "zookeeper", kubeConfig: kubeConfig(), settings: { connect: testEnv.zookeeperConnect, rootPath: ROOT } });
    try {
      assert.ok(b instanceof ZooKeeperBackend);
      assert.deepEqual(await b.holders(newKey("registry").key), []);
    } finally {
      await b.close();
    }
  });

  test("every mistake is one line, and credentials never appear", async () => {
    const dir = tempDir("kubelock-zk-");
    const badAuth = join(dir, "auth");
    writeFileSync(badAuth, "no-colon-s3cret\n");
    const cases: [Record<string, unknown>, RegExp][] = [
      [{}, /zookeeper\.connect is required/],
      [{ connect: "zk-0" }, /must be host:port/],
      [{ connect: "zk-0:2181/chroot" }, /no chroot: use zookeeper\.rootPath/],
      [{ connect: "zk-0:99999" }, /must be host:port/],
      [{ connect: "zk:1", sessionTimeoutMs: 10 }, /sessionTimeoutMs must be an integer >= 1000/],
      [{ connect: "zk:1", requestTimeoutMs: "5s" }, /requestTimeoutMs must be an integer/],
      [{ connect: "zk:1", rootPath: "kubelock/" }, /rootPath must be an absolute path/],
      [{ connect: "zk:1", sessionSecret: "Not_A_Name" }, /sessionSecret must be a Secret name/],
      [{ connect: "zk:1", rootPath: "/zookeeper/x" }, /rootPath must be an absolute path/],
      [{ connect: "zk:1", authFile: join(dir, "missing") }, /authFile: cannot read .*ENOENT/],
      [{ connect: "zk:1", authFile: badAuth }, /must hold digest credentials user:password/],
      [{ connect: "zk:1", sessionFile: "/no/such/dir/session" }, /sessionFile must be a file path in an existing directory/],
      [{ connect: "zk:1", bogus: true }, /unknown setting zookeeper\.bogus/],
    ];
    for (const [settings, expected] of cases) {
      assert.throws(() => parseZooKeeperSettings("zk", settings), (err: Error) => {
        assert.ok(err instanceof BackendConfigError, String(err));
        assert.match(err.message, expected);
        assert.doesNotMatch(err.message, /s3cret/);
        return true;
      });
    }
    assert.throws(() => parseZooKeeperSettings("zk", { connect: 5, sessionTimeoutMs: 0, rootPath: "x", other: 1 }), (err: Error) => err.message.split("\n").length === 4);
    const goodAuth = join(dir, "good");
    writeFileSync(goodAuth, "kubelock:s3cret\n");
    assert.deepEqual(parseZooKeeperSettings("zk", { connect: "zk:1", authFile: goodAuth }), {
      ...parseZooKeeperSettings("zk", { connect: "zk:1" }), auth: "kubelock:s3cret", authFile: goodAuth,
    }, "the contents and the path, to read it again");
  });
});

test("with digest credentials, a client without them can neither delete, change nor add a hold; one with them can", async () => {
  const b = backend({ rootPath: `${ROOT}-acl`, auth: "kubelock:acl-s3cret" });
  const { key, path } = newKey("acl");
  const lock = path.replace(ROOT, `${ROOT}-acl`);
  const req = request(key, "a");
  assert.ok(await b.tryAcquire(req));
  const stranger = await rawClient();
  const insider = await rawClient();
  insider.add_auth("digest", "kubelock:acl-s3cret", () => undefined);
  try {
    const { result: [children] } = await zkCall<[string[]]>((done) => stranger.a_get_children(lock, false, done));
    assert.equal(children.length, 1, "anyone may read");
    const hold = `${lock}/${children[0]}`;
    const digest = `kubelock:${createHash("sha1").update("kubelock:acl-s3cret").digest("base64")}`;
    for (const node of [hold, lock, lock.slice(0, lock.lastIndexOf("/"))]) {
      // (read by the identity itself: ZooKeeper shows others a digest as "x")
      const { result: [acl] } = await zkCall<[{ perms: number; scheme: string; auth: string }[]]>((done) => insider.a_get_acl(node, done));
      assert.deepEqual(acl.map((a) => [a.perms, a.scheme, a.auth]).sort(), [[Z.ZOO_PERM_ALL, "digest", digest], [Z.ZOO_PERM_READ, "world", "anyone"]].sort(), `the ACL of ${node}`);
    }
    assert.equal((await zkCall((done) => stranger.a_delete_(hold, -1, done))).rc, Z.ZNOAUTH, "deleting a hold without the credentials");
    assert.equal((await zkCall((done) => stranger.a_set(hold, "{}", -1, done))).rc, Z.ZNOAUTH, "changing a hold's data without them");
    assert.equal((await zkCall((done) => stranger.a_set_acl(hold, -1, [{ perms: Z.ZOO_PERM_ALL, scheme: "world", auth: "anyone" }], done))).rc, Z.ZNOAUTH, "opening a hold's ACL without them");
    assert.equal((await zkCall((done) => stranger.a_create(`${lock}/h-intruder-`, "", Z.ZOO_EPHEMERAL_SEQUENTIAL, done))).rc, Z.ZNOAUTH, "adding a hold without them");
    assert.equal((await b.holders(key))[0]?.holderId, req.holderId, "the hold is still there");
    // An operator with other credentials is told so, without its password in the message.
    const other = backend({ rootPath: `${ROOT}-acl`, auth: "kubelock:other-distinct-S3CRET" });
    await assert.rejects(other.tryAcquire(request(key, "b")), (err: Error) => err instanceof BackendUnavailableError
      && /belong to another identity; zookeeper\.authFile must hold the digest credentials/.test(err.message) && !/S3CRET/i.test(err.message));
    assert.equal((await zkCall((done) => insider.a_delete_(hold, -1, done))).rc, Z.ZOK, "the operator's identity may");
  } finally {
    stranger.close();
    insider.close();
  }
});

describe("zookeeper digest credentials rotated in authFile (no restart)", () => {
  const credentials = (hint: string) => `kubelock:${hint}-${randomBytes(9).toString("hex")}`;
  const digestOf = (auth: string) => `kubelock:${createHash("sha1").update(auth).digest("base64")}`;
  /** A plain client presenting `auth`. */
  async function clientAs(auth: string): Promise<ZooKeeper> {
    const zk = await rawClient();
    zk.add_auth("digest", auth, () => undefined);
    return zk;
  }
  /** The ids with rights on `path`, as `zk` sees them (a digest id shows only to a client presenting it). */
  async function aclIds(zk: ZooKeeper, path: string): Promise<string[]> {
    const { rc, result: [acl] } = await zkCall<[{ auth: string }[]]>((done) => zk.a_get_acl(path, done));
    assert.equal(rc, Z.ZOK, `reading the ACL of ${path}`);
    return acl.map((a) => a.auth);
  }
  const logged = (lines: string[]) => createLogger("debug", {}, (line) => lines.push(line) > 0);

  test("a rotated file: the session takes the new id, every node is re-ACLed to it, holds keep their tokens", async () => {
    const [a, b] = [credentials("first-S3CRET"), credentials("second-S3CRET")];
    const dir = tempDir("kubelock-zk-rotate-");
    const file = join(dir, "auth");
    writeFileSync(file, `${a}\n`);
    const rootPath = `${ROOT}-rotate`;
    const lines: string[] = [];
    const first = backend({ rootPath, auth: a, authFile: file, sessionFile: join(dir, "session"), log: logged(lines) });
    const ns = `ns-${randomBytes(3).toString("hex")}`;
    const [held, queued] = [`${ns}/held`, `${ns}/queued`];
    const holder = request(held, "a");
    const [front, waiter] = [request(queued, "b"), request(queued, "c", { wait: true })];
    const token = (await first.tryAcquire(holder))?.fencingToken;
    assert.ok(token);
    assert.ok(await first.tryAcquire(front));
    assert.equal(await first.tryAcquire(waiter), undefined, "a waiter, queued behind b");
    const [asA, asB] = [await clientAs(a), await clientAs(b)];
    try {
      const { result: [children] } = await zkCall<[string[]]>((done) => asA.a_get_children(`${rootPath}/${ns}/held`, false, done));
      const hold = `${rootPath}/${ns}/held/${children[0]}`;
      const { result: [waiting] } = await zkCall<[string[]]>((done) => asA.a_get_children(`${rootPath}/${ns}/queued`, false, done));
      const nodes = [rootPath, `${rootPath}/${ns}`, `${rootPath}/${ns}/held`, hold, ...waiting.map((c) => `${rootPath}/${ns}/queued/${c}`)];
      assert.ok((await aclIds(asA, hold)).includes(digestOf(a)), "made under the first credentials");

      writeFileSync(file, `${b}\n`);
      await eventually("every node's ACL names the new credentials' id", async () => {
        for (const node of nodes) if (!(await aclIds(asB, node)).includes(digestOf(b))) return undefined;
        return true;
      }, 20_000);
      const renewed = await first.renew(held, holder.holderId, holder.leaseDurationSeconds);
      assert.equal(renewed?.fencingToken, token, "renewed with the same token");
      // Checked with a version no node has: the ACL is checked first, so nothing changes either way.
      assert.equal((await zkCall((done) => asA.a_set(hold, "{}", 123456, done))).rc, Z.ZNOAUTH, "the old credentials may no longer change the hold");
      assert.equal((await zkCall((done) => asB.a_set(hold, "{}", 123456, done))).rc, Z.ZBADVERSION, "the new ones may");
      assert.equal((await zkCall((done) => asA.a_create(`${rootPath}/${ns}/held/h-intruder-`, "", Z.ZOO_EPHEMERAL_SEQUENTIAL, done))).rc, Z.ZNOAUTH);

      // Invalid contents: ignored with one warning naming the file, never its contents; the new credentials stay.
      writeFileSync(file, "no-colon-S3CRET-garbage\n");
      const warning = await eventually("a warning about the invalid file", () => lines.find((line) => line.includes("does not hold digest credentials")), 20_000);
      assert.ok(warning.includes(file), warning);
      assert.equal((await first.renew(held, holder.holderId, holder.leaseDurationSeconds))?.fencingToken, token);
      assert.ok(!lines.some((line) => /S3CRET/.test(line)), "no credentials in the log");
      writeFileSync(file, `${b}\n`);

      // An operator given only the new credentials resumes the session and keeps, renews and releases every hold.
      await first.close();
      const second = backend({ rootPath, auth: b, sessionFile: join(dir, "session") });
      assert.equal((await second.renew(held, holder.holderId, holder.leaseDurationSeconds))?.fencingToken, token);
      assert.equal((await second.renew(queued, front.holderId, front.leaseDurationSeconds))?.holderId, front.holderId);
      assert.equal(await second.release(queued, front.holderId), true);
      assert.equal((await second.tryAcquire(waiter))?.holderId, waiter.holderId, "the waiter's turn, granted on its node");
      assert.equal(await second.release(held, holder.holderId), true);
      assert.equal(lines.filter((line) => line.includes("does not hold digest credentials")).length, 1, "one warning");
    } finally {
      asA.close();
      asB.close();
    }
  });

  test("a replica that takes leadership over after a rotation resumes the session under the file's new credentials", async () => {
    const [a, b] = [credentials("first-S3CRET"), credentials("second-S3CRET")];
    const file = join(tempDir("kubelock-zk-lead-"), "auth");
    writeFileSync(file, `${a}\n`);
    const rootPath = `${ROOT}-lead`;
    let stored: ZooKeeperSession | undefined;
    const handover: SessionStore = { where: "memory", load: async () => stored, save: async (session) => void (stored = session) };
    // Both replicas read the same file; the second one is a follower (its own session) until it leads.
    const [leader, next] = [backend({ rootPath, auth: a, authFile: file, handover }), backend({ rootPath, auth: a, authFile: file, handover })];
    await leader.lead(() => true);
    await eventually("the leader's session handed over", () => stored);
    const req = request(`ns-${randomBytes(3).toString("hex")}/led`, "a");
    const token = (await leader.tryAcquire(req))?.fencingToken;
    assert.ok(token);
    const asB = await clientAs(b);
    try {
      writeFileSync(file, `${b}\n`);
      const lock = `${rootPath}/${req.key}`;
      await eventually("the hold's ACL names the new credentials' id", async () => {
        const { result: [children] } = await zkCall<[string[]]>((done) => asB.a_get_children(lock, false, done));
        return (await aclIds(asB, `${lock}/${children[0]}`)).includes(digestOf(b)) || undefined;
      }, 20_000);
      leader.stepDown();
      await next.lead(() => true);
      assert.equal(next.sessionId, stored?.id, "the leader's session resumed");
      assert.equal((await next.renew(req.key, req.holderId, req.leaseDurationSeconds))?.fencingToken, token, "renewed under the new credentials");
      assert.equal(await next.release(req.key, req.holderId), true);
    } finally {
      asB.close();
    }
  });

  test("wrong credentials are refused naming authFile; once the file is corrected, calls succeed without a restart", async () => {
    const [right, wrong] = [credentials("right-S3CRET"), credentials("wrong-S3CRET")];
    const rootPath = `${ROOT}-corrected`;
    const owner = backend({ rootPath, auth: right });
    const ns = `ns-${randomBytes(3).toString("hex")}`;
    const owned = request(`${ns}/owned`, "owner");
    assert.ok(await owner.tryAcquire(owned));
    const file = join(tempDir("kubelock-zk-corrected-"), "auth");
    writeFileSync(file, `${wrong}\n`);
    const b = backend({ rootPath, auth: wrong, authFile: file });
    const req = request(`${ns}/guarded`, "a");
    await assert.rejects(b.tryAcquire(req), (err: Error) => err instanceof BackendUnavailableError
      && /belong to another identity; zookeeper\.authFile must hold the digest credentials/.test(err.message) && !/S3CRET/i.test(err.message));
    writeFileSync(file, `${right}\n`);
    const hold = await eventually("granted once the file holds the right credentials", () => b.tryAcquire(req).catch(() => undefined), 20_000);
    assert.equal((await b.renew(req.key, req.holderId, req.leaseDurationSeconds))?.fencingToken, hold.fencingToken);
    assert.equal((await owner.renew(owned.key, owned.holderId, owned.leaseDurationSeconds))?.holderId, owned.holderId, "the owner's hold untouched");
    assert.equal(await b.release(req.key, req.holderId), true);
  });
});
