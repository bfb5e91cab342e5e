/**
 * `partition-operator`: cuts ONE operator replica (the leader of a random cluster's fleet) off from ONE
 * server, the API server or a backend, for longer than the locks' lease and the leader lease: its relays
 * to that server stop relaying while every connection stays open. Every other process still reaches it.
 */
import type { Upstream } from "../relays";
import { longPause, type Injector } from "./types";

export const partitionOperator: Injector = async (ctx) => {
  if (!ctx.take("operator")) return undefined;
  const c = ctx.random.int(0, ctx.fleets.length - 1);
  const leader = await ctx.fleets[c].waitForLeader(20_000);
  if (!leader) {
    ctx.record("operator", "no identifiable leader within 20 s");
    return undefined;
  }
  const upstream: Upstream = ctx.random.pick<Upstream>(["apiserver", ...ctx.servers]);
  ctx.record(`c${c + 1}/operator-${leader.index} | ${upstream}`);
  leader.relays.blackhole(upstream);
  return { holdMs: longPause(ctx), heal: async () => leader.relays.restore(upstream) };
};
