/**
 * An operator process frozen in the middle of a change (SIGSTOP, a VM pause, a long GC): it runs the
 * PostgreSQL backend's renew on `key`, says "locked" on its IPC channel once the server has granted it the
 * key's advisory lock, and never sends the next statement. The parent then stops it with SIGSTOP, so its
 * connection stays open with the transaction idle, as a frozen process leaves it.
 * Usage (from a test, with an IPC channel): node --import tsx pg-stalled-client.ts URL KEY REQUEST_TIMEOUT_MS
 */
import * as k8s from "@kubernetes/client-node";
import pg from "pg";
import { createBackend } from "../../src/backends/registry";

const [url, key, requestTimeoutMs] = process.argv.slice(2);
const query = pg.Client.prototype.query as (...args: unknown[]) => Promise<unknown>;
(pg.Client.prototype as { query: unknown }).query = async function (this: pg.Client, ...args: unknown[]) {
  const result = await query.apply(this, args);
  if (typeof args[0] === "string" && args[0].includes("pg_advisory_xact_lock") && (args[1] as unknown[])?.[0] === key) {
    process.send!("locked");
    await new Promise(() => undefined); // frozen: the transaction stays open, idle
  }
  return result;
};

void createBackend({ name: "postgresql", type: "postgresql", kubeConfig: new k8s.KubeConfig(), settings: { url, requestTimeoutMs: Number(requestTimeoutMs) } })
  .then((backend) => backend.renew(key, "a-holder", 30))
  .catch((err: unknown) => console.error(`pg-stalled-client: ${String(err)}`));
