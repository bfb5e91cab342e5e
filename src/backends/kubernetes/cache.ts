/**
 * The kubernetes backend's read cache: one list + watch per namespace (and API server and user) over every
 * kubelock slot, waiter and legacy counter Lease there, shared by every backend instance in the process.
 *
 * Reads come from it once it is synced (listed, and its watch connected); until then, and whenever the
 * watch is down, `leases()` answers undefined and the backend lists the key itself. Writes of this process
 * go in at once from their responses (`put`, `deleted`), so a process reads its own writes; in production the
 * leading operator is the only writer of its namespaces' kubelock Leases, so its cache is current.
 *
 * Every change is ordered by resourceVersion (the store's revision, a decimal integer): an event or list item
 * no newer than what the cache holds for that name is ignored, and a deletion leaves a tombstone until the
 * watch reports it, so a late event cannot bring back a Lease this process deleted. A stale entry can only
 * make a conditional write fail (409), never let one through: the backend writes with the resourceVersion
 * it read, and reads the key afresh (`merge`) after a conflict.
 */
import * as k8s from "@kubernetes/client-node";
import { isUnavailable } from "./errors";
import { MANAGED_BY, MANAGED_BY_LABEL, KEY_LABEL, ROLE_LABEL } from "./labels";

/** The API server ends each watch after about this long; the cache lists and watches again. */
const WATCH_TIMEOUT_SECONDS = 300;
const LIST_PAGE = 500;
const DECIMAL = /^(0|[1-9][0-9]*)$/;

/** A change the cache took in: a Lease added, changed or deleted; `resync` after a (re)list (anything may have changed); `down` when it could not list. */
export type CacheEvent =
  | { type: "changed"; lease: k8s.V1Lease }
  | { type: "deleted"; lease: k8s.V1Lease }
  | { type: "resync" }
  | { type: "down" };

interface Entry {
  /** Undefined: a tombstone (deleted at or after `version`). */
  lease?: k8s.V1Lease;
  version?: bigint;
}

/** Where a cache lists and watches from (the API server; a stub in tests). */
export interface LeaseSource {
  /** One page of the namespace's kubelock Leases. */
  list(next: string | undefined): Promise<k8s.V1LeaseList>;
  /** Watches from `resourceVersion`; `done` when the watch ends. Resolves once connected. */
  watch(resourceVersion: string | undefined, onEvent: (type: string, lease: k8s.V1Lease) => void, done: () => void): Promise<AbortController>;
}

const caches = new Map<string, LeaseCache>();

export class LeaseCache {
  private users = 0;
  private synced = false;
  private stopped = false;
  private controller?: AbortController;
  private retryTimer?: NodeJS.Timeout;
  private idleTimer?: NodeJS.Timeout;
  private backoffMs = 250;
  /** Ends the current list + watch (then it lists and watches again). */
  private endCurrent?: () => void;
  /** Entries by key label, then by name. */
  private readonly entries = new Map<string, Map<string, Entry>>();
  private readonly subscribers = new Set<(event: CacheEvent) => void>();

  /** A cache of its own (tests); backends share the process's through `open`. Lists and watches from `start`. */
  constructor(private readonly source: LeaseSource, private readonly id = "") {}

  /** The process's cache for `namespace` on this kubeconfig's server and user, started on first use; `close` when done. */
  static open(kubeConfig: k8s.KubeConfig, namespace: string, requestOptions: k8s.ConfigurationOptions<k8s.ObservableMiddleware>): LeaseCache {
    const id = `${kubeConfig.getCurrentCluster()?.server ?? ""}\n${kubeConfig.getCurrentUser()?.name ?? ""}\n${namespace}`;
    let cache = caches.get(id);
    if (!cache) {
      cache = new LeaseCache(apiSource(kubeConfig, namespace, requestOptions), id);
      caches.set(id, cache);
      cache.start();
    }
    cache.users++;
    return cache;
  }

  start(): void {
    void this.connect();
  }

  close(): void {
    if (--this.users > 0) return;
    this.stop();
  }

  stop(): void {
    this.stopped = true;
    this.synced = false;
    if (caches.get(this.id) === this) caches.delete(this.id);
    clearTimeout(this.retryTimer);
    clearTimeout(this.idleTimer);
    this.controller?.abort();
    this.subscribers.clear();
  }

