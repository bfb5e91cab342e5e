/**
 * The built-in backend: `coordination.k8s.io/v1` Lease objects in the lock's own namespace, so it needs
 * nothing but the API server, and namespaces stay trust boundaries (the backend key `<namespace>/<key>`
 * names the namespace the Leases live in).
 *
 * Objects per key (`<k>` is the key itself when it makes a valid object name, else a short sha256 of it):
 *
 * - `kubelock-<k>-<slot>`, one Lease per slot (0 .. maxHolders-1). `spec.holderIdentity` is the holder's
 *   claim UID; `leaseDurationSeconds`, `acquireTime`, `renewTime` and `leaseTransitions` mean what they
 *   mean on any Lease; annotations carry the HolderInfo and, once renewed, the fencing token. A slot is free
 *   when its Lease is missing, has no holderIdentity, or has not changed for `leaseDurationSeconds` as this
 *   process observed it (its resourceVersion, first seen on this process's own clock: see runtime/observed.ts).
 *   renewTime is written for people and tools; expiry never compares it, a timestamp from another machine,
 *   with the local clock. A Lease seen for the first time (after a restart or failover) counts as renewed
 *   then: expiry is judged late, never early. Released slots are deleted, so per-item locks leave nothing.
 * - `kubelock-<k>-q-<h>`, a waiter's place in the key's queue (`<h>`: a hash of its claim UID). `spec.holderIdentity`
 *   is the claim UID; its ticket (its place) is the resourceVersion its creation wrote, so tickets increase in the
 *   order waiters join, across every operator (as etcd's concurrency.Mutex orders by create revision). A waiter
 *   takes a slot when fewer than maxHolders slots are held and no live waiter has a smaller ticket than the free
 *   ones allow; it expires like a slot, unchanged for its leaseDurationSeconds (its operator refreshes it every
 *   quarter of that). It stays while its holder holds a slot (not counted in the queue then) and goes with the release.
 *
 * Fencing tokens are the API server's resourceVersions, its etcd's revision: one counter for the whole store,
 * raised by every write. A hold's token is the resourceVersion of the write that acquired it (creating the slot
 * Lease, or taking over a free one by a conditional update that drops the old token), so a grant made after
 * another always has a larger token, across keys being deleted and made again and operator restarts. The next
 * write to the slot (a renewal, conditional on the resourceVersion it read) stamps that value into annotation
 * `kubelock.io/fencing-token`, which keeps it from then on; until then the token is the Lease's resourceVersion.
 * A waiter's ticket is kept the same way (`kubelock.io/queue-ticket`). Only kubelock writes these Leases (the
 * admission policy in deploy/ sees to it): a foreign write before the first renewal would raise the token,
 * never lower it. A resourceVersion that is not a decimal integer (an API server not backed by etcd) is refused
 * with BackendUnavailableError. The caller's `fencingFloor` guards against an etcd restored from a backup
 * (revisions going back): the reconciler refuses a token at or below it.
 *
 * Upgrades: earlier versions drew tokens from a per-key counter Lease, `kubelock-<k>-fencing` (annotation
 * `kubelock.io/fencing-counter`). It is read, never written. Every counter increment was a write, so the counter
 * is below the store's revision unless a caller's floor raised it above; a grant whose revision is not above the
 * key's counter is undone and refused (BackendUnavailableError), so tokens never go back across the upgrade.
 * The counter is deleted with the release of a hold above it that leaves the key no other Lease. With it gone
 * the key keeps nothing besides holds and queue entries, so this backend has no `forget`. The per-namespace
 * `kubelock.fencing-floor` Lease that the one version before this wrote (retired counters' values, for keys
 * used again) is neither read nor written: like a counter it is below the store's revision unless a caller's
 * floor raised one above it. During a rolling update from a counter version, a replica of that version finds no
 * token on a hold this version granted until its first renewal stamps one: renewing it, that replica sees the
 * hold gone and may show the claim Lost (never a second grant). Update while no claim is granted, or accept that.
 *
 * Every Lease is labelled `app.kubernetes.io/managed-by=kubelock`, `kubelock.io/role` and `kubelock.io/key=<key or hash>`.
 *
 * Requests: reads come from the namespace's LeaseCache (cache.ts: one list + watch per namespace, shared in the
 * process, with this process's writes put in at once); until it is synced, or while its watch is down, a read
 * lists the key's Leases. An uncontended acquire is ONE write (create the slot, or a conditional update of a
 * free one) and a release ONE conditional delete (two at once when a queue entry goes too); a renewal is one
 * conditional merge patch. Every write carries the resourceVersion it read (or creates), so a stale cache can
 * only make a write fail (409): the call then reads the key afresh (a LIST) and decides again. A renewal that
 * finds no hold in the cache looks again with a LIST before saying the hold is gone.
 */
