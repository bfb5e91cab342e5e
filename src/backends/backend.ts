/**
 * The lock backend contract. Every backend (kubernetes, etcd, redis, zookeeper) implements it in a
 * folder of its own, whose `index.ts` exports the plugin that `registry.ts` lists.
 *
 * The backend is the source of truth for who holds a lock. The operator decides *who should be next*
 * (priority, FIFO, its own cluster's claims); the backend decides *whether a slot is free*, across every
 * cluster and operator that shares it. A backend never grants more than `maxHolders` holds on a key.
 *
 * Keys: the operator passes the full key `<namespace>/<key>`; a backend prepends its own configured
 * prefix, so a namespace can never name another namespace's locks.
 *
 * Holds are identified by `holderId` (the LockClaim's UID): every call is idempotent per holderId, so
 * an operator restarted within the lease duration re-attaches to its holds instead of re-acquiring.
 *
 * Queue: a request with `wait` that finds no slot for it keeps an entry in the key's queue, in the backend, shared
 * by every operator using it and ordered by when each entry was made (FIFO across clusters). An entry takes a slot
 * only when fewer than maxHolders holds and earlier entries stand before it, so a waiter keeps its place and
 * contenders never knock each other out (as etcd's concurrency.Mutex and Curator's recipes, which never withdraw
 * and retry). Entries expire like holds: one not refreshed (by tryAcquire) within its leaseDurationSeconds, or
 * whose operator's session ended, goes, so a crashed or cut-off operator blocks nobody for long.
 *
 * Errors: a backend throws `BackendUnavailableError` when the server cannot be reached or does not
 * answer within its timeout; nothing else about the hold may be assumed then.
 */

export interface HolderInfo {
  /** The LockClaim's UID: the hold's owner, unique across clusters. */
  holderId: string;
  /** The LockClaim's name. */
  claim: string;
  /** Pod name, or claim name when the claim names no pod. */
  holderIdentity: string;
  /** The granting operator's `clusterName` (may be empty). */
  cluster: string;
  /**
   * Set by a backend whose holds live on this process's own session (a ZooKeeper ephemeral node of the session
   * this replica uses, handed over from leader to leader; an etcd key on one of this process's session leases, which
   * its keepalives keep and renewals move holds onto): no other operator can release such a hold or let it lapse, so this one treats it as its own whatever cluster name it carries (say, one granted before the
   * cluster's name changed, whose claim then went while no replica was watching).
   */
  ownSession?: boolean;
}

export interface AcquireRequest extends HolderInfo {
  /** `<namespace>/<key>`. */
  key: string;
  /** At most this many holds on the key at once (>= 1). */
  maxHolders: number;
  /** The hold expires this long after the last acquire or renew unless renewed. */
  leaseDurationSeconds: number;
  /**
   * The highest fencing token the caller ever handed out on this key (a decimal string), if it knows one. A
   * backend whose tokens come from a counter it keeps raises the counter to at least this before drawing, so
   * tokens never repeat or go backwards even when the counter was lost (a Redis restarted empty or failed over
   * to a replica that missed writes, a deleted counter object). Backends whose token is the server's own
   * revision (etcd, ZooKeeper) cannot; for every backend the caller refuses a new token at or below it.
   */
  fencingFloor?: string;
  /**
   * Wait in the key's queue when no slot is free for this request: the backend keeps (or, called again, refreshes)
   * an entry for holderId, and a later tryAcquire takes the slot once the entries before it are served. release()
   * withdraws the entry. Without `wait`, tryAcquire leaves nothing behind when it returns undefined; it takes a slot
   * only when one is free for a newcomer at the back of the queue (it never jumps ahead of waiting entries).
   */
  wait?: boolean;
}

export interface Hold extends HolderInfo {
  /** A non-negative integer as a decimal string, strictly increasing per key across all grants. */
  fencingToken: string;
  /** RFC 3339. */
  acquireTime: string;
  /** RFC 3339: the last acquire or renew. */
  renewTime: string;
  /**
   * Set when the call that returned this hold asked the server nothing (it acted on what a watch had shown): when
   * (the backend's clock, epoch ms) the last request the server answered on the hold's session was sent, so the
   * caller counts the hold's validity from then, not from the start of its own call.
   */
  confirmedAt?: number;
}

