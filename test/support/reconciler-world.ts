/**
 * The lock reconciler over an in-memory backend and fake caches, one pass at a time: the API server's objects, the
 * caches the operator reads (they follow the server through the reconciler's own writes unless a test says
 * otherwise), and the writes it made.
 */
import * as k8s from "@kubernetes/client-node";
import { LOCK_PLURAL, RELEASE_FINALIZER, type DistributedLock, type LockClaim } from "../../src/api/types";
import type { AcquireRequest, FencingRecord, Hold, LockBackend } from "../../src/backends/backend";
import { BackendRegistry } from "../../src/backends/registry";
import { ClaimIndex, type OperatorContext } from "../../src/controllers/context";
import { LockReconciler } from "../../src/controllers/lock-reconciler";
import { createLogger } from "../../src/log";
import { FakeClock } from "../../src/runtime/clock";

export const CLUSTER = "here";
export const NS = "ns";
const notFound = () => new k8s.ApiException(404, "not found", {}, {});

/** A lock or a claim as the fake API server stores it. */
type Stored = { metadata: Record<string, unknown> };

/**
 * Holds in memory, by holderId; a hold made with `hold()` alone counts on every backend key, one taken by tryAcquire
 * on its own key. `beforeAcquire` runs inside each tryAcquire, before the slot is taken. Tokens come from one counter;
 * with `fencingRecord` "counter" it is raised to the caller's fencingFloor, as Redis and PostgreSQL do.
 */
export class MemoryBackend {
  readonly holds = new Map<string, Hold>();
  private readonly keys = new Map<string, string>();
  /** The last token handed out (set it lower to play a backend that lost its data). */
  token = 0;
  beforeAcquire?: (req: AcquireRequest) => void;
  /** As the backend declares it (read when the reconciler first uses the backend); absent is "revision". */
  fencingRecord?: FencingRecord;

  /** `now`: the time holds are taken and renewed at (their acquireTime and renewTime). */
  constructor(private readonly now: () => number = () => 0) {}

  hold(holderId: string, claim: string, cluster = CLUSTER, key?: string): void {
    const at = new Date(this.now()).toISOString();
    this.holds.set(holderId, { holderId, claim, holderIdentity: claim, cluster, fencingToken: String(++this.token), acquireTime: at, renewTime: at });
    if (key !== undefined) this.keys.set(holderId, key);
  }

  /** The holds on `key`. */
  on(key: string): Hold[] {
    return [...this.holds.values()].filter((h) => (this.keys.get(h.holderId) ?? key) === key);
  }

  backend(): LockBackend {
    const record = () => this.fencingRecord;
    return {
      name: "memory",
      get fencingRecord() {
        return record();
      },
      tryAcquire: async (req) => {
        this.beforeAcquire?.(req);
        if (!this.holds.has(req.holderId)) {
          if (this.on(req.key).length >= req.maxHolders) return undefined;
          if (this.fencingRecord === "counter") this.token = Math.max(this.token, Number(req.fencingFloor ?? 0));
          this.hold(req.holderId, req.claim, req.cluster, req.key);
        }
        return this.holds.get(req.holderId);
      },
      renew: async (_key, holderId) => {
        const hold = this.holds.get(holderId);
        if (hold) this.holds.set(holderId, { ...hold, renewTime: new Date(this.now()).toISOString() });
        return this.holds.get(holderId);
      },
      release: async (_key, holderId) => this.holds.delete(holderId),
      holders: async (key) => this.on(key),
      waiting: async () => [],
      watch: () => () => undefined,
      close: async () => undefined,
    };
  }
}

/** The API server's objects and the caches the operator reads (the caches follow the server unless told otherwise). */
export class World {
  readonly clock = new FakeClock(1_000_000);
  readonly server = { locks: new Map<string, DistributedLock>(), claims: new Map<string, LockClaim>() };
  readonly cache = { locks: new Map<string, DistributedLock>(), claims: new Map<string, LockClaim>() };
  readonly memory = new MemoryBackend(() => this.clock.now());
  /** Finalizer writes, as `plural/name: [finalizers]`. */
  readonly finalizerWrites: string[] = [];
  /** Live claim reads (orphan evidence). */
  readonly liveReads: string[] = [];
  /** Status writes, as `plural/name`. */
  readonly statusWrites: string[] = [];
  private version = 1;
  reconciler: LockReconciler;
  private readonly ctx: OperatorContext;

