/**
 * The etcd backend (etcd3 client). Settings (`etcd: {...}`): `endpoints` (http(s):// URLs, required), `prefix`
 * (default `/kubelock`), `username` + `passwordFile`, `tls: {caFile, certFile, keyFile}`, `dialTimeoutMs` and
 * `requestTimeoutMs` (default 2000 each).
 *
 * A hold or queue entry is the key `<prefix>/<namespace>/<key>/holders/<holderId>` (`<key>` and `<holderId>`
 * URI-encoded, so a '/' in a lock key never reaches into another key's holders); value: JSON of HolderInfo,
 * acquireTime, renewTime, leaseDurationSeconds, maxHolders. The first maxHolders live keys by create revision hold,
 * the rest wait in that order (etcd's concurrency.Mutex): tryAcquire creates its key if absent and reads the prefix
 * in one transaction; with fewer than maxHolders live keys created before ours we hold (for good: no key can later
 * get a smaller create revision); else a waiting request keeps its key (its place) and any other deletes it. A
 * waiter is served when the keys before it go; it learns so from the watch and its next tryAcquire, which writes
 * the key again as a hold. Fencing token = create revision: etcd's global revision, so for a mutex, whose grants
 * follow create revisions, strictly increasing across grants, clusters and restarts.
 *
 * Expiry, two layers:
 * - Per hold (the contract): a key whose mod revision has not changed for its leaseDurationSeconds, as this
 *   process observed it (first seen on its own clock: runtime/observed.ts), is gone. holders() skips it, renew()
 *   returns undefined, a contender deletes it (compared on mod revision, so a racing renew wins or fails cleanly)
 *   before counting. renewTime in the value is for people; no machine's timestamp is compared with another's
 *   clock, so operators sharing an etcd need no agreeing clocks. A key first seen (a restart, another cluster's
 *   operator) counts as renewed then: late, never early.
 * - Per process: keys are attached to this instance's *session lease* for their leaseDurationSeconds (one lease
 *   per distinct duration, TTL = duration, since one lease cannot carry per-hold TTLs), granted lazily, kept
 *   alive by etcd3 and shared by all such holds: no lease grant per acquire. A dead or cut-off operator's keys go
 *   one TTL later. A lost session lease (no keepalive for 2 TTLs, or unknown to etcd) is dropped and the next
 *   write grants a new one; its keys go when etcd expires it, unless a renew first moves an unexpired hold over.
 *
 * close() stops keepalives but does NOT revoke: holds outlive an operator restart by their lease duration, and
 * the next operator re-attaches by holderId (tryAcquire and renew move the key onto its own session lease,
 * keeping the create revision).
 *
 * Authentication (`username` + `passwordFile`): etcd3 exchanges the password for a token and asks again when
 * etcd calls the token invalid; the password is then read from passwordFile anew, so a rotated Secret is used
 * without a restart (and without touching holds: session leases and keys stay as they are). A token issued
 * before any change of etcd's users or roles is refused as "old" by etcd, which etcd3 does not handle: the
 * backend drops the token and retries once. A watch stream keeps the token it was opened with, so watches run
 * on a client of their own that is replaced after such a refusal. A user whose role lacks readwrite on the
 * prefix, or a refused password, is BackendUnavailableError saying what to grant or check; the password never
 * appears in a message.
 *
 * Client certificates (`tls` files): read again whenever a call fails as unavailable or a keepalive fails (a
 * server that no longer accepts the old certificate fails both). When their contents changed (and make a usable
 * set: kit/tls-files.ts), the etcd3 clients are rebuilt on the new material and the failed call is tried once more
 * within its requestTimeoutMs. Holds are kept as across a restart: the session leases of the old client are left
 * to etcd (no keepalives, never revoked), new ones are granted, and each hold's next renew (or tryAcquire) moves
 * its key onto them, keeping its create revision; the old leases expire one TTL after their last keepalive.
 */
