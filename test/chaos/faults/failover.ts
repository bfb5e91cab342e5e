/**
 * `failover-redis`: a Redis Sentinel failover under load, on the run's Redis-through-Sentinel backend (one
 * master, one replica, three sentinels; the operators' `redis-sentinel` backend grants with `waitReplicas`
 * {replicas: 1}). The master crashes (SIGKILL) or hangs (SIGSTOP, its connections left open) until the sentinels
 * promote the replica; a moment later the old master comes back as a replica of the new one: a crashed one
 * restarts empty and replicates the new master, a hung one resumes as the stale master it believes it is until the
 * sentinels turn it into a replica. Healed once it is in sync with the new master, so the next failover has a
 * replica to promote.
 *
 * The run's `masterFailures` say which of the two it may pick (the short run: hang only, see chaos-short.test.ts).
 *
 * What it must not break: a grant is shown only once the replica acknowledged it, and the replica is the one
 * promoted, so no shown hold is lost with the old master's data, and the fencing tokens never repeat. Holds whose
 * lease runs out while no master answers are Lost, as in a backend pause. The checker excuses nothing for it.
 */
import { now } from "../util";
import type { Injector } from "./types";

export const failoverRedis: Injector = async (ctx) => {
  const sentinel = ctx.sentinel;
  if (!sentinel || sentinel.failures.length === 0 || !ctx.take("redis-sentinel")) return undefined;
  const how = ctx.random.pick(sentinel.failures);
  ctx.record(`master ${how}`);
  const failed = await sentinel.setup.failMaster(how);
  ctx.log(`nemesis: failover-redis: the master (:${failed.from}) ${how === "crash" ? "crashed" : "hung"}; the sentinels named :${failed.to} master after ${failed.switchedMs}ms`);
  return {
    holdMs: ctx.random.int(0, 1000),
    heal: async () => {
      const begin = now();
      await failed.rejoin();
      ctx.log(`nemesis: failover-redis: the old master (:${failed.from}) is a replica of :${failed.to} in sync after ${Math.round(now() - begin)}ms`);
    },
  };
};
