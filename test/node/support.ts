/**
 * What the end-to-end tests on the real node share: the project's image, deploy/ applied as a user
 * would (a kustomize overlay that only substitutes the image), and reaching pods and Services from
 * inside the node's network namespace.
 */
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import * as k8s from "@kubernetes/client-node";
import { eventually, kubeConfig, kubectl, run } from "../support/env";

const repoRoot = resolve(__dirname, "..", "..");

/** An environment variable that test/run.ts --node sets; fails the test without it. */
export function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the end-to-end tier through \`make e2e\` (test/run.ts --node)`);
  return value;
}

/** The project's image built from its Dockerfile (localhost/kubelock:SOURCES_HASH). */
export const projectImage = (): string => required("KUBELOCK_TEST_IMAGE");

export const operatorNamespace = "kubelock-system";
export const operatorSelector = "app.kubernetes.io/name=kubelock,app.kubernetes.io/component=operator";

export const core = () => kubeConfig().makeApiClient(k8s.CoreV1Api);

/** Fails the test with the command's stderr unless it exited 0; returns its stdout. */
export async function ok(result: Promise<{ code: number; stdout: string; stderr: string }>): Promise<string> {
  const r = await result;
  assert.equal(r.code, 0, r.stderr || r.stdout);
  return r.stdout;
}

/**
 * A kustomize overlay of `dir` (a repository directory such as deploy/) whose only change is the
 * image: `kubelock` becomes the project's built image. Returns the overlay's directory.
 */
export function imageOverlay(dir: string): string {
  const overlay = mkdtempSync(join(tmpdir(), "kubelock-overlay-"));
  process.once("exit", () => rmSync(overlay, { recursive: true, force: true }));
  const [name, tag] = projectImage().split(/:(?=[^:/]+$)/);
  writeFileSync(join(overlay, "kustomization.yaml"), `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: ["${relative(overlay, join(repoRoot, dir))}"]
images: [{ name: kubelock, newName: "${name}", newTag: "${tag}" }]
`);
  return overlay;
}

/**
 * `kubectl apply -k deploy/` with the built image, in the cluster of `kubeconfig` (default: the first).
 * With `config`, deploy/'s ConfigMap then gets that operator config, as a user would edit it, and the
 * replicas restart to read it. Resolves once the Deployment's rollout is complete.
 */
export async function deployOperator(options: { kubeconfig?: string; config?: string } = {}): Promise<void> {
  const inCluster = (args: string[]) => ok(kubectl(args, { kubeconfig: options.kubeconfig }));
  await inCluster(["apply", "-k", imageOverlay("deploy")]);
  if (options.config !== undefined) {
    const patch = JSON.stringify({ data: { "config.yaml": options.config } });
    await inCluster(["patch", "configmap", "-n", operatorNamespace, "kubelock-config", "--type=merge", "-p", patch]);
    await inCluster(["rollout", "restart", "-n", operatorNamespace, "deployment/kubelock-operator"]);
  }
  await inCluster(["rollout", "status", "-n", operatorNamespace, "deployment/kubelock-operator", "--timeout=300s"]);
}

/** examples/`file` as written, with only `image: kubelock:0.1.0` replaced by the built image. */
export function exampleManifest(file: string): string {
  const text = readFileSync(join(repoRoot, "examples", file), "utf8");
  assert.ok(!/image: kubelock:/.test(text) || text.includes("image: kubelock:0.1.0"), `${file} names the kubelock image as kubelock:0.1.0`);
  return text.replaceAll("image: kubelock:0.1.0", `image: ${projectImage()}`);
}

/** The operator's pods that are Running and not being deleted. */
export async function operatorPods(): Promise<k8s.V1Pod[]> {
  const pods = await core().listNamespacedPod({ namespace: operatorNamespace, labelSelector: operatorSelector });
  return pods.items.filter((p) => p.status?.phase === "Running" && !p.metadata?.deletionTimestamp);
}

