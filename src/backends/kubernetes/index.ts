/** `type: kubernetes`, the built-in backend: holds as Leases on the operator's own API server. */
import type { BackendPlugin } from "../registry";
import { KubernetesLeaseBackend } from "./backend";
import { parseKubernetesSettings } from "./settings";

export const kubernetesPlugin: BackendPlugin = {
  type: "kubernetes",
  required: [],
  validateSettings: (name, settings) => void parseKubernetesSettings(name, settings),
  factory: ({ name, kubeConfig, settings }) => new KubernetesLeaseBackend({ name, kubeConfig, ...parseKubernetesSettings(name, settings) }),
};
