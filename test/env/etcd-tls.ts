/**
 * An etcd for locks as production runs it: clients reach it only over TLS with a client certificate signed by
 * its CA (`--client-cert-auth`), and authentication is enabled (a `root` user with the root role, password
 * random). It has its own CA, a serving certificate for 127.0.0.1 and one client certificate (CN
 * kubelock-test-client, which is no etcd user: clients authenticate by password). A test file starts one of its
 * own (the environment's plain etcd stays as it is); it can be stopped and started again on the same port and
 * data, and is removed by `destroy()`. Tokens are etcd's default simple tokens (kept in memory: a restart or a
 * password change invalidates them), or with `jwt` signed JWTs, which carry the auth store's revision: etcd then
 * refuses every token issued before a change of its users or roles as old.
 *
 * Client certificate rotation: `newClientCertificate()` issues a client certificate from a new CA of its own, and
 * `trustOnly(files)` restarts the server trusting client certificates of that CA only, so the old one is refused.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Etcd3, Range, type IOptions } from "etcd3";
import { issue, makeCa, newClientCertificate } from "./certs";
import { controlPlaneBinaries } from "./controlplane";
import { freePort, ManagedProcess, runCommand } from "./process";

/** PEM files of a client: the CA to trust, its certificate and key. */
export interface ClientTlsFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
}

/** A client certificate from a CA of its own (`issuerFile`, what the server must trust to accept it). */
export interface IssuedClientFiles extends ClientTlsFiles {
  issuerFile: string;
}

