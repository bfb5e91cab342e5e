/**
 * Access to the ZooKeeper session handover Secret for operators under test. deploy/rbac.yaml ships the
 * Secret with a Role and RoleBinding that let the operator's ServiceAccount alone read and write it, in
 * kubelock-system. Tests run leader election in their own namespace, as an installation may; like such an
 * installation, they apply the same three objects there (and, with `sessionSecret`, for that name).
 */
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import * as k8s from "@kubernetes/client-node";
import { parseAllDocuments } from "yaml";
import { DEFAULT_SESSION_SECRET } from "../../src/backends/zookeeper-session";

const rbacFile = join(resolve(__dirname, "..", ".."), "deploy", "rbac.yaml");

interface Shipped extends k8s.KubernetesObject { rules?: { resourceNames?: string[] }[] }

/** deploy/rbac.yaml's handover Secret, Role and RoleBinding, moved to `namespace` and Secret `secret`. */
export function handoverObjects(namespace: string, secret = DEFAULT_SESSION_SECRET): Shipped[] {
  const shipped = parseAllDocuments(readFileSync(rbacFile, "utf8")).map((d) => d.toJS() as Shipped);
  const objects = shipped.filter((o) => ["Secret", "Role", "RoleBinding"].includes(o.kind ?? "")
    && o.metadata?.namespace === "kubelock-system" && o.metadata.name?.endsWith("zookeeper-sessions"));
  if (objects.length !== 3) throw new Error(`${rbacFile} should ship the handover Secret, Role and RoleBinding; found ${objects.length} of them`);
  for (const o of objects) {
    o.metadata!.namespace = namespace;
    if (o.kind === "Secret") o.metadata!.name = secret;
    for (const rule of o.rules ?? []) rule.resourceNames = [secret];
  }
  return objects;
}

/** Creates the handover objects in `namespace` (as the cluster's admin, `kc`). */
export async function grantHandover(kc: k8s.KubeConfig, namespace: string, secret = DEFAULT_SESSION_SECRET): Promise<void> {
  const client = k8s.KubernetesObjectApi.makeApiClient(kc);
  for (const object of handoverObjects(namespace, secret)) await client.create(object);
}