import { createHash } from "node:crypto";
import * as k8s from "@kubernetes/client-node";
import { apiErrorMessage, requestTimeout, statusCode } from "../../kube/client";
import {
  BackendUnavailableError,
  type AcquireRequest,
  type HandOff,
  type Hold,
  type HolderInfo,
  type LockBackend,
  type QueueState,
  type WaiterWatch,
} from "../backend";
import { LeaseCache, type CacheEvent } from "./cache";
import { isUnavailable } from "./errors";
import { KEY_LABEL, MANAGED_BY, MANAGED_BY_LABEL, ROLE_COUNTER, ROLE_LABEL, ROLE_SLOT, ROLE_WAITER } from "./labels";
import { NamespaceWatch } from "./watch";
import { monotonicNow, ObservedVersions } from "../../runtime/observed";
import { splitLockKey } from "../kit/lock-key";
import { orderOf } from "../kit/fan-out";
import { holderInfo } from "../kit/queue-state";

export { KEY_LABEL, MANAGED_BY, MANAGED_BY_LABEL, ROLE_LABEL, ROLE_SLOT, ROLE_WAITER } from "./labels";
export const KEY_ANNOTATION = "kubelock.io/key";
export const FENCING_COUNTER_ANNOTATION = "kubelock.io/fencing-counter";
export const FENCING_TOKEN_ANNOTATION = "kubelock.io/fencing-token";
export const CLAIM_ANNOTATION = "kubelock.io/claim";
export const HOLDER_IDENTITY_ANNOTATION = "kubelock.io/holder-identity";
export const CLUSTER_ANNOTATION = "kubelock.io/cluster";
export const QUEUE_TICKET_ANNOTATION = "kubelock.io/queue-ticket";

const NAME_PREFIX = "kubelock-";
const COUNTER_SUFFIX = "-fencing";
/** Longest suffix planned for (a waiter's "-q-" and 10 hex digits): keys longer than this allows are hashed. */
const MAX_SUFFIX = 13;
const MAX_NAME = 253;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const DECIMAL = /^(0|[1-9][0-9]*)$/;

const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
const RENEW_ATTEMPTS = 8;
const RELEASE_ATTEMPTS = 8;

export interface KubernetesLeaseBackendOptions {
  name: string;
  kubeConfig: k8s.KubeConfig;
  /** Milliseconds since the epoch; stamps acquire and renew times. Given, it also times observations (expiry). */
  clock?: () => number;
  /** Each API request fails with BackendUnavailableError after this long. Default 10 s. */
  requestTimeoutMs?: number;
}

/** Where a backend key's Leases live and what they are called. */
interface KeyRef {
  key: string;
  namespace: string;
  /** The object name fragment: the key, or a hash of it when the key cannot be part of a name. */
  fragment: string;
  /** The `kubelock.io/key` label value: the key, or a hash of it when the key is no label value. */
  label: string;
  /** The legacy counter's name (earlier versions). */
  counterName: string;
  slotPattern: RegExp;
}

interface Slot {
  index: number;
  lease: k8s.V1Lease;
}

interface KeyState {
  slots: Slot[];
  /** Waiter Leases by ticket (the queue), expired ones included. */
  waiters: k8s.V1Lease[];
  /** The counter Lease of an earlier version, if one is left. */
  counter?: k8s.V1Lease;
}

export class KubernetesLeaseBackend implements LockBackend {
  readonly name: string;
  readonly fencingRecord = "api-store";
  private readonly api: k8s.CoordinationV1Api;
  private readonly kubeConfig: k8s.KubeConfig;
  private readonly clock: () => number;
  /** Times observations: the monotonic clock unless a clock was injected. */
  private readonly observationClock: () => number;
  private readonly requestTimeoutMs: number;
  private readonly requestOptions: k8s.ConfigurationOptions<k8s.ObservableMiddleware>;
  /** requestOptions plus `Content-Type: application/merge-patch+json`. */
  private readonly mergePatchOptions: k8s.ConfigurationOptions<k8s.ObservableMiddleware>;
  /** The namespaces' caches this backend uses, with its subscription to each. */
  private readonly caches = new Map<string, { cache: LeaseCache; unsubscribe: () => void }>();
  private readonly namespaceWatches = new Map<string, NamespaceWatch>();
  /** When this process first saw each slot Lease's resourceVersion, by key (shared with the watches). */
  private readonly observed = new ObservedVersions();
  private closed = false;

