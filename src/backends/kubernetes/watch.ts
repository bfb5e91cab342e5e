/**
 * The kubernetes backend's watch: one API watch per namespace over the kubelock slot and waiter Leases in it,
 * shared by every key watched there (see NamespaceWatch).
 */
import * as k8s from "@kubernetes/client-node";
import { timerDelay } from "../../runtime/clock";
import type { ObservedVersions } from "../../runtime/observed";
import { FanOut, type Waiter } from "../kit/fan-out";
import { expiresAt, KEY_LABEL, MANAGED_BY, MANAGED_BY_LABEL, observedGroup, ROLE_LABEL, ROLE_SLOT, ROLE_WAITER } from "./backend";

/** The API server ends each watch after about this long; the client re-watches. */
const WATCH_TIMEOUT_SECONDS = 300;

type Listener = () => void;

/**
 * One watch per namespace on every kubelock slot and waiter Lease in it, shared by all the keys watched there;
 * events go to the listeners of the Lease's `kubelock.io/key` label. It reconnects with backoff, calls
 * every listener on each (re)connect (changes may have happened while it was not connected), and calls
 * a key's listeners when the earliest hold it knows of expires (an expiry writes nothing, so no event
 * would tell). Each event notes the Lease's resourceVersion in the backend's observations, so expiry
 * counts from when this process first saw a change. It stops when its last listener goes.
 */
export class NamespaceWatch {
  private started = false;
  private stopped = false;
  private controller?: AbortController;
  private retryTimer?: NodeJS.Timeout;
  private idleTimer?: NodeJS.Timeout;
  private backoffMs = 250;
  /** Listeners by key label; a label's expiry timer runs while it has listeners. */
  private readonly listeners = new FanOut<void>((label) => void queueMicrotask(() => this.scheduleExpiry(label)), (label) => {
    clearTimeout(this.expiryTimers.get(label));
    this.expiryTimers.delete(label);
    if (this.listeners.size === 0) this.stop();
  }, (key) => this.readOrder(key));
  /** Slot Leases by key label, then by name. */
  private readonly leases = new Map<string, Map<string, k8s.V1Lease>>();
  private readonly expiryTimers = new Map<string, NodeJS.Timeout>();

  constructor(
    private readonly kubeConfig: k8s.KubeConfig,
    private readonly namespace: string,
    private readonly clock: () => number,
    private readonly observed: ObservedVersions,
    private readonly onIdle: () => void,
    /** The holderIds of a lock key's holds, then its waiters: whose turn it is, for listeners that wait. */
    private readonly readOrder: (key: string) => Promise<readonly string[]>,
  ) {}

  add(label: string, listener: Listener, waiter?: Waiter): () => void {
    const remove = this.listeners.add(label, listener, waiter);
    if (!this.started) {
      this.started = true;
      void this.connect();
    }
    return remove;
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.idleTimer);
    for (const timer of this.expiryTimers.values()) clearTimeout(timer);
    this.expiryTimers.clear();
    this.listeners.clear();
    this.controller?.abort();
    this.onIdle();
  }

  private notify(label: string): void {
    if (!this.stopped) this.listeners.notify(label);
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    this.retryTimer = undefined;
    const connectedAt = Date.now();
    let ended = false;
    let controller: AbortController | undefined;
    const end = () => {
      if (ended) return;
      ended = true;
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
    // The server ends the watch after timeoutSeconds; if nothing arrives for longer, the connection is dead.
    const timeoutSeconds = Math.round(WATCH_TIMEOUT_SECONDS * (0.8 + Math.random() * 0.2));
    const armIdle = () => {
      clearTimeout(this.idleTimer);
      this.idleTimer = setTimeout(end, (timeoutSeconds + 30) * 1000);
      this.idleTimer.unref();
    };
    try {
      this.leases.clear();
      armIdle();
      // No resourceVersion: the server first sends the current Leases as ADDED events, then changes.
      controller = await new k8s.Watch(this.kubeConfig).watch(
        `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(this.namespace)}/leases`,
        { labelSelector: `${MANAGED_BY_LABEL}=${MANAGED_BY},${ROLE_LABEL} in (${ROLE_SLOT},${ROLE_WAITER})`, timeoutSeconds },
        (type: string, object: k8s.V1Lease) => {
          if (ended) return;
          armIdle();
          if (type === "ERROR") return end();
          if (type === "BOOKMARK") return;
          const name = object?.metadata?.name;
          const label = object?.metadata?.labels?.[KEY_LABEL];
          if (!name || !label) return;
          let byName = this.leases.get(label);
          if (type === "DELETED") {
            this.observed.drop(observedGroup(object), name);
            byName?.delete(name);
            if (byName?.size === 0) this.leases.delete(label);
          } else {
            if (!byName) this.leases.set(label, (byName = new Map()));
            byName.set(name, object);
            if (object.metadata?.resourceVersion) this.observed.note(observedGroup(object), name, object.metadata.resourceVersion, this.clock());
          }
          if (!this.listeners.has(label)) return;
          this.scheduleExpiry(label);
          this.notify(label);
        },
        () => end(),
      );
      if (this.stopped || ended) {
        controller.abort();
        return;
      }
      this.controller = controller;
      if (!this.stopped) this.listeners.notifyAll();
    } catch {
      this.observed.interrupted(); // could not connect: the server (or the way to it) is down
      end();
    }
  }

  private scheduleExpiry(label: string): void {
    clearTimeout(this.expiryTimers.get(label));
    this.expiryTimers.delete(label);
    const now = this.clock();
    let next: number | undefined;
    for (const lease of this.leases.get(label)?.values() ?? []) {
      const expires = lease.spec?.holderIdentity ? expiresAt(lease, this.observed, now) : undefined;
      if (expires === undefined) continue;
      if (expires >= now && (next === undefined || expires < next)) next = expires;
    }
    if (next === undefined || this.stopped) return;
    const timer = setTimeout(() => {
      this.expiryTimers.delete(label);
      this.scheduleExpiry(label);
      this.notify(label);
    }, timerDelay(next - now + 50));
    timer.unref();
    this.expiryTimers.set(label, timer);
  }
}
