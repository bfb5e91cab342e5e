/**
 * The built-in backend: `coordination.k8s.io/v1` Lease objects in the lock's own namespace, so it needs
 * nothing but the API server, and namespaces stay trust boundaries (the backend key `<namespace>/<key>`
 * names the namespace the Leases live in).
 *
 * Objects per key (`<k>` is the key itself when it makes a valid object name, else a short sha256 of it):
 *
 * - `kubelock-<k>-<slot>`, one Lease per slot (0 .. maxHolders-1). `spec.holderIdentity` is the holder's
 *   claim UID; `leaseDurationSeconds`, `acquireTime`, `renewTime` and `leaseTransitions` mean what they
 *   mean on any Lease; annotations carry the fencing token and the HolderInfo. A slot is free when its
 *   Lease is missing, has no holderIdentity, or has not changed for `leaseDurationSeconds` as this process
 *   observed it (its resourceVersion, first seen on this process's own clock: see runtime/observed.ts).
 *   renewTime is written for people and tools; expiry never compares it, a timestamp from another machine,
 *   with the local clock. A Lease seen for the first time (after a restart or failover) counts as renewed
 *   then: expiry is judged late, never early. Released slots are deleted, so per-item locks leave no slot
 *   Leases behind.
 * - `kubelock-<k>-q-<h>`, a waiter's place in the key's queue (`<h>`: a hash of its claim UID). `spec.holderIdentity`
 *   is the claim UID, annotation `kubelock.io/queue-ticket` its place: a value drawn from the fencing counter when
 *   it joined, so tickets increase in the order waiters join, across every operator. A waiter takes a slot when
 *   fewer than maxHolders slots are held and no live waiter has a smaller ticket than the free ones allow; it expires
 *   like a slot, unchanged for its leaseDurationSeconds (its operator refreshes it every quarter of that).
 * - `kubelock-<k>-fencing`, the fencing counter: annotation `kubelock.io/fencing-counter` holds the last
 *   token issued (a decimal string). It stays while the lock exists, so tokens keep increasing across
 *   restarts. (The counter is not named `kubelock-<k>`: that would be slot 1 of key `<k minus "-1">`.)
 *
 * Per namespace, `kubelock.fencing-floor` (no key's Lease name starts `kubelock.`): annotation
 * `kubelock.io/fencing-floor` holds the largest counter value ever retired there. `forget` (the lock was
 * deleted) raises it to the counter's value, then deletes the counter unless a token was drawn meanwhile;
 * a counter created later starts above the floor, so tokens never go back when a key is used again.
 *
 * Every Lease is labelled `app.kubernetes.io/managed-by=kubelock` and `kubelock.io/role`; a key's Leases
 * also `kubelock.io/key=<key or hash>`.
 *
 * Acquire, three writes, each with a resourceVersion precondition:
 *   1. claim the lowest free slot (holderIdentity set, no token yet: the slot counts as taken);
 *   2. increment the fencing counter;
 *   3. write the token into the claimed slot (fails if the claim was lost meanwhile).
 * The token is drawn only after the slot is ours, so a grant that starts after another grant was made
 * always gets a larger token (drawing it first would let a slow contender claim a slot, after later
 * grants came and went, with an older, smaller token). A claim whose acquirer died before step 3 holds
 * its slot without a token until it expires; the same holder's next tryAcquire completes it.
 *
 * Renew and release find the holder's slot by listing the key's Leases and write with the
 * resourceVersion they read, so they never touch a slot that changed hands. Watches share one API
 * watch per namespace (all kubelock slot Leases there), dispatched by key label.
 */
import { createHash } from "node:crypto";
import * as k8s from "@kubernetes/client-node";
import { apiErrorMessage, requestTimeout, statusCode } from "../../kube/client";
import {
  BackendUnavailableError,
  type AcquireRequest,
  type Hold,
  type HolderInfo,
  type LockBackend,
  type QueueState,
  type WaiterWatch,
} from "../backend";
import { NamespaceWatch } from "./watch";
import { monotonicNow, ObservedVersions } from "../../runtime/observed";
import { splitLockKey } from "../kit/lock-key";
import { orderOf } from "../kit/fan-out";
import { holderInfo } from "../kit/queue-state";

