/**
 * The PostgreSQL backend (node-postgres): holds are rows of one table, fencing tokens come from a counter row
 * per lock (statements in sql.ts).
 *
 * - Waiters are rows of `<table>_queue`, served in the order they joined; a waiter takes a slot when fewer than
 *   maxHolders holds and earlier waiters exist, and expires a lease after its last tryAcquire.
 * - Every change is one transaction holding the key's advisory lock, so acquires on one key never interleave
 *   across operators; expiry is judged on the server's clock, so every operator agrees on it.
 * - Fencing: the counter row never expires and never goes back; a lost counter restarts from the server's
 *   clock in microseconds, and the caller's high-water mark (`fencingFloor`) raises it further. `forget` (the
 *   lock was deleted) deletes it once the key has no hold or waiter, if it is not ahead of that clock.
 * - Watch: one LISTEN connection per backend (NOTIFY carries the key), re-established with backoff; every
 *   watcher is woken on reconnect (notifications sent meanwhile are lost), and a poll of each watched key
 *   every 2 s catches holds that expired with nobody writing.
 * - Errors: a server that cannot be reached or does not answer within `requestTimeoutMs` gives
 *   BackendUnavailableError; a connection that timed out is discarded, never reused. The server itself ends a
 *   transaction left idle, a statement or a lock wait longer than `requestTimeoutMs`, so an operator frozen
 *   mid-change (SIGSTOP, a VM pause) holds a key's advisory lock for at most that long.
 * - Credential files, read again when a connection cannot be opened, so that a rotated Secret is used without a
 *   restart by every connection opened from then on (pooled and LISTEN alike):
 *   - `passwordFile`, when the server refuses the login (wrong password, no such role; kit/secret-file.ts);
 *   - the `tls` files (client certificate, key, CA), at any failure to connect: a server that no longer accepts
 *     the client certificate (another CA, another role's name) ends the handshake or refuses the login, and a
 *     server certificate the old CA does not verify fails it on this side. New contents are used only as a
 *     usable set (kit/tls-files.ts); otherwise the old ones stay, and the next failure reads the files again.
 *   Connections already open stay as they are (PostgreSQL ends no session when a password changes or its CA is
 *   replaced), and holds are rows with their own expiry, kept across any reconnect with their fencing tokens.
 *   A failure to connect is BackendUnavailableError (a refused login says what to check); no password or key
 *   ever appears in a message.
 */
import pg from "pg";
import { parse } from "pg-connection-string";
import { BackendUnavailableError, type AcquireRequest, type Hold, type HolderInfo, type LockBackend, queueState, type WaiterWatch } from "../backend";
import { withDeadline } from "../kit/deadline";
import { FanOut, orderOf } from "../kit/fan-out";
import { HoldersPoll } from "../kit/holders-poll";
import { splitLockKey } from "../kit/lock-key";
import { SecretFile } from "../kit/secret-file";
import { TlsFiles, type TlsPaths } from "../kit/tls-files";
import * as sql from "./sql";

/** Fallback poll of each watched key: catches holds that expired with nobody writing. */
const WATCH_POLL_MS = 2000;
const MAX_RECONNECT_MS = 5000;

export interface PostgresSettings {
  /** postgres://user@host:port/database (no password: passwordFile). */
  url: string;
  password?: string;
  /** Where `password` came from: read again when the server refuses it (a rotated Secret). */
  passwordFile?: string;
  table: string;
  requestTimeoutMs: number;
  /** One object shared by every connection: a TLS reload puts the new material in it (see "Credential files" above). */
  ssl?: { ca?: Buffer; cert?: Buffer; key?: Buffer; rejectUnauthorized: boolean };
  /** Where `ssl`'s certificate material came from: read again when a connection cannot be opened. */
  sslFiles?: TlsPaths;
}

interface Row { holder_id: string; claim: string; holder_identity: string; cluster: string; fencing_token: string; acquire_time: Date; renew_time: Date }
type Tx = (query: (text: string, values?: unknown[]) => Promise<pg.QueryResult>) => Promise<{ changed: boolean; value: unknown }>;