import { readFileSync } from "node:fs";
import {
  Etcd3, EtcdAuthenticationFailedError, EtcdInvalidAuthTokenError, EtcdLeaseInvalidError, EtcdPermissionDeniedError, isRecoverableError,
  type IKeyValue, type IOptions, type Lease, type Watcher,
} from "etcd3";
import { BackendUnavailableError, type AcquireRequest, type Hold, type HolderInfo, type LockBackend, type QueueState, type WaiterWatch } from "../backend";
import { monotonicNow, ObservedVersions } from "../../runtime/observed";
import { withDeadline } from "../kit/deadline";
import { FanOut } from "../kit/fan-out";
import { splitQueue } from "../kit/queue-state";
import { splitLockKey } from "../kit/lock-key";
import { TlsFiles, type TlsMaterial, type TlsPaths } from "../kit/tls-files";

import { DEFAULT_PREFIX, DEFAULT_TIMEOUT_MS } from "./settings";
/** gRPC keepalive ping interval; etcd refuses pings more often than every 5 s. */
const GRPC_KEEPALIVE_MS = 10_000;
const ATTEMPTS = 10;

export interface EtcdBackendOptions {
  name: string;
  endpoints: string[];
  prefix?: string;
  /** `passwordFile`, when given, is read again at each authentication (the password as it is then; `password` until it can be). */
  auth?: { username: string; password: string; passwordFile?: string };
  /** The material as read at start; `files`, when given, are read again to pick up a rotated certificate. */
  tls?: TlsMaterial & { files?: TlsPaths };
  /** gRPC keepalive ping timeout (a dead connection, watches included, goes after 10 s + this); longest reconnect pause. */
  dialTimeoutMs?: number;
  /** Every call fails with BackendUnavailableError after this long (the gRPC deadline, etcd3's retries included). */
  requestTimeoutMs?: number;
}

interface Stored extends HolderInfo {
  acquireTime: string;
  renewTime: string;
  leaseDurationSeconds: number;
  maxHolders: number;
  /** A waiter's entry (not yet told it holds): its first write as a hold sets acquireTime; its release frees no hold. */
  waiting?: boolean;
}

interface Session { lease: Lease; id: Promise<string> }
interface KeyWatch { watcher?: Watcher }

export class EtcdBackend implements LockBackend {
  readonly name: string;
  readonly fencingRecord = "revision";
  /** Replaced when the TLS files change (see "Client certificates" above). */
  private client: Etcd3;
  /** Watches only: replaced when etcd refuses its stream's token (see "Authentication" above). */
  private watchClient: Etcd3;
  private watchClientSince = 0;
  private watchClientPending?: NodeJS.Timeout;
  private clientOptions: IOptions;
  private readonly tlsFiles?: TlsFiles;
  /** Clients replaced by a TLS reload, closed once calls started on them have had their time. */
  private readonly retired = new Set<Etcd3>();
  private readonly username?: string;
  private readonly dialTimeoutMs: number;
  private readonly prefix: string;
  private readonly requestTimeoutMs: number;
  private readonly sessions = new Map<number, Session>();
  /** One etcd watch per watched key (its holders prefix), shared by that key's listeners. */
  private readonly watches = new FanOut<KeyWatch>((prefix) => this.startWatch(prefix, {}), (_, w) => void w.watcher?.cancel().catch(() => undefined),
    (key) => this.order(key));
  /** When this process first saw each hold key's mod revision, by holders prefix. */
  private readonly observed = new ObservedVersions();
  private closed = false;

  constructor(options: EtcdBackendOptions) {
    this.name = options.name;
    this.prefix = (options.prefix ?? DEFAULT_PREFIX).replace(/\/+$/, "");
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    const dial = options.dialTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.dialTimeoutMs = dial;
    const tls = options.tls;
    this.username = options.auth?.username;
    const backoff = (ms: number): NonNullable<NonNullable<IOptions["faultHandling"]>["watchBackoff"]> => ({ duration: ms, next: () => backoff(Math.min(2 * ms, dial)) });
    this.clientOptions = {
      hosts: options.endpoints,
      auth: options.auth && rereadPassword(options.auth),
      credentials: tls && credentials(tls),
      defaultCallOptions: (call) => (call.isStream ? {} : { deadline: Date.now() + this.requestTimeoutMs }),
      grpcOptions: {
        "grpc.keepalive_time_ms": GRPC_KEEPALIVE_MS,
        "grpc.keepalive_timeout_ms": dial,
        "grpc.initial_reconnect_backoff_ms": Math.min(dial, 1000),
        "grpc.max_reconnect_backoff_ms": dial,
      },
      faultHandling: { watchBackoff: backoff(Math.min(dial, 100)), host: () => PASS_THROUGH },
    };
    this.client = new Etcd3(this.clientOptions);
    this.watchClient = new Etcd3(this.clientOptions);
    if (tls?.files) this.tlsFiles = new TlsFiles(tls.files, tls);
  }

