/**
 * Secrets never leak: the operator reaches Redis as an ACL user whose password comes from a file. First the file
 * holds a wrong password (distinctive), so every call is refused and the refusal travels everywhere the operator
 * reports: its logs (debug level), the lock's and claim's status, Events, metrics. Then the file is rewritten
 * with the right password (distinctive too): the operator picks it up without a restart and grants. Neither
 * password may appear in any of those places.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import Redis from "ioredis";
import { minimalAcl } from "../../src/backends/redis/acl";
import { createNamespace, kubectl, testEnv } from "../support/env";
import { Api, findLog, startOperator, type OperatorProcess } from "../support/operator";
import { tempDir } from "../support/temp";

const prefix = `secrets-${randomBytes(3).toString("hex")}`;
const user = `kubelock-${prefix}`;
const rightPassword = `right-pw-${randomBytes(8).toString("hex")}`;
const wrongPassword = `wrong-pw-${randomBytes(8).toString("hex")}`;
const passwordFile = join(tempDir("kubelock-secrets-"), "password");
let namespace: string;
let api: Api;
let operator: OperatorProcess | undefined;

before(async () => {
  const admin = new Redis(testEnv.redisUrl);
  try {
    await admin.call("ACL", "SETUSER", user, "on", `>${rightPassword}`, ...minimalAcl(prefix));
  } finally {
    admin.disconnect();
  }
  writeFileSync(passwordFile, wrongPassword);
  namespace = await createNamespace("secrets");
  api = new Api(namespace);
  const url = new URL(testEnv.redisUrl);
  url.username = user;
  operator = await startOperator({
    namespace,
    logLevel: "debug",
    config: `defaultBackend: kubernetes\nbackends:\n  - {name: redis, type: redis, redis: {url: "${url}", passwordFile: ${passwordFile}, keyPrefix: ${prefix}, commandTimeoutMs: 1000}}\n`,
  });
});

after(async () => {
  await operator?.stop();
});

test("a refused and a rotated password appear in no log line, status, Event or metric", async () => {
  await api.createLock("guarded", { backend: "redis" });
  await api.createClaim("first", { lockName: "guarded" });
  const refused = await api.waitForLock("guarded", "Ready=False while the password is refused", (l) =>
    l.status?.conditions?.some((c) => c.type === "Ready" && c.status === "False") ?? false, 60_000);
  const reason = refused.status!.conditions!.find((c) => c.type === "Ready")!;
  assert.match(reason.message, /pass|auth|refus/i, `the condition says why: ${reason.message}`);
  console.log(`Ready=False says: ${reason.message}`);

  writeFileSync(passwordFile, rightPassword);
  const granted = await api.waitForPhase("first", "Granted", 60_000);
  assert.ok(Number(granted.status?.fencingToken) > 0);

  const metrics = await (await fetch(`http://${findLog(operator!, "serving metrics")?.address as string}/metrics`)).text();
  const places: Record<string, string> = {
    "operator log": operator!.output(),
    "lock and claim status": JSON.stringify([await api.getLock("guarded"), await api.getClaim("first"), refused]),
    "Events": (await kubectl(["get", "events", "-n", namespace, "-o", "json"])).stdout,
    "metrics": metrics,
  };
  assert.match(places["operator log"], /renewal failed|reconcile|BackendUnavailable|refused/i, "the refusals were logged");
  for (const [where, text] of Object.entries(places)) {
    for (const secret of [rightPassword, wrongPassword]) assert.ok(!text.includes(secret), `a password appears in the ${where}`);
  }
});