  /**
   * A request to the server failed as if it were unreachable: reads list again until a new list + watch
   * is up (the watch may not have noticed yet, e.g. a connection that went silent).
   */
  invalidate(): void {
    this.synced = false;
    this.endCurrent?.();
  }

  /** Calls `onEvent` with every change the cache takes in; returns a function that stops it. */
  subscribe(onEvent: (event: CacheEvent) => void): () => void {
    this.subscribers.add(onEvent);
    return () => this.subscribers.delete(onEvent);
  }

  /** The key's Leases, or undefined while the cache is not synced (then list them). */
  leases(label: string): k8s.V1Lease[] | undefined {
    if (!this.synced) return undefined;
    return [...(this.entries.get(label)?.values() ?? [])].flatMap((e) => (e.lease ? [e.lease] : []));
  }

  /** A Lease as a write of this process returned it. */
  put(lease: k8s.V1Lease): void {
    this.apply(lease, false);
  }

  /** A Lease this process deleted, as it last read it (the delete was conditional on that version). */
  deleted(lease: k8s.V1Lease): void {
    this.apply(lease, true);
  }

  /**
   * A fresh LIST of one key's Leases (made at `listVersion`): newer items replace what the cache holds, and
   * cached Leases of the key the list no longer has, if not newer than it, are gone.
   */
  merge(label: string, items: k8s.V1Lease[], listVersion: string | undefined): void {
    const listed = new Set(items.map((lease) => lease.metadata?.name));
    for (const lease of items) this.apply(lease, false);
    const at = version(listVersion);
    for (const [name, entry] of this.entries.get(label) ?? []) {
      if (!entry.lease || listed.has(name)) continue;
      if (at !== undefined && entry.version !== undefined && entry.version <= at) this.apply({ ...entry.lease, metadata: { ...entry.lease.metadata, resourceVersion: listVersion } }, true);
    }
  }

  private apply(lease: k8s.V1Lease, deleted: boolean): void {
    const name = lease.metadata?.name;
    const label = lease.metadata?.labels?.[KEY_LABEL];
    if (!name || !label) return;
    const next = version(lease.metadata?.resourceVersion);
    let byName = this.entries.get(label);
    const current = byName?.get(name);
    // Not newer than what is held: an event or list older than a write (or a delete) this process already took in.
    if (current?.version !== undefined && next !== undefined && next <= current.version && !(deleted && current.lease && next === current.version)) return;
    if (!byName) this.entries.set(label, (byName = new Map()));
    if (deleted) {
      if (!current?.lease && current) return;
      byName.set(name, { version: next });
      this.emit({ type: "deleted", lease });
    } else {
      byName.set(name, { lease, version: next });
      this.emit({ type: "changed", lease });
    }
  }

  /** The watch reported a deletion: the tombstone (or entry) goes. */
  private removed(lease: k8s.V1Lease): void {
    const name = lease.metadata?.name ?? "";
    const label = lease.metadata?.labels?.[KEY_LABEL] ?? "";
    const byName = this.entries.get(label);
    const current = byName?.get(name);
    if (!byName || !current) return;
    const next = version(lease.metadata?.resourceVersion);
    if (current.version !== undefined && next !== undefined && next < current.version) return; // re-created since
    byName.delete(name);
    if (byName.size === 0) this.entries.delete(label);
    if (current.lease) this.emit({ type: "deleted", lease });
  }

  private emit(event: CacheEvent): void {
    for (const subscriber of [...this.subscribers]) subscriber(event);
  }

