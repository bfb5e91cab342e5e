/**
 * Redis as platform teams run it, for the Redis backend's tests, each on free loopback ports in a temporary
 * directory of its own (Debian `redis-server`; a sentinel is `redis-server CONFIG --sentinel`, what the
 * `redis-sentinel` command runs):
 * - `TlsRedis`: TLS only (`--port 0 --tls-port`), client certificates required (`--tls-auth-clients yes`),
 *   with a CA, a serving certificate for 127.0.0.1 and a client certificate made by certs.ts; for client
 *   certificate rotation, a client certificate from a new CA (`newClientCertificate`) that the server comes to
 *   trust alone (`trustOnly`: reconfigured at run time, its data kept, every connection dropped);
 * - `SentinelRedis`: one master, one replica and three sentinels watching the master as `kubelock-master`
 *   (quorum 2, a server is down after 1 s unanswered), and a failover as a master's crash or hang causes it
 *   (`failMaster`), the old master rejoining as a replica of the new one;
 * - `ClusterRedis`: a Redis Cluster of three masters (no replicas), the slots split in three ranges, and what
 *   `redis-cli --cluster reshard` does to move one slot, in steps a test can act between.
 * The test file that starts one destroys it; its processes are in the test runner's process group anyway.
 */
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect as connectTcp } from "node:net";
import { connect as connectTls, type ConnectionOptions } from "node:tls";
import { join } from "node:path";
import { makeCerts, newClientCertificate, type ControlPlaneCerts } from "./certs";
import { freePort, ManagedProcess, runCommand } from "./process";
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
    if (this.process?.running) this.signal("SIGCONT"); // a hung (SIGSTOP) server ends only by SIGKILL otherwise
    await this.process?.stop();
    this.process = undefined;
  }
  /** Sends `signal` to the running process (SIGSTOP hangs it with its connections open, SIGKILL crashes it). */
  signal(signal: NodeJS.Signals): void {
    const pid = this.process?.running ? this.process.pid : undefined;
    if (pid === undefined) throw new Error(`${this.name} is not running`);
    try {
      globalThis.process.kill(pid, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err; // it ended meanwhile
    }
  }
  /** Waits until `check` passes; fails early, with the log's tail, if the process exits. */
  waitUntil(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
    if (!this.process) throw new Error(`${this.name} is not running`);
    return this.process.waitUntil(what, check, timeoutMs);
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
const pong = (port: number) => () => plainAsk(port, "PING\r\n", (r) => r.startsWith("+PONG"));
/** The server at `port` replicates `master` and its link is up (the first sync done). */
const linkUp = (port: number, master: number) => plainAsk(port, "INFO replication\r\n",
  (r) => /role:slave/.test(r) && r.includes(`master_port:${master}\r\n`) && /master_link_status:up/.test(r));
/** The sentinel at `port` lists the replica at `replica` as a replica, up, with its link to the master up. */
const replicaInSync = async (port: number, replica: number): Promise<boolean> => {
  const fields = await cli(port, "SENTINEL", "REPLICAS", SENTINEL_MASTER);
  const entry = fields.indexOf(`127.0.0.1:${replica}`);
  if (entry < 0) return false;
  const value = (name: string) => fields[fields.indexOf(name, entry) + 1];
  return value("flags") === "slave" && value("master-link-status") === "ok";
};

/** Arguments every server here shares: loopback, no persistence, its own directory. */
const serverArgs = (dir: string) => ["--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no", "--protected-mode", "no"];

export class TlsRedis {
  static async create(): Promise<TlsRedis> {
    const dir = tempDir("kubelock-redis-tls-");
    const certs = await makeCerts(dir);
    return new TlsRedis(dir, certs, await freePort());
  }
  private readonly server: RedisProcess;
  /** The client certificate the server accepts, and the CA it trusts for client certificates. */
  private client: { certFile: string; keyFile: string; issuerFile: string };
  private constructor(private readonly dir: string, readonly certs: ControlPlaneCerts, readonly port: number) {
    this.client = { certFile: certs.adminCert, keyFile: certs.adminKey, issuerFile: certs.caCert };
    this.server = new RedisProcess("redis-tls", port, dir, () => [
      ...serverArgs(dir), "--port", "0", "--tls-port", String(port),
      "--tls-cert-file", certs.servingCert, "--tls-key-file", certs.servingKey, "--tls-ca-cert-file", this.client.issuerFile, "--tls-auth-clients", "yes",
    ], () => ask(() => connectTls({ host: "127.0.0.1", port, ...this.clientTls() }), "secureConnect", "PING\r\n", (r) => r.startsWith("+PONG")));
  }
  /** What a client needs: the CA, and the client certificate the server accepts. */
  clientTls(): ConnectionOptions {
    return { ca: readFileSync(this.certs.caCert), cert: readFileSync(this.client.certFile), key: readFileSync(this.client.keyFile) };
  }
  /** A client certificate from a new CA of its own (`issuerFile`), which the server does not trust yet. */
  newClientCertificate(): Promise<{ certFile: string; keyFile: string; issuerFile: string }> {
    return newClientCertificate(this.dir, "/CN=kubelock-test-client");
  }
  /**
   * The server trusts client certificates of `files.issuerFile` only, from now on (CONFIG SET: its data is kept)
   * and drops every client connection, as a restart would: they reconnect with whatever certificate they have.
   * `clientTls()` then gives `files`.
   */
  async trustOnly(files: { certFile: string; keyFile: string; issuerFile: string }): Promise<void> {
    // As the client the server accepts at the time: the old certificate, then the new one.
    const run = (...args: string[]) => runCommand("redis-cli", ["-e", "-h", "127.0.0.1", "-p", String(this.port),
      "--tls", "--cacert", this.certs.caCert, "--cert", this.client.certFile, "--key", this.client.keyFile, ...args]);
    await run("CONFIG", "SET", "tls-ca-cert-file", files.issuerFile);
    this.client = { ...files };
    for (const type of ["normal", "pubsub"]) await run("CLIENT", "KILL", "TYPE", type);
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

/** A setup of `ports` free loopback ports in a temporary directory of its own, started (destroyed if that fails). */
async function startSetup<T extends { start(): Promise<void>; destroy(): Promise<void> }>(name: string, count: number,
  make: (dir: string, ports: number[]) => T): Promise<T> {
  const dir = tempDir(`kubelock-redis-${name}-`);
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  const setup = make(dir, [...ports]);
  try {
    await setup.start();
  } catch (err) {
    await setup.destroy();
    throw err;
  }
  return setup;
}

export const SENTINEL_MASTER = "kubelock-master";

export class SentinelRedis {
  static create(): Promise<SentinelRedis> {
    return startSetup("sentinel", 5, (dir, ports) => new SentinelRedis(dir, ports));
  }
  /** The two data servers, master first as started (after a failover, see `masterPort()`). */
  readonly servers: RedisProcess[];
  readonly sentinelProcesses: RedisProcess[];
  /** Per data server's port: the master it is started to replicate (none: it starts as a master). */
  private readonly replicaOf = new Map<number, number>();
  private constructor(private readonly dir: string, ports: number[]) {
    const [masterPort, replicaPort, ...sentinelPorts] = ports;
    this.replicaOf.set(replicaPort, masterPort);
    // A replica serves once its link to the master is up (a sentinel only promotes a replica it knows to be in sync).
    const server = (name: string, port: number) => new RedisProcess(name, port, dir, () => {
      const master = this.replicaOf.get(port);
      // A full sync starts at once (the default waits 5 s for more replicas to share it).
      return [...serverArgs(dir), "--port", String(port), "--dbfilename", `${name.replace(/^redis-/, "")}.rdb`, "--repl-diskless-sync-delay", "0",
        ...(master ? ["--replicaof", "127.0.0.1", String(master)] : [])];
    }, () => (this.replicaOf.has(port) ? linkUp(port, this.replicaOf.get(port)!) : pong(port)()));
    this.servers = [server("redis-master", masterPort), server("redis-replica", replicaPort)];
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

  /**
   * A failover as a master's failure causes it, under whatever load there is: once every sentinel sees the replica
   * in sync (bounded by `timeoutMs`), the master crashes (SIGKILL) or hangs (SIGSTOP: its connections stay open,
   * calls on them time out), and the sentinels find it down (1 s) and promote the replica. Resolves once they name
   * the replica master, with `rejoin`, which brings the old master back as a replica of the new one: a crashed one
   * restarts (empty: these servers keep no data) told to replicate the new master, as a Sentinel deployment's start
   * script does; a hung one resumes, believing itself master with its old data, until the sentinels turn it into a
   * replica (they wait 8 s after its return); `rejoin` resolves once it is in sync with the new master. Throws if the
   * sentinels named no new master within `timeoutMs` (the old master is then brought back as it was).
   */
  async failMaster(how: "crash" | "hang", timeoutMs = 30_000): Promise<{ from: number; to: number; switchedMs: number; rejoin: () => Promise<void> }> {
    const from = await this.masterPort();
    const old = this.servers.find((s) => s.port === from);
    const next = this.servers.find((s) => s.port !== from);
    if (!old || !next) throw new Error(`the sentinels name ${from} master, not a server of this setup`);
    await Promise.all(this.sentinelProcesses.map((s) => s.waitUntil(`${s.name} to see ${next.port} replicating ${from} in sync`,
      () => replicaInSync(s.port, next.port), timeoutMs)));
    const begin = Date.now();
    if (how === "crash") {
      old.signal("SIGKILL");
      await old.stop();
    } else old.signal("SIGSTOP");
    try {
      await next.waitUntil(`the sentinels to name ${next.port} master`, async () => (await this.masterPort()) === next.port, timeoutMs);
    } catch (err) {
      if (how === "crash") await old.start();
      else old.signal("SIGCONT");
      throw err;
    }
    const switchedMs = Date.now() - begin;
    this.replicaOf.delete(next.port);
    this.replicaOf.set(from, next.port);
    const rejoin = async () => {
      if (how === "crash") await old.start(); // serving once its link to the new master is up
      else {
        old.signal("SIGCONT");
        await old.waitUntil(`${old.name} to be turned into a replica of ${next.port}`, () => linkUp(from, next.port), 60_000);
      }
    };
    return { from, to: next.port, switchedMs, rejoin };
  }
  async destroy(): Promise<void> {
    await Promise.all([...this.sentinelProcesses, ...this.servers].map((p) => p.stop()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The 16384 slots in three ranges, one per master. */
const SLOT_RANGES = [[0, 5460], [5461, 10922], [10923, 16383]];

export class ClusterRedis {
  static create(): Promise<ClusterRedis> {
    return startSetup("cluster", 6, (dir, ports) => new ClusterRedis(dir, ports));
  }
  private readonly processes: RedisProcess[];
  /** Node ids by client port. */
  private readonly ids = new Map<number, string>();
  private constructor(private readonly dir: string, ports: number[]) {
    // The bus port is set explicitly (by default it is the client port + 10000: maybe taken, or out of range).
    const [clientPorts, busPorts] = [ports.slice(0, 3), ports.slice(3)];
    this.processes = clientPorts.map((port, i) => new RedisProcess(`cluster-${i + 1}`, port, dir, () => [...serverArgs(dir),
      "--port", String(port), "--cluster-enabled", "yes", "--cluster-port", String(busPorts[i]),
      "--cluster-config-file", join(dir, `nodes-${i + 1}.conf`)], pong(port)));
  }
  /** The masters' client ports, in the order of their slot ranges as started. */
  get ports(): number[] {
    return this.processes.map((p) => p.port);
  }
  /** The first master's url: the seed a client is configured with. */
  get url(): string {
    return `redis://127.0.0.1:${this.ports[0]}`;
  }
  /**
   * Starts the servers; the first time, gives each its range of slots and has them meet (later they find each other
   * from their cluster config files). Resolves once every node says cluster_state:ok. The servers keep no data, ACL
   * users included, across a stop.
   */
  async start(): Promise<void> {
    await Promise.all(this.processes.map((p) => p.start()));
    if (this.ids.size === 0) await this.form();
    await Promise.all(this.processes.map((p) => p.waitUntil("cluster_state:ok", () => plainAsk(p.port, "CLUSTER INFO\r\n", (r) => r.includes("cluster_state:ok")))));
  }
  async stop(): Promise<void> {
    await Promise.all(this.processes.map((p) => p.stop()));
  }
  /** What `redis-cli --cluster create` does: a config epoch and a range of slots for each master, then they meet. */
  private async form(): Promise<void> {
    for (const [i, port] of this.ports.entries()) {
      this.ids.set(port, (await cli(port, "CLUSTER", "MYID"))[0]);
      await cli(port, "CLUSTER", "SET-CONFIG-EPOCH", String(i + 1));
      await cli(port, "CLUSTER", "ADDSLOTSRANGE", ...SLOT_RANGES[i].map(String));
    }
    const [first, ...others] = this.ports;
    const firstBus = (await cli(first, "CONFIG", "GET", "cluster-port"))[1];
    for (const port of others) await cli(port, "CLUSTER", "MEET", "127.0.0.1", String(first), firstBus);
  }
  /** The port of the master serving `slot` if every master says the same, else undefined. */
  async owner(slot: number): Promise<number | undefined> {
    const views = await Promise.all(this.ports.map(async (port) => {
      // CLUSTER NODES: "<id> <ip>:<port>@<bus> <flags> <master> <ping> <pong> <epoch> <link> <slot or from-to>...".
      const line = (await cli(port, "CLUSTER", "NODES")).map((l) => l.split(" ")).find((fields) => fields.slice(8).some((range) => {
        const [from, to = from] = range.split("-").map(Number);
        return from <= slot && slot <= to;
      }));
      return line ? Number(/:(\d+)@/.exec(line[1])?.[1]) : undefined;
    }));
    return views.every((v) => v === views[0]) ? views[0] : undefined;
  }
  /**
   * Moves `slot` to the master at port `to` the way `redis-cli --cluster reshard` does: IMPORTING on `to`, MIGRATING on
   * its owner, MIGRATE of its keys `batch` at a time (redis-cli's default: 10), then SETSLOT NODE on `to`, the old
   * owner and the third master. `between()` is awaited once the slot is marked and after each batch: the slot is
   * half-moved meanwhile.
   */
  async moveSlot(slot: number, to: number, between: () => Promise<void>, batch = 10): Promise<void> {
    const from = await this.owner(slot);
    if (from === undefined || from === to) throw new Error(`slot ${slot} is not served by one master other than ${to}`);
    await cli(to, "CLUSTER", "SETSLOT", String(slot), "IMPORTING", this.ids.get(from)!);
    await cli(from, "CLUSTER", "SETSLOT", String(slot), "MIGRATING", this.ids.get(to)!);
    await between();
    for (;;) {
      const keys = await cli(from, "CLUSTER", "GETKEYSINSLOT", String(slot), String(batch));
      if (keys.length === 0) break;
      await cli(from, "MIGRATE", "127.0.0.1", String(to), "", "0", "5000", "KEYS", ...keys);
      await between();
    }
    for (const port of [to, from, ...this.ports.filter((p) => p !== to && p !== from)]) {
      await cli(port, "CLUSTER", "SETSLOT", String(slot), "NODE", this.ids.get(to)!);
    }
  }
  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** One command through redis-cli to 127.0.0.1:port: the reply, one line per element; rejects on an error reply. */
async function cli(port: number, ...args: string[]): Promise<string[]> {
  return (await runCommand("redis-cli", ["-e", "-h", "127.0.0.1", "-p", String(port), ...args])).split("\n").filter((line) => line !== "");
}
