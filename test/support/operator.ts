/**
 * Runs the real operator (`kubelock operator`) as a child process, and small helpers to create locks
 * and claims and to record every status change a watch delivers.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import * as k8s from "@kubernetes/client-node";
import {
  API_VERSION, CLAIM_PLURAL, GROUP, LOCK_PLURAL, VERSION,
  type DistributedLock, type DistributedLockSpec, type LockClaim, type LockClaimSpec,
} from "../../src/api/types";
import { after, before } from "node:test";
import { cliCommand } from "./cli-entry";
import { createNamespace, eventually, kubeConfig, testEnv } from "./env";
import { tempDir } from "./temp";

const repoRoot = resolve(__dirname, "..", "..");

export interface OperatorProcess {
  readonly output: () => string;
  /** Whether the process has not exited (by itself or by stop/kill); startOperator's processes say. */
  readonly running?: () => boolean;
  /** SIGTERM and wait for exit; throws if the API server refused the operator a request (see refusals). */
  stop(): Promise<void>;
  /** SIGKILL: no clean-up at all, as a crash; throws as stop() does. */
  kill(): Promise<void>;
  /**
   * Refusals logged between `from` and `to` (ms since the epoch) do not fail stop(): for a window in which the
   * test itself made the server refuse (an API server restarted, whose authorizer has not yet synced its RBAC).
   */
  excuseRefusals(from: number, to: number): void;
}

/**
 * Lines of `output` that tell of a request the API server refused (403 Forbidden): with the shipped RBAC
 * (the default identity) there must be none, whatever the test does.
 */
export function refusals(output: string): string[] {
  return output.split("\n").filter((line) => /\bforbidden\b/i.test(line));
}

/** Starts `kubelock operator` for one namespace (or several); resolves once it logged that its caches synced (or `until`). */
export async function startOperator(options: {
  /** `--watch-namespace`: one namespace, or several comma-separated. */
  namespace: string;
  config?: string;
  /**
   * What the operator authenticates with. Default: a token of the deploy/ ServiceAccount
   * (testEnv.operatorKubeconfig), so every test also shows that the shipped RBAC allows all the operator
   * does. Another only for another cluster (its own operatorKubeconfig) or a test of other credentials.
   */
  kubeconfig?: string;
  logLevel?: string;
  /** How long to wait for the caches to sync (default 60 s). */
  syncTimeoutMs?: number;
  /** Resolve once the output holds this instead of "caches synced" (a test of what comes before the sync). */
  until?: string;
  /** More flags, after the defaults (a repeated flag's last value wins). */
  extraArgs?: string[];
  /** Added to the test's environment. */
  env?: Record<string, string>;
}): Promise<OperatorProcess> {
  const args = [...cliCommand().args, "operator", "--log-level", options.logLevel ?? "info",
    "--kubeconfig", options.kubeconfig ?? testEnv.operatorKubeconfig, "--watch-namespace", options.namespace];
  // Free ports, so operators of tests running at once never collide on :8080/:8081 (logged as "serving ...").
  args.push("--metrics-bind-address", "127.0.0.1:0", "--health-probe-bind-address", "127.0.0.1:0", ...(options.extraArgs ?? []));
  if (options.config) {
    const file = join(tempDir("kubelock-config-"), "config.yaml");
    writeFileSync(file, options.config);
    args.push("--config", file);
  }
  const child: ChildProcess = spawn(process.execPath, args, { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...options.env } });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const exited = new Promise<void>((done) => child.on("exit", () => done()));
  let running = true;
  void exited.then(() => (running = false));
  // An exit ends the wait at once (a start-up refusal is what some tests expect), without the sync timeout.
  const until = options.until ?? "caches synced";
  await eventually(`operator logged "${until}"`, () => (!running ? "exited" : output.includes(until) ? "synced" : undefined), options.syncTimeoutMs ?? 60_000)
    .then((state) => {
      if (state === "exited") throw new Error(`operator exited:\n${output}`);
    }).catch(async (err: Error) => {
    if (running) child.kill("SIGKILL");
    await exited;
    throw new Error(`${err.message}\noperator output:\n${output.slice(-2000)}`);
  });
  const excused: Array<[number, number]> = [];
  const end = async (signal: NodeJS.Signals) => {
    if (running) child.kill(signal);
    await exited;
    const refused = refusals(output).filter((line) => {
      const at = Date.parse(/"ts":"([^"]+)"/.exec(line)?.[1] ?? "");
      return !excused.some(([from, to]) => at >= from && at <= to);
    });
    if (refused.length > 0) throw new Error(`the API server refused the operator ${refused.length} request(s); the first:\n${refused[0]}`);
  };
  return {
    output: () => output, running: () => running, stop: () => end("SIGTERM"), kill: () => end("SIGKILL"),
    excuseRefusals: (from, to) => void excused.push([from, to]),
  };
}

