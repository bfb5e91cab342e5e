/**
 * The least a Redis ACL user needs to run kubelock's Redis backend (Redis 6+), for `ACL SETUSER <user> on
 * ><password> <rules...>`: the key pattern and event channels of its `keyPrefix` only, and only the commands it
 * sends and its scripts call (Redis checks a script's commands against the caller's ACL too). The README shows the
 * rules for the default prefix; test/conformance/redis.test.ts runs the whole suite as a user with exactly these,
 * and test/conformance/redis-cluster.test.ts as one with these and the Cluster commands.
 */

/** What the client sends: scripts (EVALSHA, EVAL when the script is not cached yet), the watch, the ready check. */
const CLIENT_COMMANDS = ["evalsha", "eval", "subscribe", "unsubscribe", "ping", "info", "quit", "select"];
/** What the scripts in scripts.ts call. */
const SCRIPT_COMMANDS = ["time", "get", "set", "del", "pexpire", "publish", "hget", "hset", "hdel", "hmget",
  "zadd", "zrem", "zscore", "zrank", "zcard", "zrange", "zrangebyscore", "zremrangebyscore"];

/**
 * What a Cluster client sends besides (`cluster: true`): CLUSTER SLOTS for the slot map, CLUSTER INFO as its ready
 * check (refused, the client never gets ready and says nothing), ASKING before a command redirected while a slot moves.
 */
const CLUSTER_COMMANDS = ["cluster|slots", "cluster|info", "asking"];

/**
 * The ACL rules (after `on >password`) for a user of the backend with `keyPrefix`; with `waitReplicas` set in
 * the backend's settings, `WAIT` too; with `cluster`, the Cluster commands (to be set on every master: Redis keeps
 * ACL users per node).
 */
export function minimalAcl(keyPrefix: string, options: { waitReplicas?: boolean; cluster?: boolean } = {}): string[] {
  const commands = [...CLIENT_COMMANDS, ...SCRIPT_COMMANDS, ...(options.waitReplicas ? ["wait"] : []), ...(options.cluster ? CLUSTER_COMMANDS : [])];
  return ["resetkeys", `~${keyPrefix}:*`, "resetchannels", `&${keyPrefix}:events:*`, "-@all", ...commands.map((c) => `+${c}`)];
}
