/**
 * Redis as platform teams run it, for the Redis backend's tests, each on free loopback ports in a temporary
 * directory of its own (Debian `redis-server`; a sentinel is `redis-server CONFIG --sentinel`, what the
 * `redis-sentinel` command runs):
 * - `TlsRedis`: TLS only (`--port 0 --tls-port`), client certificates required (`--tls-auth-clients yes`),
 *   with a CA, a serving certificate for 127.0.0.1 and a client certificate made by certs.ts;
 * - `SentinelRedis`: one master, one replica and three sentinels watching the master as `kubelock-master`
 *   (quorum 2, a server is down after 1 s unanswered).
 * The test file that starts one destroys it; its processes are in the test runner's process group anyway.
 */
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect as connectTcp } from "node:net";
import { connect as connectTls, type ConnectionOptions } from "node:tls";
import { join } from "node:path";
import { makeCerts, type ControlPlaneCerts } from "./certs";
import { freePort, ManagedProcess } from "./process";
import { tempDir } from "../support/temp";

/** One redis-server process (a server or a sentinel), restartable on the same port and directory. */
class RedisProcess {
  private process?: ManagedProcess;
  private launches = 0;
  constructor(readonly name: string, readonly port: number, private readonly dir: string, private readonly args: () => string[],
    private readonly serving: () => Promise<boolean>) {}
  /** The current run's log (NAME.log, then NAME.restart-N.log). */
  get logFile(): string {
    return join(this.dir, this.launches <= 1 ? `${this.name}.log` : `${this.name}.restart-${this.launches - 1}.log`);
  }
  get running(): boolean {
    return this.process?.running ?? false;
  }
  async start(): Promise<void> {
    if (this.running) return;
    this.launches++;
    this.process = new ManagedProcess(this.name, "redis-server", this.args(), this.logFile);
    await this.process.waitUntil(`${this.name} to serve`, this.serving, 30_000);
  }
  async stop(): Promise<void> {
    await this.process?.stop();
    this.process = undefined;
  }
  /** Every log this process wrote so far, for checks on what it logged. */
  logs(): string {
    return Array.from({ length: this.launches }, (_, i) => join(this.dir, i === 0 ? `${this.name}.log` : `${this.name}.restart-${i}.log`))
      .map((file) => readFileSync(file, "utf8")).join("\n");
  }
}

/** Sends `request` over `socket` once connected and resolves whether the reply passes `ok` (false on any error or after 2 s). */
function ask(open: () => ReturnType<typeof connectTcp>, ready: "connect" | "secureConnect", request: string, ok: (reply: string) => boolean): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = open();
    let reply = "";
    const finish = (result: boolean) => {
      socket.destroy();
      resolve(result);
    };
    socket.setTimeout(2000, () => finish(false));
    socket.on(ready, () => socket.write(request));
    socket.on("data", (d) => {
      reply += d;
      if (ok(reply)) finish(true);
    });
    socket.on("error", () => finish(false));
    socket.on("end", () => finish(ok(reply)));
  });
}

const plainAsk = (port: number, request: string, ok: (reply: string) => boolean) => ask(() => connectTcp(port, "127.0.0.1"), "connect", request, ok);

/** Arguments every server here shares: loopback, no persistence, its own directory. */
const serverArgs = (dir: string) => ["--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no", "--protected-mode", "no"];