/** One line of the operator's JSON log. */
export interface LogLine { ts: string; msg: string; [field: string]: unknown }

/** The operator's JSON log lines so far. */
export const logLines = (op: OperatorProcess): LogLine[] =>
  op.output().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as LogLine);

/** The first log line with message `msg`. */
export const findLog = (op: OperatorProcess, msg: string): LogLine | undefined => logLines(op).find((l) => l.msg === msg);

/** When the replica (run with --leader-elect) started leading, ms since the epoch; undefined while it follows. */
export const leadingAt = (op: OperatorProcess): number | undefined => {
  const line = findLog(op, "acquired the leader lease; leading");
  return line ? Date.parse(line.ts) : undefined;
};

/** The replica's leader election identity. */
export const identityOf = (op: OperatorProcess): string => findLog(op, "operator started")?.identity as string;

export interface OperatorNamespace {
  readonly namespace: string;
  readonly api: Api;
  readonly operator: OperatorProcess;
  /** Starts the operator again, as configured, once the test stopped or killed it; `operator` is the new one then. */
  startAgain(): Promise<void>;
}

/**
 * Registers before/after hooks giving the test file a fresh namespace with the operator running for
 * it; the returned object's fields are set once `before` has run.
 */
export function useOperatorNamespace(prefix: string, options: Omit<Parameters<typeof startOperator>[0], "namespace"> = {}): OperatorNamespace {
  const state = {
    async startAgain() {
      state.operator = await startOperator({ ...options, namespace: state.namespace });
    },
  } as OperatorNamespace & { namespace: string; api: Api; operator: OperatorProcess };
  before(async () => {
    state.namespace = await createNamespace(prefix);
    state.api = new Api(state.namespace);
    state.operator = await startOperator({ ...options, namespace: state.namespace });
  });
  after(async () => {
    await state.operator?.stop();
  });
  return state;
}

export class Api {
  readonly custom: k8s.CustomObjectsApi;
  readonly core: k8s.CoreV1Api;
  constructor(readonly namespace: string, readonly kc = kubeConfig()) {
    this.custom = kc.makeApiClient(k8s.CustomObjectsApi);
    this.core = kc.makeApiClient(k8s.CoreV1Api);
  }

  async createLock(name: string, spec: DistributedLockSpec = {}): Promise<DistributedLock> {
    return this.create(LOCK_PLURAL, { apiVersion: API_VERSION, kind: "DistributedLock", metadata: { name, namespace: this.namespace }, spec });
  }

  async createClaim(name: string, spec: LockClaimSpec): Promise<LockClaim> {
    return this.create(CLAIM_PLURAL, { apiVersion: API_VERSION, kind: "LockClaim", metadata: { name, namespace: this.namespace }, spec });
  }

  /**
   * A create, sent once more when the connection dropped without an answer (a kept-alive connection the API
   * server had just closed: "socket hang up"); a 409 then means the first one had got through, and it is read.
   */
  private async create<T extends DistributedLock | LockClaim>(plural: typeof LOCK_PLURAL | typeof CLAIM_PLURAL, body: T): Promise<T> {
    const request = { group: GROUP, version: VERSION, namespace: this.namespace, plural, body };
    try {
      return (await this.custom.createNamespacedCustomObject(request)) as T;
    } catch (err) {
      if (!(err instanceof Error) || !/socket hang up|ECONNRESET/.test(`${err.message} ${(err as { code?: string }).code ?? ""}`)) throw err;
      try {
        return (await this.custom.createNamespacedCustomObject(request)) as T;
      } catch (again) {
        if (!(again instanceof k8s.ApiException && again.code === 409)) throw again;
        return (await this.custom.getNamespacedCustomObject({ ...request, name: body.metadata.name })) as T;
      }
    }
  }

