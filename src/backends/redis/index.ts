/** `type: redis`: holds in a sorted set per lock kept by Lua scripts; standalone, Sentinel or Cluster. */
import type { BackendPlugin } from "../registry";
import { RedisBackend } from "./backend";
import { parseRedisSettings } from "./settings";

export const redisPlugin: BackendPlugin = {
  type: "redis",
  required: [["url", (v) => typeof v === "string" && /^rediss?:\/\//.test(v), "a redis:// or rediss:// URL"]],
  validateSettings: (name, settings) => void parseRedisSettings(name, settings),
  factory: ({ name, settings }) => new RedisBackend(name, parseRedisSettings(name, settings)),
};