export class TlsRedis {
  static async create(): Promise<TlsRedis> {
    const dir = tempDir("kubelock-redis-tls-");
    const certs = await makeCerts(dir);
    return new TlsRedis(dir, certs, await freePort());
  }
  private readonly server: RedisProcess;
  private constructor(private readonly dir: string, readonly certs: ControlPlaneCerts, readonly port: number) {
    this.server = new RedisProcess("redis-tls", port, dir, () => [
      ...serverArgs(dir), "--port", "0", "--tls-port", String(port),
      "--tls-cert-file", certs.servingCert, "--tls-key-file", certs.servingKey, "--tls-ca-cert-file", certs.caCert, "--tls-auth-clients", "yes",
    ], () => ask(() => connectTls({ host: "127.0.0.1", port, ...this.clientTls() }), "secureConnect", "PING\r\n", (r) => r.startsWith("+PONG")));
  }
  /** What a client needs: the CA, and the client certificate the server asks for. */
  clientTls(): ConnectionOptions {
    return { ca: readFileSync(this.certs.caCert), cert: readFileSync(this.certs.adminCert), key: readFileSync(this.certs.adminKey) };
  }
  get url(): string {
    return `rediss://127.0.0.1:${this.port}`;
  }
  /** The server's logs so far. */
  logs(): string {
    return this.server.logs();
  }
  start(): Promise<void> {
    return this.server.start();
  }
  stop(): Promise<void> {
    return this.server.stop();
  }
  async destroy(): Promise<void> {
    await this.server.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export const SENTINEL_MASTER = "kubelock-master";

export class SentinelRedis {
  static async create(): Promise<SentinelRedis> {
    const dir = tempDir("kubelock-redis-sentinel-");
    const ports = new Set<number>();
    while (ports.size < 5) ports.add(await freePort());
    const setup = new SentinelRedis(dir, [...ports]);
    try {
      await setup.start();
    } catch (err) {
      await setup.destroy();
      throw err;
    }
    return setup;
  }
  /** The two data servers, master first as started (after a failover, see `master()`). */
  readonly servers: RedisProcess[];
  readonly sentinelProcesses: RedisProcess[];
  private constructor(private readonly dir: string, ports: number[]) {
    const [masterPort, replicaPort, ...sentinelPorts] = ports;
    const pong = (port: number) => () => plainAsk(port, "PING\r\n", (r) => r.startsWith("+PONG"));
    this.servers = [
      new RedisProcess("redis-master", masterPort, dir, () => [...serverArgs(dir), "--port", String(masterPort),
        "--dbfilename", "master.rdb"], pong(masterPort)),
      // Serving once its link to the master is up (a sentinel only promotes a replica it knows to be in sync).
      new RedisProcess("redis-replica", replicaPort, dir, () => [...serverArgs(dir), "--port", String(replicaPort), "--dbfilename", "replica.rdb",
        "--replicaof", "127.0.0.1", String(masterPort)], () => plainAsk(replicaPort, "INFO replication\r\n", (r) => /master_link_status:up/.test(r))),
    ];
    this.sentinelProcesses = sentinelPorts.map((port, i) => {
      const config = join(dir, `sentinel-${i + 1}.conf`);
      // A sentinel rewrites its config file (what it learned): a fresh one at each start from here.
      return new RedisProcess(`sentinel-${i + 1}`, port, dir, () => {
        writeFileSync(config, [
          "bind 127.0.0.1", `port ${port}`, `dir ${dir}`, "protected-mode no",
          `sentinel monitor ${SENTINEL_MASTER} 127.0.0.1 ${masterPort} 2`,
          `sentinel down-after-milliseconds ${SENTINEL_MASTER} 1000`,
          `sentinel failover-timeout ${SENTINEL_MASTER} 10000`,
          `sentinel parallel-syncs ${SENTINEL_MASTER} 1`, "",
        ].join("\n"));
        return [config, "--sentinel"];
      }, () => plainAsk(port, `SENTINEL REPLICAS ${SENTINEL_MASTER}\r\n`, (r) => r.includes(String(replicaPort))));
    });
  }
  /** The sentinels, as the backend's `sentinels` setting lists them. */
  get sentinels(): { host: string; port: number }[] {
    return this.sentinelProcesses.map((s) => ({ host: "127.0.0.1", port: s.port }));
  }
  /** The port of the server the sentinels name as master now. */
  async masterPort(): Promise<number> {
    let reply = "";
    const answered = await plainAsk(this.sentinels[0].port, `SENTINEL GET-MASTER-ADDR-BY-NAME ${SENTINEL_MASTER}\r\n`, (r) => {
      reply = r;
      return /^\*2\r\n\$\d+\r\n[^\r]+\r\n\$\d+\r\n\d+\r\n/.test(r);
    });
    if (!answered) throw new Error(`sentinel-1 named no master: ${JSON.stringify(reply)}`);
    return Number(reply.split("\r\n")[4]);
  }
  /** Every process's logs so far. */
  logs(): string {
    return [...this.servers, ...this.sentinelProcesses].map((p) => p.logs()).join("\n");
  }
  async start(): Promise<void> {
    for (const server of this.servers) await server.start();
    await Promise.all(this.sentinelProcesses.map((s) => s.start()));
  }
  async destroy(): Promise<void> {
    await Promise.all([...this.sentinelProcesses, ...this.servers].map((p) => p.stop()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}
