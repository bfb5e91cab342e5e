/**
 * Backends by type and by name.
 *
 * - Types: each backend file exports a factory; `registerBackendType(type, factory)` makes it available
 *   under its config `type` (this file registers the built-in ones below). A backend whose client
 *   library is heavy or native can register a factory that imports its file lazily, so operators that
 *   do not use it never load it.
 * - Names: `BackendRegistry` holds the operator's configured backends (the config's `backends[]`) by
 *   `name`; reconcilers look them up with `get(name)`.
 */
import type { KubeConfig } from "@kubernetes/client-node";
import { BackendConfigError, type LockBackend } from "./backend";
import { kubernetesBackendFactory } from "./kubernetes";
import { etcdBackendFactory } from "./etcd";
import { redisBackendFactory } from "./redis";

/** What a factory gets to build one configured backend. */
export interface BackendFactoryContext {
  /** The backend's configured name. */
  name: string;
  /** The operator's own cluster (for the kubernetes backend, and for Secrets a backend reads). */
  kubeConfig: KubeConfig;
  /** The config's `clusterName` (may be empty). */
  clusterName: string;
  /** The type's own settings block from the config (`redis: {...}` for `type: redis`), or {}. */
  settings: Record<string, unknown>;
}

/** Builds a backend; throws (BackendConfigError or Error) on invalid settings. */
export type BackendFactory = (context: BackendFactoryContext) => LockBackend | Promise<LockBackend>;

/** One entry of the operator config's `backends[]`, plus what every backend gets from the operator. */
export interface BackendConfig {
  name: string;
  type: string;
  /** The type's settings block; omitted means {}. */
  settings?: Record<string, unknown>;
  kubeConfig: KubeConfig;
  clusterName?: string;
}

/** The name of the backend that exists without configuration: Leases on the operator's own API server. */
export const BUILTIN_BACKEND = "kubernetes";

const factories = new Map<string, BackendFactory>();

export function registerBackendType(type: string, factory: BackendFactory): void {
  if (factories.has(type)) throw new BackendConfigError(`backend type "${type}" is already registered`);
  factories.set(type, factory);
}

/** The registered types, sorted. */
export function backendTypes(): string[] {
  return [...factories.keys()].sort();
}

export async function createBackend(config: BackendConfig): Promise<LockBackend> {
  const factory = factories.get(config.type);
  if (!factory) {
    throw new BackendConfigError(`backend "${config.name}": unknown type "${config.type}"; known types: ${backendTypes().join(", ")}`);
  }
  const settings = config.settings ?? {};
  if (typeof settings !== "object" || settings === null || Array.isArray(settings)) {
    throw new BackendConfigError(`backend "${config.name}": settings for type ${config.type} must be a mapping`);
  }
  try {
    return await factory({ name: config.name, kubeConfig: config.kubeConfig, clusterName: config.clusterName ?? "", settings });
  } catch (err) {
    if (err instanceof BackendConfigError) throw err;
    throw new BackendConfigError(`backend "${config.name}": ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/** The operator's configured backends, by name. */
export class BackendRegistry {
  private readonly backends = new Map<string, LockBackend>();

  constructor(backends: Iterable<LockBackend> = []) {
    for (const backend of backends) this.add(backend);
  }

  /**
   * Builds every configured backend. The built-in `kubernetes` backend is added when no entry takes
   * that name, so a config that names no backend at all works against the API server alone. If one
   * backend cannot be built, those built so far are closed and the error is thrown.
   */
  static async fromConfig(
    entries: { name: string; type: string; settings?: Record<string, unknown> }[],
    context: { kubeConfig: KubeConfig; clusterName?: string },
  ): Promise<BackendRegistry> {
    const registry = new BackendRegistry();
    const all = entries.some((e) => e.name === BUILTIN_BACKEND) ? entries : [...entries, { name: BUILTIN_BACKEND, type: "kubernetes" }];
    try {
      for (const entry of all) {
        if (registry.has(entry.name)) throw new BackendConfigError(`backend "${entry.name}" is configured twice`);
        registry.add(await createBackend({ ...entry, kubeConfig: context.kubeConfig, clusterName: context.clusterName }));
      }
    } catch (err) {
      await registry.closeAll();
      throw err;
    }
    return registry;
  }

  add(backend: LockBackend): void {
    if (this.backends.has(backend.name)) throw new BackendConfigError(`backend "${backend.name}" is configured twice`);
    this.backends.set(backend.name, backend);
  }

  has(name: string): boolean {
    return this.backends.has(name);
  }

  get(name: string): LockBackend {
    const backend = this.backends.get(name);
    if (!backend) throw new BackendConfigError(`unknown backend "${name}"; configured: ${this.names().join(", ") || "none"}`);
    return backend;
  }

  /** Configured names, sorted. */
  names(): string[] {
    return [...this.backends.keys()].sort();
  }

  all(): LockBackend[] {
    return [...this.backends.values()];
  }

  /** Closes every backend (errors are collected, not stopping the others) and forgets them. */
  async closeAll(): Promise<void> {
    const results = await Promise.allSettled([...this.backends.values()].map((b) => b.close()));
    this.backends.clear();
    const failures = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failures.length > 0) {
      throw new AggregateError(failures.map((f) => f.reason), `closing backends: ${failures.map((f) => String(f.reason)).join("; ")}`);
    }
  }
}

registerBackendType("kubernetes", kubernetesBackendFactory);
registerBackendType("redis", redisBackendFactory);
registerBackendType("etcd", etcdBackendFactory);
registerBackendType("zookeeper", async (context) => (await import("./zookeeper")).zookeeperBackendFactory(context)); // lazy: loads the native addon only when used
