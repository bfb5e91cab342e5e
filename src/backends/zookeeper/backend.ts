/**
 * The ZooKeeper backend, on the `zookeeper` package (the official C client as a native addon; the registry
 * imports this file lazily, so operators without a ZooKeeper backend never load the addon).
 *
 * Layout: lock `<namespace>/<key>` is the node `<rootPath>/<ns>/<k>`, each part URI-encoded into one segment
 * (keys never nest). Both are CONTAINER nodes, which the server reaps once empty, so per-item locks leave
 * nothing behind. A hold is an EPHEMERAL_SEQUENTIAL child `h-<holderId>-<seq>`; its data is JSON: HolderInfo,
 * maxHolders, leaseDurationSeconds, acquireTime, renewTime.
 *
 * Holds: a child is a hold when fewer than its own maxHolders children sort before it; the rest wait in sequence
 * order (Curator's InterProcessSemaphoreV2, the reference article's recipe). A child's rank only falls (new children
 * sort last), so a hold stays one and at most maxHolders are holds. tryAcquire re-attaches to the child carrying
 * the holderId (an earlier call, a create whose reply was lost, an operator restart, a waiter), else creates one
 * and lists in the same round trip (the listing's parent stat proves the new child's czxid on a fresh lock, or
 * when only this session changed the lock's children since it last listed them: see enter); a child ranked too
 * far back is kept when the request waits (its place; it is stamped with a fresh acquireTime when it first
 * holds) and deleted otherwise. The process remembers its children
 * (name, czxid), so a waiter woken for its turn lists in one round trip (its grant's acquireTime goes with the
 * first renewal), or in none when the one child ahead of it was seen deleted on its live session (sequence
 * numbers only grow, so nothing ranks before it again), and a hold it granted is released by one delete. Each
 * operator watches each lock once (`watch`: one children watch on the lock node, an exists watch while it is
 * missing, re-armed after each event, shared in-process; the re-arming listing decides whose turn it is), so a
 * release wakes one watch per operator, not every waiter: no herd. A waiter of a
 * one-holder lock also watches the child just before it, whose deletion wakes it a round trip sooner.
 *
 * Fencing token: the child's czxid, the zxid of the transaction that created it. Zxids increase across the
 * ensemble, leader elections and restarts included, so a grant that starts after another was made gets a
 * larger token; re-attach finds the same child, so the same token. (Zxids restart only if the ensemble's data
 * is wiped; the addon returns them as doubles, exact up to 2^53, i.e. 2^21 leader epochs.)
 *
 * Expiry: holds live exactly as long as the session that created them, and the ZooKeeper servers decide when
 * it has expired (their own time: no operator's clock is compared with anything). A hold therefore outlives
 * the operator by the session timeout (`sessionTimeoutMs` as the server granted it, within its min/max), so
 * that is the only lease this backend can honour: `leaseProblem` refuses a lock whose leaseDurationSeconds
 * differs (configure one backend per lease duration: same connect, another sessionTimeoutMs). A shorter lease
 * would let the hold linger; a longer one would promise holds across an outage the session does not survive.
 * The client pings by itself; renew checks the child exists and stamps renewTime (a versioned set). A child of
 * another session cannot be kept alive from here, so renewing it is BackendUnavailableError, never a confirmation.
 * When the session expires every hold of this process is gone: renew returns undefined (the claim is Lost) and a
 * new client makes a new session.
 *
 * Connection: while an established session is disconnected (not yet expired) every call throws
 * BackendUnavailableError at once, so nothing is decided on a stale view; a client that has not connected yet
 * (start-up, or after an expiry) is waited for up to `requestTimeoutMs`, which also bounds every request.
 * After a client's session ends, the next client first tries to resume it (the addon may have given up
 * locally), then starts a new one.
 *
 * Restarts: close() leaves the session to expire, as a crash would, so holds outlive the process by the
 * session timeout (the C client sends closeSession only over a live connection; close() first cuts the
 * connection, see LoopbackRelay). A later process keeps the holds only by resuming that session (its id and
 * password) before it expires; a new session cannot own the old one's children (moving a child to it would
 * mean a new child: a new token and the back of the queue), so they vanish with the old session, renew
 * returns undefined and the claims become Lost.
 *
 * Leader failover and rolling updates (`handover`, set with --leader-elect): every replica starts on a
 * session of its own (followers only read: probes). The leader keeps its session's id and password in a
 * Secret only the operator may read (SessionStore), and the replica that takes over resumes that session in
 * `lead()`, before it renews anything, so every hold lives on with its token. This holds while the failover
 * (leader lease + polling, about --leader-elect-lease-duration + 2.2 × retry period) is shorter than the
 * session timeout; the factory logs an error when it is not, and then a crashed leader's holds expire before
 * the next one arrives: their claims become Lost (never Granted without a hold). Two processes on one session
 * would take it from each other, so a replica that no longer leads neither reconnects it (the relay admits a
 * connection only while `leading()`) nor keeps it (`stepDown` cuts it at once).
 *
 * Without leader election, `sessionFile` keeps the session id and password in a file (mode 0600) and a
 * restarted operator resumes it. The path must be private to one process (an emptyDir survives container
 * restarts).
 *
 * Auth: `authFile` holds digest credentials `user:password`, added to every session, never logged. Every node this
 * backend creates (root, namespace, lock and hold nodes) is then restricted to that identity: all rights for its
 * digest id (`user:` + base64(sha1(`user:password`)), as ZooKeeper's DigestAuthenticationProvider computes it),
 * read for anyone (hold data is who holds what, no secret; tools may look). So a client without the credentials
 * can neither delete nor add holds (both need rights on the lock node) nor change a hold's data. The addon creates
 * nodes with the open ACL only, so the ACL is set right after each create: a hold's data is open for that one
 * round trip (its deletion never is). Operators of several clusters sharing the ensemble share the credentials;
 * an operator with other credentials gets BackendUnavailableError naming authFile.
 *
 * Rotation: a digest identity is user and password together, so nodes made under one password are changed under
 * another only after their ACL names the new id. The backend reads authFile again every AUTH_CHECK_MS and whenever
 * the server answers ZNOAUTH or ZAUTHFAILED; new valid contents (a rotated Secret, or a wrong file corrected) are
 * added to the live session (a connection may carry several ids; the C client presents every id added to it again
 * on each reconnect, and a new or resumed session is given every id this process has read), new nodes get the new
 * id's ACL, and every node under rootPath (and rootPath's ancestors) that this session may administer is re-ACLed
 * to the new id: holds keep their nodes and tokens throughout, and nodes of other identities are left alone. Once
 * that walk is done, an operator given only the new credentials can renew and release every hold. A walk cut short
 * (the connection lost) is done again. Every replica walks with the ids it has read; one started after the
 * rotation knows only the new id and relies on another's walk. Invalid contents are ignored with one warning
 * that names the file; the credentials in use stay. The connection is plain TCP: the addon has no TLS.
 */
