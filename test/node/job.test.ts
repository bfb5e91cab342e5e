/**
 * A Job of 5 parallel pods on the real node whose init container runs `kubelock wait` (downward API
 * for the pod's identity, the fencing token written to an emptyDir) and whose main container reads
 * the token: the critical sections, logged by the workloads themselves to a shared hostPath file, never
 * overlap and their tokens increase; each pod's completion releases its claim (HolderTerminated).
 */
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createNamespace, kubectl } from "../support/env";
import { Api } from "../support/operator";
import { assertOperatorNeverForbidden, claimerServiceAccount, criticalSections, deployOperator, ok, projectImage, restricted } from "./support";

let namespace: string;
let api: Api;
const shared = mkdtempSync(join(tmpdir(), "kubelock-e2e-job-"));
chmodSync(shared, 0o777);

before(async () => {
  await deployOperator();
  namespace = await createNamespace("job");
  api = new Api(namespace);
  await claimerServiceAccount(namespace, "migrator");
});
after(() => rmSync(shared, { recursive: true, force: true }));

const job = (name: string, lock: string) => `apiVersion: batch/v1
kind: Job
metadata: { name: ${name} }
spec:
  parallelism: 5
  completions: 5
  template:
    spec:
      serviceAccountName: migrator
      restartPolicy: Never
      initContainers:
        - name: lock
          image: ${projectImage()}
          args: [wait, --lock, ${lock}, --timeout, 5m, --token-file, /lock/token]
          env:
            - { name: POD_NAME, valueFrom: { fieldRef: { fieldPath: metadata.name } } }
            - { name: POD_NAMESPACE, valueFrom: { fieldRef: { fieldPath: metadata.namespace } } }
            - { name: POD_UID, valueFrom: { fieldRef: { fieldPath: metadata.uid } } }
          volumeMounts: [{ name: lock, mountPath: /lock }]
          securityContext: ${restricted}
      containers:
        - name: work
          image: busybox:1.36
          command: [sh, -c, 'echo "start $POD_NAME $(cat /lock/token)" >> /shared/log; sleep 1; echo "end $POD_NAME $(cat /lock/token)" >> /shared/log']
          env: [{ name: POD_NAME, valueFrom: { fieldRef: { fieldPath: metadata.name } } }]
          volumeMounts: [{ name: lock, mountPath: /lock, readOnly: true }, { name: shared, mountPath: /shared }]
      volumes:
        - { name: lock, emptyDir: {} }
        - { name: shared, hostPath: { path: ${shared}, type: Directory } }
`;

after(assertOperatorNeverForbidden);

test("a Job of 5 parallel pods behind `kubelock wait` init containers runs its critical sections one at a time", async () => {
  await api.createLock("db-migration", { maxHolders: 1 });
  await ok(kubectl(["apply", "-n", namespace, "-f", "-"], { input: job("migrate", "db-migration") }));
  await ok(kubectl(["wait", "-n", namespace, "--for=condition=Complete", "job/migrate", "--timeout=300s"]));

  const sections = criticalSections(readFileSync(join(shared, "log"), "utf8"), 1);
  assert.equal(sections.length, 5, "every pod ran its critical section once");
  assert.equal(new Set(sections.map((s) => s.holder)).size, 5);

  // Each claim is named after its pod: granted with the token its pod read, released when the pod ended.
  for (const section of sections) {
    const claim = await api.waitForPhase(section.holder, "Released", 60_000);
    assert.equal(claim.status?.fencingToken, String(section.token));
    const granted = claim.status?.conditions?.find((c) => c.type === "Granted");
    assert.equal(granted?.reason, "HolderTerminated", JSON.stringify(claim.status));
  }
});
