/**
 * Health probes (`--health-probe-bind-address`, default ":8081") and the small HTTP server the probes
 * and the metrics endpoint share.
 *
 * - `/healthz`: 200 `ok` while the process serves HTTP (liveness).
 * - `/readyz`: 200 `ok` once every informer cache has synced, the holds found at start have had their
 *   first renewal (a replica must know their validity before it may be the only one left), and every
 *   configured backend answered a cheap read (`holders("kubelock-system/readyz-probe")`) that completed successfully within the last
 *   `maxAgeMs`; else 503 with one plain-text line per reason. Backend answers are cached for
 *   `cacheMs`, and a request waits at most `waitMs` for a fresh one (probes have short timeouts).
 *   Readiness does not depend on leadership: followers are ready too (as in controller-runtime).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { LockBackend } from "./backends/backend";
import { realClock, type Clock } from "./runtime/clock";

/** The backend key `/readyz` reads. Nothing is ever written to it. */
export const READYZ_PROBE_KEY = "kubelock-system/readyz-probe";

export interface ReadinessOptions {
  /** What start-up still waits for, one phrase each (empty when done): caches not synced, first renewals. */
  startupPending: () => string[];
  backends: LockBackend[];
  clock?: Clock;
  /** A backend answer is reused for this long. Default 5000. */
  cacheMs?: number;
  /** A backend whose last successful answer is older than this is not ready. Default 15000. */
  maxAgeMs?: number;
  /** A probe request waits at most this long for backend answers. Default 800. */
  waitMs?: number;
}

interface BackendState {
  checkedAt?: number;
  okAt?: number;
  error?: string;
  inflight?: Promise<void>;
}

export class Readiness {
  private readonly states = new Map<LockBackend, BackendState>();
  private readonly clock: Clock;

  constructor(private readonly options: ReadinessOptions) {
    this.clock = options.clock ?? realClock;
    for (const backend of options.backends) this.states.set(backend, {});
  }

  /** Why the operator is not ready (empty: ready). */
  async problems(): Promise<string[]> {
    const { cacheMs = 5_000, maxAgeMs = 15_000, waitMs = 800 } = this.options;
    const problems = this.options.startupPending().map((what) => `${what}: not done yet`);
    const now = this.clock.now();
    const pending: Promise<void>[] = [];
    for (const [backend, state] of this.states) {
      if (!state.inflight && (state.checkedAt === undefined || now - state.checkedAt >= cacheMs)) state.inflight = this.check(backend, state);
      if (state.inflight) pending.push(state.inflight);
    }
    if (pending.length > 0) {
      let timer: unknown;
      await Promise.race([Promise.all(pending), new Promise<void>((resolve) => (timer = this.clock.setTimeout(resolve, waitMs)))]);
      this.clock.clearTimeout(timer);
    }
    const at = this.clock.now();
    for (const [backend, state] of this.states) {
      // Ready: the latest completed check succeeded, recently enough.
      if (state.error === undefined && state.okAt !== undefined && at - state.okAt < maxAgeMs) continue;
      problems.push(`backend ${backend.name}: ${state.error ?? (state.inflight ? `no answer within ${waitMs}ms` : "not checked yet")}`);
    }
    return problems;
  }

  private async check(backend: LockBackend, state: BackendState): Promise<void> {
    try {
      await backend.holders(READYZ_PROBE_KEY);
      state.okAt = this.clock.now();
      state.error = undefined;
    } catch (err) {
      state.error = err instanceof Error ? err.message : String(err);
    } finally {
      state.checkedAt = this.clock.now();
      state.inflight = undefined;
    }
  }
}

/** The probe endpoints, as a request handler for `serveHttp`. */
export function healthHandler(readiness: Readiness): Handler {
  return async (req, res) => {
    if (req.url === "/healthz" || req.url?.startsWith("/healthz?")) return text(res, 200, "ok");
    if (req.url === "/readyz" || req.url?.startsWith("/readyz?")) {
      const problems = await readiness.problems();
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
