/**
 * The Redis backend (ioredis): standalone, Sentinel or Cluster, plain or TLS.
 *
 * Keys per lock (`K` = `<namespace>/<key>` as the operator passes it; the `{K}` hash tag puts all of a
 * lock's keys in one Cluster slot, so one script can touch them all):
 *
 * - `<prefix>:{K}:holds`   ZSET holderId -> expiry (ms, Redis server time)
 * - `<prefix>:{K}:queue`   ZSET holderId -> when it joined (µs, server time): the waiters, in order
 * - `<prefix>:{K}:queue-expiry` ZSET holderId -> when its queue entry expires (ms, server time)
 * - `<prefix>:{K}:info`    HASH holderId -> JSON {holderId, claim, holderIdentity, cluster, fencingToken,
 *                          acquireTime, renewTime} (times in ms as decimal strings) for a hold, or
 *                          {holderId, claim, holderIdentity, cluster, expires, maxHolders, floor} for a waiter
 * - `<prefix>:{K}:fencing` the fencing counter. Never expires, so tokens keep increasing after a lock went
 *                          idle. A missing counter (first use, or lost: evicted, Redis restarted empty or
 *                          failed over to a replica that missed it) starts from the server's clock in
 *                          microseconds, and the caller's high-water mark raises it further, so tokens never
 *                          repeat or go back even then (unless the server's clock went back meanwhile).
 *                          `forget` (the lock was deleted) deletes it with the other keys, unless it is ahead
 *                          of that clock.
 *
 * A waiter takes a slot when fewer than maxHolders holds and earlier waiters exist; its entry expires a lease after
 * its last tryAcquire. A release hands its slot straight to the queue's head, and its event carries the new hold, so
 * the waiter's process takes it without asking again (handed-holds.ts says for how long that is safe). Holds, queue,
 * expiries and info carry a PEXPIRE of the longest remaining lease, so idle locks vanish. Every change is one Lua
 * script (atomic, times from `TIME` so all operators agree on expiry) that first purges expired holds, and that
 * PUBLISHes to `<prefix>:events:{K}` when the holds changed (naming the waiters whose turn it is, so their watches
 * wake them without a read); `watch` subscribes there, and polls as a fallback for holds that vanished by key expiry
 * with nobody running a script.
 *
 * Nothing is queued or replayed: commands fail at once while disconnected (`enableOfflineQueue: false`,
 * no resend after reconnect) and time out after `commandTimeoutMs`, both as BackendUnavailableError;
 * ioredis reconnects by itself with capped, jittered backoff. Replication is asynchronous: a failover can
 * lose the latest writes (a grant, a counter increment), as with any single-Redis lock; the caller's
 * fencing floor keeps tokens from repeating then. With `waitReplicas`, a grant is returned only once that
 * many replicas acknowledged it (`WAIT` after the script): a failover to one of them keeps it.
 *
 * Through Sentinel, each connection listens for the sentinels' `+switch-master` and reconnects to the new
 * master at once; a connection that meets READONLY (its server was turned into a replica) reconnects too.
 * A server that refuses the password (WRONGPASS, NOAUTH) makes the backend read `passwordFile` again, so a
 * rotated Secret is used from the next reconnect on. Likewise every failed connection makes it read the `tls`
 * files again (kit/tls-files.ts): a server that no longer accepts the client certificate, or whose certificate the
 * old CA no longer verifies, fails the connection; new usable contents are used from the next reconnect on, by
 * every connection (commands, subscriber, sentinels, cluster nodes). Holds live in Redis, not in a connection,
 * so they are kept with their fencing tokens.
 */
import type { ConnectionOptions } from "node:tls";
import Redis, { Cluster, type RedisOptions } from "ioredis";
import { BackendUnavailableError, type AcquireRequest, type Hold, type HolderInfo, type LockBackend, type QueueState, type WaiterWatch } from "../backend";

/** Fallback poll of each watched key: catches holds that vanished by key expiry. */
const WATCH_POLL_MS = 2000;
/** An ended connection is opened again after this long. */
const REOPEN_MS = 500;
/**
 * Redis Cluster: how often the watched channels are subscribed again. ioredis sends a cluster's SUBSCRIBE through
 * one node's connection of its own, and after the whole cluster was away it may come back without the channels
 * (a SUBSCRIBE refused with "No subscriber for the cluster" while none was chosen, or restored from a connection
 * that never got them): subscribing again is harmless, and bounds how long a watch stays deaf.
 */
