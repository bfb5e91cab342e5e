/**
 * The lock backends' servers for tests and the demo, each on a free loopback port in its own temporary
 * directory: Redis (Debian `redis-server`), ZooKeeper (Debian `zookeeper`, run with its own config
 * file) and an etcd for locks (the built binary). Each can be stopped and started again on the same
 * port and data, so tests can take a server away and bring it back.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startEtcd } from "./controlplane";
import { freePort, ManagedProcess } from "./process";

export interface Service {
  /** What clients connect to: a URL or host:port list. */
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

abstract class LocalService implements Service {
  protected process?: ManagedProcess;
  protected readonly dir: string;
  private paused = false;
  constructor(readonly name: string, readonly port: number) {
    this.dir = mkdtempSync(join(tmpdir(), `kubelock-${name}-`));
  }
  abstract get address(): string;
  abstract start(): Promise<void>;
  async stop(): Promise<void> {
    await this.resume(); // a stopped (SIGSTOP) process would only die by SIGKILL, without a clean shutdown
    await this.process?.stop();
    this.process = undefined;
  }
  async pause(): Promise<void> {
    const pid = this.process?.running ? this.process.pid : undefined;
    if (pid === undefined) throw new Error(`${this.name} is not running`);
    globalThis.process.kill(pid, "SIGSTOP");
    this.paused = true;
  }
  async resume(): Promise<void> {
    if (!this.paused) return;
    this.paused = false;
    const pid = this.process?.running ? this.process.pid : undefined;
    if (pid !== undefined) globalThis.process.kill(pid, "SIGCONT");
  }
  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export class RedisService extends LocalService {
  /** `persistent`: an append-only file fsynced on every write, so a restart keeps holds and fencing counters. */
  static async create(options: { persistent?: boolean } = {}): Promise<RedisService> {
    const service = new RedisService("redis", await freePort());
    service.persistent = options.persistent ?? false;
    return service;
  }
  private persistent = false;
  get address(): string {
    return `redis://127.0.0.1:${this.port}`;
  }
  async start(): Promise<void> {
    this.process = new ManagedProcess("redis-server", "redis-server", [
      "--bind", "127.0.0.1", "--port", String(this.port), "--dir", this.dir,
      "--save", "", "--appendonly", this.persistent ? "yes" : "no", ...(this.persistent ? ["--appendfsync", "always"] : []),
      "--protected-mode", "yes",
      // Keyspace notifications for expired and deleted keys wake waiters without polling.
      "--notify-keyspace-events", "Kgx",
    ], join(this.dir, "redis.log"));
    await this.process.waitUntil("PING", () => ask(this.port, "PING\r\n", "+PONG"), 30_000);
  }
}

export class ZooKeeperService extends LocalService {
  static async create(): Promise<ZooKeeperService> {
    return new ZooKeeperService("zookeeper", await freePort());
  }
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }
  async start(): Promise<void> {
    const config = join(this.dir, "zoo.cfg");
    writeFileSync(config, [
      "tickTime=500",
      `dataDir=${join(this.dir, "data")}`,
      `clientPort=${this.port}`,
      "clientPortAddress=127.0.0.1",
      "admin.enableServer=false",
      "minSessionTimeout=1000",
      "maxSessionTimeout=60000",
      "4lw.commands.whitelist=ruok,srvr",
      "",
    ].join("\n"));
    this.process = new ManagedProcess("zookeeper", "java", [
      `-Dzookeeper.log.dir=${this.dir}`,
      "-Xmx256m",
      "-cp", zookeeperClasspath(),
      "org.apache.zookeeper.server.quorum.QuorumPeerMain", config,
    ], join(this.dir, "zookeeper.log"));
    await this.process.waitUntil("ruok", () => ask(this.port, "ruok", "imok"), 60_000);
  }
}

export class EtcdService extends LocalService {
  private ports?: { client: number; peer: number };
  private constructor(private readonly binDir: string) {
    super("lock-etcd", 0);
  }
  static async create(binDir: string): Promise<EtcdService> {
    return new EtcdService(binDir);
  }
  get address(): string {
    if (!this.ports) throw new Error("lock etcd not started yet");
    return `http://127.0.0.1:${this.ports.client}`;
  }
  async start(): Promise<void> {
    const started = await startEtcd(this.binDir, this.dir, "lock-etcd", this.ports);
    this.process = started.process;
    this.ports = started.ports;
  }
}

function zookeeperClasspath(): string {
  const jar = "/usr/share/java/zookeeper.jar";
  if (!existsSync(jar)) throw new Error(`${jar} not found: install the Debian package zookeeper (make deps does)`);
  return jar;
}

/** Sends `request` to a loopback TCP port and checks the reply starts with `expect`. */
function ask(port: number, request: string, expect: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    let reply = "";
    const finish = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => finish(false));
    socket.on("connect", () => socket.write(request));
    socket.on("data", (d) => {
      reply += d;
      if (reply.length >= expect.length) finish(reply.startsWith(expect));
    });
    socket.on("error", () => finish(false));
    socket.on("end", () => finish(reply.startsWith(expect)));
  });
}