export const MANAGED_BY_LABEL = "app.kubernetes.io/managed-by";
export const MANAGED_BY = "kubelock";
export const KEY_LABEL = "kubelock.io/key";
export const ROLE_LABEL = "kubelock.io/role";
export const KEY_ANNOTATION = "kubelock.io/key";
export const FENCING_COUNTER_ANNOTATION = "kubelock.io/fencing-counter";
export const FENCING_TOKEN_ANNOTATION = "kubelock.io/fencing-token";
export const CLAIM_ANNOTATION = "kubelock.io/claim";
export const HOLDER_IDENTITY_ANNOTATION = "kubelock.io/holder-identity";
export const CLUSTER_ANNOTATION = "kubelock.io/cluster";

export const ROLE_SLOT = "slot";
export const ROLE_WAITER = "waiter";
export const QUEUE_TICKET_ANNOTATION = "kubelock.io/queue-ticket";
const ROLE_COUNTER = "fencing-counter";
const ROLE_FLOOR = "fencing-floor";
export const FENCING_FLOOR_LEASE = "kubelock.fencing-floor";
export const FENCING_FLOOR_ANNOTATION = "kubelock.io/fencing-floor";
const NAME_PREFIX = "kubelock-";
const COUNTER_SUFFIX = "-fencing";
/** Longest suffix planned for (a waiter's "-q-" and 10 hex digits): keys longer than this allows are hashed. */
const MAX_SUFFIX = 13;
const MAX_NAME = 253;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const DECIMAL = /^(0|[1-9][0-9]*)$/;

const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
const COUNTER_ATTEMPTS = 50;
const RENEW_ATTEMPTS = 8;
const RELEASE_ATTEMPTS = 8;
const FORGET_ATTEMPTS = 8;
/** A watch asks the server to end it after about this long, then starts again. */


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
  counter?: k8s.V1Lease;
}

