/**
 * Secrets never leak, for every backend whose credentials come from a file (a mounted Secret). The operator (debug
 * log level) starts with the file holding a wrong secret (distinctive), so every call is refused and the refusal
 * travels everywhere the operator reports: its logs, the lock's and claim's status, Events, metrics. Then the file
 * is rewritten with the right secret (distinctive too) and the claim is granted, without a restart. No secret may
 * appear in any of those places.
 *
 * - Redis (an ACL user, `passwordFile`) and etcd (TLS with a client certificate, authentication, a user limited to
 *   the prefix, `passwordFile`).
 * - ZooKeeper (digest credentials `user:password` in `authFile`, on nodes made under the right ones); then the
 *   credentials are rotated (a third secret): the nodes are re-ACLed to it while the claim stays Granted with its token.
 * - PostgreSQL (a role that must log in with its password, `passwordFile`).
 *
 * Each case has a namespace, an operator and a server-side user of its own.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import Redis from "ioredis";
import { minimalAcl } from "../../src/backends/redis/acl";
import { ZooKeeperBackend } from "../../src/backends/zookeeper/backend";
import { TlsEtcd } from "../env/etcd-tls";
import { createNamespace, eventually, kubectl, testEnv } from "../support/env";
import { passwordRole } from "../support/pg-role";
import { Api, findLog, startOperator, type OperatorProcess } from "../support/operator";
import { holdRequest } from "../conformance/backend-conformance";
import { tempDir } from "../support/temp";

const random = () => randomBytes(8).toString("hex");
const operators: OperatorProcess[] = [];
after(() => Promise.all(operators.map((operator) => operator.stop())));

/** One backend's case: its config entry (name `guarded`), its credential file with the wrong and right contents. */
interface SecretCase {
  /** The `backends[]` entry, a YAML flow mapping with `name: guarded`. */
  backend: string;
  file: string;
  wrong: string;
  right: string;
  /** What the lock's Ready=False condition says while the wrong secret is in use. */
  refusal: RegExp;
  /** Rotated after the grant: the file's next contents, and whether the backend has taken them up (in the case's namespace). */
  rotate?: { next: string; applied: (namespace: string) => Promise<boolean> };
  /** The strings that must never show: both passwords, and any other secret the backend was given (a private key). */
  secrets: string[];
}

/**
 * The shared flow: refused with the wrong secret, granted after the file holds the right one (then, with `rotate`,
 * still Granted with the same token after a rotation), and no secret anywhere the operator reported.
 */
async function refusedThenGranted(c: SecretCase): Promise<void> {
  writeFileSync(c.file, `${c.wrong}\n`);
  const namespace = await createNamespace("secrets");
  const api = new Api(namespace);
  const operator = await startOperator({ namespace, logLevel: "debug", config: `defaultBackend: kubernetes\nbackends:\n  - ${c.backend}\n` });
  operators.push(operator);
  await api.createLock("guarded", { backend: "guarded" });
  await api.createClaim("first", { lockName: "guarded" });
  const refused = await api.waitForLock("guarded", "Ready=False while the secret is wrong", (l) =>
    l.status?.conditions?.some((cond) => cond.type === "Ready" && cond.status === "False") ?? false, 60_000);
  const ready = refused.status!.conditions!.find((cond) => cond.type === "Ready")!;
  assert.match(ready.message, c.refusal, `the condition says why: ${ready.message}`);
  writeFileSync(c.file, `${c.right}\n`);
  const granted = await api.waitForPhase("first", "Granted", 60_000);
  assert.ok(Number(granted.status?.fencingToken) > 0);
  assert.match(operator.output(), /reconcile failed|renewal failed/, "the refusals were logged");
  if (c.rotate) {
    writeFileSync(c.file, `${c.rotate.next}\n`);
    await eventually("the rotated secret taken up", async () => (await c.rotate!.applied(namespace)) || undefined, 60_000);
    const claim = await api.getClaim("first");
    assert.equal(claim?.status?.phase, "Granted");
    assert.equal(claim?.status?.fencingToken, granted.status?.fencingToken, "the same hold");
  }
  await assertNothingShows(c.secrets, operator, namespace, [refused]);
}

/**
 * The one grep: none of `secrets` appears in the operator's log, the namespace's locks' and claims' status (now,
 * and as `seen` earlier), its Events, or the operator's metrics.
 */
async function assertNothingShows(secrets: string[], operator: OperatorProcess, namespace: string, seen: unknown[]): Promise<void> {
  const get = async (what: string) => (await kubectl(["get", what, "-n", namespace, "-o", "json"])).stdout;
  const places: Record<string, string> = {
    "operator log": operator.output(),
    "lock and claim status": (await get("distributedlocks,lockclaims")) + JSON.stringify(seen),
    "Events": await get("events"),
    "metrics": await (await fetch(`http://${findLog(operator, "serving metrics")?.address as string}/metrics`)).text(),
  };
  assert.match(places["lock and claim status"], /"fencingToken"|BackendUnavailable/, "the statuses were read");
  for (const [where, text] of Object.entries(places)) {
    for (const secret of secrets) assert.ok(!text.includes(secret), `a secret appears in the ${where}`);
  }
}