export class TlsEtcd {
  /** Starts the server with authentication enabled; resolves once root can use it. */
  static async start(options: { jwt?: boolean } = {}): Promise<TlsEtcd> {
    const dir = mkdtempSync(join(tmpdir(), "kubelock-etcd-tls-"));
    try {
      const [binDir, client, peer] = [await controlPlaneBinaries(), await freePort(), await freePort()];
      const etcd = new TlsEtcd(dir, join(binDir, "etcd"), client, peer === client ? await freePort() : peer, options.jwt ?? false);
      await makeTlsFiles(dir);
      if (options.jwt) {
        await runCommand("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", join(dir, "jwt.key")]);
        await runCommand("openssl", ["ec", "-in", join(dir, "jwt.key"), "-pubout", "-out", join(dir, "jwt.pub")]);
      }
      await etcd.start();
      await etcd.enableAuth();
      return etcd;
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** root's password (root may do anything; tests set up users and roles with it). */
  readonly rootPassword = `root-${randomBytes(12).toString("hex")}`;
  private process?: ManagedProcess;
  private authEnabled = false;
  private launches = 0;
  private client: ClientTlsFiles;
  /** The CA whose client certificates the server accepts. */
  private trustedCaFile: string;

  private constructor(private readonly dir: string, private readonly binary: string, private readonly clientPort: number, private readonly peerPort: number,
    private readonly jwt: boolean) {
    this.client = { caFile: join(dir, "ca.crt"), certFile: join(dir, "client.crt"), keyFile: join(dir, "client.key") };
    this.trustedCaFile = join(dir, "ca.crt");
  }

  /** https://127.0.0.1:PORT */
  get endpoint(): string {
    return `https://127.0.0.1:${this.clientPort}`;
  }

  /** The client certificate and key the server accepts, and the CA that signed the server's certificate. */
  get clientTls(): ClientTlsFiles {
    return { ...this.client };
  }

  /** A client certificate (CN kubelock-test-client) from a new CA of its own, which the server does not trust yet. */
  async newClientCertificate(): Promise<IssuedClientFiles> {
    return { caFile: join(this.dir, "ca.crt"), ...(await newClientCertificate(this.dir, "/CN=kubelock-test-client")) };
  }

  /** Restarts the server accepting client certificates of `files.issuerFile` only (`admin()` then uses `files`). */
  async trustOnly(files: IssuedClientFiles): Promise<void> {
    await this.stop(500); // etcd's graceful stop waits seconds for open client streams; clients see a crash either way
    this.trustedCaFile = files.issuerFile;
    this.client = { caFile: files.caFile, certFile: files.certFile, keyFile: files.keyFile };
    await this.start();
  }

  /** etcd3 options for a client of this server (with `files`, by default the accepted client certificate), authenticating as `auth` if given. */
  clientOptions(auth?: { username: string; password: string }, files = this.client): IOptions {
    return {
      hosts: this.endpoint,
      auth,
      credentials: { rootCertificate: readFileSync(files.caFile), certChain: readFileSync(files.certFile), privateKey: readFileSync(files.keyFile) },
      defaultCallOptions: (call) => (call.isStream ? {} : { deadline: Date.now() + 5000 }),
    };
  }

  /** A root client (close it when done). */
  admin(): Etcd3 {
    return new Etcd3(this.clientOptions({ username: "root", password: this.rootPassword }));
  }

  /** A user `name` (password `password`) whose role `name` may read and write the keys under `prefix`, and nothing else. */
  async addUser(name: string, password: string, prefix: string): Promise<void> {
    const admin = this.admin();
    try {
      await admin.role(name).create();
      await admin.role(name).grant({ permission: "Readwrite", range: Range.prefix(prefix) });
      await admin.user(name).create(password);
      await admin.user(name).addRole(name);
    } finally {
      admin.close();
    }
  }

  /** Starts the server (again, on the same port and data) and waits until it answers. */
  async start(): Promise<void> {
    if (this.process?.running) return;
    const name = "lock-etcd-tls";
    const n = this.launches++;
    const peerUrl = `http://127.0.0.1:${this.peerPort}`;
    this.process = new ManagedProcess(name, this.binary, [
      `--name=${name}`,
      `--data-dir=${join(this.dir, "data")}`,
      `--listen-client-urls=${this.endpoint}`,
      `--advertise-client-urls=${this.endpoint}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=${name}=${peerUrl}`,
      "--initial-cluster-state=new",
      `--cert-file=${join(this.dir, "server.crt")}`,
      `--key-file=${join(this.dir, "server.key")}`,
      `--trusted-ca-file=${this.trustedCaFile}`,
      "--client-cert-auth",
      // Cheap password checks: a test opens dozens of clients, which all authenticate again after a restart.
      "--bcrypt-cost=4",
      ...(this.jwt ? [`--auth-token=jwt,pub-key=${join(this.dir, "jwt.pub")},priv-key=${join(this.dir, "jwt.key")},sign-method=ES256`] : []),
      "--unsafe-no-fsync=true",
      "--log-level=warn",
    ], join(this.dir, n === 0 ? `${name}.log` : `${name}.restart-${n}.log`));
    await this.process.waitUntil(`${name} to serve`, () => this.serving(), 60_000);
  }

  /** SIGTERM, then SIGKILL after `graceMs` (default: ManagedProcess's). */
  async stop(graceMs?: number): Promise<void> {
    await this.process?.stop(graceMs);
    this.process = undefined;
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Status answers (as root once authentication is on: etcd then wants to know who asks). */
  private async serving(): Promise<boolean> {
    const client = this.authEnabled ? this.admin() : new Etcd3(this.clientOptions());
    try {
      await client.maintenance.status();
      return true;
    } finally {
      client.close();
    }
  }

  private async enableAuth(): Promise<void> {
    const client = new Etcd3(this.clientOptions());
    try {
      await client.user("root").create(this.rootPassword);
      await client.user("root").addRole("root");
      await client.auth.authEnable();
    } finally {
      client.close();
    }
    this.authEnabled = true;
  }
}

/** A CA, a serving certificate for 127.0.0.1/localhost and a client certificate (EC P-256 keys), in `dir`. */
async function makeTlsFiles(dir: string): Promise<void> {
  await makeCa(dir, "ca");
  await issue(dir, "ca", "server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  await issue(dir, "ca", "client", "/CN=kubelock-test-client", "extendedKeyUsage=clientAuth\n");
}
