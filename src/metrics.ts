/**
 * Prometheus metrics (`--metrics-bind-address`, default ":8080", path `/metrics`), every name
 * prefixed `kubelock_`. Labels never name a claim; per-lock labels only with `--metrics-per-lock`.
 *
 * | metric                                   | type      | labels                        |
 * |------------------------------------------|-----------|-------------------------------|
 * | kubelock_grants_total                    | counter   | backend, reason (`Granted`)   |
 * | kubelock_releases_total                  | counter   | backend, reason (why the hold ended: a claim condition reason, or `Orphaned`) |
 * | kubelock_claims_lost_total               | counter   | none: Granted claims the operator showed Lost (hold gone or unconfirmed) |
 * | kubelock_grant_wait_seconds              | histogram | backend: claim creation → granted |
 * | kubelock_handoff_seconds                 | histogram | backend: a hold of the lock ended while claims waited → the next grant on that lock |
 * | kubelock_holders, kubelock_waiting       | gauge     | none (totals), or namespace, lock |
 * | kubelock_backend_operation_seconds       | histogram | backend, operation            |
 * | kubelock_backend_errors_total            | counter   | backend, operation            |
 * | kubelock_reconcile_duration_seconds      | histogram | kind                          |
 * | kubelock_reconcile_errors_total          | counter   | kind                          |
 * | kubelock_workqueue_depth                 | gauge     | queue                         |
 * | kubelock_leader                          | gauge     | 1 while this replica runs the controllers |
 * | kubelock_build_info                      | gauge     | version, node_version (always 1) |
 *
 * plus prom-client's default process metrics, also prefixed `kubelock_`.
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { queueState, type AcquireRequest, type LockBackend } from "./backends/backend";

/** What the lock reconciler reports (see OperatorContext.metrics). `lock` is `namespace/name`. */
export interface LockMetrics {
  /** A claim was granted at `nowMs`; `createdAt` is its creationTimestamp. */
  granted(lock: string, backend: string, createdAt: string | undefined, nowMs: number): void;
  /** A hold of this lock ended at `nowMs` (released in the backend, or found lost) for `reason`. */
  released(lock: string, backend: string, reason: string, nowMs: number): void;
  /** A Granted claim was shown Lost (its hold vanished, or could not be confirmed within its lease). */
  claimLost(): void;
  /** The lock's state after a reconcile. */
  lockState(lock: string, holders: number, waiting: number): void;
  /** The lock is gone: forget it. */
  lockGone(lock: string): void;
}

export interface MetricsOptions {
  /** Label holders/waiting by namespace and lock (one series per lock). Default false: totals. */
  perLock?: boolean;
}

const WAIT_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];
const FAST_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Slot-freed times kept per lock for handoff_seconds, at most. */
const MAX_FREED = 1000;

export class OperatorMetrics implements LockMetrics {
  readonly registry = new Registry();
  readonly reconcileDuration: Histogram<"kind">;
  readonly reconcileErrors: Counter<"kind">;
  readonly leader: Gauge;
  private readonly grants: Counter<"backend" | "reason">;
  private readonly releases: Counter<"backend" | "reason">;
  private readonly claimsLost: Counter;
  private readonly grantWait: Histogram<"backend">;
  private readonly handoff: Histogram<"backend">;
  private readonly backendSeconds: Histogram<"backend" | "operation">;
  private readonly backendErrors: Counter<"backend" | "operation">;
  private readonly locks = new Map<string, { holders: number; waiting: number }>();
  /** Per lock: when holds ended while claims waited, oldest first, not yet handed to a new holder. */
  private readonly freed = new Map<string, number[]>();
  private readonly queues = new Map<string, () => number>();

