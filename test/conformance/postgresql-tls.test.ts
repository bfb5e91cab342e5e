/**
 * The PostgreSQL backend over TLS with client certificate authentication, against a server of this file's own
 * (Debian's PostgreSQL: ssl on, `hostssl ... cert`, the role named by the certificate's CN): the shared conformance
 * suite (with the outage case), then a client certificate rotated to one from a new CA, which the server comes to
 * trust alone: the backend reads its `tls` files again, without a restart, and the hold keeps its fencing token.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { chmodSync, chownSync, copyFileSync, existsSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import pg from "pg";
import { BackendUnavailableError, type LockBackend } from "../../src/backends/backend";
import { createBackend } from "../../src/backends/registry";
import { issue, makeCerts, newClientCertificate, type ControlPlaneCerts } from "../env/certs";
import { freePort, ManagedProcess, runCommand } from "../env/process";
import { eventually, kubeConfig } from "../support/env";
import { tempDir } from "../support/temp";
import { holdRequest, runBackendConformance } from "./backend-conformance";

/** The role the client certificates name (CN) and log in as. */
const ROLE = "kubelock_tls";

/** A PostgreSQL program of the newest installed major version (Debian keeps them in /usr/lib/postgresql/N/bin). */
function pgBin(program: string): string {
  const versions = existsSync("/usr/lib/postgresql") ? readdirSync("/usr/lib/postgresql").filter((v) => /^\d+$/.test(v)) : [];
  if (versions.length === 0) throw new Error("PostgreSQL is missing: install Debian's postgresql (hack/deps.sh)");
  return join("/usr/lib/postgresql", versions.sort((a, b) => Number(b) - Number(a))[0], "bin", program);
}

/**
 * PostgreSQL on loopback taking TLS connections with client certificates only (`hostssl all all 127.0.0.1/32 cert`)
 * and trusting, on its Unix socket, the `postgres` role (the test's own admin connection). Run as Debian's
 * `postgres` user, which owns its directory (the server refuses to run as root and to read a key others can read).
 */
class TlsPostgres {
  static async create(): Promise<TlsPostgres> {
    const dir = tempDir("kubelock-pg-tls-");
    const certs = await makeCerts(dir);
    await issue(dir, "ca", "client", `/CN=${ROLE}`, "extendedKeyUsage=clientAuth\n");
    const [uid, gid] = await Promise.all([runCommand("id", ["-u", "postgres"]), runCommand("id", ["-g", "postgres"])]).then((ids) => ids.map((n) => Number(n.trim())));
    const server = new TlsPostgres(dir, certs, await freePort(), uid, gid);
    await server.init();
    return server;
  }
  private process?: ManagedProcess;
  private launches = 0;
  /** The CA the server trusts for client certificates: rewritten by `trustOnly`. */
  private readonly trusted: string;
  private constructor(private readonly dir: string, readonly certs: ControlPlaneCerts, readonly port: number, private readonly uid: number, private readonly gid: number) {
    this.trusted = join(dir, "trusted-client-ca.crt");
  }
  /** The client certificate and key from the first CA, for `ROLE`. */
  get firstClient(): { certFile: string; keyFile: string } {
    return { certFile: join(this.dir, "client.crt"), keyFile: join(this.dir, "client.key") };
  }
  get url(): string {
    return `postgres://${ROLE}@127.0.0.1:${this.port}/postgres`;
  }
  private get data(): string {
    return join(this.dir, "data");
  }
  private asPostgres(): string[] {
    return [`--reuid=${this.uid}`, `--regid=${this.gid}`, "--clear-groups", "--"];
  }
  private async init(): Promise<void> {
    copyFileSync(this.certs.caCert, this.trusted);
    for (const file of readdirSync(this.dir)) chownSync(join(this.dir, file), this.uid, this.gid);
    chownSync(this.dir, this.uid, this.gid);
    chmodSync(this.certs.servingKey, 0o600);
    await runCommand("setpriv", [...this.asPostgres(), pgBin("initdb"), "-D", this.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
    const hba = join(this.data, "pg_hba.conf");
    writeFileSync(hba, `hostssl all all 127.0.0.1/32 cert\nlocal all postgres trust\n`);
    writeFileSync(join(this.data, "postgresql.conf"), [
      readFileSync(join(this.data, "postgresql.conf"), "utf8"), "ssl = on",
      `ssl_cert_file = '${this.certs.servingCert}'`, `ssl_key_file = '${this.certs.servingKey}'`, `ssl_ca_file = '${this.trusted}'`, "",
    ].join("\n"));
    await this.start();
    await this.admin(async (sql) => {
      await sql.query(`CREATE ROLE ${ROLE} LOGIN`);
      await sql.query(`GRANT CREATE ON SCHEMA public TO ${ROLE}`);
    });
  }
  async start(): Promise<void> {
    if (this.process?.running) return;
    const n = this.launches++;
    const server = new ManagedProcess("postgresql-tls", "setpriv", [...this.asPostgres(), pgBin("postgres"), "-D", this.data,
      "-p", String(this.port), "-h", "127.0.0.1", "-k", this.dir, "-c", "fsync=off"], join(this.dir, n === 0 ? "postgresql.log" : `postgresql.restart-${n}.log`));
    server.stopSignal = "SIGINT"; // fast shutdown
    this.process = server;
    await server.waitUntil("postgresql-tls to serve", () => runCommand(pgBin("pg_isready"), ["-h", this.dir, "-p", String(this.port), "-U", "postgres"]).then(() => true), 60_000);
  }
  async stop(): Promise<void> {
    await this.process?.stop();
    this.process = undefined;
  }
  /** `use` with a connection as `postgres` over the Unix socket (trusted, no TLS). */
  async admin<T>(use: (sql: pg.Client) => Promise<T>): Promise<T> {
    const sql = new pg.Client({ host: this.dir, port: this.port, user: "postgres", database: "postgres" });
    await sql.connect();
    try {
      return await use(sql);
    } finally {
      await sql.end();
    }
  }
  /**
   * The server trusts client certificates of `issuerFile` only, from now on (its ssl_ca_file rewritten, the
   * configuration reloaded) and ends every session of ROLE, as a restart would: they reconnect with whatever
   * certificate they have.
   */
  async trustOnly(issuerFile: string): Promise<void> {
    writeFileSync(this.trusted, readFileSync(issuerFile));
    await this.admin(async (sql) => {
      await sql.query("SELECT pg_reload_conf()");
      await sql.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", [ROLE]);
    });
  }
  /** Whether the server accepts a TLS login as ROLE with this certificate and key. */
  async accepts(files: { certFile: string; keyFile: string }): Promise<boolean> {
    const client = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: 3000,
      ssl: { ca: readFileSync(this.certs.caCert), cert: readFileSync(files.certFile), key: readFileSync(files.keyFile) } });
    client.on("error", () => undefined);
    try {
      await client.connect();
      await client.query("SELECT 1");
      return true;
    } catch {
      return false;
    } finally {
      // end() of a client whose handshake failed may never settle
      await Promise.race([client.end().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 1000))]);
    }
  }
}