  constructor(options: KubernetesLeaseBackendOptions) {
    this.name = options.name;
    this.kubeConfig = options.kubeConfig;
    this.api = options.kubeConfig.makeApiClient(k8s.CoordinationV1Api);
    this.clock = options.clock ?? Date.now;
    this.observationClock = options.clock ?? monotonicNow;
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    // client-node 1.x has no request timeout setting: a per-call middleware gives every request an
    // AbortSignal (it covers connecting, sending and reading the body). Connection reuse comes from
    // the KubeConfig (kube/connection-reuse.ts).
    this.requestOptions = requestTimeout(this.requestTimeoutMs);
    this.mergePatchOptions = k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch, this.requestOptions);
  }

  async tryAcquire(req: AcquireRequest): Promise<Hold | undefined> {
    checkRequest(req);
    const ref = keyRef(req.key);
    // Each lost race means another contender made progress; the bound only stops a livelock.
    const attempts = Math.min(10 + 2 * req.maxHolders, 60);
    for (let attempt = 0; attempt < attempts; attempt++) {
      // The cache first; after a lost race (the cache was behind), a fresh list.
      const fresh = attempt > 0;
      const state = await this.load(ref, fresh);
      const mine = state.slots.find((s) => s.lease.spec?.holderIdentity === req.holderId && !this.expired(s.lease));
      if (mine) {
        // Re-attach, same token, written anew: an observer that judged the slot expired (its owner restarted and
        // sees it afresh) must see it renewed before it could take it; a renewal that finds it changed: look again.
        const renewed = await this.renewSlot(ref, mine.lease, req.leaseDurationSeconds);
        if (renewed) return renewed;
        continue;
      }
      if (!this.turnCame(state, req)) {
        // A caller that does not wait has no watch to wake it if the cache was behind: a list says for sure.
        if (!req.wait && !fresh) continue;
        if (req.wait && !(await this.keepPlace(ref, state, req))) continue;
        return undefined;
      }
      const takenIndexes = new Set(state.slots.filter((s) => this.held(s.lease)).map((s) => s.index));
      let index = 0;
      while (takenIndexes.has(index)) index++;
      const previous = state.slots.find((s) => s.index === index)?.lease;
      const claimed = await this.claimSlot(ref, index, previous, req);
      if (!claimed) continue; // someone else changed the slot first: look again
      await this.aboveLegacyCounter(ref, state, claimed);
      return this.toHold(claimed);
    }
    // Every lost race was another contender's progress: no slot for this caller now (it asks again, as after any
    // "no"). Contention is no unavailability of the server.
    return undefined;
  }

  /**
   * `from`'s live slot passes to `req` by one conditional update of its Lease (a new token: the update's revision)
   * when `req` would get a free slot if that one were free; `from`'s queue entry, if any, is deleted after it. Else,
   * or when the update loses a race, release + tryAcquire.
   */
  async handOff(from: string, req: AcquireRequest): Promise<HandOff> {
    checkRequest(req);
    const ref = keyRef(req.key);
    const state = await this.load(ref);
    const slot = state.slots.find((s) => s.lease.spec?.holderIdentity === from && !this.expired(s.lease));
    const holds = state.slots.some((s) => s.lease.spec?.holderIdentity === req.holderId && !this.expired(s.lease));
    if (slot && !state.counter && !holds && this.turnCame(state, req, slot)) {
      const claimed = await this.claimSlot(ref, slot.index, slot.lease, req);
      if (claimed) {
        const entries = state.waiters.filter((w) => w.spec?.holderIdentity === from);
        await Promise.all(entries.map((entry) => this.remove(ref, entry)));
        return { released: true, hold: this.toHold(claimed) };
      }
    }
    const released = await this.release(req.key, from);
    return { released, hold: await this.tryAcquire(req) };
  }

  async renew(key: string, holderId: string, leaseDurationSeconds: number): Promise<Hold | undefined> {
    checkLease(leaseDurationSeconds);
    const ref = keyRef(key);
    for (let attempt = 0; attempt < RENEW_ATTEMPTS; attempt++) {
      const fresh = attempt > 0;
      const state = await this.load(ref, fresh);
      const slot = state.slots.find((s) => s.lease.spec?.holderIdentity === holderId && !this.expired(s.lease));
      if (!slot && fresh) return undefined;
      if (!slot) continue; // not in the cache: a list says for sure before the hold is called lost
      const renewed = await this.renewSlot(ref, slot.lease, leaseDurationSeconds);
      if (renewed) return renewed;
    }
    throw new BackendUnavailableError(this.name, `too much contention renewing ${key}`);
  }

  async release(key: string, holderId: string): Promise<boolean> {
    const ref = keyRef(key);
    let released = false;
    for (let attempt = 0; attempt < RELEASE_ATTEMPTS; attempt++) {
      const state = await this.load(ref, attempt > 0);
      // Every Lease with this holder's identity: a live hold, an expired leftover that nobody took over, its
      // queue entry. All are deleted at once; only a live hold counts as "a hold was removed".
      const mine = [...state.slots.map((s) => s.lease), ...state.waiters].filter((lease) => lease.spec?.holderIdentity === holderId);
      if (mine.length === 0) return released;
      const retired = this.retiredCounter(state, mine);
      const results = await Promise.all([...mine, ...(retired ? [retired] : [])].map(async (lease) => {
        const live = lease.metadata?.labels?.[ROLE_LABEL] !== ROLE_WAITER && !this.expired(lease);
        const removed = await this.remove(ref, lease);
        if (removed && live) released = true;
        return removed;
      }));
      if (results.every(Boolean)) return released; // else changed meanwhile (renewed, or taken over): look again
    }
    throw new BackendUnavailableError(this.name, `too much contention releasing ${key}`);
  }

  async holders(key: string): Promise<Hold[]> {
    return this.slotHolds(await this.load(keyRef(key)), (lease) => this.held(lease));
  }

  async waiting(key: string): Promise<HolderInfo[]> {
    return (await this.queueState(key)).waiting;
  }

  /** One read (the cache, or one LIST) for both. */
  async queueState(key: string): Promise<QueueState> {
    const state = await this.load(keyRef(key));
    return {
      holders: this.slotHolds(state, (lease) => this.held(lease)),
      waiting: this.queue(state).map((lease) => holderInfo(this.toHold(lease, QUEUE_TICKET_ANNOTATION))),
    };
  }

  /**
   * Every hold a slot Lease names, expired or not: who the Leases say, before anyone's judgement of expiry. On
   * this backend only this cluster's operator writes the Leases, and it shows a claim's ending before it gives
   * the claim's slot to anyone, so a named hold cannot have been granted elsewhere (checkers compare with this).
   * Always a LIST, never the cache: a checker needs what the server holds at the time of the call.
   */
  async namedHolders(key: string): Promise<Hold[]> {
    return this.slotHolds(await this.load(keyRef(key), true), (lease) => !!lease.spec?.holderIdentity);
  }

  /** The key's slots that `count`, as holds in token order. */
  private slotHolds(state: KeyState, counts: (lease: k8s.V1Lease) => boolean): Hold[] {
    return state.slots
      .filter((s) => counts(s.lease))
      .map((s) => this.toHold(s.lease))
      .sort((a, b) => compareTokens(a.fencingToken, b.fencingToken));
  }

  watch(key: string, onChange: () => void, waiter?: WaiterWatch): () => void {
    const ref = keyRef(key);
    if (this.closed) return () => undefined;
    let shared = this.namespaceWatches.get(ref.namespace);
    if (!shared) {
      const created: NamespaceWatch = new NamespaceWatch(this.cacheFor(ref.namespace), this.observationClock, this.observed, () => {
        if (this.namespaceWatches.get(ref.namespace) === created) this.namespaceWatches.delete(ref.namespace);
      }, async (lockKey) => orderOf(await this.queueState(lockKey)));
      this.namespaceWatches.set(ref.namespace, created);
      shared = created;
    }
    return shared.add(ref.label, onChange, waiter && { ...waiter, key });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const watch of [...this.namespaceWatches.values()]) watch.stop();
    this.namespaceWatches.clear();
    for (const { cache, unsubscribe } of this.caches.values()) {
      unsubscribe();
      cache.close();
    }
    this.caches.clear();
  }

  // --- slots, tokens and the cache ---

  /** A slot is taken by a live holder. */
  private held(lease: k8s.V1Lease): boolean {
    return !!lease.spec?.holderIdentity && !this.expired(lease);
  }

  /** Unchanged for its leaseDurationSeconds since this process first saw its resourceVersion. */
  private expired(lease: k8s.V1Lease, now = this.observationClock()): boolean {
    const expires = expiresAt(lease, this.observed, now);
    return expires === undefined || expires < now;
  }

  /** A Lease this process wrote: into the cache, and seen from when the write was sent. */
  private wrote<T extends k8s.V1Lease | undefined>(ref: KeyRef, lease: T, sentAt: number): T {
    if (!lease?.metadata?.resourceVersion) return lease;
    this.cacheFor(ref.namespace).put(lease);
    this.observed.wrote(observedGroup(lease), lease.metadata.name ?? "", lease.metadata.resourceVersion, sentAt);
    return lease;
  }

  /** The namespace's cache (started on first use), this backend subscribed to its changes. */
  private cacheFor(namespace: string): LeaseCache {
    if (this.closed) throw new Error(`backend ${this.name} is closed`);
    let entry = this.caches.get(namespace);
    if (!entry) {
      const cache = LeaseCache.open(this.kubeConfig, namespace, this.requestOptions);
      entry = { cache, unsubscribe: cache.subscribe((event) => this.observe(event)) };
      this.caches.set(namespace, entry);
    }
    return entry.cache;
  }

  /** Each change the cache takes in is an observation (expiry counts from when this process first saw it). */
  private observe(event: CacheEvent): void {
    if (event.type === "down") return this.observed.interrupted();
    if (event.type === "resync") return;
    const { name, resourceVersion } = event.lease.metadata ?? {};
    if (event.type === "deleted") this.observed.drop(observedGroup(event.lease), name ?? "");
    else if (resourceVersion) this.observed.note(observedGroup(event.lease), name ?? "", resourceVersion, this.observationClock());
  }

  /** Whether a slot is free for `req` (with `freeing` counted free): fewer holds, and waiters ahead of it, than maxHolders. */
  private turnCame(state: KeyState, req: AcquireRequest, freeing?: Slot): boolean {
    const taken = state.slots.filter((s) => s !== freeing && this.held(s.lease)).length;
    const queue = this.queue(state);
    const place = queue.findIndex((w) => w.spec?.holderIdentity === req.holderId);
    return taken + (place < 0 ? queue.length : place) < req.maxHolders;
  }

  /** The live waiters in ticket order, leaving out any whose holder already has a slot (it holds now). */
  private queue(state: KeyState): k8s.V1Lease[] {
    const holding = new Set(state.slots.filter((s) => this.held(s.lease)).map((s) => s.lease.spec?.holderIdentity));
    return state.waiters.filter((w) => !this.expired(w) && !holding.has(w.spec?.holderIdentity));
  }

  /**
   * A slot's fencing token, or a waiter's ticket: the annotation a renewal stamped, else the resourceVersion
   * (then still the one the acquisition wrote: the first write after it stamps the annotation).
   */
  private mark(lease: k8s.V1Lease, annotation: string): bigint {
    const stamped = decimalAnnotation(lease, annotation);
    if (stamped !== undefined) return stamped;
    const version = lease.metadata?.resourceVersion ?? "";
    if (!DECIMAL.test(version)) {
      throw new BackendUnavailableError(this.name, `Lease ${lease.metadata?.namespace}/${lease.metadata?.name} has resourceVersion "${version}", `
        + "not a decimal integer: fencing tokens are the API server's resourceVersions (its etcd's revisions), and this server's cannot serve");
    }
    return BigInt(version);
  }

  private toHold(lease: k8s.V1Lease, annotation = FENCING_TOKEN_ANNOTATION): Hold {
    const annotations = lease.metadata?.annotations ?? {};
    const spec = lease.spec ?? {};
    return {
      holderId: spec.holderIdentity ?? "",
      claim: annotations[CLAIM_ANNOTATION] ?? "",
      holderIdentity: annotations[HOLDER_IDENTITY_ANNOTATION] ?? "",
      cluster: annotations[CLUSTER_ANNOTATION] ?? "",
      fencingToken: this.mark(lease, annotation).toString(),
      acquireTime: rfc3339(spec.acquireTime),
      renewTime: rfc3339(spec.renewTime ?? spec.acquireTime),
    };
  }

  /**
   * Keeps `req`'s place in the queue: a new waiter Lease (its ticket: the resourceVersion its creation writes),
   * or its live one refreshed once a quarter of its lease has passed (stamping the ticket), or its expired one
   * replaced (a new place at the back). False when the write lost a race (look again).
   */
  private async keepPlace(ref: KeyRef, state: KeyState, req: AcquireRequest): Promise<boolean> {
    const now = this.clock();
    const sentAt = this.observationClock();
    const entry = state.waiters.find((w) => w.spec?.holderIdentity === req.holderId);
    if (entry && !this.expired(entry)) {
      const seen = this.observed.seenAt(observedGroup(entry), entry.metadata?.name ?? "", entry.metadata?.resourceVersion ?? "") ?? sentAt;
      if (sentAt - seen <= (req.leaseDurationSeconds * 1000) / 4) return true;
      return !!(await this.patch(ref, entry, QUEUE_TICKET_ANNOTATION, { leaseDurationSeconds: req.leaseDurationSeconds, renewTime: microTime(now) }));
    }
    const name = `${NAME_PREFIX}${ref.fragment}-q-${createHash("sha256").update(req.holderId).digest("hex").slice(0, 10)}`;
    return !!(await this.put(ref, holderLease(ref, name, ROLE_WAITER, req, now), entry));
  }

  /** Renews a slot (conditional on the version read), stamping its token; undefined when it changed since. */
  private async renewSlot(ref: KeyRef, lease: k8s.V1Lease, leaseDurationSeconds: number): Promise<Hold | undefined> {
    const renewed = await this.patch(ref, lease, FENCING_TOKEN_ANNOTATION, { leaseDurationSeconds, renewTime: microTime(this.clock()) });
    return renewed && this.toHold(renewed);
  }

  /**
   * A merge patch of `spec`, conditional on `lease`'s resourceVersion, that also stamps the token or ticket
   * (`annotation`) when the Lease has none yet. A merge patch, not a PUT: Leases allow create-on-update, so a
   * PUT racing a release (the renewer runs beside the reconciler) would bring the deleted slot back. A patch of
   * a missing object is a 404, and the resourceVersion in it makes it conditional (409 when the Lease changed).
   */
  private async patch(ref: KeyRef, lease: k8s.V1Lease, annotation: string, spec: k8s.V1LeaseSpec): Promise<k8s.V1Lease | undefined> {
    const stamp = lease.metadata?.annotations?.[annotation] === undefined ? { annotations: { [annotation]: this.mark(lease, annotation).toString() } } : {};
    const body = { metadata: { resourceVersion: lease.metadata?.resourceVersion, ...stamp }, spec };
    const sentAt = this.observationClock();
    return this.wrote(ref, await this.conditional(() =>
      this.api.patchNamespacedLease({ name: lease.metadata!.name!, namespace: ref.namespace, body }, this.mergePatchOptions)), sentAt);
  }

  /** Creates `body`, or replaces `previous` (conditional on its resourceVersion); undefined when we lost the race. */
  private async put(ref: KeyRef, body: k8s.V1Lease, previous: k8s.V1Lease | undefined): Promise<k8s.V1Lease | undefined> {
    const name = body.metadata!.name!;
    body.metadata!.resourceVersion = previous?.metadata?.resourceVersion;
    const sentAt = this.observationClock();
    return this.wrote(ref, await this.conditional(() =>
      previous
        ? this.api.replaceNamespacedLease({ name, namespace: ref.namespace, body }, this.requestOptions)
        : this.api.createNamespacedLease({ namespace: ref.namespace, body }, this.requestOptions),
    ), sentAt);
  }

  /** Claims slot `index` (create, or replace the free Lease `previous`, dropping its token): the one write of an acquire. */
  private claimSlot(ref: KeyRef, index: number, previous: k8s.V1Lease | undefined, req: AcquireRequest): Promise<k8s.V1Lease | undefined> {
    const body = holderLease(ref, `${NAME_PREFIX}${ref.fragment}-${index}`, ROLE_SLOT, req, this.clock());
    body.spec!.leaseTransitions = (previous?.spec?.leaseTransitions ?? 0) + (previous?.spec?.holderIdentity ? 1 : 0);
    return this.put(ref, body, previous);
  }

  /**
   * After an upgrade, a key may still have the counter an earlier version drew tokens from: a grant whose token
   * (revision) is not above it is undone and refused, so tokens never go back (see the header).
   */
  private async aboveLegacyCounter(ref: KeyRef, state: KeyState, claimed: k8s.V1Lease): Promise<void> {
    if (!state.counter) return;
    const raw = state.counter.metadata?.annotations?.[FENCING_COUNTER_ANNOTATION] ?? "0";
    const counter = DECIMAL.test(raw) ? BigInt(raw) : undefined;
    const token = this.mark(claimed, FENCING_TOKEN_ANNOTATION);
    if (counter !== undefined && token > counter) return;
    await this.remove(ref, claimed);
    throw new BackendUnavailableError(this.name, `the resourceVersion of the grant on ${ref.key} (${token}) is not above the fencing counter `
      + `left by an earlier kubelock version in Lease ${ref.namespace}/${ref.counterName} ("${raw}"): tokens would go back; nothing is granted until the API server's revision passes it`);
  }

  /**
   * An earlier version's counter that can go with this release: a hold above it is being released, so every
   * later grant is above it too; it goes only when the key has no other Lease (a last look for anyone).
   */
  private retiredCounter(state: KeyState, mine: k8s.V1Lease[]): k8s.V1Lease | undefined {
    const counter = state.counter && decimalAnnotation(state.counter, FENCING_COUNTER_ANNOTATION);
    if (counter === undefined || state.slots.length + state.waiters.length > mine.length) return undefined;
    const above = mine.some((lease) => lease.metadata?.labels?.[ROLE_LABEL] === ROLE_SLOT && this.mark(lease, FENCING_TOKEN_ANNOTATION) > counter);
    return above ? state.counter : undefined;
  }

  // --- API calls ---

  /** The key's Leases: from the namespace's cache when it is synced and `fresh` is not asked for, else one LIST. */
  private async load(ref: KeyRef, fresh = false): Promise<KeyState> {
    const cache = this.cacheFor(ref.namespace);
    let leases = fresh ? undefined : cache.leases(ref.label);
    if (!leases) {
      const list = await this.call(() =>
        this.api.listNamespacedLease(
          { namespace: ref.namespace, labelSelector: `${MANAGED_BY_LABEL}=${MANAGED_BY},${KEY_LABEL}=${ref.label}` },
          this.requestOptions,
        ),
      );
      cache.merge(ref.label, list.items, list.metadata?.resourceVersion);
      leases = list.items;
    }
    const state: KeyState = { slots: [], waiters: [] };
    for (const lease of leases) {
      const name = lease.metadata?.name ?? "";
      const role = lease.metadata?.labels?.[ROLE_LABEL];
      if (name === ref.counterName && role === ROLE_COUNTER) {
        state.counter = lease;
        continue;
      }
      const match = ref.slotPattern.exec(name);
      if (match) state.slots.push({ index: Number(match[1]), lease });
      else if (role === ROLE_WAITER) state.waiters.push(lease);
    }
    state.slots.sort((a, b) => a.index - b.index);
    const tickets = new Map(state.waiters.map((w) => [w, this.mark(w, QUEUE_TICKET_ANNOTATION)]));
    state.waiters.sort((a, b) => (tickets.get(a)! < tickets.get(b)! ? -1 : 1));
    const seen = [...state.slots.map((s) => s.lease), ...state.waiters].map((lease) => [lease.metadata?.name ?? "", lease.metadata?.resourceVersion ?? ""] as const);
    this.observed.sync(`${ref.namespace}/${ref.label}`, seen, this.observationClock());
    return state;
  }

  /** Deletes `lease` if unchanged since read; false when it changed meanwhile (a 409), true when deleted or gone. */
  private async remove(ref: KeyRef, lease: k8s.V1Lease): Promise<boolean> {
    const body = { preconditions: { resourceVersion: lease.metadata!.resourceVersion } };
    try {
      await this.call(() => this.api.deleteNamespacedLease({ name: lease.metadata!.name!, namespace: ref.namespace, body }, this.requestOptions));
    } catch (err) {
      if (statusCode(err) === 409) return false;
      if (statusCode(err) !== 404) throw err;
    }
    this.cacheFor(ref.namespace).deleted(lease);
    return true;
  }

  /** A write with a precondition: the result, or undefined on 409 Conflict / 404 Not Found. */
  private async conditional<T>(request: () => Promise<T>): Promise<T | undefined> {
    try {
      return await this.call(request);
    } catch (err) {
      const status = statusCode(err);
      if (status === 409 || status === 404) return undefined;
      throw err;
    }
  }

  /** Runs one API request, turning unreachable-server failures into BackendUnavailableError. */
  private async call<T>(request: () => Promise<T>): Promise<T> {
    if (this.closed) throw new Error(`backend ${this.name} is closed`);
    try {
      return await request();
    } catch (err) {
      if (isUnavailable(err)) {
        this.observed.interrupted();
        for (const { cache } of this.caches.values()) cache.invalidate(); // its watch may not know yet
        throw new BackendUnavailableError(this.name, describe(err, this.requestTimeoutMs), { cause: err });
      }
      if (err instanceof k8s.ApiException) {
        throw new Error(`backend ${this.name}: Lease request failed: ${apiErrorMessage(err)}`, { cause: err });
      }
      throw err;
    }
  }
}