/** See LockBackend.fencingRecord. */
export type FencingRecord = "counter" | "revision" | "api-store";

export interface LockBackend {
  /** The backend's configured name. */
  readonly name: string;

  /**
   * True when the server itself expires holds on its own clock and `renew` is owner-checked there (Redis,
   * ZooKeeper, PostgreSQL): a renewal that succeeds proves the hold never lapsed, however late it comes. False
   * or absent when others judge a hold expired from what they observed (Kubernetes Leases, etcd keys): then a
   * renewal after the holder's validity deadline may meet a slot someone else already judged free.
   */
  readonly expiresOnServer?: boolean;

  /**
   * What the lock's recorded fencing mark (kept in the API server) must be for this backend's tokens never to repeat
   * or go backwards when the backend loses its data. Absent means "revision", the strictest.
   * - "counter": tokens come from a counter the backend raises to the caller's `fencingFloor` (Redis, PostgreSQL).
   *   The mark may run ahead of the tokens handed out (a reserve): passed as the floor after a restart, it lifts the
   *   counter past every token that could have been shown, so it needs a write only once tokens pass it.
   * - "revision": tokens are the server's own revisions, which no caller can raise (etcd, ZooKeeper): the mark is the
   *   exact highest token, recorded before any claim shows a higher one (a mark ahead would stall grants).
   * - "api-store": tokens are revisions of the operator's own API server (Kubernetes Leases). A restore from backup
   *   takes the mark back with the tokens, so it guards nothing and is recorded for people, with the rest of the
   *   lock's status.
   */
  readonly fencingRecord?: FencingRecord;

  /**
   * Take a slot for `req.holderId` if fewer than `maxHolders` holds, and no earlier queue entries for the free
   * ones, exist; never blocks. Returns the hold, or `undefined` when no slot is free for it (then, with `wait`, its
   * entry keeps its place in the queue). If `holderId` already holds the key, returns that hold (re-attach) with
   * its original fencing token.
   */
  tryAcquire(req: AcquireRequest): Promise<Hold | undefined>;

  /**
   * Extend `holderId`'s hold by `leaseDurationSeconds` from now. Returns the hold, or `undefined`
   * when it no longer exists (expired or taken): the holder has lost the lock.
   */
  renew(key: string, holderId: string, leaseDurationSeconds: number): Promise<Hold | undefined>;

  /**
   * Release `holderId`'s hold, or withdraw its queue entry. Owner-checked: never removes another holder's hold,
   * even one that took over an expired slot. Returns whether a hold of `holderId` was removed.
   */
  release(key: string, holderId: string): Promise<boolean>;

  /**
   * Optional: the lock for `key` was deleted in this cluster. Removes the key's per-key state (fencing counter,
   * lock node, rows) if, and only if, atomically at the time of removal, no hold and no queue entry of ANY
   * cluster exists on it (a backend may be shared by several clusters' operators). Returns whether it removed
   * anything; false leaves everything as it was, and holds and entries keep working.
   *
   * Fencing tokens must never repeat or go backwards for the key, even when a lock with the same key is created
   * later (a store that kept the last token it accepted must accept the new holder's), and without the caller's
   * `fencingFloor` (the lock, with its status, is gone). How each backend keeps that:
   * - Redis and PostgreSQL: a missing counter restarts from the server's clock in microseconds, so they remove a
   *   counter only while it is not ahead of that clock (it can be, raised by a caller's floor).
   * - etcd and ZooKeeper: tokens are the server's global revisions (etcd keeps nothing per key besides holds and
   *   entries, so it has no forget); ZooKeeper deletes the empty lock node.
   * - Kubernetes: tokens are the API server's resourceVersions (its etcd's revisions); like etcd it keeps nothing
   *   per key besides holds and entries (an earlier version's counter Lease goes with a release), so no forget.
   * Without `forget`, per-key state is kept for good (harmless; it only grows with the number of keys).
   */
  forget?(key: string): Promise<boolean>;

