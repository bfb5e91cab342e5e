/**
 * The lock backends' servers for tests and the demo, each on free loopback ports in its own temporary
 * directory: Redis (Debian `redis-server`), ZooKeeper (Debian `zookeeper`, run with its own config
 * file), an etcd for locks (the built binary) and PostgreSQL (Debian `postgresql`, run as its `postgres` user). Each can be stopped and started again on the same
 * port and data, so tests can take a server away and bring it back. ZooKeeper and etcd also come as
 * 3-member clusters (`ZooKeeperService.ensemble`, `EtcdService.cluster`) whose members can be taken away
 * one by one.
 */
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { etcdEndpoint, etcdHealthy, launchEtcd, type EtcdMember } from "./controlplane";
import { freePort, ManagedProcess, runCommand } from "./process";

export interface Service {
  /** What clients connect to: a URL or host:port, or a comma-separated list of them (a cluster's members). */
  readonly address: string;
  start(): Promise<void>;
  /** Stops the server; `start()` brings it back on the same address with the same data. */
  stop(): Promise<void>;
  /** Stops the server and removes its directory. */
  destroy(): Promise<void>;
  /**
   * SIGSTOP: the server freezes with its connections and data as they are (a hung server, or one cut
   * off by a partition, as clients see it); `resume()` (SIGCONT) lets it carry on where it was.
   */
  pause(): Promise<void>;
  resume(): Promise<void>;
}

/** A replicated server whose members (numbered from 1) can be stopped and started one by one. */
export interface Members {
  readonly members: number;
  /** Stops member `i`; the others go on (without a majority they stop serving). */
  stopMember(i: number): Promise<void>;
  /** Starts member `i` again on the same ports and data. */
  startMember(i: number): Promise<void>;
}

/** `pid` and its descendants, parents first (from /proc). */
function processTree(pid: number): number[] {
  const children: number[] = [];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      children.push(...readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").split(/\s+/).filter(Boolean).map(Number));
    }
  } catch {
    // gone meanwhile
  }
  return [pid, ...children.flatMap(processTree)];
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    globalThis.process.kill(pid, name);
  } catch {
    // a child that ended meanwhile
  }
}

export function hasMembers(service: Service): service is Service & Members {
  return service instanceof ClusterService;
}

