/**
 * The claim history of a run: every change of every LockClaim in the namespace, in the order the API
 * server delivered them (one watch, so in resourceVersion order), stamped with this process's clock.
 * Workers wait on it; the checker replays it.
 *
 * When the watch cannot continue from where it was (the API server restarted and answers 410 Gone, or
 * an error), the log lists the claims again and records a `reset` followed by one `sync` event per claim:
 * changes in between are not seen, and the replay starts over from that snapshot.
 */
import * as k8s from "@kubernetes/client-node";
import { CLAIM_PLURAL, GROUP, VERSION, type LockClaim } from "../../src/api/types";
import { errorText, now, retry, sleep, withTimeout } from "./util";

export interface ClaimEvent {
  /** Position in the log. */
  seq: number;
  /** When it reached this process (`now()`). */
  t: number;
  type: "ADDED" | "MODIFIED" | "DELETED" | "reset" | "sync";
  name: string;
  lock: string;
  resourceVersion: string;
  phase?: string;
  fencingToken?: string;
  /** The Granted condition's reason and message. */
  reason?: string;
  message?: string;
  /** metadata.deletionTimestamp is set. */
  deleting: boolean;
}

export type ClaimListener = (event: ClaimEvent) => void;

export class ClaimLog {
  readonly events: ClaimEvent[] = [];
  /** The last event of each claim that still exists. */
  readonly latest = new Map<string, ClaimEvent>();
  /** How many times the watch could not continue and the log started over from a list. */
  resets = 0;
  private readonly listeners = new Set<ClaimListener>();
  private abort?: AbortController;
  private stopped = false;
  private resourceVersion = "";
  private readonly custom: k8s.CustomObjectsApi;
  private loop?: Promise<void>;

  constructor(private readonly namespace: string, private readonly kc: k8s.KubeConfig) {
    this.custom = kc.makeApiClient(k8s.CustomObjectsApi);
  }

  on(listener: ClaimListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves after the first list; the watch then runs until `stop()`. */
  async start(): Promise<void> {
    await retry("list claims", () => this.list(false), now() + 60_000); // a new CRD's storage may still be initializing
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort?.abort();
    await this.loop;
  }

  private record(type: ClaimEvent["type"], claim: LockClaim): void {
    const condition = claim.status?.conditions?.find((c) => c.type === "Granted");
    const event: ClaimEvent = {
      seq: this.events.length, t: now(), type,
      name: claim.metadata.name, lock: claim.spec?.lockName ?? "", resourceVersion: claim.metadata.resourceVersion ?? "",
      phase: claim.status?.phase, fencingToken: claim.status?.fencingToken,
      reason: condition?.reason, message: condition?.message, deleting: !!claim.metadata.deletionTimestamp,
    };
    this.events.push(event);
    if (type === "DELETED") this.latest.delete(event.name);
    else this.latest.set(event.name, event);
    for (const listener of this.listeners) listener(event);
  }

  private async list(reset: boolean): Promise<void> {
    const result = (await withTimeout(
      this.custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: this.namespace, plural: CLAIM_PLURAL }),
      10_000, "list claims",
    )) as { items: LockClaim[]; metadata: { resourceVersion: string } };
    if (reset) {
      this.resets++;
      const marker: ClaimEvent = { seq: this.events.length, t: now(), type: "reset", name: "", lock: "", resourceVersion: result.metadata.resourceVersion, deleting: false };
      this.events.push(marker);
      const present = new Set(result.items.map((c) => c.metadata.name));
      for (const name of [...this.latest.keys()]) if (!present.has(name)) this.latest.delete(name);
    }
    for (const claim of result.items) this.record(reset ? "sync" : "ADDED", claim);
    this.resourceVersion = result.metadata.resourceVersion;
  }

  /** Watches until stopped; bounded by the stop flag, with backoff between failures. */
  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      const outcome = await this.watchOnce();
      if (this.stopped) return;
      if (outcome === "closed") {
        failures = 0;
        await sleep(20); // a server that ends every watch at once must not make this spin
        continue;
      }
      failures++;
      await sleep(Math.min(100 * 2 ** Math.min(failures, 4), 1000));
      try {
        await this.list(true);
        failures = 0;
      } catch {
        // the API server is still away: try again
      }
    }
  }

  /** One watch request: "closed" when it ended cleanly (watch again from the last resourceVersion), else "relist". */
  private watchOnce(): Promise<"closed" | "relist"> {
    return new Promise((resolve) => {
      let gone = false;
      const path = `/apis/${GROUP}/${VERSION}/namespaces/${this.namespace}/${CLAIM_PLURAL}`;
      const done = (err: unknown) => resolve(gone || err ? "relist" : "closed");
      new k8s.Watch(this.kc).watch(path, { resourceVersion: this.resourceVersion, allowWatchBookmarks: true, timeoutSeconds: 60 }, (type, obj: LockClaim & { code?: number }) => {
        if (type === "ERROR") {
          gone = true; // 410 Gone or another error: start over from a list
          this.abort?.abort();
          return;
        }
        this.resourceVersion = obj.metadata?.resourceVersion ?? this.resourceVersion;
        if (type === "ADDED" || type === "MODIFIED" || type === "DELETED") this.record(type, obj);
      }, done).then((abort) => {
        this.abort = abort;
        if (this.stopped) abort.abort();
      }, (err) => done(err ?? new Error(errorText(err))));
    });
  }
}