export class PostgresBackend implements LockBackend {
  readonly expiresOnServer = true;
  readonly fencingRecord = "counter";
  private readonly pool: pg.Pool;
  private closed = false;
  private schema?: Promise<void>;
  private listener?: pg.Client;
  private reconnectMs = 250;
  private reconnectTimer?: NodeJS.Timeout;
  private readonly watches = new FanOut<HoldersPoll>((key) => this.startWatch(key), (_, poll) => poll.stop(), async (key) => orderOf(await queueState(this, key)));
  /** The password in use and its file (see "Password" above). */
  private readonly password?: SecretFile;
  /** The TLS material in use and its files (see "Credential files" above). */
  private readonly tls?: TlsFiles;

  constructor(readonly name: string, private readonly settings: PostgresSettings) {
    if (settings.password !== undefined && settings.passwordFile) this.password = new SecretFile(settings.passwordFile, settings.password);
    if (settings.ssl && settings.sslFiles) this.tls = new TlsFiles(settings.sslFiles, settings.ssl);
    this.pool = new pg.Pool({ ...this.connection(), max: 4, idleTimeoutMillis: 30_000 });
    this.pool.on("error", () => undefined); // an idle connection that broke: the next checkout makes a new one
    // The pool listens for a connection's errors only while it is idle; one the server ends while it is checked out
    // (or being released) would otherwise end the process. Every call also notes it, so it is never reused.
    this.pool.on("connect", (client) => client.on("error", () => undefined));
  }

  async tryAcquire(req: AcquireRequest): Promise<Hold | undefined> {
    if (!Number.isInteger(req.maxHolders) || req.maxHolders < 1) throw new Error(`maxHolders must be an integer >= 1, got ${req.maxHolders}`);
    const t = this.settings.table;
    return this.change<Hold | undefined>(req.key, async (query) => {
      const live = (await query(sql.holders(t), [req.key])).rows as Row[];
      const mine = live.find((r) => r.holder_id === req.holderId);
      // Re-attach: extended, since the caller counts the hold's validity from this call.
      if (mine) return { changed: false, value: toHold((await query(sql.renew(t), [req.key, req.holderId, leaseMs(req.leaseDurationSeconds)])).rows[0] as Row) };
      const queue = (await query(sql.waiting(t), [req.key])).rows as Row[];
      const place = queue.findIndex((r) => r.holder_id === req.holderId);
      if (live.length + (place < 0 ? queue.length : place) >= req.maxHolders) {
        const lease = leaseMs(req.leaseDurationSeconds);
        if (req.wait) await query(sql.enqueue(t), [req.key, req.holderId, req.claim, req.holderIdentity, req.cluster, lease]);
        return { changed: false, value: undefined };
      }
      if (place >= 0) await query(sql.dequeue(t), [req.key, req.holderId]);
      const { token } = (await query(sql.nextToken(t), [req.key, req.fencingFloor ?? "0"])).rows[0] as { token: string };
      const row = (await query(sql.insertHold(t), [req.key, req.holderId, req.claim, req.holderIdentity, req.cluster, token, leaseMs(req.leaseDurationSeconds)])).rows[0] as Row;
      return { changed: true, value: toHold(row) };
    });
  }

  async renew(key: string, holderId: string, leaseDurationSeconds: number): Promise<Hold | undefined> {
    return this.change<Hold | undefined>(key, async (query) => {
      const row = (await query(sql.renew(this.settings.table), [key, holderId, leaseMs(leaseDurationSeconds)])).rows[0] as Row | undefined;
      return { changed: false, value: row && toHold(row) };
    });
  }

  async release(key: string, holderId: string): Promise<boolean> {
    return this.change<boolean>(key, async (query) => {
      await query(sql.dequeue(this.settings.table), [key, holderId]);
      const removed = ((await query(sql.release(this.settings.table), [key, holderId])).rowCount ?? 0) > 0;
      return { changed: removed, value: removed };
    });
  }

  /** Deletes the key's counter row when no hold or waiter row is left (sql.ts, `forget`), in one transaction. */
  async forget(key: string): Promise<boolean> {
    return this.change<boolean>(key, async (query) => {
      const removed = ((await query(sql.forget(this.settings.table), [key])).rowCount ?? 0) > 0;
      return { changed: false, value: removed };
    });
  }

  async holders(key: string): Promise<Hold[]> {
    splitLockKey(key);
    await this.ensureSchema();
    const result = await this.withClient((client) => client.query(sql.holders(this.settings.table), [key]));
    return (result.rows as Row[]).map(toHold);
  }