// --- helpers ---

function keyRef(key: string): KeyRef {
  const { namespace, key: rest } = splitLockKey(key);
  const hash = createHash("sha256").update(rest).digest("hex").slice(0, 20);
  const nameFits =
    NAME_PREFIX.length + rest.length + Math.max(MAX_SUFFIX, COUNTER_SUFFIX.length) <= MAX_NAME &&
    DNS_SUBDOMAIN.test(`${NAME_PREFIX}${rest}${COUNTER_SUFFIX}`);
  const fragment = nameFits ? rest : hash;
  const label = rest.length <= 63 && LABEL_VALUE.test(rest) ? rest : hash;
  return {
    key,
    namespace,
    fragment,
    label,
    counterName: `${NAME_PREFIX}${fragment}${COUNTER_SUFFIX}`,
    slotPattern: new RegExp(`^${escapeRegExp(NAME_PREFIX + fragment)}-(0|[1-9][0-9]{0,5})$`),
  };
}

/** A slot or waiter Lease for `req`: its holder (the claim UID) in the spec, its HolderInfo in annotations. */
function holderLease(ref: KeyRef, name: string, role: string, req: AcquireRequest, now: number, annotations: Record<string, string> = {}): k8s.V1Lease {
  return {
    apiVersion: "coordination.k8s.io/v1",
    kind: "Lease",
    metadata: {
      name,
      namespace: ref.namespace,
      labels: labels(ref, role),
      annotations: {
        [KEY_ANNOTATION]: ref.key, [CLAIM_ANNOTATION]: req.claim, [HOLDER_IDENTITY_ANNOTATION]: req.holderIdentity,
        [CLUSTER_ANNOTATION]: req.cluster ?? "", ...annotations,
      },
    },
    spec: { holderIdentity: req.holderId, leaseDurationSeconds: req.leaseDurationSeconds, acquireTime: microTime(now), renewTime: microTime(now) },
  };
}