  constructor() {
    const backends = new BackendRegistry();
    backends.add(this.memory.backend());
    const byName = <T extends DistributedLock | LockClaim>(map: Map<string, T>) => ({
      get: (_ns: string, name: string) => map.get(name),
      observe: (obj: T) => void map.set(obj.metadata.name, obj),
    });
    const claims = this.cache.claims;
    const ctx = {
      caches: {
        locks: byName(this.cache.locks),
        claims: {
          ...byName(claims),
          byIndex: (index: string, value: string) => [...claims.values()].filter((c) =>
            index === ClaimIndex.byLock ? `${c.metadata.namespace}/${c.spec.lockName}` === value : c.metadata.uid === value),
        },
        pods: { get: () => undefined },
      },
      client: {
        patchStatus: async (plural: string, meta: { name: string }, _before: unknown, status: unknown) => {
          this.statusWrites.push(`${plural}/${meta.name}`);
          return this.write(plural, meta.name, (o) => ({ ...o, status }));
        },
        setFinalizers: async (plural: string, meta: { name: string }, finalizers: string[]) => {
          this.finalizerWrites.push(`${plural}/${meta.name}: [${finalizers.join(",")}]`);
          return this.write(plural, meta.name, (o) => ({ ...o, metadata: { ...o.metadata, finalizers } }));
        },
        getClaim: async (_ns: string, name: string) => {
          this.liveReads.push(name);
          const claim = this.server.claims.get(name);
          if (!claim) throw notFound();
          return claim;
        },
        lockExists: async (_ns: string, name: string) => this.server.locks.has(name),
      },
      events: { record: () => undefined },
      backends,
      defaultBackend: "memory",
      clusterName: CLUSTER,
      clock: this.clock,
      log: createLogger("error", {}, () => true),
      enqueueLock: () => undefined,
    } as unknown as OperatorContext;
    this.ctx = ctx;
    this.reconciler = new LockReconciler(ctx);
  }

  /** A new operator process on the same server, caches and backend: it remembers nothing of the last one. */
  restartOperator(): void {
    this.reconciler.stopAll();
    this.reconciler = new LockReconciler(this.ctx);
  }

  lock(name: string, extra: Partial<DistributedLock["metadata"]> = {}, key = "shared"): DistributedLock {
    const lock = { apiVersion: "kubelock.io/v1alpha1", kind: "DistributedLock", metadata: { name, namespace: NS, uid: `lock-${name}`, resourceVersion: String(this.version++), finalizers: [RELEASE_FINALIZER], ...extra }, spec: { key } } as DistributedLock;
    this.server.locks.set(name, lock);
    this.cache.locks.set(name, lock);
    return lock;
  }

  claim(name: string, lockName: string, extra: Partial<LockClaim> = {}): LockClaim {
    const claim = { apiVersion: "kubelock.io/v1alpha1", kind: "LockClaim", metadata: { name, namespace: NS, uid: `uid-${name}`, resourceVersion: String(this.version++), creationTimestamp: new Date(0).toISOString() }, spec: { lockName }, ...extra } as LockClaim;
    this.server.claims.set(name, claim);
    this.cache.claims.set(name, claim);
    return claim;
  }

  /** The claim is deleted: gone from the server; the watch's DELETE event takes it out of the cache and tells the reconciler. */
  deleteClaim(name: string): void {
    const claim = this.server.claims.get(name)!;
    this.server.claims.delete(name);
    this.cache.claims.delete(name);
    this.reconciler.followClaim(claim, true);
  }

  reconcile(lock: string): Promise<{ requeueAfterMs?: number } | void> {
    return this.reconciler.reconcile(`${NS}/${lock}`);
  }

  holders(): string[] {
    return [...this.memory.holds.keys()].sort();
  }

  private async write(plural: string, name: string, change: (o: Stored) => Stored): Promise<unknown> {
    const map = (plural === LOCK_PLURAL ? this.server.locks : this.server.claims) as unknown as Map<string, Stored>;
    const current = map.get(name);
    if (!current) throw notFound();
    const written = change(current);
    written.metadata = { ...written.metadata, resourceVersion: String(this.version++) };
    map.set(name, written);
    return written;
  }
}

/** A lock `item` with `first` granted and `second` waiting behind it, 100 ms ago. */
export async function handoffWorld(record: FencingRecord): Promise<World> {
  const world = new World();
  world.memory.fencingRecord = record;
  world.lock("item");
  world.claim("first", "item");
  world.claim("second", "item");
  await world.reconcile("item");
  if (world.server.claims.get("first")?.status?.phase !== "Granted") throw new Error("the first claim was not granted");
  world.clock.advance(100);
  return world;
}
