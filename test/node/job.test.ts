/**
 * A Job of 5 parallel pods on the real node whose init container runs `kubelock wait` (downward API
 * for the pod's identity, the fencing token written to an emptyDir) and whose main container reads
 * the token: the critical sections, logged by the workloads themselves to a shared hostPath file, never
 * overlap and their tokens increase; each pod's completion releases its claim (HolderTerminated).
 */
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createNamespace, kubectl } from "../support/env";
import { Api } from "../support/operator";
import { assertOperatorNeverForbidden, claimerServiceAccount, criticalSections, deployOperator, lockedJob, ok, sharedLogDir } from "./support";

let namespace: string;
let api: Api;
const shared = sharedLogDir();

before(async () => {
  await deployOperator();
  namespace = await createNamespace("job");
  api = new Api(namespace);
  await claimerServiceAccount(namespace, "migrator");
});
after(() => assertOperatorNeverForbidden());
after(() => rmSync(shared, { recursive: true, force: true }));

test("a Job of 5 parallel pods behind `kubelock wait` init containers runs its critical sections one at a time", async () => {
  await api.createLock("db-migration", { maxHolders: 1 });
  await ok(kubectl(["apply", "-n", namespace, "-f", "-"], { input: lockedJob({ name: "migrate", lock: "db-migration", pods: 5, sharedDir: shared }) }));
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