  async getLock(name: string): Promise<DistributedLock> {
    return (await this.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: this.namespace, plural: LOCK_PLURAL, name })) as DistributedLock;
  }

  async getClaim(name: string): Promise<LockClaim | undefined> {
    try {
      return (await this.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: this.namespace, plural: CLAIM_PLURAL, name })) as LockClaim;
    } catch (err) {
      if (err instanceof k8s.ApiException && err.code === 404) return undefined;
      throw err;
    }
  }

  async deleteClaim(name: string): Promise<void> {
    await this.custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: this.namespace, plural: CLAIM_PLURAL, name });
  }

  async deleteLock(name: string): Promise<void> {
    await this.custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: this.namespace, plural: LOCK_PLURAL, name });
  }

  async listClaims(): Promise<LockClaim[]> {
    const list = (await this.custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: this.namespace, plural: CLAIM_PLURAL })) as { items: LockClaim[] };
    return list.items;
  }

  async listLocks(): Promise<DistributedLock[]> {
    const list = (await this.custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: this.namespace, plural: LOCK_PLURAL })) as { items: DistributedLock[] };
    return list.items;
  }

  /** Waits until claim `name` satisfies `predicate`; returns it. */
  waitForClaim(name: string, what: string, predicate: (c: LockClaim) => boolean, timeoutMs = 30_000): Promise<LockClaim> {
    return eventually(`claim ${name} ${what}`, async () => {
      const claim = await this.getClaim(name);
      return claim && predicate(claim) ? claim : undefined;
    }, timeoutMs);
  }

  /**
   * Waits until lock `name` satisfies `predicate`. The operator writes a lock's status after its
   * claims' in each reconcile, so a test that saw a claim change waits for the lock like this.
   */
  waitForLock(name: string, what: string, predicate: (l: DistributedLock) => boolean, timeoutMs = 30_000): Promise<DistributedLock> {
    return eventually(`lock ${name} ${what}`, async () => {
      const lock = await this.getLock(name);
      return predicate(lock) ? lock : undefined;
    }, timeoutMs);
  }

  waitForPhase(name: string, phase: string, timeoutMs = 30_000): Promise<LockClaim> {
    return this.waitForClaim(name, `phase ${phase}`, (c) => c.status?.phase === phase, timeoutMs);
  }
}

/** One observation of a claim from the watch stream, in the order the API server delivered them. */
export interface ClaimObservation {
  name: string;
  phase?: string;
  fencingToken?: string;
  deleted: boolean;
  /** When the watch delivered it (Date.now()): never earlier than the write itself. */
  at: number;
}

/**
 * Watches every claim of a namespace and records each change in order, so a test can check that at
 * no observed instant more claims were Granted than allowed.
 */
export class ClaimHistory {
  readonly events: ClaimObservation[] = [];
  private abort?: AbortController;
  private stopped = false;

  constructor(private readonly namespace: string, private readonly kc = kubeConfig()) {}

  /** Lists (which also waits for the API server to serve claims), then watches from there, re-watching after any failure. */
  async start(): Promise<void> {
    const path = `/apis/${GROUP}/${VERSION}/namespaces/${this.namespace}/${CLAIM_PLURAL}`;
    const custom = this.kc.makeApiClient(k8s.CustomObjectsApi);
    const list = await eventually("claims listable", () =>
      custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: this.namespace, plural: CLAIM_PLURAL }) as Promise<{ metadata: { resourceVersion: string } }>);
    let resourceVersion = list.metadata.resourceVersion;
    const watch = async (): Promise<void> => {
      if (this.stopped) return;
      this.abort = await new k8s.Watch(this.kc).watch(path, { resourceVersion, allowWatchBookmarks: true }, (phase, obj: LockClaim) => {
        resourceVersion = obj.metadata?.resourceVersion ?? resourceVersion;
        if (phase !== "ADDED" && phase !== "MODIFIED" && phase !== "DELETED") return;
        // A claim being deleted grants nothing from then on, whatever its phase still says (the operator releases
        // its hold without rewriting it).
        const deleted = phase === "DELETED" || !!obj.metadata?.deletionTimestamp;
        this.events.push({ name: obj.metadata.name, phase: obj.status?.phase, fencingToken: obj.status?.fencingToken, deleted, at: Date.now() });
      }, () => void setTimeout(() => void watch().catch(() => undefined), 50));
    };
    await watch();
  }

  stop(): void {
    this.stopped = true;
    this.abort?.abort();
  }

  /** Replays the history (of `only` these claims): the most claims Granted at once, and the grant order. */
  replay(only?: Set<string>): { maxGranted: number; grants: { name: string; token: string }[] } {
    const granted = new Map<string, string>();
    const grants: { name: string; token: string }[] = [];
    let maxGranted = 0;
    for (const e of this.events) {
      if (only && !only.has(e.name)) continue;
      const was = granted.has(e.name);
      if (!e.deleted && e.phase === "Granted") {
        if (!was) grants.push({ name: e.name, token: e.fencingToken ?? "" });
        granted.set(e.name, e.fencingToken ?? "");
      } else granted.delete(e.name);
      maxGranted = Math.max(maxGranted, granted.size);
    }
    return { maxGranted, grants };
  }
}
