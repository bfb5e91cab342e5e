/**
 * The operator's configuration file (`kubelock operator --config FILE`), parsed with `yaml` and
 * validated up front: every broken invariant is reported, one line each, before anything starts.
 *
 * ```yaml
 * defaultBackend: kubernetes   # default "kubernetes": Leases on the operator's own API server
 * clusterName: east            # names this cluster's holds in a shared backend; default: derived from
 *                              # the kube-system namespace's UID, so clusters never share one by accident
 * kubernetes:                  # optional: settings of the built-in `kubernetes` backend (its type's block)
 *   requestTimeoutMs: 10000
 * backends:                    # default []: the built-in `kubernetes` backend always exists
 *   - name: redis              # a DNS label, unique, not `kubernetes` (the built-in's name)
 *     type: redis              # a registered type: kubernetes | etcd | redis | zookeeper | postgresql
 *     redis: { url: redis://redis:6379, keyPrefix: kubelock }   # the type's own settings block
 * ```
 */
import { closeSync, constants, fstatSync, openSync, readSync, statSync, type Stats } from "node:fs";
import { parseDocument } from "yaml";
import { BUILTIN_BACKEND, backendSettingsProblems, backendTypes, requiredSettings } from "./backends/registry";

export interface BackendEntry {
  name: string;
  /** A registered backend type (see backends/registry.ts). */
  type: string;
  /** The block named after the type (`redis: {...}` for `type: redis`). */
  settings: Record<string, unknown>;
}

