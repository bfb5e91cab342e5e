/**
 * Leader election on a `coordination.k8s.io/v1` Lease, modelled on client-go's
 * `tools/leaderelection` (client-node 1.x has none).
 *
 * Protocol (every write carries the resourceVersion read just before, so two candidates can never
 * both win the same round):
 * - A candidate polls the Lease every `retryPeriodMs` (jittered: × 1..2.2, client-go's JitterFactor
 *   1.2). It takes the Lease when it does not exist, has no holder, or the holder's record has not
 *   changed for `leaseDurationMs` *as observed on this candidate's own clock* (the time it first saw
 *   that record, never the record's renewTime: clocks of different machines need not agree).
 * - The leader renews every `retryPeriodMs`. If no renewal succeeds within `renewDeadlineMs` of the
 *   start of the last successful one, it stops leading (aborts the `onStartedLeading` signal and calls
 *   `onStoppedLeading("lost")`). Another candidate can take over no earlier than `leaseDurationMs`
 *   after it observed that renewal, which it cannot have observed before the renewal was sent: the
 *   old leader has stepped down at least `leaseDurationMs - renewDeadlineMs` before anyone else may
 *   lead (assuming clocks that run at the same rate).
 * - `release()` (graceful shutdown) stops the loop and, if this candidate holds the Lease, clears
 *   `holderIdentity` and sets `leaseDurationSeconds` to 1, so a follower takes over on its next poll.
 *
 * The election talks to the API server only through `LeaseStore`, so its logic is tested with a
 * `FakeClock` and an in-memory store.
 */
import * as k8s from "@kubernetes/client-node";
import { apiErrorMessage, requestTimeout } from "../kube/client";
import { silentLogger, type Logger } from "../log";
import { realClock, sleep, type Clock } from "./clock";

/** client-go's JitterFactor: acquire polls wait `retryPeriod × (1 + random × 1.2)`. */
export const JITTER_FACTOR = 1.2;

export interface LeaseRef {
  namespace: string;
  name: string;
}

/** The Lease fields the election reads and writes. Times are ms since the epoch. */
export interface LeaseRecord {
  /** Empty or missing: nobody leads. */
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTimeMs?: number;
  renewTimeMs?: number;
  leaseTransitions?: number;
  /** Optimistic concurrency token (metadata.resourceVersion); set by the store. */
  resourceVersion?: string;
}

/** A create of an existing Lease, or an update whose resourceVersion is stale. */
export class LeaseConflictError extends Error {
  override readonly name = "LeaseConflictError";
}

/** Where Leases live. The real one is `KubeLeaseStore`; tests use an in-memory one. */
export interface LeaseStore {
  /** The Lease, or undefined when it does not exist. */
  get(ref: LeaseRef): Promise<LeaseRecord | undefined>;
  /** Creates the Lease; throws LeaseConflictError if it exists. */
  create(ref: LeaseRef, record: LeaseRecord): Promise<LeaseRecord>;
  /** Replaces the Lease if its resourceVersion still equals `record.resourceVersion`; else throws LeaseConflictError. */
  update(ref: LeaseRef, record: LeaseRecord): Promise<LeaseRecord>;
}

export type StoppedReason = "lost" | "released";

export interface LeaderCallbacks {
  /** This candidate leads; `signal` aborts the moment it stops leading. */
  onStartedLeading(signal: AbortSignal): void;
  /** This candidate stopped leading: "lost" (renewal failed) or "released" (`release()`). */
  onStoppedLeading(reason: StoppedReason): void;
  /** The observed leader changed (also to this candidate). */
  onNewLeader?(identity: string): void;
}

export interface LeaderElectionConfig {
  lease: LeaseRef;
  /** This candidate's unique name (written as holderIdentity). Required, non-empty. */
  identity: string;
  /** How long followers wait after they last saw the record change before taking over. Default 15000. */
  leaseDurationMs?: number;
  /** The leader stops leading if no renewal succeeded for this long. Default 10000; < leaseDurationMs. */
  renewDeadlineMs?: number;
  /** Time between attempts to acquire or renew. Default 2000; × 1.2 < renewDeadlineMs. */
  retryPeriodMs?: number;
  /** Default: the real clock. */
  clock?: Clock;
  store: LeaseStore;
  callbacks: LeaderCallbacks;
  log?: Logger;
  /** Jitter source in [0, 1). Default Math.random. */
  random?: () => number;
}

