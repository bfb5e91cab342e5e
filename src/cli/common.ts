/**
 * What the workload-facing commands (`wait`, `release`, `renew`, `run`, `status`) share: exit codes,
 * flag parsing with kubectl's common flags, namespace and kubeconfig resolution, the downward-API
 * identity of the pod, API error translation, and the claim writes they make.
 */
import { randomBytes } from "node:crypto";
import { parseArgs, type ParseArgsConfig } from "node:util";
import * as k8s from "@kubernetes/client-node";
import {
  API_VERSION, CLAIM_PLURAL, ConditionType, GROUP, LOCK_PLURAL, RELEASE_ANNOTATION, VERSION,
  type Condition, type DistributedLock, type LockClaim,
} from "../api/types";
import { apiErrorMessage, requestTimeout, statusCode } from "../kube/client";
import { DurationError, parseDuration } from "./duration";
import { loadKubeConfig } from "./kubeconfig";

/** Exit codes of the workload-facing commands. */
export const Exit = Object.freeze({
  Granted: 0,
  Unexpected: 1,
  Usage: 2,
  Timeout: 3,
  ClaimEnded: 4,
  NotFound: 5,
  PermissionDenied: 6,
  /** Try-once (`--no-wait`, `--timeout 0s`): the operator queued the claim instead of granting it at once. */
  Busy: 7,
});

export const EXIT_CODES_HELP = `Exit codes:
  0  success (granted, released, renewed)
  1  unexpected error (API server unreachable, conflicting claim, ...)
  2  usage error (bad or missing flags)
  3  timed out
  4  the claim ended (phase Lost, Expired, Rejected or Released, or it was deleted)
  5  the lock or claim does not exist
  6  permission denied by the API server (RBAC)
  7  not granted at once (--no-wait or --timeout 0s): the lock is held or others wait first`;

export const COMMON_FLAGS_HELP = `  -n, --namespace NS       default: POD_NAMESPACE, then the kubeconfig context's namespace, then "default"
      --kubeconfig FILE    default: KUBECONFIG, then ~/.kube/config, then in-cluster
      --context NAME       the kubeconfig context to use (default: its current context)
  -h, --help               this help`;

/** A failure with the exit code it maps to; the message is printed as `kubelock COMMAND: message`. */
export class CliError extends Error {
  constructor(message: string, readonly code: number) {
    super(message);
  }
}

export const usageError = (message: string) => new CliError(message, Exit.Usage);

let programName = "kubelock";

/** How messages name the program: `kubelock`, or `kubectl lock` when run as the kubectl plugin. */
export function setProgramName(name: string): void {
  programName = name;
}

type Options = NonNullable<ParseArgsConfig["options"]>;

const commonOptions = {
  namespace: { type: "string", short: "n" },
  kubeconfig: { type: "string" },
  context: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies Options;

/** What parseFlags hands parseArgs (named, so that the declarations of the build can name its result). */
type FlagsConfig<O extends Options> = { args: string[]; options: typeof commonOptions & O; allowPositionals: boolean; strict: true };

/** parseArgs with the common flags; unknown flags and stray arguments are usage errors (exit 2). */
export function parseFlags<O extends Options>(argv: string[], options: O, allowPositionals = false): ReturnType<typeof parseArgs<FlagsConfig<O>>> {
  try {
    return parseArgs({ args: argv, options: { ...commonOptions, ...options }, allowPositionals, strict: true });
  } catch (err) {
    throw usageError(err instanceof Error ? err.message : String(err));
  }
}

/** Parses a duration flag; a bad value is a usage error. */
export function durationFlag(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  try {
    return parseDuration(value, flag);
  } catch (err) {
    if (err instanceof DurationError) throw usageError(err.message);
    throw err;
  }
}

export function integerFlag(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isSafeInteger(n)) throw usageError(`${flag} "${value}" is not an integer`);
  return n;
}

/**
 * Wraps a command: `--help` prints `help`, a CliError prints its message and exits with its code,
 * anything else is an unexpected error (exit 1).
 */
export function command(name: string, body: (argv: string[]) => Promise<number>): (argv: string[]) => Promise<number> {
  return async (argv) => {
    try {
      return await body(argv);
    } catch (err) {
      if (err instanceof CliError) {
        console.error(`${programName} ${name}: ${err.message}`);
        if (err.code === Exit.Usage) console.error(`Run '${programName} ${name} --help' for usage.`);
        return err.code;
      }
      console.error(`${programName} ${name}: ${describeError(err)}`);
      return Exit.Unexpected;
    }
  };
}

/** A command of the program: what `kubelock NAME` (or `kubectl lock NAME`) runs. */
export interface Command {
  run: (argv: string[]) => Promise<number>;
  summary: string;
  help: string;
}

