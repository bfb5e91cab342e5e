/** Redis: our backend, raw ioredis (SET NX PX + owner-checked Lua delete) and redlock. */
import { randomUUID } from "node:crypto";
import Redis from "ioredis";
import Redlock, { ExecutionError } from "redlock";
import { createBackend } from "../../src/backends/registry";
import type { KubeConfig } from "@kubernetes/client-node";
import { SENTINEL_MASTER, SentinelRedis } from "../../test/env/redis-setups";
import { oursSubjects, type Subject } from "./harness";

const TTL_MS = 30_000;
const UNLOCK = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`;

export async function redisSubjects(url: string, kubeConfig: KubeConfig): Promise<Subject[]> {
  const ours = oursSubjects(await createBackend({ name: "redis", type: "redis", kubeConfig, settings: { url, keyPrefix: "bench" } }));

  const rawClient = new Redis(url);
  rawClient.defineCommand("benchUnlock", { numberOfKeys: 1, lua: UNLOCK });
  const unlock = (key: string, value: string) => (rawClient as unknown as { benchUnlock(k: string, v: string): Promise<number> }).benchUnlock(key, value);
  const raw: Subject = {
    role: "raw",
    label: "ioredis SET NX PX + Lua delete",
    async tryAcquire(key) {
      const value = randomUUID();
      const ok = await rawClient.set(`raw:${key}`, value, "PX", TTL_MS, "NX");
      return ok === "OK" ? async () => void (await unlock(`raw:${key}`, value)) : undefined;
    },
    close: async () => void (await rawClient.quit()),
  };

  const peerClient = new Redis(url);
  const redlock = new Redlock([peerClient], { retryCount: 0 });
  redlock.on("error", () => undefined); // a failed attempt on a held key is reported here too
  const peer: Subject = {
    role: "peer",
    label: "redlock 5.0.0-beta.2 (1 instance, retryCount 0)",
    async tryAcquire(key) {
      try {
        const lock = await redlock.acquire([`redlock:${key}`], TTL_MS);
        return async () => void (await lock.release());
      } catch (err) {
        if (err instanceof ExecutionError) return undefined; // held by another
        throw err;
      }
    },
    close: async () => void (await peerClient.quit()),
  };
  return [...ours, raw, peer];
}

/**
 * The least a fenced, observable hold needs, as one script each way on raw ioredis: acquire = the fencing counter's
 * INCR and SET NX PX of the hold's JSON carrying its token (what holders() reads); release = an owner-checked DEL and a
 * PUBLISH (what wakes a watcher). No queue, no purge, no floor: it bounds from below what a grant of ours can cost.
 */
const FLOOR_ACQUIRE = `local token = redis.call("INCR", KEYS[2])
local hold = string.sub(ARGV[1], 1, -2) .. ',"fencingToken":"' .. token .. '"}'
if redis.call("SET", KEYS[1], hold, "PX", ARGV[2], "NX") then return hold end
return false`;
const FLOOR_RELEASE = `local hold = redis.call("GET", KEYS[1])
if not hold or not string.find(hold, ARGV[1], 1, true) then return 0 end
redis.call("DEL", KEYS[1])
redis.call("PUBLISH", KEYS[1], "release")
return 1`;

/** The floor above as a subject (bench 1's finding on where the uncontended time goes, not its table). */
export function redisFloorSubject(url: string): Subject {
  const client = new Redis(url);
  client.defineCommand("floorAcquire", { numberOfKeys: 2, lua: FLOOR_ACQUIRE });
  client.defineCommand("floorRelease", { numberOfKeys: 1, lua: FLOOR_RELEASE });
  const scripts = client as unknown as { floorAcquire(...a: (string | number)[]): Promise<string | null>; floorRelease(k: string, id: string): Promise<number> };
  return {
    role: "floor",
    label: "one script each way (INCR + SET NX PX of the hold's JSON; owner-checked DEL + PUBLISH)",
    async tryAcquire(key) {
      const holderId = randomUUID();
      const info = JSON.stringify({ holderId, claim: "bench", holderIdentity: "bench", cluster: "" });
      const hold = await scripts.floorAcquire(`floor:${key}`, `floor:${key}:fencing`, info, TTL_MS);
      if (hold) JSON.parse(hold);
      return hold ? async () => void (await scripts.floorRelease(`floor:${key}`, holderId)) : undefined;
    },
    close: async () => void (await client.quit()),
  };
}

/**
 * Redis's own accounting (INFO commandstats) of server time per grant for each subject: RESETSTAT, `ops`
 * uncontended grants, read back. Separates time spent inside Redis (Lua scripts) from client-side time.
 */
export async function redisServerTime(url: string, subjects: Subject[], keys: (s: number) => (i: number) => string, ops = 500): Promise<string> {
  const admin = new Redis(url);
  try {
    const parts: string[] = [];
    const perGrant = new Map<string, number>();
    for (const [s, subject] of subjects.entries()) {
      if (subject.modes && !subject.modes.includes("uncontended")) continue;
      await admin.config("RESETSTAT");
      const t0 = performance.now();
      for (let i = 0; i < ops; i++) await (await subject.tryAcquire(keys(s)(i)))?.();
      const clientUs = ((performance.now() - t0) * 1000) / ops;
      let serverUs = 0;
      for (const line of (await admin.info("commandstats")).split("\n")) {
        const m = /^cmdstat_(\w+):calls=\d+,usec=(\d+)/.exec(line);
        // Top-level commands only: a script's inner calls are counted in its EVALSHA too.
        if (m && ["evalsha", "eval", "set", "get", "del"].includes(m[1])) serverUs += Number(m[2]);
      }
      if (!perGrant.has(subject.role)) perGrant.set(subject.role, clientUs);
      parts.push(`${subject.role} ${fmtUs(serverUs / ops)} µs in Redis of ${fmtUs(clientUs)} µs per grant`);
    }
    const [ours, raw, floor] = ["ours", "raw", "floor"].map((name) => perGrant.get(name));
    const ratios = ours && raw && floor ? ` (per grant: floor ${(floor / raw).toFixed(2)}× raw, ours ${(ours / floor).toFixed(2)}× floor)` : "";
    return parts.join(", ") + ratios;
  } finally {
    admin.disconnect();
  }
}

const fmtUs = (us: number) => us.toFixed(0);

/**
 * What `waitReplicas` costs: uncontended grants (tryAcquire on a fresh key, then release) through Sentinel on a
 * master with one replica, without and with `waitReplicas: {replicas: 1}` (a WAIT after each grant), in
 * alternating slices of `ops / 10`; µs per grant each and the ratio.
 */
export async function waitReplicasCost(kubeConfig: KubeConfig, ops = 400): Promise<string> {
  const setup = await SentinelRedis.create();
  const settings = { url: `redis://${SENTINEL_MASTER}`, sentinels: setup.sentinels, sentinelName: SENTINEL_MASTER, keyPrefix: "bench-wait" };
  const make = (extra: Record<string, unknown>, name: string) => createBackend({ name, type: "redis", kubeConfig, settings: { ...settings, ...extra } });
  const [plain, waiting] = [await make({}, "redis-sentinel"), await make({ waitReplicas: { replicas: 1, timeoutMs: 1000 } }, "redis-sentinel-wait")];
  try {
    const subjects = [plain, waiting].map((backend) => oursSubjects(backend)[0]);
    const ms = [0, 0];
    for (let slice = 0; slice < 10; slice++) {
      for (const [i, subject] of subjects.entries()) {
        const t0 = performance.now();
        for (let n = 0; n < ops / 10; n++) await (await subject.tryAcquire(`bench/wait-${i}-${slice}-${n}-${randomUUID()}`))?.();
        ms[i] += performance.now() - t0;
      }
    }
    const [without, withWait] = ms.map((total) => (total * 1000) / ops);
    return `${fmtUs(withWait)} µs per grant with waitReplicas 1 against ${fmtUs(without)} µs without (${(withWait / without).toFixed(2)}×), ${ops} grants each`;
  } finally {
    await Promise.allSettled([plain.close(), waiting.close()]);
    await setup.destroy();
  }
}
