/**
 * `type: redis`: holds in a sorted set per lock kept by Lua scripts; standalone, Sentinel or Cluster. The client
 * library is imported only when such a backend is built, so operators without one never load it.
 */
import type { BackendPlugin } from "../registry";
import { parseRedisSettings } from "./settings";

export const redisPlugin: BackendPlugin = {
  type: "redis",
  required: [["url", (v) => typeof v === "string" && /^rediss?:\/\//.test(v), "a redis:// or rediss:// URL"]],
  validateSettings: (name, settings) => void parseRedisSettings(name, settings),
  factory: async ({ name, settings }) => {
    const options = parseRedisSettings(name, settings);
    const { RedisBackend } = await import("./backend");
    return new RedisBackend(name, options);
  },
};
