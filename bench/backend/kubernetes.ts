/** Kubernetes: our Lease backend against the raw client creating and deleting one Lease (no peer). */
import { randomUUID } from "node:crypto";
import * as k8s from "@kubernetes/client-node";
import { createBackend } from "../../src/backends/registry";
import { oursSubjects, type Subject } from "./harness";

/** `namespace` must exist; lock keys are `<namespace>/<name>`. */
export async function kubernetesSubjects(kubeConfig: k8s.KubeConfig): Promise<Subject[]> {
  const ours = oursSubjects(await createBackend({ name: "kubernetes", type: "kubernetes", kubeConfig, settings: {} }));
  const api = kubeConfig.makeApiClient(k8s.CoordinationV1Api);
  const raw: Subject = {
    role: "raw",
    label: "client-node: create Lease + delete Lease",
    async tryAcquire(key) {
      const [namespace, name] = key.split("/");
      const body: k8s.V1Lease = {
        metadata: { name: `raw-${name}`, namespace },
        spec: { holderIdentity: randomUUID(), leaseDurationSeconds: 30, acquireTime: new k8s.V1MicroTime(), renewTime: new k8s.V1MicroTime() },
      };
      try {
        await api.createNamespacedLease({ namespace, body });
      } catch (err) {
        if (err instanceof k8s.ApiException && err.code === 409) return undefined;
        throw err;
      }
      return async () => void (await api.deleteNamespacedLease({ namespace, name: `raw-${name}` }));
    },
    close: async () => undefined,
  };
  return [...ours, raw];
}