const CLUSTER_RESUBSCRIBE_MS = 5000;
/** How often a call answered NOSCRIPT is sent in all (see run()); after that it is BackendUnavailable. */
const NOSCRIPT_ATTEMPTS = 5;

import { withDeadline } from "../kit/deadline";
import { FanOut, orderOf } from "../kit/fan-out";
import { holderInfo } from "../kit/queue-state";
import { HoldersPoll } from "../kit/holders-poll";
import { splitLockKey } from "../kit/lock-key";
import { SecretFile } from "../kit/secret-file";
import { TlsFiles, type TlsMaterial, type TlsPaths } from "../kit/tls-files";
import { HandedHolds } from "./handed-holds";
import { ACQUIRE, FORGET, RELEASE, RENEW, STATE } from "./scripts";

/** The scripts as commands: the keys (holds, info, queue[, counter]), then the script's ARGV. */
interface Scripts {
  kubelockAcquire(holds: string, info: string, queue: string, expiries: string, counter: string, ...args: (string | number)[]): Promise<string | null>;
  kubelockRenew(holds: string, info: string, queue: string, expiries: string, ...args: (string | number)[]): Promise<string | null>;
  kubelockRelease(holds: string, info: string, queue: string, expiries: string, counter: string, ...args: (string | number)[]): Promise<number>;
  kubelockState(holds: string, info: string, queue: string, expiries: string, channel: string): Promise<[string[], string[]]>;
  kubelockForget(holds: string, info: string, queue: string, expiries: string, counter: string, channel: string): Promise<number>;
}

/** The validated `redis:` settings block. */
export interface RedisSettings {
  /** Username, password, database and (rediss) TLS come from it; its host is the Cluster seed, unused with Sentinel. */
  url: string;
  keyPrefix: string;
  commandTimeoutMs: number;
  connectTimeoutMs: number;
  /** Read from `passwordFile` (wins over a password in the url); never logged or put in a message. */
  password?: string;
  /** Where `password` came from: read again when the server refuses it (a rotated Secret). */
  passwordFile?: string;
  /** `WAIT replicas timeoutMs` after a grant: the grant fails (BackendUnavailableError) unless enough replicas have it. */
  waitReplicas?: { replicas: number; timeoutMs: number };
  tls?: ConnectionOptions;
  /** Where `tls`'s certificate material came from: read again when a connection fails (a rotated Secret). */
  tlsFiles?: TlsPaths;
  sentinels?: { host: string; port: number }[];
  sentinelName?: string;
  cluster: boolean;
}

type Client = Redis | Cluster;


export class RedisBackend implements LockBackend {
  readonly expiresOnServer = true;
  readonly fencingRecord = "counter";
  private readonly client: Client;
  private readonly subscriber: Client;
  /** By event channel: a subscription and a fallback poll per watched lock. */
  private readonly watches = new FanOut<HoldersPoll>((channel) => this.startWatch(channel), (channel, poll) => {
    poll.stop();
    this.subscriber.unsubscribe(channel).catch(() => undefined);
  }, async (key) => orderOf(await this.queueState(key)));
  /** The last connection error, until the next successful connect: calls then fail without waiting. */
  private lastError?: Error;
  private connecting?: Promise<void>;
  private closed = false;
  private resubscribeTimer?: NodeJS.Timeout;
  private readonly tlsFiles?: TlsFiles;
  /** Holds releases handed to waiters of this process, from the events (not with waitReplicas: WAIT must run). */
  private readonly handed = new HandedHolds();

