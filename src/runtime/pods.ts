/**
 * What the operator's pod cache keeps of a pod. The cache holds every pod in scope (a claim may name any pod:
 * `kubelock wait` in a pod without annotations), so a full pod there (containers, volumes, env, status of
 * every container: often 5-20 KB each) would make the operator's memory grow with the cluster's pods rather
 * than with its locks. Its readers need only:
 * - metadata: name, namespace, uid, resourceVersion, deletionTimestamp, and the annotations asking for a
 *   claim (`kubelock.io/lock`, `kubelock.io/priority`): the pod event handler, the pod reconciler and the
 *   Events it records;
 * - spec.schedulingGates: whether the pod still waits on the lock's gate, and the gate's position for the
 *   guarded JSON patch that removes it;
 * - status.phase: a pod that Succeeded or Failed ends its claim.
 * Anything else a reader wants must be added here first.
 */
import type * as k8s from "@kubernetes/client-node";

/** Pod annotations the operator reads (see above); every other annotation is dropped. */
const KEPT_ANNOTATION_PREFIX = "kubelock.io/";

/** The fields of `pod` the operator reads (see above), as a new object; `pod` is not changed. */
export function podForCache(pod: k8s.V1Pod): k8s.V1Pod {
  const m = pod.metadata ?? {};
  const metadata: k8s.V1ObjectMeta = { name: m.name, namespace: m.namespace, uid: m.uid, resourceVersion: m.resourceVersion };
  if (m.deletionTimestamp !== undefined) metadata.deletionTimestamp = m.deletionTimestamp;
  const annotations = Object.entries(m.annotations ?? {}).filter(([key]) => key.startsWith(KEPT_ANNOTATION_PREFIX));
  if (annotations.length > 0) metadata.annotations = Object.fromEntries(annotations);
  const slim: k8s.V1Pod = { metadata };
  // containers is required by the type, not read by anyone here: the cached pod is never written back.
  if (pod.spec?.schedulingGates !== undefined) slim.spec = { schedulingGates: pod.spec.schedulingGates.map((g) => ({ name: g.name })) } as k8s.V1PodSpec;
  if (pod.status?.phase !== undefined) slim.status = { phase: pod.status.phase };
  return slim;
}
