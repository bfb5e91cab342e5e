/**
 * A shared-informer-style cache of one resource, fed by list + watch (client-go's Reflector + Indexer
 * + handler notification, in one small class).
 *
 * Lifecycle (`start()`):
 * 1. List, in pages of `pageSize` objects (client-go's pager): each page is a small request that
 *    cannot time out however many objects there are, and is transformed (below) before the next one
 *    arrives, so a list of a large collection never holds it whole in its full form. Replace the cache
 *    with the result and emit add/update/delete for the differences against the previous cache; an
 *    object whose resourceVersion did not change emits `update` with `old === obj`, as a resync does
 *    (client-go's Replace does the same). A relist follows a failure, so
 *    handlers re-check everything: work that failed while the server was away (and is waiting out a
 *    long backoff) runs again once it answers. The first successful list marks the informer synced
 *    (`waitForSync`, `hasSynced`).
 * 2. Watch `path` from the list's resourceVersion, with bookmarks. ADDED/MODIFIED/DELETED update the
 *    cache, then emit; BOOKMARK only advances the resourceVersion.
 * 3. The watch ends:
 *    - ERROR event with code 410 (Gone / Expired), or a 410 response: relist at once;
 *    - any other ERROR event, a failed request or a stream error: relist after backoff;
 *    - a clean end (the API server's watch timeout, `watchTimeoutSeconds`): watch again from the
 *      last resourceVersion. A watch still open 30 s after its timeout is presumed dead, aborted and
 *      re-watched the same way.
 *    Failures back off exponentially (200 ms doubling, capped at 30 s); the backoff resets once a
 *    watch delivers an event. A watch that closes cleanly within a second without delivering anything
 *    also backs off (client-go's "very short watch"), so nothing can make the loop spin.
 * 4. Every `resyncMs` (if set), emit `update` with `old === obj` for every cached object, so handlers
 *    re-check the world periodically (client-go's resync). The round is spread over the period in
 *    RESYNC_SLICES slices, so 100,000 objects mean a steady trickle of re-checks, not 100,000 keys
 *    queued at once ahead of real changes; an object cached during a round waits for the next.
 *
 * Handlers run synchronously, in order, after the cache already reflects the event; they should only
 * enqueue keys. A handler that throws is logged and does not disturb the informer or other handlers.
 *
 * What is cached of each object is what `transform` keeps (client-go's SetTransform): every object from a
 * list, a watch event or `observe` passes through it before the cache, indexes and handlers see it. The
 * default, `withoutBookkeeping`, drops `metadata.managedFields` (as controller-runtime's
 * TransformStripManagedFields) and kubectl's last-applied-configuration annotation: nothing reads them here,
 * and that bookkeeping is often the largest part of an object, so dropping it keeps a cache of tens of
 * thousands of objects small. A cache that needs only a few fields of a large kind (pods) keeps only those.
 *
 * Objects in the cache are shared: never mutate them (copy first, e.g. `structuredClone`).
 * Objects from the watch are plain JSON; `list` should return the same plain shape. Typed client-node
 * APIs (e.g. `CoreV1Api`) return class instances with `Date` fields — convert them
 * (`JSON.parse(JSON.stringify(list))`) or use `CustomObjectsApi`, which returns plain JSON.
 */
import * as k8s from "@kubernetes/client-node";
import { apiErrorMessage } from "../kube/client";
import { Clock, TimerHandle, realClock } from "./clock";

/** How many slices a resync round is spread over (one slice every resyncMs / RESYNC_SLICES). */
export const RESYNC_SLICES = 60;

/**
 * What the informer needs of an object. Objects from the API server always carry a name; the optional
 * fields just let client-node's generated types (where everything is optional) be used directly.
 */
export interface KubeObject {
  metadata?: {
    name?: string; namespace?: string; uid?: string; resourceVersion?: string; managedFields?: unknown; annotations?: Record<string, string>;
    deletionTimestamp?: unknown; finalizers?: string[];
  };
}

