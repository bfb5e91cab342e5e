/**
 * What the operator and its controllers use of an informer (`Cache`), and a cache over several namespaces
 * made of one informer per namespace (`MultiNamespaceCache`, as controller-runtime's multi-namespace cache).
 */
import type { InformerHandler, KubeObject } from "./informer";

/** A cache fed by list + watch: an `Informer`, or several merged. Contracts as documented on `Informer`. */
export interface Cache<T extends KubeObject> {
  on(handler: InformerHandler<T>): void;
  start(): void;
  stop(): void;
  waitForSync(): Promise<void>;
  hasSynced(): boolean;
  get(namespace: string | undefined, name: string): T | undefined;
  list(namespace?: string): T[];
  observe(obj: T): void;
  addIndex(name: string, fn: (obj: T) => string[]): void;
  byIndex(name: string, value: string): T[];
}

/**
 * One cache over a fixed set of namespaces, each served by its own cache (an informer listing and watching
 * that namespace only, so no cluster-scope list or watch permission is needed). Namespaces are disjoint:
 * every object lives in exactly one member. Reads merge the members; handlers, indexes, start and stop apply
 * to each; it has synced once every member has. Objects of namespaces outside the set are never found, and
 * `observe` ignores them.
 */
export class MultiNamespaceCache<T extends KubeObject> implements Cache<T> {
  private readonly members: ReadonlyMap<string, Cache<T>>;

  /** `members`: namespace → the cache of that namespace alone. */
  constructor(members: ReadonlyMap<string, Cache<T>>) {
    this.members = members;
  }

  on(handler: InformerHandler<T>): void {
    for (const member of this.members.values()) member.on(handler);
  }

  start(): void {
    for (const member of this.members.values()) member.start();
  }

  stop(): void {
    for (const member of this.members.values()) member.stop();
  }

  /** Resolves once every member has synced; rejects as soon as one is stopped first. */
  async waitForSync(): Promise<void> {
    await Promise.all([...this.members.values()].map((member) => member.waitForSync()));
  }

  hasSynced(): boolean {
    return [...this.members.values()].every((member) => member.hasSynced());
  }

  get(namespace: string | undefined, name: string): T | undefined {
    return namespace === undefined ? undefined : this.members.get(namespace)?.get(namespace, name);
  }

  list(namespace?: string): T[] {
    if (namespace !== undefined) return this.members.get(namespace)?.list(namespace) ?? [];
    return [...this.members.values()].flatMap((member) => member.list());
  }

  observe(obj: T): void {
    this.members.get(obj.metadata?.namespace ?? "")?.observe(obj);
  }

  addIndex(name: string, fn: (obj: T) => string[]): void {
    for (const member of this.members.values()) member.addIndex(name, fn);
  }

  byIndex(name: string, value: string): T[] {
    return [...this.members.values()].flatMap((member) => member.byIndex(name, value));
  }
}
