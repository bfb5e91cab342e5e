/**
 * The PostgreSQL backend against the real server the test environment started: the shared conformance suite
 * (with the outage case), then what is particular to it (settings, the fencing counter surviving the loss of
 * its row, a hold no other operator can release, a password rotated in its file).
 */
import assert from "node:assert/strict";
import { fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import { renameSync, writeFileSync } from "node:fs";
import { once } from "node:events";
import path from "node:path";
import { after, test } from "node:test";
import pg from "pg";
import { BackendConfigError, BackendUnavailableError, type LockBackend } from "../../src/backends/backend";
import { createBackend } from "../../src/backends/registry";
import { controlService, eventually, kubeConfig, testEnv } from "../support/env";
import { passwordRole } from "../support/pg-role";
import { tempDir } from "../support/temp";
import { holdRequest, runBackendConformance } from "./backend-conformance";

const opened: LockBackend[] = [];
async function backend(settings: Record<string, unknown> = {}): Promise<LockBackend> {
  const b = await createBackend({ name: "postgresql", type: "postgresql", kubeConfig: kubeConfig(), settings: { url: testEnv.postgresqlUrl, ...settings } });
  opened.push(b);
  return b;
}
after(() => Promise.allSettled(opened.map((b) => b.close())));

runBackendConformance("postgresql", () => backend(), {
  supportsExpiry: true,
  minLeaseSeconds: 1,
  stopServer: () => controlService("postgresql", "stop"),
  startServer: () => controlService("postgresql", "start"),
});

test("postgresql: a deleted fencing counter row does not make tokens repeat or go back", async () => {
  const b = await backend();
  const key = `pg-${randomUUID().slice(0, 8)}/counter`;
  const first = holdRequest(key, "a");
  const token = BigInt((await b.tryAcquire(first))!.fencingToken);
  await b.release(key, first.holderId);
  const sql = new pg.Client({ connectionString: testEnv.postgresqlUrl });
  await sql.connect();
  try {
    assert.equal((await sql.query("DELETE FROM kubelock_holds_fencing WHERE lock_key = $1", [key])).rowCount, 1);
  } finally {
    await sql.end();
  }
  const again = await b.tryAcquire(holdRequest(key, "b"));
  assert.ok(BigInt(again!.fencingToken) > token, `token ${again!.fencingToken} after the counter went, was ${token}`);
  const floored = await b.tryAcquire(holdRequest(`${key}-floor`, "c", { fencingFloor: "999999999999999999999" }));
  assert.equal(floored?.fencingToken, "1000000000000000000000", "a new counter starts above the caller's high-water mark");
});

test("postgresql: forget deletes the key's counter row once no hold or waiter row is left", async () => {
  const b = await backend();
  const key = `pg-${randomUUID().slice(0, 8)}/forget`;
  const rows = async () => {
    const sql = new pg.Client({ connectionString: testEnv.postgresqlUrl });
    await sql.connect();
    try {
      const count = (table: string) => sql.query(`SELECT count(*)::int AS n FROM ${table} WHERE lock_key = $1`, [key]);
      const tables = ["kubelock_holds", "kubelock_holds_queue", "kubelock_holds_fencing"];
      return (await Promise.all(tables.map(count))).map((r) => (r.rows[0] as { n: number }).n);
    } finally {
      await sql.end();
    }
  };
  const [holder, waiter] = [holdRequest(key, "a"), holdRequest(key, "w", { wait: true })];
  assert.ok(await b.tryAcquire(holder));
  assert.equal(await b.tryAcquire(waiter), undefined);
  assert.deepEqual(await rows(), [1, 1, 1], "a hold, a waiter and the counter");
  await b.release(key, waiter.holderId);
  await b.release(key, holder.holderId);
  assert.equal(await b.forget!(key), true);
  assert.deepEqual(await rows(), [0, 0, 0]);
  // A counter a caller's floor raised above the server's clock in microseconds stays: a new one would start lower.
  const floored = holdRequest(key, "b", { fencingFloor: "9000000000000000" });
  assert.ok(await b.tryAcquire(floored));
  await b.release(key, floored.holderId);
  assert.equal(await b.forget!(key), false);
  assert.deepEqual(await rows(), [0, 0, 1]);
});

test("postgresql: settings mistakes are one line each, and a password in the URL is refused without being shown", async () => {
  const lines = await createBackend({
    name: "pg", type: "postgresql", kubeConfig: kubeConfig(),
    settings: { url: "postgres://u:s3cret-pw@db:5432/x", table: "Bad-Name", requestTimeoutMs: 0, bogus: 1 },
  }).then(() => [], (err: Error) => {
    assert.ok(err instanceof BackendConfigError);
    return err.message.split("\n");
  });
  assert.deepEqual(lines, [
    'backend "pg": unknown setting postgresql.bogus',
    'backend "pg": postgresql.url must not carry a password; use postgresql.passwordFile',
    'backend "pg": postgresql.table must be a lower-case SQL identifier (letters, digits, _), such as kubelock_holds',
    'backend "pg": postgresql.requestTimeoutMs must be a positive integer (milliseconds)',
  ]);
  assert.ok(!lines.join("\n").includes("s3cret-pw"));
});

test("postgresql: connections the server ends at any moment (a restart, pg_terminate_backend) are errors, never a crash", async () => {
  const application = `kubelock-terminated-${randomUUID().slice(0, 8)}`;
  const b = await backend({ url: `${testEnv.postgresqlUrl}?application_name=${application}` });
  const key = `pg-${randomUUID().slice(0, 8)}/terminated`;
  const stopWatch = b.watch(key, () => undefined); // the LISTEN connection too
  const admin = new pg.Client({ connectionString: testEnv.postgresqlUrl });
  await admin.connect();
  let busy = true;
  let terminated = 0;
  const killer = (async () => {
    while (busy) {
      const result = await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", [application]);
      terminated += result.rowCount ?? 0;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  })();
  let failures = 0;
  try {
    const until = Date.now() + 3000;
    while (Date.now() < until) {
      const req = holdRequest(key, "t", { wait: true });
      await b.tryAcquire(req).then(() => b.release(key, req.holderId)).catch(() => failures++);
    }
  } finally {
    busy = false;
    await killer;
    await admin.end();
    stopWatch();
  }
  assert.ok(terminated > 0 && failures > 0, `the server ended ${terminated} connections, ${failures} calls failed`);
  // Still alive, and the backend works again once the connections are left alone (on a key of its own: calls whose
  // answers were cut may have left holds and queue entries on the first, to expire by their lease).
  assert.ok(await b.tryAcquire(holdRequest(`${key}-after`, "after")), "no hold after the terminations stopped");
});

test("postgresql: an operator frozen inside a change (SIGSTOP) does not wedge the key: the server ends its transaction", async () => {
  const key = `pg-${randomUUID().slice(0, 8)}/frozen`;
  const child = fork(path.join(__dirname, "../support/pg-stalled-client.ts"), [testEnv.postgresqlUrl, key, "1500"], {
    execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  try {
    const [message] = await once(child, "message");
    assert.equal(message, "locked");
    child.kill("SIGSTOP"); // its connection stays open, the transaction idle, the key's advisory lock held
    const b = await backend();
    const started = Date.now();
    let hold;
    let failures = 0;
    while (!hold && Date.now() - started < 10_000) {
      hold = await b.tryAcquire(holdRequest(key, "next")).catch(() => (failures++, undefined));
    }
    assert.ok(hold, `still wedged ${Date.now() - started} ms after the other operator froze (${failures} calls failed)`);
  } finally {
    child.kill("SIGKILL");
  }
});

test("postgresql: a password rotated in its file is picked up at the server's refusal, without a restart; the hold keeps its token", async () => {
  const id = randomUUID().slice(0, 8);
  const [first, second] = [`first-pg-pw-${randomUUID()}`, `second-pg-pw-${randomUUID()}`];
  const role = await passwordRole(`kubelock_rotating_${id}`, first);
  // The server checks the password: a wrong one is refused.
  const wrongUrl = new URL(role.url);
  wrongUrl.password = "not-the-password";
  const wrong = new pg.Client({ connectionString: wrongUrl.toString() });
  await assert.rejects(wrong.connect(), (err: Error & { code?: string }) => err.code === "28P01");
  const passwordFile = path.join(tempDir("kubelock-pg-password-"), "password");
  /** Replaces the file as the kubelet does (a rename). */
  const mount = (password: string) => {
    writeFileSync(`${passwordFile}.new`, `${password}\n`);
    renameSync(`${passwordFile}.new`, passwordFile);
  };
  mount(first);
  const b = await backend({ url: role.url, passwordFile, table: `kubelock_rotating_${id}` });
  const key = `pg-${id}/rotation`;
  const hold = await b.tryAcquire(holdRequest(key, "a", { leaseDurationSeconds: 60 }));
  assert.ok(hold);
  // The server first: the role's password changes and its sessions end (a restart, a failover); logins with the
  // old password are refused, saying what to check and never quoting a password.
  await role.setPassword(second);
  await role.endSessions();
  const refusal = await eventually("a refusal of the old password", () => b.renew(key, hold.holderId, 60).then(() => undefined, (err: Error) => {
    if (err instanceof BackendUnavailableError) return /refused the login/.test(err.message) ? err : undefined; // or a session that ended
    throw err;
  }), 15_000);
  assert.match(refusal.message, /refused the login of role "kubelock_rotating_\w+": wrong password in postgresql\.passwordFile/);
  for (const password of [first, second]) assert.ok(!`${refusal.message}${refusal.stack}`.includes(password), "a password in the refusal");
  // Then the Secret: the next refusal makes the backend read the file again, and the next login uses it.
  mount(second);
  const renewed = await eventually("a renewal with the new password", () => b.renew(key, hold.holderId, 60).catch((err: Error) => {
    if (err instanceof BackendUnavailableError) return undefined;
    throw err;
  }), 20_000);
  assert.ok(renewed, "the hold was lost across the rotation");
  assert.equal(renewed.fencingToken, hold.fencingToken, "the renewed hold has another token");
  assert.ok(await b.tryAcquire(holdRequest(`pg-${id}/after-rotation`, "b")), "no new grant with the new password");
});