export const LEADER_ELECTION_DEFAULTS = Object.freeze({ leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 });

/** Invalid leader election settings; `problems` has one line per broken invariant. */
export class LeaderElectionConfigError extends Error {
  override readonly name = "LeaderElectionConfigError";
  constructor(readonly problems: string[]) {
    super(`invalid leader election settings:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

/** Every broken invariant of the settings (empty when valid), as client-go checks them. */
export function leaderElectionProblems(config: Pick<LeaderElectionConfig, "identity" | "leaseDurationMs" | "renewDeadlineMs" | "retryPeriodMs">): string[] {
  const { leaseDurationMs, renewDeadlineMs, retryPeriodMs } = { ...LEADER_ELECTION_DEFAULTS, ...defined(config) };
  const problems: string[] = [];
  const positive = { "lease duration": leaseDurationMs, "renew deadline": renewDeadlineMs, "retry period": retryPeriodMs };
  for (const [what, ms] of Object.entries(positive)) if (!(ms > 0)) problems.push(`${what} must be greater than zero, got ${ms}ms`);
  if (!(leaseDurationMs > renewDeadlineMs)) {
    problems.push(`lease duration (${leaseDurationMs}ms) must be greater than renew deadline (${renewDeadlineMs}ms)`);
  }
  if (!(renewDeadlineMs > retryPeriodMs * JITTER_FACTOR)) {
    problems.push(`renew deadline (${renewDeadlineMs}ms) must be greater than retry period × ${JITTER_FACTOR} (${retryPeriodMs * JITTER_FACTOR}ms)`);
  }
  if (!config.identity) problems.push("identity must not be empty");
  return problems;
}

export class LeaderElector {
  readonly identity: string;
  private readonly lease: LeaseRef;
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private readonly clock: Clock;
  private readonly store: LeaseStore;
  private readonly callbacks: LeaderCallbacks;
  private readonly log: Logger;
  private readonly random: () => number;
  /** The last record read or written, and when (on our clock) it was first seen. */
  private observed?: LeaseRecord;
  private observedAt = 0;
  private leading?: AbortController;
  /** When the last successful acquire or renew started (clock ms). */
  private lastRenewStart = 0;
  private readonly stopping = new AbortController();
  private loop?: Promise<void>;

  constructor(config: LeaderElectionConfig) {
    const problems = leaderElectionProblems(config);
    if (problems.length > 0) throw new LeaderElectionConfigError(problems);
    const settings = { ...LEADER_ELECTION_DEFAULTS, ...defined(config) };
    this.identity = config.identity;
    this.lease = config.lease;
    this.leaseDurationMs = settings.leaseDurationMs;
    this.renewDeadlineMs = settings.renewDeadlineMs;
    this.retryPeriodMs = settings.retryPeriodMs;
    this.clock = config.clock ?? realClock;
    this.store = config.store;
    this.callbacks = config.callbacks;
    this.log = (config.log ?? silentLogger).with({ lease: `${config.lease.namespace}/${config.lease.name}`, identity: config.identity });
    this.random = config.random ?? Math.random;
  }

  /** Starts campaigning (once). Never rejects; resolves when leadership is lost or `release()` ran. */
  run(): Promise<void> {
    this.loop ??= this.campaign().catch((err) => this.log.error("leader election loop failed", { error: apiErrorMessage(err) }));
    return this.loop;
  }

  isLeader(): boolean {
    return this.leading !== undefined;
  }

  /**
   * Whether this candidate leads *provably now*: it leads and its last successful renewal started
   * less than the renew deadline ago. A process that was paused (SIGSTOP, a long GC) may still think
   * it leads until its renew loop runs again; this says no at once, so no stale write goes out.
   */
  leadsNow(): boolean {
    return this.leading !== undefined && this.clock.now() < this.lastRenewStart + this.renewDeadlineMs;
  }

  /** The holder of the Lease as last observed ("" when none). */
  leader(): string {
    return this.observed?.holderIdentity ?? "";
  }

  /**
   * Stops campaigning and, if this candidate holds the Lease, gives it up at once (holderIdentity
   * cleared, leaseDurationSeconds 1). Call it only after the work done as leader has stopped.
   */
  async release(): Promise<void> {
    this.stopping.abort();
    await this.loop;
    if (this.observed?.holderIdentity === this.identity) await this.giveUp();
    this.stopLeading("released");
  }

  private async campaign(): Promise<void> {
    const stop = this.stopping.signal;
    this.log.info("waiting to acquire the leader lease");
    while (!stop.aborted && !(await this.tryAcquireOrRenew())) {
      await sleep(this.clock, this.retryPeriodMs * (1 + this.random() * JITTER_FACTOR), stop);
    }
    if (stop.aborted) return;
    this.leading = new AbortController();
    this.log.info("acquired the leader lease; leading");
    this.callbacks.onStartedLeading(this.leading.signal);
    this.lastRenewStart = this.observedAt;
    while (!stop.aborted) {
      await sleep(this.clock, this.retryPeriodMs, stop);
      if (stop.aborted) return;
      const renewed = await this.renewBefore(this.lastRenewStart + this.renewDeadlineMs);
      if (renewed === undefined) {
        this.log.error("could not renew the leader lease within the renew deadline; stopping leading", { renewDeadlineMs: this.renewDeadlineMs });
        this.stopLeading("lost");
        return;
      }
      this.lastRenewStart = renewed;
    }
  }

  /** Retries renewal until `deadline`; returns the start time of the attempt that succeeded, or undefined. */
  private async renewBefore(deadline: number): Promise<number | undefined> {
    const stop = this.stopping.signal;
    for (;;) {
      const start = this.clock.now();
      if (start >= deadline) return undefined;
      const expired = new AbortController();
      const timeout = sleep(this.clock, deadline - start, expired.signal).then(() => false);
      const ok = await Promise.race([this.tryAcquireOrRenew(), timeout]);
      expired.abort();
      if (ok) return start;
      // Shutting down: not a lost lease; release() decides from the observed record.
      if (stop.aborted) return start;
      if (this.clock.now() + this.retryPeriodMs >= deadline) return undefined;
      await sleep(this.clock, this.retryPeriodMs, stop);
    }
  }

  /** One round: take or renew the Lease if allowed. True when this candidate holds it afterwards. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = this.clock.now();
    try {
      const current = await this.store.get(this.lease);
      if (!current) {
        this.observe(await this.store.create(this.lease, this.record(now, undefined)), now);
        return true;
      }
      this.observe(current, this.clock.now());
      const holder = current.holderIdentity ?? "";
      if (holder !== "" && holder !== this.identity && this.clock.now() < this.observedAt + this.leaseDurationMs) return false;
      this.observe(await this.store.update(this.lease, this.record(now, current)), now);
      return true;
    } catch (err) {
      if (!(err instanceof LeaseConflictError)) this.log.error("leader lease request failed", { error: apiErrorMessage(err) });
      return false;
    }
  }

  /** The record to write at `now`: a renewal keeps acquireTime and transitions, a takeover counts one. */
  private record(now: number, current: LeaseRecord | undefined): LeaseRecord {
    const renewing = current?.holderIdentity === this.identity;
    return {
      holderIdentity: this.identity,
      leaseDurationSeconds: Math.ceil(this.leaseDurationMs / 1000),
      acquireTimeMs: renewing ? current?.acquireTimeMs : now,
      renewTimeMs: now,
      leaseTransitions: renewing ? (current?.leaseTransitions ?? 0) : (current?.leaseTransitions ?? -1) + 1,
      resourceVersion: current?.resourceVersion,
    };
  }

  private observe(record: LeaseRecord, at: number): void {
    const previous = this.observed;
    if (previous && sameRecord(previous, record)) return;
    this.observed = record;
    this.observedAt = at;
    const holder = record.holderIdentity ?? "";
    if (holder !== "" && holder !== (previous?.holderIdentity ?? "")) {
      this.log.info("new leader observed", { leader: holder });
      this.callbacks.onNewLeader?.(holder);
    }
  }

  private async giveUp(): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const current = attempt === 0 ? this.observed : await this.store.get(this.lease);
        if (current?.holderIdentity !== this.identity) return;
        const now = this.clock.now();
        this.observed = await this.store.update(this.lease, {
          ...current, holderIdentity: "", leaseDurationSeconds: 1, acquireTimeMs: now, renewTimeMs: now,
        });
        this.log.info("released the leader lease");
        return;
      } catch (err) {
        if (!(err instanceof LeaseConflictError)) {
          this.log.error("could not release the leader lease; it expires by itself", { error: apiErrorMessage(err) });
          return;
        }
      }
    }
  }

  private stopLeading(reason: StoppedReason): void {
    const leading = this.leading;
    if (!leading) return;
    this.leading = undefined;
    leading.abort();
    this.callbacks.onStoppedLeading(reason);
  }
}

/** Leases through the API server's coordination.k8s.io/v1 API, each request bounded by a timeout. */
export class KubeLeaseStore implements LeaseStore {
  private readonly api: k8s.CoordinationV1Api;
  private readonly options: k8s.ConfigurationOptions<k8s.ObservableMiddleware>;

  /** `requestTimeoutMs`: each request is aborted after this long (default 5000). */
  constructor(kubeConfig: k8s.KubeConfig, requestTimeoutMs = 5_000) {
    this.api = kubeConfig.makeApiClient(k8s.CoordinationV1Api);
    this.options = requestTimeout(requestTimeoutMs);
  }

  async get(ref: LeaseRef): Promise<LeaseRecord | undefined> {
    try {
      return fromLease(await this.api.readNamespacedLease(ref, this.options));
    } catch (err) {
      if (err instanceof k8s.ApiException && err.code === 404) return undefined;
      throw err;
    }
  }

  create(ref: LeaseRef, record: LeaseRecord): Promise<LeaseRecord> {
    return conflicts(async () => fromLease(await this.api.createNamespacedLease({ namespace: ref.namespace, body: toLease(ref, record) }, this.options)));
  }

  update(ref: LeaseRef, record: LeaseRecord): Promise<LeaseRecord> {
    return conflicts(async () => fromLease(await this.api.replaceNamespacedLease({ ...ref, body: toLease(ref, record) }, this.options)));
  }
}

async function conflicts<T>(request: () => Promise<T>): Promise<T> {
  try {
    return await request();
  } catch (err) {
    if (err instanceof k8s.ApiException && err.code === 409) throw new LeaseConflictError(`leader lease changed meanwhile: ${err.message}`);
    throw err;
  }
}

function toLease(ref: LeaseRef, r: LeaseRecord): k8s.V1Lease {
  const time = (ms?: number) => (ms === undefined ? undefined : new k8s.V1MicroTime(ms));
  return {
    apiVersion: "coordination.k8s.io/v1",
    kind: "Lease",
    metadata: { name: ref.name, namespace: ref.namespace, resourceVersion: r.resourceVersion, labels: { "app.kubernetes.io/managed-by": "kubelock" } },
    spec: {
      holderIdentity: r.holderIdentity, leaseDurationSeconds: r.leaseDurationSeconds,
      acquireTime: time(r.acquireTimeMs), renewTime: time(r.renewTimeMs), leaseTransitions: r.leaseTransitions,
    },
  };
}

function fromLease(lease: k8s.V1Lease): LeaseRecord {
  const ms = (t?: Date) => (t ? new Date(t).getTime() : undefined);
  const spec = lease.spec ?? {};
  return {
    holderIdentity: spec.holderIdentity ?? "", leaseDurationSeconds: spec.leaseDurationSeconds,
    acquireTimeMs: ms(spec.acquireTime), renewTimeMs: ms(spec.renewTime), leaseTransitions: spec.leaseTransitions,
    resourceVersion: lease.metadata?.resourceVersion,
  };
}

function sameRecord(a: LeaseRecord, b: LeaseRecord): boolean {
  if (a.resourceVersion && b.resourceVersion) return a.resourceVersion === b.resourceVersion;
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The settings that are set (an explicit undefined must not hide a default). */
function defined<T extends object>(settings: T): Partial<T> {
  return Object.fromEntries(Object.entries(settings).filter(([, v]) => v !== undefined)) as Partial<T>;
}

