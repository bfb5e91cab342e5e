/**
 * Connection reuse for @kubernetes/client-node 1.x, which builds a new https.Agent for every request
 * and so pays a TLS handshake per API call. This keeps one keep-alive agent per cluster and
 * credentials, and lets the library build everything else as before (proxies included).
 */
import { createHash } from "node:crypto";
import type { Agent } from "node:https";
import type * as k8s from "@kubernetes/client-node";

type AgentFactory = (cluster: k8s.Cluster | null, options: Record<string, unknown>) => Agent;

const fingerprint = (value: unknown) => (value ? createHash("sha256").update(String(value)).digest("hex") : "");

export function reuseConnections(kc: k8s.KubeConfig): k8s.KubeConfig {
  const target = kc as unknown as { createAgent: AgentFactory };
  const original = target.createAgent.bind(kc);
  const agents = new Map<string, Agent>();
  target.createAgent = (cluster, options) => {
    if (cluster?.proxyUrl) return original(cluster, options);
    const key = [cluster?.server, cluster?.skipTLSVerify, options.servername, options.ca, options.cert, options.key, options.pfx]
      .map(fingerprint).join("/");
    let agent = agents.get(key);
    if (!agent) {
      agent = original(cluster, { ...options, keepAlive: true });
      agents.set(key, agent);
    }
    return agent;
  };
  return kc;
}