import { createHash } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import ZooKeeper from "zookeeper";
import { requestsOf, type Requests } from "./requests";
import { BackendUnavailableError, type AcquireRequest, type Hold, type HolderInfo, type LockBackend, type QueueState, type WaiterWatch } from "../backend";
import type { Logger } from "../../log";
import { withDeadline } from "../kit/deadline";
import { FanOut } from "../kit/fan-out";
import { splitQueue } from "../kit/queue-state";
import { splitLockKey } from "../kit/lock-key";
import { SecretFile } from "../kit/secret-file";
import { ChildLedgers, type ListingStat } from "./ledger";
import { LoopbackRelay } from "./relay";
import { parseSession, type SessionStore, type ZooKeeperSession } from "./session";
import { DEFAULT_REQUEST_TIMEOUT_MS, DEFAULT_ROOT, DEFAULT_SESSION_TIMEOUT_MS, DIGEST_CREDENTIALS } from "./settings";

const Z = ZooKeeper.constants;
/** How long close() waits for the client to notice its connection was cut (see LoopbackRelay). */
const DETACH_TIMEOUT_MS = 2_000;
const CHILD = /^h-(.+)-(\d{10})$/;
/** At most this many lock nodes are remembered to exist. */
const LOCK_NODES_REMEMBERED = 100_000;
/** How often authFile is read again (besides at each ZNOAUTH or ZAUTHFAILED), ms. */
const AUTH_CHECK_MS = 5_000;
/** How many nodes a re-ACL walk changes at once. */
const WALK_BATCH = 32;
/** Return codes that mean the server could not be reached or asked in time. */
const UNAVAILABLE = new Set([Z.ZCONNECTIONLOSS, Z.ZSESSIONEXPIRED, Z.ZOPERATIONTIMEOUT, Z.ZCLOSING, Z.ZINVALIDSTATE, Z.ZSESSIONMOVED, Z.ZAUTHFAILED]);

/** The settings (see parseZooKeeperSettings); `auth` is authFile's contents, `clock` stamps acquire and renew times. */
export interface ZooKeeperBackendOptions {
  name: string;
  connect: string;
  sessionTimeoutMs?: number;
  rootPath?: string;
  auth?: string;
  sessionFile?: string;
  /** The Secret's name (in the handover namespace); default kubelock-zookeeper-sessions. */
  sessionSecret?: string;
  requestTimeoutMs?: number;
  clock?: () => number;
  /** Where `auth` came from: read again, so a rotated Secret is used without a restart (see "Rotation"). */
  authFile?: string;
  /** With leader election: where the leader's session is handed to the next leader (sessionFile is then unused). */
  handover?: SessionStore;
  /** Handover problems (a Secret that cannot be read or written) and authFile changes are logged here. */
  log?: Logger;
}

interface Child { name: string; holderId: string; seq: number }
/**
 * A lock node's children with its stat: cversion counts child creates and deletes, pzxid is the last one's zxid;
 * `lastChange` as ChildLedgers.listing returns it.
 */
interface Listing { children: Child[]; cversion: number; pzxid: number; lastChange?: number }
interface NodeData extends HolderInfo {
  maxHolders: number;
  leaseDurationSeconds: number;
  acquireTime: string;
  renewTime: string;
}
interface Node { czxid: number; version: number; ephemeralOwner: string; data?: NodeData }
/**
 * This process's child for one holder: its name, its node once read, whether it was returned as a hold, the child
 * just before it that a data watch is set on (a waiter of a one-holder lock), the one child known to be ranked
 * before it (`onlyAhead`), and the client whose session saw that one deleted (`firstOn`: this child is first).
 */
interface Mine { name: string; node?: Node; held?: boolean; watching?: string; onlyAhead?: string; firstOn?: ZooKeeper }
interface KeyWatch { path: string; armedOn?: ZooKeeper; generation: number }
type Done = (rc: number, error: unknown, ...result: unknown[]) => void;
type Session = ZooKeeperSession;
/** How often lead() tries to read the handed-over session before it gives up (a second apart). */
const HANDOVER_READ_ATTEMPTS = 3;

export class ZooKeeperBackend implements LockBackend {
  readonly name: string;
  readonly expiresOnServer = true;
  readonly fencingRecord = "revision";
  private readonly options: Required<Pick<ZooKeeperBackendOptions, "sessionTimeoutMs" | "rootPath" | "requestTimeoutMs" | "clock">> & ZooKeeperBackendOptions;
  private client!: ZooKeeper;
  private connected = false;
  /** The current client has been connected at least once: losing its connection means suspended. */
  private established = false;
  private resume?: Session;
  private failures = 0;
  private reopenTimer?: NodeJS.Timeout;
  private closed = false;
  private lastProblem = "";
  private readonly waiters = new Set<() => void>();
  /** This process's waiters by the path of the child each watches (see watchPredecessor). */
  private readonly behind = new Map<string, Mine>();
  /** When (options.clock) the last request the server answered was sent, on which client: its session lived then. */
  private heard?: { client: ZooKeeper; sentAt: number };
  /**
   * By lock node path: one children watch per watched lock, armed once `add` registered it (a closed watch's last
   * event is ignored). Waiters' turns are read from the children's names alone: they carry the order.
   */
  private readonly watches = new FanOut<KeyWatch>((path) => {
    const watch: KeyWatch = { path, generation: 0 };
    // The first listing tells the listeners too: they read the lock before they watched it, and a change in
    // between would otherwise go unseen.
    queueMicrotask(() => this.arm(watch, true));
    return watch;
  }, undefined, async (key) => (await this.children(this.lockPath(key))).map((c) => c.holderId));
  private readonly busy = new Map<string, Promise<unknown>>();
  /**
   * This process's children by `<lock>\n<holderId>`. A known child is listed without being read again (its
   * czxid never changes), and a child returned as a hold is released by one delete: a hold stays one until it is
   * deleted, and the listing that found it showed no other child of its holder. A stale entry costs only what it
   * would have spared.
   */
  private readonly mine = new Map<string, Mine>();
  /** Holders (as in `mine`) whose child this process saw waiting: their turn stamps a fresh acquireTime. */
  private readonly queued = new Set<string>();
  /** Lock nodes last seen to exist (a missing one is created along with the first hold asked for on it). */
  private readonly lockNodes = new Set<string>();
  /** This session's own child changes per lock, so that a listing can prove a new child's czxid (see enter). */
  private readonly ledgers = new ChildLedgers<Requests>(LOCK_NODES_REMEMBERED);
  /** The client connects through it, so close() can cut the connection first (see LoopbackRelay). */
  private readonly relay: Promise<LoopbackRelay>;
  /** Set by lead(): whether this replica still leads (a handed-over session is used only then). */
  private leading?: () => boolean;
  /** The session last written to the handover store. */
  private handedOver?: string;
  /** The session timeout the server granted the current session, ms. */
  private grantedTimeoutMs?: number;
  /** The digest credentials in use: new nodes get their ACL. */
  private auth?: string;
  /** Every credential read in this process, oldest first: each session is given them all. */
  private readonly identities: string[] = [];
  /** authFile, read again (see "Rotation"). */
  private readonly authFile?: SecretFile;
  private authTimer?: NodeJS.Timeout;
  /** The nodes still carry an earlier identity's ACL: a re-ACL walk is due. */
  private reaclDue = false;
  private walking = false;