export interface OperatorConfig {
  defaultBackend: string;
  clusterName: string;
  backends: BackendEntry[];
  /** The top-level `kubernetes:` block: settings of the built-in backend; absent when the config has none. */
  kubernetes?: Record<string, unknown>;
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

/** The config's top-level fields: `kubernetes` is the built-in backend's settings block. */
const TOP_LEVEL = ["defaultBackend", "clusterName", BUILTIN_BACKEND, "backends"];

/** The largest config file accepted, in bytes (a config is a few kilobytes; a ConfigMap holds at most 1 MiB). */
export const MAX_CONFIG_BYTES = 1024 * 1024;

/**
 * Reads and checks the config file: its shape (parseConfig) and every backend's own settings (each
 * type's settings parser, through the registry), all mistakes reported together in one ConfigError.
 */
export async function loadConfig(path: string | undefined): Promise<OperatorConfig> {
  if (!path) return { ...DEFAULT_CONFIG, backends: [] };
  return parseConfigAndSettings(readConfigFile(path), path);
}

/**
 * The file's text, read only if it is a regular file of at most MAX_CONFIG_BYTES: a device (/dev/zero), a
 * FIFO or a directory is refused before it is read, and no more than the cap plus one byte is ever read
 * (a file that grows after its size was checked is refused too). Throws a ConfigError with one line.
 */
export function readConfigFile(path: string): string {
  const refuse = (problem: string): never => {
    throw new ConfigError(path, [problem]);
  };
  const check = (stats: Stats) => {
    if (!stats.isFile()) refuse(`${fileKind(stats)}, not a regular file: the config must be a file`);
    if (stats.size > MAX_CONFIG_BYTES) refuse(`the file has ${stats.size} bytes; a config may have at most ${MAX_CONFIG_BYTES} (1 MiB)`);
  };
  let fd: number | undefined;
  try {
    check(statSync(path));
    // O_NONBLOCK: should a FIFO replace the file after the check, opening it does not wait for a writer.
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    check(fstatSync(fd));
    const buffer = Buffer.alloc(MAX_CONFIG_BYTES + 1);
    let length = 0;
    let n: number;
    do {
      n = readSync(fd, buffer, length, buffer.length - length, null);
      length += n;
    } while (n > 0 && length < buffer.length);
    if (length > MAX_CONFIG_BYTES) refuse(`the file has more than ${MAX_CONFIG_BYTES} bytes; a config may have at most ${MAX_CONFIG_BYTES} (1 MiB)`);
    return buffer.toString("utf8", 0, length);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    return refuse(`cannot read the file: ${(err as Error).message}`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function fileKind(stats: Stats): string {
  if (stats.isDirectory()) return "a directory";
  if (stats.isCharacterDevice()) return "a character device";
  if (stats.isBlockDevice()) return "a block device";
  if (stats.isFIFO()) return "a FIFO";
  if (stats.isSocket()) return "a socket";
  return "a special file";
}

/** parseConfig, plus each backend's settings parser (files named in the settings are read). */
export async function parseConfigAndSettings(text: string, source = "config"): Promise<OperatorConfig> {
  const { config, problems } = checkShape(text, source);
  // Only entries whose shape is right get here: their type is known and their settings are a mapping.
  const builtin = config.kubernetes && { name: BUILTIN_BACKEND, type: BUILTIN_BACKEND, settings: config.kubernetes };
  for (const entry of builtin ? [builtin, ...config.backends] : config.backends) {
    const lines = await backendSettingsProblems(entry);
    problems.push(...lines.map((line) => cut(line, MAX_BACKEND_LINE)));
  }
  if (problems.length > 0) throw new ConfigError(source, problems);
  return config;
}

/** Checks the config's shape (types, names, required settings); a backend's other settings are its parser's job. */
export function parseConfig(text: string, source = "config"): OperatorConfig {
  const { config, problems } = checkShape(text, source);
  if (problems.length > 0) throw new ConfigError(source, problems);
  return config;
}

/** A value shown in a message is cut to this many characters. */
const MAX_ECHO = 64;
/** A line from a backend's settings parser is cut to this many characters. */
const MAX_BACKEND_LINE = 500;
/** At most this many configured names are listed in a message. */
const MAX_LISTED = 10;

function cut(text: string, max: number): string {
  if (text.length <= max) return text;
  const end = /[\uD800-\uDBFF]/.test(text[max - 1]) ? max - 1 : max; // not half a surrogate pair
  return `${text.slice(0, end)}…`;
}

/** A string value for a message: quoted (control characters escaped) and cut to MAX_ECHO characters. */
function quote(value: string): string {
  return JSON.stringify(cut(value, MAX_ECHO));
}

/** What a value that should have been a string is, for messages (never the value itself). */
function kind(value: unknown): string {
  if (Array.isArray(value)) return "a list";
  if (value === null) return "null";
  if (typeof value === "object") return "a mapping";
  return `a ${typeof value}`;
}

/** The config, with every mistake in its shape; unusable backend entries are left out of `config`. */
function checkShape(text: string, source: string): { config: OperatorConfig; problems: string[] } {
  let raw: unknown;
  try {
    // logLevel "error": the yaml package prints nothing (its warnings quote the source line, which
    // may hold a password); errors and warnings are reported below, first line only, without excerpt.
    const doc = parseDocument(text, { logLevel: "error" });
    // One YAML mistake often causes several errors after it: the first one is the one to fix.
    if (doc.errors.length > 0) throw new ConfigError(source, [yamlProblem(doc.errors[0])]);
    if (doc.warnings.length > 0) throw new ConfigError(source, doc.warnings.map(yamlProblem));
    raw = doc.toJS() ?? {};
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(source, [yamlProblem(err as Error)]);
  }
  const problems: string[] = [];
  if (typeof raw !== "object" || Array.isArray(raw)) throw new ConfigError(source, ["the top level must be a mapping"]);
  const doc = raw as Record<string, unknown>;
  for (const key of Object.keys(doc)) {
    if (!TOP_LEVEL.includes(key)) problems.push(`unknown field ${quote(key)} (known: ${TOP_LEVEL.join(", ")})`);
  }
  const builtin = doc[BUILTIN_BACKEND] ?? undefined;
  if (builtin !== undefined && (typeof builtin !== "object" || Array.isArray(builtin))) {
    problems.push(`${BUILTIN_BACKEND}: ${kind(builtin)}, not a mapping; it holds the settings of the built-in ${BUILTIN_BACKEND} backend`);
  }
  const clusterName = doc.clusterName ?? "";
  const label = "must be a DNS label (lower-case letters, digits, '-')";
  if (typeof clusterName !== "string") problems.push(`clusterName: ${kind(clusterName)}, not a string; it ${label}`);
  else if (clusterName !== "" && !DNS_LABEL.test(clusterName)) problems.push(`clusterName: ${quote(clusterName)} ${label}`);
  const backends: BackendEntry[] = [];
  const rawBackends = doc.backends ?? [];
  if (!Array.isArray(rawBackends)) problems.push("backends: must be a list");
  else rawBackends.forEach((entry, i) => {
    const parsed = parseBackend(entry, `backends[${i}]`, problems);
    if (!parsed) return;
    if (backends.some((b) => b.name === parsed.name)) problems.push(`backends[${i}].name: ${quote(parsed.name)} is used twice`);
    backends.push(parsed);
  });
  const defaultBackend = doc.defaultBackend ?? BUILTIN_BACKEND;
  const names = [...new Set([BUILTIN_BACKEND, ...backends.map((b) => b.name)])];
  const configured = `configured: ${names.slice(0, MAX_LISTED).join(", ")}${names.length > MAX_LISTED ? `, … (${names.length} in all)` : ""}`;
  if (typeof defaultBackend !== "string") problems.push(`defaultBackend: ${kind(defaultBackend)}, not a string; it must name a configured backend (${configured})`);
  else if (!names.includes(defaultBackend)) problems.push(`defaultBackend: ${quote(defaultBackend)} is not a configured backend (${configured})`);
  const config: OperatorConfig = { defaultBackend: defaultBackend as string, clusterName: clusterName as string, backends };
  if (builtin && typeof builtin === "object" && !Array.isArray(builtin)) config.kubernetes = builtin as Record<string, unknown>;
  return { config, problems };
}

/** A YAML error or warning as one line: its first line (the yaml package adds an excerpt of the source after it). */
function yamlProblem(err: Error): string {
  return `not valid YAML: ${cut(err.message.split("\n")[0].replace(/:$/, ""), 200)}`;
}

function parseBackend(entry: unknown, at: string, problems: string[]): BackendEntry | undefined {
  if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
    problems.push(`${at}: must be a mapping with name and type`);
    return undefined;
  }
  const { name, type, ...rest } = entry as Record<string, unknown>;
  const before = problems.length;
  if (name !== undefined && name !== null && typeof name !== "string") problems.push(`${at}.name: ${kind(name)}, not a string; it must be a DNS label`);
  else if (typeof name !== "string" || !DNS_LABEL.test(name)) problems.push(`${at}.name: ${quote(name ?? "")} must be a DNS label`);
  else if (name === BUILTIN_BACKEND) {
    // An entry of that name would replace the built-in backend that every lock without spec.backend may use.
    problems.push(`${at}.name: "${BUILTIN_BACKEND}" is the built-in Kubernetes Lease backend's name; set its settings in the top-level "${BUILTIN_BACKEND}:" block, or name this entry otherwise`);
  }
  const known = `known: ${backendTypes().join(", ")}`;
  if (type !== undefined && type !== null && typeof type !== "string") {
    problems.push(`${at}.type: ${kind(type)}, not a string; it must be a backend type (${known})`);
    return undefined;
  }
  if (typeof type !== "string" || !backendTypes().includes(type)) {
    problems.push(`${at}.type: ${quote(type ?? "")} is not a backend type (${known})`);
    return undefined;
  }
  for (const key of Object.keys(rest)) {
    if (key !== type) problems.push(`${at}.${/^[\w-]{1,64}$/.test(key) ? key : quote(key)}: unexpected field; the settings of a ${type} backend go under "${type}:"`);
  }
  const settings = rest[type] ?? {};
  if (typeof settings !== "object" || settings === null || Array.isArray(settings)) {
    problems.push(`${at}.${type}: must be a mapping`);
    return undefined;
  }
  for (const [field, valid, what] of requiredSettings(type)) {
    const value = (settings as Record<string, unknown>)[field];
    if (value === undefined) problems.push(`${at}.${type}.${field}: missing; it must be ${what}`);
    else if (!valid(value)) problems.push(`${at}.${type}.${field}: must be ${what}`);
  }
  if (problems.length > before) return undefined;
  return { name: name as string, type, settings: settings as Record<string, unknown> };
}
