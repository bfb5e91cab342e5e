/**
 * RBAC as shipped in deploy/: a workload whose ServiceAccount is bound to kubelock-claimer and nothing
 * else can run, wait and release from inside its pod, and cannot write another claim's status; the
 * operator's own ServiceAccount is never refused (checked after every file of this tier).
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createNamespace, eventually, kubectl } from "../support/env";
import { Api } from "../support/operator";
import { assertOperatorNeverForbidden, claimerServiceAccount, core, deployOperator, ok, podIdentityEnv, projectImage, restricted } from "./support";

let namespace: string;
let api: Api;

before(async () => {
  await deployOperator();
  namespace = await createNamespace("rbac");
  api = new Api(namespace);
  await claimerServiceAccount(namespace, "worker");
});
after(() => assertOperatorNeverForbidden());

// Writes another claim's status with the pod's own token, as any client in the pod could.
const patchOthersStatus = `const fs = require("fs");
const token = fs.readFileSync("/var/run/secrets/kubernetes.io/serviceaccount/token", "utf8");
const url = "https://" + process.env.KUBERNETES_SERVICE_HOST + ":" + process.env.KUBERNETES_SERVICE_PORT +
  "/apis/kubelock.io/v1alpha1/namespaces/" + process.env.POD_NAMESPACE + "/lockclaims/someone-else/status";
fetch(url, { method: "PATCH", headers: { authorization: "Bearer " + token, "content-type": "application/merge-patch+json" },
  body: JSON.stringify({ status: { phase: "Released" } }) }).then((r) => console.log("status patch answered " + r.status));`;

const workload = (name: string) => `apiVersion: v1
kind: Pod
metadata: { name: ${name} }
spec:
  serviceAccountName: worker
  restartPolicy: Never
  containers:
    - name: work
      image: ${projectImage()}
      command: [sh, -c]
      args:
        - |
          set -e
          kubelock() { node /app/dist/kubelock.js "$@"; }
          kubelock run --lock shared --timeout 2m -- sh -c 'echo "run granted $KUBELOCK_FENCING_TOKEN"'
          kubelock wait --lock shared --timeout 2m --token-file /tmp/token
          echo "wait granted $(cat /tmp/token)"
          kubelock release
          echo released
          NODE_EXTRA_CA_CERTS=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt node -e '${patchOthersStatus.replaceAll("\n", " ")}'
      env: ${podIdentityEnv}
      volumeMounts: [{ name: tmp, mountPath: /tmp }]
      securityContext: ${restricted}
  volumes: [{ name: tmp, emptyDir: {} }]
`;

test("a workload bound only to kubelock-claimer runs, waits and releases, and cannot write another claim's status", async () => {
  await api.createLock("shared", { maxHolders: 1 });
  await api.createLock("elsewhere", { maxHolders: 1 });
  await api.createClaim("someone-else", { lockName: "elsewhere" });
  const initial = await api.waitForPhase("someone-else", "Granted", 60_000);

  await ok(kubectl(["apply", "-n", namespace, "-f", "-"], { input: workload("worker-1") }));
  const pod = await eventually("the workload ended", async () => {
    const p = await core().readNamespacedPod({ name: "worker-1", namespace });
    return p.status?.phase === "Succeeded" || p.status?.phase === "Failed" ? p : undefined;
  }, 180_000);
  const logs = await ok(kubectl(["logs", "-n", namespace, "worker-1"]));
  assert.equal(pod.status?.phase, "Succeeded", logs);
  const runToken = Number(/run granted (\d+)/.exec(logs)?.[1]);
  const waitToken = Number(/wait granted (\d+)/.exec(logs)?.[1]);
  assert.ok(runToken > 0 && waitToken > runToken, logs);
  assert.match(logs, /^released$/m);
  assert.match(logs, /status patch answered 403/);

  const released = await api.waitForPhase("worker-1", "Released", 30_000);
  assert.equal(released.status?.fencingToken, String(waitToken));
  const now = await api.getClaim("someone-else");
  assert.equal(now?.status?.phase, "Granted");
  assert.equal(now?.status?.fencingToken, initial.status?.fencingToken);
});
