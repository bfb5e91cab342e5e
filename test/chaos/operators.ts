/**
 * The operators under test: `kubelock operator --leader-elect` replicas run as child processes (the real
 * CLI, as test/support/operator.ts runs it, but with the pid at hand for SIGKILL, SIGSTOP and SIGCONT).
 * A supervisor keeps `replicas` of them running, as a Deployment would: a replica that exits (killed) is
 * replaced; `roll()` replaces them all one by one, a replacement first, as a rolling update does. A replica
 * that loses leadership restarts in its own process as a follower, under a new election identity.
 *
 * Each replica reaches the API server and the backends through relays of its own (relays.ts), with its
 * own kubeconfig and config file, so one replica can be partitioned alone. A replica may start with a
 * skewed wall clock (libfaketime, from Debian's faketime; monotonic clocks stay true, as on a real
 * machine whose clock is off).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, writeFileSync, type WriteStream } from "node:fs";
import { join, resolve } from "node:path";
import { skewedClock } from "../env/faketime";
import * as k8s from "@kubernetes/client-node";
import { OPERATOR_NAMESPACE } from "../env/operator-identity";
import { tailOf } from "../env/process";
import { cliCommand } from "../support/cli-entry";
import { refusals } from "../support/operator";
import { Relays, type Upstreams } from "./relays";
import { now, sleep, withTimeout } from "./util";

const repoRoot = resolve(__dirname, "..", "..");

/** Operator config text for a replica, given where its relays are and the cluster name (undefined: none set, as shipped). */
export type ConfigFor = (addresses: Upstreams, clusterName: string | undefined) => string;

export interface FleetOptions {
  /** Names this fleet's files and log lines ("c1"); a cluster has one fleet. */
  name: string;
  /** What the replicas authenticate with (the runner passes the deploy/ ServiceAccount's). */
  kubeconfig: string;
  kc: k8s.KubeConfig;
  namespace: string;
  /** The servers the replicas reach through their relays. */
  upstreams: Upstreams;
  config: ConfigFor;
  /** The config's clusterName at start (undefined: the shipped default, no clusterName). */
  clusterName: string | undefined;
  logDir: string;
  /**
   * The leader election Lease's name, in the operator's namespace as installed (deploy/): the ZooKeeper session
   * hand-over Secret lives beside it, where only the operator's ServiceAccount may read it.
   */
  leaseName: string;
  replicas: number;
  /** --leader-elect-lease-duration / renew-deadline / retry-period, as durations ("4s"). */
  leaderElection: { lease: string; renewDeadline: string; retryPeriod: string };
  /** Replacement starts allowed in a run (a bound on the supervisor). */
  maxStarts: number;
  log: (line: string) => void;
}

/** How many refused requests (see refusals) a replica keeps: the last ones. */
const MAX_REFUSALS_KEPT = 1000;

export class Replica {
  readonly exited: Promise<number | null>;
  /** Log lines of requests the API server refused this replica (403), with when they came (now()). */
  readonly refused: { at: number; line: string }[] = [];
  private code: number | null | undefined;
  private paused = false;
  private seen = "";
  private readonly out: WriteStream;

