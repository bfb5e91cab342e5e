/**
 * What a test file needs from the environment that `test/run.ts` started: the API server's kubeconfig,
 * the backend services' addresses and a real kubectl. Tests never assume fixed ports.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as k8s from "@kubernetes/client-node";
import { reuseConnections } from "../../src/kube/connection-reuse";

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run tests through \`make test\` (test/run.ts), which starts the environment`);
  return value;
}

/** Addresses of the environment's parts, read lazily so unit tests need none of them. */
export const testEnv = {
  /** The cluster's admin: what tests themselves use. */
  get kubeconfig(): string { return required("KUBECONFIG"); },
  /** The operator's own identity: a token of the deploy/ ServiceAccount, with exactly the shipped RBAC. */
  get operatorKubeconfig(): string { return required("KUBELOCK_TEST_OPERATOR_KUBECONFIG"); },
  /** A second, independent API server (multi-cluster tests), when the run started one. */
  get secondKubeconfig(): string { return required("KUBELOCK_TEST_KUBECONFIG_2"); },
  /** The operator's identity on the second API server. */
  get secondOperatorKubeconfig(): string { return required("KUBELOCK_TEST_OPERATOR_KUBECONFIG_2"); },
  get kubectl(): string { return process.env.KUBELOCK_TEST_KUBECTL ?? "kubectl"; },
  /** redis://127.0.0.1:PORT */
  get redisUrl(): string { return required("KUBELOCK_TEST_REDIS_URL"); },
  /** 127.0.0.1:PORT */
  get zookeeperConnect(): string { return required("KUBELOCK_TEST_ZOOKEEPER_CONNECT"); },
  /** http://127.0.0.1:PORT of an etcd that holds locks (not the API server's). */
  get etcdEndpoint(): string { return required("KUBELOCK_TEST_ETCD_ENDPOINT"); },
  /** postgres://postgres@127.0.0.1:PORT/postgres */
  get postgresqlUrl(): string { return required("KUBELOCK_TEST_POSTGRESQL_URL"); },
};

export function kubeConfig(path = testEnv.kubeconfig): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(path);
  return reuseConnections(kc);
}

/** The test cluster's kubeconfig with another server address (e.g. a TcpProxy in front of the API server). */
export function kubeConfigFor(server: string, path = testEnv.kubeconfig): k8s.KubeConfig {
  const kc = kubeConfig(path);
  const current = kc.getCurrentCluster()!;
  const clusters = kc.clusters.map((c) => (c.name === current.name ? { ...c, server } : c));
  const patched = new k8s.KubeConfig();
  patched.loadFromOptions({ clusters, users: kc.users, contexts: kc.contexts, currentContext: kc.currentContext });
  return patched;
}

export interface CommandResult { code: number; stdout: string; stderr: string }

/** Runs the real kubectl against the test API server. */
export function kubectl(args: string[], options: { input?: string; kubeconfig?: string } = {}): Promise<CommandResult> {
  return run(testEnv.kubectl, ["--kubeconfig", options.kubeconfig ?? testEnv.kubeconfig, ...args], options.input);
}

export function run(command: string, args: string[], input?: string, env?: NodeJS.ProcessEnv): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"], env: env ?? process.env });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.on("error", () => undefined); // a command may exit before reading its input
    child.stdin.end(input ?? "");
  });
}

/** A fresh namespace with a unique name; tests use one each so they never see each other's objects. */
export async function createNamespace(prefix = "test", kc = kubeConfig()): Promise<string> {
  const name = `${prefix}-${randomBytes(4).toString("hex")}`;
  await kc.makeApiClient(k8s.CoreV1Api).createNamespace({ body: { metadata: { name } } });
  return name;
}

/**
 * Polls `check` until it returns a value other than undefined, or fails after `timeoutMs` with the
 * last observation in the message. Tests wait on conditions like this, never on fixed sleeps.
 */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 30_000,
  /** The longest pause between checks (they start at 20 ms and double). */
  maxPollMs = 250,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (let delay = 20; ; delay = Math.min(delay * 2, maxPollMs)) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, delay));
  }
}

/** Stops or starts one of the environment's backend servers (same address and data) through its control endpoint. */
export async function controlService(service: "redis" | "zookeeper" | "etcd" | "postgresql", action: "stop" | "start"): Promise<void> {
  const res = await fetch(`${required("KUBELOCK_TEST_CONTROL")}/services/${service}/${action}`, { method: "POST" });
  if (res.status !== 200) throw new Error(`${action} ${service}: HTTP ${res.status}: ${await res.text()}`);
}