/** kubectl apply's copy of the last applied object, as large as the object itself. */
export const LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration";

/**
 * The object without what only the API server and kubectl read: `metadata.managedFields` and the
 * last-applied-configuration annotation. A shallow copy when anything is dropped (the object given is not
 * changed: a caller of `observe` may still use it); the object itself when there is nothing to drop.
 */
export function withoutBookkeeping<T extends KubeObject>(obj: T): T {
  const metadata = obj.metadata;
  if (!metadata || (metadata.managedFields === undefined && metadata.annotations?.[LAST_APPLIED_ANNOTATION] === undefined)) return obj;
  const { managedFields: _managedFields, ...rest } = metadata;
  const kept: NonNullable<KubeObject["metadata"]> = rest;
  if (rest.annotations?.[LAST_APPLIED_ANNOTATION] !== undefined) {
    const { [LAST_APPLIED_ANNOTATION]: _applied, ...annotations } = rest.annotations;
    kept.annotations = annotations;
  }
  return { ...obj, metadata: kept };
}

export interface InformerEvent<T> {
  type: "add" | "update" | "delete";
  /** The object now (for `delete`: its last state, from the watch or from the cache on relist). */
  obj: T;
  /** For `update`: the previously cached object (the same object on a periodic resync). */
  old?: T;
}

export type InformerHandler<T> = (event: InformerEvent<T>) => void;

/** The result of a list call: items plus the list's resourceVersion to watch from, and where the next page starts. */
export interface ListResult<T> {
  items: T[];
  metadata?: { resourceVersion?: string; continue?: string };
}

/** One page of a list: the API's `limit` and `continue` (absent: the first page). */
export interface ListPage {
  limit: number;
  continue?: string;
}

/** The part of `k8s.Watch` the informer uses (injectable for tests). */
export interface Watcher {
  watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController>;
}

/** Minimal structured logger; any logger with these methods fits. */
export interface InformerLogger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export interface InformerOptions<T> {
  kc: k8s.KubeConfig;
  /** Collection path to watch, e.g. `/apis/kubelock.io/v1alpha1/distributedlocks`, `/api/v1/namespaces/ns/pods`. */
  path: string;
  /**
   * Lists the same collection (same namespace and selectors as `path` and the selectors below). Given a
   * `page`, it passes its `limit` and `continue` to the API and returns the page with its `metadata.continue`;
   * a list that ignores `page` and returns everything at once (no `continue`) works too.
   */
  list: (page?: ListPage) => Promise<ListResult<T>>;
  /** Objects per list page (default 500, as client-go's pager); 0: one request for everything. */
  pageSize?: number;
  /** Label selector for the watch; `list` must apply the same one. */
  labelSelector?: string;
  /** Field selector for the watch; `list` must apply the same one. */
  fieldSelector?: string;
  /** Period of the full resync in ms (each object once per period, see RESYNC_SLICES); 0 or unset: none. */
  resyncMs?: number;
  clock?: Clock;
  logger?: InformerLogger;
  /** Watch implementation; default `new k8s.Watch(kc)`. */
  watcher?: Watcher;
  /** First retry delay after a failure, ms (default 200). */
  backoffBaseMs?: number;
  /** Retry delay cap, ms (default 30 000). */
  backoffMaxMs?: number;
  /**
   * Server-side watch timeout (`timeoutSeconds`). Default: random in [300, 600) per watch, as client-go's
   * reflector, so watches renew and spread out. If a watch outlives it by 30 s (a dead connection that
   * TCP has not noticed), the informer aborts it and watches again.
   */
  watchTimeoutSeconds?: number;
  /** Name in log lines; default `path`. */
  name?: string;
  /**
   * What the cache keeps of an object (default `withoutBookkeeping`). It must keep `metadata.name`, `namespace`
   * and `resourceVersion`, and everything the cache's readers, indexes and handlers read; it must return a new
   * object rather than change the one given.
   */
  transform?: (obj: T) => T;
}