  constructor(options: ZooKeeperBackendOptions) {
    this.name = options.name;
    const { sessionTimeoutMs = DEFAULT_SESSION_TIMEOUT_MS, rootPath = DEFAULT_ROOT, requestTimeoutMs = DEFAULT_REQUEST_TIMEOUT_MS, clock = Date.now } = options;
    this.options = { ...options, sessionTimeoutMs, rootPath, requestTimeoutMs, clock };
    if (options.auth) this.identities.push(this.auth = options.auth);
    if (options.auth && options.authFile) {
      this.authFile = new SecretFile(options.authFile, options.auth, {
        valid: (text) => DIGEST_CREDENTIALS.test(text),
        onInvalid: (file) => this.options.log?.error(
          "zookeeper.authFile does not hold digest credentials user:password; the credentials in use stay", { backend: this.name, file }),
      });
      this.authTimer = setInterval(() => this.checkCredentials(), AUTH_CHECK_MS).unref();
    }
    if (options.sessionFile && !options.handover) this.resume = readSession(options.sessionFile);
    this.relay = LoopbackRelay.start(options.connect);
    this.relay.then((relay) => (relay.admit = () => this.leading?.() ?? true), () => undefined); // reported by ready()
    void this.open();
  }

  /** The current session id (hex), once connected. */
  get sessionId(): string | undefined {
    return this.established ? String(this.client.client_id) : undefined;
  }

  async tryAcquire(req: AcquireRequest): Promise<Hold | undefined> {
    for (const field of ["maxHolders", "leaseDurationSeconds"] as const) {
      if (!Number.isInteger(req[field]) || req[field] < 1) throw new Error(`${field} must be an integer >= 1, got ${req[field]}`);
    }
    const lock = this.lockPath(req.key);
    const id = `${lock}\n${req.holderId}`;
    return this.serialized(lock, req.holderId, async () => {
      const granted = (mine: Mine, node: Node) => {
        mine.node = this.queued.delete(id) ? { ...node, data: holdData(req, this.now()) } : node; // stamped: see stamped()
        mine.held = true;
        return toHold(mine.node);
      };
      for (let attempt = 0; attempt < 3; attempt++) {
        let listed: Child[] | undefined;
        let mine = this.mine.get(id);
        // The only child ahead of ours is gone, seen on this live session: none can rank before ours again
        // (sequence numbers only grow), so ours holds without a listing: the handoff costs no round trip.
        if (mine?.node?.data && mine.firstOn === this.client && this.connected && this.heard?.client === this.client) {
          return { ...granted(mine, mine.node), confirmedAt: this.heard.sentAt };
        }
        if (!mine) {
          const entered = await this.enter(lock, req);
          ({ listed } = entered);
          this.mine.set(id, (mine = { name: entered.name, node: entered.node }));
        }
        const path = `${lock}/${mine.name}`;
        const [children, node] = await Promise.all([listed ?? this.children(lock), mine.node ?? this.read(path)]);
        const ours = children.filter((c) => c.holderId === req.holderId);
        if (ours.length > 1) {
          // A create retried after its reply was lost, or two operators at once: keep the first.
          for (const extra of ours.slice(1)) await this.remove(`${lock}/${extra.name}`);
          this.mine.delete(id);
          continue;
        }
        if (!node?.data || ours[0]?.name !== mine.name) {
          this.mine.delete(id); // gone meanwhile: look again
          continue;
        }
        mine.node = node;
        const rank = children.indexOf(ours[0]);
        if (rank < node.data.maxHolders) return granted(mine, node);
        if (!req.wait) await this.removeChildren(lock, req.holderId);
        else {
          this.queued.add(id);
          this.noteOnlyAhead(lock, children);
          if (node.data.maxHolders === 1) this.watchPredecessor(lock, req.holderId, mine, children[rank - 1]);
        }
        return undefined;
      }
      throw this.unavailable(`the holds of ${req.key} kept changing under tryAcquire`);
    });
  }

  async renew(key: string, holderId: string, leaseDurationSeconds: number): Promise<Hold | undefined> {
    const lock = this.lockPath(key);
    return this.serialized(lock, holderId, async () => {
      for (let attempt = 0; attempt < 5; attempt++) {
        const children = await this.children(lock);
        const mine = children.find((c) => c.holderId === holderId);
        const node = mine && (await this.read(`${lock}/${mine.name}`));
        if (!mine || !node?.data || children.indexOf(mine) >= node.data.maxHolders) return undefined;
        // Only the owning session keeps a node alive: a hold of another session (a leader's, seen from a follower;
        // a crashed operator's, not handed over) cannot be extended from here, so this is no confirmation.
        if (node.ephemeralOwner !== this.sessionId) throw this.unavailable(`the hold on ${key} belongs to another session, which this one cannot keep alive`);
        const data: NodeData = { ...this.stamped(lock, mine, node.data), leaseDurationSeconds, renewTime: this.now() };
        const { rc, result } = await this.call(`renew ${lock}/${mine.name}`, (zk, done) => zk.a_set(`${lock}/${mine.name}`, JSON.stringify(data), node.version, done), [Z.ZBADVERSION, Z.ZNONODE]);
        if (rc === Z.ZNONODE) return undefined;
        if (rc !== Z.ZOK) continue;
        const renewed = { ...node, version: (result[0] as { version: number }).version, data };
        const known = this.mine.get(`${lock}\n${holderId}`);
        if (known?.name === mine.name) known.node = renewed;
        return toHold(renewed);
      }
      throw this.unavailable(`too much contention renewing ${key}`);
    });
  }