  constructor(readonly name: string, private readonly settings: RedisSettings) {
    if (settings.tls && settings.tlsFiles) this.tlsFiles = new TlsFiles(settings.tlsFiles, settings.tls as TlsMaterial);
    this.client = connect(settings, { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    this.client.on("error", (err: Error) => {
      this.lastError = err;
      this.connectionFailed(err);
    });
    this.client.on("ready", () => (this.lastError = undefined));
    this.client.on("end", () => this.reopen(this.client));
    if (this.client instanceof Cluster) guardAsking(this.client);
    const scripts = [
      ["kubelockAcquire", ACQUIRE, 5], ["kubelockRenew", RENEW, 4], ["kubelockRelease", RELEASE, 5],
      ["kubelockState", STATE, 4], ["kubelockForget", FORGET, 5],
    ] as const;
    for (const [command, lua, keys] of scripts) {
      this.client.defineCommand(command, { lua, numberOfKeys: keys });
    }
    // SUBSCRIBE may wait for the connection however long it takes (ioredis re-subscribes after a reconnect):
    // it changes nothing, so queueing it is harmless.
    this.subscriber = connect(settings, { enableOfflineQueue: true, maxRetriesPerRequest: null, commandTimeout: undefined });
    this.subscriber.on("error", (err: Error) => this.connectionFailed(err));
    // A Cluster reports its nodes' connection errors apart.
    for (const client of [this.client, this.subscriber]) if (client instanceof Cluster) client.on("node error", (err: Error) => this.connectionFailed(err));
    this.subscriber.on("end", () => this.reopen(this.subscriber));
    // "<what> turn: <ids>" (scripts.ts) names whose turn it is: the waiters are woken without reading the queue.
    // Lines after the first carry the holds a release handed over (scripts.ts, publish).
    this.subscriber.on("message", (channel: string, message: string) => {
      const [first, ...holds] = message.split("\n");
      for (const hold of holds) this.handed.handed(channel, hold);
      this.watches.notify(channel, turnIn(first));
    });
    let connectedBefore = false;
    this.subscriber.on("ready", () => {
      // A SUBSCRIBE the connection lost before its reply is not renewed by ioredis: subscribe to every watched
      // channel again (subscribing twice is harmless).
      const channels = this.watches.watched().map(([channel]) => channel);
      if (channels.length > 0) this.subscriber.subscribe(...channels).catch(() => undefined);
      // Events published while we were away are lost: wake every watcher once.
      if (connectedBefore) this.watches.notifyAll();
      connectedBefore = true;
    });
    if (this.subscriber instanceof Cluster) this.keepSubscribed(this.subscriber);
  }

  /**
   * Redis Cluster: subscribes the watched channels again every CLUSTER_RESUBSCRIBE_MS. When that fails, the
   * connection ioredis subscribes through is dropped (or, if it has none, it is asked to choose one), so that
   * the next attempt goes through a fresh connection; the first success after a failure wakes every watcher,
   * as a reconnect does, since events published meanwhile were lost.
   */
  private keepSubscribed(cluster: Cluster): void {
    // ioredis's own subscriber picker (not part of its typed API): getInstance() is its connection, start() picks one.
    const picker = (cluster as unknown as { subscriber?: { getInstance(): Redis | null; start(): void } }).subscriber;
    let deaf = false;
    this.resubscribeTimer = setInterval(() => {
      const channels = this.watches.watched().map(([channel]) => channel);
      if (channels.length === 0 || cluster.status !== "ready") return;
      cluster.subscribe(...channels).then(() => {
        if (deaf) this.watches.notifyAll();
        deaf = false;
      }, () => {
        deaf = true;
        const instance = picker?.getInstance();
        if (instance) instance.disconnect(); // ioredis then picks another node's connection and subscribes anew
        else picker?.start();
      });
    }, CLUSTER_RESUBSCRIBE_MS).unref();
  }

  /**
   * ioredis can end a connection for good while the backend still needs it: a Sentinel `+switch-master` that
   * interrupts a reconnect through the sentinels leaves the client ended. Until close(), an ended connection is
   * opened again (a reopened subscriber subscribes anew on "ready").
   */
  private reopen(client: Client): void {
    if (this.closed) return;
    setTimeout(() => {
      if (!this.closed && client.status === "end") client.connect().catch(() => undefined);
    }, REOPEN_MS).unref();
  }

  async tryAcquire(req: AcquireRequest): Promise<Hold | undefined> {
    if (!Number.isInteger(req.maxHolders) || req.maxHolders < 1) throw new Error(`maxHolders must be an integer >= 1, got ${req.maxHolders}`);
    const k = this.keys(req.key);
    const lease = leaseMs(req.leaseDurationSeconds);
    const handed = req.wait ? this.handed.take(req.holderId, k.channel) : undefined;
    if (handed) return { ...toHold(handed.json), confirmedAt: handed.confirmedAt };
    const info = JSON.stringify({ holderId: req.holderId, claim: req.claim, holderIdentity: req.holderIdentity, cluster: req.cluster ?? "" });
    const sentAt = Date.now();
    const json = await this.run((s) => s.kubelockAcquire(k.holds, k.info, k.queue, k.expiries, k.counter, k.channel, req.holderId, req.maxHolders, lease, info, req.fencingFloor ?? "0", req.wait ? "1" : "0"));
    if (json) this.handed.forget(req.holderId);
    else if (req.wait && !this.settings.waitReplicas) this.handed.queuedBy(req.holderId, k.channel, sentAt, lease);
    if (json && this.settings.waitReplicas) await this.awaitReplicas(this.settings.waitReplicas);
    return json ? toHold(json) : undefined;
  }

  /**
   * WAIT on the connection that ran the grant: every write it sent so far (the grant, or the earlier grant a
   * re-attach returned) reached `replicas` replicas, or the grant fails. The hold stays in Redis meanwhile: the
   * next tryAcquire with the same holderId re-attaches to it and waits again, or it expires with its lease.
   */
  private async awaitReplicas({ replicas, timeoutMs }: { replicas: number; timeoutMs: number }): Promise<void> {
    const acknowledged = Number(await this.run(() => this.client.call("WAIT", replicas, timeoutMs)));
    if (acknowledged < replicas) {
      throw new BackendUnavailableError(this.name, `the grant reached ${acknowledged} of ${replicas} replicas within ${timeoutMs}ms (waitReplicas); it is retried`);
    }
  }

  /** A connection failed: the credential files may have been rotated (see the top of this file). */
  private connectionFailed(err: Error): void {
    if (this.closed) return;
    this.refusedPassword(err);
    this.reloadTls();
  }

  /**
   * Reads the TLS files again and, when they changed (a rotated Secret), puts the new material in use from the next
   * connection on. Every connection shares the one `tls` options object, which ioredis reads at each connect
   * (sentinels and cluster nodes included); ioredis reconnects by itself.
   */
  private reloadTls(): void {
    const material = this.tlsFiles?.reload();
    if (material && this.settings.tls) Object.assign(this.settings.tls, material);
  }

  /**
   * The server refused the password: reads `passwordFile` again and, when it changed (a rotated Secret),
   * uses the new one from the next connection on (ioredis reconnects by itself after a refused AUTH).
   */
  private refusedPassword(err: Error): void {
    const file = this.settings.passwordFile;
    if (!file || !/\b(WRONGPASS|NOAUTH)\b/.test(err.message)) return;
    const password = new SecretFile(file, this.settings.password ?? "").reload();
    if (password === undefined) return; // unchanged, or being replaced right now: the next refusal reads it again
    this.settings.password = password;
    for (const client of [this.client, this.subscriber]) {
      if (client instanceof Cluster) {
        if (client.options.redisOptions) client.options.redisOptions.password = password;
        for (const node of client.nodes()) node.options.password = password;
      } else if (client) client.options.password = password;
    }
  }

  async renew(key: string, holderId: string, leaseDurationSeconds: number): Promise<Hold | undefined> {
    const [k, lease] = [this.keys(key), leaseMs(leaseDurationSeconds)];
    const json = await this.run((s) => s.kubelockRenew(k.holds, k.info, k.queue, k.expiries, k.channel, holderId, lease));
    return json ? toHold(json) : undefined;
  }

  async release(key: string, holderId: string): Promise<boolean> {
    const k = this.keys(key);
    this.handed.forget(holderId);
    return (await this.run((s) => s.kubelockRelease(k.holds, k.info, k.queue, k.expiries, k.counter, k.channel, holderId))) === 1;
  }

  /** Deletes the key's keys, counter included, when it has no hold or waiter (scripts.ts, FORGET). */
  async forget(key: string): Promise<boolean> {
    const k = this.keys(key);
    return (await this.run((s) => s.kubelockForget(k.holds, k.info, k.queue, k.expiries, k.counter, k.channel))) === 1;
  }

  async holders(key: string): Promise<Hold[]> {
    return (await this.queueState(key)).holders;
  }

  async waiting(key: string): Promise<HolderInfo[]> {
    return (await this.queueState(key)).waiting;
  }

  async queueState(key: string): Promise<QueueState> {
    const [holds, queue] = await this.state(key);
    return {
      holders: holds.map(toHold).sort((a, b) => (BigInt(a.fencingToken) < BigInt(b.fencingToken) ? -1 : 1)),
      waiting: queue.map((json) => holderInfo(JSON.parse(json) as HolderInfo)),
    };
  }

  private state(key: string): Promise<[string[], string[]]> {
    const k = this.keys(key);
    return this.run((s) => s.kubelockState(k.holds, k.info, k.queue, k.expiries, k.channel));
  }

  watch(key: string, onChange: () => void, waiter?: WaiterWatch): () => void {
    const { channel } = this.keys(key);
    if (this.closed) return () => undefined;
    return this.watches.add(channel, onChange, waiter && { ...waiter, key });
  }

  /** A subscription to the key's channel, and a poll for holds that vanished by expiry with nobody running a script. */
  private startWatch(channel: string): HoldersPoll {
    const key = channel.slice(`${this.settings.keyPrefix}:events:{`.length, -1); // see keys()
    this.subscriber.subscribe(channel).catch(() => undefined); // the poll still runs
    const poll: HoldersPoll = new HoldersPoll(() => this.holders(key), () => this.watches.isCurrent(channel, poll) && this.watches.notify(channel), WATCH_POLL_MS);
    return poll;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.resubscribeTimer);
    for (const poll of this.watches.clear()) poll.stop();
    // disconnect() after QUIT also ends the Sentinel connections of the failover detector (QUIT leaves them open).
    // QUIT is waited for at most commandTimeoutMs: the subscriber queues it while it cannot connect (a server gone,
    // or refusing its certificate), and would wait for ever.
    const quit = (c: Client) => withDeadline(c.quit(), this.settings.commandTimeoutMs, () => new Error("no answer to QUIT"));
    await Promise.all([this.client, this.subscriber].map((c) => quit(c).catch(() => undefined).finally(() => c.disconnect())));
  }

  private keys(key: string) {
    splitLockKey(key); // the hash tag holds the whole key: only its form is checked
    const base = `${this.settings.keyPrefix}:{${key}}`;
    return { holds: `${base}:holds`, info: `${base}:info`, queue: `${base}:queue`, expiries: `${base}:queue-expiry`, counter: `${base}:fencing`, channel: `${this.settings.keyPrefix}:events:{${key}}` };
  }

  /**
   * Runs a script once the connection is ready; connection trouble becomes BackendUnavailableError.
   *
   * NOSCRIPT (a server that lost its script cache: a promoted replica, a slot's new master, SCRIPT FLUSH) means
   * the script did not run, so the call is sent again, up to NOSCRIPT_ATTEMPTS times. ioredis resends such a
   * call once itself, but as EVALSHA when a call pipelined beside it has sent the EVAL meanwhile, and a cache
   * emptied again in between answers NOSCRIPT once more.
   */
  private async run<T>(call: (scripts: Scripts) => Promise<T>): Promise<T> {
    if (this.closed) throw new BackendUnavailableError(this.name, "backend closed");
    try {
      if (this.client.status !== "ready") await this.ready();
      for (let attempt = 1; ; attempt++) {
        try {
          return await call(this.client as unknown as Scripts);
        } catch (err) {
          if (attempt >= NOSCRIPT_ATTEMPTS || !/^NOSCRIPT\b/.test((err as Error).message)) throw err;
        }
      }
    } catch (err) {
      if (err instanceof BackendUnavailableError) throw err;
      const error = err as Error;
      if (/NOPERM|can't run this command/.test(error.message)) {
        throw new BackendUnavailableError(this.name, `the Redis user lacks a permission the backend needs (grant the minimal ACL in the README): ${error.message}`, { cause: err });
      }
      const serverSide = error.name === "ReplyError" && !/^(NOSCRIPT|LOADING|READONLY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|NOAUTH|WRONGPASS|NOPERM|BUSY|OOM)\b/.test(error.message);
      if (serverSide) throw error; // a script bug, not an outage
      throw new BackendUnavailableError(this.name, error.message, { cause: err });
    }
  }

  /**
   * While the first connection (or a reconnect) is under way, waits for it up to connectTimeoutMs; after a
   * connection error, fails at once so an outage shows promptly.
   */
  private ready(): Promise<void> {
    if (this.lastError) return Promise.reject(new BackendUnavailableError(this.name, `not connected: ${this.lastError.message}`));
    const client = this.client;
    // One wait shared by every caller (not one pair of listeners each).
    this.connecting ??= new Promise<void>((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        client.off("ready", onReady).off("error", onError);
        this.connecting = undefined;
        if (err) reject(new BackendUnavailableError(this.name, err.message, { cause: err }));
        else resolve();
      };
      const onReady = () => done();
      const onError = (err: Error) => done(err);
      const timer = setTimeout(() => done(new Error(`no connection within ${this.settings.connectTimeoutMs}ms`)), this.settings.connectTimeoutMs);
      client.on("ready", onReady).on("error", onError);
    });
    return this.connecting;
  }
}