  async tryAcquire(req: AcquireRequest): Promise<Hold | undefined> {
    positiveInteger("maxHolders", req.maxHolders);
    positiveInteger("leaseDurationSeconds", req.leaseDurationSeconds);
    const prefix = this.holdersPrefix(req.key);
    const mine = prefix + encodeURIComponent(req.holderId);
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      const now = new Date().toISOString();
      const sentAt = monotonicNow();
      const entry: Stored = {
        holderId: req.holderId, claim: req.claim, holderIdentity: req.holderIdentity, cluster: req.cluster, acquireTime: now,
        renewTime: now, leaseDurationSeconds: req.leaseDurationSeconds, maxHolders: req.maxHolders,
      };
      const range = () => this.client.getAll().prefix(prefix).sort("Create", "Ascend");
      const txn = await this.withSession(req.leaseDurationSeconds, (lease) =>
        this.client.if(mine, "Create", "==", 0).then(this.client.put(mine).value(JSON.stringify(entry)).lease(lease), range()).else(range())
          .commit().then((res) => ({ res, lease })),
      );
      const kvs = txn.res.responses[txn.res.responses.length - 1].response_range.kvs;
      this.observe(prefix, kvs);
      const ours = kvs.find((kv) => kv.key.toString() === mine);
      if (!ours) continue;
      const created = txn.res.succeeded;
      if (created) this.observed.wrote(prefix, mine, ours.mod_revision, sentAt);
      else if (this.expired(prefix, ours)) {
        await this.deleteIf(ours);
        continue;
      }
      const before = kvs.filter((kv) => BigInt(kv.create_revision) < BigInt(ours.create_revision));
      const stale = before.filter((kv) => this.expired(prefix, kv));
      if (stale.length > 0) {
        await Promise.all(stale.map((kv) => this.deleteIf(kv)));
        continue;
      }
      const holds = before.length < req.maxHolders;
      if (!holds && !req.wait) {
        await this.call(() => this.client.if(mine, "Create", "==", ours.create_revision).then(this.client.delete().key(mine)).commit());
        return undefined;
      }
      if (created && holds) return toHold(ours);
      // A hold found again is written anew (its validity is measured from this write; a waiter that just reached a
      // slot is granted now); a waiter is marked so when it joins, then refreshed once a quarter of its lease passed.
      const stored = parse(ours)!;
      const age = monotonicNow() - (this.observed.seenAt(prefix, mine, ours.mod_revision) ?? monotonicNow());
      if (holds || !stored.waiting || ours.lease !== txn.lease || age > (req.leaseDurationSeconds * 1000) / 4) {
        const acquireTime = holds && stored.waiting ? now : stored.acquireTime;
        const value: Stored = { ...stored, acquireTime, renewTime: now, leaseDurationSeconds: req.leaseDurationSeconds, waiting: !holds };
        const written = await this.put(ours, JSON.stringify(value), req.leaseDurationSeconds);
        if (!written) continue;
        if (holds) return toHold(written);
      }
      return undefined;
    }
    throw new BackendUnavailableError(this.name, `too much contention on ${req.key}: gave up after ${ATTEMPTS} attempts`);
  }

  /** Refreshes renewTime and moves the key onto this instance's session lease for `leaseDurationSeconds`. */
  async renew(key: string, holderId: string, leaseDurationSeconds: number): Promise<Hold | undefined> {
    positiveInteger("leaseDurationSeconds", leaseDurationSeconds);
    const prefix = this.holdersPrefix(key);
    const mine = prefix + encodeURIComponent(holderId);
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      const kv = (await this.call(() => this.client.get(mine).exec())).kvs[0];
      const now = Date.now();
      if (!kv) return undefined;
      this.observed.note(prefix, mine, kv.mod_revision, monotonicNow());
      if (this.expired(prefix, kv)) {
        await this.deleteIf(kv);
        return undefined;
      }
      const value = JSON.stringify({ ...parse(kv), renewTime: new Date(now).toISOString(), leaseDurationSeconds });
      const renewed = await this.put(kv, value, leaseDurationSeconds);
      if (renewed) return toHold(renewed);
    }
    throw new BackendUnavailableError(this.name, `too much contention renewing ${key}`);
  }

  /** Owner-checked by construction: the only key deleted is `<...>/holders/<holderId>`. */
  async release(key: string, holderId: string): Promise<boolean> {
    const prefix = this.holdersPrefix(key);
    const mine = prefix + encodeURIComponent(holderId);
    const deleted = await this.call(() => this.client.delete().key(mine).getPrevious());
    const live = deleted.some((kv) => !this.expired(prefix, kv) && !parse(kv)?.waiting);
    this.observed.drop(prefix, mine);
    return live;
  }

  /** The holderIds of every key present, in create-revision order (names only: the watch's turn read). */
  private async order(key: string): Promise<string[]> {
    const prefix = this.holdersPrefix(key);
    const names = await this.call(() => this.client.getAll().prefix(prefix).sort("Create", "Ascend").keys());
    return names.map((name) => decodeURIComponent(name.slice(prefix.length)));
  }

  /** Live keys that hold by the grant rule: the first maxHolders by create revision. */
  async holders(key: string): Promise<Hold[]> {
    return (await this.queueState(key)).holders;
  }

  /** Live keys behind the first maxHolders, in create-revision order. */
  async waiting(key: string): Promise<HolderInfo[]> {
    return (await this.queueState(key)).waiting;
  }

  async queueState(key: string): Promise<QueueState> {
    const [ranked, own] = await Promise.all([this.ranked(key), this.ownLeases()]);
    return splitQueue(ranked, (e) => ({ ...toHold(e.kv), ...(own.has(String(e.kv.lease)) && { ownSession: true }) }));
  }

  /**
   * The ids of this instance's live session leases: a key on one of them lives as long as this process keeps it
   * alive, whoever's claim it was for (see HolderInfo.ownSession).
   */
  private async ownLeases(): Promise<Set<string>> {
    const ids = await Promise.all([...this.sessions.values()].map((s) => s.id.catch(() => undefined)));
    return new Set(ids.filter((id): id is string => id !== undefined).map(String));
  }

  /**
   * Live keys, each with whether it holds. Ranks are counted among EVERY key present, expired ones included: a
   * key this process judges expired still stands ahead of later ones until it is deleted, because its owner, or an
   * observer that saw it later, may still count it live. Only the deletion (tryAcquire's, conditional on its mod
   * revision) makes the judgement a fact that every reader shares; a read never promotes a waiter over it.
   */
  private async ranked(key: string): Promise<{ kv: IKeyValue; holds: boolean }[]> {
    const prefix = this.holdersPrefix(key);
    const { kvs } = await this.call(() => this.client.getAll().prefix(prefix).sort("Create", "Ascend").exec());
    this.observe(prefix, kvs);
    return kvs.map((kv, rank) => ({ kv, holds: rank < (parse(kv)?.maxHolders ?? 1) })).filter((e) => !this.expired(prefix, e.kv));
  }

  watch(key: string, onChange: () => void, waiter?: WaiterWatch): () => void {
    if (this.closed) return () => undefined;
    return this.watches.add(this.holdersPrefix(key), onChange, waiter && { ...waiter, key });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const session of this.sessions.values()) session.lease.release(); // stop keepalives; never revoke
    this.sessions.clear();
    const watchers = this.watches.clear().flatMap((w) => (w.watcher ? [w.watcher] : []));
    const timeout = new Promise((resolve) => setTimeout(resolve, this.requestTimeoutMs).unref());
    await Promise.race([Promise.allSettled(watchers.map((w) => w.cancel())), timeout]);
    clearTimeout(this.watchClientPending);
    this.watchClient.close();
    this.client.close();
    for (const client of this.retired) client.close();
  }

  private startWatch(prefix: string, watch: KeyWatch): KeyWatch {
    const notify = () => this.watches.notify(prefix);
    const watcher = this.watchClient.watch().prefix(prefix).watcher();
    watch.watcher = watcher;
    // After a reconnect etcd3 resumes from the last revision seen; "connected" also wakes the listeners in case.
    watcher.on("connected", notify).on("data", (res) => res.events.length > 0 && notify());
    watcher.on("error", (err: Error) => {
      // etcd cancelled the watch: its revision was compacted away (start a new one), its stream's token is no
      // longer good (a new watch client), or the user may not read the prefix (try again a while later).
      if (this.closed || !this.watches.isCurrent(prefix, watch) || watch.watcher !== watcher) return;
      notify();
      if (staleToken(err)) return this.replaceWatchClient();
      const retry = () => this.watches.isCurrent(prefix, watch) && watch.watcher === watcher && !this.closed && this.startWatch(prefix, watch);
      if (/compacted/.test(err.message)) retry();
      else setTimeout(retry, this.dialTimeoutMs).unref();
    });
    return watch;
  }

  /** A new watch client (a fresh token) with every watch moved onto it; at most once per dialTimeoutMs. */
  private replaceWatchClient(): void {
    if (this.watchClientPending) return;
    const wait = this.watchClientSince + this.dialTimeoutMs - monotonicNow();
    if (wait > 0) {
      this.watchClientPending = setTimeout(() => {
        this.watchClientPending = undefined;
        if (!this.closed) this.replaceWatchClient();
      }, wait).unref();
      return;
    }
    this.watchClientSince = monotonicNow();
    const old = this.watchClient;
    this.watchClient = new Etcd3(this.clientOptions);
    const leaving: Watcher[] = [];
    for (const [prefix, watch] of this.watches.watched()) {
      if (watch.watcher) leaving.push(watch.watcher);
      this.startWatch(prefix, watch);
    }
    // The old client closes once its watches are cancelled (so it does not reconnect them), or a while later.
    const timeout = new Promise((resolve) => setTimeout(resolve, this.requestTimeoutMs).unref());
    void Promise.race([Promise.allSettled(leaving.map((w) => w.cancel())), timeout]).then(() => old.close());
  }

  private holdersPrefix(key: string): string {
    const lock = splitLockKey(key);
    return `${this.prefix}/${lock.namespace}/${encodeURIComponent(lock.key)}/holders/`;
  }

  /** Writes `value` to kv's key on our session lease if the key is unchanged since `kv`; the new kv, or undefined. */
  private async put(kv: IKeyValue, value: string, ttl: number): Promise<IKeyValue | undefined> {
    const key = kv.key.toString();
    const sentAt = monotonicNow();
    const res = await this.withSession(ttl, (lease) =>
      this.client.if(key, "Mod", "==", kv.mod_revision).then(this.client.put(key).value(value).lease(lease)).commit(),
    );
    if (!res.succeeded) return undefined;
    this.observed.wrote(key.slice(0, key.lastIndexOf("/") + 1), key, res.header.revision, sentAt);
    return { ...kv, value: Buffer.from(value), mod_revision: res.header.revision };
  }

  /** Notes the hold keys a full read of `prefix` found (see ObservedVersions). */
  private observe(prefix: string, kvs: IKeyValue[]): void {
    this.observed.sync(prefix, kvs.map((kv) => [kv.key.toString(), kv.mod_revision] as const), monotonicNow());
  }

  /**
   * Unchanged for its leaseDurationSeconds since this process first saw its mod revision (now, if never):
   * gone. A value that is no hold counts as expired.
   */
  private expired(prefix: string, kv: IKeyValue, now = monotonicNow()): boolean {
    const stored = parse(kv);
    if (!stored || !(stored.leaseDurationSeconds > 0)) return true;
    const seen = this.observed.seenAt(prefix, kv.key.toString(), kv.mod_revision) ?? now;
    return seen + stored.leaseDurationSeconds * 1000 < now;
  }

  private async deleteIf(kv: IKeyValue): Promise<void> {
    await this.call(() => this.client.if(kv.key, "Mod", "==", kv.mod_revision).then(this.client.delete().key(kv.key)).commit());
  }

  /** This instance's session lease for `ttl`, granted on first use and kept alive until lost or closed. */
  private session(ttl: number): Session {
    let session = this.sessions.get(ttl);
    if (!session) {
      const lease = this.client.lease(ttl);
      session = { lease, id: lease.grant() };
      session.id.catch(() => undefined); // a failed grant also emits "lost"; callers see it from `id`
      lease.on("lost", () => this.dropSession(ttl, lease));
      // Keepalives run on a stream with the token it was opened with: a token etcd refuses is dropped, so the
      // next stream (etcd3 retries at once) authenticates again before the lease runs out.
      lease.on("keepaliveFailed", (err: unknown) => (staleToken(err) ? this.dropToken() : this.reloadTls()));
      this.sessions.set(ttl, session);
    }
    return session;
  }

  private dropSession(ttl: number, lease: Lease): void {
    if (this.sessions.get(ttl)?.lease === lease) this.sessions.delete(ttl);
    lease.release();
  }

  /** Runs a write on the session lease; a lease etcd no longer knows is dropped and granted anew, once. */
  private async withSession<T>(ttl: number, write: (lease: string) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      let session: Session | undefined;
      try {
        // The session is looked up inside the call: a call tried again after a TLS reload uses the new client's.
        return await this.call(async () => write(await (session = this.session(ttl)).id));
      } catch (err) {
        if (!(err instanceof EtcdLeaseInvalidError) || !session) throw err;
        this.dropSession(ttl, session.lease);
        if (attempt > 0) throw new BackendUnavailableError(this.name, "the session lease was lost twice in a row", { cause: err });
      }
    }
  }

  /**
   * One etcd call (etcd3's retries included) within requestTimeoutMs; unreachable-server errors mapped. A call
   * that fails unavailable while the TLS files changed is tried again on the rebuilt client, in the time left.
   */
  private async call<T>(op: () => Promise<T>): Promise<T> {
    const started = monotonicNow();
    try {
      return await this.callOnce(op, this.requestTimeoutMs);
    } catch (err) {
      if (!(err instanceof BackendUnavailableError) || !this.reloadTls()) throw err;
      const left = started + this.requestTimeoutMs - monotonicNow();
      if (left <= 0) throw err;
      return this.callOnce(op, left);
    }
  }

  private async callOnce<T>(op: () => Promise<T>, timeoutMs: number): Promise<T> {
    if (this.closed) throw new BackendUnavailableError(this.name, "the backend is closed");
    const once = async () => {
      try {
        return await op();
      } catch (err) {
        if (!staleToken(err)) throw err;
        this.dropToken(); // etcd's users or roles changed since the token was issued: authenticate again, once
        return op();
      }
    };
    try {
      return await withDeadline(once(), timeoutMs, () => new BackendUnavailableError(this.name, `no answer within ${this.requestTimeoutMs}ms`));
    } catch (err) {
      const refused = this.refusal(err);
      // Recoverable: gRPC unavailable, deadline exceeded, cancelled...; a broken circuit is etcd3 failing fast.
      const unreachable = err instanceof BackendUnavailableError ||
        (err instanceof Error && (isRecoverableError(err) || "isBrokenCircuitError" in err));
      if (!unreachable && !refused) throw err;
      this.observed.interrupted(); // time without sight of etcd does not count toward any hold's expiry
      if (refused) throw new BackendUnavailableError(this.name, refused, { cause: err });
      throw err instanceof BackendUnavailableError ? err : new BackendUnavailableError(this.name, (err as Error).message, { cause: err });
    }
  }

  /** What to do about an authentication or permission refusal (never quoting the password); undefined for other errors. */
  private refusal(err: unknown): string | undefined {
    const who = this.username === undefined ? "" : `etcd user "${this.username}"`;
    if (err instanceof EtcdPermissionDeniedError) {
      return `${who || "etcd"} may not read and write ${this.prefix}/: grant ${who ? "its role" : "the user"} readwrite on the key prefix ${this.prefix}/`;
    }
    if (err instanceof EtcdAuthenticationFailedError) return `${who} was refused: wrong password in etcd.passwordFile, or no such user`;
    if (err instanceof Error && /user name is empty/.test(err.message)) return "etcd has authentication enabled: set etcd.username and etcd.passwordFile";
    if (err instanceof Error && /authentication is not enabled/.test(err.message)) return "etcd does not have authentication enabled: remove etcd.username and etcd.passwordFile";
    return undefined;
  }

  /**
   * Reads the TLS files again; when they changed, rebuilds the clients on them (calls and watches move over, session
   * leases are granted anew: see "Client certificates" above) and returns true.
   */
  private reloadTls(): boolean {
    const material = this.closed ? undefined : this.tlsFiles?.reload();
    if (!material) return false;
    this.clientOptions = { ...this.clientOptions, credentials: credentials(material) };
    const old = this.client;
    this.client = new Etcd3(this.clientOptions);
    for (const session of this.sessions.values()) session.lease.release(); // stop keepalives; never revoke
    this.sessions.clear();
    this.retired.add(old);
    setTimeout(() => this.retired.delete(old) && old.close(), this.requestTimeoutMs).unref();
    this.watchClientSince = 0;
    this.replaceWatchClient();
    return true;
  }

  /** Makes etcd3 authenticate again on the next call (it does so by itself only for a token etcd calls invalid). */
  private dropToken(): void {
    (this.client as unknown as { pool?: { authenticator?: { invalidateMetadata?: () => void } } }).pool?.authenticator?.invalidateMetadata?.();
  }
}

