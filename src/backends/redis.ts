/**
 * The Redis backend (ioredis): standalone, Sentinel or Cluster, plain or TLS.
 *
 * Keys per lock (`K` = `<namespace>/<key>` as the operator passes it; the `{K}` hash tag puts all of a
 * lock's keys in one Cluster slot, so one script can touch them all):
 *
 * - `<prefix>:{K}:holds`   ZSET holderId -> expiry (ms, Redis server time)
 * - `<prefix>:{K}:info`    HASH holderId -> JSON {holderId, claim, holderIdentity, cluster, fencingToken,
 *                          acquireTime, renewTime} (times in ms as decimal strings)
 * - `<prefix>:{K}:fencing` the fencing counter. Never expires, so tokens keep increasing after a lock went
 *                          idle. A missing counter (first use, or lost: evicted, Redis restarted empty or
 *                          failed over to a replica that missed it) starts from the server's clock in
 *                          microseconds, and the caller's high-water mark raises it further, so tokens never
 *                          repeat or go back even then (unless the server's clock went back meanwhile).
 *
 * Holds and info carry a PEXPIRE of the longest hold's remaining lease, so idle locks vanish. Every
 * change is one Lua script (atomic, times from `TIME` so all operators agree on expiry) that first purges
 * expired holds, and that PUBLISHes to `<prefix>:events:{K}` when the holds changed; `watch` subscribes
 * there, and polls as a fallback for holds that vanished by key expiry with nobody running a script.
 *
 * Nothing is queued or replayed: commands fail at once while disconnected (`enableOfflineQueue: false`,
 * no resend after reconnect) and time out after `commandTimeoutMs`, both as BackendUnavailableError;
 * ioredis reconnects by itself with capped, jittered backoff. Replication is asynchronous: a failover can
 * lose the latest writes (a grant, a counter increment), as with any single-Redis lock.
 */
import { readFileSync } from "node:fs";
import type { ConnectionOptions } from "node:tls";
import Redis, { Cluster, type RedisOptions } from "ioredis";
import { BackendConfigError, BackendUnavailableError, type AcquireRequest, type Hold, type LockBackend } from "./backend";
import type { BackendFactory } from "./registry";

const DEFAULT_PREFIX = "kubelock";
const DEFAULT_TIMEOUT_MS = 2000;
/** Fallback poll of each watched key: catches holds that vanished by key expiry. */
const WATCH_POLL_MS = 2000;

/** Shared by every script. KEYS[1] = holds, KEYS[2] = info; ARGV[1] = event channel. */
const PRELUDE = `
if redis.replicate_commands then redis.replicate_commands() end -- TIME before writes (Redis < 5)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Drop holds whose expiry is not after now; true when any went.
local function purge()
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
  for _, id in ipairs(gone) do redis.call('HDEL', KEYS[2], id) end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  return #gone > 0
end
-- Both keys live as long as the longest hold (an empty ZSET is gone already).
local function touch()
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if #last == 0 then redis.call('DEL', KEYS[2]) return end
  local ttl = math.max(1, tonumber(last[2]) - now)
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
local function publish(what) redis.call('PUBLISH', ARGV[1], what) end
`;

/**
 * ACQUIRE. KEYS[3] = fencing counter. ARGV: channel, holderId, maxHolders, leaseMs, HolderInfo JSON, fencing floor.
 * Returns the hold's JSON: the existing one unchanged when holderId holds the key (re-attach, same token),
 * a new one (the counter's next value) when fewer than maxHolders holds exist; else nil. The counter is first raised
 * to the floor (the caller's high-water mark), and a missing one starts from the server's clock (microseconds), so a
 * counter lost with Redis's data hands out no old token again, in this cluster or another sharing the key.
 */