function leaseMs(seconds: number): number {
  if (!Number.isInteger(seconds) || seconds < 1) throw new Error(`leaseDurationSeconds must be an integer >= 1, got ${seconds}`);
  return seconds * 1000;
}

function toHold(json: string): Hold {
  const h = JSON.parse(json) as Record<string, string>;
  const time = (ms: string) => new Date(Number(ms)).toISOString();
  return { holderId: h.holderId, claim: h.claim, holderIdentity: h.holderIdentity, cluster: h.cluster, fencingToken: h.fencingToken, acquireTime: time(h.acquireTime), renewTime: time(h.renewTime) };
}

/** The holderIds an event names as in turn, or undefined when it names none (every waiter is woken). */
function turnIn(message: string): string[] | undefined {
  const at = message.indexOf(" turn:");
  return at < 0 ? undefined : message.slice(at + " turn:".length).split(" ").filter(Boolean);
}

/**
 * ioredis sends ASKING before a command a master redirected while a slot moves, and leaves ASKING's own reply
 * unhandled: refused (a user without `+asking`) or cut off with its connection, it would be an unhandled rejection,
 * which ends the process. The redirected command succeeds or fails by itself either way.
 */
function guardAsking(cluster: Cluster): void {
  const guard = (node: Redis) => {
    const asking = node.asking.bind(node);
    node.asking = ((...args: Parameters<Redis["asking"]>) => {
      const reply = asking(...args);
      reply.catch(() => undefined);
      return reply;
    }) as Redis["asking"];
  };
  cluster.on("+node", guard);
  for (const node of cluster.nodes()) guard(node);
}