  async waiting(key: string): Promise<HolderInfo[]> {
    splitLockKey(key);
    await this.ensureSchema();
    const result = await this.withClient((client) => client.query(sql.waiting(this.settings.table), [key]));
    return (result.rows as Row[]).map((r) => ({ holderId: r.holder_id, claim: r.claim, holderIdentity: r.holder_identity, cluster: r.cluster }));
  }

  watch(key: string, onChange: () => void, waiter?: WaiterWatch): () => void {
    splitLockKey(key);
    if (this.closed) return () => undefined;
    this.listen();
    return this.watches.add(key, onChange, waiter && { ...waiter, key });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const poll of this.watches.clear()) poll.stop();
    clearTimeout(this.reconnectTimer);
    await this.listener?.end().catch(() => undefined);
    await this.pool.end().catch(() => undefined);
  }

  // --- transactions ---

  /** One transaction on the key, under its advisory lock; NOTIFY when it changed the holds (purges included). */
  private async change<T>(key: string, work: Tx): Promise<T> {
    splitLockKey(key);
    await this.ensureSchema();
    return this.withClient(async (client) => {
      const query = (text: string, values?: unknown[]) => client.query(text, values);
      await query("BEGIN");
      try {
        await query(sql.LOCK_KEY, [key]);
        const purged = ((await query(sql.purge(this.settings.table), [key])).rowCount ?? 0) > 0;
        const { changed, value } = await work(query);
        if (changed || purged) await query(sql.NOTIFY, [key]);
        await query("COMMIT");
        return value as T;
      } catch (err) {
        await query("ROLLBACK").catch(() => undefined);
        throw err;
      }
    });
  }

  private ensureSchema(): Promise<void> {
    this.schema ??= this.withClient(async (client) => {
      await client.query("BEGIN");
      await client.query(sql.LOCK_KEY, ["kubelock schema"]); // concurrent CREATE IF NOT EXISTS can collide
      await client.query(sql.schema(this.settings.table));
      await client.query("COMMIT");
    }).catch((err) => {
      this.schema = undefined;
      throw err;
    });
    return this.schema;
  }

  /**
   * A pooled connection for `use`, within requestTimeoutMs; failures to reach the server become
   * BackendUnavailableError. A connection whose work failed or timed out may be mid-transaction or hung: it is
   * destroyed (its in-flight statement fails with it), never reused.
   */
  private async withClient<T>(use: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    if (this.closed) throw new BackendUnavailableError(this.name, "backend closed");
    const ms = this.settings.requestTimeoutMs;
    let client: pg.PoolClient | undefined;
    let released = false;
    let abandoned = false;
    let broken = false;
    const onError = () => (broken = true);
    const release = (destroy: boolean) => {
      if (!client || released) return;
      released = true;
      client.off("error", onError);
      client.release(destroy || broken);
    };
    const work = (async () => {
      client = await this.pool.connect();
      client.on("error", onError);
      if (abandoned) {
        release(true); // connected after the deadline
        throw new Error("connected after the deadline");
      }
      const result = await use(client);
      release(false);
      return result;
    })();
    try {
      return await withDeadline(work, ms, () => new BackendUnavailableError(this.name, `no answer within ${ms}ms`));
    } catch (err) {
      abandoned = true;
      const connected = client !== undefined;
      release(true);
      void work.catch(() => undefined);
      if (!connected) this.connectFailed(err);
      if (err instanceof BackendUnavailableError) throw err;
      if (refused(err)) throw new BackendUnavailableError(this.name, this.refusal(err as Error), { cause: err });
      // Not connected: the server cannot be reached, or the TLS handshake failed (a certificate not accepted).
      if (!connected || unreachable(err)) throw new BackendUnavailableError(this.name, (err as Error).message, { cause: err });
      throw err;
    }
  }

  // --- watches ---

  /** NOTIFY reaches the listener; a poll catches holds that expired with nobody writing. */
  private startWatch(key: string): HoldersPoll {
    const poll: HoldersPoll = new HoldersPoll(() => this.holders(key), () => this.watches.isCurrent(key, poll) && this.watches.notify(key), WATCH_POLL_MS);
    return poll;
  }

  /** Keeps one LISTEN connection while anything is watched; on every (re)connect, every watcher is woken. */
  private listen(): void {
    if (this.listener || this.closed || this.reconnectTimer) return;
    const client = new pg.Client(this.connection());
    this.listener = client;
    const retry = (err?: unknown) => {
      if (this.listener !== client) return;
      this.connectFailed(err);
      this.listener = undefined;
      client.end().catch(() => undefined);
      if (this.closed) return;
      this.reconnectTimer = setTimeout(() => {
        this.reconnectTimer = undefined;
        if (this.watches.size > 0) this.listen();
      }, this.reconnectMs).unref();
      this.reconnectMs = Math.min(this.reconnectMs * 2, MAX_RECONNECT_MS);
    };
    client.on("error", retry);
    client.on("end", retry);
    client.on("notification", (n) => n.payload && this.watches.notify(n.payload));
    client.connect().then(() => client.query(sql.LISTEN)).then(() => {
      this.reconnectMs = 250;
      this.watches.notifyAll(); // changes made while not listening were not heard
    }, retry);
  }

  /**
   * A connection could not be opened (or the LISTEN connection was lost): the credential files may have been
   * rotated. Reads passwordFile again when the server refused the login, the TLS files at any failure; what
   * changed and is usable goes to every connection opened from then on (`connection()` and the shared `ssl`).
   */
  private connectFailed(err: unknown): void {
    if (this.closed) return;
    if (refused(err)) this.password?.reload();
    const material = this.tls?.reload();
    if (material && this.settings.ssl) Object.assign(this.settings.ssl, material);
  }

  /** The server refused the login: what to check. The server's own message names the role, never the password. */
  private refusal(err: Error): string {
    const user = decodeURIComponent(new URL(this.settings.url).username);
    const password = this.settings.passwordFile ? "wrong password in postgresql.passwordFile, or no such role" : "no such role, or a password is needed (postgresql.passwordFile)";
    const check = this.settings.ssl?.cert ? `${password}, or the client certificate (postgresql.tls.certFile) is not accepted for that role` : password;
    return `PostgreSQL refused the login of role "${user}": ${check} (${err.message})`;
  }

  private connection(): pg.ClientConfig {
    const s = this.settings;
    // The server ends what a frozen or cut-off caller left behind: a transaction idle between statements (the
    // caller stopped mid-change, its connection still open, holding the key's advisory lock) and any statement
    // or lock wait outliving the call's own deadline. Otherwise every operator would wait on that key until the
    // frozen one woke, and a standby could neither renew nor confirm the holds on it.
    const limit = s.requestTimeoutMs;
    const base: pg.ClientConfig = {
      ssl: s.ssl, connectionTimeoutMillis: limit, application_name: "kubelock",
      idle_in_transaction_session_timeout: limit, statement_timeout: limit, lock_timeout: limit,
    };
    // The URL's fields win over the others, as with pg's `connectionString`, except the password: pg would take the
    // URL's (empty: the settings refuse one there) over the one given beside it, and log in with none.
    return { ...base, ...(parse(s.url) as pg.ClientConfig), password: this.password ? () => this.password!.value : s.password };
  }
}

function leaseMs(seconds: number): number {
  if (!(seconds > 0)) throw new Error(`leaseDurationSeconds must be positive, got ${seconds}`);
  return Math.round(seconds * 1000);
}

function toHold(r: Row): Hold {
  return {
    holderId: r.holder_id, claim: r.claim, holderIdentity: r.holder_identity, cluster: r.cluster,
    fencingToken: r.fencing_token, acquireTime: r.acquire_time.toISOString(), renewTime: r.renew_time.toISOString(),
  };
}

/** The server refused the login: 28P01 a wrong password, 28000 no such role or no pg_hba.conf entry for it. */
function refused(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return code === "28P01" || code === "28000";
}

/** Errors that mean the server could not be reached or is going away (not a statement's own failure). */
function unreachable(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  // 08: connection; 57P01-03: shutdown; 53300: too many connections; 57014, 55P03, 25P03: a statement, a lock wait
  // or an idle transaction ended by the server's own timeouts (see `connection`).
  if (typeof e?.code === "string" && /^(08|57P0[1-3]|53300|57014|55P03|25P03|ECONN|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|EPIPE)/.test(e.code)) return true;
  return /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(e?.message ?? "");
}