/**
 * The per-host policy: none. etcd3's default, a circuit breaker, deadlocks once etcd restarts with authentication
 * on: etcd3 retries a call whose token etcd no longer knows from inside the breaker's half-open trial, so the retry
 * waits for the trial, which waits for the retry, until the deadline, every time (calls never recover).
 */
const PASS_THROUGH = {
  execute: <T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T) => Promise.resolve().then(() => fn({ signal: new AbortController().signal })),
  onSuccess: () => ({ dispose: () => undefined }),
  onFailure: () => ({ dispose: () => undefined }),
} as unknown as ReturnType<NonNullable<NonNullable<IOptions["faultHandling"]>["host"]>>;

/** etcd3 credentials for TLS material; grpc-js takes a null CA as "the system roots" (a client certificate without a caFile). */
function credentials(tls: TlsMaterial): NonNullable<IOptions["credentials"]> {
  return { rootCertificate: tls.ca ?? (null as unknown as Buffer), privateKey: tls.key, certChain: tls.cert };
}

/** etcd refused a token issued before its users or roles last changed (or one it no longer knows). */
function staleToken(err: unknown): boolean {
  return err instanceof EtcdInvalidAuthTokenError || (err instanceof Error && /revision of auth store is old|invalid auth token/.test(err.message));
}

/** `auth` whose password etcd3 reads at each authentication: passwordFile's contents then, or the last good ones. */
function rereadPassword(auth: NonNullable<EtcdBackendOptions["auth"]>): { username: string; password: string } {
  let last = auth.password;
  return {
    username: auth.username,
    get password(): string {
      if (!auth.passwordFile) return last;
      try {
        last = readFileSync(auth.passwordFile, "utf8").replace(/\r?\n$/, "") || last;
      } catch {
        // a Secret being updated: the last good password
      }
      return last;
    },
  };
}

function parse(kv: IKeyValue): Stored | undefined {
  try {
    return JSON.parse(kv.value.toString()) as Stored;
  } catch {
    return undefined;
  }
}

function toHold(kv: IKeyValue): Hold {
  const s = parse(kv)!;
  return {
    holderId: s.holderId, claim: s.claim, holderIdentity: s.holderIdentity, cluster: s.cluster,
    fencingToken: kv.create_revision, acquireTime: s.acquireTime, renewTime: s.renewTime,
  };
}

function positiveInteger(field: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) throw new Error(`${field} must be an integer >= 1, got ${value}`);
}

/** A value for a message, cut to 100 characters. */
