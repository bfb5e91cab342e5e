/**
 * The operators under test: `kubelock operator --leader-elect` replicas run as child processes (the real
 * CLI, as test/support/operator.ts runs it, but with the pid at hand for SIGKILL, SIGSTOP and SIGCONT).
 * A supervisor keeps `replicas` of them running, as a Deployment would: a replica that exits (killed, or
 * on losing leadership, which the operator answers by exiting 1) is replaced.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, readdirSync, statSync, type WriteStream } from "node:fs";
import { join, relative, resolve } from "node:path";
import * as k8s from "@kubernetes/client-node";
import { tailOf } from "../env/process";
import { refusals } from "../support/operator";
import { now, sleep, withTimeout } from "./util";

const repoRoot = resolve(__dirname, "..", "..");

/**
 * How to run the CLI: the compiled dist/ when it is newer than every source file (`make test` builds it
 * first; it starts much faster on a busy machine), else the sources through tsx.
 */
export function cliCommand(): { args: string[]; compiled: boolean } {
  const compiled = join(repoRoot, "dist/src/cli/main.js");
  const fresh = (dir: string): boolean => readdirSync(dir, { withFileTypes: true }).every((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return fresh(path);
    if (!entry.name.endsWith(".ts")) return true;
    const js = join(repoRoot, "dist", relative(repoRoot, path)).replace(/\.ts$/, ".js");
    return existsSync(js) && statSync(js).mtimeMs >= statSync(path).mtimeMs;
  });
  if (existsSync(compiled) && fresh(join(repoRoot, "src"))) return { args: [compiled], compiled: true };
  return { args: ["--import", "tsx", join(repoRoot, "src/cli/main.ts")], compiled: false };
}

export interface FleetOptions {
  /** What the replicas authenticate with (the runner passes the deploy/ ServiceAccount's). */
  kubeconfig: string;
  kc: k8s.KubeConfig;
  namespace: string;
  configFile: string;
  logDir: string;
  /** The leader election Lease's name (in `namespace`). */
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

  constructor(readonly index: number, private readonly child: ChildProcess, readonly logFile: string) {
    this.out = createWriteStream(logFile);
    const collect = (d: Buffer) => {
      this.out.write(d);
      // Only the few lines looked for are kept in memory.
      for (const line of d.toString().split("\n")) {
        if (/"msg":"(operator started|caches synced|acquired the leader lease; leading|leader election lost|exiting: leadership lost)/.test(line)) this.seen += line + "\n";
      }
      for (const line of refusals(d.toString())) if (this.refused.push({ at: now(), line: line.slice(0, 600) }) > MAX_REFUSALS_KEPT) this.refused.shift();
    };
    child.stdout!.on("data", collect);
    child.stderr!.on("data", collect);
    this.exited = new Promise((done) => child.on("exit", (code, signal) => {
      this.code = code ?? (signal ? -1 : null);
      this.out.end();
      done(this.code);
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
  /** The leader election identity it logged at start-up. */
  get identity(): string | undefined {
    return /"msg":"operator started".*?"identity":"([^"]+)"/.exec(this.seen)?.[1];
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
  private stopped = false;
  private supervising?: Promise<void>;
  private readonly coordination: k8s.CoordinationV1Api;
  private readonly cli = cliCommand();

  constructor(private readonly options: FleetOptions) {
    this.coordination = options.kc.makeApiClient(k8s.CoordinationV1Api);
    options.log(`operators: running ${this.cli.compiled ? "the compiled dist/" : "the sources through tsx (dist/ is missing or older than src/)"}`);
  }

  get starts(): number {
    return this.all.length;
  }

  /** Starts the replicas and waits (bounded) until one of them leads. */
  async start(): Promise<void> {
    for (let i = 0; i < this.options.replicas; i++) this.spawn();
    this.supervising = this.supervise();
    const deadline = now() + 90_000;
    while (!(await this.leader())) {
      if (now() > deadline) throw new Error(`no operator replica leads after 90 s:\n${this.replicas.map((r) => r.tail()).join("\n---\n")}`);
      await sleep(250);
    }
  }

  private spawn(): Replica {
    const o = this.options;
    const index = this.all.length;
    const args = [
      ...this.cli.args, "operator", "--log-level", process.env.CHAOS_OPERATOR_LOG_LEVEL ?? "info", "--kubeconfig", o.kubeconfig, "--watch-namespace", o.namespace,
      "--metrics-bind-address", "127.0.0.1:0", "--health-probe-bind-address", "127.0.0.1:0", "--config", o.configFile,
      "--leader-elect", "--leader-elect-namespace", o.namespace, "--leader-elect-id", o.leaseName,
      "--leader-elect-lease-duration", o.leaderElection.lease, "--leader-elect-renew-deadline", o.leaderElection.renewDeadline,
      "--leader-elect-retry-period", o.leaderElection.retryPeriod,
    ];
    const child = spawn(process.execPath, args, { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, POD_NAME: `chaos-operator-${index}` } });
    const replica = new Replica(index, child, join(o.logDir, `operator-${index}.log`));
    this.replicas.push(replica);
    this.all.push(replica);
    return replica;
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
        const next = this.spawn();
        this.options.log(`operators: replica ${replica.index} exited (code ${replica.exitCode}); started replica ${next.index}`);
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
      const lease = await withTimeout(this.coordination.readNamespacedLease({ name: this.options.leaseName, namespace: this.options.namespace }), 5000, "read leader lease");
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

  /** Stops supervising, resumes any paused replica, stops every replica. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.supervising;
    await Promise.all(this.all.map((r) => r.stop()));
  }
}
