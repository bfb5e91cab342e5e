/**
 * The identity tests run the operator with: the one an installation gives it. deploy/namespace.yaml and
 * deploy/rbac.yaml are applied as shipped, and a token of their `kubelock-operator` ServiceAccount
 * (TokenRequest API) goes into a kubeconfig of its own, so an operator under test has exactly the
 * shipped permissions, never the admin's: a request the shipped role does not allow fails as it would
 * in a real cluster. Made once per cluster of a test environment.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import * as k8s from "@kubernetes/client-node";
import { runCommand } from "./process";

const deployDir = resolve(__dirname, "..", "..", "deploy");
export const OPERATOR_NAMESPACE = "kubelock-system";
export const OPERATOR_SERVICE_ACCOUNT = "kubelock-operator";
/** Longer than any test run: the token is requested once per environment. */
const TOKEN_DURATION = "24h";

/**
 * Applies the shipped namespace and RBAC with `kubectl` as the cluster's admin (`adminKubeconfig`) and
 * writes to `file` a kubeconfig that authenticates as the operator's ServiceAccount with nothing but its token.
 */
export async function writeOperatorKubeconfig(kubectl: string, adminKubeconfig: string, file: string): Promise<void> {
  const asAdmin = ["--kubeconfig", adminKubeconfig];
  await runCommand(kubectl, [...asAdmin, "apply", "--server-side", "--force-conflicts",
    "-f", join(deployDir, "namespace.yaml"), "-f", join(deployDir, "rbac.yaml")]);
  const token = (await runCommand(kubectl, [...asAdmin, "create", "token", OPERATOR_SERVICE_ACCOUNT, "-n", OPERATOR_NAMESPACE,
    `--duration=${TOKEN_DURATION}`])).trim();
  if (!token) throw new Error(`kubectl create token ${OPERATOR_SERVICE_ACCOUNT} returned no token`);
  writeFileSync(file, tokenKubeconfig(adminKubeconfig, OPERATOR_SERVICE_ACCOUNT, token), { mode: 0o600 });
}

/** A kubeconfig for the current cluster of `adminKubeconfig` (server, CA) that authenticates with `token` alone. */
export function tokenKubeconfig(adminKubeconfig: string, user: string, token: string): string {
  const admin = new k8s.KubeConfig();
  admin.loadFromFile(adminKubeconfig);
  const cluster = admin.getCurrentCluster();
  if (!cluster) throw new Error(`${adminKubeconfig} has no current cluster`);
  const ca = cluster.caData ?? (cluster.caFile ? readFileSync(cluster.caFile).toString("base64") : undefined);
  const trust = ca ? { "certificate-authority-data": ca } : { "insecure-skip-tls-verify": cluster.skipTLSVerify };
  // JSON is YAML: no quoting rules to get wrong.
  return JSON.stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: cluster.name, cluster: { server: cluster.server, ...trust } }],
    users: [{ name: user, user: { token } }],
    contexts: [{ name: user, context: { cluster: cluster.name, user } }],
    "current-context": user,
  }, null, 2) + "\n";
}