  /** Every current (unexpired) hold on the key, from every cluster, ordered by fencing token. */
  holders(key: string): Promise<Hold[]>;

  /** Every live queue entry on the key that does not hold, from every cluster, in queue order (next first). */
  waiting(key: string): Promise<HolderInfo[]>;

  /**
   * Optional: `holders` and `waiting` from one read of the backend (one round trip where the backend keeps
   * both together). Without it, `queueState()` (below) asks for the two at once.
   */
  queueState?(key: string): Promise<QueueState>;

  /**
   * Optional: `release(req.key, from)` then `tryAcquire(req)`, with the same results, in fewer writes: the slot that
   * `from` holds passes straight to `req.holderId` when the queue gives `req` that slot (the Lease backend: one
   * conditional update instead of a delete and a create). Owner-checked as release is; anything that cannot pass
   * straight over goes the two-call way. Callers use `handOff()` (below), which makes the two calls without it.
   */
  handOff?(from: string, req: AcquireRequest): Promise<HandOff>;

  /**
   * Calls `onChange` (soon, possibly spuriously) whenever the holds on `key` may have changed, so
   * waiters are woken without polling. Returns a function that stops watching.
   *
   * With `waiter` (a holder waiting in the key's queue), a backend may call `onChange` only when that
   * holder's turn may have come (fewer than maxHolders holds and entries stand before it), not at every change:
   * many waiters in one process then cost one read per change, and only the next in line asks again (no herd).
   */
  watch(key: string, onChange: () => void, waiter?: WaiterWatch): () => void;

  /** Releases connections. Holds are not released: they expire by their lease. */
  close(): Promise<void>;

  /**
   * Optional: why this backend cannot honour a lock's `leaseDurationSeconds` (a message that says what to do
   * instead), or undefined when it can. The lock then grants nothing and says so in its Ready condition.
   */
  leaseProblem?(leaseDurationSeconds: number): string | undefined;

  /**
   * Optional, with leader election: this replica now leads. Called once, before any reconcile; resolves when
   * the backend is ready to renew what the previous leader held. A backend whose holds belong to a connection
   * session takes over the previous leader's session here. From then on `leading()` says whether this replica
   * still provably leads: a handed-over session must not be used (or reconnected) when it does not.
   */
  lead?(leading: () => boolean): Promise<void>;

  /** Optional: leadership was lost; stop using whatever `lead` took over, at once (the next leader takes it). */
  stepDown?(): void;
}

/** The backend server could not be reached or did not answer in time. */
export class BackendUnavailableError extends Error {
  override readonly name = "BackendUnavailableError";
  constructor(
    readonly backend: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`backend ${backend} unavailable: ${message}`, options);
  }
}

/** Unknown backend name or type, or invalid backend settings. */
export class BackendConfigError extends Error {
  override readonly name = "BackendConfigError";
}

/** Whom a watch wakes when it waits in the queue (see `LockBackend.watch`). */
export interface WaiterWatch {
  holderId: string;
  maxHolders: number;
}

/** A lock key's holds and queue as one read saw them. */
export interface QueueState {
  holders: Hold[];
  waiting: HolderInfo[];
}

/** What handOff did: whether a hold of `from` was removed, and `req`'s hold if it got one. */
export interface HandOff {
  released: boolean;
  hold?: Hold;
}

/** `from`'s hold goes and `req` asks for a slot: in one step where the backend can (LockBackend.handOff). */
export async function handOff(backend: LockBackend, from: string, req: AcquireRequest): Promise<HandOff> {
  if (backend.handOff) return backend.handOff(from, req);
  const released = await backend.release(req.key, from);
  return { released, hold: await backend.tryAcquire(req) };
}

/** The key's holds and queue: the backend's single read if it has one, else its two reads at once. */
export async function queueState(backend: LockBackend, key: string): Promise<QueueState> {
  if (backend.queueState) return backend.queueState(key);
  const [holders, waiting] = await Promise.all([backend.holders(key), backend.waiting(key)]);
  return { holders, waiting };
}
