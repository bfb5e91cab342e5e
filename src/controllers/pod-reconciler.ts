/**
 * Reconciles pods annotated `kubelock.io/lock: <lockName>`: creates the LockClaim named after the pod,
 * owned by it (garbage-collected with it), and removes the `kubelock.io/lock` scheduling gate once
 * that claim is granted to this very pod: the UID the claim records (claimPodUid) must be the pod's.
 * A pod recreated under the same name while an earlier pod's claim still holds stays gated; the lock
 * reconciler ends that claim, and the pod gets a claim of its own once the old one is gone.
 */
import type * as k8s from "@kubernetes/client-node";
import { API_VERSION, LOCK_ANNOTATION, PRIORITY_ANNOTATION, SCHEDULING_GATE, type LockClaim } from "../api/types";
import { claimPodUid } from "../grant/claim-facts";
import { apiRefusal, statusCode } from "../kube/client";
import type { ReconcileResult } from "../runtime/workqueue";
import type { OperatorContext } from "./context";
import { NotLeadingError } from "./lock-reconciler";

export class PodReconciler {
  constructor(private readonly ctx: OperatorContext) {}

  async reconcile(key: string): Promise<ReconcileResult | void> {
    const [namespace, name] = key.split("/");
    const pod = this.ctx.caches.pods.get(namespace, name);
    const lockName = pod?.metadata?.annotations?.[LOCK_ANNOTATION];
    if (!pod || !lockName || pod.metadata?.deletionTimestamp) return;
    if (this.ctx.leadsNow && !this.ctx.leadsNow()) throw new NotLeadingError();

    const claim = this.ctx.caches.claims.get(namespace, name);
    if (!claim) {
      if (pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed") return;
      await this.createClaim(pod, namespace, name, lockName);
      return;
    }
    if (claim.spec.podName !== name) {
      this.warn(pod, "ClaimNameTaken", `LockClaim ${name} exists but is not this pod's (spec.podName=${claim.spec.podName ?? "unset"}); delete it or rename the pod`);
      return;
    }
    const gated = pod.spec?.schedulingGates?.some((g) => g.name === SCHEDULING_GATE);
    if (claim.status?.phase === "Granted" && gated && claimPodUid(claim) === pod.metadata?.uid) {
      await this.ctx.client.removeSchedulingGate(pod, SCHEDULING_GATE);
      this.ctx.events.record(podTarget(pod), "Normal", "Ungated", `lock ${lockName} granted; scheduling gate ${SCHEDULING_GATE} removed`);
    }
  }

  private async createClaim(pod: k8s.V1Pod, namespace: string, name: string, lockName: string): Promise<void> {
    const priorityText = pod.metadata?.annotations?.[PRIORITY_ANNOTATION];
    const priority = priorityText === undefined ? 0 : Number(priorityText);
    if (!Number.isSafeInteger(priority)) {
      this.warn(pod, "InvalidPriority", `annotation ${PRIORITY_ANNOTATION}="${priorityText}" is not an integer; fix it to get a LockClaim`);
      return;
    }
    const claim: LockClaim = {
      apiVersion: API_VERSION,
      kind: "LockClaim",
      metadata: {
        name,
        namespace,
        labels: { "app.kubernetes.io/managed-by": "kubelock" },
        ownerReferences: [{ apiVersion: "v1", kind: "Pod", name, uid: pod.metadata!.uid!, controller: true, blockOwnerDeletion: false }],
      },
      spec: { lockName, podName: name, priority },
    };
    try {
      this.ctx.caches.claims.observe(await this.ctx.client.createClaim(claim));
    } catch (err) {
      if (statusCode(err) === 409) return; // created meanwhile (by `kubelock wait` or an earlier reconcile)
      if (statusCode(err) === 422 || statusCode(err) === 400) {
        // One sentence saying why (the refusal's causes), not the client's HTTP dump of the response.
        const why = apiRefusal(err);
        this.warn(pod, "InvalidLockClaim", `cannot create LockClaim for lock "${lockName}": the API server refused it: ${why}${/[.!?]$/.test(why) ? "" : "."}`);
        return;
      }
      throw err;
    }
  }

  private warn(pod: k8s.V1Pod, reason: string, message: string): void {
    this.ctx.log.info(message, { pod: `${pod.metadata?.namespace}/${pod.metadata?.name}`, reason });
    this.ctx.events.record(podTarget(pod), "Warning", reason, message);
  }
}

function podTarget(pod: k8s.V1Pod) {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: pod.metadata!.name!, namespace: pod.metadata!.namespace!, uid: pod.metadata!.uid, resourceVersion: pod.metadata!.resourceVersion },
  };
}
