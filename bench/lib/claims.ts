/**
 * Watching claims with timestamps: every event of a namespace's LockClaims is handed to waiters the moment
 * the watch delivers it, so a benchmark measures "action → change observed by a watcher".
 */
import * as k8s from "@kubernetes/client-node";
import { CLAIM_PLURAL, GROUP, VERSION, type LockClaim } from "../../src/api/types";
import { now } from "./stats";

export type EventType = "ADDED" | "MODIFIED" | "DELETED";
type Predicate = (type: EventType, claim: LockClaim) => boolean;
interface Waiter { predicate: Predicate; resolve: (at: number) => void; reject: (err: Error) => void; timer: NodeJS.Timeout }

export const isGranted: Predicate = (type, c) => type !== "DELETED" && c.status?.phase === "Granted";
export const isPending: Predicate = (type, c) => type !== "DELETED" && c.status?.phase === "Pending";
export const isDeleted: Predicate = (type) => type === "DELETED";

export class ClaimWatch {
  private readonly waiters = new Map<string, Set<Waiter>>();
  private readonly listeners = new Set<(type: EventType, claim: LockClaim, at: number) => void>();
  private abort?: AbortController;
  private stopped = false;
  private resourceVersion = "";

  constructor(private readonly namespace: string, private readonly kc: k8s.KubeConfig) {}

  /** Lists, then watches from the list's resourceVersion; resolves once the watch is established. */
  async start(): Promise<void> {
    this.resourceVersion = (await this.list(false)).resourceVersion;
    await this.watch();
  }

  /**
   * Lists every claim, in pages; with `deliver`, each is handed on as a MODIFIED event (after a watch that could not
   * continue: a grant made meanwhile is seen from the list, at the time of the list).
   */
  private async list(deliver: boolean): Promise<{ resourceVersion: string }> {
    const custom = this.kc.makeApiClient(k8s.CustomObjectsApi);
    let token: string | undefined;
    for (;;) {
      const page = (await custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: this.namespace, plural: CLAIM_PLURAL, limit: 500, _continue: token })) as
        { items: LockClaim[]; metadata: { resourceVersion: string; continue?: string } };
      if (deliver) for (const claim of page.items) this.deliver("MODIFIED", claim, now());
      token = page.metadata.continue;
      if (!token) return { resourceVersion: page.metadata.resourceVersion };
    }
  }

  /**
   * Watches from the last resourceVersion seen. The API server ends a watch after `timeoutSeconds` (so a connection
   * that went silent is replaced); one that cannot continue from there (an ERROR event such as 410 Gone: the
   * version was compacted, or this watcher fell behind and was dropped) lists again first, or it would be asked
   * for the same lost version forever.
   */
  private async watch(): Promise<void> {
    if (this.stopped) return;
    const path = `/apis/${GROUP}/${VERSION}/namespaces/${this.namespace}/${CLAIM_PLURAL}`;
    let lost = false;
    const again = () => void setTimeout(() => void this.resume(lost).catch(() => setTimeout(again, 1000)), 20);
    this.abort = await new k8s.Watch(this.kc).watch(path, { resourceVersion: this.resourceVersion, allowWatchBookmarks: true, timeoutSeconds: 300 }, (type: string, obj: LockClaim) => {
      if (type === "ERROR") lost = true;
      if (lost) return;
      this.resourceVersion = obj.metadata?.resourceVersion ?? this.resourceVersion;
      if (type === "ADDED" || type === "MODIFIED" || type === "DELETED") this.deliver(type, obj, now());
    }, (err) => {
      if (err) lost = true;
      again();
    });
  }

  private async resume(lost: boolean): Promise<void> {
    if (this.stopped) return;
    if (lost) this.resourceVersion = (await this.list(true)).resourceVersion;
    await this.watch();
  }

  private deliver(type: EventType, claim: LockClaim, at: number): void {
    for (const listener of this.listeners) listener(type, claim, at);
    const waiting = this.waiters.get(claim.metadata.name);
    for (const waiter of waiting ?? []) {
      if (!waiter.predicate(type, claim)) continue;
      clearTimeout(waiter.timer);
      waiting!.delete(waiter);
      waiter.resolve(at);
    }
  }

  /** Calls `listener` for every event; returns a function that stops it. */
  on(listener: (type: EventType, claim: LockClaim, at: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The time (stats.now) at which an event of claim `name` satisfying `predicate` was delivered. Register before acting. */
  waitFor(name: string, predicate: Predicate, what: string, timeoutMs = 60_000): Promise<number> {
    return new Promise((resolve, reject) => {
      let set = this.waiters.get(name);
      if (!set) this.waiters.set(name, (set = new Set()));
      const waiter: Waiter = {
        predicate, resolve, reject,
        timer: setTimeout(() => {
          set!.delete(waiter);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for claim ${this.namespace}/${name} ${what}`));
        }, timeoutMs),
      };
      set.add(waiter);
    });
  }

  stop(): void {
    this.stopped = true;
    this.abort?.abort();
    for (const set of this.waiters.values()) for (const w of set) clearTimeout(w.timer);
  }
}

const mergePatch = k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch);

/** One merge patch of a claim's status subresource (the operator's own kind of write). */
export function patchClaimStatus(custom: k8s.CustomObjectsApi, namespace: string, name: string, status: Record<string, unknown>): Promise<unknown> {
  return custom.patchNamespacedCustomObjectStatus({ group: GROUP, version: VERSION, plural: CLAIM_PLURAL, namespace, name, body: { status } }, mergePatch);
}

/** Runs `task(i)` for i in [0, count) with at most `concurrency` at once. */
export async function pool(count: number, concurrency: number, task: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}