/** Runs one command; an error its own handling let through is printed as `PROGRAM NAME: message`. */
export async function dispatch(program: string, name: string, command: Command, argv: string[]): Promise<number> {
  try {
    return await command.run(argv);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    console.error(`${program} ${name}: ${message}`);
    return err instanceof TypeError && /Unknown option|unexpected argument/i.test(message) ? 2 : 1;
  }
}

/** The pod this process runs in, from the downward API (all undefined outside a pod). */
export interface PodIdentity {
  name?: string;
  namespace?: string;
  uid?: string;
}

export function podIdentity(env: NodeJS.ProcessEnv = process.env): PodIdentity {
  const value = (key: string) => (env[key] && env[key]!.trim() !== "" ? env[key]!.trim() : undefined);
  return { name: value("POD_NAME"), namespace: value("POD_NAMESPACE"), uid: value("POD_UID") };
}

/** Every API request of the CLI gives up after this long unless a command chooses less (run: a third of the lease). */
export const CLI_REQUEST_TIMEOUT_MS = 15_000;

export interface Cluster {
  kc: k8s.KubeConfig;
  custom: k8s.CustomObjectsApi;
  namespace: string;
  /** Each request (not a watch stream) is aborted after this long: a half-open connection fails instead of hanging. */
  requestTimeoutMs: number;
}

/** Per-call options that give one request of `cluster` its timeout. */
export const timeoutOf = (cluster: Cluster) => requestTimeout(cluster.requestTimeoutMs);

/**
 * Loads the kubeconfig (`--kubeconfig`, `--context`) and resolves the namespace: `-n`, POD_NAMESPACE, the
 * context's namespace, "default".
 */
export function connect(flags: { namespace?: string; kubeconfig?: string; context?: string }, requestTimeoutMs = CLI_REQUEST_TIMEOUT_MS): Cluster {
  let kc: k8s.KubeConfig;
  try {
    kc = loadKubeConfig(flags.kubeconfig, flags.context);
  } catch (err) {
    throw new CliError(`cannot load the kubeconfig: ${err instanceof Error ? err.message : String(err)}`, Exit.Unexpected);
  }
  return clusterOf(kc, flags.namespace || podIdentity().namespace, requestTimeoutMs);
}

/** A Cluster for a loaded kubeconfig: `namespace`, else the current context's namespace, else "default". */
export function clusterOf(kc: k8s.KubeConfig, namespace?: string, requestTimeoutMs = CLI_REQUEST_TIMEOUT_MS): Cluster {
  const contextNamespace = kc.getContextObject(kc.getCurrentContext())?.namespace;
  return { kc, custom: kc.makeApiClient(k8s.CustomObjectsApi), namespace: namespace || contextNamespace || "default", requestTimeoutMs };
}

/** A fresh claim name for one use of `lock`: LOCK-KIND-RANDOM, within the 253 characters a name may have. */
export function uniqueClaimName(lock: string, kind: string): string {
  const suffix = `-${kind}-${randomBytes(4).toString("hex")}`;
  return `${lock.slice(0, 253 - suffix.length).replace(/[.-]+$/, "")}${suffix}`;
}

/** The HTTP status of a failed API call or watch, if it was one. */
export function httpStatus(err: unknown): number | undefined {
  const status = statusCode(err);
  if (status !== undefined) return status;
  const code = (err as { statusCode?: unknown } | undefined)?.statusCode;
  return typeof code === "number" ? code : undefined;
}

/** The API server's own message (from a Status body) in one line, else the error's message. */
export const describeError = (err: unknown): string => apiErrorMessage(err);

/**
 * Translates a failed API call into a CliError: 401/403 are permission problems (exit 6), 404 is
 * `notFound` when given (exit 5), anything else is unexpected (exit 1).
 */
export function apiError(err: unknown, verb: string, resource: string, namespace: string, notFound?: string): CliError {
  if (err instanceof CliError) return err;
  const status = httpStatus(err);
  if (status === 403) {
    return new CliError(`permission denied: ${verb} ${resource} in ${namespace} — bind the kubelock-claimer ClusterRole to this ServiceAccount`, Exit.PermissionDenied);
  }
  if (status === 401) {
    return new CliError(`unauthorized: the API server did not accept this client's credentials (${verb} ${resource} in ${namespace}); check --kubeconfig or the ServiceAccount token`, Exit.PermissionDenied);
  }
  if (status === 404 && notFound) return new CliError(notFound, Exit.NotFound);
  return new CliError(`cannot ${verb} ${resource} in ${namespace}: ${describeError(err)}`, Exit.Unexpected);
}

/** Runs one API call, translating its failure with apiError. */
export async function call<T>(verb: string, resource: string, namespace: string, fn: () => Promise<T>, notFound?: string): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw apiError(err, verb, resource, namespace, notFound);
  }
}

export const claimNotFound = (name: string, namespace: string) => `claim ${name} not found in namespace ${namespace}`;
export const lockNotFound = (name: string, namespace: string) => `lock ${name} not found in namespace ${namespace}`;