/** The cache key of an object: `namespace/name`, or `name` for cluster-scoped objects. */
export function keyOf(obj: KubeObject): string {
  return objectKey(obj.metadata?.namespace, obj.metadata?.name ?? "");
}

/** The cache key for a namespace (empty or undefined: cluster-scoped) and name. */
export function objectKey(namespace: string | undefined, name: string): string {
  return namespace ? `${namespace}/${name}` : name;
}

const noopLogger: InformerLogger = { debug() {}, info() {}, error() {} };

type WatchOutcome =
  | { kind: "closed" } // the server ended the stream cleanly: re-watch from the last resourceVersion
  | { kind: "gone" } // 410: our resourceVersion is too old: relist now
  | { kind: "error"; err: unknown } // anything else: relist after backoff
  | { kind: "interrupted" }; // stop() or relist(): the loop decides

interface Index<T> {
  fn: (obj: T) => string[];
  /** index value → cache keys */
  values: Map<string, Set<string>>;
}

export class Informer<T extends KubeObject> {
  private readonly opts: InformerOptions<T>;
  private readonly clock: Clock;
  private readonly log: InformerLogger;
  private readonly watcher: Watcher;
  private readonly name: string;
  private readonly transform: (obj: T) => T;

  private readonly cache = new Map<string, T>();
  /** Objects this process saw deleted by its own write (`observe`), until their DELETED event: key → resourceVersion. */
  private readonly gone = new Map<string, string>();
  private readonly namespaces = new Map<string, Set<string>>();
  private readonly indexes = new Map<string, Index<T>>();
  private readonly handlers: InformerHandler<T>[] = [];

