/**
 * `kubelock hold` as a native sidecar on the real node (an init container with restartPolicy: Always, in a
 * pod with shareProcessNamespace): the pod's main container starts only once the lock is held (a startup
 * probe waits for the token file), and when the grant is lost (here: someone deletes the pod's claim) the
 * sidecar stops the main container's process before another pod's critical section starts. The workloads
 * log their own start/stop lines with their tokens to a shared file that the test reads.
 */
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createNamespace, eventually, kubectl } from "../support/env";
import { Api } from "../support/operator";
import {
  assertOperatorNeverForbidden, claimerServiceAccount, core, deployOperator, ok, podIdentityEnv, projectImage, restricted, sharedLogDir,
} from "./support";

let namespace: string;
let api: Api;
const shared = sharedLogDir();

before(async () => {
  await deployOperator();
  namespace = await createNamespace("hold");
  api = new Api(namespace);
  await claimerServiceAccount(namespace, "worker");
});
after(() => assertOperatorNeverForbidden());
after(() => rmSync(shared, { recursive: true, force: true }));

/** A pod whose sidecar holds `lock`; its main container logs start, then stopped (on SIGTERM) or end. */
const heldPod = (name: string, lock: string) => `apiVersion: v1
kind: Pod
metadata: { name: ${name} }
spec:
  serviceAccountName: worker
  shareProcessNamespace: true
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  initContainers:
    - name: lock
      image: ${projectImage()}
      restartPolicy: Always
      args: [hold, --lock, ${lock}, --token-file, /lock/token, --lease-duration, 10s, --grace-period, 3s]
      env: ${podIdentityEnv}
      startupProbe: { exec: { command: [test, -s, /lock/token] }, periodSeconds: 1, failureThreshold: 600 }
      volumeMounts: [{ name: lock, mountPath: /lock }]
      securityContext: ${restricted}
  containers:
    - name: work
      image: busybox:1.36
      command: [sh, -c, 'token=$(cat /lock/token); trap "echo stopped ${name} $token >> /shared/log; exit 143" TERM; echo start ${name} $token >> /shared/log; sleep 600 & wait; echo end ${name} $token >> /shared/log']
      volumeMounts: [{ name: lock, mountPath: /lock, readOnly: true }, { name: shared, mountPath: /shared }]
      securityContext: ${restricted}
  volumes:
    - { name: lock, emptyDir: {} }
    - { name: shared, hostPath: { path: ${shared}, type: Directory } }
`;

const log = () => {
  try {
    return readFileSync(join(shared, "log"), "utf8").trim().split("\n").filter(Boolean);
  } catch {
    return [];
  }
};

test("a held pod starts its work only when granted, and a lost grant stops it before the next holder starts", async () => {
  await api.createLock("guarded", { maxHolders: 1 });
  await ok(kubectl(["apply", "-n", namespace, "-f", "-"], { input: heldPod("first", "guarded") }));
  await eventually("first's work started", () => (log().some((l) => l.startsWith("start first ")) ? true : undefined), 180_000);
  await ok(kubectl(["apply", "-n", namespace, "-f", "-"], { input: heldPod("second", "guarded") }));
  await api.waitForPhase("second", "Pending", 60_000);
  const waiting = await core().readNamespacedPod({ name: "second", namespace });
  assert.ok(!waiting.status?.containerStatuses?.some((c) => c.name === "work" && (c.state?.running || c.state?.terminated)),
    "second's work container has not started while the lock is held elsewhere");

  const first = await api.getClaim("first");
  assert.equal(first?.status?.phase, "Granted");
  await api.deleteClaim("first"); // the grant is taken away under the running pod

  await eventually("second's work started", () => (log().some((l) => l.startsWith("start second ")) ? true : undefined), 120_000);
  const lines = log();
  const stopped = lines.findIndex((l) => l.startsWith("stopped first "));
  const started = lines.findIndex((l) => l.startsWith("start second "));
  assert.ok(stopped >= 0, `first's work was stopped: ${lines.join(" | ")}`);
  assert.ok(stopped < started, `first stopped before second started: ${lines.join(" | ")}`);
  assert.ok(!lines.some((l) => l.startsWith("end first ")), "first's work did not run to its end");
  const token = (line: string) => Number(line.split(" ")[2]);
  assert.equal(String(token(lines[stopped])), first?.status?.fencingToken, "first worked with the token of its grant");
  assert.ok(token(lines[started]) > token(lines[stopped]), "second's token is larger");

  // The pod whose grant was lost ends (its work container exited 143); deleting the second pod releases its lock.
  await eventually("first's work container terminated", async () => {
    const pod = await core().readNamespacedPod({ name: "first", namespace });
    const work = pod.status?.containerStatuses?.find((c) => c.name === "work");
    return work?.state?.terminated ? work.state.terminated.exitCode : undefined;
  }, 60_000);
  await ok(kubectl(["delete", "pod", "-n", namespace, "second", "--wait=true", "--timeout=120s"]));
  await eventually("second's claim released", async () => {
    const claim = await api.getClaim("second");
    return claim === undefined || claim.status?.phase === "Released" ? true : undefined;
  }, 60_000);
});
