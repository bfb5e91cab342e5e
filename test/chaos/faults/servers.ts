/**
 * Server faults, through the environment's loopback control endpoint:
 * - `pause-backend`     SIGSTOP a backend server (redis, zookeeper, etcd) longer than the lease, then SIGCONT;
 * - `restart-backend`   stop a backend server, start it again on the same address and data;
 * - `restart-apiserver` restart the first cluster's kube-apiserver (same port, certificates, etcd data);
 * - `lose-member`       stop one member of a clustered backend (3-member etcd or ZooKeeper) for longer than
 *                       the lease, then start it again: the others keep a quorum;
 * - `lose-majority`     stop a majority of its members, one after the other, for longer than the lease, then
 *                       start them again: the server is unavailable until then.
 */
import { instant, longPause, type FaultContext, type Injected, type Injector, type ServerName } from "./types";
import { now } from "../util";

/** A random server among `among` that no other fault of the episode has taken (now taken). */
function pickServer(ctx: FaultContext, among: ServerName[]): ServerName | undefined {
  return ctx.random.shuffle(among).find((s) => ctx.take(s));
}

export const pauseBackend: Injector = async (ctx) => {
  const server = pickServer(ctx, ctx.servers);
  if (!server) return undefined;
  ctx.record(server);
  await ctx.post(`/services/${server}/pause`);
  return { holdMs: longPause(ctx), heal: () => ctx.post(`/services/${server}/resume`) };
};

export const restartBackend: Injector = async (ctx) => {
  const server = pickServer(ctx, ctx.restartable);
  if (!server) return undefined;
  ctx.record(server);
  const start = () => ctx.post(`/services/${server}/start`, 120_000);
  // A stop that failed may still have stopped it: start it again before reporting the failure.
  await ctx.post(`/services/${server}/stop`).catch(async (err: unknown) => {
    await start().catch(() => undefined);
    throw err;
  });
  return { holdMs: ctx.random.int(300, 2000), heal: start };
};

export const restartApiServer: Injector = async (ctx) => {
  if (!ctx.take("apiserver")) return undefined;
  ctx.record("kube-apiserver");
  await ctx.post(`/controlplanes/1/apiserver/restart`, 120_000);
  return instant();
};

/** Stops one member (`lose-member`) or a majority (`lose-majority`); healing starts them all at once. */
const loseMembers = (majority: boolean): Injector => async (ctx): Promise<Injected | undefined> => {
  const server = pickServer(ctx, Object.keys(ctx.clusters) as ServerName[]);
  if (!server) return undefined;
  const size = ctx.clusters[server]!;
  const count = majority ? Math.floor(size / 2) + 1 : 1;
  const members = ctx.random.shuffle(Array.from({ length: size }, (_, i) => i + 1)).slice(0, count); // stopped in this order
  ctx.record(`${server}/${members.join(",")}`);
  const heal = async () => {
    await Promise.all(members.map((m) => ctx.post(`/services/${server}/members/${m}/start`, 120_000)));
  };
  const begin = now();
  try {
    for (const m of members) await ctx.post(`/services/${server}/members/${m}/stop`);
    ctx.log(`nemesis: ${majority ? "lose-majority" : "lose-member"}(${server}): down after ${Math.round(now() - begin)}ms`);
  } catch (err) {
    await heal().catch(() => undefined);
    throw err;
  }
  return { holdMs: ctx.lockLeaseMs + ctx.random.int(1000, 2500), heal };
};

export const loseMember = loseMembers(false);
export const loseMajority = loseMembers(true);
