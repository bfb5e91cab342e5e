/**
 * Backends by type and by name.
 *
 * - Types: each backend lives in a folder of its own (`<type>/index.ts` exports its BackendPlugin: the type,
 *   the settings it cannot do without, a settings validator and a factory). PLUGINS below is the only place
 *   that lists them: the config loader asks this file which types exist and what each requires, and runs
 *   `validateSettings` for every configured backend, so all settings mistakes are config mistakes reported
 *   before anything is built. A plugin whose client library is heavy or native imports it in its factory,
 *   so operators that do not use it never load it.
 * - Names: `BackendRegistry` holds the operator's configured backends (the config's `backends[]`) by
 *   `name`; reconcilers look them up with `get(name)`.
 */
import type { KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "../log";
import { BackendConfigError, type LockBackend } from "./backend";
import { etcdPlugin } from "./etcd";
import { kubernetesPlugin } from "./kubernetes";
import { postgresqlPlugin } from "./postgresql";
import { redisPlugin } from "./redis";
import { zookeeperPlugin } from "./zookeeper";

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
  /** Set with leader election: what a backend needs to hand per-process state to the next leader. */
  handover?: Handover;
  /** The operator's log, for what a backend notices on its own (a credential file it cannot use). */
  log?: Logger;
}

/** With leader election: where the leader keeps state for the next one, and how long a failover may take. */
export interface Handover {
  /** The operator's own namespace. */
  namespace: string;
  /**
   * The leader election (`<lease namespace>.<lease name>`): state is kept per election, so operators of other
   * elections (another installation, a test) that share the namespace never take each other's.
   */
  election: string;
  /** The longest a crashed leader goes unreplaced: leader lease + polling, ms. */
  failoverMs: number;
  log: Logger;
}

/** Builds a backend; throws (BackendConfigError or Error) on invalid settings. */
export type BackendFactory = (context: BackendFactoryContext) => LockBackend | Promise<LockBackend>;

/**
 * Checks a settings block without building the backend or connecting anywhere (it may read the files
 * the settings name); throws BackendConfigError, one line per mistake, when the settings are invalid.
 */
export type BackendSettingsValidator = (name: string, settings: Record<string, unknown>) => void | Promise<void>;

/** One entry of the operator config's `backends[]`, plus what every backend gets from the operator. */
export interface BackendConfig {
  name: string;
  type: string;
  /** The type's settings block; omitted means {}. */
  settings?: Record<string, unknown>;
  kubeConfig: KubeConfig;
  clusterName?: string;
  handover?: Handover;
  log?: Logger;
}

/** The name of the backend that exists without configuration: Leases on the operator's own API server. */
export const BUILTIN_BACKEND = "kubernetes";

/** A setting a type cannot do without, checked with the config's shape: `[field, valid, what it must be]`. */
export type RequiredSetting = [string, (value: unknown) => boolean, string];

/** One backend type: what its folder's index.ts exports. */
export interface BackendPlugin {
  /** The config's `type`, also the name of its settings block (`redis: {...}` for `type: redis`). */
  type: string;
  required: RequiredSetting[];
  validateSettings: BackendSettingsValidator;
  factory: BackendFactory;
}

/** Every backend type, in the order `backendTypes()` lists them. */
const PLUGINS: readonly BackendPlugin[] = [kubernetesPlugin, etcdPlugin, redisPlugin, zookeeperPlugin, postgresqlPlugin];

const plugins = new Map(PLUGINS.map((p) => [p.type, p]));

/** The known types, sorted. */
export function backendTypes(): string[] {
  return [...plugins.keys()].sort();
}

/** The settings `type` cannot do without (none for an unknown type). */
export function requiredSettings(type: string): readonly RequiredSetting[] {
  return plugins.get(type)?.required ?? [];
}

export async function createBackend(config: BackendConfig): Promise<LockBackend> {
  const factory = plugins.get(config.type)?.factory;
  if (!factory) {
    throw new BackendConfigError(`backend "${config.name}": unknown type "${config.type}"; known types: ${backendTypes().join(", ")}`);
  }
  const settings = config.settings ?? {};
  if (typeof settings !== "object" || settings === null || Array.isArray(settings)) {
    throw new BackendConfigError(`backend "${config.name}": settings for type ${config.type} must be a mapping`);
  }
  try {
    return await factory({ name: config.name, kubeConfig: config.kubeConfig, clusterName: config.clusterName ?? "", settings, handover: config.handover, log: config.log });
  } catch (err) {
    if (err instanceof BackendConfigError) throw err;
    throw new BackendConfigError(problemLines(config.name, err).join("\n"), { cause: err });
  }
}

/**
 * The mistakes in one backend's settings, one line each (`backend "<name>": <mistake>`), or [] when
 * they are valid. Nothing is built and nothing connects; files the settings name are read.
 */
export async function backendSettingsProblems(config: { name: string; type: string; settings?: Record<string, unknown> }): Promise<string[]> {
  const validate = plugins.get(config.type)?.validateSettings;
  if (!validate) return [`backend "${config.name}": unknown type "${config.type}"; known types: ${backendTypes().join(", ")}`];
  const settings = config.settings ?? {};
  if (typeof settings !== "object" || settings === null || Array.isArray(settings)) return [`backend "${config.name}": settings for type ${config.type} must be a mapping`];
  try {
    await validate(config.name, settings);
    return [];
  } catch (err) {
    return problemLines(config.name, err);
  }
}

/** A settings error as lines that each name the backend once. */
function problemLines(name: string, err: unknown): string[] {
  if (err instanceof BackendConfigError) return err.message.split("\n");
  const message = err instanceof Error ? err.message : String(err);
  return [`backend "${name}": ${message.startsWith(`backend ${name}: `) ? message.slice(`backend ${name}: `.length) : message}`];
}

/** The operator's configured backends, by name. */
export class BackendRegistry {
  private readonly backends = new Map<string, LockBackend>();

  constructor(backends: Iterable<LockBackend> = []) {
    for (const backend of backends) this.add(backend);
  }

  /**
   * Builds every configured backend, plus the built-in `kubernetes` one (with `builtinSettings`, the
   * config's top-level `kubernetes:` block), so a config that names no backend at all works against the
   * API server alone. No entry may take the built-in's name: it would silently replace the backend every
   * lock without spec.backend may rely on. If one backend cannot be built, those built so far are closed
   * and the error is thrown.
   */
  static async fromConfig(
    entries: { name: string; type: string; settings?: Record<string, unknown> }[],
    context: { kubeConfig: KubeConfig; clusterName?: string; handover?: Handover; log?: Logger; builtinSettings?: Record<string, unknown> },
  ): Promise<BackendRegistry> {
    const registry = new BackendRegistry();
    const all = [...entries, { name: BUILTIN_BACKEND, type: "kubernetes", settings: context.builtinSettings, builtin: true }];
    try {
      for (const entry of all) {
        if (entry.name === BUILTIN_BACKEND && !("builtin" in entry)) {
          throw new BackendConfigError(`backend "${BUILTIN_BACKEND}": the built-in Kubernetes Lease backend's name; set its settings in the config's top-level "${BUILTIN_BACKEND}:" block, or name the entry otherwise`);
        }
        if (registry.has(entry.name)) throw new BackendConfigError(`backend "${entry.name}" is configured twice`);
        registry.add(await createBackend({ ...entry, kubeConfig: context.kubeConfig, clusterName: context.clusterName, handover: context.handover, log: context.log }));
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