  /** Lists, then watches from the list's resourceVersion; on any end, lists again (with backoff). */
  private async connect(): Promise<void> {
    if (this.stopped) return;
    this.retryTimer = undefined;
    const connectedAt = Date.now();
    let ended = false;
    let controller: AbortController | undefined;
    const end = () => {
      if (ended) return;
      ended = true;
      this.synced = false;
      clearTimeout(this.idleTimer);
      controller?.abort();
      if (this.controller === controller) this.controller = undefined;
      if (this.stopped) return;
      // A connection that lasted a while was healthy: start the backoff over.
      if (Date.now() - connectedAt > 10_000) this.backoffMs = 250;
      const delay = this.backoffMs * (0.5 + Math.random() / 2);
      this.backoffMs = Math.min(this.backoffMs * 2, 10_000);
      this.retryTimer = setTimeout(() => void this.connect(), delay);
    };
    this.endCurrent = end;
    // The server ends the watch within WATCH_TIMEOUT_SECONDS; if nothing arrives for longer, the connection is dead.
    const armIdle = () => {
      clearTimeout(this.idleTimer);
      this.idleTimer = setTimeout(end, (WATCH_TIMEOUT_SECONDS + 30) * 1000);
      this.idleTimer.unref();
    };
    try {
      // In pages, each a small request that cannot run into the request timeout; all from the first page's snapshot.
      const items: k8s.V1Lease[] = [];
      let listVersion: string | undefined;
      let next: string | undefined;
      do {
        const page = await this.source.list(next);
        items.push(...page.items);
        listVersion ??= page.metadata?.resourceVersion;
        next = page.metadata?._continue;
      } while (next && !this.stopped);
      if (this.stopped) return;
      this.replace(items, listVersion);
      armIdle();
      controller = await this.source.watch(listVersion, (type, object) => {
        if (ended) return;
        armIdle();
        if (type === "ERROR") return end(); // 410 Gone among others: list again
        if (type === "BOOKMARK") return;
        if (type === "DELETED") this.removed(object);
        else this.apply(object, false);
      }, () => end());
      if (this.stopped || ended) {
        controller.abort();
        return;
      }
      this.controller = controller;
      this.synced = true;
      this.emit({ type: "resync" });
    } catch (err) {
      // Could not list or connect. Only a server (or a way to it) that is down makes observations start afresh;
      // a refusal (a namespace gone, RBAC) is tried again all the same.
      if (isUnavailable(err)) this.emit({ type: "down" });
      end();
    }
  }

  /**
   * A full list made at `listVersion`: the cache becomes it, except for what this process wrote or deleted after
   * the list's snapshot (a write answered while the list was under way): such an entry is newer than the list's
   * item of that name, or than the list itself when it has none, and stays (the watch from `listVersion` brings its
   * event). Without that, a Lease this process had just created would be missing from reads until its event came,
   * and a release in between would find nothing to delete.
   */
  private replace(items: k8s.V1Lease[], listVersion: string | undefined): void {
    const at = version(listVersion);
    const before = [...this.entries].flatMap(([label, byName]) => [...byName].map(([name, entry]) => ({ label, name, entry })));
    this.entries.clear();
    const set = (label: string, name: string, entry: Entry) => {
      let byName = this.entries.get(label);
      if (!byName) this.entries.set(label, (byName = new Map()));
      byName.set(name, entry);
    };
    for (const lease of items) {
      const name = lease.metadata?.name;
      const label = lease.metadata?.labels?.[KEY_LABEL];
      if (name && label) set(label, name, { lease, version: version(lease.metadata?.resourceVersion) });
    }
    for (const { label, name, entry } of before) {
      if (entry.version === undefined) continue;
      // Listed: what the cache held stays when it is of that version or newer (a tombstone of that version: this
      // process deleted it after the snapshot). Not listed: when it is newer than the list.
      const listed = this.entries.get(label)?.get(name);
      if (listed ? listed.version !== undefined && entry.version >= listed.version : at !== undefined && entry.version > at) set(label, name, entry);
    }
  }
}

/** The API server's list and watch of a namespace's kubelock Leases (every role that has a key label). */
function apiSource(kubeConfig: k8s.KubeConfig, namespace: string, requestOptions: k8s.ConfigurationOptions<k8s.ObservableMiddleware>): LeaseSource {
  const api = kubeConfig.makeApiClient(k8s.CoordinationV1Api);
  const labelSelector = `${MANAGED_BY_LABEL}=${MANAGED_BY},${ROLE_LABEL},${KEY_LABEL}`;
  // The server ends each watch after timeoutSeconds (spread, so caches do not list at once); the cache watches again.
  const timeoutSeconds = () => Math.round(WATCH_TIMEOUT_SECONDS * (0.8 + Math.random() * 0.2));
  return {
    list: (next) => api.listNamespacedLease({ namespace, labelSelector, limit: LIST_PAGE, _continue: next }, requestOptions),
    watch: (resourceVersion, onEvent, done) => new k8s.Watch(kubeConfig).watch(
      `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/leases`,
      { labelSelector, timeoutSeconds: timeoutSeconds(), resourceVersion, allowWatchBookmarks: true },
      onEvent,
      () => done(),
    ),
  };
}

/** A resourceVersion as a number, or undefined when it is not a decimal integer (then nothing is ordered by it). */
function version(value: string | undefined): bigint | undefined {
  return value !== undefined && DECIMAL.test(value) ? BigInt(value) : undefined;
}