  async release(key: string, holderId: string): Promise<boolean> {
    const lock = this.lockPath(key);
    return this.serialized(lock, holderId, () => this.removeChildren(lock, holderId));
  }

  /**
   * Deletes the lock node now (a container, which the server would reap later) when it has no children: the
   * server refuses to delete one with children (ZNOTEMPTY), so no hold or waiter of any cluster is touched.
   * Tokens are czxids, so a new lock node's holds still get larger ones.
   */
  async forget(key: string): Promise<boolean> {
    const lock = this.lockPath(key);
    const accept = [Z.ZNOTEMPTY, Z.ZNONODE];
    return (await this.call(`delete ${lock}`, (zk, done) => zk.a_delete_(lock, -1, done), accept)).rc === Z.ZOK;
  }

  async holders(key: string): Promise<Hold[]> {
    return (await this.queueState(key)).holders;
  }

  async waiting(key: string): Promise<HolderInfo[]> {
    return (await this.queueState(key)).waiting;
  }

  async queueState(key: string): Promise<QueueState> {
    return splitQueue(await this.ranked(key), ({ node }) => ({ ...toHold(node), ...(node.ephemeralOwner === this.sessionId && { ownSession: true }) }));
  }

  /** The lock's children with data, in sequence order, each with whether it holds. */
  private async ranked(key: string): Promise<{ node: Node; holds: boolean }[]> {
    const lock = this.lockPath(key);
    const children = await this.children(lock);
    const read = await Promise.all(children.map(async (c): Promise<Node | undefined> => {
      const node = await this.read(`${lock}/${c.name}`);
      return node?.data && { ...node, data: this.stamped(lock, c, node.data) };
    }));
    const nodes = read.filter((n): n is Node => n?.data !== undefined);
    return nodes.map((node, rank) => ({ node, holds: rank < node.data!.maxHolders }));
  }

  watch(key: string, onChange: () => void, waiter?: WaiterWatch): () => void {
    const path = this.lockPath(key);
    if (this.closed) return () => undefined;
    return this.watches.add(path, onChange, waiter && { ...waiter, key });
  }


  /** Refuses a lease other than the session timeout (see "Expiry" above). */
  leaseProblem(leaseDurationSeconds: number): string | undefined {
    const timeoutMs = this.grantedTimeoutMs ?? this.options.sessionTimeoutMs;
    if (leaseDurationSeconds * 1000 === timeoutMs) return undefined;
    const granted = this.grantedTimeoutMs !== undefined && this.grantedTimeoutMs !== this.options.sessionTimeoutMs
      ? ` (the server granted ${this.grantedTimeoutMs}ms of the ${this.options.sessionTimeoutMs}ms asked: see its min/maxSessionTimeout)` : "";
    const lease = timeoutMs % 1000 === 0 ? `set the lock's leaseDurationSeconds to ${timeoutMs / 1000}, or ` : "";
    return `backend ${this.name} (zookeeper) keeps a hold exactly as long as its session, ${timeoutMs}ms${granted}, `
      + `so it cannot honour leaseDurationSeconds ${leaseDurationSeconds}: ${lease}use a zookeeper backend with sessionTimeoutMs ${leaseDurationSeconds * 1000}`;
  }