/** A new connection (standalone, Sentinel or Cluster) from validated settings. */
function connect(s: RedisSettings, overrides: RedisOptions): Client {
  const url = new URL(s.url);
  const backoff = (times: number) => Math.round(Math.min(100 * 2 ** Math.min(times, 10), 5000) * (0.5 + Math.random() / 2));
  const options: RedisOptions = {
    username: decodeURIComponent(url.username) || undefined,
    password: s.password ?? (decodeURIComponent(url.password) || undefined),
    db: Number(url.pathname.slice(1) || 0),
    tls: s.tls,
    connectTimeout: s.connectTimeoutMs,
    commandTimeout: s.commandTimeoutMs,
    autoResendUnfulfilledCommands: false,
    retryStrategy: backoff,
    // A server turned into a replica (a failover) refuses writes: find the master again.
    reconnectOnError: (err) => /^READONLY\b/.test(err.message),
    ...overrides,
  };
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const port = Number(url.port || 6379);
  if (s.cluster) {
    const { db: _db, ...nodeOptions } = options;
    return new Cluster([{ host, port }], { enableOfflineQueue: overrides.enableOfflineQueue, redisOptions: nodeOptions, clusterRetryStrategy: backoff, slotsRefreshTimeout: s.connectTimeoutMs });
  }
  if (s.sentinels) {
    // failoverDetector: subscribed to +switch-master on the sentinels, the connection moves to the new master at once
    // (the old one goes on taking writes, soon lost, until Sentinel turns it into a replica).
    return new Redis({ ...options, sentinels: s.sentinels, name: s.sentinelName, sentinelRetryStrategy: backoff, failoverDetector: true,
      sentinelCommandTimeout: s.commandTimeoutMs, enableTLSForSentinelMode: !!s.tls, sentinelTLS: s.tls });
  }
  return new Redis({ ...options, host, port });
}
