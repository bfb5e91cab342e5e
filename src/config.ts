/**
 * The operator's configuration file (`kubelock operator --config FILE`), parsed with `yaml` and
 * validated up front: every broken invariant is reported, one line each, before anything starts.
 *
 * ```yaml
 * defaultBackend: kubernetes   # default "kubernetes": Leases on the operator's own API server
 * clusterName: east            # default "": names this cluster's holds in a shared backend; give each
 *                              # cluster that shares a backend a different one
 * backends:                    # default []: the built-in `kubernetes` backend always exists
 *   - name: redis              # a DNS label, unique
 *     type: redis              # kubernetes | etcd | redis | zookeeper
 *     redis: { url: redis://redis:6379, keyPrefix: kubelock }   # the type's own settings block
 * ```
 */
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { BUILTIN_BACKEND } from "./backends/registry";

export interface BackendEntry {
  name: string;
  type: BackendType;
  /** The block named after the type (`redis: {...}` for `type: redis`). */
  settings: Record<string, unknown>;
}

export const BACKEND_TYPES = Object.freeze(["kubernetes", "etcd", "redis", "zookeeper"] as const);
export type BackendType = (typeof BACKEND_TYPES)[number];

export interface OperatorConfig {
  defaultBackend: string;
  clusterName: string;
  backends: BackendEntry[];
}

export const DEFAULT_CONFIG: Readonly<OperatorConfig> = Object.freeze({ defaultBackend: BUILTIN_BACKEND, clusterName: "", backends: [] });

/** A config that cannot be used; `problems` has one line per mistake. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(readonly source: string, readonly problems: string[]) {
    super(`invalid config ${source}:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Settings each type cannot do without: `[field, check, what it must be]`. */
const REQUIRED_SETTINGS: Record<BackendType, [string, (v: unknown) => boolean, string][]> = {
  kubernetes: [],
  etcd: [["endpoints", (v) => Array.isArray(v) && v.length > 0 && v.every((e) => typeof e === "string" && /^https?:\/\//.test(e)), "a non-empty list of http(s):// URLs"]],
  redis: [["url", (v) => typeof v === "string" && /^rediss?:\/\//.test(v), "a redis:// or rediss:// URL"]],
  zookeeper: [["connect", (v) => typeof v === "string" && /^[^,\s]+:\d+(,[^,\s]+:\d+)*$/.test(v), "a host:port list separated by commas"]],
};

export function loadConfig(path: string | undefined): OperatorConfig {
  if (!path) return { ...DEFAULT_CONFIG, backends: [] };
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(path, [`cannot read the file: ${(err as Error).message}`]);
  }
  return parseConfig(text, path);
}

export function parseConfig(text: string, source = "config"): OperatorConfig {
  let raw: unknown;
  try {
    raw = parse(text) ?? {};
  } catch (err) {
    throw new ConfigError(source, [`not valid YAML: ${(err as Error).message.split("\n")[0]}`]);
  }
  const problems: string[] = [];
  if (typeof raw !== "object" || Array.isArray(raw)) throw new ConfigError(source, ["the top level must be a mapping"]);
  const doc = raw as Record<string, unknown>;
  for (const key of Object.keys(doc)) {
    if (!["defaultBackend", "clusterName", "backends"].includes(key)) problems.push(`unknown field "${key}" (known: defaultBackend, clusterName, backends)`);
  }
  const clusterName = doc.clusterName ?? "";
  if (typeof clusterName !== "string" || (clusterName !== "" && !DNS_LABEL.test(clusterName))) {
    problems.push(`clusterName: "${String(clusterName)}" must be a DNS label (lower-case letters, digits, '-')`);
  }
  const backends: BackendEntry[] = [];
  const rawBackends = doc.backends ?? [];
  if (!Array.isArray(rawBackends)) problems.push("backends: must be a list");
  else rawBackends.forEach((entry, i) => {
    const parsed = parseBackend(entry, `backends[${i}]`, problems);
    if (!parsed) return;
    if (backends.some((b) => b.name === parsed.name)) problems.push(`backends[${i}].name: "${parsed.name}" is used twice`);
    backends.push(parsed);
  });
  const defaultBackend = doc.defaultBackend ?? BUILTIN_BACKEND;
  const names = [BUILTIN_BACKEND, ...backends.map((b) => b.name)];
  if (typeof defaultBackend !== "string" || !names.includes(defaultBackend)) {
    problems.push(`defaultBackend: "${String(defaultBackend)}" is not a configured backend (configured: ${[...new Set(names)].join(", ")})`);
  }
  if (problems.length > 0) throw new ConfigError(source, problems);
  return { defaultBackend: defaultBackend as string, clusterName: clusterName as string, backends };
}

function parseBackend(entry: unknown, at: string, problems: string[]): BackendEntry | undefined {
  if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
    problems.push(`${at}: must be a mapping with name and type`);
    return undefined;
  }
  const { name, type, ...rest } = entry as Record<string, unknown>;
  const before = problems.length;
  if (typeof name !== "string" || !DNS_LABEL.test(name)) problems.push(`${at}.name: "${String(name ?? "")}" must be a DNS label`);
  if (typeof type !== "string" || !(BACKEND_TYPES as readonly string[]).includes(type)) {
    problems.push(`${at}.type: "${String(type ?? "")}" is not a backend type (known: ${BACKEND_TYPES.join(", ")})`);
    return undefined;
  }
  for (const key of Object.keys(rest)) {
    if (key !== type) problems.push(`${at}.${key}: unexpected field; the settings of a ${type} backend go under "${type}:"`);
  }
  const settings = rest[type] ?? {};
  if (typeof settings !== "object" || settings === null || Array.isArray(settings)) {
    problems.push(`${at}.${type}: must be a mapping`);
    return undefined;
  }
  for (const [field, valid, what] of REQUIRED_SETTINGS[type as BackendType]) {
    const value = (settings as Record<string, unknown>)[field];
    if (value === undefined) problems.push(`${at}.${type}.${field}: missing; it must be ${what}`);
    else if (!valid(value)) problems.push(`${at}.${type}.${field}: must be ${what}`);
  }
  if (problems.length > before) return undefined;
  return { name: name as string, type: type as BackendType, settings: settings as Record<string, unknown> };
}
