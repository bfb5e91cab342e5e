/**
 * Health probes (`--health-probe-bind-address`, default ":8081") and the small HTTP server the probes
 * and the metrics endpoint share.
 *
 * - `/healthz`: 200 `ok` while the process serves HTTP (liveness).
 * - `/readyz`: whether this replica can do its job: 200 `ok` once every informer cache has synced and the holds
 *   found at start have had their first renewal (a replica must know their validity before it may be the only
 *   one left); else 503 with one plain-text line per reason. Backends are not probed: one backend away would
 *   make every replica unready at once, and a replica that is not ready is no better placed to serve it. A
 *   backend's health shows where it matters, in its locks' Ready condition (BackendUnavailable) and in
 *   `kubelock_backend_errors_total`. Readiness does not depend on leadership: followers are ready too (as in
 *   controller-runtime).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface ReadinessOptions {
  /** What start-up still waits for, one phrase each (empty when done): caches not synced, first renewals. */
  startupPending: () => string[];
}

export class Readiness {
  constructor(private readonly options: ReadinessOptions) {}

  /** Why the operator is not ready (empty: ready). */
  problems(): string[] {
    return this.options.startupPending().map((what) => `${what}: not done yet`);
  }
}

/** The probe endpoints, as a request handler for `serveHttp`. */
export function healthHandler(readiness: Readiness): Handler {
  return async (req, res) => {
    if (req.url === "/healthz" || req.url?.startsWith("/healthz?")) return text(res, 200, "ok");
    if (req.url === "/readyz" || req.url?.startsWith("/readyz?")) {
      const problems = readiness.problems();
      return problems.length === 0 ? text(res, 200, "ok") : text(res, 503, problems.join("\n"));
    }
    text(res, 404, "not found: try /healthz or /readyz");
  };
}

export type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void> | void;

export function text(res: ServerResponse, status: number, body: string, contentType = "text/plain; charset=utf-8"): void {
  res.writeHead(status, { "Content-Type": contentType });
  res.end(body.endsWith("\n") ? body : `${body}\n`);
}

/**
 * Parses a controller-runtime bind address: "host:port", ":port" (every interface), "[::1]:port";
 * port 0 picks a free port. "0" means disabled (undefined). Throws on anything else.
 */
export function parseBindAddress(address: string): { host?: string; port: number } | undefined {
  if (address === "0") return undefined;
  const match = /^(\[[^\]]+\]|[^:]*):(\d{1,5})$/.exec(address);
  const port = match ? Number(match[2]) : NaN;
  if (!match || port > 65535) throw new Error(`bind address "${address}" must be host:port, :port or 0 (disabled)`);
  const host = match[1].replace(/^\[|\]$/g, "");
  return { host: host || undefined, port };
}

export interface HttpServer {
  /** host:port actually bound (the real port when 0 was asked). */
  address: string;
  close(): Promise<void>;
}

/** Serves `handler` on `bindAddress`; resolves once listening. A handler that throws answers 500. */
export async function serveHttp(bindAddress: { host?: string; port: number }, handler: Handler): Promise<HttpServer> {
  const server: Server = createServer((req, res) => {
    Promise.resolve(handler(req, res)).catch((err: unknown) => {
      if (!res.headersSent) text(res, 500, err instanceof Error ? err.message : String(err));
      else res.end();
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(bindAddress.port, bindAddress.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { address, port } = server.address() as AddressInfo;
  return {
    address: `${address.includes(":") ? `[${address}]` : address}:${port}`,
    close: () => new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