function labels(ref: KeyRef, role: string): Record<string, string> {
  return { [MANAGED_BY_LABEL]: MANAGED_BY, [KEY_LABEL]: ref.label, [ROLE_LABEL]: role };
}

/** The observation group of a slot Lease: its namespace and key label (as `load` groups a key's slots). */
export function observedGroup(lease: k8s.V1Lease): string {
  return `${lease.metadata?.namespace ?? ""}/${lease.metadata?.labels?.[KEY_LABEL] ?? ""}`;
}

/**
 * When a slot Lease expires on this process's clock: its leaseDurationSeconds after this process first saw
 * its current resourceVersion (now, when never seen). Undefined for a Lease without a lease duration.
 */
export function expiresAt(lease: k8s.V1Lease, observed: ObservedVersions, now?: number): number | undefined {
  const duration = lease.spec?.leaseDurationSeconds;
  if (!duration || !lease.metadata?.resourceVersion) return undefined;
  const seen = observed.seenAt(observedGroup(lease), lease.metadata.name ?? "", lease.metadata.resourceVersion);
  const start = seen ?? now;
  return start === undefined ? undefined : start + duration * 1000;
}

function decimalAnnotation(lease: k8s.V1Lease, name: string): bigint | undefined {
  const raw = lease.metadata?.annotations?.[name];
  return raw !== undefined && DECIMAL.test(raw) ? BigInt(raw) : undefined;
}