let started: Promise<TlsPostgres> | undefined;
const tlsServer = () => (started ??= TlsPostgres.create());
const opened: LockBackend[] = [];
after(async () => {
  await Promise.allSettled(opened.map((b) => b.close()));
  if (started) await (await started).stop();
});

/** A backend over TLS with the client certificate in `files` (the first CA's by default). */
async function backend(files?: { caFile: string; certFile: string; keyFile: string }, settings: Record<string, unknown> = {}): Promise<LockBackend> {
  const server = await tlsServer();
  const tls = files ?? { caFile: server.certs.caCert, ...server.firstClient };
  const b = await createBackend({ name: "postgresql-tls", type: "postgresql", kubeConfig: kubeConfig(), settings: { url: server.url, tls, ...settings } });
  opened.push(b);
  return b;
}

runBackendConformance("postgresql-tls", () => backend(), {
  supportsExpiry: true,
  minLeaseSeconds: 1,
  stopServer: async () => (await tlsServer()).stop(),
  startServer: async () => (await tlsServer()).start(),
});

test("postgresql-tls: a client certificate rotated to one from a new CA is picked up without a restart; the hold keeps its token", { timeout: 90_000 }, async () => {
  const server = await tlsServer();
  const id = randomUUID().slice(0, 8);
  // The backend's own copies of the files, replaced as the kubelet replaces a mounted Secret's (a rename).
  const mountDir = tempDir("kubelock-pg-tls-mount-");
  const files = { caFile: join(mountDir, "ca.crt"), certFile: join(mountDir, "tls.crt"), keyFile: join(mountDir, "tls.key") };
  const mount = (from: { certFile: string; keyFile: string }) => {
    for (const [source, target] of [[from.certFile, files.certFile], [from.keyFile, files.keyFile]]) {
      writeFileSync(`${target}.new`, readFileSync(source));
      renameSync(`${target}.new`, target);
    }
  };
  copyFileSync(server.certs.caCert, files.caFile);
  mount(server.firstClient);
  const b = await backend(files, { table: `kubelock_tls_${id}` });
  const key = `pg-${id}/tls-rotation`;
  const hold = await b.tryAcquire(holdRequest(key, "a", { leaseDurationSeconds: 60 }));
  assert.ok(hold);

  // The server first: it trusts only a new CA, and the sessions end; the old certificate is refused from then on.
  const next = await newClientCertificate(mountDir, `/CN=${ROLE}`);
  await server.trustOnly(next.issuerFile);
  await eventually("the server refusing the old certificate", async () => ((await server.accepts(server.firstClient)) ? undefined : true), 10_000);
  assert.ok(await server.accepts(next), "the server does not accept the new certificate");
  const failure = await eventually("a renewal failing with the old certificate", () => b.renew(key, hold.holderId, 60).then(() => undefined, (err: Error) => {
    if (err instanceof BackendUnavailableError) return err;
    throw err;
  }), 15_000);
  assert.ok(!/BEGIN|PRIVATE KEY/.test(`${failure.message}${failure.stack}`), "certificate material in the error");

  // Then the Secret: the next failed connection makes the backend read the files again, and the next one uses them.
  mount(next);
  const renewed = await eventually("a renewal with the new certificate", () => b.renew(key, hold.holderId, 60).catch((err: Error) => {
    if (err instanceof BackendUnavailableError) return undefined;
    throw err;
  }), 20_000);
  assert.ok(renewed, "the hold was lost across the rotation");
  assert.equal(renewed.fencingToken, hold.fencingToken, "the renewed hold has another token");
  assert.ok(await b.tryAcquire(holdRequest(`pg-${id}/after-rotation`, "b")), "no new grant with the new certificate");
  // Watches work on the new certificate too: the release is heard.
  let heard = 0;
  const stop = b.watch(key, () => heard++);
  try {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const before = heard;
    assert.equal(await b.release(key, hold.holderId), true);
    await eventually("the release heard by the watch", () => (heard > before ? true : undefined), 10_000);
  } finally {
    stop();
  }
});