export class KubernetesLeaseBackend implements LockBackend {
  readonly name: string;
  private readonly api: k8s.CoordinationV1Api;
  private readonly kubeConfig: k8s.KubeConfig;
  private readonly clock: () => number;
  /** Times observations: the monotonic clock unless a clock was injected. */
  private readonly observationClock: () => number;
  private readonly requestTimeoutMs: number;
  private readonly requestOptions: k8s.ConfigurationOptions<k8s.ObservableMiddleware>;
  /** requestOptions plus `Content-Type: application/merge-patch+json`. */
  private readonly mergePatchOptions: k8s.ConfigurationOptions<k8s.ObservableMiddleware>;
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
    if (!Number.isInteger(req.maxHolders) || req.maxHolders < 1 || req.maxHolders > 1_000_000) {
      throw new Error(`maxHolders must be an integer from 1 to 1000000, got ${req.maxHolders}`);
    }
    if (!Number.isInteger(req.leaseDurationSeconds) || req.leaseDurationSeconds < 1) {
      throw new Error(`leaseDurationSeconds must be an integer >= 1, got ${req.leaseDurationSeconds}`);
    }
    const ref = keyRef(req.key);
    // Each lost race means another contender made progress; the bound only stops a livelock.
    const attempts = Math.min(10 + 2 * req.maxHolders, 60);
    for (let attempt = 0; attempt < attempts; attempt++) {
      const state = await this.load(ref);
      const now = this.clock();

      const mine = state.slots.filter((s) => s.lease.spec?.holderIdentity === req.holderId && !this.expired(s.lease));
      const granted = mine.find((s) => tokenOf(s.lease) !== undefined);
      if (granted) {
        // Re-attach, same token, written anew: an observer that judged the slot expired (its owner restarted and
        // sees it afresh) must see it renewed before it could take it; a renewal that finds it gone: look again.
        const renewed = await this.renew(req.key, req.holderId, req.leaseDurationSeconds);
        if (renewed) return renewed;
        continue;
      }
      let claimed: k8s.V1Lease | undefined = mine.length > 0 ? mine[0].lease : undefined; // claimed by an earlier call that did not finish: finish it

      if (!claimed) {
        const taken = state.slots.filter((s) => this.held(s.lease));
        const queue = this.queue(state);
        const place = queue.findIndex((w) => w.spec?.holderIdentity === req.holderId);
        if (taken.length + (place < 0 ? queue.length : place) >= req.maxHolders) {
          if (req.wait && !(await this.keepPlace(ref, state, queue[place], req))) continue;
          return undefined;
        }
        const takenIndexes = new Set(taken.map((s) => s.index));
        let index = 0;
        while (takenIndexes.has(index)) index++;
        const previous = state.slots.find((s) => s.index === index)?.lease;
        claimed = await this.claimSlot(ref, index, previous, req, now);
        if (!claimed) continue; // someone else changed the slot first: look again
      }

      const token = await this.nextToken(ref, state, BigInt(req.fencingFloor ?? "0"));
      const finished = await this.writeToken(ref, claimed, token);
      if (finished) {
        for (const entry of state.waiters.filter((w) => w.spec?.holderIdentity === req.holderId)) await this.remove(ref, entry);
        return toHold(finished);
      }
      // The claim changed under us (expired and taken, or a concurrent call for the same holder): look again.
    }
    throw new BackendUnavailableError(this.name, `too much contention on ${req.key}: gave up after ${attempts} attempts`);
  }

  async renew(key: string, holderId: string, leaseDurationSeconds: number): Promise<Hold | undefined> {
    if (!Number.isInteger(leaseDurationSeconds) || leaseDurationSeconds < 1) {
      throw new Error(`leaseDurationSeconds must be an integer >= 1, got ${leaseDurationSeconds}`);
    }
    const ref = keyRef(key);
    for (let attempt = 0; attempt < RENEW_ATTEMPTS; attempt++) {
      const state = await this.load(ref);
      const now = this.clock();
      const slot = state.slots.find(
        (s) => s.lease.spec?.holderIdentity === holderId && tokenOf(s.lease) !== undefined && !this.expired(s.lease),
      );
      if (!slot) return undefined;
      const lease = slot.lease;
      // A merge patch, not a PUT: Leases allow create-on-update, so a PUT racing a release (the renewer
      // runs beside the reconciler) would bring the deleted slot back. A patch of a missing object is a
      // 404, and the resourceVersion in it makes it conditional (409 when the slot changed).
      const patch = { metadata: { resourceVersion: lease.metadata?.resourceVersion }, spec: { leaseDurationSeconds, renewTime: microTime(now) } };
      const sentAt = this.observationClock();
      const renewed = this.wrote(await this.conditional(() => this.api.patchNamespacedLease({ name: lease.metadata!.name!, namespace: ref.namespace, body: patch }, this.mergePatchOptions)), sentAt);
      if (renewed) return toHold(renewed);
    }
    throw new BackendUnavailableError(this.name, `too much contention renewing ${key}`);
  }

  async release(key: string, holderId: string): Promise<boolean> {
    const ref = keyRef(key);
    let released = false;
    for (let attempt = 0; attempt < RELEASE_ATTEMPTS; attempt++) {
      const state = await this.load(ref);
      // Every slot with this holder's identity: a live hold, an unfinished claim, or an expired leftover
      // that nobody took over. All are deleted; only a live hold counts as "a hold was removed".
      const mine = [...state.slots.map((s) => s.lease), ...state.waiters].filter((lease) => lease.spec?.holderIdentity === holderId);
      if (mine.length === 0) return released;
      let conflict = false;
      for (const lease of mine) {
        const live = tokenOf(lease) !== undefined && !this.expired(lease);
        if (!(await this.remove(ref, lease))) conflict = true; // changed meanwhile (renewed, or taken over): look again
        else if (live) released = true;
      }
      if (!conflict) return released;
    }
    throw new BackendUnavailableError(this.name, `too much contention releasing ${key}`);
  }

  /**
   * Deletes the key's counter once its value is in the namespace's floor, when the key has no slot or waiter
   * Lease (live or not). The delete is conditional on the counter's resourceVersion as read: a token or ticket
   * drawn meanwhile makes it fail (409), and the key is looked at again. A slot claimed but not yet given its
   * token is not seen by the delete; its token then comes from a new counter, above the floor.
   */
  async forget(key: string): Promise<boolean> {
    const ref = keyRef(key);
    for (let attempt = 0; attempt < FORGET_ATTEMPTS; attempt++) {
      const state = await this.load(ref);
      if (state.slots.length > 0 || state.waiters.length > 0 || !state.counter) return false;
      await this.raiseFloor(ref.namespace, counterValue(ref, state.counter));
      const body = { preconditions: { resourceVersion: state.counter.metadata!.resourceVersion } };
      const deleted = await this.conditional(() =>
        this.api.deleteNamespacedLease({ name: ref.counterName, namespace: ref.namespace, body }, this.requestOptions));
      if (deleted) return true;
    }
    return false;
  }

  async holders(key: string): Promise<Hold[]> {
    return this.slotHolds(key, (lease) => this.held(lease));
  }

  async waiting(key: string): Promise<HolderInfo[]> {
    return (await this.queueState(key)).waiting;
  }

  /** One LIST of the key's Leases for both. */
  async queueState(key: string): Promise<QueueState> {
    const state = await this.load(keyRef(key));
    return {
      holders: this.slotHoldsOf(state, (lease) => this.held(lease)),
      waiting: this.queue(state).map((lease) => holderInfo(toHold(lease))),
    };
  }

  /**
   * Every hold a slot Lease names, expired or not: who the Leases say, before anyone's judgement of expiry. On
   * this backend only this cluster's operator writes the Leases, and it shows a claim's ending before it gives
   * the claim's slot to anyone, so a named hold cannot have been granted elsewhere (checkers compare with this).
   */
  async namedHolders(key: string): Promise<Hold[]> {
    return this.slotHolds(key, (lease) => !!lease.spec?.holderIdentity);
  }

  /** The key's granted slots (with a token) that `counts`, as holds in token order. */
  private async slotHolds(key: string, counts: (lease: k8s.V1Lease) => boolean): Promise<Hold[]> {
    return this.slotHoldsOf(await this.load(keyRef(key)), counts);
  }

  private slotHoldsOf(state: KeyState, counts: (lease: k8s.V1Lease) => boolean): Hold[] {
    return state.slots
      .filter((s) => tokenOf(s.lease) !== undefined && counts(s.lease))
      .map((s) => toHold(s.lease))
      .sort((a, b) => compareTokens(a.fencingToken, b.fencingToken));
  }

  watch(key: string, onChange: () => void, waiter?: WaiterWatch): () => void {
    const ref = keyRef(key);
    if (this.closed) return () => undefined;
    let shared = this.namespaceWatches.get(ref.namespace);
    if (!shared) {
      const created: NamespaceWatch = new NamespaceWatch(this.kubeConfig, ref.namespace, this.observationClock, this.observed, () => {
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
  }

  // --- slots and tokens ---

  /** A slot is taken by a live holder (granted, or claimed and about to be granted). */
  private held(lease: k8s.V1Lease): boolean {
    return !!lease.spec?.holderIdentity && !this.expired(lease);
  }

  /** Unchanged for its leaseDurationSeconds since this process first saw its resourceVersion. */
  private expired(lease: k8s.V1Lease, now = this.observationClock()): boolean {
    const expires = expiresAt(lease, this.observed, now);
    return expires === undefined || expires < now;
  }

  /** Notes a slot Lease this process wrote, as seen from when the write was sent. */
  private wrote<T extends k8s.V1Lease | undefined>(lease: T, sentAt: number): T {
    if (lease?.metadata?.resourceVersion) this.observed.wrote(observedGroup(lease), lease.metadata.name ?? "", lease.metadata.resourceVersion, sentAt);
    return lease;
  }

  /** The live waiters in ticket order, leaving out any whose holder already has a slot (a grant not yet tidied). */
  private queue(state: KeyState): k8s.V1Lease[] {
    const holding = new Set(state.slots.map((s) => s.lease.spec?.holderIdentity));
    return state.waiters.filter((w) => !this.expired(w) && !holding.has(w.spec?.holderIdentity));
  }

  /**
   * Keeps `req`'s place in the queue: a new waiter Lease with a ticket from the fencing counter, or the existing
   * one (`entry`) refreshed once a quarter of its lease has passed. False when the write lost a race (look again).
   */
  private async keepPlace(ref: KeyRef, state: KeyState, entry: k8s.V1Lease | undefined, req: AcquireRequest): Promise<boolean> {
    const now = this.clock();
    const sentAt = this.observationClock();
    if (entry) {
      const seen = this.observed.seenAt(observedGroup(entry), entry.metadata?.name ?? "", entry.metadata?.resourceVersion ?? "") ?? sentAt;
      if (sentAt - seen <= (req.leaseDurationSeconds * 1000) / 4) return true;
      const patch = { metadata: { resourceVersion: entry.metadata?.resourceVersion }, spec: { leaseDurationSeconds: req.leaseDurationSeconds, renewTime: microTime(now) } };
      return !!this.wrote(await this.conditional(() => this.api.patchNamespacedLease({ name: entry.metadata!.name!, namespace: ref.namespace, body: patch }, this.mergePatchOptions)), sentAt);
    }
    const ticket = await this.nextToken(ref, state, 0n);
    const name = `${NAME_PREFIX}${ref.fragment}-q-${createHash("sha256").update(req.holderId).digest("hex").slice(0, 10)}`;
    const body = holderLease(ref, name, ROLE_WAITER, req, now, { [QUEUE_TICKET_ANNOTATION]: ticket.toString() });
    return !!this.wrote(await this.conditional(() => this.api.createNamespacedLease({ namespace: ref.namespace, body }, this.requestOptions)), sentAt);
  }

  /** Deletes `lease` if unchanged since read; false when it changed meanwhile (a 409), true when deleted or gone. */
  private async remove(ref: KeyRef, lease: k8s.V1Lease): Promise<boolean> {
    const body = { preconditions: { resourceVersion: lease.metadata!.resourceVersion } };
    try {
      await this.call(() => this.api.deleteNamespacedLease({ name: lease.metadata!.name!, namespace: ref.namespace, body }, this.requestOptions));
      return true;
    } catch (err) {
      if (statusCode(err) === 404) return true;
      if (statusCode(err) === 409) return false;
      throw err;
    }
  }

  /** Claims slot `index` (create, or replace the free Lease `previous`); undefined when we lost the race. */
  private async claimSlot(ref: KeyRef, index: number, previous: k8s.V1Lease | undefined, req: AcquireRequest, now: number): Promise<k8s.V1Lease | undefined> {
    const name = `${NAME_PREFIX}${ref.fragment}-${index}`;
    const hadHolder = !!previous?.spec?.holderIdentity;
    const body = holderLease(ref, name, ROLE_SLOT, req, now);
    body.metadata!.resourceVersion = previous?.metadata?.resourceVersion;
    body.spec!.leaseTransitions = (previous?.spec?.leaseTransitions ?? 0) + (hadHolder ? 1 : 0);
    const sentAt = this.observationClock();
    return this.wrote(await this.conditional(() =>
      previous
        ? this.api.replaceNamespacedLease({ name, namespace: ref.namespace, body }, this.requestOptions)
        : this.api.createNamespacedLease({ namespace: ref.namespace, body }, this.requestOptions),
    ), sentAt);
  }

  /** Writes the token into our claim; undefined when the claim changed since. */
  private async writeToken(ref: KeyRef, claimed: k8s.V1Lease, token: bigint): Promise<k8s.V1Lease | undefined> {
    const now = this.clock();
    const sentAt = this.observationClock();
    const body: k8s.V1Lease = {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: {
        ...ownMeta(claimed),
        resourceVersion: claimed.metadata?.resourceVersion,
        annotations: { ...claimed.metadata?.annotations, [FENCING_TOKEN_ANNOTATION]: token.toString() },
      },
      spec: { ...claimed.spec, renewTime: microTime(now) },
    };
    return this.wrote(await this.conditional(() =>
      this.api.replaceNamespacedLease({ name: claimed.metadata!.name!, namespace: ref.namespace, body }, this.requestOptions),
    ), sentAt);
  }

  /**
   * Increments the key's fencing counter with optimistic concurrency and returns the new value. The
   * counter never goes below the largest token found on a slot, nor below the caller's high-water mark
   * (`fencingFloor`), so a deleted counter Lease cannot make tokens go backwards.
   */
  private async nextToken(ref: KeyRef, state: KeyState, callerFloor: bigint): Promise<bigint> {
    let floor = callerFloor;
    for (const { lease } of state.slots) {
      const token = tokenOf(lease);
      if (token !== undefined && token > floor) floor = token;
    }
    let counter: k8s.V1Lease | undefined = state.counter;
    let known = true; // `counter` came from the listing (possibly stale); after a conflict, read it again
    for (let attempt = 0; attempt < COUNTER_ATTEMPTS; attempt++) {
      if (!known) counter = await this.read(ref.namespace, ref.counterName);
      known = false;
      if (!counter) {
        // A new counter (first use, or its key was forgotten): above every counter retired in the namespace.
        const retired = await this.namespaceFloor(ref.namespace);
        const next = (retired > floor ? retired : floor) + 1n;
        const created = await this.conditional(() =>
          this.api.createNamespacedLease(
            {
              namespace: ref.namespace,
              body: {
                apiVersion: "coordination.k8s.io/v1",
                kind: "Lease",
                metadata: {
                  name: ref.counterName,
                  namespace: ref.namespace,
                  labels: labels(ref, ROLE_COUNTER),
                  annotations: { [KEY_ANNOTATION]: ref.key, [FENCING_COUNTER_ANNOTATION]: next.toString() },
                },
                spec: {},
              },
            },
            this.requestOptions,
          ),
        );
        if (created) return next;
      } else {
        const current = counterValue(ref, counter);
        const next = (current > floor ? current : floor) + 1n;
        const body: k8s.V1Lease = {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: {
            ...ownMeta(counter),
            resourceVersion: counter.metadata?.resourceVersion,
            labels: labels(ref, ROLE_COUNTER),
            annotations: { ...counter.metadata?.annotations, [KEY_ANNOTATION]: ref.key, [FENCING_COUNTER_ANNOTATION]: next.toString() },
          },
          spec: counter.spec ?? {},
        };
        const replaced = await this.conditional(() =>
          this.api.replaceNamespacedLease({ name: ref.counterName, namespace: ref.namespace, body }, this.requestOptions),
        );
        if (replaced) return next;
      }
      await sleep(Math.min(5 * 2 ** attempt, 200) * Math.random());
    }
    throw new BackendUnavailableError(this.name, `too much contention on the fencing counter of ${ref.key}`);
  }

  /** The namespace's fencing floor: the largest counter value `forget` retired there (0 when none was). */
  private async namespaceFloor(namespace: string): Promise<bigint> {
    return floorValue(await this.read(namespace, FENCING_FLOOR_LEASE));
  }

  /** Raises the namespace's fencing floor to at least `value`, with optimistic concurrency (it never goes down). */
  private async raiseFloor(namespace: string, value: bigint): Promise<void> {
    for (let attempt = 0; attempt < COUNTER_ATTEMPTS; attempt++) {
      const lease = await this.read(namespace, FENCING_FLOOR_LEASE);
      if (lease && floorValue(lease) >= value) return;
      const body: k8s.V1Lease = {
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: {
          ...(lease ? ownMeta(lease) : { name: FENCING_FLOOR_LEASE, namespace }),
          resourceVersion: lease?.metadata?.resourceVersion,
          labels: { [MANAGED_BY_LABEL]: MANAGED_BY, [ROLE_LABEL]: ROLE_FLOOR },
          annotations: { ...lease?.metadata?.annotations, [FENCING_FLOOR_ANNOTATION]: value.toString() },
        },
        spec: lease?.spec ?? {},
      };
      const written = await this.conditional(() => lease
        ? this.api.replaceNamespacedLease({ name: FENCING_FLOOR_LEASE, namespace, body }, this.requestOptions)
        : this.api.createNamespacedLease({ namespace, body }, this.requestOptions));
      if (written) return;
      await sleep(Math.min(5 * 2 ** attempt, 200) * Math.random());
    }
    throw new BackendUnavailableError(this.name, `too much contention on the fencing floor of namespace ${namespace}`);
  }

  // --- API calls ---

  /** The key's slot Leases and counter, from one list call. */
  private async load(ref: KeyRef): Promise<KeyState> {
    const list = await this.call(() =>
      this.api.listNamespacedLease(
        { namespace: ref.namespace, labelSelector: `${MANAGED_BY_LABEL}=${MANAGED_BY},${KEY_LABEL}=${ref.label}` },
        this.requestOptions,
      ),
    );
    const state: KeyState = { slots: [], waiters: [] };
    for (const lease of list.items) {
      const name = lease.metadata?.name ?? "";
      if (name === ref.counterName) {
        state.counter = lease;
        continue;
      }
      const match = ref.slotPattern.exec(name);
      if (match) state.slots.push({ index: Number(match[1]), lease });
      else if (lease.metadata?.labels?.[ROLE_LABEL] === ROLE_WAITER && ticketOf(lease) !== undefined) state.waiters.push(lease);
    }
    state.slots.sort((a, b) => a.index - b.index);
    state.waiters.sort((a, b) => (ticketOf(a)! < ticketOf(b)! ? -1 : 1));
    const seen = [...state.slots.map((s) => s.lease), ...state.waiters].map((lease) => [lease.metadata?.name ?? "", lease.metadata?.resourceVersion ?? ""] as const);
    this.observed.sync(`${ref.namespace}/${ref.label}`, seen, this.observationClock());
    return state;
  }

  private async read(namespace: string, name: string): Promise<k8s.V1Lease | undefined> {
    try {
      return await this.call(() => this.api.readNamespacedLease({ name, namespace }, this.requestOptions));
    } catch (err) {
      if (statusCode(err) === 404) return undefined;
      throw err;
    }
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

/** The metadata we own and write back: everything else (managedFields, timestamps...) the server keeps. */
function ownMeta(lease: k8s.V1Lease): k8s.V1ObjectMeta {
  const m = lease.metadata ?? {};
  return { name: m.name, namespace: m.namespace, labels: m.labels, annotations: m.annotations, ownerReferences: m.ownerReferences };
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

/** The counter Lease's last token; a value that is no decimal integer is an error, never read as 0. */
function counterValue(ref: KeyRef, counter: k8s.V1Lease): bigint {
  const raw = counter.metadata?.annotations?.[FENCING_COUNTER_ANNOTATION] ?? "0";
  if (!DECIMAL.test(raw)) {
    throw new Error(`Lease ${ref.namespace}/${ref.counterName}: annotation ${FENCING_COUNTER_ANNOTATION} is not a decimal integer: "${raw}"`);
  }
  return BigInt(raw);
}

/** The floor Lease's value (0 when there is none); as with the counter, a value that is no decimal integer is an error. */
function floorValue(lease: k8s.V1Lease | undefined): bigint {
  const raw = lease?.metadata?.annotations?.[FENCING_FLOOR_ANNOTATION] ?? "0";
  if (!DECIMAL.test(raw)) {
    throw new Error(`Lease ${lease?.metadata?.namespace}/${FENCING_FLOOR_LEASE}: annotation ${FENCING_FLOOR_ANNOTATION} is not a decimal integer: "${raw}"`);
  }
  return BigInt(raw);
}

function tokenOf(lease: k8s.V1Lease): bigint | undefined {
  return decimalAnnotation(lease, FENCING_TOKEN_ANNOTATION);
}

function ticketOf(lease: k8s.V1Lease): bigint | undefined {
  return decimalAnnotation(lease, QUEUE_TICKET_ANNOTATION);
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

function toHold(lease: k8s.V1Lease): Hold {
  const annotations = lease.metadata?.annotations ?? {};
  const spec = lease.spec ?? {};
  return {
    holderId: spec.holderIdentity ?? "",
    claim: annotations[CLAIM_ANNOTATION] ?? "",
    holderIdentity: annotations[HOLDER_IDENTITY_ANNOTATION] ?? "",
    cluster: annotations[CLUSTER_ANNOTATION] ?? "",
    fencingToken: annotations[FENCING_TOKEN_ANNOTATION] ?? "",
    acquireTime: rfc3339(spec.acquireTime),
    renewTime: rfc3339(spec.renewTime ?? spec.acquireTime),
  };
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

const NETWORK_ERROR_CODES = new Set([
  "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN",
  "ETIMEDOUT", "EPIPE", "ESOCKETTIMEDOUT", "UND_ERR_SOCKET", "UND_ERR_CONNECT_TIMEOUT", "ERR_STREAM_PREMATURE_CLOSE",
]);

/** Network failures, timeouts, 5xx and 429: the server is not there or not answering. */
function isUnavailable(err: unknown): boolean {
  if (err instanceof k8s.ApiException) return err.code >= 500 || err.code === 429;
  if (!(err instanceof Error)) return false;
  if (err.name === "AbortError" || err.name === "TimeoutError" || err.name === "FetchError") return true;
  const code = (err as { code?: unknown; errno?: unknown }).code ?? (err as { errno?: unknown }).errno;
  return typeof code === "string" && NETWORK_ERROR_CODES.has(code);
}

function describe(err: unknown, timeoutMs: number): string {
  if (err instanceof k8s.ApiException) return apiErrorMessage(err);
  if (err instanceof Error && (err.name === "AbortError" || err.name === "TimeoutError")) return `no answer within ${timeoutMs}ms`;
  return err instanceof Error ? err.message : String(err);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