const ACQUIRE = `${PRELUDE}
local changed = purge()
local result = false
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  result = redis.call('HGET', KEYS[2], ARGV[2])
elseif redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  local hold = cjson.decode(ARGV[5])
  -- A missing counter (a new key, or one lost with Redis's data) starts from this server's clock in microseconds:
  -- above every token drawn before a loss, whichever cluster drew it, unless the clock went back.
  local counter = tonumber(redis.call('GET', KEYS[3]) or string.format('%d', now * 1000))
  local floor = tonumber(ARGV[6])
  if floor > counter then counter = floor end
  hold.fencingToken = string.format('%d', counter + 1)
  redis.call('SET', KEYS[3], hold.fencingToken)
  hold.acquireTime = string.format('%d', now)
  hold.renewTime = hold.acquireTime
  result = cjson.encode(hold)
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[2], result)
  changed = true
end
if changed then touch() publish('acquire') end
return result`;

/** RENEW. ARGV: channel, holderId, leaseMs. Owner-checked: extends only holderId's unexpired hold; JSON or nil. */
const RENEW = `${PRELUDE}
local changed = purge()
local result = false
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), ARGV[2])
  local hold = cjson.decode(redis.call('HGET', KEYS[2], ARGV[2]))
  hold.renewTime = string.format('%d', now)
  result = cjson.encode(hold)
  redis.call('HSET', KEYS[2], ARGV[2], result)
end
touch()
if changed then publish('expire') end
return result`;

/**
 * RELEASE. ARGV: channel, holderId. Owner-checked: removes only holderId's own unexpired hold, never one
 * that another holder took over after holderId's lease ran out (the naive lock's "mistaken release").
 * Returns 1 when a hold was removed, else 0.
 */
const RELEASE = `${PRELUDE}
local changed = purge()
local removed = redis.call('ZREM', KEYS[1], ARGV[2])
if removed == 1 then redis.call('HDEL', KEYS[2], ARGV[2]) changed = true end
if changed then touch() publish('release') end
return removed`;

/** HOLDERS. ARGV: channel. Purges, then returns every current hold's JSON (unordered). */
const HOLDERS = `${PRELUDE}
if purge() then touch() publish('expire') end
return redis.call('HVALS', KEYS[2])`;

interface Scripts {
  kubelockAcquire(holds: string, info: string, counter: string, ...args: (string | number)[]): Promise<string | null>;
  kubelockRenew(holds: string, info: string, ...args: (string | number)[]): Promise<string | null>;
  kubelockRelease(holds: string, info: string, ...args: (string | number)[]): Promise<number>;
  kubelockHolders(holds: string, info: string, channel: string): Promise<string[]>;
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
  tls?: ConnectionOptions;
  sentinels?: { host: string; port: number }[];
  sentinelName?: string;
  cluster: boolean;
}

type Client = Redis | Cluster;

interface Watch {
  listeners: Set<() => void>;
  timer: NodeJS.Timeout;
  /** What the last poll saw, to report holds that vanished by key expiry. */
  seen?: string;
}

export class RedisBackend implements LockBackend {
  private readonly client: Client;
  private readonly subscriber: Client;
  private readonly watches = new Map<string, Watch>(); // by channel
  /** The last connection error, until the next successful connect: calls then fail without waiting. */
  private lastError?: Error;
  private connecting?: Promise<void>;
  private closed = false;