/**
 * Whether a backend given only `auth` may add (and then release) a hold beside the namespace's locks under
 * rootPath: once the operator re-ACLed the namespace's node to `auth`'s id.
 */
async function mayAddHold(rootPath: string, namespace: string, auth: string): Promise<boolean> {
  const probe = new ZooKeeperBackend({ name: "probe", connect: testEnv.zookeeperConnect, rootPath, auth, requestTimeoutMs: 10_000 });
  try {
    const req = holdRequest(`${namespace}/probe`, "probe");
    if (!(await probe.tryAcquire(req).catch(() => undefined))) return false;
    await probe.release(req.key, req.holderId);
    return true;
  } finally {
    await probe.close();
  }
}

/** A fresh file for a credential. */
const credentialFile = () => join(tempDir("kubelock-secrets-"), "credential");

describe("secrets appear nowhere the operator reports", () => {
  test("Redis: a refused and a rotated password (picked up without a restart)", async () => {
    const prefix = `secrets-${random().slice(0, 6)}`;
    const user = `kubelock-${prefix}`;
    const [right, wrong] = [`right-pw-${random()}`, `wrong-pw-${random()}`];
    const admin = new Redis(testEnv.redisUrl);
    try {
      await admin.call("ACL", "SETUSER", user, "on", `>${right}`, ...minimalAcl(prefix));
    } finally {
      admin.disconnect();
    }
    const url = new URL(testEnv.redisUrl);
    url.username = user;
    const file = credentialFile();
    await refusedThenGranted({
      backend: `{name: guarded, type: redis, redis: {url: "${url}", passwordFile: ${file}, keyPrefix: ${prefix}, commandTimeoutMs: 1000}}`,
      file, wrong, right, refusal: /WRONGPASS/, secrets: [wrong, right],
    });
  });

  test("etcd with TLS and authentication: a refused and a rotated password (picked up without a restart)", async (t) => {
    const etcd = await TlsEtcd.start();
    t.after(() => etcd.destroy());
    const prefix = `/kubelock-secrets-${random().slice(0, 6)}`;
    const [right, wrong] = [`right-pw-${random()}`, `wrong-pw-${random()}`];
    await etcd.addUser("kubelock", right, `${prefix}/`);
    const file = credentialFile();
    const tls = etcd.clientTls;
    const key = readFileSync(tls.keyFile, "utf8").split("\n")[1]; // a line of the private key
    await refusedThenGranted({
      backend: `{name: guarded, type: etcd, etcd: {endpoints: ["${etcd.endpoint}"], prefix: ${prefix}, username: kubelock, passwordFile: ${file}, `
        + `tls: {caFile: ${tls.caFile}, certFile: ${tls.certFile}, keyFile: ${tls.keyFile}}, requestTimeoutMs: 3000}}`,
      file, wrong, right, refusal: /etcd user "kubelock" was refused: wrong password in etcd\.passwordFile/, secrets: [wrong, right, key],
    });
  });

  test("ZooKeeper digest credentials: refused, then corrected and rotated (picked up without a restart)", async () => {
    const rootPath = `/kubelock-secrets-${random().slice(0, 6)}`;
    const [right, wrong, rotated] = [`right-pw-${random()}`, `wrong-pw-${random()}`, `rotated-pw-${random()}`];
    // The root node, made under the right credentials: only they may add a namespace under it.
    const owner = new ZooKeeperBackend({ name: "owner", connect: testEnv.zookeeperConnect, rootPath, auth: `kubelock:${right}`, requestTimeoutMs: 10_000 });
    try {
      const req = holdRequest("setup/owner", "owner");
      assert.ok(await owner.tryAcquire(req));
      await owner.release(req.key, req.holderId);
    } finally {
      await owner.close();
    }
    const file = credentialFile();
    await refusedThenGranted({
      backend: `{name: guarded, type: zookeeper, zookeeper: {connect: "${testEnv.zookeeperConnect}", rootPath: ${rootPath}, authFile: ${file}, requestTimeoutMs: 3000}}`,
      file, wrong: `kubelock:${wrong}`, right: `kubelock:${right}`, secrets: [wrong, right, rotated], refusal: /belong to another identity; zookeeper\.authFile must hold/,
      rotate: { next: `kubelock:${rotated}`, applied: (namespace) => mayAddHold(rootPath, namespace, `kubelock:${rotated}`) },
    });
  });

  test("PostgreSQL: a refused and a rotated password (picked up without a restart)", async () => {
    const id = random().slice(0, 6);
    const [right, wrong] = [`right-pw-${random()}`, `wrong-pw-${random()}`];
    const role = await passwordRole(`kubelock_secrets_${id}`, right);
    const file = credentialFile();
    await refusedThenGranted({
      backend: `{name: guarded, type: postgresql, postgresql: {url: "${role.url}", passwordFile: ${file}, table: kubelock_secrets_${id}, requestTimeoutMs: 3000}}`,
      file, wrong, right, refusal: /refused the login of role "kubelock_secrets_\w+": wrong password in postgresql\.passwordFile/, secrets: [wrong, right],
    });
  });
});