/** Runs a command inside the node's network namespace (where pod and Service addresses are reachable). */
export function inNode(command: string, args: string[]) {
  return run("nsenter", [`--net=${required("KUBELOCK_TEST_NODE_NETNS")}`, "--", command, ...args]);
}

/** GETs an http URL from inside the node's network namespace (a node process there); fails unless 200. */
export async function httpGetInNode(url: string): Promise<string> {
  const script = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(5000) }).then(async (r) => {
    process.stdout.write(await r.text()); process.exitCode = r.status === 200 ? 0 : 1; })`;
  return ok(inNode(process.execPath, ["-e", script]));
}

/** The value of an unlabelled gauge in a Prometheus text exposition, or undefined. */
export function gauge(metrics: string, name: string): number | undefined {
  const line = metrics.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(" ")[1]);
}

/**
 * Which operator pods lead: those whose kubelock_leader gauge is 1 (each pod's /metrics, by pod IP). A pod
 * that does not answer yet (a replacement still starting) is not counted; callers wait for what they expect.
 */
export async function leaders(): Promise<string[]> {
  const result: string[] = [];
  for (const pod of await operatorPods()) {
    const metrics = await httpGetInNode(`http://${pod.status!.podIP}:8080/metrics`).catch(() => "");
    if (gauge(metrics, "kubelock_leader") === 1) result.push(pod.metadata!.name!);
  }
  return result;
}

/** Waits until exactly one operator pod leads, and returns its name. */
export async function theLeader(timeoutMs = 60_000): Promise<string> {
  return eventually("exactly one leading operator pod", async () => {
    const found = await leaders();
    return found.length === 1 ? found[0] : undefined;
  }, timeoutMs);
}

/**
 * Every line the operator's pods logged (all containers, current runs) in the cluster of `kubeconfig`
 * (default: the first), for checks across tests.
 */
export async function operatorLogs(kubeconfig?: string): Promise<string> {
  // A pod the selector listed may be gone before its logs are read (a rollout's old replica ending): list again.
  return eventually("the operator pods' logs", () =>
    ok(kubectl(["logs", "-n", operatorNamespace, "-l", operatorSelector, "--tail=-1", "--prefix"], { kubeconfig })), 60_000);
}

/** The downward API variables `kubelock wait/run/hold` read: the pod's name, namespace and UID (inline YAML). */
export const podIdentityEnv = "[{ name: POD_NAME, valueFrom: { fieldRef: { fieldPath: metadata.name } } }, "
  + "{ name: POD_NAMESPACE, valueFrom: { fieldRef: { fieldPath: metadata.namespace } } }, "
  + "{ name: POD_UID, valueFrom: { fieldRef: { fieldPath: metadata.uid } } }]";

/** A container securityContext that the restricted Pod Security level admits (inline YAML). */
export const restricted = "{ runAsNonRoot: true, runAsUser: 65532, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, " +
  "capabilities: { drop: [ALL] }, seccompProfile: { type: RuntimeDefault } }";

/** A ServiceAccount in `namespace` bound (RoleBinding) to deploy/'s kubelock-claimer ClusterRole and nothing else. */
export async function claimerServiceAccount(namespace: string, name: string): Promise<void> {
  await ok(kubectl(["create", "serviceaccount", "-n", namespace, name]));
  await ok(kubectl(["create", "rolebinding", "-n", namespace, `${name}-kubelock-claimer`, "--clusterrole=kubelock-claimer",
    `--serviceaccount=${namespace}:${name}`]));
}

export interface CriticalSection {
  holder: string;
  token: number;
}

/**
 * Checks a log that workloads appended to, one "start HOLDER TOKEN" line when entering their critical
 * section and one "end HOLDER TOKEN" line when leaving it: at most `maxHolders` inside at once, a holder
 * leaves with the token it entered with, no token is used twice, a mutex's tokens grow in order of
 * entry, and every section that started ended. Returns the sections in order of entry.
 */
