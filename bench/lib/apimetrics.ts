/** The API server's own request counters (`apiserver_request_total` on /metrics), to count writes per grant. */
import { request } from "node:https";
import type { KubeConfig } from "@kubernetes/client-node";

const WATCHED = new Set(["lockclaims", "distributedlocks", "leases", "events"]);

/** Requests so far by "VERB resource[/subresource]" (plus " (HTTP code)" when refused), for kubelock's kinds, Leases and Events. */
export async function apiRequestCounts(kc: KubeConfig): Promise<Map<string, number>> {
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new Error("no current cluster in the kubeconfig");
  const options: Parameters<KubeConfig["applyToHTTPSOptions"]>[0] = {};
  await kc.applyToHTTPSOptions(options);
  const text = await new Promise<string>((resolve, reject) => {
    const req = request(new URL("/metrics", server), { ...(options as object), method: "GET" }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (body += d));
      res.on("end", () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`GET /metrics: HTTP ${res.statusCode}`))));
    });
    req.on("error", reject);
    req.end();
  });
  const counts = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line.startsWith("apiserver_request_total{")) continue;
    const labels = Object.fromEntries([...line.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (!WATCHED.has(labels.resource) || labels.verb === "WATCH") continue;
    const failed = labels.code && !labels.code.startsWith("2") ? ` (HTTP ${labels.code})` : "";
    const key = `${labels.verb} ${labels.resource}${labels.subresource ? `/${labels.subresource}` : ""}${failed}`;
    counts.set(key, (counts.get(key) ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1)));
  }
  return counts;
}

/** after − before, per key, dropping zeros. */
export function difference(before: Map<string, number>, after: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [key, value] of after) {
    const d = value - (before.get(key) ?? 0);
    if (d > 0) out.set(key, d);
  }
  return out;
}
