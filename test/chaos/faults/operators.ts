/**
 * Operator faults, on the first cluster's fleet (two replicas with leader election):
 * - `kill-operator`   SIGKILL the leader (the supervisor starts a replacement; the follower takes over);
 * - `pause-operator`  SIGSTOP the leader longer than the locks' lease and the leader lease, then SIGCONT;
 * - `roll-operators`  a rolling replacement of both replicas (SIGTERM one, wait for its replacement, then the other);
 * - `skew-clock`      roll both replicas over to replicas on a wall clock skewed by more than a lease
 *                     (libfaketime), either way, for a while; healing rolls them back to the true clock.
 */
import { libfaketime } from "../../env/faketime";
import { instant, longPause, type FaultContext, type Injected, type Injector } from "./types";

async function leaderOf(ctx: FaultContext) {
  if (!ctx.take("operator")) return undefined;
  const fleet = ctx.fleets[0];
  const leader = await fleet.waitForLeader(20_000);
  if (!leader) ctx.record("operator", "no identifiable leader within 20 s");
  else ctx.record(`c1/operator-${leader.index}`);
  return leader;
}

export const killOperator: Injector = async (ctx) => {
  const leader = await leaderOf(ctx);
  if (!leader) return undefined;
  leader.signal("SIGKILL");
  return instant();
};

export const pauseOperator: Injector = async (ctx) => {
  const leader = await leaderOf(ctx);
  if (!leader) return undefined;
  leader.signal("SIGSTOP");
  return { holdMs: longPause(ctx), heal: async () => leader.signal("SIGCONT") };
};

export const rollOperators: Injector = async (ctx) => {
  if (!ctx.take("operator")) return undefined;
  const fleet = ctx.fleets[0];
  ctx.record(`c1/replicas ${fleet.replicas.map((r) => r.index).join(",")}`);
  if (!(await fleet.roll())) ctx.log("nemesis: roll-operators: no replacement leads within the timeout");
  return instant();
};

export const skewClock: Injector = async (ctx): Promise<Injected | undefined> => {
  if (!ctx.take("operator")) return undefined;
  libfaketime(); // fails the injection with a clear message when faketime is missing
  const fleet = ctx.fleets[0];
  const skewMs = (ctx.random.next() < 0.5 ? -1 : 1) * (2 * ctx.lockLeaseMs + ctx.random.int(1000, 4000));
  ctx.record(`c1/clock ${skewMs > 0 ? "+" : ""}${(skewMs / 1000).toFixed(1)}s`);
  fleet.skewMs = skewMs;
  if (!(await fleet.roll())) ctx.log("nemesis: skew-clock: no skewed replica leads within the timeout");
  return {
    holdMs: 2 * ctx.lockLeaseMs + ctx.random.int(1000, 3000),
    heal: async () => {
      fleet.skewMs = 0;
      if (!(await fleet.roll())) ctx.log("nemesis: skew-clock heal: no replica on the true clock leads within the timeout");
    },
  };
};