export async function getClaim(cluster: Cluster, name: string): Promise<LockClaim> {
  const { custom, namespace } = cluster;
  return call("get", CLAIM_PLURAL, namespace, () =>
    custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: CLAIM_PLURAL, name }, timeoutOf(cluster)) as Promise<LockClaim>,
  claimNotFound(name, namespace));
}

export async function getLock(cluster: Cluster, name: string): Promise<DistributedLock> {
  const { custom, namespace } = cluster;
  return call("get", LOCK_PLURAL, namespace, () =>
    custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: LOCK_PLURAL, name }, timeoutOf(cluster)) as Promise<DistributedLock>,
  lockNotFound(name, namespace));
}

/** A JSON merge patch of a claim (spec or metadata); a missing claim is exit 5. */
export async function patchClaim(cluster: Cluster, name: string, body: object): Promise<LockClaim> {
  const { custom, namespace } = cluster;
  const mergePatch = k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch, timeoutOf(cluster));
  return call("patch", CLAIM_PLURAL, namespace, () =>
    custom.patchNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: CLAIM_PLURAL, name, body }, mergePatch) as Promise<LockClaim>,
  claimNotFound(name, namespace));
}

/** Sets `kubelock.io/release: "true"`: the operator ends the grant (phase Released). */
export function annotateRelease(cluster: Cluster, name: string): Promise<LockClaim> {
  return patchClaim(cluster, name, { metadata: { annotations: { [RELEASE_ANNOTATION]: "true" } } });
}

/** Deletes a claim (the operator then releases its backend hold); gone already is fine. */
export async function deleteClaim(cluster: Cluster, name: string): Promise<void> {
  const { custom, namespace } = cluster;
  try {
    await custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: CLAIM_PLURAL, name }, timeoutOf(cluster));
  } catch (err) {
    if (httpStatus(err) === 404) return;
    throw apiError(err, "delete", CLAIM_PLURAL, namespace);
  }
}

/** Now as a MicroTime: RFC 3339 with microseconds, as Kubernetes writes them (2025-01-02T15:04:05.123000Z). */
export function microTime(date = new Date()): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

/** Moves `spec.renewTime` to now (the heartbeat). */
export function renewClaim(cluster: Cluster, name: string): Promise<LockClaim> {
  return patchClaim(cluster, name, { spec: { renewTime: microTime() } });
}

export interface ClaimRequest {
  name: string;
  lockName: string;
  podName?: string;
  podUid?: string;
  priority?: number;
  leaseDurationSeconds?: number;
  labels?: Record<string, string>;
}

/**
 * Creates the claim, or adopts it when it exists (409 → get). An existing claim must name the same
 * lock and, when `podName` is given, the same pod; otherwise it belongs to someone else (exit 1).
 */
export async function createOrAdoptClaim(cluster: Cluster, request: ClaimRequest): Promise<{ claim: LockClaim; created: boolean }> {
  const { custom, namespace } = cluster;
  const body: LockClaim = {
    apiVersion: API_VERSION,
    kind: "LockClaim",
    metadata: { name: request.name, namespace, labels: { "app.kubernetes.io/managed-by": "kubelock", ...request.labels } },
    spec: { lockName: request.lockName },
  };
  if (request.podName) body.spec.podName = request.podName;
  if (request.priority !== undefined) body.spec.priority = request.priority;
  if (request.leaseDurationSeconds !== undefined) body.spec.leaseDurationSeconds = request.leaseDurationSeconds;
  if (request.podName && request.podUid) {
    // The same reference the operator's pod reconciler writes, so either may create the pod's claim.
    // blockOwnerDeletion stays false: setting it needs permission to delete the pod.
    body.metadata.ownerReferences = [{ apiVersion: "v1", kind: "Pod", name: request.podName, uid: request.podUid, controller: true, blockOwnerDeletion: false }];
  }
  try {
    const claim = (await custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: CLAIM_PLURAL, body }, timeoutOf(cluster))) as LockClaim;
    return { claim, created: true };
  } catch (err) {
    if (httpStatus(err) !== 409) throw apiError(err, "create", CLAIM_PLURAL, namespace);
  }
  const existing = await getClaim(cluster, request.name);
  if (existing.spec.lockName !== request.lockName) {
    throw new CliError(`claim ${request.name} already exists in namespace ${namespace} for lock ${existing.spec.lockName}, not ${request.lockName}; delete it or pass another --claim`, Exit.Unexpected);
  }
  if (request.podName && existing.spec.podName !== request.podName) {
    throw new CliError(`claim ${request.name} already exists in namespace ${namespace} for ${existing.spec.podName ? `pod ${existing.spec.podName}` : "no pod"}, not pod ${request.podName}; delete it or pass another --claim`, Exit.Unexpected);
  }
  return { claim: existing, created: false };
}

export function grantedCondition(claim: LockClaim | DistributedLock): Condition | undefined {
  return claim.status?.conditions?.find((c) => c.type === ConditionType.Granted);
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