export function criticalSections(log: string, maxHolders: number): CriticalSection[] {
  const inside = new Map<string, number>();
  const sections: CriticalSection[] = [];
  for (const line of log.trim().split("\n")) {
    const [event, holder, tokenText] = line.trim().split(/\s+/);
    const token = Number(tokenText);
    assert.ok(Number.isInteger(token) && token > 0, `no fencing token in ${JSON.stringify(line)}`);
    if (event === "start") {
      assert.ok(!inside.has(holder), `${holder} entered twice`);
      inside.set(holder, token);
      assert.ok(inside.size <= maxHolders, `${inside.size} holders at once (at most ${maxHolders}): ${[...inside.keys()].join(", ")}`);
      // A mutex's holders enter in grant order; a semaphore's may log their entries in either order.
      const previous = sections.at(-1)?.token;
      if (maxHolders === 1 && previous !== undefined) assert.ok(token > previous, `token ${token} entered after ${previous}`);
      assert.ok(!sections.some((s) => s.token === token), `token ${token} granted twice`);
      sections.push({ holder, token });
    } else {
      assert.equal(event, "end", `unexpected line ${JSON.stringify(line)}`);
      assert.equal(inside.get(holder), token, `${holder} left with token ${token}, entered with ${inside.get(holder)}`);
      inside.delete(holder);
    }
  }
  assert.equal(inside.size, 0, `never left: ${[...inside.keys()].join(", ")}`);
  return sections;
}

/**
 * Fails if an operator pod of the cluster of `kubeconfig` (default: the first) logged a refusal by the API
 * server (403, "forbidden"): deploy/'s RBAC must be enough for everything the tests made it do. Each test
 * file runs it last, before pods may be replaced.
 */
export async function assertOperatorNeverForbidden(kubeconfig?: string): Promise<void> {
  const refused = (await operatorLogs(kubeconfig)).split("\n").filter((line) => /forbidden|\b403\b/i.test(line));
  assert.equal(refused.length, 0, `the operator was refused by the API server ${refused.length} times, e.g.:\n${refused.slice(0, 3).join("\n")}`);
}

/** A machine directory that pods mount (hostPath) to append to one log; everyone may write it. */
export function sharedLogDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "kubelock-e2e-log-"));
  chmodSync(dir, 0o777);
  return dir;
}

/**
 * A Job of `pods` parallel pods (ServiceAccount `migrator`) whose init container runs `kubelock wait`
 * for `lock` with the downward API and writes the fencing token to an emptyDir; the main container
 * reads it and appends "start POD TOKEN", then after `seconds`, "end POD TOKEN" to `sharedDir`/log.
 */
export function lockedJob(options: { name: string; lock: string; pods: number; sharedDir: string; seconds?: number }): string {
  return `apiVersion: batch/v1
kind: Job
metadata: { name: ${options.name} }
spec:
  parallelism: ${options.pods}
  completions: ${options.pods}
  template:
    spec:
      serviceAccountName: migrator
      restartPolicy: Never
      initContainers:
        - name: lock
          image: ${projectImage()}
          args: [wait, --lock, ${options.lock}, --timeout, 5m, --token-file, /lock/token]
          env: ${podIdentityEnv}
          volumeMounts: [{ name: lock, mountPath: /lock }]
          securityContext: ${restricted}
      containers:
        - name: work
          image: busybox:1.36
          command: [sh, -c, 'echo "start $POD_NAME $(cat /lock/token)" >> /shared/log; sleep ${options.seconds ?? 1}; echo "end $POD_NAME $(cat /lock/token)" >> /shared/log']
          env: [{ name: POD_NAME, valueFrom: { fieldRef: { fieldPath: metadata.name } } }]
          volumeMounts: [{ name: lock, mountPath: /lock, readOnly: true }, { name: shared, mountPath: /shared }]
      volumes:
        - { name: lock, emptyDir: {} }
        - { name: shared, hostPath: { path: ${options.sharedDir}, type: Directory } }
`;
}
