/**
 * The name that marks this cluster's holds in a backend shared with other clusters. Without a configured
 * `clusterName`, every cluster would mark its holds alike and take another cluster's holds for its own (and
 * release them as orphans): so the default is derived from the UID of the `kube-system` namespace, which is
 * unique per cluster and stable for its lifetime (as many multi-cluster tools identify a cluster).
 */
import type { KubeClient } from "./client";
import { apiErrorMessage, requestTimeout } from "./client";

export const IDENTITY_NAMESPACE = "kube-system";

/** `cluster-<kube-system UID>`; throws a message saying what to do when the namespace cannot be read. */
export async function defaultClusterName(client: KubeClient): Promise<string> {
  let uid: string | undefined;
  try {
    uid = (await client.core.readNamespace({ name: IDENTITY_NAMESPACE }, requestTimeout())).metadata?.uid;
  } catch (err) {
    throw new Error(`clusterName is not set and the ${IDENTITY_NAMESPACE} namespace, whose UID names this cluster by default, `
      + `could not be read (${apiErrorMessage(err)}); grant "get" on it (deploy/rbac.yaml does) or set clusterName in the config`);
  }
  if (!uid) throw new Error(`clusterName is not set and the ${IDENTITY_NAMESPACE} namespace has no UID; set clusterName in the config`);
  return `cluster-${uid}`;
}
