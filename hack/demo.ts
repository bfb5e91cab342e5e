/**
 * `make demo`: kubelock end to end on this machine, then everything stops.
 *
 * Starts a local control plane (or uses KUBECONFIG's cluster with USE_EXISTING_CLUSTER=true) and a
 * Redis, installs the CRDs, runs the operator with a Redis backend configured, creates two locks (a
 * mutex on Kubernetes Leases and a semaphore of 2 on Redis) and several holders. With no kubelet
 * here, local `kubelock run` processes play the pods. `kubectl get dlock,lclaim` is shown as the
 * locks move.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startEnvironment } from "../test/env/environment";
import { runCommand } from "../test/env/process";

const repoRoot = resolve(__dirname, "..");
const cli = join(repoRoot, "dist/kubelock.js");
const say = (line: string) => console.log(`\n=== ${line}`);

async function main(): Promise<void> {
  say("starting a local control plane (kube-apiserver, etcd, kube-controller-manager) and Redis");
  const env = await startEnvironment({ services: ["redis"], log: (l) => console.log(`    ${l}`) });
  const dir = mkdtempSync(join(tmpdir(), "kubelock-demo-"));
  const children: ChildProcess[] = [];
  const childEnv = { ...process.env, ...env.variables };
  const kubectl = (args: string[], input?: string) => runCommand(env.kubectl, ["--kubeconfig", env.variables.KUBECONFIG, ...args], { input });
  try {
    const config = join(dir, "config.yaml");
    writeFileSync(config, `defaultBackend: kubernetes
clusterName: demo
backends:
  - name: redis
    type: redis
    redis: { url: ${env.variables.KUBELOCK_TEST_REDIS_URL} }
`);
    say("starting the operator: kubelock operator --config config.yaml (built-in kubernetes backend + redis)");
    const operator = spawn(process.execPath, [cli, "operator", "--config", config, "--metrics-bind-address", "0", "--health-probe-bind-address", "0"], {
      env: childEnv, stdio: ["ignore", "ignore", "pipe"],
    });
    children.push(operator);
    let operatorLog = "";
    operator.stderr!.on("data", (d) => (operatorLog += d));
    await waitFor(() => operatorLog.includes("caches synced"), 60_000, () => `operator did not start:\n${operatorLog}`);

    await kubectl(["create", "namespace", "demo"]);
    say("creating two locks: db-migration (a mutex on Leases) and warehouse-load (a semaphore of 2 on Redis)");
    await kubectl(["apply", "-n", "demo", "-f", "-"], `apiVersion: kubelock.io/v1alpha1
kind: DistributedLock
metadata: { name: db-migration }
spec: { maxHolders: 1 }
---
apiVersion: kubelock.io/v1alpha1
kind: DistributedLock
metadata: { name: warehouse-load }
spec: { backend: redis, maxHolders: 2 }
`);

    say("starting 7 holders: `kubelock run --lock L -- sh -c 'work'`, as pods would");
    const runs: Promise<number>[] = [];
    const holder = (lock: string, claim: string, seconds: number) => {
      const child = spawn(process.execPath, [cli, "run", "-n", "demo", "--lock", lock, "--claim", claim, "--",
        "sh", "-c", `echo "    [${claim}] working with fencing token $KUBELOCK_FENCING_TOKEN"; sleep ${seconds}`], { env: childEnv, stdio: ["ignore", "inherit", "inherit"] });
      children.push(child);
      runs.push(new Promise((done) => child.on("exit", (code) => done(code ?? 1))));
    };
    for (let i = 1; i <= 3; i++) holder("db-migration", `migrate-${i}`, 2);
    for (let i = 1; i <= 4; i++) holder("warehouse-load", `loader-${i}`, 3);

    let finished = false;
    const all = Promise.all(runs).then((codes) => {
      finished = true;
      return codes;
    });
    while (!finished) {
      say(`kubectl get dlock,lclaim -n demo   (${new Date().toISOString().slice(11, 19)})`);
      console.log((await kubectl(["get", "dlock,lclaim", "-n", "demo"])).trimEnd());
      await Promise.race([all, new Promise((r) => setTimeout(r, 1500))]);
    }
    const codes = await all;
    say("all holders finished");
    console.log((await kubectl(["get", "dlock,lclaim", "-n", "demo"])).trimEnd());
    const failed = codes.filter((c) => c !== 0).length;
    if (failed > 0) throw new Error(`${failed} holder(s) failed`);
    say("kubectl describe dlock/db-migration (events and conditions)");
    console.log((await kubectl(["describe", "dlock/db-migration", "-n", "demo"])).trimEnd());
  } finally {
    say("stopping the operator, Redis and the control plane");
    for (const child of children) child.kill("SIGTERM");
    await Promise.all(children.map((c) => (c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((r) => c.on("exit", r)))));
    await env.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  say("done: nothing left running");
}

async function waitFor(check: () => boolean, timeoutMs: number, message: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(message());
    await new Promise((r) => setTimeout(r, 100));
  }
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    console.error(`demo failed: ${err.message}`);
    process.exit(1);
  },
);