  constructor(options: MetricsOptions = {}) {
    const registers = [this.registry];
    const counter = <L extends string>(name: string, help: string, labelNames: L[]) => new Counter<L>({ name: `kubelock_${name}`, help, labelNames, registers });
    const histogram = <L extends string>(name: string, help: string, labelNames: L[], buckets: number[]) =>
      new Histogram<L>({ name: `kubelock_${name}`, help, labelNames, buckets, registers });
    this.grants = counter("grants_total", "Claims granted (backend hold acquired).", ["backend", "reason"]);
    this.releases = counter("releases_total", "Backend holds ended, by reason.", ["backend", "reason"]);
    this.claimsLost = counter("claims_lost_total", "Granted claims shown Lost: the hold vanished or could not be confirmed within its lease.", []);
    this.grantWait = histogram("grant_wait_seconds", "Claim creation to grant.", ["backend"], WAIT_BUCKETS);
    this.handoff = histogram("handoff_seconds", "A hold ended while claims waited, to the next grant on the lock.", ["backend"], FAST_BUCKETS);
    this.backendSeconds = histogram("backend_operation_seconds", "Backend call latency.", ["backend", "operation"], FAST_BUCKETS);
    this.backendErrors = counter("backend_errors_total", "Backend calls that failed.", ["backend", "operation"]);
    this.reconcileDuration = histogram("reconcile_duration_seconds", "Reconcile latency.", ["kind"], FAST_BUCKETS);
    this.reconcileErrors = counter("reconcile_errors_total", "Reconciles that failed (retried with backoff).", ["kind"]);
    this.leader = new Gauge({ name: "kubelock_leader", help: "1 while this replica leads and runs the controllers, else 0.", registers });
    this.leader.set(0);

    const lockLabels: ("namespace" | "lock")[] = options.perLock ? ["namespace", "lock"] : [];
    const perLockGauge = (field: "holders" | "waiting", help: string) => {
      const locks = this.locks;
      return new Gauge({
        name: `kubelock_${field}`, help, labelNames: lockLabels, registers,
        collect() {
          this.reset();
          if (!options.perLock) this.set([...locks.values()].reduce((sum, s) => sum + s[field], 0));
          else for (const [key, state] of locks) {
            const [namespace, lock] = key.split("/");
            this.set({ namespace, lock }, state[field]);
          }
        },
      });
    };
    perLockGauge("holders", "Claims holding a lock.");
    perLockGauge("waiting", "Claims waiting for a lock.");
    const queues = this.queues;
    new Gauge({
      name: "kubelock_workqueue_depth", help: "Keys waiting in a work queue.", labelNames: ["queue"], registers,
      collect() {
        for (const [queue, depth] of queues) this.set({ queue }, depth());
      },
    });
    new Gauge({ name: "kubelock_build_info", help: "Build information.", labelNames: ["version", "node_version"], registers })
      .set({ version: packageVersion(), node_version: process.version }, 1);
    collectDefaultMetrics({ register: this.registry, prefix: "kubelock_" });
  }

  granted(lock: string, backend: string, createdAt: string | undefined, nowMs: number): void {
    this.grants.inc({ backend, reason: "Granted" });
    const created = createdAt ? Date.parse(createdAt) : NaN;
    if (Number.isFinite(created)) this.grantWait.observe({ backend }, Math.max(0, nowMs - created) / 1000);
    const freedAt = this.freed.get(lock)?.shift();
    if (freedAt !== undefined) this.handoff.observe({ backend }, Math.max(0, nowMs - freedAt) / 1000);
  }

  released(lock: string, backend: string, reason: string, nowMs: number): void {
    this.releases.inc({ backend, reason });
    let freed = this.freed.get(lock);
    if (!freed) this.freed.set(lock, (freed = []));
    if (freed.length < MAX_FREED) freed.push(nowMs);
  }

  claimLost(): void {
    this.claimsLost.inc();
  }

  lockState(lock: string, holders: number, waiting: number): void {
    this.locks.set(lock, { holders, waiting });
    // A slot that freed with nobody left waiting is no handoff.
    if (waiting === 0) this.freed.delete(lock);
  }

  lockGone(lock: string): void {
    this.locks.delete(lock);
    this.freed.delete(lock);
  }

  /** Reports `depth()` as kubelock_workqueue_depth{queue}. */
  watchQueue(queue: string, depth: () => number): void {
    this.queues.set(queue, depth);
  }

  /** The backend, with every call timed and failures counted. */
  instrument(backend: LockBackend): LockBackend {
    const timed = <A extends unknown[], R>(operation: string, call: (...args: A) => Promise<R>) => async (...args: A): Promise<R> => {
      const end = this.backendSeconds.startTimer({ backend: backend.name, operation });
      try {
        return await call(...args);
      } catch (err) {
        this.backendErrors.inc({ backend: backend.name, operation });
        throw err;
      } finally {
        end();
      }
    };
    return {
      name: backend.name,
      expiresOnServer: backend.expiresOnServer,
      fencingRecord: backend.fencingRecord,
      tryAcquire: timed("tryAcquire", (req: AcquireRequest) => backend.tryAcquire(req)),
      renew: timed("renew", (key: string, holderId: string, seconds: number) => backend.renew(key, holderId, seconds)),
      release: timed("release", (key: string, holderId: string) => backend.release(key, holderId)),
      holders: timed("holders", (key: string) => backend.holders(key)),
      waiting: timed("waiting", (key: string) => backend.waiting(key)),
      queueState: timed("queueState", (key: string) => queueState(backend, key)),
      ...(backend.handOff && { handOff: timed("handOff", (from: string, req: AcquireRequest) => backend.handOff!(from, req)) }),
      ...(backend.forget && { forget: timed("forget", (key: string) => backend.forget!(key)) }),
      watch: (key, onChange, waiter) => backend.watch(key, onChange, waiter),
      close: () => backend.close(),
      leaseProblem: (seconds) => backend.leaseProblem?.(seconds),
    };
  }

  /** The Prometheus text exposition. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/** The version in kubelock's package.json (found from here upwards, in the source tree or the build). */
function packageVersion(): string {
  for (let dir = __dirname; ; dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { name?: string; version?: string };
      if (pkg.name === "kubelock" && pkg.version) return pkg.version;
    } catch {
      // no package.json here: look further up
    }
    if (dirname(dir) === dir) return "unknown";
  }
}
