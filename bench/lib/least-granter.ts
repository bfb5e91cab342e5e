/**
 * The least a granting operator must do, as a process of its own: the throughput benchmark's measured floor.
 * It watches one namespace's LockClaims and, per lock name, grants claims one at a time in the order the watch
 * delivered them: one merge patch of `status.phase: Granted` per claim, sent when the claim before it is gone.
 * No backend, no fencing token, no Pending, no lock status, no finalizer: every request it makes is one the
 * real operator must make too, so no operator can grant faster on the same API server.
 *
 * Usage: node --import tsx bench/lib/least-granter.ts NAMESPACE (KUBECONFIG from the environment). It prints
 * "caches synced" once its watch is established, as the operator does, and runs until it is signalled.
 */
import * as k8s from "@kubernetes/client-node";
import { ClaimWatch, patchClaimStatus } from "./claims";

const namespace = process.argv[2];
if (!namespace) throw new Error("usage: least-granter.ts NAMESPACE");
const kc = new k8s.KubeConfig();
kc.loadFromDefault();
const custom = kc.makeApiClient(k8s.CustomObjectsApi);

/** Per lock name: the claim granted (until it is deleted) and the claims waiting, oldest first. */
const locks = new Map<string, { holder?: string; queue: string[] }>();
const lockOf = (name: string) => locks.get(name) ?? locks.set(name, { queue: [] }).get(name)!;

function grantNext(lockName: string): void {
  const lock = lockOf(lockName);
  const next = lock.holder === undefined ? lock.queue.shift() : undefined;
  if (next === undefined) return;
  lock.holder = next;
  patchClaimStatus(custom, namespace, next, { phase: "Granted" }).catch(() => {
    // Deleted before its grant (or refused): the next one's turn.
    if (lock.holder === next) lock.holder = undefined;
    grantNext(lockName);
  });
}

const watch = new ClaimWatch(namespace, kc);
watch.on((type, claim) => {
  const name = claim.metadata.name;
  const lockName = claim.spec.lockName;
  const lock = lockOf(lockName);
  if (type === "DELETED") {
    if (lock.holder === name) lock.holder = undefined;
    lock.queue = lock.queue.filter((n) => n !== name);
  } else if (type === "ADDED" && claim.status?.phase !== "Granted") {
    lock.queue.push(name);
  }
  grantNext(lockName);
});
process.on("SIGTERM", () => {
  watch.stop();
  process.exit(0);
});
watch.start().then(() => process.stdout.write("caches synced\n"), (err: Error) => {
  process.stderr.write(`least-granter: ${err.message}\n`);
  process.exit(1);
});