  /**
   * This replica now leads: resume the session the last leader handed over (its holds with it) before anything
   * is renewed, then hand the session in use over in turn. Without a handed-over session (the first leader, or
   * a store that cannot be read: thrown after a few tries) the replica keeps its own.
   */
  async lead(leading: () => boolean): Promise<void> {
    const store = this.options.handover;
    if (!store || this.closed) return;
    this.leading = leading;
    let stored: Session | undefined;
    for (let attempt = 1; ; attempt++) {
      try {
        stored = await store.load();
        break;
      } catch (err) {
        if (attempt >= HANDOVER_READ_ATTEMPTS) throw err;
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
    if (stored && stored.id !== this.resume?.id) {
      // Our own session was only read through (followers hold nothing): end it and resume the leader's.
      const own = this.client;
      this.resume = stored;
      clearTimeout(this.reopenTimer);
      await this.open();
      own?.close();
      await this.ready().catch(() => undefined); // connected, or it is still trying: renewals will say so
    }
    await this.handOver();
  }

  /** Leadership is lost: drop the connection now and admit no other (the next leader resumes the session). */
  stepDown(): void {
    if (!this.options.handover) return;
    this.leading = () => false;
    void this.relay.then((relay) => relay.cut(), () => undefined);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.reopenTimer);
    clearInterval(this.authTimer);
    this.watches.clear();
    for (const wake of this.waiters) wake();
    const relay = await this.relay;
    const client = this.client;
    const dropped = new Promise<void>((done) => {
      if (client?.state !== Z.ZOO_CONNECTED_STATE) return done();
      const timer = setTimeout(done, DETACH_TIMEOUT_MS);
      client.once("connecting", () => (clearTimeout(timer), done()));
    });
    relay.cut();
    await dropped;
    client?.close();
  }

  // --- connection ---

  private async open(): Promise<void> {
    const { sessionTimeoutMs, sessionFile } = this.options;
    const { connect } = await this.relay;
    if (this.closed) return;
    this.checkCredentials(); // a replica taking over, or a client after an expiry or ZAUTHFAILED, reads the file anew
    const resume = this.resume;
    const client = new ZooKeeper({
      connect, timeout: sessionTimeoutMs, debug_level: 0, host_order_deterministic: false,
      ...(resume ? { client_id: resume.id, client_password: resume.password } : {}),
    });
    this.client = client;
    this.behind.clear(); // the old client's watches are gone with it
    this.connected = false;
    this.established = false;
    client.on("connect", () => {
      if (this.client !== client || this.closed) return;
      const first = !this.established;
      this.connected = this.established = true;
      this.failures = 0;
      this.lastProblem = "";
      if (first) {
        this.resume = { id: String(client.client_id), password: client.client_password };
        this.grantedTimeoutMs = typeof client.timeout === "number" && client.timeout > 0 ? client.timeout : undefined;
        if (sessionFile && !this.options.handover) writeSession(sessionFile, this.resume);
        if (this.leading) void this.handOver();
      }
      for (const wake of this.waiters) wake();
      if (this.reaclDue) void this.reacl();
      for (const [path, watch] of this.watches.watched()) {
        if (watch.armedOn !== client) this.arm(watch);
        this.watches.notify(path); // events may have been missed while disconnected
      }
    });
    client.on("connecting", () => {
      if (this.client === client) this.connected = false;
    });
    client.on("close", (_client: unknown, code: number) => {
      if (this.client !== client || this.closed) return;
      this.connected = false;
      this.lastProblem = code === Z.ZOO_AUTH_FAILED_STATE ? "authentication failed" : "the session expired";
      // A client that never connected could not resume the session: it is gone, start a new one.
      if (!this.established) {
        this.resume = undefined;
        if (sessionFile) rmSync(sessionFile, { force: true });
      }
      const delay = this.failures === 0 ? 0 : Math.min(100 * 2 ** this.failures, 5000);
      this.failures++;
      this.reopenTimer = setTimeout(() => void this.open(), delay);
    });
    client.init({});
    // Sent on every (re)connect; a failure closes the client.
    for (const auth of this.identities) client.add_auth("digest", auth, () => undefined);
  }

  /** Writes the session in use to the handover store (once per session), for the next leader. */
  private async handOver(): Promise<void> {
    const session = this.resume;
    const store = this.options.handover;
    if (!store || !session || !this.leading?.() || this.handedOver === session.id) return;
    try {
      await store.save(session);
      this.handedOver = session.id;
      this.options.log?.info("zookeeper session handed over for the next leader", { backend: this.name, where: store.where, session: session.id });
    } catch (err) {
      // Not fatal here; the next leader then starts a session of its own and this one's holds become Lost.
      this.options.log?.error("cannot hand the zookeeper session over; holds will not survive a leader change", {
        backend: this.name, error: err instanceof Error ? err.message : String(err),
      });
    }
  }

  /** The connected client; waits only for a client that has not connected yet. */
  private async ready(): Promise<ZooKeeper> {
    if (this.closed) throw this.unavailable("the backend is closed");
    if (!this.connected && !this.established) {
      await new Promise<void>((resolve) => {
        const wake = () => (clearTimeout(timer), this.waiters.delete(wake), resolve());
        const timer = setTimeout(wake, this.options.requestTimeoutMs);
        this.waiters.add(wake);
      });
    }
    if (this.closed) throw this.unavailable("the backend is closed");
    if (this.connected) return this.client;
    const why = this.established ? "connection lost; waiting for the session to reconnect" : `not connected within ${this.options.requestTimeoutMs}ms`;
    throw this.unavailable(`${why}${this.lastProblem ? ` (last problem: ${this.lastProblem})` : ""}`);
  }

  /** One request; resolves with its rc (ZOK or one of `accept`) and results. */
  private async call(what: string, invoke: (zk: Requests, done: Done) => unknown, accept: number[] = []): Promise<{ rc: number; result: unknown[] }> {
    const zk = await this.ready();
    const sentAt = this.options.clock();
    const answer = new Promise<{ rc: number; result: unknown[] }>((resolve, reject) => {
      const settle = (rc: number, result: unknown[]) => {
        if (rc === Z.ZOK || accept.includes(rc)) return resolve({ rc, result });
        if (rc === Z.ZNOAUTH || rc === Z.ZAUTHFAILED) this.checkCredentials(); // a changed file: used from the next call
        if (UNAVAILABLE.has(rc)) reject(this.unavailable(`${what}: ${codeName(rc)}`));
        else if (rc === Z.ZNOAUTH) reject(this.unavailable(`${what}: ${codeName(rc)}: the nodes under ${this.options.rootPath} belong to another identity; `
          + `${this.auth ? "zookeeper.authFile must hold" : "set zookeeper.authFile to"} the digest credentials (user:password) they were created with`));
        else reject(new Error(`zookeeper backend ${this.name}: ${what}: ${codeName(rc)}`));
      };
      const rc = invoke(requestsOf(zk), (code: number, _error: unknown, ...result: unknown[]) => {
        const answered = !UNAVAILABLE.has(code) && (this.heard?.client !== zk || this.heard.sentAt < sentAt);
        if (answered) this.heard = { client: zk, sentAt }; // the server answered: the session lived when it was sent
        settle(code, result);
      });
      if (typeof rc === "number" && rc !== Z.ZOK) settle(rc, []); // refused at once: no callback follows
    });
    const { requestTimeoutMs } = this.options;
    return withDeadline(answer, requestTimeoutMs, () => this.unavailable(`${what}: no answer within ${requestTimeoutMs}ms`));
  }

  private unavailable(message: string): BackendUnavailableError {
    return new BackendUnavailableError(this.name, `zookeeper ${this.options.connect}: ${message}`);
  }

  // --- nodes ---

  /** The hold children of a lock node in sequence order; [] when the node does not exist. */
  private async children(lock: string): Promise<Child[]> {
    return (await this.list(lock)).children;
  }

  /** The lock node's children and stat; no children (and a zero stat) when the node does not exist. */
  private async list(lock: string): Promise<Listing> {
    let lastChange: number | undefined;
    const { rc, result } = await this.call(`list ${lock}`, (zk, done) => {
      const answered = this.ledgers.listing(zk, lock);
      return zk.a_get_children2(lock, false, (code: number, error: unknown, ...result: unknown[]) => {
        lastChange = answered(code === Z.ZOK ? (result[1] as ListingStat) : undefined);
        done(code, error, ...result);
      });
    }, [Z.ZNONODE]);
    if (rc === Z.ZNONODE) {
      this.lockNodes.delete(lock);
      return { children: [], cversion: 0, pzxid: 0 };
    }
    if (this.lockNodes.size >= LOCK_NODES_REMEMBERED) this.lockNodes.clear(); // forgetting costs one create each
    this.lockNodes.add(lock);
    const { cversion, pzxid } = result[1] as ListingStat;
    return { children: parseChildren(result[0] as string[]), cversion, pzxid, lastChange };
  }

  private async read(path: string): Promise<Node | undefined> {
    const { rc, result } = await this.call(`read ${path}`, (zk, done) => zk.a_get(path, false, done), [Z.ZNONODE]);
    if (rc === Z.ZNONODE) return undefined;
    const stat = result[0] as { czxid: number; version: number; ephemeralOwner: string };
    return { czxid: stat.czxid, version: stat.version, ephemeralOwner: String(stat.ephemeralOwner), data: parseData(result[1]) };
  }

  /** Deletes a child of a lock node; true when it existed. */
  private async remove(path: string): Promise<boolean> {
    const lock = path.slice(0, path.lastIndexOf("/"));
    const invoke = (zk: Requests, done: Done) => zk.a_delete_(path, -1, this.noted(zk, lock, -1, done).done);
    return (await this.call(`delete ${path}`, invoke, [Z.ZNONODE])).rc === Z.ZOK;
  }

  /**
   * A create (`effect` +1) or delete (-1) of a child of `lock` is being sent on `zk`: the ledger learns what it did
   * from the reply `done` is wrapped for (ZNONODE: nothing; any other failure: unknown). Returns the change's index.
   */
  private noted(zk: Requests, lock: string, effect: number, done: Done): { index: number; done: Done } {
    const { index, settle } = this.ledgers.changing(zk, lock);
    return {
      index,
      done: (rc, error, ...result) => {
        settle(rc === Z.ZOK ? effect : rc === Z.ZNONODE ? 0 : Number.NaN);
        done(rc, error, ...result);
      },
    };
  }

  /**
   * Enters `req`'s child in the lock's queue in one round trip: the lock node (unless known to exist), the child,
   * then the listing, sent in that order on one session and so served in it, so the listing shows the new child
   * and everything ranked before it. An earlier child of this holder (an operator restarted, a reply lost) keeps
   * its place and the new one is deleted. `listed` is undefined when the listing cannot rank the child (the
   * create had to be sent again, after the lock node was made): the caller lists.
   *
   * `node` spares the read of the new child's czxid when the listing proves that this create was the last child
   * change before it, so that its pzxid (the zxid of the last child change) is that czxid. Either proof does:
   * - the listing's cversion (the number of child creates and deletes) is seq + 1: a sequential child is numbered
   *   by the creates before it, so no child was ever deleted and none created after ours (a fresh lock);
   * - the ledger (ChildLedgers): every child change since this session's previous listing of the lock was this
   *   session's own, and this create the last of them (a lock only this operator's session changes).
   */
  private async enter(lock: string, req: AcquireRequest): Promise<{ name: string; listed?: Child[]; node?: Node }> {
    const [lockNode, creating, listing] = await Promise.allSettled([
      this.lockNodes.has(lock) ? undefined : this.createNode(lock), this.createHold(lock, req), this.list(lock),
    ]);
    const failed = [lockNode, creating, listing].find((r) => r.status === "rejected");
    if (failed || listing.status !== "fulfilled" || creating.status !== "fulfilled") {
      // The create may have gone on (its own retries) after another part failed: its child is not left behind.
      if (creating.status === "fulfilled") await this.remove(`${lock}/${creating.value.child.name}`).catch(() => undefined);
      throw (failed as PromiseRejectedResult).reason;
    }
    const [{ child: created, data, change }, { children: listed, cversion, pzxid, lastChange }] = [creating.value, listing.value];
    this.lockNodes.add(lock);
    const earlier = listed.find((c) => c.holderId === req.holderId && c.seq < created.seq);
    if (earlier) await this.remove(`${lock}/${created.name}`);
    const ranked = listed.some((c) => c.name === created.name);
    const kept = earlier ? listed.filter((c) => c.name !== created.name) : listed;
    const last = cversion === created.seq + 1 || lastChange === change;
    const proven = ranked && !earlier && last && this.sessionId !== undefined;
    const node = proven ? { czxid: pzxid, version: 0, ephemeralOwner: this.sessionId!, data } : undefined;
    return { name: (earlier ?? created).name, listed: ranked ? kept : undefined, node };
  }

  /**
   * Deletes the holder's children; true when one of them held. A child this process returned as a hold is deleted
   * alone (it held until deleted). Another child this process knows is deleted in one round
   * trip: its listing, read and delete go together (a session's requests are served in order, so the listing and
   * the read see the node the delete removes, and its rank there says whether it held). Children it did not know
   * of (after a restart, a lost reply) are found by listing.
   */
  private async removeChildren(lock: string, holderId: string): Promise<boolean> {
    const id = `${lock}\n${holderId}`;
    const mine = this.mine.get(id);
    this.mine.delete(id);
    this.queued.delete(id);
    if (mine?.held) {
      // A hold of a one-holder lock is its first child: the child just behind it has only it ahead.
      const next = this.behind.get(`${lock}/${mine.name}`);
      if (next && mine.node?.data?.maxHolders === 1) next.onlyAhead = mine.name;
      return this.remove(`${lock}/${mine.name}`);
    }
    const name = mine?.name;
    const removeOne = async (child: string, children?: Child[]) => {
      const path = `${lock}/${child}`;
      const [listed, node, gone] = await Promise.all([children ?? this.children(lock), this.read(path), this.remove(path)]);
      const rank = listed.findIndex((c) => c.name === child);
      return { listed, held: gone && node?.data !== undefined && rank >= 0 && rank < node.data.maxHolders };
    };
    let removed = false;
    let listed: Child[] | undefined;
    if (name) ({ listed, held: removed } = await removeOne(name));
    for (const child of (listed ?? (await this.children(lock))).filter((c) => c.holderId === holderId && c.name !== name)) {
      removed = (await removeOne(child.name)).held || removed;
    }
    return removed;
  }

  private async createHold(lock: string, req: AcquireRequest): Promise<{ child: Child; data: NodeData; change: number }> {
    const data = holdData(req, this.now());
    const prefix = `${lock}/h-${encodeSegment(req.holderId)}-`;
    // The lock node may be missing, or reaped between creating it and its first child: a few attempts.
    for (let attempt = 0; attempt < 4; attempt++) {
      let change = 0;
      const { rc, result } = await this.call(`create ${prefix}`, (zk, done) => {
        const noted = this.noted(zk, lock, +1, done);
        change = noted.index;
        return zk.a_create(prefix, JSON.stringify(data), Z.ZOO_EPHEMERAL_SEQUENTIAL, noted.done);
      }, [Z.ZNONODE]);
      if (rc === Z.ZOK) {
        const path = result[0] as string;
        if (this.auth) await this.protect(path);
        const name = path.slice(lock.length + 1);
        return { child: { name, holderId: req.holderId, seq: Number(name.slice(-10)) }, data, change };
      }
      await this.createNode(lock);
    }
    throw this.unavailable(`could not create the lock node ${lock}`);
  }

  /**
   * Creates `path` and missing ancestors: rootPath and above persistent, namespace and lock nodes containers.
   * With digest credentials (authFile), each node created here is then restricted to that identity (read for
   * anyone): deleting a node needs DELETE on its parent, so clients without the credentials can neither
   * delete nor add holds under it. (The addon creates with the open ACL only; the ACL follows at once.)
   */
  private async createNode(path: string): Promise<void> {
    const flags = path.split("/").length > this.options.rootPath.split("/").length ? Z.ZOO_CONTAINER : Z.ZOO_PERSISTENT;
    const { rc } = await this.call(`create ${path}`, (zk, done) => zk.a_create(path, "", flags, done), [Z.ZNODEEXISTS, Z.ZNONODE]);
    if (rc === Z.ZOK && this.auth) await this.protect(path);
    if (rc !== Z.ZNONODE) return;
    await this.createNode(path.slice(0, path.lastIndexOf("/")));
    await this.createNode(path);
  }

  // --- credentials ---

  /**
   * Restricts a node to the credentials in use when the request is sent (read for anyone); a node gone meanwhile
   * is fine.
   */
  private async protect(path: string, accept: number[] = []): Promise<number> {
    const invoke = (zk: Requests, done: Done) => zk.a_set_acl(path, -1, operatorOnly(this.auth!), done);
    return (await this.call(`protect ${path}`, invoke, [Z.ZNONODE, ...accept])).rc;
  }

  /**
   * Reads authFile again; new valid credentials are added to the live session, used for new nodes, and the nodes
   * re-ACLed to them (see "Rotation"). Cheap when nothing changed: one small file read.
   */
  private checkCredentials(): void {
    if (this.closed) return;
    const auth = this.authFile?.reload();
    if (auth !== undefined) {
      this.auth = auth;
      if (!this.identities.includes(auth)) this.identities.push(auth);
      // Also sent on each reconnect; a client not connected yet sends it on connect (one that ended refuses it: open() adds it).
      this.client?.add_auth("digest", auth, () => undefined);
      this.reaclDue = true;
      this.options.log?.info("zookeeper.authFile changed: new credentials added to the session; re-ACLing the nodes",
        { backend: this.name, file: this.authFile!.path });
    }
    if (this.reaclDue) void this.reacl();
  }

  /**
   * The re-ACL walk: rootPath's ancestors, then rootPath and every node below it, level by level, set to the
   * credentials in use. Nodes this session may not administer (ZNOAUTH: another identity's) are left alone, as are
   * nodes gone meanwhile. Requests on one session are served in order, so a node protected under the old credentials
   * before the change is listed, and re-ACLed, after it. Done again when the credentials changed meanwhile; a failed
   * walk (the connection lost) is done again at the next connect or check.
   */
  private async reacl(): Promise<void> {
    if (this.walking || !this.connected || this.closed) return;
    this.walking = true;
    const auth = this.auth;
    let changed = 0;
    let foreign = 0;
    const visit = async (path: string, descend: boolean): Promise<string[]> => {
      if ((await this.protect(path, [Z.ZNOAUTH])) === Z.ZOK) changed++;
      else foreign++; // ZNOAUTH or gone: counted, not distinguished
      if (!descend) return [];
      const { rc, result } = await this.call(`list ${path}`, (zk, done) => zk.a_get_children(path, false, done), [Z.ZNONODE]);
      return rc === Z.ZOK ? (result[0] as string[]).map((name) => `${path}/${name}`) : [];
    };
    try {
      const root = this.options.rootPath;
      for (let end = root.indexOf("/", 1); end > 0; end = root.indexOf("/", end + 1)) await visit(root.slice(0, end), false);
      for (let level = [root]; level.length > 0;) {
        const next: string[] = [];
        for (let i = 0; i < level.length; i += WALK_BATCH) {
          const batch = await Promise.all(level.slice(i, i + WALK_BATCH).map((path) => visit(path, true)));
          for (const children of batch) next.push(...children);
        }
        level = next;
      }
      if (this.auth === auth) this.reaclDue = false;
      this.options.log?.info("zookeeper nodes re-ACLed to the credentials in zookeeper.authFile",
        { backend: this.name, nodes: changed, leftAlone: foreign });
    } catch (err) {
      this.options.log?.error("zookeeper re-ACL walk failed; it is tried again",
        { backend: this.name, error: err instanceof Error ? err.message : String(err) });
    } finally {
      this.walking = false;
    }
    if (this.reaclDue && this.auth !== auth) void this.reacl();
  }

  /**
   * `data` as read, with the grant's acquireTime this process gave `child` when it became a hold after waiting.
   * That stamp is not written on its own: a write would delay this session's next request, the holder's release
   * among them, by a commit. It goes to the server with the hold's first renewal; until then readers elsewhere see
   * the time the child joined the queue.
   */
  private stamped(lock: string, child: { name: string; holderId: string }, data: NodeData): NodeData {
    const mine = this.mine.get(`${lock}\n${child.holderId}`);
    return mine?.held && mine.name === child.name && mine.node?.data ? { ...data, acquireTime: mine.node.data.acquireTime } : data;
  }

  // --- watches ---

  /**
   * One children watch on the lock node (an exists watch while it is missing), re-armed after each event.
   * Only the latest arming's callbacks count, so stray registrations never multiply. After an event (`changed`)
   * the listing that re-arms the watch is the one read for the waiters' turns (FanOut.notifyInOrder); a listing
   * that fails, or a lock node gone, calls every waiter.
   */
  private arm(watch: KeyWatch, changed = false): void {
    if (!this.watches.isCurrent(watch.path, watch) || !this.connected) return; // armed on the next connect
    const zk = this.client;
    const generation = ++watch.generation;
    watch.armedOn = zk;
    const current = () => this.watches.isCurrent(watch.path, watch) && this.client === zk && watch.generation === generation && !this.closed;
    const fired = (type: number) => {
      if (type === Z.ZOO_SESSION_EVENT || !current()) return; // session events: the connect handler notifies
      this.arm(watch, true);
    };
    const listed = (order?: string[]) => changed && this.watches.notifyInOrder(watch.path, order);
    const failed = (rc: number) => {
      if (rc !== Z.ZOK && rc !== Z.ZNONODE && current()) watch.armedOn = undefined; // re-armed on the next connect
    };
    const refused = requestsOf(zk).aw_get_children(watch.path, fired, (rc: number, _error: unknown, names?: string[]) => {
      if (!current()) return;
      if (rc === Z.ZOK) {
        const children = parseChildren(names ?? []);
        this.noteOnlyAhead(watch.path, children);
        return listed(children.map((c) => c.holderId));
      }
      listed();
      if (rc !== Z.ZNONODE) return failed(rc);
      // Created between the two calls: an exists watch sees no children changes, so list again.
      failed(requestsOf(zk).aw_exists(watch.path, fired, (existsRc: number) => (existsRc === Z.ZOK && current() ? fired(Z.ZOO_CHILD_EVENT) : failed(existsRc))));
    });
    if (refused !== Z.ZOK) listed();
    failed(refused); // refused at once (no callback follows)
  }

  /**
   * A waiter of a one-holder lock also watches the child just before it (Curator's recipe): its deletion wakes
   * this waiter at once, a round trip before the children watch's listing would. Only a deletion wakes (a stamp
   * or renewal of that child re-arms); the children watch still wakes every waiter, so a watch lost here (a
   * reconnect, a failed call) costs only that round trip. When that child was the only one ahead (a listing showed
   * it first, see noteOnlyAhead, or it was this process's hold of a one-holder lock, released here), its deletion
   * makes this child first, and tryAcquire skips the listing.
   */
  private watchPredecessor(lock: string, holderId: string, mine: Mine, before: Child): void {
    if (mine.watching === before.name || !this.connected) return;
    mine.watching = before.name;
    const zk = this.client;
    const id = `${lock}\n${holderId}`;
    const path = `${lock}/${before.name}`;
    this.behind.set(path, mine);
    const current = () => this.mine.get(id) === mine && mine.watching === before.name && this.client === zk && !this.closed;
    const fired = (type: number) => {
      if (this.behind.get(path) === mine) this.behind.delete(path);
      if (!current()) return;
      mine.watching = undefined;
      if (type === Z.ZOO_DELETED_EVENT) {
        if (mine.onlyAhead === before.name) mine.firstOn = zk;
        this.watches.wake(lock, holderId);
      } else if (type !== Z.ZOO_SESSION_EVENT) this.watchPredecessor(lock, holderId, mine, before);
    };
    // A data watch, not an exists watch: on a child already gone, an exists watch would stay on the server,
    // waiting for a creation that never comes (sequential names are not reused); a get sets none.
    const rc = requestsOf(zk).aw_get(`${lock}/${before.name}`, fired, (getRc: number) => {
      if (getRc !== Z.ZOK && current()) fired(getRc === Z.ZNONODE ? Z.ZOO_DELETED_EVENT : Z.ZOO_SESSION_EVENT);
    });
    if (rc !== Z.ZOK && current()) {
      mine.watching = undefined;
      this.behind.delete(path);
    }
  }

  /**
   * From a listing of `lock` (any, however old: the children ahead of one only ever go): the second child, if this
   * process's, has only the first ahead of it.
   */
  private noteOnlyAhead(lock: string, children: Child[]): void {
    const [first, second] = children;
    const mine = second && this.mine.get(`${lock}\n${second.holderId}`);
    if (mine && mine.name === second.name) mine.onlyAhead = first.name;
  }

  // --- helpers ---

  private lockPath(key: string): string {
    const lock = splitLockKey(key);
    return `${this.options.rootPath}/${encodeSegment(lock.namespace)}/${encodeSegment(lock.key)}`;
  }

  private now(): string {
    return new Date(this.options.clock()).toISOString();
  }

  /** Runs calls for one holder of one lock one at a time, so this process never creates two of its children. */
  private serialized<T>(lock: string, holderId: string, run: () => Promise<T>): Promise<T> {
    const id = `${lock}\n${holderId}`;
    const result = (this.busy.get(id) ?? Promise.resolve()).then(run);
    const tail = result.then(() => undefined, () => undefined);
    this.busy.set(id, tail);
    void tail.then(() => this.busy.get(id) === tail && this.busy.delete(id));
    return result;
  }
}

/** All rights for the digest id of `auth` (`user:password`), read for anyone. */
function operatorOnly(auth: string): { perms: number; scheme: string; auth: string }[] {
  const id = `${auth.slice(0, auth.indexOf(":"))}:${createHash("sha1").update(auth).digest("base64")}`;
  return [{ perms: Z.ZOO_PERM_ALL, scheme: "digest", auth: id }, { perms: Z.ZOO_PERM_READ, scheme: "world", auth: "anyone" }];
}

/** A child's data as its holder asks for it, acquired and renewed at `now`. */
function holdData(req: AcquireRequest, now: string): NodeData {
  const { holderId, claim, holderIdentity, cluster = "", maxHolders, leaseDurationSeconds } = req;
  return { holderId, claim, holderIdentity, cluster, maxHolders, leaseDurationSeconds, acquireTime: now, renewTime: now };
}

function toHold(node: Node): Hold {
  const { holderId, claim, holderIdentity, cluster, acquireTime, renewTime } = node.data!;
  return { holderId, claim, holderIdentity, cluster, fencingToken: String(node.czxid), acquireTime, renewTime };
}

/** The hold children among a lock node's child names, in sequence order (other names are not ours). */
function parseChildren(names: string[]): Child[] {
  const parsed = names.map((name) => ({ name, m: CHILD.exec(name) }));
  return parsed.flatMap(({ name, m }) => (m && decode(m[1]) !== undefined ? [{ name, holderId: decode(m[1])!, seq: Number(m[2]) }] : [])).sort((a, b) => a.seq - b.seq);
}

function parseData(raw: unknown): NodeData | undefined {
  try {
    const data = JSON.parse(String(raw)) as NodeData;
    return typeof data.holderId === "string" && Number.isInteger(data.maxHolders) ? data : undefined;
  } catch {
    return undefined;
  }
}

function decode(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined; // not one of ours
  }
}

/** One path segment: URI-encoded, dots too, so no key is `.`, `..` or a path of its own. */
function encodeSegment(s: string): string {
  return encodeURIComponent(s).replace(/\./g, "%2E");
}

function codeName(rc: number): string {
  const name = Object.entries(Z).find(([k, v]) => v === rc && /^Z[A-Z]+$/.test(k))?.[0];
  return name ? `${name} (${rc})` : `error ${rc}`;
}

/** The saved session; undefined (a new session) when missing or unreadable. */
function readSession(file: string): Session | undefined {
  try {
    return parseSession(readFileSync(file, "utf8"));
  } catch {
    return undefined;
  }
}

function writeSession(file: string, session: Session): void {
  try {
    writeFileSync(file, JSON.stringify(session), { mode: 0o600 });
  } catch {
    // the holds then do not survive a restart; start-up checked the directory exists
  }
}
