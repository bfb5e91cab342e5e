/**
 * Backend data loss:
 * - `wipe-redis`      Redis restarted empty (its append-only file deleted): every hold and fencing counter is
 *                     gone at once, as after a restart without persistence or a failover to an empty replica;
 * - `delete-counter`  one lock's fencing counter deleted (the `:fencing` key in Redis), as an administrator
 *                     cleaning up might. The Lease backend keeps no counter (its tokens are the API server's
 *                     resourceVersions, an etcd revision no one can delete), so its locks are no targets.
 * - `rewind-counter`  one lock's fencing counter set back to what it was a few seconds before, while both
 *                     clusters go on granting: what a failover to a replica that missed those writes, or a
 *                     restored backup, does to it. Each cluster's operator knows only its own tokens.
 * None is healed: data that is gone stays gone. Tokens must still never repeat or go backwards.
 */
import Redis from "ioredis";
import { sleep } from "../util";
import { instant, type Injector } from "./types";

/** Deletes the fencing counters of the locks on the Redis backend, straight on the server. */
export class Counters {
  private redis?: Redis;

  /** `locks` with their backend; the counters' names follow src/backends/redis/backend.ts (`<keyPrefix>:{<namespace>/<name>}:fencing`). */
  constructor(
    private readonly locks: { name: string; backend: string }[],
    private readonly namespace: string,
    private readonly redisUrl: string | undefined,
    private readonly redisKeyPrefix: string,
  ) {}

  /** The locks whose counter can be deleted. */
  get targets(): string[] {
    return this.locks.filter((l) => l.backend === "redis" && this.redisUrl).map((l) => l.name);
  }

  /** Deletes `lock`'s counter; false if there was none. */
  async delete(lock: string): Promise<boolean> {
    const redis = await this.client(lock);
    return (await redis.del(this.key(lock))) === 1;
  }

  /** `lock`'s counter now, or null if there is none. */
  async read(lock: string): Promise<string | null> {
    return (await this.client(lock)).get(this.key(lock));
  }

  /** Sets `lock`'s counter to `value`. */
  async set(lock: string, value: string): Promise<void> {
    await (await this.client(lock)).set(this.key(lock), value);
  }

  private key(lock: string): string {
    return `${this.redisKeyPrefix}:{${this.namespace}/${lock}}:fencing`;
  }

  private async client(lock: string): Promise<Redis> {
    const backend = this.locks.find((l) => l.name === lock)?.backend;
    if (backend !== "redis" || !this.redisUrl) throw new Error(`lock ${lock} has no counter (backend ${backend ?? "unknown"})`);
    if (!this.redis) {
      this.redis = new Redis(this.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1, enableOfflineQueue: false });
      this.redis.on("error", () => undefined); // Redis restarts under the nemesis; a failed command reports itself
    }
    if (this.redis.status === "wait") await this.redis.connect();
    return this.redis;
  }

  async close(): Promise<void> {
    this.redis?.disconnect();
  }
}

export const wipeRedis: Injector = async (ctx) => {
  if (!ctx.servers.includes("redis") || !ctx.take("redis")) return undefined;
  ctx.record("redis");
  await ctx.post("/services/redis/wipe", 120_000);
  return instant();
};

export const deleteCounter: Injector = async (ctx) => {
  const counters = ctx.counters;
  if (!counters || counters.targets.length === 0) return undefined;
  const lock = ctx.random.pick(counters.targets);
  ctx.record(lock);
  const deleted = await counters.delete(lock);
  if (!deleted) ctx.log(`nemesis: delete-counter(${lock}): there was no counter (yet)`);
  return instant();
};

export const rewindCounter: Injector = async (ctx) => {
  const counters = ctx.counters;
  if (!counters || counters.targets.length === 0) return undefined;
  const lock = ctx.random.pick(counters.targets);
  ctx.record(lock);
  const before = await counters.read(lock);
  if (before === null) {
    ctx.log(`nemesis: rewind-counter(${lock}): there was no counter (yet)`);
    return instant();
  }
  await sleep(ctx.random.int(1000, 5000));
  const passed = await counters.read(lock);
  await counters.set(lock, before);
  ctx.log(`nemesis: rewind-counter(${lock}): ${passed} set back to ${before}`);
  return instant();
};