  constructor(readonly name: string, private readonly settings: RedisSettings) {
    this.client = connect(settings, { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    this.client.on("error", (err: Error) => (this.lastError = err));
    this.client.on("ready", () => (this.lastError = undefined));
    for (const [command, lua, keys] of [["kubelockAcquire", ACQUIRE, 3], ["kubelockRenew", RENEW, 2], ["kubelockRelease", RELEASE, 2], ["kubelockHolders", HOLDERS, 2]] as const) {
      this.client.defineCommand(command, { lua, numberOfKeys: keys });
    }
    // SUBSCRIBE may wait for the connection however long it takes (ioredis re-subscribes after a reconnect):
    // it changes nothing, so queueing it is harmless.
    this.subscriber = connect(settings, { enableOfflineQueue: true, maxRetriesPerRequest: null, commandTimeout: undefined });
    this.subscriber.on("error", () => undefined);
    this.subscriber.on("message", (channel: string) => this.notify(this.watches.get(channel)));
    let connectedBefore = false;
    this.subscriber.on("ready", () => {
      // Events published while we were away are lost: wake every watcher once.
      if (connectedBefore) for (const watch of this.watches.values()) this.notify(watch);
      connectedBefore = true;
    });
  }

  async tryAcquire(req: AcquireRequest): Promise<Hold | undefined> {
    if (!Number.isInteger(req.maxHolders) || req.maxHolders < 1) throw new Error(`maxHolders must be an integer >= 1, got ${req.maxHolders}`);
    const k = this.keys(req.key);
    const lease = leaseMs(req.leaseDurationSeconds);
    const info = JSON.stringify({ holderId: req.holderId, claim: req.claim, holderIdentity: req.holderIdentity, cluster: req.cluster ?? "" });
    const json = await this.run((s) => s.kubelockAcquire(k.holds, k.info, k.counter, k.channel, req.holderId, req.maxHolders, lease, info, req.fencingFloor ?? "0"));
    return json ? toHold(json) : undefined;
  }

  async renew(key: string, holderId: string, leaseDurationSeconds: number): Promise<Hold | undefined> {
    const [k, lease] = [this.keys(key), leaseMs(leaseDurationSeconds)];
    const json = await this.run((s) => s.kubelockRenew(k.holds, k.info, k.channel, holderId, lease));
    return json ? toHold(json) : undefined;
  }

  async release(key: string, holderId: string): Promise<boolean> {
    const k = this.keys(key);
    return (await this.run((s) => s.kubelockRelease(k.holds, k.info, k.channel, holderId))) === 1;
  }

  async holders(key: string): Promise<Hold[]> {
    const k = this.keys(key);
    const all = (await this.run((s) => s.kubelockHolders(k.holds, k.info, k.channel))).map(toHold);
    return all.sort((a, b) => (BigInt(a.fencingToken) < BigInt(b.fencingToken) ? -1 : 1));
  }

  watch(key: string, onChange: () => void): () => void {
    const { channel } = this.keys(key);
    if (this.closed) return () => undefined;
    let watch = this.watches.get(channel);
    if (!watch) {
      const created: Watch = { listeners: new Set(), timer: setInterval(() => void this.poll(key, created), WATCH_POLL_MS).unref() };
      watch = created;
      this.watches.set(channel, created);
      this.subscriber.subscribe(channel).catch(() => undefined); // the poll still runs
      void this.poll(key, created);
    }
    const listener = () => onChange(); // its own identity, so one function can watch twice
    const shared = watch;
    shared.listeners.add(listener);
    return () => {
      if (!shared.listeners.delete(listener) || shared.listeners.size > 0) return;
      clearInterval(shared.timer);
      this.watches.delete(channel);
      this.subscriber.unsubscribe(channel).catch(() => undefined);
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const watch of this.watches.values()) clearInterval(watch.timer);
    this.watches.clear();
    await Promise.all([this.client, this.subscriber].map((c) => c.quit().catch(() => c.disconnect())));
  }

  private keys(key: string) {
    const slash = key.indexOf("/");
    if (slash <= 0 || slash === key.length - 1) throw new Error(`invalid lock key "${key}": expected <namespace>/<key>`);
    const base = `${this.settings.keyPrefix}:{${key}}`;
    return { holds: `${base}:holds`, info: `${base}:info`, counter: `${base}:fencing`, channel: `${this.settings.keyPrefix}:events:{${key}}` };
  }

  private notify(watch: Watch | undefined): void {
    for (const listener of watch?.listeners ?? []) {
      try {
        listener();
      } catch {
        // a watcher's failure is its own
      }
    }
  }

  /** Reports a change when the holds differ from the last poll; the HOLDERS script also publishes purges. */
  private async poll(key: string, watch: Watch): Promise<void> {
    try {
      const seen = (await this.holders(key)).map((h) => `${h.holderId}:${h.fencingToken}`).join(",");
      if (watch.seen !== undefined && watch.seen !== seen) this.notify(watch);
      watch.seen = seen;
    } catch {
      // unreachable: the subscriber's reconnect wakes the watchers
    }
  }

  /** Runs a script once the connection is ready; connection trouble becomes BackendUnavailableError. */
  private async run<T>(call: (scripts: Scripts) => Promise<T>): Promise<T> {
    if (this.closed) throw new BackendUnavailableError(this.name, "backend closed");
    try {
      if (this.client.status !== "ready") await this.ready();
      return await call(this.client as unknown as Scripts);
    } catch (err) {
      if (err instanceof BackendUnavailableError) throw err;
      const error = err as Error;
      const serverSide = error.name === "ReplyError" && !/^(LOADING|READONLY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|NOAUTH|WRONGPASS|NOPERM|BUSY|OOM)\b/.test(error.message);
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
    ...overrides,
  };
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const port = Number(url.port || 6379);
  if (s.cluster) {
    const { db: _db, ...nodeOptions } = options;
    return new Cluster([{ host, port }], { enableOfflineQueue: overrides.enableOfflineQueue, redisOptions: nodeOptions, clusterRetryStrategy: backoff, slotsRefreshTimeout: s.connectTimeoutMs });
  }
  if (s.sentinels) {
    return new Redis({ ...options, sentinels: s.sentinels, name: s.sentinelName, sentinelRetryStrategy: backoff, enableTLSForSentinelMode: !!s.tls, sentinelTLS: s.tls });
  }
  return new Redis({ ...options, host, port });
}

/** Checks the `redis:` settings block; every mistake is one line of the thrown BackendConfigError. */
export function parseRedisSettings(name: string, raw: Record<string, unknown>): RedisSettings {
  const problems: string[] = [];
  const { url, keyPrefix = DEFAULT_PREFIX, commandTimeoutMs = DEFAULT_TIMEOUT_MS, connectTimeoutMs = DEFAULT_TIMEOUT_MS, passwordFile, tls, sentinels, sentinelName, cluster = false, ...unknown } = raw;
  for (const field of Object.keys(unknown)) problems.push(`unknown setting redis.${field}`);
  let parsed: URL | undefined;
  if (typeof url !== "string" || !url) problems.push("redis.url is required (redis://host:port or rediss://host:port)");
  else {
    try {
      parsed = new URL(url);
    } catch {
      problems.push(`redis.url "${redact(url)}" is not a URL`);
    }
    if (parsed && !["redis:", "rediss:"].includes(parsed.protocol)) problems.push(`redis.url "${redact(url, parsed)}" must start with redis:// or rediss://`);
    if (parsed && !/^\/?(\d+)?$/.test(parsed.pathname)) problems.push(`redis.url "${redact(url, parsed)}": the path must be a database number`);
  }
  if (typeof keyPrefix !== "string" || !/^[^\s{}]+$/.test(keyPrefix)) problems.push("redis.keyPrefix must be a non-empty string without spaces or braces");
  for (const [field, value] of [["commandTimeoutMs", commandTimeoutMs], ["connectTimeoutMs", connectTimeoutMs]] as const) {
    if (!Number.isInteger(value) || (value as number) <= 0) problems.push(`redis.${field} must be a positive integer (milliseconds)`);
  }
  const readFile = (field: string, path: unknown): Buffer | undefined => {
    if (typeof path !== "string" || !path) return void problems.push(`redis.${field} must be a file path`);
    try {
      return readFileSync(path);
    } catch (err) {
      problems.push(`redis.${field}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? "error"}`);
      return undefined;
    }
  };
  let password: string | undefined;
  if (passwordFile !== undefined) {
    password = readFile("passwordFile", passwordFile)?.toString("utf8").replace(/\r?\n$/, "");
    if (password === "") problems.push(`redis.passwordFile ${String(passwordFile)} is empty`);
  }
  let tlsOptions: ConnectionOptions | undefined;
  if (tls !== undefined) {
    if (typeof tls !== "object" || tls === null || Array.isArray(tls)) problems.push("redis.tls must be a mapping");
    else {
      const { caFile, certFile, keyFile, insecureSkipVerify = false, ...rest } = tls as Record<string, unknown>;
      for (const field of Object.keys(rest)) problems.push(`unknown setting redis.tls.${field}`);
      if (parsed && parsed.protocol !== "rediss:") problems.push("redis.tls needs a rediss:// url");
      if ((certFile === undefined) !== (keyFile === undefined)) problems.push("redis.tls.certFile and redis.tls.keyFile go together");
      if (typeof insecureSkipVerify !== "boolean") problems.push("redis.tls.insecureSkipVerify must be true or false");
      tlsOptions = {
        ca: caFile === undefined ? undefined : readFile("tls.caFile", caFile),
        cert: certFile === undefined ? undefined : readFile("tls.certFile", certFile),
        key: keyFile === undefined ? undefined : readFile("tls.keyFile", keyFile),
        rejectUnauthorized: insecureSkipVerify !== true,
      };
    }
  }
  if (parsed?.protocol === "rediss:") tlsOptions ??= {};
  if (sentinels !== undefined) {
    const valid = Array.isArray(sentinels) && sentinels.length > 0 && sentinels.every((e) => typeof e?.host === "string" && e.host && Number.isInteger(e.port) && e.port > 0 && e.port < 65536);
    if (!valid) problems.push("redis.sentinels must be a non-empty list of {host, port}");
    if (typeof sentinelName !== "string" || !sentinelName) problems.push("redis.sentinelName (the master's name) is required with redis.sentinels");
  } else if (sentinelName !== undefined) problems.push("redis.sentinelName needs redis.sentinels");
  if (typeof cluster !== "boolean") problems.push("redis.cluster must be true or false");
  if (cluster === true && sentinels !== undefined) problems.push("redis.cluster and redis.sentinels exclude each other");
  if (problems.length > 0) throw new BackendConfigError(problems.map((p) => `backend "${name}": ${p}`).join("\n"));
  return {
    url: url as string, keyPrefix: keyPrefix as string, commandTimeoutMs: commandTimeoutMs as number, connectTimeoutMs: connectTimeoutMs as number,
    password, tls: tlsOptions, sentinels: sentinels as RedisSettings["sentinels"], sentinelName: sentinelName as string | undefined, cluster: cluster as boolean,
  };
}

/**
 * The URL for messages, cut to 200 characters: scheme, user name, host and path of a parsed URL (the
 * password masked, the query left out); of one that does not parse, everything up to its LAST '@' is
 * masked (a password may hold '@' itself).
 */
function redact(url: string, parsed?: URL): string {
  let shown: string;
  if (parsed) {
    const user = parsed.username || parsed.password ? `${parsed.username}${parsed.password ? ":***" : ""}@` : "";
    shown = `${parsed.protocol}//${user}${parsed.host}${parsed.pathname}${parsed.search ? "?…" : ""}`;
  } else {
    const at = url.lastIndexOf("@");
    const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(url)?.[0] ?? "";
    shown = at < 0 ? url : `${scheme}***${url.slice(at)}`;
  }
  return shown.length > 200 ? `${shown.slice(0, 200)}…` : shown;
}

export const redisBackendFactory: BackendFactory = ({ name, settings }) => new RedisBackend(name, parseRedisSettings(name, settings));
