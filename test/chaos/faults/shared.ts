/**
 * `shared-default-config`: the two clusters share the Redis, etcd and ZooKeeper backends with distinct
 * clusterNames all along; this fault rolls both clusters' operators onto the shipped default config (no
 * clusterName, so "" in both) for a while, with both clusters' workers contending, then back (each time
 * a rolling update of every replica, a replacement first).
 */
import type { Injector } from "./types";

export const sharedDefaultConfig: Injector = async (ctx) => {
  if (ctx.fleets.length < 2 || !ctx.take("operator")) return undefined;
  ctx.record(`clusterName "" in ${ctx.fleets.map((f) => f.name).join(" and ")}`);
  const names = ctx.fleets.map((f) => f.clusterName);
  const roll = async () => {
    const led = await Promise.all(ctx.fleets.map((f) => f.roll()));
    if (led.includes(false)) ctx.log("nemesis: shared-default-config: a rolled fleet has no new leader within the timeout");
  };
  for (const fleet of ctx.fleets) fleet.clusterName = undefined;
  await roll();
  return {
    holdMs: 3 * ctx.lockLeaseMs + ctx.random.int(1000, 3000),
    heal: async () => {
      ctx.fleets.forEach((fleet, i) => (fleet.clusterName = names[i]));
      await roll();
    },
  };
};
