/**
 * The kubernetes backend's watch: every key watched in a namespace is served by that namespace's LeaseCache
 * (one API list + watch, see cache.ts), dispatched by the Lease's `kubelock.io/key` label.
 */
import type * as k8s from "@kubernetes/client-node";
import { timerDelay } from "../../runtime/clock";
import type { ObservedVersions } from "../../runtime/observed";
import { FanOut, type Waiter } from "../kit/fan-out";
import type { CacheEvent, LeaseCache } from "./cache";
import { KEY_LABEL } from "./labels";
import { expiresAt } from "./backend";

type Listener = () => void;

/**
 * The listeners of one namespace's keys. A key's listeners are called on every change the cache takes in for
 * it (an API event, or a write of this process), on every (re)list of the cache (changes may have happened
 * while it was not watching), once when added to a synced cache (the watch is live), and when the earliest hold it knows of expires (an expiry writes nothing, so no
 * event would tell). It stops when its last listener goes.
 */
export class NamespaceWatch {
  private stopped = false;
  private unsubscribe?: () => void;
  /** Listeners by key label; a label's expiry timer runs while it has listeners. */
  private readonly listeners = new FanOut<void>((label) => void queueMicrotask(() => this.scheduleExpiry(label)), (label) => {
    clearTimeout(this.expiryTimers.get(label));
    this.expiryTimers.delete(label);
    if (this.listeners.size === 0) this.stop();
  }, (key) => this.readOrder(key));
  private readonly expiryTimers = new Map<string, NodeJS.Timeout>();

  constructor(
    private readonly cache: LeaseCache,
    private readonly clock: () => number,
    private readonly observed: ObservedVersions,
    private readonly onIdle: () => void,
    /** The holderIds of a lock key's holds, then its waiters: whose turn it is, for listeners that wait. */
    private readonly readOrder: (key: string) => Promise<readonly string[]>,
  ) {}

  add(label: string, listener: Listener, waiter?: Waiter): () => void {
    const remove = this.listeners.add(label, listener, waiter);
    this.unsubscribe ??= this.cache.subscribe((event) => this.changed(event));
    // Live at once when the cache is synced (else its sync calls every listener): one call to look now.
    if (this.cache.leases(label)) setImmediate(() => !this.stopped && listener());
    return remove;
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.unsubscribe?.();
    for (const timer of this.expiryTimers.values()) clearTimeout(timer);
    this.expiryTimers.clear();
    this.listeners.clear();
    this.onIdle();
  }

  private changed(event: CacheEvent): void {
    if (this.stopped || event.type === "down") return;
    if (event.type === "resync") {
      for (const [label] of this.listeners.watched()) this.scheduleExpiry(label);
      return this.listeners.notifyAll();
    }
    const label = event.lease.metadata?.labels?.[KEY_LABEL];
    if (!label || !this.listeners.has(label)) return;
    this.scheduleExpiry(label);
    this.listeners.notify(label);
  }

  private scheduleExpiry(label: string): void {
    clearTimeout(this.expiryTimers.get(label));
    this.expiryTimers.delete(label);
    const now = this.clock();
    let next: number | undefined;
    for (const lease of this.cache.leases(label) ?? ([] as k8s.V1Lease[])) {
      const expires = lease.spec?.holderIdentity ? expiresAt(lease, this.observed, now) : undefined;
      if (expires === undefined) continue;
      if (expires >= now && (next === undefined || expires < next)) next = expires;
    }
    if (next === undefined || this.stopped) return;
    const timer = setTimeout(() => {
      this.expiryTimers.delete(label);
      this.scheduleExpiry(label);
      if (!this.stopped) this.listeners.notify(label);
    }, timerDelay(next - now + 50));
    timer.unref();
    this.expiryTimers.set(label, timer);
  }
}
