/**
 * A backend user the server lets in but that may not use kubelock's keys is a condition of the lock, not a crash:
 * etcd with TLS and authentication (test/env/etcd-tls.ts), its user's role granted another prefix only. The lock's
 * Ready condition says what to grant, the operator goes on running, and once the role is granted the prefix the
 * claim is granted without a restart.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { Range } from "etcd3";
import { TlsEtcd } from "../env/etcd-tls";
import { createNamespace } from "../support/env";
import { Api, startOperator, type OperatorProcess } from "../support/operator";
import { tempDir } from "../support/temp";

const random = () => randomBytes(4).toString("hex");
const operators: OperatorProcess[] = [];
after(() => Promise.all(operators.map((operator) => operator.stop())));

test("etcd: a user without rights on the prefix shows in the lock's Ready=False condition saying what to grant; the operator keeps running", async (t) => {
  const etcd = await TlsEtcd.start();
  t.after(() => etcd.destroy());
  const prefix = `/kubelock-denied-${random()}`;
  const user = `outsider-${random()}`;
  const password = `pw-${random()}${random()}`;
  await etcd.addUser(user, password, "/elsewhere/");
  const passwordFile = join(tempDir("kubelock-etcd-denied-"), "password");
  writeFileSync(passwordFile, `${password}\n`);
  const tls = etcd.clientTls;
  const namespace = await createNamespace("denied");
  const api = new Api(namespace);
  const operator = await startOperator({ namespace, config: "defaultBackend: kubernetes\nbackends:\n"
    + `  - {name: denied, type: etcd, etcd: {endpoints: ["${etcd.endpoint}"], prefix: ${prefix}, username: ${user}, passwordFile: ${passwordFile}, `
    + `tls: {caFile: ${tls.caFile}, certFile: ${tls.certFile}, keyFile: ${tls.keyFile}}, requestTimeoutMs: 3000}}\n` });
  operators.push(operator);
  await api.createLock("guarded", { backend: "denied" });
  await api.createClaim("first", { lockName: "guarded" });
  const refused = await api.waitForLock("guarded", "Ready=False while the user may not use the prefix", (l) =>
    l.status?.conditions?.some((c) => c.type === "Ready" && c.status === "False") ?? false, 60_000);
  const ready = refused.status!.conditions!.find((c) => c.type === "Ready")!;
  const escaped = `${prefix}/`.replace(/[/-]/g, "\\$&");
  assert.match(ready.message, new RegExp(`etcd user "${user}" may not read and write ${escaped}: grant its role readwrite on the key prefix ${escaped}`),
    `the condition says what to grant: ${ready.message}`);
  assert.ok(!ready.message.includes(password), "the password shows in the condition");
  assert.notEqual((await api.getClaim("first"))?.status?.phase, "Granted");
  assert.ok(operator.running?.(), `the operator exited:\n${operator.output().slice(-2000)}`);
  // The refusal was about the grant: once the role has the prefix, the same operator grants the claim.
  const admin = etcd.admin();
  try {
    await admin.role(user).grant({ permission: "Readwrite", range: Range.prefix(`${prefix}/`) });
  } finally {
    admin.close();
  }
  const granted = await api.waitForPhase("first", "Granted", 60_000);
  assert.ok(Number(granted.status?.fencingToken) > 0);
  assert.ok(operator.running?.());
});