  private resourceVersion = "";
  private started = false;
  private stopped = false;
  private synced = false;
  private readonly syncWaiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];

  /** Ends the current watch or backoff sleep early (stop, relist). */
  private interrupt: (() => void) | undefined;
  /** Set by `relist()`: the loop lists before its next watch. */
  private relistRequested = false;
  private resyncTimer: TimerHandle | undefined;
  /** Keys of the current resync round still to be re-emitted, and how many go per slice. */
  private resyncRound: { keys: string[]; perSlice: number } | undefined;

  constructor(options: InformerOptions<T>) {
    this.opts = options;
    this.clock = options.clock ?? realClock;
    this.log = options.logger ?? noopLogger;
    this.watcher = options.watcher ?? new k8s.Watch(options.kc);
    this.name = options.name ?? options.path;
    this.transform = options.transform ?? withoutBookkeeping;
  }

  /** Registers a handler. Handlers added after start miss earlier events (use `list()` to catch up). */
  on(handler: InformerHandler<T>): void {
    this.handlers.push(handler);
  }

  /** Starts listing and watching in the background. An informer starts once; start after stop throws. */
  start(): void {
    if (this.stopped) throw new Error(`informer ${this.name}: start after stop`);
    if (this.started) return;
    this.started = true;
    this.run().catch((err) => {
      // Not expected (the loop catches list and watch failures); log rather than crash the process.
      this.log.error("informer loop crashed", { informer: this.name, error: errorText(err) });
    });
    this.scheduleResync();
  }

  /** Stops watching, resync and retries. Pending `waitForSync` calls reject if not yet synced. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.resyncTimer !== undefined) this.clock.clearTimeout(this.resyncTimer);
    this.resyncTimer = undefined;
    this.interrupt?.();
    for (const w of this.syncWaiters.splice(0)) w.reject(new Error(`informer ${this.name} stopped before it synced`));
  }

  /**
   * Aborts the current watch and lists again, as after a 410, emitting the differences. For recovery
   * and tests; normal operation never needs it.
   */
  relist(): void {
    if (!this.started || this.stopped) return;
    this.relistRequested = true;
    this.interrupt?.();
  }

  /** Resolves after the first successful list; rejects if the informer is stopped first. */
  waitForSync(): Promise<void> {
    if (this.synced) return Promise.resolve();
    if (this.stopped) return Promise.reject(new Error(`informer ${this.name} stopped before it synced`));
    return new Promise((resolve, reject) => this.syncWaiters.push({ resolve, reject }));
  }

  hasSynced(): boolean {
    return this.synced;
  }

  /** The resourceVersion of the last list, watch event or bookmark seen. */
  lastResourceVersion(): string {
    return this.resourceVersion;
  }

  /** The cached object (namespace empty or undefined for cluster-scoped objects). */
  get(namespace: string | undefined, name: string): T | undefined {
    return this.cache.get(objectKey(namespace, name));
  }

  /** Cached objects, all or in one namespace. */
  list(namespace?: string): T[] {
    if (namespace === undefined) return [...this.cache.values()];
    const keys = this.namespaces.get(namespace);
    return keys ? [...keys].map((k) => this.cache.get(k) as T) : [];
  }

  keyOf(obj: T): string {
    return keyOf(obj);
  }

  /**
   * Read-your-writes: stores an object this process just wrote (the API server's reply) when it is
   * newer than the cached one, so the next reconcile does not act on a state it already changed.
   * No handler is called now; the watch event for the same write arrives later as an ordinary update.
   * resourceVersions are compared as integers, which holds for etcd-backed API servers; anything
   * else is left to the watch. A reply that shows the object deleted (a deletionTimestamp and no
   * finalizers left: the API server deleted it as the last finalizer went; the reply keeps the last
   * resourceVersion) removes it now, with a delete event; watch events up to that version no longer
   * bring it back, and its DELETED event then tells nothing new.
   */
  observe(obj: T): void {
    const key = keyOf(obj);
    const cached = this.cache.get(key);
    if (!cached) return; // not seen yet: the watch will add it
    const rv = obj.metadata?.resourceVersion;
    if (obj.metadata?.deletionTimestamp && !obj.metadata.finalizers?.length && rv && cached.metadata?.uid === obj.metadata.uid) {
      this.gone.set(key, rv);
      this.removeKey(key, cached);
      return this.emit({ type: "delete", obj: cached });
    }
    if (!isNewer(rv, cached.metadata?.resourceVersion)) return;
    this.store(key, this.transform(obj), cached);
  }

  /**
   * Adds a secondary index: `fn` maps an object to the values it is found under with
   * `byIndex(name, value)`. May be called before or after start.
   */
  addIndex(name: string, fn: (obj: T) => string[]): void {
    if (this.indexes.has(name)) throw new Error(`informer ${this.name}: index ${name} already exists`);
    const index: Index<T> = { fn, values: new Map() };
    this.indexes.set(name, index);
    for (const [key, obj] of this.cache) this.indexAdd(index, key, obj);
  }

  /** Cached objects whose index `name` yields `value`. Throws for an unknown index. */
  byIndex(name: string, value: string): T[] {
    const index = this.indexes.get(name);
    if (!index) throw new Error(`informer ${this.name}: no index ${name}`);
    const keys = index.values.get(value);
    return keys ? [...keys].map((k) => this.cache.get(k) as T) : [];
  }

  // ---- list/watch loop ----

  private async run(): Promise<void> {
    let needList = true;
    let failures = 0;
    const backoff = async (err: unknown, what: string): Promise<void> => {
      failures++;
      const delay = Math.min((this.opts.backoffBaseMs ?? 200) * 2 ** (failures - 1), this.opts.backoffMaxMs ?? 30_000);
      this.log.error(`informer ${what} failed, retrying`, { informer: this.name, error: errorText(err), retryInMs: delay });
      await this.sleep(delay);
    };

    while (!this.stopped) {
      if (needList || this.relistRequested) {
        this.relistRequested = false;
        let result: ListResult<T>;
        try {
          result = await this.listAll();
        } catch (err) {
          if (this.stopped) break;
          await backoff(err, "list");
          needList = true;
          continue;
        }
        if (this.stopped) break;
        this.replace(result);
        needList = false;
        if (this.relistRequested) continue; // asked again while that list was in flight
      }

      let sawEvent = false;
      const watchStart = this.clock.now();
      const outcome = await this.watchOnce(() => {
        // A watch that delivers is healthy: later failures start from the base delay again.
        sawEvent = true;
        failures = 0;
      });
      if (this.stopped) break;
      switch (outcome.kind) {
        case "interrupted":
          break; // relist() asked: the flag makes the next iteration list
        case "gone":
          this.log.debug("informer watch expired (410), relisting", { informer: this.name, resourceVersion: this.resourceVersion });
          needList = true;
          break;
        case "closed":
          this.log.debug("informer watch closed, watching again", { informer: this.name, resourceVersion: this.resourceVersion });
          // As client-go's reflector: a watch that closed within a second without delivering anything
          // is a failure (something keeps cutting it), or this loop would spin. Back off, keep the
          // resourceVersion. Longer quiet watches (an idle-timeout proxy) re-watch at once.
          if (!sawEvent && this.clock.now() - watchStart < 1000) {
            await backoff(new Error("very short watch: closed within a second without delivering an event"), "watch");
          }
          break;
        case "error":
          needList = true;
          await backoff(outcome.err, "watch");
          break;
      }
    }
  }

  /**
   * One watch request from `this.resourceVersion`. Resolves when it ends, however it ends.
   * `onFirstEvent` runs at the first non-ERROR event, so the caller can reset its backoff.
   */
  private watchOnce(onFirstEvent: () => void): Promise<WatchOutcome> {
    return new Promise<WatchOutcome>((resolve) => {
      let finished = false;
      let controller: AbortController | undefined;
      let sawEvent = false;
      const timeoutSeconds = this.opts.watchTimeoutSeconds ?? Math.floor(300 * (1 + Math.random()));
      // Watchdog: client-node's Watch has no client-side timeout, so a silently dead connection would
      // otherwise hang here until TCP keepalive gives up (many minutes).
      const watchdog = this.clock.setTimeout(() => {
        this.log.info("informer watch outlived its timeout, watching again", { informer: this.name, timeoutSeconds });
        finish({ kind: "closed" });
      }, (timeoutSeconds + 30) * 1000);
      const finish = (outcome: WatchOutcome): void => {
        if (finished) return;
        finished = true;
        this.clock.clearTimeout(watchdog);
        this.interrupt = undefined;
        controller?.abort();
        resolve(outcome);
      };
      this.interrupt = () => finish({ kind: "interrupted" });

      const params: Record<string, string | number | boolean | undefined> = {
        resourceVersion: this.resourceVersion || undefined,
        allowWatchBookmarks: true,
        timeoutSeconds,
        labelSelector: this.opts.labelSelector,
        fieldSelector: this.opts.fieldSelector,
      };
      const onWatchEvent = (phase: string, apiObj: unknown): void => {
        // Lines already buffered may still arrive after we aborted: ignore them.
        if (finished) return;
        if (phase === "ERROR") {
          const status = apiObj as { code?: number; reason?: string; message?: string } | undefined;
          if (status?.code === 410) finish({ kind: "gone" });
          else finish({ kind: "error", err: new Error(`watch error event: ${status?.code ?? "?"} ${status?.reason ?? ""} ${status?.message ?? ""}`.trim()) });
          return;
        }
        const obj = apiObj as T;
        const rv = obj?.metadata?.resourceVersion;
        switch (phase) {
          case "ADDED":
          case "MODIFIED":
            this.upsert(this.transform(obj));
            break;
          case "DELETED":
            this.remove(this.transform(obj));
            break;
          case "BOOKMARK":
            break;
          default:
            this.log.debug("informer ignoring unknown watch event", { informer: this.name, type: phase });
            return;
        }
        if (rv) this.resourceVersion = rv;
        if (!sawEvent) {
          sawEvent = true;
          onFirstEvent();
        }
      };
      const onDone = (err: unknown): void => {
        if (!err) return finish({ kind: "closed" });
        const code = (err as { statusCode?: number; code?: number }).statusCode ?? (err as { code?: unknown }).code;
        finish(code === 410 ? { kind: "gone" } : { kind: "error", err });
      };

      // Watch.watch may call `done` before its promise resolves (a failed request calls done, then
      // resolves with the already-aborted controller), and rejects only for config errors.
      this.watcher.watch(this.opts.path, params, onWatchEvent, onDone).then(
        (c) => {
          controller = c;
          if (finished) c.abort();
        },
        (err) => finish({ kind: "error", err }),
      );
    });
  }

  /**
   * Lists every page, transforming each page's objects as it arrives. All pages come from the snapshot of the
   * first (the API's continue semantics); a continue token that expired (410) fails the list, which is retried
   * from the first page like any failed list.
   */
  private async listAll(): Promise<ListResult<T>> {
    const limit = this.opts.pageSize ?? 500;
    const started = this.clock.now();
    const items: T[] = [];
    let pages = 0;
    let next: string | undefined;
    for (;;) {
      const page = await this.opts.list(limit > 0 ? { limit, continue: next } : undefined);
      pages++;
      for (const obj of page.items ?? []) items.push(this.transform(obj));
      next = page.metadata?.continue || undefined;
      if (!next || this.stopped) {
        this.log.debug("informer listed", { informer: this.name, objects: items.length, pages, ms: this.clock.now() - started });
        return { items, metadata: { resourceVersion: page.metadata?.resourceVersion } };
      }
    }
  }

  /** Replaces the cache with a list result (its objects already transformed), emitting the differences. */
  private replace(result: ListResult<T>): void {
    this.gone.clear();
    const fresh = new Map<string, T>();
    for (const obj of result.items ?? []) fresh.set(keyOf(obj), obj);
    for (const [key, old] of [...this.cache]) {
      if (!fresh.has(key)) {
        this.removeKey(key, old);
        this.emit({ type: "delete", obj: old });
      }
    }
    for (const [key, obj] of fresh) {
      const old = this.cache.get(key);
      if (old && sameVersion(old, obj)) {
        this.emit({ type: "update", obj: old, old });
        continue;
      }
      this.store(key, obj, old);
      this.emit(old ? { type: "update", obj, old } : { type: "add", obj });
    }
    this.resourceVersion = result.metadata?.resourceVersion ?? "";
    if (!this.synced) {
      this.synced = true;
      this.log.debug("informer synced", { informer: this.name, objects: this.cache.size, resourceVersion: this.resourceVersion });
      for (const w of this.syncWaiters.splice(0)) w.resolve();
    }
  }

  private upsert(obj: T): void {
    const key = keyOf(obj);
    const old = this.cache.get(key);
    // An event older than the cached object would undo a later write of this process (`observe`), whose own
    // event is still to come: the cache keeps the later one, and that event tells the handlers. Likewise an
    // event of an object this process saw deleted, up to the version that showed it.
    if (old && isNewer(old.metadata?.resourceVersion, obj.metadata?.resourceVersion)) return;
    const deletedAt = this.gone.get(key);
    if (deletedAt !== undefined && !isNewer(obj.metadata?.resourceVersion, deletedAt)) return;
    this.gone.delete(key);
    this.store(key, obj, old);
    this.emit(old ? { type: "update", obj, old } : { type: "add", obj });
  }

  private remove(obj: T): void {
    const key = keyOf(obj);
    this.gone.delete(key); // its DELETED event: nothing can bring it back now
    const old = this.cache.get(key);
    if (!old) return; // never seen (or already gone): nothing to tell
    this.removeKey(key, old);
    this.emit({ type: "delete", obj });
  }

  private store(key: string, obj: T, old: T | undefined): void {
    if (old) this.unindex(key, old);
    this.cache.set(key, obj);
    const ns = obj.metadata?.namespace ?? "";
    let keys = this.namespaces.get(ns);
    if (!keys) this.namespaces.set(ns, (keys = new Set()));
    keys.add(key);
    for (const index of this.indexes.values()) this.indexAdd(index, key, obj);
  }

  private removeKey(key: string, old: T): void {
    this.unindex(key, old);
    this.cache.delete(key);
    const ns = old.metadata?.namespace ?? "";
    const keys = this.namespaces.get(ns);
    keys?.delete(key);
    if (keys?.size === 0) this.namespaces.delete(ns);
  }

  private indexAdd(index: Index<T>, key: string, obj: T): void {
    for (const value of this.indexValues(index, obj)) {
      let keys = index.values.get(value);
      if (!keys) index.values.set(value, (keys = new Set()));
      keys.add(key);
    }
  }

  private unindex(key: string, old: T): void {
    for (const index of this.indexes.values()) {
      for (const value of this.indexValues(index, old)) {
        const keys = index.values.get(value);
        keys?.delete(key);
        if (keys?.size === 0) index.values.delete(value);
      }
    }
  }

  /** An index function that throws indexes the object under nothing (and is logged). */
  private indexValues(index: Index<T>, obj: T): string[] {
    try {
      return index.fn(obj) ?? [];
    } catch (err) {
      this.log.error("informer index function failed", { informer: this.name, object: keyOf(obj), error: errorText(err) });
      return [];
    }
  }

  private emit(event: InformerEvent<T>): void {
    for (const handler of this.handlers) {
      try {
        handler(event);
      } catch (err) {
        this.log.error("informer event handler failed", { informer: this.name, type: event.type, object: keyOf(event.obj), error: errorText(err) });
      }
    }
  }

  private scheduleResync(): void {
    const period = this.opts.resyncMs ?? 0;
    if (!(period > 0) || this.stopped) return;
    this.resyncTimer = this.clock.setTimeout(() => {
      this.resyncTimer = undefined;
      if (this.stopped) return;
      if (this.synced) this.resyncSlice();
      this.scheduleResync();
    }, period / RESYNC_SLICES);
  }

  /** Re-emits the next slice of the round (a new round starts with every key cached now). */
  private resyncSlice(): void {
    if (!this.resyncRound?.keys.length) {
      const keys = [...this.cache.keys()].reverse(); // popped from the end: cache order
      this.resyncRound = { keys, perSlice: Math.ceil(keys.length / RESYNC_SLICES) };
    }
    const { keys, perSlice } = this.resyncRound;
    for (let i = 0; i < perSlice && keys.length > 0; i++) {
      const obj = this.cache.get(keys.pop()!);
      if (obj) this.emit({ type: "update", obj, old: obj }); // gone meanwhile: its delete was emitted
    }
  }

  /** Sleeps on the clock; `stop()` or `relist()` cut it short. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = this.clock.setTimeout(() => {
        this.interrupt = undefined;
        resolve();
      }, ms);
      this.interrupt = () => {
        this.interrupt = undefined;
        this.clock.clearTimeout(timer);
        resolve();
      };
    });
  }
}

/** Same object version: both have a resourceVersion and it is equal. */
function sameVersion(a: KubeObject, b: KubeObject): boolean {
  const rv = a.metadata?.resourceVersion;
  return rv !== undefined && rv !== "" && rv === b.metadata?.resourceVersion;
}

function errorText(err: unknown): string {
  if (err instanceof k8s.ApiException) return apiErrorMessage(err);
  if (err instanceof Error) {
    const code = (err as { statusCode?: number }).statusCode;
    return code ? `${err.message} (HTTP ${code})` : err.message;
  }
  return String(err);
}

/** Whether resourceVersion `a` is later than `b`, when both are integers (etcd revisions). */
function isNewer(a: string | undefined, b: string | undefined): boolean {
  if (!a || !b || !/^\d+$/.test(a) || !/^\d+$/.test(b)) return false;
  return BigInt(a) > BigInt(b);
}