function compareTokens(a: string, b: string): number {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * A MicroTime for a Lease. client-node 1.x serializes `V1MicroTime` as RFC 3339 with six fractional
 * digits, which the API server requires; a plain Date would go out with three and be rejected. It does
 * not deserialize MicroTime at all: Leases read back carry these fields as strings, whatever the
 * TypeScript type says, so readers go through `timeMs`.
 */
function microTime(ms: number): k8s.V1MicroTime {
  return new k8s.V1MicroTime(ms);
}

export function timeMs(value: unknown): number | undefined {
  if (value === undefined || value === null) return undefined;
  const ms = value instanceof Date ? value.getTime() : Date.parse(String(value));
  return Number.isNaN(ms) ? undefined : ms;
}

function rfc3339(value: unknown): string {
  if (typeof value === "string") return value;
  const ms = timeMs(value);
  return ms === undefined ? "" : new Date(ms).toISOString();
}

function describe(err: unknown, timeoutMs: number): string {
  if (err instanceof k8s.ApiException) return apiErrorMessage(err);
  if (err instanceof Error && (err.name === "AbortError" || err.name === "TimeoutError")) return `no answer within ${timeoutMs}ms`;
  return err instanceof Error ? err.message : String(err);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** A request's numbers, checked before anything is read or written. */
function checkRequest(req: AcquireRequest): void {
  if (!Number.isInteger(req.maxHolders) || req.maxHolders < 1 || req.maxHolders > 1_000_000) {
    throw new Error(`maxHolders must be an integer from 1 to 1000000, got ${req.maxHolders}`);
  }
  checkLease(req.leaseDurationSeconds);
}

function checkLease(seconds: number): void {
  if (!Number.isInteger(seconds) || seconds < 1) throw new Error(`leaseDurationSeconds must be an integer >= 1, got ${seconds}`);
}
