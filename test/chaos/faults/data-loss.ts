/**
 * Backend data loss:
 * - `wipe-redis`      Redis restarted empty (its append-only file deleted): every hold and fencing counter is
 *                     gone at once, as after a restart without persistence or a failover to an empty replica;
 * - `delete-counter`  one lock's fencing counter deleted (the `:fencing` key in Redis), as an administrator
 *                     cleaning up might. The Lease backend keeps no counter (its tokens are the API server's
 *                     resourceVersions, an etcd revision no one can delete), so its locks are no targets.
 * Neither is healed: data that is gone stays gone. Tokens must still never repeat or go backwards.
 */
import Redis from "ioredis";
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
    const backend = this.locks.find((l) => l.name === lock)?.backend;
    if (backend === "redis" && this.redisUrl) {
      if (!this.redis) {
        this.redis = new Redis(this.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1, enableOfflineQueue: false });
        this.redis.on("error", () => undefined); // Redis restarts under the nemesis; a failed delete reports itself
      }
      if (this.redis.status === "wait") await this.redis.connect();
      return (await this.redis.del(`${this.redisKeyPrefix}:{${this.namespace}/${lock}}:fencing`)) === 1;
    }
    throw new Error(`lock ${lock} has no counter to delete (backend ${backend ?? "unknown"})`);
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