  constructor(
    readonly index: number,
    private readonly child: ChildProcess,
    readonly logFile: string,
    /** Its own relays to the API server and the backends. */
    readonly relays: Relays,
    /** How far its wall clock is off, ms (0: true). */
    readonly skewMs: number,
  ) {
    this.out = createWriteStream(logFile);
    const collect = (d: Buffer) => {
      this.out.write(d);
      // Only the few lines looked for are kept in memory.
      for (const line of d.toString().split("\n")) {
        if (/"msg":"(operator started|operator restarted|caches synced|acquired the leader lease; leading|leader election lost)/.test(line)) this.seen += line + "\n";
      }
      for (const line of refusals(d.toString())) if (this.refused.push({ at: now(), line: line.slice(0, 600) }) > MAX_REFUSALS_KEPT) this.refused.shift();
    };
    child.stdout!.on("data", collect);
    child.stderr!.on("data", collect);
    this.exited = new Promise((done) => child.on("exit", (code, signal) => {
      this.code = code ?? (signal ? -1 : null);
      this.out.end();
      const exitCode = this.code;
      void relays.stop().finally(() => done(exitCode));
    }));
  }

  get pid(): number | undefined {
    return this.child.pid;
  }
  get running(): boolean {
    return this.code === undefined;
  }
  get exitCode(): number | null | undefined {
    return this.code;
  }
  get synced(): boolean {
    return this.seen.includes('"msg":"caches synced"');
  }
  /** The leader election identity it logged last (at start-up, or when it restarted as a follower). */
  get identity(): string | undefined {
    const all = [...this.seen.matchAll(/"msg":"operator (?:started|restarted)".*?"identity":"([^"]+)"/g)];
    return all[all.length - 1]?.[1];
  }
  get isPaused(): boolean {
    return this.paused;
  }

  signal(signal: "SIGKILL" | "SIGSTOP" | "SIGCONT" | "SIGTERM"): void {
    if (!this.running) return;
    if (signal === "SIGSTOP") this.paused = true;
    if (signal === "SIGCONT") this.paused = false;
    this.child.kill(signal);
  }

  /** The last lines of its log, for evidence. */
  tail(lines = 15): string {
    return tailOf(this.logFile, lines);
  }

  /** SIGCONT (a stopped process cannot act on SIGTERM), SIGTERM, SIGKILL after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) return;
    this.signal("SIGCONT");
    this.signal("SIGTERM");
    const timer = setTimeout(() => this.signal("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

export class OperatorFleet {
  readonly replicas: Replica[] = [];
  /** Every replica started, in order (exited ones included). */
  readonly all: Replica[] = [];
  /** The wall clock skew of replicas started from now on, ms. */
  skewMs = 0;
  /** The clusterName of configs written from now on (undefined: none, as the shipped config). */
  clusterName: string | undefined;
  private stopped = false;
  private spawning = 0;
  private supervising?: Promise<void>;
  private readonly coordination: k8s.CoordinationV1Api;
  private readonly cli = cliCommand();

  constructor(private readonly options: FleetOptions) {
    this.coordination = options.kc.makeApiClient(k8s.CoordinationV1Api);
    this.clusterName = options.clusterName;
    options.log(`operators: running ${this.cli.compiled ? "the compiled dist/" : "the sources through tsx (dist/ is missing or older than src/)"}`);
  }

  get name(): string {
    return this.options.name;
  }

  get starts(): number {
    return this.all.length;
  }

  /** Starts the replicas and waits (bounded) until one of them leads. */
  async start(): Promise<void> {
    for (let i = 0; i < this.options.replicas; i++) await this.spawn();
    this.supervising = this.supervise();
    const deadline = now() + 90_000;
    while (!(await this.leader())) {
      if (now() > deadline) throw new Error(`no operator replica leads after 90 s:\n${this.replicas.map((r) => r.tail()).join("\n---\n")}`);
      await sleep(250);
    }
  }

  private async spawn(): Promise<Replica> {
    const o = this.options;
    const index = this.all.length;
    this.spawning++;
    try {
      const relays = await Relays.start(o.upstreams);
      const base = join(o.logDir, `${o.name}-operator-${index}`);
      const configFile = `${base}.yaml`;
      writeFileSync(configFile, o.config(relays.addresses, this.clusterName));
      const kubeconfig = relays.writeKubeconfig(o.kubeconfig, `${base}.kubeconfig`);
      const args = [
        ...this.cli.args, "operator", "--log-level", process.env.CHAOS_OPERATOR_LOG_LEVEL ?? "info", "--kubeconfig", kubeconfig, "--watch-namespace", o.namespace,
        "--metrics-bind-address", "127.0.0.1:0", "--health-probe-bind-address", "127.0.0.1:0", "--config", configFile,
        "--leader-elect", "--leader-elect-namespace", OPERATOR_NAMESPACE, "--leader-elect-id", o.leaseName,
        "--leader-elect-lease-duration", o.leaderElection.lease, "--leader-elect-renew-deadline", o.leaderElection.renewDeadline,
        "--leader-elect-retry-period", o.leaderElection.retryPeriod,
      ];
      const skewMs = this.skewMs;
      // libfaketime: only the wall clock is skewed; timers and monotonic clocks run true.
      const skew = skewMs === 0 ? {} : skewedClock(`${skewMs > 0 ? "+" : "-"}${Math.abs(skewMs) / 1000}s`);
      const env = { ...process.env, POD_NAME: `chaos-${o.name}-operator-${index}`, ...skew };
      const child = spawn(process.execPath, args, { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"], env });
      const replica = new Replica(index, child, `${base}.log`, relays, skewMs);
      this.replicas.push(replica);
      this.all.push(replica);
      return replica;
    } finally {
      this.spawning--;
    }
  }

  /** Replaces replicas that exited; bounded by `maxStarts` and by the stop flag. */
  private async supervise(): Promise<void> {
    while (!this.stopped) {
      const exited = this.replicas.filter((r) => !r.running);
      for (const replica of exited) {
        this.replicas.splice(this.replicas.indexOf(replica), 1);
        if (this.all.length >= this.options.replicas + this.options.maxStarts) {
          this.options.log(`operators: replica ${replica.index} exited (code ${replica.exitCode}); start budget used up, not replaced`);
          continue;
        }
        try {
          const next = await this.spawn();
          this.options.log(`operators: ${this.options.name} replica ${replica.index} exited (code ${replica.exitCode}); started replica ${next.index}${next.skewMs ? ` (clock ${next.skewMs > 0 ? "+" : ""}${next.skewMs / 1000}s)` : ""}`);
        } catch (err) {
          this.options.log(`operators: ${this.options.name} could not start a replica: ${(err as Error).message}`);
        }
      }
      await Promise.race([sleep(200), ...this.replicas.map((r) => r.exited)]);
    }
  }

  /**
   * The replica holding the leader Lease (by the identity it logged), if it is running and not paused.
   * Read from the API server: the Lease is what decides who leads.
   */
  async leader(): Promise<Replica | undefined> {
    let holder: string | undefined;
    try {
      const lease = await withTimeout(this.coordination.readNamespacedLease({ name: this.options.leaseName, namespace: OPERATOR_NAMESPACE }), 5000, "read leader lease");
      holder = lease.spec?.holderIdentity ?? undefined;
    } catch {
      return undefined;
    }
    return this.replicas.find((r) => r.running && !r.isPaused && r.identity !== undefined && r.identity === holder);
  }

  /** Waits (bounded) for an identifiable, running leader. */
  async waitForLeader(timeoutMs: number): Promise<Replica | undefined> {
    const deadline = now() + timeoutMs;
    while (!this.stopped && now() < deadline) {
      const leader = await this.leader();
      if (leader) return leader;
      await sleep(250);
    }
    return undefined;
  }

  /**
   * A rolling replacement with surge (as a Deployment with maxUnavailable 0 does): for each running replica
   * (followers first, the leader last) a replacement starts first (with the current `skewMs` and `clusterName`),
   * and once its caches have synced, the old one is retired with SIGTERM. Resolves once a replacement leads;
   * false if that took too long.
   */
  async roll(timeoutMs = 60_000): Promise<boolean> {
    const deadline = now() + timeoutMs;
    const leader = await this.leader();
    const old = [...this.replicas].sort((a, b) => Number(a === leader) - Number(b === leader));
    for (const replica of old) {
      if (this.stopped) return false;
      // One that exited meanwhile was replaced by the supervisor already: a surge for it would only grow the fleet.
      if (!replica.running || !this.replicas.includes(replica)) continue;
      const next = await this.spawn();
      // maxUnavailable 0: the old one goes only once its replacement is ready (caches synced), however long that takes.
      while (!this.stopped && next.running && !next.synced) await sleep(100);
      if (!next.synced) continue;
      const at = this.replicas.indexOf(replica);
      if (at >= 0) this.replicas.splice(at, 1); // retired, not replaced by the supervisor
      await replica.stop();
    }
    const next = await this.waitForLeader(Math.max(0, deadline - now()));
    return next !== undefined && !old.includes(next);
  }

  /** Stops supervising, resumes any paused replica, stops every replica. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.supervising;
    while (this.spawning > 0) await sleep(50);
    await Promise.all(this.all.map((r) => r.stop()));
  }
}