abstract class LocalService implements Service {
  protected process?: ManagedProcess;
  private paused = false;
  private launches = 0;
  /** `dir` holds its data and logs: a fresh temporary directory unless given. */
  constructor(readonly name: string, protected readonly dir = mkdtempSync(join(tmpdir(), `kubelock-${name}-`))) {
    mkdirSync(dir, { recursive: true });
  }
  abstract get address(): string;
  /** Spawns the server, logging to `logFile`, without waiting for it. */
  protected abstract launch(logFile: string): ManagedProcess;
  /** Whether it serves clients (a cluster member: as part of a quorum). */
  protected abstract serving(): Promise<boolean>;
  get running(): boolean {
    return this.process?.running ?? false;
  }
  async start(): Promise<void> {
    this.spawn();
    await this.ready();
  }
  /** Spawns the server unless it runs; each run has its own log (NAME.log, then NAME.restart-N.log). */
  spawn(): void {
    if (this.running) return;
    const n = this.launches++;
    this.paused = false;
    this.process = this.launch(join(this.dir, n === 0 ? `${this.name}.log` : `${this.name}.restart-${n}.log`));
  }
  /** Waits until it serves, failing early with its log's tail if it exits. */
  async ready(): Promise<void> {
    if (!this.process) throw new Error(`${this.name} was never started`);
    await this.process.waitUntil(`${this.name} to serve`, () => this.serving(), 60_000);
  }
  async stop(): Promise<void> {
    await this.resume(); // a stopped (SIGSTOP) process would only die by SIGKILL, without a clean shutdown
    await this.process?.stop();
    this.process = undefined;
  }
  /** SIGSTOPs the server with every process it forked (PostgreSQL serves each connection from a child of its own). */
  async pause(): Promise<void> {
    const pid = this.process?.running ? this.process.pid : undefined;
    if (pid === undefined) throw new Error(`${this.name} is not running`);
    this.paused = true;
    for (const p of processTree(pid)) signal(p, "SIGSTOP");
  }
  async resume(): Promise<void> {
    if (!this.paused) return;
    this.paused = false;
    const pid = this.process?.running ? this.process.pid : undefined;
    if (pid !== undefined) for (const p of processTree(pid)) signal(p, "SIGCONT");
  }
  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A replicated server on loopback (an etcd cluster, a ZooKeeper ensemble), each member in its own directory
 * under the cluster's: the address lists every member's; start, stop, pause and resume act on all of them.
 */
class ClusterService implements Service, Members {
  /** `size` members made by `member(i, dir)`, i from 1, with `dir` its own directory. */
  static create(name: string, size: number, member: (i: number, dir: string) => LocalService): ClusterService {
    const dir = mkdtempSync(join(tmpdir(), `kubelock-${name}-`));
    return new ClusterService(name, dir, Array.from({ length: size }, (_, i) => member(i + 1, join(dir, `${name}-${i + 1}`))));
  }
  private constructor(readonly name: string, private readonly dir: string, private readonly servers: LocalService[]) {}
  get address(): string {
    return this.servers.map((s) => s.address).join(",");
  }
  get members(): number {
    return this.servers.length;
  }
  /** Starts every member that is not running, all at once (a member serves only once a quorum runs). */
  async start(): Promise<void> {
    for (const server of this.servers) server.spawn();
    await Promise.all(this.servers.map((s) => s.ready()));
  }
  async stop(): Promise<void> {
    await Promise.all(this.servers.map((s) => s.stop()));
  }
  async pause(): Promise<void> {
    const running = this.servers.filter((s) => s.running);
    if (running.length === 0) throw new Error(`${this.name}: no member is running`);
    await Promise.all(running.map((s) => s.pause()));
  }
  async resume(): Promise<void> {
    await Promise.all(this.servers.map((s) => s.resume()));
  }
  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
  async stopMember(i: number): Promise<void> {
    await this.member(i).stop();
  }
  /**
   * Once it runs together with a majority of the members, waits until it serves again (it has rejoined the
   * quorum); with fewer running it cannot serve, so it is only spawned.
   */
  async startMember(i: number): Promise<void> {
    const server = this.member(i);
    server.spawn();
    if (this.servers.filter((s) => s.running).length > this.servers.length / 2) await server.ready();
  }
  private member(i: number): LocalService {
    const server = Number.isInteger(i) && i >= 1 ? this.servers[i - 1] : undefined;
    if (!server) throw new RangeError(`${this.name} has members 1 to ${this.servers.length}, not ${i}`);
    return server;
  }
}

export class RedisService extends LocalService {
  /** `persistent`: an append-only file fsynced on every write, so a restart keeps holds and fencing counters. */
  static async create(options: { persistent?: boolean } = {}): Promise<RedisService> {
    return new RedisService(await freePort(), options.persistent ?? false);
  }
  private constructor(private readonly port: number, private readonly persistent: boolean) {
    super("redis");
  }
  get address(): string {
    return `redis://127.0.0.1:${this.port}`;
  }
  protected launch(logFile: string): ManagedProcess {
    return new ManagedProcess(this.name, "redis-server", [
      "--bind", "127.0.0.1", "--port", String(this.port), "--dir", this.dir,
      "--save", "", "--appendonly", this.persistent ? "yes" : "no", ...(this.persistent ? ["--appendfsync", "always"] : []),
      "--protected-mode", "yes",
      // Keyspace notifications for expired and deleted keys wake waiters without polling.
      "--notify-keyspace-events", "Kgx",
    ], logFile);
  }
  protected serving(): Promise<boolean> {
    return ask(this.port, "PING\r\n", (reply) => reply.startsWith("+PONG"));
  }
  /** Data loss: stops the server, deletes its data (append-only file, snapshot) and starts it again empty. */
  async wipe(): Promise<void> {
    await this.stop();
    for (const data of ["appendonlydir", "dump.rdb"]) rmSync(join(this.dir, data), { recursive: true, force: true });
    await this.start();
  }
}

/**
 * PostgreSQL on loopback with trust authentication for the `postgres` role and one database, `postgres`; roles in
 * the group PASSWORD_LOGIN_GROUP (made by the tests that need it) must log in with their password (scram-sha-256),
 * for tests of password files. The server refuses to run as root, so initdb and the server run as Debian's
 * `postgres` user (setpriv, which execs: signals reach the server itself), and its directory belongs to that user.
 */
/** PostgresService: members of this role log in with a password; the rest of the roles are trusted. */
export const PASSWORD_LOGIN_GROUP = "kubelock_password_login";

export class PostgresService extends LocalService {
  static async create(): Promise<PostgresService> {
    const service = new PostgresService(await freePort());
    await service.init();
    return service;
  }
  private constructor(private readonly port: number) {
    super("postgresql");
  }
  get address(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }
  private get data(): string {
    return join(this.dir, "data");
  }
  private async init(): Promise<void> {
    const { uid, gid } = await postgresUser();
    chownSync(this.dir, uid, gid);
    await runCommand("setpriv", [...asPostgres(uid, gid), pgBin("initdb"), "-D", this.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
    // The first line that matches decides: this one before initdb's trust lines.
    const hba = join(this.data, "pg_hba.conf");
    writeFileSync(hba, `host all +${PASSWORD_LOGIN_GROUP} 127.0.0.1/32 scram-sha-256\n${readFileSync(hba, "utf8")}`);
  }
  protected launch(logFile: string): ManagedProcess {
    const { uid, gid } = postgresIds!;
    const server = new ManagedProcess(this.name, "setpriv", [...asPostgres(uid, gid), pgBin("postgres"), "-D", this.data,
      "-p", String(this.port), "-h", "127.0.0.1", "-k", this.dir, "-c", "fsync=off", "-c", "max_connections=200"], logFile);
    server.stopSignal = "SIGINT"; // fast shutdown: SIGTERM would wait for every client to leave
    return server;
  }
  protected serving(): Promise<boolean> {
    return runCommand(pgBin("pg_isready"), ["-h", "127.0.0.1", "-p", String(this.port), "-U", "postgres"]).then(() => true, () => false);
  }
}

let postgresIds: { uid: number; gid: number } | undefined;
async function postgresUser(): Promise<{ uid: number; gid: number }> {
  const [uid, gid] = (await runCommand("id", ["-u", "postgres"]).then(async (u) => [u, await runCommand("id", ["-g", "postgres"])]).catch(() => {
    throw new Error("the postgres user is missing: install Debian's postgresql (hack/deps.sh)");
  })).map((n) => Number(n.trim()));
  postgresIds = { uid, gid };
  return postgresIds;
}
const asPostgres = (uid: number, gid: number) => [`--reuid=${uid}`, `--regid=${gid}`, "--clear-groups", "--"];
/** A PostgreSQL program of the newest installed major version (Debian keeps them in /usr/lib/postgresql/N/bin). */
function pgBin(program: string): string {
  const versions = existsSync("/usr/lib/postgresql") ? readdirSync("/usr/lib/postgresql").filter((v) => /^\d+$/.test(v)) : [];
  if (versions.length === 0) throw new Error("PostgreSQL is missing: install Debian's postgresql (hack/deps.sh)");
  return join("/usr/lib/postgresql", versions.sort((a, b) => Number(b) - Number(a))[0], "bin", program);
}

/** A member of a ZooKeeper ensemble: its myid and every member's quorum and election ports (by myid - 1). */
interface Quorum {
  id: number;
  peers: { peer: number; election: number }[];
}

export class ZooKeeperService extends LocalService {
  static async create(): Promise<ZooKeeperService> {
    return new ZooKeeperService("zookeeper", await freePort());
  }
  /** An ensemble of `size` members on loopback (each with its own zoo.cfg, myid and data). */
  static async ensemble(size = 3): Promise<Service & Members> {
    const ports = await distinctPorts(3 * size);
    const peers = Array.from({ length: size }, (_, i) => ({ peer: ports[3 * i + 1], election: ports[3 * i + 2] }));
    return ClusterService.create("zookeeper", size, (id, dir) => new ZooKeeperService(`zookeeper-${id}`, ports[3 * (id - 1)], { id, peers }, dir));
  }
  private constructor(name: string, private readonly port: number, private readonly quorum?: Quorum, dir?: string) {
    super(name, dir);
  }
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }
  protected launch(logFile: string): ManagedProcess {
    const config = join(this.dir, "zoo.cfg");
    const data = join(this.dir, "data");
    mkdirSync(data, { recursive: true });
    if (this.quorum) writeFileSync(join(data, "myid"), `${this.quorum.id}\n`);
    writeFileSync(config, [
      "tickTime=500",
      `dataDir=${data}`,
      `clientPort=${this.port}`,
      "clientPortAddress=127.0.0.1",
      "admin.enableServer=false",
      "minSessionTimeout=1000",
      "maxSessionTimeout=60000",
      "4lw.commands.whitelist=ruok,srvr",
      // An ensemble: a follower has 10 ticks (5 s) to connect and sync to a leader, and may lag 5 ticks.
      ...(this.quorum ? ["initLimit=10", "syncLimit=5", ...this.quorum.peers.map((p, i) => `server.${i + 1}=127.0.0.1:${p.peer}:${p.election}`)] : []),
      "",
    ].join("\n"));
    return new ManagedProcess(this.name, "java", [
      `-Dzookeeper.log.dir=${this.dir}`,
      "-Xmx256m",
      "-cp", zookeeperClasspath(),
      "org.apache.zookeeper.server.quorum.QuorumPeerMain", config,
    ], logFile);
  }
  /** `srvr` shows a mode (standalone, leader, follower) only while the server serves: in an ensemble, in a quorum. */
  protected serving(): Promise<boolean> {
    return ask(this.port, "srvr", (reply) => /^Mode: (standalone|leader|follower)$/m.test(reply));
  }
}

export class EtcdService extends LocalService {
  static async create(binDir: string): Promise<EtcdService> {
    const [client, peer] = await distinctPorts(2);
    const member = { name: "lock-etcd", client, peer };
    return new EtcdService(binDir, member, [member]);
  }
  /** A cluster of `size` members on loopback; its address lists their client URLs. */
  static async cluster(binDir: string, size = 3): Promise<Service & Members> {
    const ports = await distinctPorts(2 * size);
    const cluster = Array.from({ length: size }, (_, i): EtcdMember => ({ name: `lock-etcd-${i + 1}`, client: ports[2 * i], peer: ports[2 * i + 1] }));
    return ClusterService.create("lock-etcd", size, (i, dir) => new EtcdService(binDir, cluster[i - 1], cluster, dir));
  }
  private constructor(private readonly binDir: string, private readonly member: EtcdMember, private readonly cluster: EtcdMember[], dir?: string) {
    super(member.name, dir);
  }
  get address(): string {
    return etcdEndpoint(this.member);
  }
  protected launch(logFile: string): ManagedProcess {
    return launchEtcd(this.binDir, this.dir, this.member, this.cluster, logFile);
  }
  protected serving(): Promise<boolean> {
    return etcdHealthy(this.member);
  }
}

/** `n` different loopback ports that were free a moment ago. */
async function distinctPorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

function zookeeperClasspath(): string {
  const jar = "/usr/share/java/zookeeper.jar";
  if (!existsSync(jar)) throw new Error(`${jar} not found: install the Debian package zookeeper (make deps does)`);
  return jar;
}

/** Sends `request` to a loopback TCP port and checks the reply (as it arrives, and once the server closes). */
function ask(port: number, request: string, ok: (reply: string) => boolean): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    let reply = "";
    const finish = (result: boolean) => {
      socket.destroy();
      resolve(result);
    };
    socket.setTimeout(1000, () => finish(false));
    socket.on("connect", () => socket.write(request));
    socket.on("data", (d) => {
      reply += d;
      if (ok(reply)) finish(true);
    });
    socket.on("error", () => finish(false));
    socket.on("end", () => finish(ok(reply)));
  });
}
