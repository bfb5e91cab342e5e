/**
 * Loads the client config as kubectl does: `--kubeconfig`, else KUBECONFIG, else ~/.kube/config, else
 * in-cluster; `--context` picks a context other than the current one.
 */
import * as k8s from "@kubernetes/client-node";
import { reuseConnections } from "../kube/connection-reuse";

export function loadKubeConfig(path?: string, context?: string): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromDefault();
  if (context !== undefined) {
    if (!kc.getContextObject(context)) {
      const known = kc.getContexts().map((c) => c.name);
      throw new Error(`context "${context}" is not in the kubeconfig${known.length ? ` (it has: ${known.join(", ")})` : ""}`);
    }
    kc.setCurrentContext(context);
  }
  if (!kc.getCurrentCluster()) throw new Error("no Kubernetes cluster configured: pass --kubeconfig, set KUBECONFIG, or run in a pod");
  return reuseConnections(kc);
}
